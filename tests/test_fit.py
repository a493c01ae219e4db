"""vaejax.fit as a library: one's own objective trained in a workdir with callbacks and resumed
bitwise, several models at once, TensorBoard events; and vaejax.load of a `vaejax train` run."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cli_runs
import flax.linen as nn

import vaejax
from vaejax import data, fit, objectives, run
from conftest import structured_images

X_N = structured_images(0, 256, shape=(8, 8, 1))  # 8 batches of 32
OPTIMIZER = optax.adam(1e-2)


def objective(params, x, key, step, hparams):
    """A linear AE on one image, its code jittered by the example's key (so that keys matter)."""
    z = x.reshape(-1) @ params["enc"] + 0.01 * jax.random.normal(key, (4,))
    loss = jnp.sum(jnp.square(z @ params["dec"] - x.reshape(-1)))
    return loss, {"code_norm": jnp.linalg.norm(z)}


def init_params(key):
    k1, k2 = jax.random.split(key)
    return {"enc": 0.1 * jax.random.normal(k1, (64, 4)), "dec": 0.1 * jax.random.normal(k2, (4, 64))}


class Recorder(fit.Callback):
    def __init__(self):
        self.calls = []

    def on_epoch_begin(self, epoch, num_steps):
        self.calls.append(("begin", epoch, num_steps))

    def on_steps(self, epoch, done, num_steps, mean_loss):
        self.calls.append(("steps", epoch, done))

    def on_epoch_end(self, epoch, record, state):
        self.calls.append(("end", epoch, int(state.step)))

    def on_train_end(self, state, records):
        self.calls.append(("train_end", len(records)))


def _fit(workdir, epochs, **kw):
    return fit.fit(objective, OPTIMIZER, init_params, X_N, str(workdir), epochs=epochs, batch_size=32,
                   key=jax.random.key(0), eval_data={"test": X_N[:64]}, pieces=4, **kw)


