"""Frozen, hashable configuration: it reaches jitted code by closure, never as a traced value."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

KINDS = ("ae", "vae")
ARCHS = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_optimal", "gaussian_learned", "continuous_bernoulli", "mse")


def notes_conv_stack(widths=(16, 32, 64), image_size: int = 28) -> tuple[tuple[int, int, int, int], ...]:
    """The notes' encoder as (channels, kernel, stride, padding) layers: two 3x3 stride-2 convs with
    padding 1, then a valid conv whose kernel covers the map that is left, giving a 1x1 code."""
    left = conv_sizes(image_size, ((widths[0], 3, 2, 1), (widths[1], 3, 2, 1)))[-1]
    return (widths[0], 3, 2, 1), (widths[1], 3, 2, 1), (widths[2], left, 1, 0)


def conv_sizes(size: int, layers) -> tuple[int, ...]:
    """The spatial size of a square map before and after each conv layer: floor((i + 2p - k) / s) + 1."""
    sizes = [size]
    for _, k, s, p in layers:
        sizes.append((sizes[-1] + 2 * p - k) // s + 1)
    return tuple(sizes)



@dataclass(frozen=True)
class ModelConfig:
    """What the network is.

    kind: "ae" (deterministic code) or "vae" (the encoder gives mu and logvar).
    arch: "mlp" (flatten -> hidden ReLU layers -> latent) or "conv" (conv layers, mirrored by
      transposed convs that land exactly on the encoder's sizes).
    latent_dim: size of z. A conv AE's code is its last conv's map, so latent_dim == code_size.
    conv_layers: the conv encoder as (channels, kernel, stride, padding) per layer, ReLU between;
      default the notes' stack for 28x28 images (notes_conv_stack builds it for other sizes).
    likelihood: how reconstructions are scored from the decoder's logits (objectives.py):
      "bernoulli" (BCE in nats), "gaussian" (N(sigmoid(logits), obs_sigma^2)), "gaussian_optimal"
      (each image's maximum-likelihood sigma), "gaussian_learned" (one learned sigma, a parameter
      of the decoder), "continuous_bernoulli", "mse" (squared error).
    """

    kind: str = "vae"
    arch: str = "mlp"
    image_shape: tuple[int, int, int] = (28, 28, 1)
    hidden: tuple[int, ...] = (400,)
    conv_layers: tuple[tuple[int, int, int, int], ...] = notes_conv_stack()
    latent_dim: int = 20
    likelihood: str = "bernoulli"
    obs_sigma: float = 0.1

    def __post_init__(self):
        _check_types(self)
        _check(len(self.hidden) <= 16 and all(1 <= h <= MAX_WIDTH for h in self.hidden),
               f"hidden must be at most 16 widths in [1, {MAX_WIDTH}], got {self.hidden}")
        _check(len(self.image_shape) == 3 and all(1 <= d <= MAX_SIDE for d in self.image_shape[:2])
               and 1 <= self.image_shape[-1] <= 64,
               f"image_shape must be (H, W, C) with sides in [1, {MAX_SIDE}] and C in [1, 64], got {self.image_shape}")
        _check(len(self.conv_layers) <= 16 and all(len(layer) == 4 and layer[0] <= MAX_WIDTH and max(layer[1:]) <= 64
                                                   for layer in self.conv_layers),
               f"conv_layers must be at most 16 layers of at most {MAX_WIDTH} channels and kernels, strides and "
               f"paddings of at most 64, got {self.conv_layers}")
        _check(self.kind in KINDS, f"kind must be one of {KINDS}, got {self.kind!r}")
        _check(self.arch in ARCHS, f"arch must be one of {ARCHS}, got {self.arch!r}")
        _check(self.likelihood in LIKELIHOODS, f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        _check(1 <= self.latent_dim <= 4096, f"latent_dim must be in [1, 4096], got {self.latent_dim}")
        _check(len(self.image_shape) == 3 and min(self.image_shape) >= 1, f"image_shape must be (H, W, C), got {self.image_shape}")
        _check(self.obs_sigma > 0, f"obs_sigma must be > 0, got {self.obs_sigma}")
        if self.arch == "conv":
            h, w, _ = self.image_shape
            _check(h == w, f"conv models take square images, got {self.image_shape}")
            _check(len(self.conv_layers) >= 1 and all(len(layer) == 4 and min(layer) >= 0 and min(layer[:3]) >= 1
                                                      for layer in self.conv_layers),
                   f"conv_layers must be (channels, kernel, stride, padding) with positive channels, kernel and "
                   f"stride, got {self.conv_layers}")
            sizes = conv_sizes(h, self.conv_layers)
            _check(min(sizes) >= 1, f"conv_layers {self.conv_layers} shrink {h}x{h} images to nothing "
                                    f"(sizes {sizes}); use smaller kernels or strides")
            if self.kind == "ae":
                _check(self.latent_dim == self.code_size,
                       f"a conv AE's code is its last conv's {sizes[-1]}x{sizes[-1]}x{self.conv_layers[-1][0]} map; "
                       f"set latent_dim={self.code_size}")

    @property
    def code_size(self) -> int:
        """Numbers in the conv encoder's output map (its last layer's channels times its area)."""
        side = conv_sizes(self.image_shape[0], self.conv_layers)[-1]
        return side * side * self.conv_layers[-1][0]

    @property
    def num_pixels(self) -> int:
        h, w, c = self.image_shape
        return h * w * c


@dataclass(frozen=True)
class TrainConfig:
    """How the network is trained: Adam, and the objective of objectives.elbo / iwae.

    beta weights the KL term (1.0 gives the ELBO); warmup_steps ramps it up linearly from 0;
    free_bits (nats) is each latent dimension's KL allowance; iwae_k > 0 trains a VAE on the
    IWAE bound with that many samples instead.
    """

    learning_rate: float = 1e-3
    batch_size: int = 128
    epochs: int = 10
    beta: float = 1.0
    binarize: str = "none"  # "none" | "dynamic" (a fresh Bernoulli draw of each batch)
    warmup_steps: int = 0
    free_bits: float = 0.0
    iwae_k: int = 0

    def __post_init__(self):
        _check_types(self)
        _check(0 < self.learning_rate <= 1.0, f"learning_rate must be in (0, 1], got {self.learning_rate}")
        _check(1 <= self.batch_size <= 65536, f"batch_size must be in [1, 65536], got {self.batch_size}")
        _check(0 <= self.epochs <= 100000, f"epochs must be in [0, 100000], got {self.epochs}")
        _check(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        _check(self.binarize in ("none", "dynamic"), f"binarize must be 'none' or 'dynamic', got {self.binarize!r}")
        _check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(self.free_bits >= 0, f"free_bits must be >= 0, got {self.free_bits}")
        _check(0 <= self.iwae_k <= 4096, f"iwae_k must be in [0, 4096], got {self.iwae_k}")


def _check(ok: bool, message: str):
    if not ok:
        raise ValueError(message)


MAX_WIDTH = 65536  # units of a hidden layer, channels of a conv: far above any model here, far below memory
MAX_SIDE = 4096  # pixels on an image's side


def _check_types(cfg) -> None:
    """Every field of the type its annotation names (a JSON run.json or a --set can hold anything)."""
    for field in dataclasses.fields(cfg):
        value, kind = getattr(cfg, field.name), field.type
        ok = {"str": lambda v: isinstance(v, str),
              "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              }.get(kind, lambda v: _ints(v, nested="tuple[tuple" in kind))(value)
        _check(ok, f"{field.name} must be {kind.replace('tuple[int, ...]', 'a tuple of ints')}, got {value!r}")


def _ints(value, nested: bool) -> bool:
    """A tuple of ints, or with nested, a tuple of tuples of ints."""
    if not isinstance(value, tuple):
        return False
    items = [i for v in value for i in (v if isinstance(v, tuple) else [v])] if nested else value
    return (all(isinstance(v, tuple) for v in value) or not nested) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in items)


_MNIST = (28, 28, 1)
_RGB32 = (32, 32, 3)

PRESETS: dict[str, ModelConfig] = {
    # 784-400-20 with ReLU: the architecture of the pytorch/examples VAE.
    "mlp_ae": ModelConfig(kind="ae", arch="mlp", image_shape=_MNIST, hidden=(400,), latent_dim=20),
    "mlp_vae": ModelConfig(kind="vae", arch="mlp", image_shape=_MNIST, hidden=(400,), latent_dim=20),
    # The notes' conv autoencoder: 28 -> 14 -> 7 -> 1x1x64 code, mirrored by transposed convs.
    "conv_ae": ModelConfig(kind="ae", arch="conv", image_shape=_MNIST, latent_dim=64),
    "conv_vae": ModelConfig(kind="vae", arch="conv", image_shape=_MNIST, latent_dim=16),
    # Two-dimensional latents, for scatter plots and decoded manifolds.
    "mlp_ae_2d": ModelConfig(kind="ae", arch="mlp", image_shape=_MNIST, hidden=(512, 256), latent_dim=2),
    "mlp_vae_2d": ModelConfig(kind="vae", arch="mlp", image_shape=_MNIST, hidden=(512, 256), latent_dim=2),
    # 32x32 RGB (cifar10, sample_patches): 32 -> 16 -> 8 -> 1x1 code.
    "mlp_ae_rgb": ModelConfig(kind="ae", arch="mlp", image_shape=_RGB32, hidden=(1024,), latent_dim=64),
    "mlp_vae_rgb": ModelConfig(kind="vae", arch="mlp", image_shape=_RGB32, hidden=(1024,), latent_dim=64),
    "conv_ae_rgb": ModelConfig(kind="ae", arch="conv", image_shape=_RGB32, conv_layers=notes_conv_stack((32, 64, 128), 32),
                               latent_dim=128),
    "conv_vae_rgb": ModelConfig(kind="vae", arch="conv", image_shape=_RGB32, conv_layers=notes_conv_stack((32, 64, 128), 32),
                                latent_dim=64),
}


def preset(name: str) -> ModelConfig:
    """The named preset; ValueError naming the choices otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def replace(cfg, **overrides):
    """A copy of a config with some fields changed (validated again)."""
    return dataclasses.replace(cfg, **overrides)
