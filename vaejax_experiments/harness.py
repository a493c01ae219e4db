"""What every experiment shares around its science: the registry, the data, the run's files, the command line.

An experiment is a module `vaejax_experiments.<name>` with

    CLAIM: str                                    the notes' claim in one sentence
    main(scale, dataset, seeds, out) -> dict      runs it; writes <out>/<name>/metrics.json and PNGs
    verdict(metrics) -> (verdict, reason)         verdict in VERDICTS, derived from the numbers
    report(metrics) -> str                        markdown table(s), mean +- std over seeds
    DEFAULT_DATASET: str (optional)               when not fashion_mnist

and ends with `if __name__ == "__main__": harness.cli(main)`. Inside main:

    run = harness.start("name", scale, dataset, seeds, out)   # run.scale, run.seeds, run.dir, run.path(...)
    s = run.scale.pick(**SETTINGS)                             # the experiment's frozen settings at this scale
    key = harness.stream(run.key, "training")                  # every draw from the run's one key, by name
    ...
    return harness.finish(run, metrics, s)                     # writes metrics.json, settings included

Figures go to run.path("file.png") and are listed, relative to run.dir, in metrics["figures"]. A main
that also takes `families` sweeps user families (families.UserFamily) beside the built-in ones, and
its command line takes --family. Errors the user can fix (user_errors) end the command line with one
line and exit code 2.
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
import zlib
from typing import Callable, NamedTuple

import jax
import numpy as np

from vaejax import data, files, provenance
from vaejax.errors import UsageError
from vaejax_experiments import families, settings
from vaejax_experiments.settings import Scale

# The eight experiments of the report, in its order, then sections that are figures only.
EXPERIMENTS = ("interpolation", "random_latent", "centroids", "pretrain_classify",
               "transform", "overfit_ood", "denoise", "anomaly")
SECTIONS = ("latent_space", "rate_distortion")
VERDICTS = ("holds", "does not hold", "mixed", "undecided")
DEFAULT_DATASET = "fashion_mnist"

CLASS_NAMES = {
    "fashion_mnist": ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"],
    "mnist": [str(i) for i in range(10)],
    "mnist_5k": [str(i) for i in range(10)],
    "cifar10": ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "sample_patches": ["china", "flower"],
}


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
    x.setflags(write=False)  # memoized and shared between experiments: nobody may change them
    y.setflags(write=False)
    return Images(x, y)


def train_images(scale: Scale, dataset: str) -> Images:
    return load_images(dataset, "train", scale.n_train)


def eval_images(scale: Scale, dataset: str, split: str = "test") -> Images:
    """The first scale.n_eval images of a split (interleaved/balanced where the source is)."""
    full = load_images(dataset, split)
    if len(full.y) <= scale.n_eval:
        return full
    idx = np.asarray(jax.random.permutation(settings.shared_key("eval subset"), len(full.y)))[: scale.n_eval]
    return Images(full.x[idx], full.y[idx])


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

    @property
    def cache(self) -> str:
        """<out>/.cache: what a run may reuse (the reference classifiers, a converging scale's models)."""
        return os.path.join(self.out, ".cache")

    @property
    def key(self) -> jax.Array:
        """The experiment's one key: every draw it makes comes from it through a named stream."""
        return stream(jax.random.key(0), self.name)

    def log(self, message: str) -> None:
        print(f"[{self.name} {time.perf_counter() - self.started:6.1f}s] {message}", flush=True)


def stream(key: jax.Array, name: str) -> jax.Array:
    """The key of the stream `name` of key: fold_in of a stable hash of the name, so that a draw says what
    it is for and adding a stream leaves the others' numbers as they were."""
    return jax.random.fold_in(key, zlib.crc32(name.encode()))


def start(name: str, scale, dataset: str | None, seeds: int | None, out: str = "results",
          datasets: tuple[str, ...] | None = None, default_dataset: str = DEFAULT_DATASET) -> Run:
    """Validate the arguments, make <out>/<name>/ and start the clock.

    datasets: the ones this experiment supports (default: all of the catalogue);
    default_dataset: used when dataset is None.
    """
    scale = settings.get_scale(scale)
    dataset = dataset or default_dataset
    allowed = datasets or data.DATASETS
    if dataset not in allowed:
        raise UsageError(f"{name} runs on {', '.join(allowed)}, not {dataset!r}; pass --dataset {allowed[0]}")
    seeds = scale.seeds if seeds is None else int(seeds)
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    directory = os.path.join(out, judge_folder(scale), name)
    os.makedirs(directory, exist_ok=True)
    code_provenance()  # read when the first experiment of the process starts, the code its models train with
    return Run(name, scale, dataset, seeds, out, directory, time.perf_counter())


@functools.cache
def code_provenance() -> dict:
    """provenance.provenance() (versions, commit) as it was when this process's first experiment started:
    a long run that reads back models trained earlier in it records the code they were trained with,
    not a commit made while it ran."""
    return provenance.provenance()


def judge_folder(scale: Scale) -> str:
    """Where in <out> a run's results go: "" for the first judge, judge_seed_<n>/ for another judge seed."""
    return f"judge_seed_{scale.judge_seed}" if scale.judge_seed else ""


def finish(run: Run, result: dict, settings=None) -> dict:
    """Add seconds, device, provenance (versions, commit), scale, dataset, seeds and the experiment's frozen
    settings (a dataclass) when given; write <out>/<name>/metrics.json atomically; return it."""
    result = dict(result)
    if settings is not None:
        result["settings"] = dataclasses.asdict(settings)
    result.setdefault("figures", [])
    result.update(experiment=run.name, scale=run.scale.name, judge_seed=run.scale.judge_seed, dataset=run.dataset,
                  seeds=run.seeds,
                  device=provenance.device(), provenance=code_provenance(),
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
    parser.add_argument("--scale", choices=list(settings.SCALES), default="quick",
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
        extra = {"families": tuple(families.user_family(f) for f in args.family)} if takes_families else {}
        result = main(scale=args.scale, dataset=args.dataset, seeds=args.seeds, out=args.out, **extra)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if module is not None and hasattr(module, "verdict"):
        v, reason = module.verdict(result)
        print(f"verdict: {v}: {reason}")
