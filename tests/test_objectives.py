"""Tests for vaejax.objectives: likelihoods and terms against reference formulas, quadrature and
Monte Carlo estimates, the IWAE bound, and the preset objectives batched by the engine."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vaejax import config, engine, models, objectives, recipe
from conftest import TINY_MLP_AE, TINY_MLP_VAE, fake_params, structured_images

RNG = np.random.default_rng(0)


def _logits_and_intensities(shape=(6, 5, 1), scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=shape) * scale).astype(np.float32)
    x = rng.uniform(size=shape).astype(np.float32)
    x.flat[:3] = [0.0, 1.0, 0.5]  # the end points and the middle
    return logits, x


# ------------------------------------------------------------------ reconstruction terms


def test_bernoulli_nll_hand_formula_on_intensities():
    logits, x = _logits_and_intensities()
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    expected = -np.sum(x * np.log(p) + (1 - x) * np.log(1 - p))
    got = float(objectives.bernoulli_nll(jnp.asarray(logits), jnp.asarray(x)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bernoulli_nll_is_stable_for_large_logits():
    logits = jnp.array([60.0, -60.0, 60.0, -60.0])
    x = jnp.array([1.0, 0.0, 0.0, 1.0])
    # -log sigmoid(60) ~ 0 twice, then 60 nats twice (a naive log(sigmoid) gives inf here)
    np.testing.assert_allclose(float(objectives.bernoulli_nll(logits, x)), 120.0, rtol=1e-6)


def test_bernoulli_nll_derivatives_match_the_hand_formulas():
    """d/dl = sigmoid(l) - x and d/dx = -l, in reverse and forward mode; d2/dl2 = s(1 - s); finite at +-60."""
    logits, x = map(jnp.asarray, _logits_and_intensities(scale=3.0, seed=3))
    logits = logits.at[0, :2, 0].set(jnp.array([60.0, -60.0]))
    s = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    d_logits, d_x = jax.grad(objectives.bernoulli_nll, argnums=(0, 1))(logits, x)
    np.testing.assert_allclose(d_logits, s - np.asarray(x), atol=1e-6)
    np.testing.assert_allclose(d_x, -np.asarray(logits), atol=1e-6)
    direction = jnp.linspace(-1.0, 1.0, logits.size).reshape(logits.shape)
    _, forward = jax.jvp(lambda lg: objectives.bernoulli_nll(lg, x), (logits,), (direction,))
    np.testing.assert_allclose(float(forward), np.sum((s - np.asarray(x)) * np.asarray(direction)), rtol=1e-5)
    curvature = jax.grad(lambda lg: jnp.vdot(jax.grad(objectives.bernoulli_nll)(lg, x), direction))(logits)
    np.testing.assert_allclose(curvature, s * (1 - s) * np.asarray(direction), atol=1e-6)


@pytest.mark.parametrize("sigma", [0.1, 1.0])
def test_gaussian_nll_hand_formula(sigma):
    logits, x = _logits_and_intensities(scale=1.0, seed=1)
    mean = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    by_hand = np.sum(0.5 * ((x - mean) / sigma) ** 2 + np.log(sigma) + 0.5 * np.log(2 * np.pi))
    by_scipy = -np.sum(stats.norm.logpdf(x, loc=mean, scale=sigma))
    got = float(objectives.gaussian(sigma).nll(jnp.asarray(logits), jnp.asarray(x)))
    np.testing.assert_allclose(by_hand, by_scipy, rtol=1e-10)
    np.testing.assert_allclose(got, by_hand, rtol=1e-5)


def test_reconstruction_follows_the_likelihood():
    logits, x = map(jnp.asarray, _logits_and_intensities(scale=1.0, seed=2))
    bern = recipe.likelihood(config.replace(TINY_MLP_VAE, likelihood="bernoulli")).nll(logits, x)
    gauss = recipe.likelihood(config.replace(TINY_MLP_VAE, likelihood="gaussian", obs_sigma=0.3)).nll(logits, x)
    mse = recipe.likelihood(config.replace(TINY_MLP_VAE, likelihood="mse")).nll(logits, x)
    np.testing.assert_allclose(float(bern), float(objectives.bernoulli_nll(logits, x)), rtol=1e-6)
    np.testing.assert_allclose(float(gauss), float(objectives.gaussian_nll(jax.nn.sigmoid(logits), x, np.log(0.3))), rtol=1e-6)
    mean = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    np.testing.assert_allclose(float(mse), np.sum((np.asarray(x) - mean) ** 2), rtol=1e-5)


def test_continuous_bernoulli_matches_its_definition_and_integrates_to_one():
    """-log p(x) = -[x log lam + (1 - x) log(1 - lam) + log C(lam)], C = 2 artanh(1 - 2 lam) / (1 - 2 lam)."""
    logits = np.array([-8.0, -2.0, -0.3, -1e-4, 0.0, 1e-3, 0.7, 3.0, 9.0])
    lam = 1.0 / (1.0 + np.exp(-logits))
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(np.abs(1 - 2 * lam) < 1e-12, 2.0, 2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))
    grid = np.linspace(0.0, 1.0, 2001)
    cb = objectives.continuous_bernoulli
    nll = jax.jit(jax.vmap(jax.vmap(cb.nll, in_axes=(None, 0)), in_axes=(0, None)))  # (logits, x grid) -> nats
    got = np.asarray(nll(jnp.asarray(logits, jnp.float32), jnp.asarray(grid, jnp.float32)), np.float64)
    expected = -(grid[None] * np.log(lam)[:, None] + (1 - grid[None]) * np.log1p(-lam)[:, None] + np.log(c)[:, None])
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)
    density = np.exp(-got)
    np.testing.assert_allclose(np.trapezoid(density, grid, axis=1), 1.0, rtol=1e-4)  # a density on [0, 1]
    mean_by_quadrature = np.trapezoid(density * grid, grid, axis=1)
    np.testing.assert_allclose(np.asarray(cb.mean(jnp.asarray(logits, jnp.float32))), mean_by_quadrature, atol=2e-5)
    grads = jax.grad(lambda l: cb.nll(l, jnp.full_like(l, 0.3)))(jnp.asarray([0.0, 1e-3, 5.0]))
    assert np.all(np.isfinite(np.asarray(grads)))  # no NaN from the branch at 0


def test_continuous_bernoulli_gradient_is_its_derivative_on_both_sides_of_the_series_branch():
    """d(-log p)/dl = sigmoid(l) - x - d log C / dl, with d log C / dl = 1/l - 1/sinh(l) (about l/6 near 0).
    Near 0, where log C is its series, a wrong series term changes the values by less than float32 can
    show, but the gradient by about l/6."""
    x = 0.3
    series = np.array([-9e-3, -2e-3, 4e-3, 9e-3])
    exact = np.array([-0.3, 0.0101, 0.02, 0.5])
    grad = jax.jit(jax.vmap(jax.grad(lambda l: objectives.continuous_bernoulli.nll(l, jnp.float32(x)))))
    # just above the branch the exact form's 1/l - 1/tanh(l/2) cancels down to about l/6: float32 keeps ~1e-5 of it
    for logits, atol in ((series, 1e-6), (exact, 5e-5)):
        expected = 1 / (1 + np.exp(-logits)) - x - (1 / logits - 1 / np.sinh(logits))
        got = np.asarray(grad(jnp.asarray(logits, jnp.float32)), np.float64)
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


def test_gaussian_optimal_sigma_is_the_best_fixed_sigma_per_image():
    logits, x = map(jnp.asarray, _logits_and_intensities(scale=1.0, seed=3))
    got = float(objectives.gaussian_optimal().nll(logits, x))
    sigmas = np.exp(np.linspace(-4, 1, 4001))
    by_grid = min(float(objectives.gaussian(s).nll(logits, x)) for s in sigmas[::40])
    mean = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    mse = np.mean((np.asarray(x) - mean) ** 2)
    closed = 0.5 * x.size * (np.log(2 * np.pi * mse) + 1.0)
    np.testing.assert_allclose(got, closed, rtol=1e-5)
    assert got <= by_grid + 1e-3 and by_grid - got < 0.5  # the grid's best sigma is no better
    # a perfect reconstruction is held at min_sigma instead of an infinite likelihood
    floor = float(objectives.gaussian_optimal(min_sigma=0.01).nll(jnp.full((4,), 10.0), jax.nn.sigmoid(jnp.full((4,), 10.0))))
    np.testing.assert_allclose(floor, 4 * (np.log(0.01) + 0.5 * np.log(2 * np.pi)), rtol=1e-5)


def test_gaussian_learned_sigma_is_a_decoder_parameter_with_zero_gradient_at_the_mle():
    cfg = config.replace(TINY_MLP_VAE, likelihood="gaussian_learned")
    params = models.init(jax.random.key(0), cfg)
    assert params["log_sigma"].shape == ()
    logits, log_sigma = models.decode(cfg, params, jnp.zeros((2, cfg.latent_dim)))
    assert log_sigma.shape == logits.shape == (2, 28, 28, 1)
    x = jnp.asarray(structured_images(1, 1)[0])
    lik = objectives.gaussian_learned
    out = (logits[0], log_sigma[0])
    np.testing.assert_allclose(float(lik.nll(out, x)), float(objectives.gaussian_nll(jax.nn.sigmoid(logits[0]), x, 0.0)), rtol=1e-6)
    mse = jnp.mean(jnp.square(x - lik.mean(out)))
    at_mle = jax.grad(lambda s: lik.nll((logits[0], jnp.full_like(logits[0], s)), x))(0.5 * jnp.log(mse))
    assert abs(float(at_mle)) < 1e-2


# ------------------------------------------------------------------ KL


def test_kl_is_zero_at_the_prior():
    assert float(objectives.kl_diag_gaussian(jnp.zeros(7), jnp.zeros(7))) == 0.0
    assert float(objectives.kl_diag_gaussian(jnp.array([0.1, 0.0]), jnp.zeros(2))) > 0
    assert float(objectives.kl_diag_gaussian(jnp.zeros(2), jnp.array([0.0, -0.5]))) > 0


def test_kl_matches_monte_carlo():
    mu = np.array([0.5, -1.0, 0.0, 2.0])
    logvar = np.array([0.0, -1.0, 0.7, -2.5])
    sigma = np.exp(0.5 * logvar)
    n = 200_000
    z = mu + sigma * np.random.default_rng(1).standard_normal((n, 4))  # independent of the library's sampler
    log_q = stats.norm.logpdf(z, mu, sigma).sum(1)
    log_p = stats.norm.logpdf(z).sum(1)
    samples = log_q - log_p
    mc, se = samples.mean(), samples.std() / np.sqrt(n)
    kl = float(objectives.kl_diag_gaussian(jnp.asarray(mu, jnp.float32), jnp.asarray(logvar, jnp.float32)))
    assert abs(kl - mc) < 5 * se, (kl, mc, se)
    # and the closed form, term by term
    closed = 0.5 * np.sum(sigma**2 + mu**2 - 1 - logvar)
    np.testing.assert_allclose(kl, closed, rtol=1e-5)


def test_log_normal_matches_scipy():
    z, mu, logvar = RNG.normal(size=(3, 5))
    expected = stats.norm.logpdf(z, mu, np.exp(0.5 * logvar)).sum()
    got = float(objectives.log_normal(jnp.asarray(z, jnp.float32), jnp.asarray(mu, jnp.float32), jnp.asarray(logvar, jnp.float32)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


# ------------------------------------------------------------------ IWAE

CFG = TINY_MLP_VAE
MODEL = models.module(CFG)
PARAMS = fake_params(CFG, seed=3)
X_N = jnp.asarray(structured_images(0, 4))


N_K1 = 2000


def _one_sample_elbo_by_hand(params, x, key):
    """log p(x|z) + log p(z) - log q(z|x) at the z the model draws for `key`, from hand-written formulas."""
    logits, aux = models.apply(CFG, params, x, key)
    z, mu, logvar = aux["z"], aux["mu"], aux["logvar"]
    log_px = jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits))
    log_pz = jnp.sum(-0.5 * z**2 - 0.5 * math.log(2 * math.pi))
    log_qz = jnp.sum(-0.5 * ((z - mu) ** 2) / jnp.exp(logvar) - 0.5 * logvar - 0.5 * math.log(2 * math.pi))
    return log_px + log_pz - log_qz


@functools.lru_cache(maxsize=None)
def k1_samples():
    """For N_K1 (image, key) pairs (the four images in turn): the k = 1 bound, the one-sample ELBO by hand
    at the model's z for the same key, and the objective's reconstruction and KL terms for the same key.
    One compiled program, shared by the tests below."""
    image = np.arange(N_K1) % len(X_N)
    keys = jax.random.split(jax.random.key(5), N_K1)
    per_example = recipe.objective(CFG)

    @jax.jit
    def run(params, x_n, keys):
        def one(x, key):
            terms = per_example(params, x, key, 0, None)[1]
            return objectives.iwae_bound(MODEL, objectives.bernoulli, params, x, key, 1), _one_sample_elbo_by_hand(params, x, key), terms["recon"], terms["kl"]
        return jax.vmap(one)(x_n, keys)

    out = run(PARAMS, X_N[image], keys)
    return image, tuple(np.asarray(a, np.float64) for a in out)


def test_iwae_k1_is_the_one_sample_elbo_for_the_same_key():
    """k = 1: the bound is log p(x, z) - log q(z | x) at the very z that models.apply draws with the same key."""
    _, (bound, by_hand, _, _) = k1_samples()
    np.testing.assert_allclose(bound[:100], by_hand[:100], rtol=1e-6, atol=1e-3)


def test_iwae_k1_mean_matches_recon_plus_analytic_kl():
    """E_q[log p(x|z) + log p(z) - log q(z|x)] = -(E_q[recon] + KL): the k = 1 bound is an unbiased ELBO estimate."""
    image, (bound, _, recon, kl) = k1_samples()
    for j in range(len(X_N)):
        mine = image == j
        assert np.ptp(kl[mine]) <= 1e-5 * abs(kl[mine][0])  # the KL is analytic: the same for every key
        d = bound[mine] + recon[mine] + kl[mine]  # zero in expectation, per image
        se = d.std() / math.sqrt(mine.sum())
        assert se > 0
        assert abs(d.mean()) < 5 * se, (j, d.mean(), se)


class LinearGaussian:
    """p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I), and an encoder that returns the exact posterior.

    W's columns are orthogonal, so the posterior is diagonal: var_j = 1 / (1 + |w_j|^2 / s^2),
    mu = var * W^T (x - b) / s^2. With q the exact posterior every importance weight p(x, z) / q(z | x)
    equals p(x), so the IWAE bound is log p(x) exactly, for every k and every draw.
    Called through the model interface's apply(variables, x, method) (parameters unused).
    """

    def __init__(self, w, b, s):
        self.w, self.b, self.s = w, b, s

    def apply(self, variables, x, method):
        if method == "decode":
            return self.w @ x + self.b
        var = 1.0 / (1.0 + jnp.sum(jnp.square(self.w), axis=0) / self.s**2)
        return var * (self.w.T @ (x - self.b)) / self.s**2, jnp.log(var)

    def log_px(self, x):
        cov = self.w @ self.w.T + self.s**2 * np.eye(len(self.b))
        return stats.multivariate_normal(np.asarray(self.b, np.float64), cov).logpdf(np.asarray(x, np.float64))


def test_iwae_bound_is_log_px_with_the_exact_posterior():
    """Against log p(x) in closed form, for k > 1: a bound off by a constant (a missing - log k) fails here."""
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(5, 2)))
    model = LinearGaussian(jnp.asarray(q * [1.5, 0.7], jnp.float32), jnp.asarray([0.3, -0.2, 0.1, 0.0, 0.5]), 0.6)
    likelihood = objectives.Likelihood(lambda mean, x: objectives.gaussian_nll(mean, x, math.log(0.6)), lambda m: m)
    x_N = np.random.default_rng(4).normal(size=(3, 5)).astype(np.float32)
    for k in (2, 7, 50):
        bounds = jax.jit(jax.vmap(lambda x, key: objectives.iwae_bound(model, likelihood, None, x, key, k)))(
            jnp.asarray(x_N), jax.random.split(jax.random.key(k), 3))
        np.testing.assert_allclose(np.asarray(bounds), [model.log_px(x) for x in x_N], rtol=0, atol=2e-4)


def test_iwae_grows_with_k():
    """k = 1 < k = 10 < k = 100 in expectation, per image, averaged over keys."""
    image, (b1_all, *_) = k1_samples()
    n_keys = 48
    keys = jax.random.split(jax.random.key(9), n_keys)

    @jax.jit
    def bounds(params, x_N, keys):
        """(images, keys) bounds for k = 10 and 100, in one compiled program."""
        def per_image(x):
            return [jax.vmap(lambda key: objectives.iwae_bound(MODEL, objectives.bernoulli, params, x, key, k))(keys) for k in (10, 100)]
        return jax.vmap(per_image)(x_N)

    b10_all, b100_all = (np.asarray(b, np.float64) for b in bounds(PARAMS, X_N, keys))
    stats_ = [(b.mean(1), b.std(1) / math.sqrt(b.shape[1])) for b in
              (np.stack([b1_all[image == j] for j in range(len(X_N))]), b10_all, b100_all)]
    (b1, se1), (b10, se10), (b100, se100) = stats_
    assert np.all(np.isfinite(b100))
    # larger for every image, and on average over the images by more than 3 Monte Carlo errors
    for lo, hi, se_lo, se_hi in ((b1, b10, se1, se10), (b10, b100, se10, se100)):
        assert np.all(hi > lo), (lo, hi)
        gap, se = np.mean(hi - lo), np.sqrt(np.sum(se_lo**2 + se_hi**2)) / len(lo)
        assert gap > 3 * se, (gap, se)


# ------------------------------------------------------------------ objective


@jax.jit
def _ae_objectives(params, x_N, key):
    """An AE's objectives, all in one compiled program (an AE needs no key, so any key will do)."""
    cfg = TINY_MLP_AE
    per_example = recipe.objective(cfg)
    loss_B, terms_B = jax.vmap(per_example, in_axes=(None, 0, 0, None, None))(params, x_N, jax.random.split(key, len(x_N)), 0, None)
    terms_B = dict(terms_B, loss=loss_B)
    loss, terms = engine.mean_objective(per_example)(params, x_N, key, 0, None)
    logits_N, _ = models.apply(cfg, params, x_N)
    nll_N = jax.vmap(objectives.bernoulli_nll)(logits_N, x_N)
    target_N = x_N[::-1]
    loss_target, _ = engine.mean_objective(per_example)(params, (x_N, target_N), key, 0, None)
    nll_target_N = jax.vmap(objectives.bernoulli_nll)(logits_N, target_N)
    return loss_B, terms_B, loss, terms, nll_N, loss_target, nll_target_N


