"""The experiment harness: scales, data, seed-batched training, the reference classifier,
metrics files, statistics over seeds, markdown helpers and the command line.

An experiment is a module `vaejax_experiments.<name>` with

    CLAIM: str                                    the seed's claim in one sentence
    main(scale, dataset, seeds, out) -> dict      runs it; writes <out>/<name>/metrics.json and PNGs
    verdict(metrics) -> (verdict, reason)         verdict in VERDICTS, derived from the numbers
    report(metrics) -> str                        markdown table(s), mean +- std over seeds
    DEFAULT_DATASET: str (optional)               when not fashion_mnist

and ends with `if __name__ == "__main__": common.cli(main)`. Inside main:

    run = common.start("name", scale, dataset, seeds, out)   # run.scale, run.seeds, run.dir, run.path(...)
    ...
    return common.finish(run, metrics)                        # adds seconds, device, ...; writes metrics.json

Figures go to run.path("file.png") and are listed, relative to run.dir, in metrics["figures"].
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import inspect
import json
import math
import os
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage, stats

from vaejax import config, data, files, fit, metrics, provenance, recipe
from vaejax.errors import UsageError
from vaejax.config import ModelConfig, TrainConfig

# The eight experiments of the report, in its order, then sections that are figures only.
EXPERIMENTS = ("interpolation", "random_latent", "centroids", "pretrain_classify",
               "transform", "overfit_ood", "denoise", "anomaly")
SECTIONS = ("latent_space", "rate_distortion")
VERDICTS = ("holds", "does not hold", "mixed")
DEFAULT_DATASET = "fashion_mnist"


# ---------------------------------------------------------------------------- scales


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big a run is. Experiments read the shared fields and `pick` their own values.

    seeds: models trained at once (a vmapped batch axis); n_train: training images per model
    (None: the whole split; class-balanced subset otherwise); steps: optimizer steps per model
    (epochs follow from the training-set size, see epochs_for); n_eval: images in every scored
    set (so Frechet distances are comparable across experiments; Frechet distance is biased
    upwards at small n); arch: "mlp" or "conv" presets; classifier_train / classifier_steps: the
    reference classifier's training images (None: all) and about how many updates it gets.
    """

    name: str
    seeds: int
    n_train: int | None
    steps: int
    batch_size: int
    n_eval: int
    arch: str
    classifier_train: int | None
    classifier_steps: int
    learning_rate: float = 1e-3

    def pick(self, smoke=None, quick=None, full=None):
        """The value given for this scale: `scale.pick(smoke=1, quick=5, full=30)`."""
        return {"smoke": smoke, "quick": quick, "full": full}[self.name]

    def epochs_for(self, n_train: int, batch_size: int | None = None) -> int:
        """Epochs that give about `steps` updates on n_train images (at least 1)."""
        per_epoch = max(1, n_train // (batch_size or self.batch_size))
        return max(1, round(self.steps / per_epoch))

    def train_config(self, n_train: int, **overrides) -> TrainConfig:
        """The TrainConfig of this scale for n_train images; overrides win."""
        batch = overrides.pop("batch_size", min(self.batch_size, n_train))
        fields = {"learning_rate": self.learning_rate, "batch_size": batch,
                  "epochs": self.epochs_for(n_train, batch)}
        fields.update(overrides)
        return TrainConfig(**fields)


SCALES: dict[str, Scale] = {
    # seconds: tiny subsets, one short epoch; checks the plumbing, not the claims.
    "smoke": Scale("smoke", seeds=2, n_train=500, steps=8, batch_size=64, n_eval=200, arch="mlp",
                   classifier_train=1000, classifier_steps=60),
    # the demo: MLP models on a 20k-image class-balanced subset, ~1,250 steps each.
    "quick": Scale("quick", seeds=3, n_train=20000, steps=1250, batch_size=128, n_eval=1000, arch="mlp",
                   classifier_train=25000, classifier_steps=390),
    # headline numbers: the seed's conv models on the whole training split, 10 epochs each; the
    # latent-space sweep alone is 360 of them (an accelerator's job; README, "Experiments").
    "full": Scale("full", seeds=5, n_train=None, steps=4700, batch_size=128, n_eval=2000, arch="conv",
                  classifier_train=None, classifier_steps=3750),
}


def get_scale(scale: str | Scale) -> Scale:
    if isinstance(scale, Scale):
        return scale
    if scale not in SCALES:
        raise UsageError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    return SCALES[scale]


def model_pair(scale: Scale, dataset: str, arch: str | None = None) -> tuple[ModelConfig, ModelConfig]:
    """(AE config, VAE config) of the scale's architecture, shaped for the dataset's images.

    The VAE's latent is as wide as the AE's code, so that the two differ in their objective
    only (the conv_vae preset alone has a narrower latent than the conv AE's 64 channels).
    """
    arch = arch or scale.arch
    shape = data.SHAPES[dataset]
    suffix = "_rgb" if shape[-1] == 3 else ""
    ae, vae = config.preset(f"{arch}_ae{suffix}"), config.preset(f"{arch}_vae{suffix}")
    vae = config.replace(vae, latent_dim=ae.latent_dim)
    if tuple(ae.image_shape) != shape:
        ae, vae = config.replace(ae, image_shape=shape), config.replace(vae, image_shape=shape)
    return ae, vae


# ---------------------------------------------------------------------------- data


class Images(NamedTuple):
    """A split as float32 NHWC images in [0, 1] (host numpy) and int32 labels."""

    x: np.ndarray
    y: np.ndarray


@functools.lru_cache(maxsize=16)
def load_images(dataset: str, split: str, n: int | None = None, seed: int = 0) -> Images:
    """Split of dataset as floats; with n, a class-balanced random subset of about n images (memoized)."""
    s = data.load(dataset, split)
    if n is not None and n < len(s.labels):
        s = data.subset_per_class(s, max(1, n // data.NUM_CLASSES[dataset]), seed)
    x, y = data.to_float(s.images), np.asarray(s.labels, np.int32)
    x.setflags(write=False)
    y.setflags(write=False)
    return Images(x, y)


def train_images(scale: Scale, dataset: str) -> Images:
    return load_images(dataset, "train", scale.n_train)


def eval_images(scale: Scale, dataset: str, split: str = "test") -> Images:
    """The first scale.n_eval images of a split (interleaved/balanced where the source is)."""
    full = load_images(dataset, split)
    if len(full.y) <= scale.n_eval:
        return full
    idx = np.asarray(jax.random.permutation(jax.random.key(1234), len(full.y)))[: scale.n_eval]
    return Images(full.x[idx], full.y[idx])


# ---------------------------------------------------------------------------- training S seeds at once


@dataclasses.dataclass
class Trained:
    """S models trained in one vmapped program.

    params: pytree with a leading seed axis S; curves: per-epoch mean training terms, name ->
    (S, epochs); eval_curves: eval-set name -> term -> (S, epochs); seconds: wall time of the
    whole call, compilation included.
    """

    model_cfg: ModelConfig
    train_cfg: TrainConfig
    params: Any
    curves: dict[str, np.ndarray]
    eval_curves: dict[str, dict[str, np.ndarray]]
    seconds: float
    n_train: int

    @property
    def num_seeds(self) -> int:
        return int(jax.tree_util.tree_leaves(self.params)[0].shape[0])

    def seed_params(self, i: int):
        """The parameters of seed i (no seed axis)."""
        return jax.tree_util.tree_map(lambda a: a[i], self.params)

    def select(self, models) -> "Trained":
        """The models at the given indices of the model axis, as their own Trained."""
        idx = np.asarray(models)
        take = lambda tree: jax.tree_util.tree_map(lambda a: a[idx], tree)
        return dataclasses.replace(self, params=take(self.params), curves=take(self.curves),
                                   eval_curves=take(self.eval_curves))

    def final(self, term: str = "loss") -> np.ndarray:
        """(S,) the last epoch's mean training `term` of each seed."""
        return self.curves[term][:, -1]


def train_seeds(model_cfg: ModelConfig, train_cfg: TrainConfig, x_N, seeds: int, seed: int = 0,
                target_N=None, eval_sets: dict | None = None, log: Callable[[str], None] | None = None,
                objective=None, hparams=None, init_params=None) -> Trained:
    """Train `seeds` models of model_cfg on x_N at once through vaejax.fit (a model axis, nothing on disk).

    Model i starts from and trains with its own key, split from `seed`. target_N: what the decoder
    should output (default x_N). eval_sets: name -> images (or (input, target) pairs) whose mean
    metrics per seed are recorded after every epoch. objective, hparams (with a leading model axis) and init_params
    replace the preset's, for experiments that train something else through the same loop.
    """
    start = time.perf_counter()
    r = recipe.build(model_cfg, train_cfg)
    x_N = jnp.asarray(x_N, jnp.float32)
    train_data = x_N if target_N is None else (x_N, jnp.asarray(target_N, jnp.float32))
    result = fit.fit(objective or r.objective, r.optimizer, init_params or r.init_params, train_data, None,
                     epochs=train_cfg.epochs, batch_size=train_cfg.batch_size,
                     key=jax.random.split(jax.random.key(seed), seeds), models="auto", hparams=hparams,
                     eval_data={name: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), d)
                                for name, d in (eval_sets or {}).items()},
                     callbacks=[_EpochLog(model_cfg.kind, train_cfg.epochs, seeds, log)] if log else [], pieces=1)
    jax.block_until_ready(result.state.params)

    def curves(prefix):  # record key <prefix>_<metric> -> metric: (seeds, epochs)
        names = [k for k in result.records[0] if k.startswith(prefix + "_")]
        return {k[len(prefix) + 1:]: np.stack([np.asarray(r[k], np.float64) for r in result.records], axis=1)
                for k in names}

    return Trained(model_cfg, train_cfg, result.state.params, curves("train"),
                   {name: curves(name) for name in eval_sets or {}}, time.perf_counter() - start, int(x_N.shape[0]))


class _EpochLog(fit.Callback):
    """A log line at each quarter of the epochs: the mean training loss over the seeds."""

    def __init__(self, kind, epochs, seeds, log):
        self.kind, self.epochs, self.seeds, self.log = kind, epochs, seeds, log

    def on_epoch_end(self, epoch, record, state):
        if epoch == self.epochs or epoch % max(1, self.epochs // 4) == 0:
            self.log(f"  {self.kind} epoch {epoch}/{self.epochs}: loss {np.mean(record['train_loss']):.2f} "
                     f"(mean over {self.seeds} seeds)")


# ---------------------------------------------------------------------------- reference classifier


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


# ---------------------------------------------------------------------------- statistics


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of a sequence of numbers."""
    v = np.asarray(values, np.float64).reshape(-1)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def last_quarter_change(curves_BT) -> np.ndarray:
    """(B,) each training curve's relative change over its last quarter (at least one point): near 0 on
    a plateau; NaN for a curve of one point."""
    curves = np.asarray(curves_BT, np.float64)
    back = max(1, curves.shape[1] // 4)
    if curves.shape[1] <= back:
        return np.full(curves.shape[0], np.nan)
    return (curves[:, -1] - curves[:, -1 - back]) / np.abs(curves[:, -1 - back])


def stat(name: str, values) -> dict:
    """{name: mean, name_std: std, name_seeds: [values]} for per-seed values."""
    m, s = mean_std(values)
    return {name: m, f"{name}_std": s, f"{name}_seeds": [float(v) for v in np.asarray(values).reshape(-1)]}


def summarize(per_seed: list[dict]) -> dict:
    """A list of {metric: value} (one per seed) -> {metric: mean, metric_std, metric_seeds}."""
    out = {}
    for name in per_seed[0]:
        out.update(stat(name, [d[name] for d in per_seed]))
    return out


CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000


def bootstrap_interval(values, level: float = CI_LEVEL, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (units along axis 0, resampled with
    replacement; trailing axes are averaged into each unit's value first)."""
    v = np.asarray(values, np.float64)
    v = v.reshape(len(v), -1).mean(axis=1)
    if len(v) < 2:
        return float(v.mean()), float(v.mean())
    means = v[np.random.default_rng(seed).integers(0, len(v), (resamples, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


BOOTSTRAP_MIN_UNITS = 10


def interval(values, level: float = CI_LEVEL) -> tuple[float, float]:
    """Interval of the mean over units (axis 0): the percentile bootstrap from BOOTSTRAP_MIN_UNITS
    units on; below that Student's t, since a bootstrap of a few values (3 seeds: 10 distinct
    resampled means) is far too narrow."""
    v = np.asarray(values, np.float64)
    v = v.reshape(len(v), -1).mean(axis=1)
    if len(v) >= BOOTSTRAP_MIN_UNITS or len(v) < 2:
        return bootstrap_interval(v, level)
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def paired_comparison(a, b, higher_is_better: bool = True, level: float = CI_LEVEL) -> dict:
    """a against b on the same units (the same seeds, images or image pairs), axis 0.

    diff: mean of a - b; ci: its interval (common.interval); effect_size: mean / sd of the differences
    (Cohen's d_z; None when every difference is equal); better: +1 when the interval lies wholly on
    the better side of 0, -1 wholly on the worse side, 0 when it contains 0.
    """
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    d = d.reshape(len(d), -1).mean(axis=1)
    lo, hi = interval(d, level)
    sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    sign = 1 if higher_is_better else -1
    better = sign if lo > 0 else -sign if hi < 0 else 0
    return {"diff": float(d.mean()), "ci": [lo, hi], "level": level, "n": int(len(d)),
            "effect_size": float(d.mean() / sd) if sd > 0 else None, "better": better}


def ci_text(comparison: dict, fmt: str = ".3g") -> str:
    """'+0.12 [0.05, 0.19], d = 1.3' for a paired_comparison (or any dict with diff, ci, effect_size)."""
    lo, hi = comparison["ci"]
    effect = comparison.get("effect_size")
    return (f"{comparison['diff']:+{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"
            + (f", d = {effect:.2g}" if effect is not None else ""))


# ---------------------------------------------------------------------------- markdown


def pm(mean: float, std: float | None = None, fmt: str = ".3g") -> str:
    """'mean ± std' (or just mean) for a table cell."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:{fmt}}" if std is None else f"{mean:{fmt}} ± {std:{fmt}}"


def cell(d: dict, name: str, fmt: str = ".3g") -> str:
    """pm() of d[name] with its d[name + '_std'] twin when present."""
    return pm(d[name], d.get(f"{name}_std"), fmt)


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- runs and metrics files


@dataclasses.dataclass
class Run:
    """One experiment run: where its files go and when it started."""

    name: str
    scale: Scale
    dataset: str
    seeds: int
    out: str
    dir: str
    started: float

    def path(self, filename: str) -> str:
        return os.path.join(self.dir, filename)

    def log(self, message: str) -> None:
        print(f"[{self.name} {time.perf_counter() - self.started:6.1f}s] {message}", flush=True)


def start(name: str, scale, dataset: str | None, seeds: int | None, out: str = "results",
          datasets: tuple[str, ...] | None = None, default_dataset: str = DEFAULT_DATASET) -> Run:
    """Validate the arguments, make <out>/<name>/ and start the clock.

    datasets: the ones this experiment supports (default: all of the catalogue);
    default_dataset: used when dataset is None.
    """
    scale = get_scale(scale)
    dataset = dataset or default_dataset
    allowed = datasets or data.DATASETS
    if dataset not in allowed:
        raise UsageError(f"{name} runs on {', '.join(allowed)}, not {dataset!r}; pass --dataset {allowed[0]}")
    seeds = scale.seeds if seeds is None else int(seeds)
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    directory = os.path.join(out, name)
    os.makedirs(directory, exist_ok=True)
    return Run(name, scale, dataset, seeds, out, directory, time.perf_counter())


def finish(run: Run, result: dict) -> dict:
    """Add seconds, device, provenance (versions, commit), scale, dataset, seeds; write <out>/<name>/metrics.json
    atomically; return it."""
    result = dict(result)
    result.setdefault("figures", [])
    result.update(experiment=run.name, scale=run.scale.name, dataset=run.dataset, seeds=run.seeds,
                  device=provenance.device(), provenance=provenance.provenance(),
                  seconds=round(time.perf_counter() - run.started, 2))
    write_json(run.path("metrics.json"), result)
    run.log(f"wrote {run.path('metrics.json')} ({result['seconds']:.1f}s)")
    return result


def write_json(path: str, obj) -> None:
    """JSON (NaN/inf as null, numpy as Python) written to a temp file, then renamed: complete or absent."""
    files.write_atomic(path, json.dumps(_plain(obj), indent=1, allow_nan=False) + "\n")


def write_text(path: str, text: str) -> None:
    """A text file written atomically."""
    files.write_atomic(path, text)


def read_metrics(out: str, name: str) -> dict | None:
    """<out>/<name>/metrics.json, or None when absent or unreadable."""
    return read_json(os.path.join(out, name, "metrics.json"))


read_json = files.read_json


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.ndarray, jax.Array)):
        return _plain(np.asarray(obj).tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# ---------------------------------------------------------------------------- registry and command line


def load_experiment(name: str):
    """The module vaejax_experiments.<name>, or None if it does not exist (yet)."""
    try:
        return importlib.import_module(f"vaejax_experiments.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"vaejax_experiments.{name}":
            return None
        raise


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--scale", choices=list(SCALES), default="quick",
                        help="smoke: seconds (tests); quick: the demo; full: headline numbers")
    parser.add_argument("--dataset", choices=list(data.DATASETS), default=None,
                        help=f"dataset (default: the experiment's own, usually {DEFAULT_DATASET})")
    parser.add_argument("--seeds", type=_positive_int, default=None,
                        help="models trained at once, a vmapped axis (default: the scale's)")
    parser.add_argument("--out", default="results", help="results folder (default: results)")
    return parser


def add_family_arg(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--family", action="append", default=[], metavar="NAME=MODULE:FUNCTION",
                        help="a model family of your own, swept over beta and judged beside the built-in ones "
                             "(repeatable): FUNCTION(image_shape, latent_dim) returns (Linen module, likelihood)")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def user_errors():
    """The exception types that mean 'the user can fix this': reported in one line, exit 2."""
    return (UsageError, data.DatasetError)


def cli(main: Callable, argv: list[str] | None = None, description: str | None = None) -> None:
    """`python -m vaejax_experiments.<name> --scale quick --dataset fashion_mnist --seeds 3 --out results`."""
    module = sys.modules.get(main.__module__)
    parser = argparse.ArgumentParser(prog=f"python -m {main.__module__}",
                                     description=description or getattr(module, "CLAIM", None))
    takes_families = "families" in inspect.signature(main).parameters
    add_common_args(parser)
    if takes_families:
        add_family_arg(parser)
    args = parser.parse_args(argv)
    try:
        extra = {}
        if takes_families:
            from vaejax_experiments import sweep  # here: sweep itself imports this module
            extra = {"families": tuple(sweep.user_family(f) for f in args.family)}
        result = main(scale=args.scale, dataset=args.dataset, seeds=args.seeds, out=args.out, **extra)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if module is not None and hasattr(module, "verdict"):
        v, reason = module.verdict(result)
        print(f"verdict: {v}: {reason}")


# ---------------------------------------------------------------------------- shared by the latent-space experiments

CLASS_NAMES = {
    "fashion_mnist": ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"],
    "mnist": [str(i) for i in range(10)],
    "mnist_5k": [str(i) for i in range(10)],
    "cifar10": ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "sample_patches": ["china", "flower"],
}


def training_summary(trained: Trained) -> dict:
    """What a report says about how models were trained: size, epochs, final loss over seeds, seconds."""
    out = {"preset": f"{trained.model_cfg.arch} {trained.model_cfg.kind} latent {trained.model_cfg.latent_dim}",
           "n_train": trained.n_train, "epochs": trained.train_cfg.epochs,
           "steps": trained.train_cfg.epochs * (trained.n_train // trained.train_cfg.batch_size),
           "seconds": round(trained.seconds, 2)}
    out.update(stat("final_loss", trained.final("loss")))
    return out
