"""Importing vaejax, and loading a run with it, leaves the process as it was: matplotlib's backend,
Python's hooks, the root logger, and stderr quiet. Each check runs in a fresh interpreter."""

import os
import subprocess
import sys
import textwrap

TRAIN = """
import jax, numpy as np
from vaejax import config, fit, recipe
r = recipe.build(config.replace(config.preset("mlp_vae"), hidden=(8,), latent_dim=2), config.TrainConfig())
x = np.random.default_rng(0).random((32, 28, 28, 1)).astype(np.float32)
fit.fit(r.objective, r.optimizer, r.init_params, x, {workdir!r}, epochs=1, batch_size=16, key=jax.random.key(0))
"""

CHECK = """
import importlib, logging, pkgutil, signal, sys
import matplotlib
root = logging.getLogger()
state = lambda: (matplotlib.get_backend(), sys.excepthook, sys.unraisablehook, list(root.handlers), root.level,
                 signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
before = state()
import vaejax
for module in pkgutil.iter_modules(vaejax.__path__):  # all but __main__, which runs the CLI
    if module.name != "__main__":
        importlib.import_module(f"vaejax.{{module.name}}")
assert state() == before, ("import", before, state())
from vaejax import config, recipe
r = recipe.build(config.replace(config.preset("mlp_vae"), hidden=(8,), latent_dim=2), config.TrainConfig())
run = vaejax.load({workdir!r}, model=r.model, init_params=r.init_params, optimizer=r.optimizer)
after = state()
assert after[:2] + after[3:] == before[:2] + before[3:], ("load", before, after)
print("unchanged", run.updates)
"""


def _python(code: str, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", **env})


def test_importing_and_loading_leave_the_process_as_it_was(tmp_path):
    """The one hook vaejax installs, when a checkpoint manager opens, filters orbax's leftovers of a failed
    read or write and passes everything else to the previous hook; importing installs nothing."""
    workdir = str(tmp_path / "run")
    trained = _python(TRAIN.format(workdir=workdir))
    assert trained.returncode == 0, trained.stderr
    checked = _python(CHECK.format(workdir=workdir), MPLBACKEND="svg")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.split() == ["unchanged", "2"]
    assert checked.stderr == ""  # load is quiet: no absl warning about a read-only manager