def test_ae_objective_and_batch_objective():
    params = fake_params(TINY_MLP_AE, seed=1)
    loss_B, terms_B, loss, terms, nll_N, loss_target, nll_target_N = _ae_objectives(params, X_N, jax.random.key(0))
    # per example: the loss is the reconstruction, the Bernoulli NLL of the decoded logits
    np.testing.assert_allclose(np.asarray(loss_B), np.asarray(nll_N), rtol=1e-6)
    assert set(terms_B) == set(terms) == {"loss", "recon"}
    np.testing.assert_allclose(np.asarray(terms_B["recon"]), np.asarray(nll_N), rtol=1e-6)
    # batched: the mean of the vmapped per-example objective
    np.testing.assert_allclose(float(loss), float(np.mean(np.asarray(loss_B, np.float64))), rtol=1e-6)
    for name in terms:
        np.testing.assert_allclose(np.asarray(terms[name]), np.mean(np.asarray(terms_B[name], np.float64), axis=0), rtol=1e-6)
    # a target replaces the input as what the decoder is scored against
    np.testing.assert_allclose(float(loss_target), float(np.mean(np.asarray(nll_target_N, np.float64))), rtol=1e-6)
    assert float(loss_target) != float(loss)


@jax.jit
def _vae_objectives(params, x_N, key):
    """The VAE's objectives, in one compiled program."""
    per_example = recipe.objective(CFG, config.TrainConfig(beta=0.7))
    loss_B, terms_B = jax.vmap(per_example, in_axes=(None, 0, 0, None, None))(params, x_N, jax.random.split(key, len(x_N)), 0, None)
    terms_B = dict(terms_B, loss=loss_B)
    batch = engine.mean_objective(per_example)(params, x_N, key, 0, None)
    x, k = x_N[1], jax.random.key(4)
    by_beta = {beta: recipe.objective(CFG, config.TrainConfig(beta=beta))(params, x, k, 0, None) for beta in (0.0, 1.0, 3.0)}
    logits, _ = models.apply(CFG, params, x, k)
    mu, logvar = models.encode(CFG, params, x)
    return (loss_B, terms_B), batch, by_beta, objectives.bernoulli_nll(logits, x), objectives.kl_diag_gaussian(mu, logvar)


