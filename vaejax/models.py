"""Encoders, decoders, AE and VAE as pure functions of (params, inputs, key).

The only module that imports flax. Images are NHWC floats in [0, 1] (any leading batch
dims, or none); decoders return per-pixel logits (sigmoid gives intensities).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from vaejax.config import ModelConfig


def reparameterize(key, mu, logvar):
    """z = mu + sigma * eps, eps ~ N(0, I): a sample of N(mu, diag(exp(logvar))) that gradients flow through."""
    eps = jax.random.normal(key, jnp.shape(mu), jnp.result_type(mu))
    return mu + jnp.exp(0.5 * logvar) * eps


def conv_output_size(i: int, s: int, k: int, p: int) -> int:
    """Spatial size after a convolution: floor((i + 2p - k) / s) + 1."""
    return (i + 2 * p - k) // s + 1


def conv_transpose_output_size(i: int, s: int, k: int, p: int, op: int) -> int:
    """Spatial size after a transposed convolution (PyTorch's definition): (i-1)s + (k-1) - 2p + op + 1."""
    return (i - 1) * s + (k - 1) - 2 * p + op + 1


def conv_transpose(features: int, k: int, s: int = 1, p: int = 0, op: int = 0, name=None) -> nn.ConvTranspose:
    """A transposed conv with PyTorch's (stride, padding, output_padding) semantics.

    lax.conv_transpose pads the stride-dilated input; padding (k-1-p, k-1-p+op) per side
    makes its output size equal conv_transpose_output_size(i, s, k, p, op).
    """
    lo, hi = k - 1 - p, k - 1 - p + op
    return nn.ConvTranspose(features, (k, k), strides=(s, s), padding=((lo, hi), (lo, hi)), name=name)


def conv_plan(cfg: ModelConfig):
    """Spatial sizes of the conv stack: two stride-2 3x3 convs, then a valid conv over what is left.

    Returns (sizes, final_kernel, output_paddings): the decoder's output paddings are
    chosen so that each transposed conv lands exactly on the encoder's matching size.
    """
    h = cfg.image_shape[0]
    h1 = conv_output_size(h, 2, 3, 1)
    h2 = conv_output_size(h1, 2, 3, 1)
    ops = tuple(target - conv_transpose_output_size(src, 2, 3, 1, 0) for src, target in ((h2, h1), (h1, h)))
    assert all(op in (0, 1) for op in ops), (h, ops)
    assert conv_transpose_output_size(1, 1, h2, 0, 0) == h2
    return (h, h1, h2), h2, ops


def _flatten_image(x):
    return x.reshape(x.shape[:-3] + (-1,))


class MLPEncoder(nn.Module):
    hidden: Sequence[int]
    out_dim: int

    @nn.compact
    def __call__(self, x):
        h = _flatten_image(x)
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        return nn.Dense(self.out_dim)(h)


class MLPDecoder(nn.Module):
    hidden: Sequence[int]
    image_shape: tuple[int, int, int]

    @nn.compact
    def __call__(self, z):
        h = z
        for width in reversed(self.hidden):
            h = nn.relu(nn.Dense(width)(h))
        logits = nn.Dense(self.image_shape[0] * self.image_shape[1] * self.image_shape[2])(h)
        return logits.reshape(z.shape[:-1] + tuple(self.image_shape))


class ConvEncoder(nn.Module):
    """Conv(c0, 3x3, s2, p1) -> ReLU -> Conv(c1, 3x3, s2, p1) -> ReLU -> Conv(c2, valid) -> 1x1xc2 code."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        c0, c1, c2 = self.cfg.channels
        _, k, _ = conv_plan(self.cfg)
        pad = ((1, 1), (1, 1))
        h = nn.relu(nn.Conv(c0, (3, 3), strides=(2, 2), padding=pad)(x))
        h = nn.relu(nn.Conv(c1, (3, 3), strides=(2, 2), padding=pad)(h))
        h = nn.Conv(c2, (k, k), padding="VALID")(h)
        return h.reshape(h.shape[:-3] + (c2,))


class ConvDecoder(nn.Module):
    """The encoder mirrored: ConvT(c1, k) -> ReLU -> ConvT(c0, 3x3, s2) -> ReLU -> ConvT(C, 3x3, s2)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, code):
        c0, c1, c2 = self.cfg.channels
        _, k, (op1, op2) = conv_plan(self.cfg)
        h = code.reshape(code.shape[:-1] + (1, 1, c2))
        h = nn.relu(conv_transpose(c1, k)(h))
        h = nn.relu(conv_transpose(c0, 3, 2, 1, op1)(h))
        return conv_transpose(self.cfg.image_shape[-1], 3, 2, 1, op2)(h)


