"""One's own images as a dataset, for `vaejax train --dataset PATH` and for the Python API.

Two forms are read:

    images.npz   `images`: uint8 (N, H, W, C), or (N, H, W) for one channel; optional `labels`: ints (N,);
                 optional `test_images` (and `test_labels`): a test split of its own
    a folder     image files (.png, .jpg, .jpeg, .bmp, .gif) of one size and mode (grey: 1 channel, RGB: 3),
                 read in sorted order; when it holds subfolders instead, each is a class, labelled by its
                 index in sorted order

Without a test split of its own, a fixed 10% of the images (at least one) is held out as the test split.
Everything is checked before the images are read whole (an .npz member's header gives its shape and
dtype); a file that does not fit raises DatasetError, one line naming the fix.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from vaejax.data import Split
from vaejax.errors import DatasetError

IMAGE_FILES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
MAX_BYTES = 8 << 30  # images larger than this in all are refused before they are read
MAX_SIDE = 4096
TEST_FRACTION = 0.1
HOLD_OUT_SEED = 0


def is_path(dataset: str) -> bool:
    """Whether a --dataset value names a file or folder rather than a dataset of the catalogue."""
    return dataset.endswith(".npz") or os.sep in dataset or os.path.exists(dataset)


def image_shape(path: str) -> tuple[int, int, int]:
    """(H, W, C) of the images at path, read from headers (an .npz) or the first file (a folder)."""
    if _is_npz(path):
        return _npz_shapes(path)["images"][1:]
    files, _ = _folder_files(path)
    return _read_image(files[0]).shape


def load(path: str) -> tuple[Split, Split]:
    """(train, test) splits of the images at path: uint8 NHWC images, int32 labels (0 where none)."""
    path = os.path.expanduser(path)
    train, test = _load_npz(path) if _is_npz(path) else _load_folder(path)
    if test is None:
        train, test = _hold_out(train)
    return train, test


def _is_npz(path: str) -> bool:
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        return False
    if not os.path.isfile(path):
        raise DatasetError(f"{path} is neither a dataset name nor an existing .npz file or folder of images")
    if not path.endswith(".npz"):
        raise DatasetError(f"{path}: expected an .npz file (np.savez(path, images=uint8 NHWC)) or a folder of images")
    return True


# ---------------------------------------------------------------------------- .npz


def _npz_shapes(path: str) -> dict[str, tuple]:
    """{array name: shape} from the members' headers, each checked; nothing is read whole."""
    path = os.path.expanduser(path)
    try:
        with zipfile.ZipFile(path) as z:
            headers = {name[:-4]: _header(z, name) for name in z.namelist() if name.endswith(".npy")}
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise DatasetError(f"{path} is not a readable .npz file ({e}); write it with np.savez(path, images=...)") from None
    if "images" not in headers:
        raise DatasetError(f"{path} holds no array named images (it has: {', '.join(sorted(headers)) or 'none'}); "
                           "write it with np.savez(path, images=uint8 NHWC, labels=ints)")
    shapes = {}
    for name, (shape, dtype) in headers.items():
        if name in ("images", "test_images"):
            shapes[name] = _checked_images(path, name, shape, dtype)
        elif name in ("labels", "test_labels"):
            if np.dtype(dtype).kind not in "iu" or len(shape) != 1:
                raise DatasetError(f"{path}: {name} must be integers of shape (N,), got {dtype} {shape}")
            shapes[name] = shape
    for images, labels in (("images", "labels"), ("test_images", "test_labels")):
        if labels in shapes and (images not in shapes or shapes[labels][0] != shapes[images][0]):
            raise DatasetError(f"{path}: {labels} must hold one label per image of {images}")
    if "test_images" in shapes and shapes["test_images"][1:] != shapes["images"][1:]:
        raise DatasetError(f"{path}: test_images are {shapes['test_images'][1:]}, images {shapes['images'][1:]}; "
                           "both splits need one image shape")
    return shapes


def _header(z: zipfile.ZipFile, name: str):
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with z.open(name) as f:
        version = np.lib.format.read_magic(f)
        if version not in readers:
            raise ValueError(f"{name} is in .npy format {version[0]}.{version[1]}, which is not read here")
        shape, _, dtype = readers[version](f, max_header_size=10_000)
    return shape, dtype


