"""Figures as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def tile(images_NHWC, ncol: int | None = None, pad: int = 1) -> np.ndarray:
    """Images in [0, 1] laid out on one (rows*H, ncol*W, C) canvas with a white grid."""
    images = np.clip(np.asarray(images_NHWC, np.float32), 0.0, 1.0)
    n, h, w, c = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    canvas = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
    for i, img in enumerate(images):
        r, col = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[top:top + h, left:left + w] = img
    return canvas


def save_image_grid(images_NHWC, path: str, ncol: int | None = None, title: str | None = None,
                    row_labels: list[str] | None = None) -> str:
    """A grid of images (one per cell, row-major) written to path; returns path."""
    canvas = tile(images_NHWC, ncol)
    height, width = canvas.shape[:2]
    fig, ax = plt.subplots(figsize=(max(2.0, width / 40), max(2.0, height / 40)), dpi=100)
    ax.imshow(canvas[..., 0] if canvas.shape[-1] == 1 else canvas, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    if row_labels:
        cell = (height - 1) / len(row_labels)
        ax.set_yticks([cell * (i + 0.5) for i in range(len(row_labels))], row_labels)
    else:
        ax.set_yticks([])
    if title:
        ax.set_title(title)
    return _save(fig, path)


def save_curves(series: dict[str, list[float]], path: str, xlabel: str = "epoch", ylabel: str = "loss",
                title: str | None = None, log_x: bool = False) -> str:
    """Line plot of named series against 1..len (or given x via (x, y) tuples); returns path."""
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for name, values in series.items():
        x, y = values if isinstance(values, tuple) else (np.arange(1, len(values) + 1), values)
        ax.plot(x, y, marker="o", markersize=3, label=name)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)  # a figure is either complete or absent
    return path
