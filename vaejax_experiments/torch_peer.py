"""PyTorch peers of vaejax's presets, for the benchmark: same architecture, batch, optimizer, loss and data.

- mlp_vae: the pytorch/examples VAE, 784-400-20 with ReLU (its two 400->20 heads as one 400->40 layer,
  as vaejax has them; the same function and parameter count).
- conv_ae / conv_vae: the notes' conv stack, Conv2d(1,16,3,s2,p1)-ReLU-Conv2d(16,32,3,s2,p1)-ReLU-Conv2d(32,64,7)
  and its mirror of ConvTranspose2d layers; conv_vae adds Linear(64, 2*16) heads and Linear(16, 64).

The loss is vaejax's: per image, Bernoulli NLL from logits summed over pixels (+ KL for a VAE),
averaged over the batch; Adam with lr 1e-3. Imports torch, so only the benchmark imports this module.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vaejax import models
from vaejax.config import ModelConfig


class MLPVAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        (hidden,), d, n = cfg.hidden, cfg.latent_dim, cfg.num_pixels
        self.enc, self.heads = nn.Linear(n, hidden), nn.Linear(hidden, 2 * d)
        self.dec1, self.dec2 = nn.Linear(d, hidden), nn.Linear(hidden, n)

    def forward(self, x_BN):
        mu, logvar = self.heads(F.relu(self.enc(x_BN))).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.dec2(F.relu(self.dec1(z))), mu, logvar


def _conv_stack(cfg: ModelConfig):
    """vaejax's conv encoder (cfg.conv_layers) and its mirror, sized as vaejax's conv_plan sizes them."""
    _, ops = models.conv_plan(cfg)
    widths = [cfg.image_shape[-1]] + [c for c, _, _, _ in cfg.conv_layers]
    encoder, decoder = [], []
    for i, (c, k, s, p) in enumerate(cfg.conv_layers):
        encoder += [nn.Conv2d(widths[i], c, k, s, p), nn.ReLU()]
        decoder = [nn.ConvTranspose2d(c, widths[i], k, s, p, int(ops[i])), nn.ReLU()] + decoder
    return nn.Sequential(*encoder[:-1]), nn.Sequential(*decoder[:-1])


class ConvAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.encoder, self.decoder = _conv_stack(cfg)

    def forward(self, x_BCHW):
        return self.decoder(self.encoder(x_BCHW)), None, None


class ConvVAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.encoder, self.decoder = _conv_stack(cfg)
        self.side = models.conv_plan(cfg)[0][-1]
        self.heads = nn.Linear(cfg.code_size, 2 * cfg.latent_dim)
        self.to_code = nn.Linear(cfg.latent_dim, cfg.code_size)

    def forward(self, x_BCHW):
        mu, logvar = self.heads(self.encoder(x_BCHW).flatten(1)).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        code = self.to_code(z).reshape(len(z), self.side, self.side, -1).permute(0, 3, 1, 2)  # vaejax's NHWC order
        return self.decoder(code), mu, logvar


def model(cfg: ModelConfig) -> nn.Module:
    if cfg.arch == "mlp" and cfg.kind == "vae" and len(cfg.hidden) == 1:
        return MLPVAE(cfg)
    if cfg.arch == "conv":
        return (ConvVAE if cfg.kind == "vae" else ConvAE)(cfg)
    raise ValueError(f"no PyTorch peer for {cfg}; peers exist for mlp_vae-like MLP VAEs and the conv presets")


def loss_fn(logits, x, mu, logvar):
    """Mean over the batch of (BCE summed over pixels [+ KL]): vaejax's training loss."""
    loss = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    if mu is not None:
        loss = loss - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return loss / x.shape[0]


def to_torch(cfg: ModelConfig, images_NHWC_float: np.ndarray) -> torch.Tensor:
    """Float images in the peer's layout: (N, 784) for the MLP, NCHW for the conv nets."""
    x = torch.from_numpy(np.ascontiguousarray(images_NHWC_float))
    return x.reshape(len(x), -1) if cfg.arch == "mlp" else x.permute(0, 3, 1, 2).contiguous()


def make_step(net: nn.Module, lr: float = 1e-3, compile: bool = False):
    """step(x_B) -> loss tensor: one Adam update (what a PyTorch user writes); torch.compile'd if asked."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    forward = torch.compile(net) if compile else net

    def step(x_B):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(*_fwd(forward, x_B))
        loss.backward()
        opt.step()
        return loss

    return step


def _fwd(forward, x_B):
    logits, mu, logvar = forward(x_B)
    return logits, x_B, mu, logvar


def epoch_batches(x_N: torch.Tensor, batch: int, generator: torch.Generator):
    """Shuffled fixed-size batches of one epoch (the remainder dropped, as vaejax does)."""
    order = torch.randperm(len(x_N), generator=generator).to(x_N.device)
    steps = len(x_N) // batch
    return [x_N[order[i * batch:(i + 1) * batch]] for i in range(steps)]


@torch.no_grad()
def evaluate(net: nn.Module, x_N: torch.Tensor, chunk: int = 500) -> float:
    """Mean test loss per image (one z sample per image for a VAE), vaejax's evaluate metric."""
    total = 0.0
    for i in range(0, len(x_N), chunk):
        x = x_N[i:i + chunk]
        total += float(loss_fn(*_fwd(net, x))) * len(x)
    return total / len(x_N)


def train_epochs(cfg: ModelConfig, x_train: np.ndarray, epochs: int, batch: int, seed: int = 0):
    """Train a fresh peer for `epochs` epochs; returns (net, wall seconds of the training loop)."""
    torch.manual_seed(seed)
    net = model(cfg)
    step = make_step(net)
    x_N = to_torch(cfg, x_train)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for x_B in epoch_batches(x_N, batch, gen):
            step(x_B)
    return net, time.perf_counter() - t0
