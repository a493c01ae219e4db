"""The judge of generated images: each dataset's reference classifier, validated with controls.

The classifier itself is vaejax.metrics.fit_reference: a small CNN trained on the real training
split that scores sets of images by `plausibility` (mean max-softmax) and `frechet` (a Frechet
classifier distance to real test images), cached under <out>/.cache.

A judge earns its place with controls (reference_anchors): real held-out images and uniform noise
are the two ends of its scale, and real images blurred by BLUR_CONTROLS px show what blur alone
costs. Two variants are trained, with and without smooth random fields among the outliers, and
the one kept (choose_reference) keeps blurred images closest to real ones while noise scores worst.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np
from scipy import ndimage

from vaejax import data, metrics
from vaejax_experiments.settings import Scale

# Outlier exposure with and without smooth random fields: the fields keep max-softmax low on
# structureless images, but they may also teach the classifier that smoothness itself is unreal.
REFERENCE_VARIANTS = {"shuffled_and_smooth": True, "shuffled_only": False}  # name: smooth_fields
BLUR_CONTROLS = (0.5, 1.0, 1.5)  # px: real images made as smooth as a decoder's output, nothing else changed


@functools.lru_cache(maxsize=8)
def reference(scale: Scale, dataset: str, out: str) -> metrics.ReferenceClassifier:
    """The dataset's reference classifier at this scale: the variant reference_anchors keeps."""
    return _reference_variant(scale, dataset, out, reference_anchors(scale, dataset, out)["kept"])


@functools.lru_cache(maxsize=16)
def _reference_variant(scale: Scale, dataset: str, out: str, variant: str) -> metrics.ReferenceClassifier:
    """One variant of the classifier, cached under <out>/.cache."""
    available = len(data.load(dataset, "train").labels)
    n = available if scale.classifier_train is None else min(scale.classifier_train, available)
    epochs = max(1, round(scale.classifier_steps / max(1, n // 128)))  # about classifier_steps updates of 128
    return metrics.fit_reference(dataset, n_train=scale.classifier_train, epochs=epochs, batch_size=128,
                                 cache_dir=os.path.join(out, ".cache"), smooth_fields=REFERENCE_VARIANTS[variant])


@functools.lru_cache(maxsize=8)
def reference_anchors(scale: Scale, dataset: str, out: str) -> dict:
    """Both ends of the scale, n_eval images each: real held-out test images and uniform noise; and
    between them the controls, the same real images blurred by a Gaussian of BLUR_CONTROLS px, which
    show how much of a score blur alone costs. Measured for every classifier variant; `kept` names
    the one whose blurred images stay closest to real ones while noise stays below them all
    (choose_reference), and the top-level scores are its."""
    real = metrics.real_holdout(dataset).images[: scale.n_eval]
    noise = metrics.uniform_noise(jax.random.key(7), scale.n_eval, data.SHAPES[dataset])
    real_float = data.to_float(real)
    blurred = {f"blur_{px:g}": ndimage.gaussian_filter(real_float, sigma=(0, px, px, 0), mode="reflect")
               for px in BLUR_CONTROLS}
    variants = {}
    for name in REFERENCE_VARIANTS:
        ref = _reference_variant(scale, dataset, out, name)
        v = {"real": ref.scores(real), "noise": ref.scores(noise), **{k: ref.scores(x) for k, x in blurred.items()},
             "test_accuracy": ref.test_accuracy}
        variants[name] = {**v, **blur_position(v)}
    kept = choose_reference(variants)
    return {**variants[kept], "kept": kept, "variants": variants,
            "n_real": int(len(real)), "n_noise": int(scale.n_eval)}


def blur_position(anchors: dict, scores=("plausibility", "frechet")) -> dict:
    """Where the blurred controls sit between real images (0) and uniform noise (1), averaged over the
    blur widths and scores (`blur_position`); and whether noise stays below real and every blur on
    every score (`noise_at_bottom`)."""
    positions, bottom = [], True
    for s in scores:
        sign = 1.0 if s == "frechet" else -1.0  # oriented so that larger is worse
        real, noise = sign * anchors["real"][s], sign * anchors["noise"][s]
        for px in BLUR_CONTROLS:
            blur = sign * anchors[f"blur_{px:g}"][s]
            positions.append((blur - real) / (noise - real))
            bottom &= noise > max(blur, real)
    return {"blur_position": float(np.mean(positions)), "noise_at_bottom": bool(bottom)}


def choose_reference(variants: dict) -> str:
    """The variant with the smallest blur_position among those that keep noise at the bottom (else
    the first variant)."""
    fit = [n for n, v in variants.items() if v["noise_at_bottom"]]
    return min(fit, key=lambda n: variants[n]["blur_position"]) if fit else next(iter(variants))


def controls(anchors: dict) -> dict:
    """The blurred-real control sets' scores, from reference_anchors."""
    return {f"blur_{px:g}": anchors[f"blur_{px:g}"] for px in BLUR_CONTROLS}


def anchor_rows(anchors: dict, columns: int = 2, scores=("plausibility", "frechet")) -> list[list[str]]:
    """Table rows (the named scores, then empty cells up to `columns` values) for real images, the
    blurred controls and uniform noise."""
    labels = [("real", "real test images")] + [(f"blur_{px:g}", f"real test images blurred {px:g} px (control)")
                                               for px in BLUR_CONTROLS if f"blur_{px:g}" in anchors]
    labels.append(("noise", "uniform noise"))
    return [[label] + [f"{anchors[k][s]:.3g}" if s in anchors[k] else "" for s in scores]
            + [""] * (columns - len(scores)) for k, label in labels]
