"""Tests for vaejax.engine on the presets: the step learns, runs are reproducible bit for bit, the
scanned epoch and the vmapped (or mapped) seeds equal their unrolled counterparts, donation,
scoring in chunks, dynamic binarization, and a helpful error for an oversized batch. Models,
objectives and optimizers of one's own: tests/test_bring_your_own.py."""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vaejax import config, data, engine, models, objectives, recipe
from conftest import TINY_MLP_AE, TINY_MLP_VAE, fake_params, structured_images

# Most tests share one tiny VAE and one train config (with dynamic binarization, so that the
# noise of the step is exercised too), and so share their compiled functions: compiling
# dominates the cost of these tests.
VAE = TINY_MLP_VAE
TC = config.TrainConfig(batch_size=64, learning_rate=3e-3, binarize="dynamic")
X_N = jnp.asarray(structured_images(0, 200))  # 200 = 3 batches of 64 and 8 left over
STEPS = 200 // 64



@functools.lru_cache(maxsize=None)
def _init(model_cfg, train_cfg):
    r = recipe.build(model_cfg, train_cfg)
    return jax.jit(lambda key: engine.init(r.init_params(key), r.optimizer))


def init_state(key, model_cfg=VAE, train_cfg=TC):
    """One compiled initializer per config (configs are hashable)."""
    return _init(model_cfg, train_cfg)(key)


@functools.lru_cache(maxsize=None)
def make_step(model_cfg=VAE, train_cfg=TC):
    r = recipe.build(model_cfg, train_cfg)
    return engine.make_step(r.objective, r.optimizer)


@functools.lru_cache(maxsize=None)
def make_epoch(model_cfg=VAE, train_cfg=TC, model_axis=None):
    r = recipe.build(model_cfg, train_cfg)
    return engine.make_epoch(r.objective, r.optimizer, train_cfg.batch_size, model_axis=model_axis)


def leaves(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


def assert_trees_equal(a, b):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


def trees_bitwise_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b)))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


# ------------------------------------------------------------------ learning


@pytest.mark.parametrize("model_cfg", [VAE, config.preset("conv_ae")], ids=["tiny_mlp_vae", "conv_ae"])
def test_train_step_lowers_the_loss_on_a_fixed_batch(model_cfg, mnist_256):
    x_B = jnp.asarray(mnist_256[:64])
    if model_cfg is VAE:
        step, state = make_step(), init_state(jax.random.key(0), VAE, TC)
    else:  # parameters of the right shapes without compiling the initializer
        step, params = make_step(model_cfg, TC), fake_params(model_cfg)
        state = engine.init(params, recipe.optimizer(TC))
    key = jax.random.key(1)
    history = []
    for _ in range(20):
        state, metrics = step(state, x_B, key)
        history.append(float(metrics["loss"]))  # the loss before each update

    assert int(state.step) == 20
    assert np.all(np.isfinite(history))
    assert history[-1] < 0.85 * history[0], history
    assert np.mean(history[-5:]) < 0.9 * np.mean(history[:5]), history


# ------------------------------------------------------------------ reproducibility


def _one_run(seed, epochs=2):
    """A run from scratch: init_state from the seed, then `epochs` epochs on X_N."""
    init_key, run_key = jax.random.split(jax.random.key(seed))
    state = init_state(init_key, VAE, TC)
    for _ in range(epochs):
        state, metrics = make_epoch()(state, X_N, run_key)
    return state, metrics


def test_same_seed_gives_bitwise_the_same_parameters():
    init_a = init_state(jax.random.key(5), VAE, TC)
    init_b = init_state(jax.random.key(5), VAE, TC)
    assert_trees_equal(init_a, init_b)
    assert int(init_a.step) == 0
    state_a, metrics_a = _one_run(0)
    state_b, metrics_b = _one_run(0)
    assert int(state_a.step) == 2 * STEPS
    assert_trees_equal(state_a, state_b)  # params, optimizer state and step
    assert_trees_equal(metrics_a, metrics_b)


