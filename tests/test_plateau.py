"""The reference scale's convergence test, and training until it passes in a workdir that resumes."""

import dataclasses
import math

import jax
import numpy as np
import pytest

from vaejax import config
from vaejax_experiments import sweep, training


def test_the_floor_decides_what_looks_flat():
    """A loss 10 nats above an irreducible 100 that falls 1% of the excess per epoch is not converged,
    though relative to the whole loss it moves by less than 0.1%."""
    epochs = np.arange(40)
    loss = 100 + 10 * 0.99 ** epochs
    above = training.Plateau(tol=0.005, max_epochs=50, floor=100.0)
    whole = training.Plateau(tol=0.005, max_epochs=50, floor=None)
    assert above.change(loss)[0] == pytest.approx(1 / 0.99 - 1, rel=0.05)
    assert not above.passed(loss)[0] and whole.passed(loss)[0]


def test_a_curve_passes_once_it_flattens_and_not_before_the_window():
    loss = np.stack([200 + 50 * 0.5 ** np.arange(12), 200 + 50 * 0.99 ** np.arange(12)])
    p = training.Plateau(tol=0.005, max_epochs=12, floor=200.0, window=3)
    assert p.passed(loss).tolist() == [False, False]  # the first falls by half its excess per epoch
    assert np.isnan(p.change(loss[:, :3])).all() and not p.passed(loss[:, :3]).any()
    flat = np.concatenate([loss, np.repeat(loss[:, -1:], 4, axis=1)], axis=1)
    summary = p.summary(flat)
    assert summary["passed"] == [True, True] and summary["epochs"] == 16
    assert summary["passed_at"][0] == 15 and "0.5% per epoch" in summary["test"]


def test_the_bernoulli_floor_is_the_entropy_of_the_pixels():
    cfg = config.preset("mlp_ae")
    grey = np.full((3, 28, 28, 1), 0.5, np.float32)
    binary = (np.arange(3 * 784).reshape(3, 28, 28, 1) % 2).astype(np.float32)
    assert training.loss_floor(cfg, grey) == pytest.approx(784 * math.log(2), rel=1e-4)
    assert training.loss_floor(cfg, binary) == pytest.approx(0.0, abs=0.05)
    assert training.loss_floor(config.replace(cfg, likelihood="gaussian_learned"), grey) is None


def test_training_until_the_plateau_stops_there_and_a_finished_run_is_read_back(tmp_path):
    x = np.random.default_rng(0).uniform(size=(64, 28, 28, 1)).astype(np.float32)
    cfg, tc = config.preset("mlp_ae"), config.TrainConfig(epochs=1, batch_size=32)
    lenient = training.Plateau(tol=10.0, max_epochs=9, floor=None, window=2)  # passes as soon as it can
    first = training.train_seeds(cfg, tc, x, 2, until=lenient, workdir=str(tmp_path / "run"))
    assert first.train_cfg.epochs == 3 and first.plateau["passed"] == [True, True]
    again = training.train_seeds(cfg, tc, x, 2, until=lenient, workdir=str(tmp_path / "run"))
    assert again.train_cfg.epochs == 3  # nothing trained: the run had passed
    for a, b in zip(jax.tree_util.tree_leaves(again.params), jax.tree_util.tree_leaves(first.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    strict = training.Plateau(tol=0.0, max_epochs=4, floor=None, window=2)  # never passes: stops at max_epochs
    capped = training.train_seeds(cfg, tc, x, 2, until=strict, workdir=str(tmp_path / "strict"))
    assert capped.train_cfg.epochs == 4 and capped.plateau["passed"] == [False, False]
    raised = dataclasses.replace(strict, max_epochs=6)  # a higher limit: the capped run goes on where it stopped
    resumed = training.train_seeds(cfg, tc, x, 2, until=raised, workdir=str(tmp_path / "strict"))
    never_stopped = training.train_seeds(cfg, tc, x, 2, until=raised, workdir=str(tmp_path / "six"))
    assert resumed.train_cfg.epochs == 6 and resumed.plateau["epochs"] == 6
    for a, b in zip(jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(never_stopped.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_sweep_run_is_named_by_its_models_not_by_its_epoch_limit():
    """So that raising the limit resumes the cached runs that stopped at it, and changing the test does not."""
    x = np.zeros((4, 28, 28, 1), np.float32)
    cfg, tc = config.preset("mlp_vae"), config.TrainConfig(epochs=1, batch_size=2)
    until = training.Plateau(tol=0.005, max_epochs=30, floor=0.0)
    tag = lambda **kw: sweep._run_tag("bernoulli", cfg, tc, (0.0, 1.0), 5, dataclasses.replace(until, **kw), x)
    assert tag(max_epochs=60) == tag() != tag(tol=0.001)
    assert tag() != sweep._run_tag("bernoulli", cfg, tc, (0.0, 1.0), 5, until, x + 1)


def test_a_selection_of_models_keeps_their_own_plateau_results():
    p = training.Plateau(tol=0.005, max_epochs=8, floor=0.0, window=2)
    loss = np.stack([np.full(6, 10.0), 10.0 * 0.5 ** np.arange(6)])  # flat, and halving every epoch
    t = training.Trained(model_cfg=None, train_cfg=None, params={"w": np.zeros((2, 1))}, curves={"loss": loss},
                         eval_curves={}, seconds=1.0, n_train=4, plateau=p.summary(loss))
    assert t.select([1]).plateau["passed"] == [False] and t.select([0]).plateau["passed"] == [True]
