"""One's own images: `vaejax train --dataset PATH` on an .npz or a folder of images, and the checks that
answer a file that does not fit in one line (exit 2) before anything is read whole or written."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import cli_runs
from vaejax import cli, data, own_data

TINY = [a for a in cli_runs.TINY if a not in ("--dataset", "mnist_5k")] + ["--batch-size", "20", "--epochs", "1"]


def _images(n=60, shape=(28, 28), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n,) + shape).astype(np.uint8)


def test_an_npz_trains_and_samples(tmp_path, capfd):
    path = tmp_path / "mine.npz"
    np.savez(path, images=_images()[..., None], labels=np.arange(60) % 3)
    workdir = tmp_path / "run"
    assert cli.main(["train", *TINY, "--dataset", str(path), "--workdir", str(workdir)]) == 0
    spec = json.load(open(workdir / "run.json"))
    assert spec["dataset"] == str(path) and spec["model"]["image_shape"] == [28, 28, 1]
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert len(records) == 1 and np.isfinite(records[0]["test_loss"])
    assert cli.main(["sample", "--workdir", str(workdir), "--out", str(tmp_path / "s.png")]) == 0


@pytest.fixture
def folder(tmp_path):
    """Two classes of grey 28x28 PNGs in subfolders."""
    for label, name in enumerate(("cats", "dogs")):
        os.makedirs(tmp_path / "imgs" / name)
        for i, x in enumerate(_images(10, seed=label)):
            Image.fromarray(x).save(tmp_path / "imgs" / name / f"{i:02d}.png")
    return tmp_path / "imgs"


def test_a_folder_of_images_reads_classes_from_subfolders_and_holds_out_a_test_split(folder):
    train, test = own_data.load(str(folder))
    assert train.images.shape == (18, 28, 28, 1) and test.images.shape == (2, 28, 28, 1)
    assert train.images.dtype == np.uint8 and sorted(np.concatenate([train.labels, test.labels])) == [0] * 10 + [1] * 10
    first = np.asarray(Image.open(folder / "cats" / "00.png"))
    every = np.concatenate([train.images, test.images])
    assert any(np.array_equal(x[..., 0], first) for x in every)
    again = own_data.load(str(folder))  # the held-out images are fixed
    assert np.array_equal(again[1].images, test.images)


def test_an_npz_with_its_own_test_split_keeps_it(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, images=_images(), test_images=_images(7, seed=1))
    train, test = own_data.load(str(path))
    assert train.images.shape == (60, 28, 28, 1) and test.images.shape == (7, 28, 28, 1)
    assert np.all(train.labels == 0) and np.array_equal(test.images[..., 0], _images(7, seed=1))


def _bad_npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("make, words", [
    (lambda p: _bad_npz(p, images=_images().astype(np.float32) / 255), "images are float32; save them as uint8"),
    (lambda p: _bad_npz(p, pictures=_images()), "holds no array named images (it has: pictures)"),
    (lambda p: _bad_npz(p, images=_images(shape=(28, 28, 3))), "images are (28, 28, 3) but preset mlp_vae takes (28, 28, 1)"),
    (lambda p: _bad_npz(p, images=_images(shape=(28, 28, 2))), "must be (N, H, W, C)"),
    (lambda p: _bad_npz(p, images=_images(), labels=np.zeros(5, np.int64)), "labels must hold one label per image"),
    (lambda p: _bad_npz(p, images=_images(), labels=np.zeros(60, np.float32)), "labels must be integers"),
    (lambda p: str(p / "nothing.npz"), "neither a dataset name nor an existing .npz file or folder"),
    (lambda p: (open(p / "x.npz", "w").write("not a zip"), str(p / "x.npz"))[1], "is not a readable .npz file"),
    (lambda p: (os.makedirs(p / "empty"), str(p / "empty"))[1], "no image files"),
])
def test_a_file_that_does_not_fit_is_one_line_exit_2_with_nothing_written(make, words, tmp_path, capfd):
    path = make(tmp_path)
    before = sorted(os.listdir(tmp_path))
    rc = cli.main(["train", *TINY, "--dataset", path, "--workdir", str(tmp_path / "run")])
    err = capfd.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert words in err, err
    assert sorted(os.listdir(tmp_path)) == before


def test_images_of_two_sizes_in_a_folder_are_named(folder):
    Image.fromarray(_images(1, shape=(20, 28))[0]).save(folder / "dogs" / "99.png")
    with pytest.raises(data.DatasetError, match=r"99.png is \(20, 28, 1\).*every image needs one size"):
        own_data.load(str(folder))


def test_a_huge_header_is_refused_before_anything_is_read(tmp_path, capfd):
    """An .npz whose images header claims 10^8 images (78 GB) holds a few bytes: refused from the header,
    in one line, with nothing allocated."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (10**8, 28, 28, 1)})
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("images.npy", header.getvalue() + b"\0" * 100)
    with pytest.raises(data.DatasetError, match="more than 8,589,934,592"):
        own_data.image_shape(str(path))
    rc = cli.main(["train", *TINY, "--dataset", str(path), "--workdir", str(tmp_path / "run")])
    err = capfd.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "through the Python API" in err, err


def test_images_no_preset_takes_train_once_an_mlp_preset_is_sized_to_them(tmp_path, capfd):
    path = tmp_path / "rgb.npz"
    np.savez(path, images=_images(shape=(20, 24, 3)))
    workdir = str(tmp_path / "run")
    assert cli.main(["train", *TINY, "--dataset", str(path), "--workdir", workdir]) == 2
    err = capfd.readouterr().err
    assert "no preset takes them; --set image_shape=20,24,3 sizes an MLP preset to them" in err, err
    assert cli.main(["train", *TINY, "--dataset", str(path), "--set", "image_shape=20,24,3", "--workdir", workdir]) == 0
    assert json.load(open(os.path.join(workdir, "run.json")))["model"]["image_shape"] == [20, 24, 3]
