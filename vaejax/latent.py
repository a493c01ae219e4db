"""Working in latent space: embed, decode, interpolate, centroids, neighbours, samplers.

Pure functions; those that draw random numbers take a key. Latents are (..., D) arrays;
images are NHWC floats in [0, 1].
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import engine, models, objectives, recipe
from vaejax.config import ModelConfig


# ---------------------------------------------------------------------------- embed / decode


class Model(NamedTuple):
    """A model that is not a preset: a Linen module of the model interface (objectives.py: encode and
    decode of one example) and its likelihood. embed, decode and reconstruct take one of these or a
    preset's ModelConfig."""

    module: Any
    likelihood: objectives.Likelihood


def module_and_likelihood(model: ModelConfig | Model) -> tuple[Any, objectives.Likelihood]:
    if isinstance(model, ModelConfig):
        return models.module(model), recipe.likelihood(model)
    return model.module, model.likelihood


def embed(model: ModelConfig | Model, params, x_N, chunk: int = 500):
    """Latent codes (N, D) of images x_N: objectives.embed, the AE's z, the VAE's posterior mean mu."""
    x, n = engine.bucket(jnp.asarray(x_N, jnp.float32), chunk)
    return _embed(model, params, x, chunk)[:n]


def decode(model: ModelConfig | Model, params, z_ND, chunk: int = 500):
    """Images (N, H, W, C) in [0, 1] decoded from latents z_ND (the likelihood's mean); any leading dims."""
    z_ND = jnp.asarray(z_ND, jnp.float32)
    z, n = engine.bucket(z_ND.reshape(-1, z_ND.shape[-1]), chunk)
    images = _decode(model, params, z, chunk)[:n]
    return images.reshape(z_ND.shape[:-1] + images.shape[1:])


def reconstruct(model: ModelConfig | Model, params, x_N, chunk: int = 500):
    """The mean reconstructions of images x_N: decode(embed(x)), the VAE's at z = mu."""
    return decode(model, params, embed(model, params, x_N, chunk), chunk)


@functools.partial(jax.jit, static_argnums=(0, 3))  # once per model and bucket of sizes
def _embed(model, params, x_N, chunk):
    module, _ = module_and_likelihood(model)
    return engine.map_chunks(jax.vmap(lambda x: objectives.embed(module, params, x)), x_N, chunk)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _decode(model, params, z_ND, chunk):
    module, likelihood = module_and_likelihood(model)
    return engine.map_chunks(jax.vmap(lambda z: likelihood.mean(objectives.decode(module, params, z))), z_ND, chunk)


# ---------------------------------------------------------------------------- interpolation


def interpolate(e1, e2, alphas, method: str = "linear"):
    """Latents between e1 and e2 (..., D) for each alpha: (A, ..., D).

    linear: e = alpha e1 + (1 - alpha) e2, so alpha = 1 gives e1 and alpha = 0 gives e2 (the notes' convention).
    slerp:  along the great circle, e = sin(alpha t)/sin(t) e1 + sin((1 - alpha) t)/sin(t) e2,
            t the angle between e1 and e2; it keeps the norm a Gaussian prior expects. Falls back
            to linear where the two are (nearly) parallel.
    """
    e1, e2 = jnp.asarray(e1, jnp.float32), jnp.asarray(e2, jnp.float32)
    a = jnp.asarray(alphas, jnp.float32).reshape((-1,) + (1,) * e1.ndim)
    if method == "linear":
        return a * e1 + (1.0 - a) * e2
    if method != "slerp":
        raise ValueError(f"interpolation method must be 'linear' or 'slerp', got {method!r}")
    n1 = jnp.linalg.norm(e1, axis=-1, keepdims=True)
    n2 = jnp.linalg.norm(e2, axis=-1, keepdims=True)
    cos = jnp.sum(e1 * e2, axis=-1, keepdims=True) / jnp.maximum(n1 * n2, 1e-12)
    theta = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
    sin = jnp.sin(theta)
    safe = sin > 1e-6
    sin_safe = jnp.where(safe, sin, 1.0)
    w1 = jnp.where(safe, jnp.sin(a * theta) / sin_safe, a)
    w2 = jnp.where(safe, jnp.sin((1.0 - a) * theta) / sin_safe, 1.0 - a)
    return w1 * e1 + w2 * e2


# ---------------------------------------------------------------------------- classes and neighbours