def test_vae_objective_and_batch_objective():
    (loss_B, terms_B), (loss, terms), by_beta, nll, kl = _vae_objectives(PARAMS, X_N, jax.random.key(3))
    # batched: the mean of the per-example objective vmapped with the keys jax.random.split(key, B)
    np.testing.assert_allclose(float(loss), float(np.mean(np.asarray(loss_B, np.float64))), rtol=1e-6)
    assert set(terms) == set(terms_B) == {"loss", "recon", "kl", "nelbo", "beta", "kl_per_dim"}
    for name in terms:
        np.testing.assert_allclose(np.asarray(terms[name]), np.mean(np.asarray(terms_B[name], np.float64), axis=0), rtol=1e-6)
    np.testing.assert_allclose(float(terms["loss"]), float(terms["recon"] + 0.7 * terms["kl"]), rtol=1e-6)

    (loss0, terms0), (loss1, terms1), (loss3, _) = by_beta[0.0], by_beta[1.0], by_beta[3.0]
    # beta = 0: only the reconstruction term is left
    assert float(loss0) == float(terms0["recon"])
    # the reconstruction is the Bernoulli NLL of the model's logits for that key, the KL the analytic one
    np.testing.assert_allclose(float(terms0["recon"]), float(nll), rtol=1e-6)
    np.testing.assert_allclose(float(terms1["kl"]), float(kl), rtol=1e-6)
    assert float(kl) > 0
    np.testing.assert_allclose(float(loss1), float(terms1["recon"] + terms1["kl"]), rtol=1e-6)
    np.testing.assert_allclose(float(loss3), float(terms1["recon"] + 3.0 * terms1["kl"]), rtol=1e-6)