def _checked_images(path: str, name: str, shape: tuple, dtype) -> tuple[int, int, int, int]:
    """(N, H, W, C) of an images array from its header, once it is uint8 of a sane size."""
    if np.dtype(dtype) != np.uint8:
        raise DatasetError(f"{path}: {name} are {np.dtype(dtype)}; save them as uint8 in [0, 255], e.g. "
                           "(x * 255).round().astype(np.uint8) for floats in [0, 1]")
    if len(shape) == 3:
        shape = shape + (1,)
    if len(shape) != 4 or shape[0] < 1 or not all(1 <= s <= MAX_SIDE for s in shape[1:3]) or shape[3] not in (1, 3):
        raise DatasetError(f"{path}: {name} must be (N, H, W, C) with N >= 1, sides in [1, {MAX_SIDE}] and 1 or 3 "
                           f"channels (or (N, H, W) for grey), got {tuple(shape)}")
    if int(np.prod(shape, dtype=np.int64)) > MAX_BYTES:
        raise DatasetError(f"{path}: {name} hold {int(np.prod(shape, dtype=np.int64)):,} bytes, more than "
                           f"{MAX_BYTES:,}; train on a subset through the Python API")
    return tuple(int(s) for s in shape)


def _load_npz(path: str) -> tuple[Split, Split | None]:
    shapes = _npz_shapes(path)
    with np.load(path, allow_pickle=False) as f:
        def split(images, labels):
            x = f[images].reshape(shapes[images])
            y = f[labels].astype(np.int32) if labels in shapes else np.zeros(len(x), np.int32)
            return Split(x, y)

        return split("images", "labels"), split("test_images", "test_labels") if "test_images" in shapes else None


# ---------------------------------------------------------------------------- a folder of images


def _folder_files(path: str) -> tuple[list[str], np.ndarray]:
    """(image files in sorted order, their labels): a class per subfolder when there are subfolders."""
    path = os.path.expanduser(path)
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    folders = [os.path.join(path, d) for d in classes] if classes else [path]
    files, labels = [], []
    for label, folder in enumerate(folders):
        found = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_FILES))
        files += [os.path.join(folder, n) for n in found]
        labels += [label] * len(found)
    if not files:
        where = "its subfolders" if classes else path
        raise DatasetError(f"no image files ({', '.join(IMAGE_FILES)}) in {where}; put the images there, or pass an .npz")
    return files, np.asarray(labels, np.int32)


def _read_image(file: str) -> np.ndarray:
    """(H, W, C) uint8 of one image file: grey as 1 channel, RGB (or palette) as 3."""
    from PIL import Image

    try:
        with Image.open(file) as im:
            if max(im.size) > MAX_SIDE:
                raise DatasetError(f"{file} is {im.size[0]}x{im.size[1]}, larger than {MAX_SIDE} a side")
            grey = im.mode in ("L", "1", "I;16", "I")
            x = np.asarray(im.convert("L" if grey else "RGB"), np.uint8)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read image {file} ({e}); remove it or replace it") from None
    return x[..., None] if x.ndim == 2 else x


def _load_folder(path: str) -> tuple[Split, None]:
    files, labels = _folder_files(path)
    first = _read_image(files[0])
    if len(files) * first.size > MAX_BYTES:
        raise DatasetError(f"{path}: {len(files)} images of {first.shape} exceed {MAX_BYTES:,} bytes; use a subset")
    images = np.empty((len(files),) + first.shape, np.uint8)
    for i, file in enumerate(files):
        x = first if i == 0 else _read_image(file)
        if x.shape != first.shape:
            raise DatasetError(f"{file} is {x.shape} (H, W, C), but {files[0]} is {first.shape}; every image needs "
                               "one size and mode: resize or convert them first")
        images[i] = x
    return Split(images, labels), None


def _hold_out(train: Split) -> tuple[Split, Split]:
    """A fixed TEST_FRACTION of the images (at least one, and one left to train on) as the test split."""
    n = len(train.images)
    if n < 2:
        raise DatasetError("one image cannot be split into training and test images; add images")
    order = np.random.default_rng(HOLD_OUT_SEED).permutation(n)
    held = np.sort(order[: max(1, int(round(TEST_FRACTION * n)))])
    kept = np.setdiff1d(np.arange(n), held)
    return Split(train.images[kept], train.labels[kept]), Split(train.images[held], train.labels[held])