def test_different_seeds_differ():
    state_a, _ = _one_run(0, epochs=1)
    state_b, _ = _one_run(1, epochs=1)
    for x, y in zip(leaves(state_a.params), leaves(state_b.params)):
        assert not np.array_equal(x, y)
    # the same initial parameters but another run key: another shuffle and other noise
    s0 = init_state(jax.random.key(0), VAE, TC)
    s0_copy = jax.tree_util.tree_map(jnp.copy, s0)
    a, _ = make_epoch()(s0, X_N, jax.random.key(10))
    b, _ = make_epoch()(s0_copy, X_N, jax.random.key(11))
    for x, y in zip(leaves(a.params), leaves(b.params)):
        assert not np.array_equal(x, y)


# ------------------------------------------------------------------ epoch == steps; seeds == runs


def test_train_epoch_equals_the_same_train_steps():
    """One scanned epoch = a Python loop of train steps over the batches the epoch shuffles into, in order."""
    model_cfg, train_cfg = VAE, TC
    epoch, step = make_epoch(), make_step()
    key = jax.random.key(3)
    n, b = X_N.shape[0], train_cfg.batch_size
    steps = n // b

    state_e = init_state(jax.random.key(0), model_cfg, train_cfg)
    state_s = init_state(jax.random.key(0), model_cfg, train_cfg)
    exact, orders = True, []
    for ep in range(2):  # the second epoch checks that the shuffle moves on with the step count
        state_e, metrics_e = epoch(state_e, X_N, key)
        # the epoch's batches, as the epoch draws them: distinct indices, the remainder dropped
        order = np.asarray(engine.epoch_order(key, state_s.step, n, b))
        assert order.shape == (steps, b) and len(np.unique(order)) == steps * b and order.max() < n
        orders.append(order)
        metrics_s = []
        for idx in order:
            state_s, m = step(state_s, X_N[idx], key)
            metrics_s.append(m)
        metrics_s = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *metrics_s)
        assert int(state_e.step) == int(state_s.step) == (ep + 1) * steps
        assert_trees_close(metrics_e, metrics_s)
        assert_trees_close(state_e, state_s)
        exact = exact and trees_bitwise_equal(state_e, state_s)
    assert not np.array_equal(orders[0], orders[1])  # each epoch has its own shuffle
    assert exact, "the scanned epoch should reproduce the step loop bit for bit"


@pytest.mark.parametrize("n,images", [(784, 2000), (3072, 200), (5, 200), (1, 3)])
def test_permutation_is_jax_random_permutation_bitwise(n, images):
    """engine.permutation is jax.random.permutation element for element (the same keys and the same stable
    sorts): epochs shuffle as they did, runs resume bitwise, and a cached judge matches a retrained one."""
    keys = jax.random.split(jax.random.key(n), images)
    x = jax.random.normal(jax.random.key(1), (images, n))  # distinct values: any misplaced element shows
    want = jax.vmap(jax.random.permutation)(keys, x)
    got = jax.jit(jax.vmap(engine.permutation))(keys, x)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert n == 1 or not np.array_equal(np.asarray(got), np.asarray(x))  # it did shuffle


def test_epoch_order_is_jax_random_permutation_in_batches():
    key = jax.random.key(3)
    order = engine.epoch_order(key, 7, 60000, 128)
    want = jax.random.permutation(jax.random.fold_in(engine.run_keys(key)[0], 7), 60000)[: 468 * 128]
    np.testing.assert_array_equal(np.asarray(order), np.asarray(want).reshape(468, 128))


def test_init_many_stacks_each_models_fresh_state():
    r = recipe.build(VAE, TC)
    keys = jax.random.split(jax.random.key(5), 3)
    many = engine.init_many(r.init_params, keys, r.optimizer)
    assert_trees_equal(many, engine.stack_models([init_state(k) for k in keys]))
    assert_trees_equal(many.params, jax.jit(jax.vmap(r.init_params))(keys))  # as one vmapped program would
    assert many.step.shape == (3,)


