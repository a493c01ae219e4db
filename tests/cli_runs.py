"""Helpers for the tests that run `vaejax train` end to end (test_cli, test_faults, test_parallel, test_bad_input).

Runs are tiny (a 32-unit MLP VAE on mnist_5k, 20 steps an epoch) and the subprocesses share the
session's persistent XLA compilation cache (conftest.py), so each costs a few seconds on two shared cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys

# A tiny run: the same code paths as the presets, a fraction of the compute.
TINY = ["--preset", "mlp_vae", "--dataset", "mnist_5k", "--batch-size", "200", "--set", "hidden=32",
        "--set", "latent_dim=4", "--no-progress", "--no-figures"]
STEPS_PER_EPOCH = 4000 // 200

_REFERENCES: dict = {}


def env(**extra) -> dict:
    """Environment of a CLI subprocess: CPU only; it inherits the session's compilation and dataset caches (conftest.py)."""
    e = dict(os.environ)
    e.pop("XLA_FLAGS", None)
    e.update({
        "JAX_PLATFORMS": "cpu",
        "VAEJAX_CACHE_DIR": os.environ["VAEJAX_CACHE_DIR"],
        "PYTHONUNBUFFERED": "1",
    })
    for k in [k for k in e if k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROC", "JAX_PROCESS_ID"))]:
        del e[k]
    e.update({k: str(v) for k, v in extra.items()})
    return e


def command(*args) -> list[str]:
    return [sys.executable, "-m", "vaejax.cli", *map(str, args)]


def train(workdir, *args, epochs: int, timeout: float = 180, check: bool = True, kill_at: str | None = None,
          term_at: int | None = None, poison: int | None = None, **env_extra):
    """Run `vaejax train` on the tiny settings; returns the CompletedProcess.

    kill_at ("point:epoch"), term_at (an epoch) and poison (an image index) run it through
    tests/fault_run.py instead, which injects that fault.
    """
    cmd = command("train", *TINY, "--epochs", epochs, "--workdir", workdir, *args)
    faults = {"--kill-at": kill_at, "--term-at": term_at, "--poison": poison}
    faults = [str(a) for flag, value in faults.items() if value is not None for a in (flag, value)]
    if faults:
        cmd = [sys.executable, os.path.join(os.path.dirname(__file__), "fault_run.py"), *faults, "--", *cmd[3:]]
    proc = subprocess.run(cmd, env=env(**env_extra), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"vaejax train failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def reference(tmp_root, epochs: int) -> str:
    """The workdir of an uninterrupted tiny run of `epochs` epochs, made once per session; copy before changing it."""
    if epochs not in _REFERENCES:
        workdir = os.path.join(str(tmp_root), f"reference-{epochs}")
        _REFERENCES[epochs] = (workdir, train(workdir, epochs=epochs).stdout)
    return _REFERENCES[epochs][0]


def reference_digest(epochs: int) -> str:
    """The params sha256 printed by the reference run of `epochs` epochs."""
    return done_digest(_REFERENCES[epochs][1])


def copy_run(src, dest) -> str:
    shutil.copytree(src, dest)
    return str(dest)


def done_digest(stdout: str) -> str:
    """The params sha256 that `vaejax train` prints in its last line."""
    found = re.findall(r"params sha256 ([0-9a-f]+)", stdout)
    assert found, f"no 'done' line in:\n{stdout}"
    return found[-1]


def checkpoint_name(epoch: int) -> str:
    """The checkpoint folder of the state after `epoch` (checkpoints are named by update count)."""
    return str(epoch * STEPS_PER_EPOCH)


def state_digest(workdir, epoch: int) -> str:
    """The SHA-256 of the whole train state (params and optimizer) saved after `epoch`."""
    with open(os.path.join(workdir, "checkpoints", checkpoint_name(epoch), "meta", "metadata")) as f:
        return json.load(f)["state_sha256"]


def checkpoint_names(workdir) -> list[str]:
    return sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=lambda n: (len(n), n))


def metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
