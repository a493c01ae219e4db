"""IDX files (MNIST's format): read with the header checked before anything is allocated, and
downloaded with a size cap and a deadline. Errors are DatasetErrors whose message is one line.

    read_idx(path, max_shape)    a uint8 array shaped by the file's header
    fetch(url, message)          the bytes at url, or DatasetError(message(why))
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import time
import urllib.error
import urllib.request
import zlib
from typing import Callable

import numpy as np

from vaejax.errors import DatasetError

MAX_IDX_BYTES = 2**30  # a header declaring more data than this is damaged, whatever the dataset
_DOWNLOAD_TIMEOUT_S = 30  # per read
_DOWNLOAD_DEADLINE_S = 600  # per file, in all
_DOWNLOAD_MAX_BYTES = 64 * 2**20  # the largest IDX .gz here, Fashion-MNIST's training images, is 26 MiB


def read_idx(path, max_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read a uint8 IDX file (raw or .gz) into an array shaped by its header.

    The header is checked before anything is allocated: at most MAX_IDX_BYTES of data and, with
    max_shape, the same rank, the same trailing dims and at most max_shape[0] items. Only the bytes
    the header declares are inflated from a .gz (and one more, to detect trailing data).
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            dims = _read_idx_header(f, path)
            _check_idx_dims(dims, max_shape, path)
            out = np.empty(dims, np.uint8)
            n_read = f.readinto(memoryview(out.reshape(-1)))
            extra = len(f.read(1))
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"cannot read IDX file {path}: {_one_line(e)}; replace it with the original download") from None
    if n_read != out.size or extra:
        found = f"more than {out.size}" if extra else n_read
        raise DatasetError(
            f"IDX file {path} has {found} data bytes where its header says {out.size}; "
            "it is truncated or corrupt, replace it with the original download"
        )
    return out


def _read_idx_header(f, path: str) -> tuple[int, ...]:
    """Dims from an IDX header; magic must be 0x000008NN (uint8 data, NN dims)."""
    magic = f.read(4)
    if len(magic) != 4 or magic[:3] != b"\x00\x00\x08" or magic[3] == 0:
        raise DatasetError(
            f"{path} is not a uint8 IDX file (starts with 0x{magic.hex()}, expected 0x000008NN); "
            "replace it with the original download"
        )
    raw_dims = f.read(4 * magic[3])
    if len(raw_dims) != 4 * magic[3]:
        raise DatasetError(f"IDX file {path} ends inside its header; replace it with the original download")
    return struct.unpack(f">{magic[3]}I", raw_dims)


def _check_idx_dims(dims: tuple[int, ...], max_shape: tuple[int, ...] | None, path: str) -> None:
    size = math.prod(dims)
    fits = max_shape is None or (len(dims) == len(max_shape) and dims[1:] == tuple(max_shape[1:])
                                 and dims[0] <= max_shape[0])
    if size > MAX_IDX_BYTES or not fits:
        expected = f" (at most {' x '.join(map(str, max_shape))})" if max_shape is not None else ""
        raise DatasetError(f"IDX file {path} declares {' x '.join(map(str, dims))} values{expected}; "
                           "it is damaged or not this dataset's, replace it with the original download")


def fetch(url: str, message: Callable[[str], str]) -> bytes:
    """The body at url, read in pieces: at most _DOWNLOAD_MAX_BYTES, within _DOWNLOAD_DEADLINE_S in all
    (the socket's timeout bounds each read only). message(why) -> the DatasetError's line."""
    deadline = time.monotonic() + _DOWNLOAD_DEADLINE_S
    pieces, size = [], 0
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            while piece := response.read(2**20):
                pieces.append(piece)
                size += len(piece)
                if size > _DOWNLOAD_MAX_BYTES:
                    raise DatasetError(message(f"{url} is larger than {_DOWNLOAD_MAX_BYTES // 2**20} MiB, "
                                               "more than any file of the dataset; nothing was kept"))
                if time.monotonic() > deadline:
                    raise DatasetError(message(f"downloading {url} took more than {_DOWNLOAD_DEADLINE_S} s"))
    except (OSError, ValueError) as e:  # URLError, timeouts and refused connections are OSErrors
        raise DatasetError(message(f"downloading {url} failed ({_one_line(e)})")) from None
    return b"".join(pieces)


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"
