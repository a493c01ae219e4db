"""The judge of generated images: a reference classifier per dataset, validated with controls.

A small CNN (classifier.py) trained on a dataset's real training split judges images without eyes:
`plausibility` is its mean max-softmax probability, `frechet` the Frechet distance between its
penultimate features of the images and of real test images (a Frechet classifier distance: FID for
MNIST-sized data), beside precision, recall and KID on the same features (vaejax.metrics). It trains
with outlier exposure, so that max-softmax stays low off the data manifold.

A judge earns its place with controls (reference_anchors): real held-out images and uniform noise
are the two ends of its scale, and real images blurred by BLUR_CONTROLS px show what blur alone
costs. Two variants are trained, with and without smooth random fields among the outliers, and
the one kept (choose_reference) keeps blurred images closest to real ones while noise scores worst.

fit_reference caches a trained classifier under <out>/.cache, keyed by a hash of its settings; the
settings and the file layout are those of earlier runs, so their caches stay valid.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from vaejax import data, files, metrics
from vaejax_experiments import classifier, settings
from vaejax_experiments.settings import Scale

# ---------------------------------------------------------------------------- the reference classifier


MIRROR_SYMMETRIC = ("fashion_mnist", "cifar10")  # datasets whose classes a left-right flip keeps
REAL_FEATURES = 2000  # real reference features kept for the nearest-neighbour and kernel metrics


@dataclasses.dataclass(frozen=True)
class ReferenceClassifier:
    """A CNN trained on real training images, with the feature statistics of real test images.

    The real statistics come from one half of the test images (reference_halves: the even
    ranks within each class); the other half is left out of them, so it can stand for "real
    images" in a sanity row.
    """

    dataset: str
    params: Any
    real_mu: np.ndarray
    real_cov: np.ndarray
    test_accuracy: float
    settings: dict
    real_features: np.ndarray  # of REAL_FEATURES reference images, for precision, recall and KID
    mirror: bool = False  # outputs are the mean over the image and its mirror image

    def outputs(self, images) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, penultimate features) of images."""
        return classifier.classifier_outputs(self.params, images, mirror=self.mirror)

    def predict(self, images) -> np.ndarray:
        return self.outputs(images)[0].argmax(-1)

    def plausibility(self, images) -> float:
        """Mean max-softmax probability: near 1 for confidently recognised images, near 1/K for nonsense."""
        return float(self.outputs(images)[0].max(-1).mean())

    def frechet(self, images) -> float:
        """Squared Frechet distance between the images' features and the real test features (lower is closer)."""
        return self.frechet_of_features(self.outputs(images)[1])

    @functools.cached_property
    def frechet_to_real(self):
        """metrics.frechet_distance_to the real features' Gaussian, its square root taken once for every set scored."""
        return metrics.frechet_distance_to(self.real_mu, self.real_cov)

    @functools.cached_property
    def precision_recall_to_real(self):
        """metrics.precision_recall_to the real features, their manifold's radii measured once."""
        return metrics.precision_recall_to(self.real_features)

    @functools.cached_property
    def kid_to_real(self):
        """metrics.kernel_inception_distance_to the real features, their own kernel summed once."""
        return metrics.kernel_inception_distance_to(self.real_features)

    def frechet_of_features(self, features_NF) -> float:
        """frechet() for penultimate features already computed (outputs(images)[1])."""
        return self.frechet_to_real(*metrics.gaussian_stats(features_NF))

    def scores(self, images) -> dict[str, float]:
        """{"plausibility", "frechet", "precision", "recall", "kid"} of images, from one pass of the classifier."""
        return self.scores_of_outputs(*self.outputs(images))

    def scores_of_outputs(self, probs, feats) -> dict[str, float]:
        """scores() for outputs already computed (outputs(images))."""
        precision, recall = self.precision_recall_to_real(feats)
        return {"plausibility": float(probs.max(-1).mean()), "frechet": self.frechet_of_features(feats),
                "precision": precision, "recall": recall, "kid": self.kid_to_real(feats)}


def real_holdout(dataset: str) -> data.Split:
    """The real test images left out of the reference statistics (the odd ranks within each class)."""
    test = data.load(dataset, "test")
    _, held_out = reference_halves(test.labels)
    return data.Split(test.images[held_out], test.labels[held_out])


def reference_halves(labels) -> tuple[np.ndarray, np.ndarray]:
    """(reference, held-out) index arrays splitting a test set in two class-balanced halves:
    within each class, the examples at even and at odd ranks (in the split's order).

    Not test[0::2] / test[1::2]: in a class-interleaved split (mnist_5k) that would put whole
    classes on one side.
    """
    labels = np.asarray(labels)
    rank = np.empty(len(labels), np.int64)
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        rank[idx] = np.arange(len(idx))
    return np.flatnonzero(rank % 2 == 0), np.flatnonzero(rank % 2 == 1)


