"""Tests for vaejax.latent: embedding, decoding, interpolation, centroids, neighbours, samplers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaejax import config, latent, models


def small(kind):
    return config.replace(config.preset(f"mlp_{kind}"), hidden=(16,), latent_dim=3)


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_embed_and_decode_shapes_and_chunking(kind):
    cfg = small(kind)
    params = models.init(jax.random.key(0), cfg)
    x = jax.random.uniform(jax.random.key(1), (7, 28, 28, 1))
    z = latent.embed(cfg, params, x, chunk=3)  # 7 = 3 + 3 + 1 (padded)
    direct = models.encode(cfg, params, x)
    np.testing.assert_allclose(z, direct[0] if kind == "vae" else direct, atol=1e-5)  # VAE: the mean
    np.testing.assert_array_equal(models.embed(cfg, params, x), direct[0] if kind == "vae" else direct)
    images = latent.decode(cfg, params, z, chunk=3)
    assert images.shape == (7, 28, 28, 1)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    grid = latent.decode(cfg, params, z[:6].reshape(2, 3, 3))  # any leading dims
    assert grid.shape == (2, 3, 28, 28, 1)


def test_linear_interpolation_follows_the_notes_convention():
    e1, e2 = jnp.array([1.0, 0.0]), jnp.array([0.0, 2.0])
    path = latent.interpolate(e1, e2, [0.0, 0.25, 1.0])
    np.testing.assert_allclose(path, [[0.0, 2.0], [0.25, 1.5], [1.0, 0.0]])  # alpha e1 + (1 - alpha) e2
    batch = latent.interpolate(jnp.ones((4, 5)), jnp.zeros((4, 5)), jnp.linspace(0, 1, 3))
    assert batch.shape == (3, 4, 5)


def test_slerp_endpoints_norm_and_parallel_fallback():
    e1, e2 = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    path = latent.interpolate(e1, e2, jnp.linspace(0, 1, 5), method="slerp")
    np.testing.assert_allclose(path[0], e2, atol=1e-6)
    np.testing.assert_allclose(path[-1], e1, atol=1e-6)
    np.testing.assert_allclose(jnp.linalg.norm(path, axis=-1), 1.0, atol=1e-6)  # on the unit circle
    same = latent.interpolate(e1, 2 * e1, [0.5], method="slerp")
    np.testing.assert_allclose(same[0], [1.5, 0.0], atol=1e-5)  # parallel: linear
    with pytest.raises(ValueError):
        latent.interpolate(e1, e2, [0.5], method="cubic")


def test_class_centroids_spread_and_neighbours():
    z = jnp.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0]])
    y = jnp.array([0, 0, 1, 1])
    c = latent.class_centroids(z, y, 3)
    np.testing.assert_allclose(c[:2], [[1.0, 0.0], [11.0, 10.0]])
    assert bool(jnp.all(jnp.isnan(c[2])))  # empty class
    np.testing.assert_allclose(latent.class_spread(z, y, 2), [[1.0, 0.0], [1.0, 0.0]], atol=1e-6)
    idx, dist = latent.nearest_neighbours(jnp.array([[11.5, 10.0], [0.1, 0.0]]), z, 2)
    np.testing.assert_array_equal(idx, [[3, 2], [0, 1]])
    np.testing.assert_allclose(dist, [[0.5, 1.5], [0.1, 1.9]], atol=1e-3)


def test_samplers_match_their_targets():
    key = jax.random.key(0)
    prior = latent.prior_samples(key, 20000, 3)
    assert prior.shape == (20000, 3)
    np.testing.assert_allclose(np.cov(np.asarray(prior), rowvar=False), np.eye(3), atol=0.05)
    codes = jax.random.normal(jax.random.key(1), (20000, 2)) @ jnp.array([[2.0, 0.0], [1.0, 0.5]]) + 5.0
    fit = latent.gaussian_fit_samples(jax.random.key(2), codes, 20000)
    mean, cov = latent.gaussian_fit(codes)
    np.testing.assert_allclose(np.mean(np.asarray(fit), 0), mean, atol=0.1)
    np.testing.assert_allclose(np.cov(np.asarray(fit), rowvar=False), cov, rtol=0.1, atol=0.05)
    box = latent.bounding_box_samples(jax.random.key(3), codes, 5000)
    low, high = latent.bounding_box(codes)
    assert bool(jnp.all(box >= low)) and bool(jnp.all(box <= high))
    assert float(jnp.std(box[:, 0])) == pytest.approx(float(high[0] - low[0]) / np.sqrt(12), rel=0.05)


def test_grid_2d_layout():
    g = latent.grid_2d(jnp.array([0.0, 0.0]), jnp.array([1.0, 1.0]), 3)
    assert g.shape == (9, 2)
    np.testing.assert_allclose(g[0], [0.0, 1.0])  # top-left: low x, high y
    np.testing.assert_allclose(g[2], [1.0, 1.0])
    np.testing.assert_allclose(g[-1], [1.0, 0.0])


def test_gmm_samples_follow_the_codes_where_one_gaussian_does_not():
    rng = np.random.default_rng(0)
    codes = np.concatenate([rng.normal(-5, 0.3, (300, 2)), rng.normal(5, 0.3, (300, 2))])  # two clusters
    key = jax.random.key(0)
    mixture = np.asarray(latent.gmm_samples(key, codes, 400, components=2))
    single = np.asarray(latent.gaussian_fit_samples(key, codes, 400))
    assert mixture.shape == (400, 2)
    between = lambda z: np.mean(np.abs(z[:, 0]) < 2.5)  # noqa: E731  (the empty middle)
    assert between(mixture) < 0.02 and between(single) > 0.2
    assert 0.35 < np.mean(mixture[:, 0] > 0) < 0.65  # both clusters, in proportion, shuffled
    np.testing.assert_array_equal(mixture, np.asarray(latent.gmm_samples(key, codes, 400, components=2)))
