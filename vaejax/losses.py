"""Per-example loss terms, in nats per image; batch them with jax.vmap.

Each term scores one image (HWC) and returns a scalar. `objective` builds the training
loss of one example from a ModelConfig; `batch_objective` vmaps it and averages.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from vaejax import models
from vaejax.config import ModelConfig

LOG_2PI = math.log(2 * math.pi)


def bernoulli_nll(logits, x):
    """-log p(x | logits) summed over pixels; x may be intensities in [0, 1] (binary cross-entropy).

    -[x log s(l) + (1 - x) log(1 - s(l))] = softplus(l) - x l: one transcendental per pixel, stable.
    """
    return jnp.sum(jax.nn.softplus(logits) - x * logits)


def gaussian_nll(logits, x, sigma):
    """-log N(x; sigmoid(logits), sigma^2 I) summed over pixels."""
    mean = jax.nn.sigmoid(logits)
    return jnp.sum(0.5 * jnp.square((x - mean) / sigma) + jnp.log(sigma) + 0.5 * LOG_2PI)


def squared_error(logits, x):
    """Sum over pixels of (x - sigmoid(logits))^2."""
    return jnp.sum(jnp.square(x - jax.nn.sigmoid(logits)))


def kl_diag_gaussian(mu, logvar):
    """KL(N(mu, diag(exp(logvar))) || N(0, I)), analytic."""
    return -0.5 * jnp.sum(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar))


def log_normal(z, mu, logvar):
    """log N(z; mu, diag(exp(logvar))), summed over dimensions."""
    return -0.5 * jnp.sum(LOG_2PI + logvar + jnp.square(z - mu) * jnp.exp(-logvar))


def reconstruction(cfg: ModelConfig):
    """The per-example reconstruction term (logits, x) -> nats that cfg.likelihood names."""
    if cfg.likelihood == "bernoulli":
        return bernoulli_nll
    if cfg.likelihood == "gaussian":
        return lambda logits, x: gaussian_nll(logits, x, cfg.obs_sigma)
    return squared_error


def objective(cfg: ModelConfig, beta: float = 1.0):
    """loss(params, x, key) -> (loss, terms) for ONE image x.

    AE: loss = reconstruction. VAE: loss = reconstruction + beta * KL, the negative ELBO
    for beta = 1. `target` lets the decoder aim at something other than the input
    (a denoiser or a learned transformation); by default it is x itself.
    """
    nll = reconstruction(cfg)

    def loss(params, x, key, target=None):
        target = x if target is None else target
        logits, aux = models.apply(cfg, params, x, key)
        rec = nll(logits, target)
        if cfg.kind == "ae":
            return rec, {"loss": rec, "recon": rec}
        kl = kl_diag_gaussian(aux["mu"], aux["logvar"])
        total = rec + beta * kl
        return total, {"loss": total, "recon": rec, "kl": kl}

    return loss


def batch_objective(cfg: ModelConfig, beta: float = 1.0):
    """loss(params, x_B, key, target_B=None) -> (mean loss, mean terms): the per-example loss vmapped."""
    per_example = objective(cfg, beta)

    def loss(params, x_B, key, target_B=None):
        keys = jax.random.split(key, x_B.shape[0])
        target_B = x_B if target_B is None else target_B
        _, terms = jax.vmap(per_example, in_axes=(None, 0, 0, 0))(params, x_B, keys, target_B)
        terms = jax.tree_util.tree_map(jnp.mean, terms)
        return terms["loss"], terms

    return loss


def iwae_bound(cfg: ModelConfig, params, x, key, k: int):
    """The importance-weighted bound log (1/k) sum_i p(x, z_i) / q(z_i | x) for ONE image.

    k = 1 is a one-sample estimate of the ELBO; the bound tightens towards log p(x) as k grows.
    """
    nll = reconstruction(cfg)
    mu, logvar = models.encode(cfg, params, x)
    # One draw of shape (k, D) from `key`: for k = 1 the same z that models.apply draws with this key.
    z_K = models.reparameterize(key, jnp.broadcast_to(mu, (k,) + mu.shape), logvar)
    logits_K = models.decode(cfg, params, z_K)
    log_px_K = -jax.vmap(nll, in_axes=(0, None))(logits_K, x)
    log_pz_K = jax.vmap(log_normal, in_axes=(0, None, None))(z_K, 0.0, 0.0)
    log_qz_K = jax.vmap(log_normal, in_axes=(0, None, None))(z_K, mu, logvar)
    return jax.nn.logsumexp(log_px_K + log_pz_K - log_qz_K) - math.log(k)