def fit_reference(dataset: str, n_train: int | None = None, epochs: int = 2, seed: int = 0,
                  cache_dir: str | None = None, batch_size: int = 128,
                  outlier_exposure: float = 0.5, smooth_fields: bool = True, width: int = 256) -> ReferenceClassifier:
    """The reference classifier of `dataset`, trained on n_train real training images (None: all).

    With outlier exposure (default 0.5, see classifier_objective) on pixel-shuffled images and,
    with smooth_fields, smooth random fields: without it a ReLU classifier is often more confident
    on uniform noise than on real images, and max-softmax is no plausibility scale. Uniform noise
    itself is not among the training outliers, so the noise anchor stays an independent check.

    The learning rate decays to 0 over the run (a cosine) and the training images are shifted
    and, on datasets whose classes a mirror image keeps (MIRROR_SYMMETRIC), flipped
    (classifier.augmented), for the best accuracy in its epochs; on those datasets the judge
    also reads every image as the mean of its outputs on the image and its mirror image. width:
    the dense layer's, whose activations are the judge's features.

    Its parameters are read from `cache_dir` when a copy trained with the same settings is
    there; else trained and written there (atomically). No cache_dir: always trained. What is
    measured with them (accuracy, the real images' statistics) is measured anew.
    """
    mirror = dataset in MIRROR_SYMMETRIC
    settings = {"dataset": dataset, "n_train": n_train, "epochs": epochs, "seed": seed,
                "batch_size": batch_size, "outlier_exposure": outlier_exposure, "smooth_fields": smooth_fields,
                "arch": f"patchconv32-64-dense{width}-v5", "schedule": "cosine",
                "augment": "flip+shift2" if mirror else "shift2"}
    tag = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    path = os.path.join(cache_dir, f"classifier-{dataset}-{tag}.npz") if cache_dir else None
    params = None
    if path and os.path.exists(path):
        try:
            params = _read_params(path, settings)
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: train again
    if params is None:
        train = data.load(dataset, "train")
        if n_train is not None and n_train < len(train.labels):
            train = data.subset_per_class(train, max(1, n_train // data.NUM_CLASSES[dataset]), seed)
        params = classifier.train_classifier(jax.random.key(seed), data.to_float(train.images), train.labels,
                                             data.NUM_CLASSES[dataset], epochs, batch_size, width=width,
                                             outlier_exposure=outlier_exposure, smooth_fields=smooth_fields,
                                             cosine=True, augment=True, flip=mirror)
        if path:
            _write_params(path, params, settings)
    test = data.load(dataset, "test")
    probs, feats = classifier.classifier_outputs(params, test.images, mirror=mirror)
    reference = feats[reference_halves(test.labels)[0]]
    real_mu, real_cov = metrics.gaussian_stats(reference)
    accuracy = float(np.mean(probs.argmax(-1) == test.labels))
    # one view's accuracy beside the two views'; without the mirror image, the pass above was that one view
    single = classifier.classifier_accuracy(params, test.images, test.labels) if mirror else accuracy
    return ReferenceClassifier(dataset, params, real_mu, real_cov, accuracy, {**settings, "single_view_accuracy": single},
                               reference[:REAL_FEATURES], mirror)


def _write_params(path: str, params, settings: dict) -> None:
    flat = {"/".join(k): np.asarray(v) for k, v in _flatten(params).items()}
    files.write_atomic(path, lambda f: np.savez(f, **{f"params/{k}": v for k, v in flat.items()},
                                                settings=json.dumps(settings, sort_keys=True)))


def _read_params(path: str, settings: dict):
    with np.load(path, allow_pickle=False) as z:
        if json.loads(str(z["settings"])) != settings:
            raise ValueError("cached classifier has other settings")
        params: dict = {}
        for name in z.files:
            if name.startswith("params/"):
                *parents, leaf = name.split("/")[1:]
                node = params
                for p in parents:
                    node = node.setdefault(p, {})
                node[leaf] = jnp.asarray(z[name])
        return params


def _flatten(tree, prefix=()) -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(_flatten(v, prefix + (str(k),)))
        else:
            out[prefix + (str(k),)] = v
    return out


def uniform_noise(key, n: int, image_shape) -> np.ndarray:
    """n images of independent uniform [0, 1] pixels: the 'nonsense' end of the scale."""
    return np.asarray(jax.random.uniform(key, (n,) + tuple(image_shape)))


# ---------------------------------------------------------------------------- variants, anchors and controls


# Outlier exposure with and without smooth random fields: the fields keep max-softmax low on
# structureless images, but they may also teach the classifier that smoothness itself is unreal.
REFERENCE_VARIANTS = {"shuffled_and_smooth": True, "shuffled_only": False}  # name: smooth_fields
BLUR_CONTROLS = (0.5, 1.0, 1.5)  # px: real images made as smooth as a decoder's output, nothing else changed


@functools.lru_cache(maxsize=8)
def reference(scale: Scale, dataset: str, out: str) -> ReferenceClassifier:
    """The dataset's reference classifier at this scale: the variant reference_anchors keeps."""
    return _reference_variant(scale, dataset, out, reference_anchors(scale, dataset, out)["kept"])


@functools.lru_cache(maxsize=16)
def _reference_variant(scale: Scale, dataset: str, out: str, variant: str) -> ReferenceClassifier:
    """One variant of the classifier, cached under <out>/.cache."""
    available = len(data.load(dataset, "train").labels)
    n = available if scale.classifier_train is None else min(scale.classifier_train, available)
    epochs = max(1, round(scale.classifier_steps / max(1, n // 128)))  # about classifier_steps updates of 128
    return fit_reference(dataset, n_train=scale.classifier_train, epochs=epochs, batch_size=128, seed=scale.judge_seed,
                         cache_dir=os.path.join(out, ".cache"), smooth_fields=REFERENCE_VARIANTS[variant])


@functools.lru_cache(maxsize=8)
def reference_anchors(scale: Scale, dataset: str, out: str) -> dict:
    """Both ends of the scale, n_eval images each: real held-out test images and uniform noise; and
    between them the controls, the same real images blurred by a Gaussian of BLUR_CONTROLS px, which
    show how much of a score blur alone costs. Measured for every classifier variant; `kept` names
    the one whose blurred images stay closest to real ones while noise stays below them all
    (choose_reference), and the top-level scores are its."""
    real = real_holdout(dataset).images[: scale.n_eval]
    noise = uniform_noise(settings.shared_key("judge noise"), scale.n_eval, data.SHAPES[dataset])
    real_float = data.to_float(real)
    blurred = {f"blur_{px:g}": ndimage.gaussian_filter(real_float, sigma=(0, px, px, 0), mode="reflect")
               for px in BLUR_CONTROLS}
    variants = {}
    # a second judge seed repeats the variant the first one kept, and only it
    names = REFERENCE_VARIANTS if scale.judge_seed == 0 else (
        reference_anchors(dataclasses.replace(scale, judge_seed=0), dataset, out)["kept"],)
    for name in names:
        ref = _reference_variant(scale, dataset, out, name)
        v = {"real": ref.scores(real), "noise": ref.scores(noise), **{k: ref.scores(x) for k, x in blurred.items()},
             "test_accuracy": ref.test_accuracy, "single_view_accuracy": ref.settings["single_view_accuracy"]}
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


def positive_controls(anchors: dict, worse: dict[str, dict] | None = None) -> dict[str, bool]:
    """The checks the judge must pass before a verdict that rests on it is trusted, {check: passed}: its
    Frechet distance grows and its plausibility falls with every step of blur (real, 0.5, 1, 1.5 px),
    uniform noise is furthest of all, and each set of `worse` ({name: its scores}: images known to be
    less real than real ones, such as a pixel cross-fade) is further from real images than real ones."""
    sets = [anchors["real"]] + [anchors[f"blur_{px:g}"] for px in BLUR_CONTROLS]
    frechet, plausibility = [a["frechet"] for a in sets], [a["plausibility"] for a in sets]
    out = {"Frechet distance grows with blur": bool(np.all(np.diff(frechet) > 0)),
           "plausibility falls with blur": bool(np.all(np.diff(plausibility) < 0)),
           "uniform noise is furthest": bool(anchors["noise"]["frechet"] > max(frechet))}
    for name, scores in (worse or {}).items():
        out[f"{name} is further than real images"] = bool(scores["frechet"] > anchors["real"]["frechet"])
    return out


NOISE_PRECISION = 0.1  # precision and recall are shown only when uniform noise's precision is below this


def precision_recall_valid(anchors: dict) -> bool:
    """Whether precision and recall pass their own check: uniform noise lies off the real images' feature
    manifold (precision near 0). Where it does not, the two scores are left out of reports."""
    return bool(anchors["noise"]["precision"] < NOISE_PRECISION)


def positive_controls_text(checks: dict[str, bool]) -> str:
    """One sentence: which positive controls passed and which failed."""
    failed = [c for c, ok in checks.items() if not ok]
    if not failed:
        return f"Positive controls: all {len(checks)} passed ({'; '.join(checks)})."
    return (f"Positive controls: {len(failed)} of {len(checks)} FAILED ({'; '.join(failed)}): a negative verdict "
            f"resting on this judge is not to be trusted.")


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
