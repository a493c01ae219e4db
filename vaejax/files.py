"""Whole-file writes and tolerant reads: the one atomic write and the one JSON reader."""

from __future__ import annotations

import json
import os
import tempfile


def write_atomic(path: str, content) -> None:
    """Write a whole file or nothing: a temporary file beside it, fsync, rename over it.

    content: a str, bytes, or a function that writes to the open binary file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would make it: mkstemp's files are owner-only
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_json(path: str):
    """A JSON file's content, or None if it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def remove_temporaries(folder: str, name: str) -> None:
    """Temporary files a killed write_atomic of <folder>/<name> left behind."""
    prefix = f".{name}."
    for entry in os.listdir(folder):
        if entry.startswith(prefix) and entry.endswith(".tmp"):
            try:
                os.remove(os.path.join(folder, entry))
            except OSError:
                pass


def _umask() -> int:
    """The process's umask: from /proc on Linux (no change to the process), else by setting it and setting
    it straight back."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
