"""Resuming or loading with another model or optimizer is the caller's mistake: a named error, nothing moved."""

import os

import jax
import numpy as np
import optax
import pytest

import vaejax
from vaejax import config, fit, recipe
from vaejax.errors import StateMismatch


def _fit(workdir, optimizer=None, cfg=None, epochs=1, resume=False):
    r = recipe.build(cfg or config.preset("mlp_ae"), config.TrainConfig())
    x = np.random.default_rng(0).uniform(size=(64, 28, 28, 1)).astype(np.float32)
    return fit.fit(r.objective, optimizer or r.optimizer, r.init_params, x, workdir, epochs=epochs, batch_size=32,
                   key=jax.random.key(0), resume=resume)


def _listing(workdir):
    return sorted(os.path.relpath(os.path.join(d, f), workdir) for d, _, fs in os.walk(workdir) for f in fs)


@pytest.mark.parametrize("change", ["optimizer", "model"])
def test_resuming_with_another_optimizer_or_model_names_it_and_moves_nothing(tmp_path, change):
    workdir = str(tmp_path / "run")
    first = _fit(workdir)
    before = _listing(workdir)
    other = {"optimizer": {"optimizer": optax.sgd(0.1)},
             "model": {"cfg": config.replace(config.preset("mlp_ae"), latent_dim=8)}}[change]
    with pytest.raises(StateMismatch) as e:
        _fit(workdir, epochs=2, resume=True, **other)
    message = str(e.value)
    assert "\n" not in message and "nothing was moved" in message
    assert ("only in the checkpoint" in message) if change == "optimizer" else ("shapes differ" in message)
    assert _listing(workdir) == before and not os.path.exists(os.path.join(workdir, "damaged_checkpoints"))
    again = _fit(workdir, epochs=2, resume=True)  # with the right ones it goes on from epoch 1
    assert again.resumed_from == int(first.state.step)


def test_loading_with_another_optimizer_is_the_same_error(tmp_path):
    workdir = str(tmp_path / "run")
    _fit(workdir)
    r = recipe.build(config.preset("mlp_ae"), config.TrainConfig())
    with pytest.raises(StateMismatch):
        vaejax.load(workdir, model=r.model, init_params=r.init_params, optimizer=optax.sgd(0.1))
    assert vaejax.load(workdir, model=r.model, init_params=r.init_params, optimizer=r.optimizer).updates == 2


def test_resume_true_needs_a_run_and_auto_starts_one(tmp_path):
    from vaejax.errors import UsageError

    with pytest.raises(UsageError, match="holds no run to resume.*resume='auto'"):
        _fit(str(tmp_path / "typo"), resume=True)
    assert not os.path.exists(tmp_path / "typo")  # refused before anything was written
    started = _fit(str(tmp_path / "new"), resume="auto")
    assert started.resumed_from == 0
    assert _fit(str(tmp_path / "new"), epochs=2, resume="auto").resumed_from == int(started.state.step)