def class_centroids(z_ND, labels_N, num_classes: int):
    """Mean latent of each class: (K, D). A class without examples gets NaNs."""
    z_ND = jnp.asarray(z_ND, jnp.float32)
    one_hot = jax.nn.one_hot(jnp.asarray(labels_N), num_classes, dtype=z_ND.dtype)  # (N, K)
    counts = one_hot.sum(0)[:, None]
    return (one_hot.T @ z_ND) / jnp.where(counts > 0, counts, jnp.nan)


def class_spread(z_ND, labels_N, num_classes: int):
    """Per-dimension standard deviation of each class's latents: (K, D)."""
    z_ND = jnp.asarray(z_ND, jnp.float32)
    mu = class_centroids(z_ND, labels_N, num_classes)
    one_hot = jax.nn.one_hot(jnp.asarray(labels_N), num_classes, dtype=z_ND.dtype)
    counts = one_hot.sum(0)[:, None]
    var = (one_hot.T @ jnp.square(z_ND)) / counts - jnp.square(mu)
    return jnp.sqrt(jnp.maximum(var, 0.0))


@functools.partial(jax.jit, static_argnums=2)
def nearest_neighbours(queries_QD, z_ND, k: int = 1):
    """(indices (Q, k), distances (Q, k)) of the k latents in z_ND nearest (Euclidean) to each query."""
    d2 = (jnp.sum(jnp.square(queries_QD), -1)[:, None] - 2.0 * queries_QD @ z_ND.T
          + jnp.sum(jnp.square(z_ND), -1)[None, :])
    neg, idx = jax.lax.top_k(-d2, k)
    return idx, jnp.sqrt(jnp.maximum(-neg, 0.0))


# ---------------------------------------------------------------------------- samplers


def prior_samples(key, n: int, latent_dim: int):
    """n draws of z ~ N(0, I): (n, latent_dim)."""
    return jax.random.normal(key, (n, latent_dim))


def gaussian_fit(z_ND):
    """(mean (D,), covariance (D, D)) of latents, in float64 numpy."""
    z = np.asarray(z_ND, np.float64)
    return z.mean(0), np.cov(z, rowvar=False).reshape(z.shape[1], z.shape[1])


def gaussian_fit_samples(key, z_ND, n: int):
    """n draws from the Gaussian with the mean and covariance of z_ND: (n, D)."""
    mean, cov = gaussian_fit(z_ND)
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    scale = v * np.sqrt(np.clip(w, 0.0, None))  # scale @ scale.T == cov, also for singular cov
    eps = jax.random.normal(key, (n, len(mean)))
    return eps @ jnp.asarray(scale.T, jnp.float32) + jnp.asarray(mean, jnp.float32)


def gmm_samples(key, z_ND, n: int, components: int = 10, max_fit: int = 5000):
    """n draws from a Gaussian mixture (full covariances, scikit-learn) fitted to the latents (a random
    max_fit of them, when more): an ex-post density sampler for an AE (Ghosh et al. 2020). The key seeds
    the fit and the draws. (n, D)."""
    from sklearn.mixture import GaussianMixture

    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    z_fit = np.asarray(z_ND, np.float64)
    z_fit = z_fit[np.random.default_rng(seed).permutation(len(z_fit))[:max_fit]]
    mixture = GaussianMixture(components, covariance_type="full", random_state=seed)
    z, _ = mixture.fit(z_fit).sample(n)
    return jnp.asarray(np.random.default_rng(seed).permutation(z), jnp.float32)  # sample() groups by component


def bounding_box(z_ND):
    """(low (D,), high (D,)): the per-dimension extremes of the latents."""
    z_ND = jnp.asarray(z_ND)
    return z_ND.min(0), z_ND.max(0)


def bounding_box_samples(key, z_ND, n: int):
    """n draws uniform in the latents' axis-aligned bounding box: (n, D)."""
    low, high = bounding_box(z_ND)
    return jax.random.uniform(key, (n, z_ND.shape[-1]), minval=low, maxval=high)


def grid_2d(low, high, n: int):
    """An n x n grid of 2-D latents spanning [low, high] per axis, row-major with the
    first axis across and the second axis decreasing down the rows: (n*n, 2)."""
    xs = jnp.linspace(low[0], high[0], n)
    ys = jnp.linspace(high[1], low[1], n)
    gy, gx = jnp.meshgrid(ys, xs, indexing="ij")
    return jnp.stack([gx.reshape(-1), gy.reshape(-1)], -1)
