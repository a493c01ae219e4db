"""What produced a result: the versions of Python and the libraries, the code's git commit, the device."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version

import jax

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "vaejax")


def device() -> str:
    """The JAX backend and device kind, e.g. 'cpu (cpu) x1' or 'gpu (NVIDIA H100 80GB HBM3) x8'."""
    return f"{jax.default_backend()} ({jax.devices()[0].device_kind}) x{jax.device_count()}"


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """{"versions": {python, jax, ...}, "git_commit", "git_dirty", "device"}; None where unknown."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    commit, dirty = _git_state(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {"versions": versions, "git_commit": commit, "git_dirty": dirty, "device": device()}


def summary(p: dict) -> str:
    """One line: vaejax 0.1.0 (commit 1a2b3c4d, clean), jax 0.10.2, ..., on <device>; a source tree run
    without installing it has no version, only its commit."""
    v = p["versions"]
    code = f"commit {p['git_commit'][:8]}, {'with uncommitted changes' if p['git_dirty'] else 'clean'}" \
        if p.get("git_commit") else "no git checkout"
    libs = ", ".join(f"{k} {v[k]}" for k in PACKAGES if k != "vaejax" and v.get(k))
    name = f"vaejax {v['vaejax']}" if v.get("vaejax") else "vaejax, not installed"
    return f"{name} ({code}), Python {v['python']}, {libs}, on {p['device']}"


def _git_state(root: str) -> tuple[str | None, bool | None]:
    """(HEAD's commit, whether tracked files differ from it) of the checkout whose top level is root, or
    (None, None): an installed copy inside someone else's repository (a virtualenv in a project) has no
    commit of its own."""
    def git(*args):
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0 or os.path.realpath(top.stdout.strip()) != os.path.realpath(root):
            return None, None
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None, None
        return head.stdout.strip(), bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None