def _encoder(cfg: ModelConfig, out_dim: int) -> nn.Module:
    if cfg.arch == "mlp":
        return MLPEncoder(cfg.hidden, out_dim)
    return ConvEncoder(cfg)


def _decoder(cfg: ModelConfig) -> nn.Module:
    if cfg.arch == "mlp":
        return MLPDecoder(cfg.hidden, cfg.image_shape)
    return ConvDecoder(cfg)


class AE(nn.Module):
    """x -> z -> logits. __call__ returns (logits, {"z": z}); the key is unused."""

    cfg: ModelConfig

    def setup(self):
        self.encoder = _encoder(self.cfg, self.cfg.latent_dim)
        self.decoder = _decoder(self.cfg)

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

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
        self.to_code = nn.Dense(self.cfg.channels[-1]) if conv else None
        self.decoder = _decoder(self.cfg)

    def encode(self, x):
        h = self.encoder(x)
        if self.heads is not None:
            h = self.heads(h)
        mu, logvar = jnp.split(h, 2, axis=-1)
        return mu, logvar

    def decode(self, z):
        return self.decoder(self.to_code(z) if self.to_code is not None else z)

    def __call__(self, x, key):
        mu, logvar = self.encode(x)
        z = reparameterize(key, mu, logvar)
        return self.decode(z), {"z": z, "mu": mu, "logvar": logvar}


def module(cfg: ModelConfig) -> nn.Module:
    return (VAE if cfg.kind == "vae" else AE)(cfg)


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


def decode(cfg: ModelConfig, params, z):
    """Logits of the images decoded from latents z."""
    return module(cfg).apply({"params": params}, z, method="decode")


def param_count(params) -> int:
    return sum(p.size for p in jax.tree_util.tree_leaves(params))


# ---------------------------------------------------------------------------- reference classifier


def _patches_3x3_s2(x):
    """3x3 stride-2 patches of x (..., H, W, C) with padding 1 -> (..., ceil(H/2), ceil(W/2), 9C).

    Nine strided slices of the padded input: on CPU a slice-and-matmul convolution trains
    many times faster than XLA's native convolution, and its gradient is a cheap pad.
    """
    h, w = x.shape[-3], x.shape[-2]
    ho, wo = (h + 1) // 2, (w + 1) // 2
    pads = [(0, 0)] * (x.ndim - 3) + [(1, 2 * ho - h), (1, 2 * wo - w), (0, 0)]
    xp = jnp.pad(x, pads)
    cols = [xp[..., i:i + 2 * ho:2, j:j + 2 * wo:2, :] for i in range(3) for j in range(3)]
    return jnp.concatenate(cols, axis=-1)


class Classifier(nn.Module):
    """A small CNN: Conv(c0, 3x3, s2) -> ReLU -> Conv(c1, 3x3, s2) -> ReLU -> Dense(width) -> ReLU -> Dense(K).

    The convolutions are patch extraction followed by a Dense layer (same function, faster on CPU).
    __call__ returns (logits, features), features being the penultimate activations.
    """

    num_classes: int
    channels: tuple[int, int] = (32, 64)
    width: int = 128

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(self.channels[0], name="conv0")(_patches_3x3_s2(x)))
        h = nn.relu(nn.Dense(self.channels[1], name="conv1")(_patches_3x3_s2(h)))
        h = nn.relu(nn.Dense(self.width, name="hidden")(h.reshape(h.shape[:-3] + (-1,))))
        return nn.Dense(self.num_classes, name="head")(h), h


def _classifier_module(params) -> Classifier:
    """The Classifier whose parameters these are (sizes read off the kernels)."""
    channels = (int(params["conv0"]["kernel"].shape[-1]), int(params["conv1"]["kernel"].shape[-1]))
    width = int(params["hidden"]["kernel"].shape[-1])
    return Classifier(int(params["head"]["kernel"].shape[-1]), channels, width)


def classifier_init(key, image_shape, num_classes: int, channels=(32, 64), width: int = 128):
    """Fresh parameters of a Classifier for images of image_shape (H, W, C)."""
    x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    return Classifier(num_classes, tuple(channels), width).init(key, x)["params"]


def classifier_apply(params, x, features: bool = False):
    """Logits for images x (NHWC in [0, 1]); with features=True, (logits, penultimate features)."""
    logits, h = _classifier_module(params).apply({"params": params}, x)
    return (logits, h) if features else logits
