"""A model, objective and optimizer of one's own train through the engine with no edit to vaejax:
a GroupNorm conv VAE with free bits and AdamW + cosine schedule + clipping; a plain-function
model with a hand-written objective; a KL warm-up that never recompiles; and a sweep over beta
x seeds in one program equal to the separate runs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vaejax import engine, objectives
from conftest import structured_images

X_N = jnp.asarray(structured_images(0, 96, shape=(8, 8, 1)))  # 3 batches of 32


class GroupNormConvVAE(nn.Module):
    """A user's model: conv + GroupNorm encoder, dense decoder; only encode and decode matter.

    GroupNorm and the reshapes over axis 0 need a batch axis: the objectives get BatchOfOne(MODULE).
    """

    latent: int = 3

    def setup(self):
        self.conv = nn.Conv(8, (3, 3), strides=2)
        self.norm = nn.GroupNorm(num_groups=2)
        self.heads = nn.Dense(2 * self.latent)
        self.out = nn.Dense(64)

    def encode(self, x_BHWC):
        h = nn.relu(self.norm(self.conv(x_BHWC)))
        return jnp.split(self.heads(h.reshape(h.shape[0], -1)), 2, axis=-1)

    def decode(self, z_BD):
        return self.out(z_BD).reshape(z_BD.shape[0], 8, 8, 1)

    def __call__(self, x_BHWC, key):
        mu, logvar = self.encode(x_BHWC)
        return self.decode(objectives.reparameterize(key, mu, logvar)), {"mu": mu, "logvar": logvar}


MODULE = GroupNormConvVAE()
MODEL = objectives.BatchOfOne(MODULE)
OPTIMIZER = optax.chain(optax.clip_by_global_norm(1.0),
                        optax.adamw(optax.cosine_decay_schedule(3e-3, decay_steps=60), weight_decay=1e-4))
FREE_BITS = objectives.elbo(MODEL, objectives.bernoulli, free_bits=0.1)


def init_params(key):
    return MODULE.init(key, X_N[:1], jax.random.key(0))["params"]


def tree_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_groupnorm_vae_with_free_bits_and_adamw_trains_through_step_epoch_and_seeds():
    key = jax.random.key(1)
    step = engine.make_step(FREE_BITS, OPTIMIZER)
    state = engine.init(init_params(jax.random.key(0)), OPTIMIZER)
    first = None
    for i in range(10):
        state, metrics = step(state, X_N[:32], key)
        first = first if first is not None else float(metrics["loss"])
    assert float(metrics["loss"]) < first
    assert metrics["kl_per_dim"].shape == (3,)  # the per-dimension KL is exposed, averaged over the batch

    epoch = engine.make_epoch(FREE_BITS, OPTIMIZER, batch_size=32)
    state, metrics = epoch(state, X_N, key)
    assert int(state.step) == 13 and metrics["loss"].shape == (3,)

    seeds = engine.make_epoch(FREE_BITS, OPTIMIZER, batch_size=32, model_axis="vmap")
    states = engine.init_many(init_params, jax.random.split(jax.random.key(2), 4), OPTIMIZER)
    for _ in range(3):
        states, metrics = seeds(states, X_N, jax.random.split(key, 4))
    assert metrics["loss"].shape == (4, 3) and np.all(np.isfinite(np.asarray(metrics["loss"])))
    assert len({float(v) for v in metrics["loss"][:, -1]}) == 4  # four different models


def test_free_bits_leave_small_kl_dimensions_without_gradient():
    params = init_params(jax.random.key(0))
    x = X_N[0]

    def kl_grad(free_bits):
        loss = lambda p: objectives.elbo(MODEL, free_bits=free_bits)(p, x, jax.random.key(3), 0, None)[0]  # noqa: E731
        return jax.grad(loss)(params)["heads"]["kernel"]

    _, metrics = FREE_BITS(params, x, jax.random.key(3), 0, None)
    assert np.all(np.asarray(metrics["kl_per_dim"]) < 100.0)
    # with an allowance above every dimension's KL, the KL has no gradient: only the reconstruction's is left
    recon_only = jax.grad(lambda p: objectives.elbo(MODEL, beta=0.0)(p, x, jax.random.key(3), 0, None)[0])(params)
    np.testing.assert_allclose(np.asarray(kl_grad(100.0)), np.asarray(recon_only["heads"]["kernel"]), rtol=1e-5, atol=1e-7)
    assert not np.allclose(np.asarray(kl_grad(0.0)), np.asarray(recon_only["heads"]["kernel"]))
    # with an allowance between the dimensions' KLs, each dimension is charged max(KL_d, allowance): those below
    # it are charged the allowance, the total is not (a floor on the sum would charge the sum alone)
    kl_D = np.asarray(metrics["kl_per_dim"], np.float64)
    allowance = float(np.median(kl_D))
    loss, terms = objectives.elbo(MODEL, free_bits=allowance)(params, x, jax.random.key(3), 0, None)
    charged = np.maximum(kl_D, allowance).sum()
    assert charged - kl_D.sum() > 1e-2
    np.testing.assert_allclose(float(loss) - float(terms["recon"]), charged, rtol=1e-5)


def test_a_module_that_needs_a_batch_axis_is_named_in_one_message():
    """Without BatchOfOne, GroupNorm would normalise one image's rows; the shapes give it away."""
    with pytest.raises(ValueError, match="BatchOfOne"):
        objectives.elbo(MODULE)(init_params(jax.random.key(0)), X_N[0], jax.random.key(1), 0, None)


