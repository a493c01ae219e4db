"""Encoders, decoders, AE and VAE as Flax modules, and pure functions of (params, inputs, key).

With vaejax.layers, the only modules that import flax. Images are NHWC floats in [0, 1] (any leading batch
dims, or none); decoders return per-pixel logits (sigmoid gives intensities), with a learned
log sigma beside them for the "gaussian_learned" likelihood. The AE and VAE follow the model
interface of objectives.py.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from vaejax.config import ModelConfig, conv_sizes
from vaejax.layers import Conv, conv_transpose, conv_transpose_output_size
from vaejax.objectives import reparameterize


def conv_plan(cfg: ModelConfig):
    """(sizes, output_paddings) of the conv stack: the map's side before and after each encoder
    layer, and for each layer the output padding that makes its transposed conv land exactly on
    the size that layer was given (a stride-s conv maps s sizes to one; the padding picks it back).
    """
    sizes = conv_sizes(cfg.image_shape[0], cfg.conv_layers)
    ops = tuple(sizes[i] - conv_transpose_output_size(sizes[i + 1], s, k, p, 0)
                for i, (_, k, s, p) in enumerate(cfg.conv_layers))
    return sizes, ops


def _dense(features: int, fan_in: int) -> nn.Dense:
    """nn.Dense initialised as torch.nn.Linear is: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    The MLP presets reproduce the PyTorch examples VAE, and its 10-epoch test loss depends on
    this initialization (flax's lecun-normal weights with zero biases end about 0.5 nats higher).
    """
    bound = 1.0 / fan_in**0.5

    def uniform(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nn.Dense(features, kernel_init=uniform, bias_init=uniform)


def _flatten_image(x):
    return x.reshape(x.shape[:-3] + (-1,))


class MLPEncoder(nn.Module):
    """Flatten -> Dense -> ReLU per hidden width -> Dense(out_dim). The last hidden layer's activations
    are sown as intermediates "hidden" (read with mutable=["intermediates"])."""

    hidden: Sequence[int]
    out_dim: int

    @nn.compact
    def __call__(self, x):
        h = _flatten_image(x)
        for width in self.hidden:
            h = nn.relu(_dense(width, h.shape[-1])(h))
        self.sow("intermediates", "hidden", h)
        return _dense(self.out_dim, h.shape[-1])(h)


class MLPDecoder(nn.Module):
    hidden: Sequence[int]
    image_shape: tuple[int, int, int]

    @nn.compact
    def __call__(self, z):
        h = z
        for width in reversed(self.hidden):
            h = nn.relu(_dense(width, h.shape[-1])(h))
        logits = _dense(self.image_shape[0] * self.image_shape[1] * self.image_shape[2], h.shape[-1])(h)
        return logits.reshape(z.shape[:-1] + tuple(self.image_shape))


class ConvEncoder(nn.Module):
    """cfg.conv_layers as Conv -> ReLU -> ... -> Conv; the last map, flattened, is the code.

    The notes' stack: Conv(16, 3x3, s2, p1) -> ReLU -> Conv(32, 3x3, s2, p1) -> ReLU -> Conv(64, 7x7),
    a 1x1x64 code. path: "fast" | "lax" | None (conv_path(): $VAEJAX_CONV_PATH, else by backend);
    the same parameters either way. The map before the last conv, after its ReLU, is sown as
    intermediates "hidden" (read with mutable=["intermediates"]).
    """

    cfg: ModelConfig
    path: str | None = None

    @nn.compact
    def __call__(self, x):
        h = x
        for i, (c, k, s, p) in enumerate(self.cfg.conv_layers):
            if i == len(self.cfg.conv_layers) - 1:
                self.sow("intermediates", "hidden", h)
            h = Conv(c, k, s, ((p, p), (p, p)), self.path)(h)
            h = nn.relu(h) if i < len(self.cfg.conv_layers) - 1 else h
        return h.reshape(h.shape[:-3] + (-1,))


class ConvDecoder(nn.Module):
    """The encoder mirrored by transposed convs, each landing on the size its conv was given.

    The notes' stack: ConvT(32, 7x7) -> ReLU -> ConvT(16, 3x3, s2) -> ReLU -> ConvT(C, 3x3, s2).
    path: as for ConvEncoder.
    """

    cfg: ModelConfig
    path: str | None = None

    @nn.compact
    def __call__(self, code):
        layers = self.cfg.conv_layers
        sizes, ops = conv_plan(self.cfg)
        h = code.reshape(code.shape[:-1] + (sizes[-1], sizes[-1], layers[-1][0]))
        for i in reversed(range(len(layers))):
            _, k, s, p = layers[i]
            out = layers[i - 1][0] if i > 0 else self.cfg.image_shape[-1]
            h = conv_transpose(out, k, s, p, ops[i], path=self.path)(h)
            h = nn.relu(h) if i > 0 else h
        return h


def _encoder(cfg: ModelConfig, out_dim: int) -> nn.Module:
    if cfg.arch == "mlp":
        return MLPEncoder(cfg.hidden, out_dim)
    return ConvEncoder(cfg)


def _decoder(cfg: ModelConfig) -> nn.Module:
    if cfg.arch == "mlp":
        return MLPDecoder(cfg.hidden, cfg.image_shape)
    return ConvDecoder(cfg)


def _log_sigma(module: nn.Module):
    """The learned log sigma of the "gaussian_learned" likelihood (a scalar parameter), else None."""
    if module.cfg.likelihood != "gaussian_learned":
        return None
    return module.param("log_sigma", nn.initializers.zeros_init(), (), jnp.float32)


def _with_log_sigma(log_sigma, logits):
    """(logits, log_sigma broadcast to them) when sigma is learned, else the logits."""
    return logits if log_sigma is None else (logits, jnp.broadcast_to(log_sigma, logits.shape))


class AE(nn.Module):
    """x -> z -> logits. __call__ returns (decoder output, {"z": z}); the key is unused."""

    cfg: ModelConfig

    def setup(self):
        self.encoder = _encoder(self.cfg, self.cfg.latent_dim)
        self.decoder = _decoder(self.cfg)
        self.log_sigma = _log_sigma(self)

    def encode(self, x):
        return self.encoder(x)

    def embed(self, x):
        """The code of x: z itself."""
        return self.encode(x)

    def decode(self, z):
        return _with_log_sigma(self.log_sigma, self.decoder(z))

    def __call__(self, x, key=None):
        z = self.encode(x)
        return self.decode(z), {"z": z}


class VAE(nn.Module):
    """x -> (mu, logvar) -> z = mu + sigma * eps -> logits. __call__ returns (logits, {"z", "mu", "logvar"})."""

    cfg: ModelConfig

    def setup(self):
        conv = self.cfg.arch == "conv"
        self.encoder = _encoder(self.cfg, 2 * self.cfg.latent_dim)
        # The conv encoder ends in its code; heads map it to the latent's mean and log-variance.
        self.heads = nn.Dense(2 * self.cfg.latent_dim) if conv else None
        self.to_code = nn.Dense(self.cfg.code_size) if conv else None
        self.decoder = _decoder(self.cfg)
        self.log_sigma = _log_sigma(self)

    def encode(self, x):
        h = self.encoder(x)
        if self.heads is not None:
            h = self.heads(h)
        mu, logvar = jnp.split(h, 2, axis=-1)
        return mu, logvar

    def embed(self, x):
        """The code of x: the posterior mean mu, the point a deterministic reading of the encoder gives."""
        return self.encode(x)[0]

    def decode(self, z):
        return _with_log_sigma(self.log_sigma, self.decoder(self.to_code(z) if self.to_code is not None else z))

    def __call__(self, x, key):
        mu, logvar = self.encode(x)
        z = reparameterize(key, mu, logvar)
        return self.decode(z), {"z": z, "mu": mu, "logvar": logvar}


def module(cfg: ModelConfig) -> nn.Module:
    return (VAE if cfg.kind == "vae" else AE)(cfg)


@functools.partial(jax.jit, static_argnums=1)  # once per configuration: its random initialisers are slow to compile
def init(key, cfg: ModelConfig):
    """Fresh parameters for cfg."""
    x = jnp.zeros((1,) + tuple(cfg.image_shape), jnp.float32)
    init_key, sample_key = jax.random.split(key)
    return module(cfg).init(init_key, x, sample_key)["params"]


def apply(cfg: ModelConfig, params, x, key=None):
    """(logits, aux) for images x; a VAE needs a key for its sample of z."""
    return module(cfg).apply({"params": params}, x, key)


def encode(cfg: ModelConfig, params, x):
    """The AE's code z, or the VAE's (mu, logvar)."""
    return module(cfg).apply({"params": params}, x, method="encode")


def embed(cfg: ModelConfig, params, x):
    """The code of x: the AE's z, the VAE's posterior mean."""
    return module(cfg).apply({"params": params}, x, method="embed")


def decode(cfg: ModelConfig, params, z):
    """Logits of the images decoded from latents z."""
    return module(cfg).apply({"params": params}, z, method="decode")


def param_count(params) -> int:
    return sum(p.size for p in jax.tree_util.tree_leaves(params))