def test_denoising_noise_level_and_clipping_are_traced_hyperparameters():
    def seen(params, example, key, step, hparams):  # the "loss" is the noisy input the objective was given
        x, target = example
        return jnp.sum(x), {"min": jnp.min(x), "max": jnp.max(x), "target": jnp.sum(target)}

    objective = objectives.denoising(seen)
    x = jnp.full((8, 8, 1), 0.5)
    key = jax.random.key(0)
    run = jax.jit(lambda hp: objective(None, x, key, 0, hp)[1])
    clipped, unclipped = run({"noise_sigma": 2.0, "noise_clip": 1.0}), run({"noise_sigma": 2.0, "noise_clip": 0.0})
    assert 0.0 <= float(clipped["min"]) and float(clipped["max"]) <= 1.0
    assert float(unclipped["min"]) < 0.0 and float(unclipped["max"]) > 1.0
    assert float(clipped["target"]) == float(unclipped["target"]) == 32.0  # the target stays clean
    quiet = run({"noise_sigma": 0.0, "noise_clip": 0.0})
    assert float(quiet["min"]) == float(quiet["max"]) == 0.5
    assert run._cache_size() == 1  # one program for every level and kind


@pytest.mark.parametrize("wrapper", ["binarized", "denoising"])
def test_a_wrappers_draw_and_the_objectives_own_draws_come_from_different_keys(wrapper):
    """binarized and denoising draw their noise from one key and pass another on: drawn from the key the
    objective gets, a VAE's eps would be a function of the noise on the same pixels (jax's draws of one key
    share their bits)."""
    def seen(params, example, key, step, hparams):  # reports the input it was given and the key
        return jnp.float32(0.0), {"x": objectives.split_example(example)[0], "key": jax.random.key_data(key)}

    x = jnp.full((28, 28, 1), 0.5)
    objective = objectives.binarized(seen) if wrapper == "binarized" else objectives.denoising(seen, 0.1, clip=False)
    given = jax.jit(lambda key: objective(None, x, key, 0, None)[1])(jax.random.key(0))
    passed_on = jax.random.wrap_key_data(given["key"])
    if wrapper == "binarized":
        from_passed_key = jax.random.bernoulli(passed_on, x).astype(x.dtype)
        assert set(np.unique(np.asarray(given["x"]))) == {0.0, 1.0}
        assert 0.4 < float(jnp.mean(given["x"] == from_passed_key)) < 0.6  # 784 independent coin flips agree
    else:
        from_passed_key = x + 0.1 * jax.random.normal(passed_on, x.shape, x.dtype)
        noise = np.asarray(given["x"] - x)
        assert 0.08 < noise.std() < 0.12
        assert abs(np.corrcoef(noise.ravel(), np.asarray(from_passed_key - x).ravel())[0, 1]) < 0.15


