"""A flax.nnx module through vaejax: trained by the engine and fit (resumed), loaded back, read by the
latent-space tools, and swept as a user family, through objectives.Nnx."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import vaejax
from vaejax import fit, objectives
from conftest import structured_images

X_N = structured_images(0, 256, shape=(8, 8, 1))
OPTIMIZER = optax.adam(3e-3)


class TinyVAE(nnx.Module):
    """One example in, no batch axis, as the model interface asks."""

    def __init__(self, latent_dim: int = 3, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 32, rngs=rngs)
        self.stats = nnx.Linear(32, 2 * latent_dim, rngs=rngs)
        self.out = nnx.Linear(latent_dim, 64, rngs=rngs)

    def encode(self, x):
        mu, logvar = jnp.split(self.stats(nnx.relu(self.hidden(x.reshape(-1)))), 2)
        return mu, logvar

    def decode(self, z):
        return self.out(z).reshape(8, 8, 1)


MODEL = objectives.Nnx(lambda rngs: TinyVAE(rngs=rngs))


def init_params(key):
    return MODEL.init(key)["params"]


def test_an_nnx_vae_trains_through_fit_resumes_and_loads(tmp_path):
    objective = objectives.elbo(MODEL)
    workdir = str(tmp_path / "run")
    first = fit.fit(objective, OPTIMIZER, init_params, X_N, workdir, epochs=2, batch_size=32, key=jax.random.key(0),
                    eval_data={"test": X_N[:64]})
    resumed = fit.fit(objective, OPTIMIZER, init_params, X_N, workdir, epochs=4, batch_size=32,
                      key=jax.random.key(0), eval_data={"test": X_N[:64]}, resume=True)
    whole = fit.fit(objective, OPTIMIZER, init_params, X_N, None, epochs=4, batch_size=32, key=jax.random.key(0),
                    eval_data={"test": X_N[:64]})
    assert resumed.resumed_from == 2 * 8 and [r["epoch"] for r in resumed.records] == [1, 2, 3, 4]
    losses = [r["test_loss"] for r in resumed.records]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    same = jax.tree_util.tree_map(np.array_equal, resumed.state.params, whole.state.params)
    assert all(jax.tree_util.tree_leaves(same))  # bitwise, as for a Linen module
    assert first.state.params.keys() == {"hidden", "stats", "out"}

    run = vaejax.load(workdir, model=MODEL, init_params=init_params, optimizer=OPTIMIZER)
    z = np.asarray(run.encode(X_N[:5]))
    mu = np.stack([np.asarray(MODEL.apply({"params": run.params}, x, "encode")[0]) for x in X_N[:5]])
    np.testing.assert_allclose(z, mu, rtol=1e-5, atol=1e-6)  # a VAE's code is its posterior mean
    assert np.asarray(run.decode(z)).shape == (5, 8, 8, 1)
    assert np.all(np.isfinite(np.asarray(run.iwae_nll(X_N[:5], jax.random.key(1), k=10))))


def test_an_nnx_modules_own_embed_is_its_code():
    class WithEmbed(TinyVAE):
        def embed(self, x):
            return 2.0 * self.encode(x)[0]

    model = objectives.Nnx(lambda rngs: WithEmbed(rngs=rngs))
    params = model.init(jax.random.key(0))["params"]
    x = X_N[0]
    np.testing.assert_allclose(objectives.embed(model, params, x), 2.0 * objectives.encode(model, params, x)[0])
    np.testing.assert_allclose(objectives.embed(MODEL, params, x), objectives.encode(MODEL, params, x)[0])


def test_state_other_than_params_is_refused():
    class WithStats(TinyVAE):
        def __init__(self, *, rngs):
            super().__init__(rngs=rngs)
            self.norm = nnx.BatchNorm(32, rngs=rngs)

    with pytest.raises(ValueError, match="trains nnx.Param state only, and WithStats also holds norm"):
        objectives.Nnx(lambda rngs: WithStats(rngs=rngs)).init(jax.random.key(0))


def test_an_nnx_family_is_swept_as_a_linen_one():
    from vaejax import config
    from vaejax_experiments import families, sweep

    make = lambda image_shape, latent_dim: (objectives.Nnx(lambda rngs: TinyVAE(latent_dim, rngs=rngs)),  # noqa: E731
                                            objectives.bernoulli)
    base = config.replace(config.preset("mlp_vae"), image_shape=(8, 8, 1), latent_dim=3)
    fam = sweep.train_one(base, config.TrainConfig(epochs=2, batch_size=32), X_N, X_N[:64],
                          families.UserFamily("tiny_nnx", make), (0.0, 1.0), seeds=2)
    assert sweep.describe(fam) == "TinyVAE (a user family), latent 3"
    assert fam.distortion.shape == (2, 2) and np.all((0 < fam.distortion) & (fam.distortion < 1))
    assert np.all(fam.rate[1] < fam.rate[0])  # beta 1 spends fewer nats than beta 0