def test_a_plain_function_model_with_its_own_objective():
    """No Flax, no vaejax objective: a linear AE written as functions of a params dict."""
    def objective(params, x, key, step, hparams):
        z = x.reshape(-1) @ params["enc"]
        x_hat = (z @ params["dec"]).reshape(x.shape)
        loss = jnp.sum(jnp.square(x_hat - x))
        return loss, {"code_norm": jnp.linalg.norm(z)}

    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"enc": 0.1 * jax.random.normal(k1, (64, 4)), "dec": 0.1 * jax.random.normal(k2, (4, 64))}
    optimizer = optax.sgd(0.01, momentum=0.9)
    epoch = engine.make_epoch(objective, optimizer, batch_size=32)
    state = engine.init(params, optimizer)
    losses = []
    for _ in range(5):
        state, metrics = epoch(state, X_N, jax.random.key(1))
        losses.append(float(metrics["loss"].mean()))
    assert losses[-1] < 0.7 * losses[0], losses
    assert set(metrics) == {"loss", "code_norm"}


def test_kl_warmup_and_any_schedule_run_without_recompiling():
    traces = []

    def counted(params, example, key, step, hparams):
        traces.append(1)  # runs once per trace, never when the compiled program runs
        return objectives.elbo(MODEL, warmup_steps=4)(params, example, key, step, hparams)

    step = engine.make_step(counted, OPTIMIZER)
    state = engine.init(init_params(jax.random.key(0)), OPTIMIZER)
    weights = []
    for i in range(6):  # the warm-up ramps beta with the step number ...
        state, metrics = step(state, X_N[:32], jax.random.key(1))
        weights.append(float(metrics["beta"]))
    np.testing.assert_allclose(weights, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    for beta in (0.5, 2.0, 4.0):  # ... and a schedule of one's own passes beta as a traced hyperparameter
        state, metrics = step(state, X_N[:32], jax.random.key(1), {"beta": jnp.float32(beta), "warmup_steps": 0})
        assert float(metrics["beta"]) == beta
    assert len(traces) == 2  # one trace without hyperparameters, one with them: never one per value


@pytest.mark.parametrize("how", engine.MODEL_AXES)
def test_beta_sweep_of_4_values_by_2_seeds_in_one_program_equals_8_separate_runs(how):
    betas, seeds = [0.0, 0.1, 0.5, 1.0], 2
    objective = objectives.elbo(MODEL)
    optimizer = optax.adam(3e-3)
    beta_S = jnp.repeat(jnp.asarray(betas), seeds)  # (8,): beta-major, seeds inside
    init_keys = jnp.tile(jax.random.split(jax.random.key(7), seeds), 4)
    run_keys = jnp.tile(jax.random.split(jax.random.key(8), seeds), 4)

    sweep = engine.make_epoch(objective, optimizer, batch_size=32, model_axis=how)
    states = engine.init_many(init_params, init_keys, optimizer)
    for _ in range(2):
        states, metrics = sweep(states, X_N, run_keys, {"beta": beta_S})
    assert metrics["loss"].shape == (8, 3)

    single = engine.make_epoch(objective, optimizer, batch_size=32)
    finals = []
    for i in range(8):
        state = engine.init(init_params(init_keys[i]), optimizer)
        for _ in range(2):
            state, m = single(state, X_N, run_keys[i], {"beta": beta_S[i]})
        tree_close(jax.tree_util.tree_map(lambda a: a[i], states.params), state.params, rtol=2e-4, atol=2e-6)
        np.testing.assert_allclose(np.asarray(metrics["loss"][i]), np.asarray(m["loss"]), rtol=1e-4)
        finals.append(float(m["kl"][-1]))
    # beta does what it should: the KL falls as its weight grows (the same seed, the same data)
    kl_by_beta = np.asarray(finals).reshape(4, seeds).mean(axis=1)
    assert kl_by_beta[0] > kl_by_beta[-1], kl_by_beta