def _without_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_fit_in_a_workdir_with_callbacks_then_resume_is_bitwise(tmp_path):
    recorder = Recorder()
    straight = _fit(tmp_path / "a", 3, meta={"model": "linear AE"}, callbacks=[recorder])
    assert [r["epoch"] for r in straight.records] == [1, 2, 3] and straight.resumed_from == 0
    assert {"train_loss", "test_loss", "test_code_norm", "seconds"} <= set(straight.records[0])
    assert straight.records[2]["train_loss"] < straight.records[0]["train_loss"]
    assert recorder.calls[:6] == [("begin", 1, 8), ("steps", 1, 2), ("steps", 1, 4), ("steps", 1, 6),
                                  ("steps", 1, 8), ("end", 1, 8)]
    assert recorder.calls[-1] == ("train_end", 3)
    assert json.load(open(tmp_path / "a" / "run.json")) == {"model": "linear AE"}
    assert [json.loads(line) for line in open(tmp_path / "a" / "metrics.jsonl")] == straight.records

    _fit(tmp_path / "b", 2)
    resumed = _fit(tmp_path / "b", 3, resume=True)
    assert resumed.resumed_from == 2 * 8
    for a, b in zip(jax.tree_util.tree_leaves(straight.state), jax.tree_util.tree_leaves(resumed.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert _without_seconds(resumed.records) == _without_seconds(straight.records)


def test_fit_trains_several_models_at_once(tmp_path):
    result = fit.fit(objective, OPTIMIZER, init_params, X_N, str(tmp_path / "run"), epochs=2, batch_size=32,
                     key=jax.random.split(jax.random.key(1), 3), model_axis="vmap", eval_data={"test": X_N[:64]})
    first = result.records[0]
    assert len(first["train_loss"]) == len(first["test_loss"]) == 3 and len(set(first["train_loss"])) == 3
    assert result.state.params["enc"].shape == (3, 64, 4)


def test_train_rows_give_each_model_its_own_rows_of_one_dataset():
    """Model m on rows[m] of the shared data is, bit for bit, a lone run on the data X_N[rows[m]]."""
    rows = np.stack([np.arange(0, 192, 2), np.arange(64, 256)[::-1][:96]])  # (2 models, 96 rows)
    keys = jax.random.split(jax.random.key(2), 2)
    many = fit.fit(objective, OPTIMIZER, init_params, X_N, None, epochs=2, batch_size=32, key=keys,
                   model_axis="map", train_rows=rows)
    assert many.state.step.tolist() == [2 * 3, 2 * 3]  # an epoch is 96 // 32 steps
    for m in range(2):
        lone = fit.fit(objective, OPTIMIZER, init_params, X_N[rows[m]], None, epochs=2, batch_size=32, key=keys[m])
        for a, b in zip(jax.tree_util.tree_leaves(lone.state.params), jax.tree_util.tree_leaves(many.state.params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[m])
    with pytest.raises(ValueError, match=r"one row of L indices per model"):
        fit.fit(objective, OPTIMIZER, init_params, X_N, None, epochs=1, batch_size=32, key=keys, model_axis="map",
                train_rows=rows[0])
    with pytest.raises(ValueError, match="must index the 256 training examples"):
        fit.fit(objective, OPTIMIZER, init_params, X_N, None, epochs=1, batch_size=32, key=keys[0],
                train_rows=np.arange(200, 300))


def test_fit_starts_from_given_parameters_as_from_an_initialiser(tmp_path):
    """Parameters in place of init_params (fine-tuning a pretrained model): the same run, bit for bit, as an
    initialiser returning them; with a model axis, one set per model; resumable like any run."""
    key, keys = jax.random.key(3), jax.random.split(jax.random.key(4), 2)
    start = init_params(jax.random.key(5))
    given = fit.fit(objective, OPTIMIZER, start, X_N, None, epochs=2, batch_size=32, key=key)
    called = fit.fit(objective, OPTIMIZER, lambda k: start, X_N, None, epochs=2, batch_size=32, key=key)
    for a, b in zip(jax.tree_util.tree_leaves(given.state.params), jax.tree_util.tree_leaves(called.state.params)):
        np.testing.assert_array_equal(a, b)
    assert np.asarray(start["enc"]).sum() != np.asarray(given.state.params["enc"]).sum()  # trained, not copied back

    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *(init_params(k) for k in jax.random.split(key, 2)))
    many = fit.fit(objective, OPTIMIZER, stacked, X_N, str(tmp_path / "many"), epochs=1, batch_size=32, key=keys,
                   model_axis="vmap")
    again = fit.fit(objective, OPTIMIZER, stacked, X_N, str(tmp_path / "many"), epochs=2, batch_size=32, key=keys,
                    model_axis="vmap", resume=True)
    assert many.state.params["enc"].shape == (2, 64, 4) and again.resumed_from == 8
    with pytest.raises(ValueError, match=r"init_params has a leading axis of 4, .*the 2 models of key"):
        fit.fit(objective, OPTIMIZER, start, X_N, None, epochs=1, batch_size=32, key=keys, model_axis="vmap")


class ParamsPerEpoch(fit.Callback):
    def __init__(self):
        self.params = []

    def on_epoch_end(self, epoch, record, state):
        self.params.append(jax.tree_util.tree_map(np.array, state.params))


def test_keep_best_keeps_each_models_best_epoch():
    best, seen = fit.KeepBest("test_loss", higher_is_better=False), ParamsPerEpoch()
    result = fit.fit(objective, optax.adam(0.3), init_params, X_N, None, epochs=5, batch_size=32,  # a step too large: ups and downs
                     key=jax.random.split(jax.random.key(4), 2), model_axis="vmap", eval_data={"test": X_N[:64]},
                     callbacks=[seen, best])
    losses = np.array([r["test_loss"] for r in result.records])  # (epochs, models)
    want = np.argmin(losses, axis=0)  # the earliest on a tie
    assert want[0] != want[1]  # each model's own best, not one epoch for all
    assert best.epoch.tolist() == (want + 1).tolist()
    np.testing.assert_allclose(best.value, losses[want, [0, 1]], rtol=1e-6)
    for m in range(2):
        np.testing.assert_array_equal(best.params["enc"][m], seen.params[want[m]]["enc"][m])
    with pytest.raises(KeyError, match="no 'val_accuracy'"):
        fit.fit(objective, OPTIMIZER, init_params, X_N, None, epochs=1, batch_size=32, key=jax.random.key(0),
                callbacks=[fit.KeepBest("val_accuracy")])


def test_a_nonfinite_loss_raises_naming_the_epoch_and_step(tmp_path):
    poisoned = X_N.copy()
    poisoned[5] = np.nan
    with pytest.raises(fit.NonFinite) as info:
        fit.fit(objective, OPTIMIZER, init_params, poisoned, str(tmp_path / "run"), epochs=2, batch_size=32,
                key=jax.random.key(0))
    assert info.value.epoch == 1 and info.value.num_steps == 8 and "\n" not in str(info.value)


def test_tensorboard_callback_writes_events(tmp_path):
    pytest.importorskip("tensorboardX")
    logdir = tmp_path / "tb"
    _fit(tmp_path / "run", 2, callbacks=[fit.TensorBoard(str(logdir))])
    events = [p for p in os.listdir(logdir) if p.startswith("events.out.tfevents")]
    assert len(events) == 1
    blob = open(logdir / events[0], "rb").read()
    assert b"train_loss" in blob and b"test_loss" in blob


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return cli_runs.reference(tmp_path_factory.getbasetemp(), 4)


def test_load_a_trained_run_in_one_call(trained):
    loaded = vaejax.load(trained)
    assert loaded.meta["preset"] == "mlp_vae" and loaded.model_cfg.latent_dim == 4
    assert loaded.updates == 4 * cli_runs.STEPS_PER_EPOCH
    x = data.to_float(data.load("mnist_5k", "test").images[:8])
    z = np.asarray(loaded.encode(x))
    assert z.shape == (8, 4)
    images = np.asarray(loaded.decode(z))
    assert images.shape == (8, 28, 28, 1) and images.min() >= 0 and images.max() <= 1
    np.testing.assert_allclose(np.asarray(loaded.reconstruct(x)), images, rtol=1e-6)
    assert np.asarray(loaded.sample(jax.random.key(0), 5)).shape == (5, 28, 28, 1)
    path = np.asarray(loaded.interpolate(x[0], x[1], 5))
    assert path.shape == (5, 28, 28, 1)
    np.testing.assert_allclose(path[[0, -1]], images[:2], rtol=1e-5, atol=1e-6)  # the ends are the two images
    nelbo = np.asarray(loaded.nelbo(x, jax.random.key(1)))
    nll = np.asarray(loaded.iwae_nll(x, jax.random.key(2), k=50))
    assert nelbo.shape == nll.shape == (8,) and np.all(np.isfinite(nll)) and np.all(nelbo > 0)
    assert nll.mean() <= nelbo.mean() + 1.0  # the 50-sample bound is at least as tight as the ELBO


class SmallVAE(nn.Module):
    """A model of one's own: dense encoder and decoder on 8x8 images, for any leading axes."""

    def setup(self):
        self.enc, self.dec = nn.Dense(2 * 3), nn.Dense(64)

    def encode(self, x):
        return jnp.split(self.enc(x.reshape(x.shape[:-3] + (-1,))), 2, axis=-1)

    def decode(self, z):
        return self.dec(z).reshape(z.shape[:-1] + (8, 8, 1))

    def __call__(self, x, key):
        return self.decode(objectives.reparameterize(key, *self.encode(x)))


def test_load_a_run_of_ones_own_model_fit_with_several_seeds(tmp_path):
    model = SmallVAE()
    init = lambda key: model.init(key, X_N[:1], key)["params"]  # noqa: E731
    fit.fit(objectives.elbo(model), OPTIMIZER, init, X_N, str(tmp_path / "run"), epochs=2, batch_size=32,
            key=jax.random.split(jax.random.key(3), 2), model_axis="vmap", meta={"note": "small VAE"})
    with pytest.raises(run.RunNotFound, match="model="):
        vaejax.load(str(tmp_path / "run"))  # no preset to rebuild it from
    loaded = vaejax.load(str(tmp_path / "run"), 1, model=model, init_params=init, optimizer=OPTIMIZER)
    assert loaded.meta == {"note": "small VAE"} and loaded.updates == 16 and loaded.model_cfg is None
    assert loaded.params["enc"]["kernel"].shape == (64, 6)
    np.testing.assert_array_equal(np.asarray(loaded.params["enc"]["kernel"]),
                                  np.asarray(loaded.state.params["enc"]["kernel"][1]))
    assert np.asarray(loaded.sample(jax.random.key(0), 3, latent_dim=3)).shape == (3, 8, 8, 1)
    nll = np.asarray(loaded.iwae_nll(X_N[:10], jax.random.key(1), k=20))
    nelbo = np.asarray(loaded.nelbo(X_N[:10], jax.random.key(1)))
    assert nll.shape == nelbo.shape == (10,) and np.all(np.isfinite(nll))
    assert nll.mean() <= nelbo.mean() + 1.0


def test_load_without_a_run_says_what_to_do(tmp_path):
    with pytest.raises(run.RunNotFound, match="train first") as info:
        vaejax.load(str(tmp_path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("how", ["map", "vmap"])
def test_what_lacks_the_model_axis_is_named(how, tmp_path):
    """A single key, a scalar hyperparameter or one model's state where S models are trained: a ValueError
    naming the model axis and the argument, before anything is written."""
    keys = jax.random.split(jax.random.key(0), 3)
    train = lambda key, hparams=None: fit.fit(objective, OPTIMIZER, init_params, X_N, str(tmp_path / "run"),
                                              epochs=1, batch_size=32, key=key, model_axis=how, hparams=hparams)
    with pytest.raises(ValueError, match=rf"model_axis='{how}': key has no leading axis.*jax.random.split"):
        train(jax.random.key(0))
    with pytest.raises(ValueError, match=rf"model_axis='{how}': hparams has no leading axis.*the 3 models of key"):
        train(keys, {"beta": jnp.float32(0.5)})
    with pytest.raises(ValueError, match="hparams has a leading axis of 2.*the 3 models"):
        train(keys, {"beta": jnp.ones(2)})
    assert not (tmp_path / "run").exists()
    from vaejax import engine

    epoch = engine.make_epoch(objective, OPTIMIZER, 32, model_axis=how)
    one = engine.init(init_params(jax.random.key(0)), OPTIMIZER)
    with pytest.raises(ValueError, match=rf"model_axis='{how}': key has a leading axis of 3.*the 4 models of state"):
        epoch(engine.init_many(init_params, jax.random.split(jax.random.key(0), 4), OPTIMIZER), X_N, keys)
    with pytest.raises(ValueError, match=rf"model_axis='{how}': state has no leading axis"):
        epoch(one, X_N, keys)