def test_a_misspelt_hyperparameter_is_an_error_not_a_silent_default(tmp_path):
    from vaejax import config, engine, fit, recipe

    r = recipe.build(config.preset("mlp_vae"), config.TrainConfig())
    assert r.objective.hparam_names == {"beta", "warmup_steps", "free_bits"}
    x = np.zeros((8, 28, 28, 1), np.float32)
    with pytest.raises(ValueError, match="'bata' are not read by this objective.*'beta'"):
        fit.fit(r.objective, r.optimizer, r.init_params, x, str(tmp_path / "run"), epochs=1, batch_size=8,
                key=jax.random.key(0), hparams={"bata": jnp.float32(0.5)})
    assert not (tmp_path / "run").exists()  # refused before anything was written
    step = engine.make_step(objectives.denoising(r.objective), r.optimizer)
    state = engine.init(r.init_params(jax.random.key(0)), r.optimizer)
    state, _ = step(state, x, jax.random.key(1), {"beta": jnp.float32(0.5), "noise_sigma": jnp.float32(0.2)})
    with pytest.raises(ValueError, match="'noise_sgima'"):
        step(state, x, jax.random.key(1), {"noise_sgima": jnp.float32(0.2)})


def test_images_outside_the_likelihoods_support_are_an_error_not_a_training_run(tmp_path):
    """uint8 images, or floats in [0, 255], into a Bernoulli objective: an error naming the fix, from fit
    before anything is written and from the engine's step at trace time; real-valued likelihoods take any
    floats, and the wrapped objectives keep their inner objective's support."""
    from vaejax import config, engine, fit, recipe

    r = recipe.build(config.preset("mlp_vae"), config.TrainConfig())
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1)).astype(np.uint8)
    train = lambda x, objective=r.objective: fit.fit(objective, r.optimizer, r.init_params, x, str(tmp_path / "run"),
                                                      epochs=1, batch_size=8, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"targets are uint8.*floats in \[0, 1\].*to_float"):
        train(images)
    with pytest.raises(ValueError, match=r"range over \[0, 255\], outside \[0, 1\].*to_float"):
        train(images.astype(np.float32))
    with pytest.raises(ValueError, match=r"range over \[-0.5, 0.5\]"):
        train(images / 255.0 - 0.5, objectives.denoising(r.objective))
    with pytest.raises(ValueError, match=r"range over"):
        train(images.astype(np.float32), objectives.binarized(objectives.elbo(r.model, objectives.gaussian(0.1))))
    assert not (tmp_path / "run").exists()
    state = engine.init(r.init_params(jax.random.key(0)), r.optimizer)
    with pytest.raises(ValueError, match="targets are uint8"):
        engine.make_step(r.objective, r.optimizer)(state, images, jax.random.key(1))
    pair = (images / 255.0, images / 255.0 - 0.5)  # (input, target): the target is what the likelihood reads
    with pytest.raises(ValueError, match=r"range over \[-0.5, 0.5\]"):
        train(pair)
    real = objectives.elbo(r.model, objectives.gaussian(0.1))
    assert real.target_support is None and objectives.bernoulli.support == (0.0, 1.0)
    fit.fit(real, r.optimizer, r.init_params, images / 255.0 - 0.5, None, epochs=1, batch_size=8,
            key=jax.random.key(0))
