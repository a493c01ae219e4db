"""Figures as PNG files, drawn on matplotlib Figure objects of their own: no display is needed and
nothing global changes (pyplot's backend and its list of open figures are left as they were, so
importing vaejax in a notebook keeps the notebook's backend)."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

from vaejax import files


def _subplots(*args, **kwargs):
    """(fig, axes) like pyplot.subplots, on a Figure that pyplot does not know of (freed with its last reference)."""
    figure_keys = ("figsize", "dpi")
    fig = Figure(**{k: kwargs.pop(k) for k in figure_keys if k in kwargs})
    return fig, fig.subplots(*args, **kwargs)


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
                    zoom: float = 2.5) -> str:
    """A grid of images (one per cell, row-major) written to path; returns path.

    The figure has the canvas's aspect (no empty bands); zoom is screen pixels per image pixel.
    """
    canvas = tile(images_NHWC, ncol)
    height, width = canvas.shape[:2]
    fig, ax = _subplots(figsize=(width * zoom / 100, height * zoom / 100), dpi=100)
    ax.imshow(canvas[..., 0] if canvas.shape[-1] == 1 else canvas, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    return _save_tight(fig, path)


def save_curves(series: dict[str, list[float]], path: str, xlabel: str = "epoch", ylabel: str = "loss",
                title: str | None = None, log_x: bool = False) -> str:
    """Line plot of named series against 1..len (or given x via (x, y) tuples); returns path."""
    fig, ax = _subplots(figsize=(5, 3.5), dpi=100)
    xs = []
    for name, values in series.items():
        x, y = values if isinstance(values, tuple) else (np.arange(1, len(values) + 1), values)
        ax.plot(x, y, marker="o", markersize=3, label=name)
        xs.append(np.asarray(x))
    _finish_axes(ax, xs, xlabel, ylabel, title, log_x)
    return _save_tight(fig, path)


def _finish_axes(ax, xs: list, xlabel: str, ylabel: str, title: str | None, log_x: bool) -> None:
    """Labels, grid, a legend beside the axes (never over the curves), integer ticks for integer x."""
    if log_x:
        ax.set_xscale("log")
    elif all(np.issubdtype(x.dtype, np.integer) or np.all(x == np.round(x)) for x in xs):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def _save(fig, path: str) -> str:
    fig.tight_layout()
    files.write_atomic(path, lambda f: fig.savefig(f, format="png"))  # a figure is either complete or absent
    return path


def save_image_panels(panels: dict, path: str, ncol: int, row_labels: list[str] | None = None,
                      col_labels: list[str] | None = None, title: str | None = None,
                      vertical: bool = False, zoom: float = 2.6) -> str:
    """Several image grids, each titled (e.g. {"AE": images, "VAE": images}); returns path.

    Each panel's images are laid out row-major with ncol columns. Side by side by default;
    vertical=True stacks the panels (better for wide strips). row_labels name the rows,
    col_labels the columns; zoom is screen pixels per image pixel.
    """
    canvases = {name: tile(images, ncol) for name, images in panels.items()}
    heights = [c.shape[0] for c in canvases.values()]
    widths = [c.shape[1] for c in canvases.values()]
    per_inch = 100 / zoom
    label_w = _text_inches(row_labels or [], fontsize=8) + 0.3  # room for the row labels, so images keep their size
    if vertical:
        fig_w, fig_h = max(widths) / per_inch + label_w, sum(heights) / per_inch + 0.55 * len(canvases) + 0.5
        fig, axes = _subplots(len(canvases), 1, dpi=100, squeeze=False, figsize=(fig_w, fig_h),
                                 gridspec_kw={"height_ratios": heights})
        axes = axes[:, 0]
    else:
        fig_w = sum(widths) / per_inch + label_w + 0.3 * len(canvases)
        fig_h = max(heights) / per_inch + 1.0 + (0.6 if col_labels else 0.0)
        fig, axes = _subplots(1, len(canvases), dpi=100, squeeze=False, figsize=(fig_w, fig_h),
                                 gridspec_kw={"width_ratios": widths})
        axes = axes[0]
    for i, (ax, (name, canvas)) in enumerate(zip(axes, canvases.items())):
        ax.imshow(canvas[..., 0] if canvas.shape[-1] == 1 else canvas, cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        if name:
            ax.set_title(name, fontsize=10)
        rows = math.ceil(len(panels[name]) / ncol)
        cell_h, cell_w = (canvas.shape[0] - 1) / rows, (canvas.shape[1] - 1) / ncol
        if row_labels and (vertical or i == 0):
            ax.set_yticks([cell_h * (r + 0.5) for r in range(len(row_labels))], row_labels, fontsize=8)
        else:
            ax.set_yticks([])
        if col_labels and (not vertical or i == len(canvases) - 1):
            ax.set_xticks([cell_w * (c + 0.5) for c in range(len(col_labels))], col_labels, fontsize=9,
                          rotation=90 if max(len(s) for s in col_labels) > 4 else 0)
        else:
            ax.set_xticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    return _save_tight(fig, path)


def _text_inches(labels: list[str], fontsize: float) -> float:
    """About how wide the longest line of the labels renders, in inches (0.6 em per character)."""
    longest = max((len(line) for label in labels for line in label.split("\n")), default=0)
    return longest * 0.6 * fontsize / 72


def save_latent_scatter(panels: dict, path: str, class_names: list[str] | None = None,
                        title: str | None = None) -> str:
    """2-D latents coloured by class, one panel per model ({"AE": (z_N2, labels_N), ...}); returns path."""
    fig, axes = _subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.4, 4.4), dpi=100, squeeze=False)
    cmap = matplotlib.colormaps["tab10"]
    for ax, (name, (z, labels)) in zip(axes[0], panels.items()):
        z, labels = np.asarray(z), np.asarray(labels)
        for k in np.unique(labels):
            sel = labels == k
            label = class_names[k] if class_names else str(k)
            ax.scatter(z[sel, 0], z[sel, 1], s=3, alpha=0.6, color=cmap(int(k) % 10), label=label, rasterized=True)
        ax.set_title(name)
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), markerscale=4, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return _save_tight(fig, path)


def _save_tight(fig, path: str) -> str:
    """Like _save, but the saved area is grown to hold every label and title (none clipped)."""
    fig.tight_layout()
    files.write_atomic(path, lambda f: fig.savefig(f, format="png", bbox_inches="tight", pad_inches=0.1))
    return path


def save_curves_spread(series: dict, path: str, xlabel: str = "epoch", ylabel: str = "loss",
                       title: str | None = None, log_x: bool = False, log_y: bool = False,
                       styles: dict | None = None, levels: dict | None = None) -> str:
    """Mean curves with a shaded mean ± std band: {name: (x, mean, std)}; returns path.

    styles: optional {name: matplotlib line keyword arguments} (color, linestyle, marker, ...);
    levels: optional {name: y}, reference values drawn as dotted horizontal lines.
    """
    fig, ax = _subplots(figsize=(6, 4), dpi=100)
    xs = []
    for name, (x, mean, std) in series.items():
        x, mean, std = (np.asarray(v, np.float64) for v in (x, mean, std))
        kwargs = {"marker": "o", "markersize": 3, **((styles or {}).get(name, {}))}
        (line,) = ax.plot(x, mean, label=name, **kwargs)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        xs.append(x)
    for i, (name, y) in enumerate((levels or {}).items()):
        ax.axhline(y, label=name, linestyle=":", linewidth=1.2, color=matplotlib.colormaps["Greys"](0.35 + 0.55 * i / max(1, len(levels) - 1)))
    if log_y:
        ax.set_yscale("log")
    _finish_axes(ax, xs, xlabel, ylabel, title, log_x)
    return _save_tight(fig, path)


def save_histograms(panels: dict, path: str, ncol: int, xlabel: str = "score", title: str | None = None,
                    bins: int = 40, clip_percentile: float = 99.0) -> str:
    """A grid of panels, each overlaying density histograms of named groups: {title: {group: values}}.

    Bins are shared within a panel and span the pooled values up to clip_percentile (a long
    tail would squash the rest; values beyond it are counted in the last bin). Returns path.
    """
    n = len(panels)
    nrow = math.ceil(n / ncol)
    fig, axes = _subplots(nrow, ncol, figsize=(2.6 * ncol, 2.1 * nrow + 0.4), dpi=100, squeeze=False)
    for ax, (name, groups) in zip(axes.reshape(-1), panels.items()):
        pooled = np.concatenate([np.asarray(v, np.float64).reshape(-1) for v in groups.values()])
        lo, hi = np.min(pooled), np.percentile(pooled, clip_percentile)
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        for group, values in groups.items():
            v = np.clip(np.asarray(values, np.float64).reshape(-1), edges[0], edges[-1])
            ax.hist(v, bins=edges, density=True, alpha=0.5, label=group, histtype="stepfilled")  # one patch per group
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    for ax in axes.reshape(-1)[n:]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel(xlabel, fontsize=7)
    axes.reshape(-1)[0].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