@pytest.mark.parametrize("how", engine.MODEL_AXES)
def test_models_axis_equals_separate_runs(how):
    model_cfg, train_cfg = VAE, TC
    s = 3
    init_keys = jax.random.split(jax.random.key(20), s)
    run_keys = jax.random.split(jax.random.key(21), s)

    r = recipe.build(model_cfg, train_cfg)
    states = engine.init_many(r.init_params, init_keys, r.optimizer)
    many = make_epoch(model_axis=how)
    states, metrics = many(states, X_N, run_keys)
    assert jax.tree_util.tree_leaves(states.params)[0].shape[0] == s
    assert metrics["loss"].shape == (s, X_N.shape[0] // train_cfg.batch_size)

    epoch = make_epoch()
    exact = True
    for i in range(s):
        single, single_metrics = epoch(init_state(init_keys[i], model_cfg, train_cfg), X_N, run_keys[i])  # a run of its own
        mine = jax.tree_util.tree_map(lambda a: a[i], states)
        assert_trees_close(mine, single)
        assert_trees_close(jax.tree_util.tree_map(lambda a: a[i], metrics), single_metrics)
        exact = exact and trees_bitwise_equal(mine, single)
    # the seeds really are different models
    p = leaves(states.params)[0]
    assert not np.array_equal(p[0], p[1]) and not np.array_equal(p[1], p[2])
    # lax.map runs each model's own program: a lone run's bits. vmap batches the models' matmuls,
    # which may sum in another order: equal to rounding (assert_trees_close above).
    if how == "map":
        assert exact, "model_axis='map' should reproduce each lone run bit for bit"


# ------------------------------------------------------------------ donation


def test_donation_and_reuse_of_the_returned_state():
    step, epoch = make_step(), make_epoch()
    key = jax.random.key(0)
    x_B = X_N[:64]

    s0 = init_state(jax.random.key(0), VAE, TC)
    s1, m1 = step(s0, x_B, key)
    # the input state's buffers were donated to the update ...
    assert all(a.is_deleted() for a in jax.tree_util.tree_leaves(s0))
    # ... but the data was not, and the returned state can be read and passed on, again and again
    assert not x_B.is_deleted() and not X_N.is_deleted()
    p1 = jax.tree_util.tree_map(jnp.copy, s1.params)  # a device copy: a host view would pin the buffers
    s2, m2 = step(s1, x_B, key)
    assert all(a.is_deleted() for a in jax.tree_util.tree_leaves(s1))
    s3, m3 = epoch(s2, X_N, key)
    assert all(a.is_deleted() for a in jax.tree_util.tree_leaves(s2))
    s4, m4 = epoch(s3, X_N, key)
    assert not X_N.is_deleted()
    assert int(s4.step) == 2 + 2 * STEPS
    assert np.isfinite(float(m1["loss"])) and np.isfinite(float(m2["loss"]))  # metrics outlive the next step
    assert np.all(np.isfinite(np.asarray(m4["loss"])))
    assert all(np.all(np.isfinite(a)) for a in leaves(s4))
    assert all(not np.array_equal(a, b) for a, b in zip(leaves(p1), leaves(s4.params)))


# ------------------------------------------------------------------ scores / evaluate


@jax.jit
def _direct_ae_terms(params, x_N):
    """Reference values for an AE (no randomness) computed without make_scores: per-example losses
    of the vmapped objective, and the batch objective's mean terms."""
    objective = recipe.objective(TINY_MLP_AE)
    per_example = jax.vmap(lambda x: objective(params, x, None, 0, None)[0])(x_N)
    return per_example, engine.mean_objective(objective)(params, x_N, jax.random.key(0), 0, None)[1]


def test_scores_per_example_for_n_not_divisible_by_chunk_ae():
    chunk = 16
    model_cfg = TINY_MLP_AE
    params = fake_params(model_cfg, seed=1)
    x_N = X_N[:37]
    terms = engine.make_scores(recipe.objective(model_cfg), chunk=chunk)(params, x_N, jax.random.key(0))
    assert set(terms) == {"loss", "recon"}
    for v in terms.values():
        assert v.shape == (37,)
    per_example, direct = _direct_ae_terms(params, x_N)
    np.testing.assert_allclose(np.asarray(terms["loss"]), np.asarray(per_example), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(terms["recon"]), np.asarray(per_example), rtol=1e-5)
    # the padding rows are not in the mean
    np.testing.assert_allclose(float(jnp.mean(terms["loss"])), float(direct["loss"]), rtol=1e-5)


def test_scores_and_evaluate_vae():
    model_cfg, beta = TINY_MLP_VAE, 0.5
    params = fake_params(model_cfg, seed=2)
    x_N = X_N[:37]
    scores = engine.make_scores(recipe.objective(model_cfg, config.TrainConfig(beta=beta)), chunk=16)
    terms = scores(params, x_N, jax.random.key(0))
    assert set(terms) == {"loss", "recon", "kl", "nelbo", "beta", "kl_per_dim"}
    for name, v in terms.items():
        assert v.shape == ((37, model_cfg.latent_dim) if name == "kl_per_dim" else (37,))
    # the KL is analytic: exactly the per-example KL of the encoder's (mu, logvar), the sum of its dimensions
    kl = jax.jit(lambda p, x: jax.vmap(objectives.kl_diag_gaussian)(*models.encode(model_cfg, p, x)))(params, x_N)
    np.testing.assert_allclose(np.asarray(terms["kl_per_dim"]).sum(axis=1), np.asarray(kl), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(terms["kl"]), np.asarray(kl), rtol=1e-5)
    loss, recon, kl = (np.asarray(terms[k], np.float64) for k in ("loss", "recon", "kl"))
    np.testing.assert_allclose(loss, recon + beta * kl, rtol=1e-5)
    assert np.all(np.isfinite(recon)) and np.all(recon > 0)
    # deterministic given the key; another key, other samples
    np.testing.assert_array_equal(np.asarray(scores(params, x_N, jax.random.key(0))["recon"]), recon.astype(np.float32))
    assert not np.array_equal(np.asarray(scores(params, x_N, jax.random.key(5))["recon"]), recon.astype(np.float32))
    # each example its own draw: one image repeated is scored with another sample of z in every row
    repeated = np.asarray(scores(params, jnp.broadcast_to(x_N[:1], x_N.shape), jax.random.key(0))["recon"])
    assert len(np.unique(repeated)) == len(repeated)
    # over a models axis: the same numbers for each model's own params and key
    params_S = jax.tree_util.tree_map(lambda a: jnp.stack([a, a * 0.5]), params)
    keys_S = jnp.stack([jax.random.key(0), jax.random.key(5)])
    many = engine.make_scores(recipe.objective(model_cfg, config.TrainConfig(beta=beta)), chunk=16, model_axis="vmap")
    terms_S = many(params_S, x_N, keys_S)
    assert terms_S["loss"].shape == (2, 37)
    np.testing.assert_allclose(np.asarray(terms_S["loss"][0]), loss, rtol=1e-5)
    second = scores(jax.tree_util.tree_map(lambda a: a[1], params_S), x_N, jax.random.key(5))
    np.testing.assert_allclose(np.asarray(terms_S["loss"][1]), np.asarray(second["loss"]), rtol=1e-5)


@pytest.mark.parametrize("n,chunk", [(37, 16), (5, 16), (32, 16)], ids=["padded", "one_short_chunk", "exact"])
def test_map_chunks_is_fn_on_the_whole_set(n, chunk):
    """Any N against any chunk: the rows of fn over the whole set, pytrees and PRNG keys included."""
    x_N = X_N[:n]
    keys_N = jax.random.split(jax.random.key(0), n)

    def fn(batch):
        x_B, k_B = batch
        noise_B = jax.vmap(lambda k: jax.random.normal(k, ()))(k_B)
        return {"sum": jnp.sum(x_B, axis=(1, 2, 3)) + noise_B, "row": x_B[:, 0, :, 0]}

    chunked = jax.jit(lambda data: engine.map_chunks(fn, data, chunk))((x_N, keys_N))
    whole = fn((x_N, keys_N))
    assert chunked["sum"].shape == (n,) and chunked["row"].shape == (n, 28)
    np.testing.assert_allclose(np.asarray(chunked["sum"]), np.asarray(whole["sum"]), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(chunked["row"]), np.asarray(whole["row"]))


def test_bucket_pads_to_a_few_sizes_and_keeps_the_rows():
    sizes = {n: engine.bucket(X_N[:n], 16)[0].shape[0] for n in (1, 3, 5, 16, 17, 37, 48)}
    assert sizes == {1: 1, 3: 4, 5: 8, 16: 16, 17: 32, 37: 48, 48: 48}
    padded, n = engine.bucket((X_N[:5], jax.random.split(jax.random.key(0), 5)), 16)
    assert n == 5 and padded[1].shape == (8,)
    np.testing.assert_array_equal(np.asarray(padded[0][:5]), np.asarray(X_N[:5]))
    np.testing.assert_array_equal(np.asarray(padded[0][5:]), np.broadcast_to(np.asarray(X_N[:1]), (3, 28, 28, 1)))


# ------------------------------------------------------------------ dynamic binarization


def deterministic_vae_params():
    """VAE parameters whose encoder ignores its input: every encoder kernel 0 and bias -80, so that
    mu = logvar = -80 and z = mu + exp(-40) * eps is exactly mu in float32. The loss of a step is then a
    deterministic function of the (binarized) batch."""
    params = fake_params(VAE, seed=4)
    params["encoder"] = jax.tree_util.tree_map_with_path(
        lambda path, a: np.full_like(a, -80.0) if "bias" in jax.tree_util.keystr(path) else np.zeros_like(a),
        params["encoder"])
    return params


def test_dynamic_binarization_draws_differ_between_steps():
    step = make_step()  # binarize="dynamic"
    key, x_B = jax.random.key(0), X_N[:64]
    assert 0.1 < float(np.mean((np.asarray(x_B) > 0.05) & (np.asarray(x_B) < 0.95)))  # plenty of grey pixels
    params = deterministic_vae_params()

    def loss_at(step_number, x):
        fresh = jax.tree_util.tree_map(jnp.array, params)  # the step donates what it is given
        state = engine.init(fresh, recipe.optimizer(TC))._replace(step=jnp.asarray(step_number, jnp.int32))
        return float(step(state, x, key)[1]["loss"])

    # binary images are their own binarization: the same loss at every step (the model is deterministic) ...
    x_bin = data.binarize_static(x_B)
    assert loss_at(3, x_bin) == loss_at(4, x_bin)
    # ... so on grey images only a fresh draw per step can change it
    draws = [loss_at(t, x_B) for t in (0, 1, 2)]
    assert np.all(np.isfinite(draws)) and len(set(draws)) == 3, draws
    assert loss_at(1, x_B) == draws[1]  # the same step, the same draw


# ------------------------------------------------------------------ errors


def test_batch_larger_than_dataset_raises_helpful_error():
    big = config.replace(TC, batch_size=512)
    state = init_state(jax.random.key(0), VAE, TC)  # the batch size plays no part in the state
    with pytest.raises(ValueError, match=r"batch.size") as info:
        make_epoch(VAE, big)(state, X_N, jax.random.key(0))
    message = str(info.value)
    assert "512" in message and "200" in message and "\n" not in message, message  # both numbers, one line
    states = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), state)
    with pytest.raises(ValueError, match=r"batch.size"):
        make_epoch(VAE, big, model_axis="vmap")(states, X_N, jax.random.split(jax.random.key(1), 2))


def test_the_engine_never_deletes_the_callers_parameters():
    r = recipe.build(config.preset("mlp_ae"), config.TrainConfig())
    params = r.init_params(jax.random.key(0))
    state = engine.init(params, r.optimizer)
    step = engine.make_step(r.objective, r.optimizer)
    state, _ = step(state, jnp.zeros((4, 28, 28, 1)), jax.random.key(1))  # donates the state's buffers
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(params))  # still readable


def test_a_second_init_of_the_same_models_compiles_nothing(caplog):
    """The optimizer's state is built by one compiled program per optimizer, not one per call."""
    optimizer = optax.adam(1e-3)
    params_S = {"w": jnp.zeros((3, 4, 2)), "b": jnp.zeros((3, 2))}
    init = lambda key: {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)}
    keys = jax.random.split(jax.random.key(0), 3)
    engine.init_stacked(params_S, optimizer), engine.init_many(init, keys, optimizer)  # compiled here
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        engine.init_stacked(params_S, optimizer), engine.init_many(init, keys, optimizer)
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert not compiled, compiled
