"""Statistics over the units a claim generalises over: seeds for training, images for a population.

Values come in along axis 0, one per unit; trailing axes are averaged into each unit's value first.

    mean_std, stat, summarize   mean and sample std (ddof=1) of per-seed values, as metrics.json entries
    interval                    the interval of a mean: Student's t below BOOTSTRAP_MIN_UNITS units,
                                the percentile bootstrap from there on (a bootstrap of a few values is
                                far too narrow)
    paired_comparison           a against b on the same units: the mean difference, its interval,
                                d_z, and which side of 0 the interval lies on
    two_sample_comparison       a against b on different units (two sets of images): the same, from a
                                bootstrap that resamples each set (Welch's t below BOOTSTRAP_MIN_UNITS)
    last_quarter_change         how far a training curve still moved over its last quarter (a plateau test)

Everything is numpy in float64 and deterministic: a bootstrap takes its seed as an argument.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats

CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_MIN_UNITS = 10


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of a sequence of numbers."""
    v = np.asarray(values, np.float64).reshape(-1)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def stat(name: str, values) -> dict:
    """{name: mean, name_std: std, name_seeds: [values]} for per-seed values."""
    m, s = mean_std(values)
    return {name: m, f"{name}_std": s, f"{name}_seeds": [float(v) for v in np.asarray(values).reshape(-1)]}


def summarize(per_seed: list[dict]) -> dict:
    """A list of {metric: value} (one per seed) -> {metric: mean, metric_std, metric_seeds}."""
    out = {}
    for name in per_seed[0]:
        out.update(stat(name, [d[name] for d in per_seed]))
    return out


def last_quarter_change(curves_BT) -> np.ndarray:
    """(B,) each training curve's relative change over its last quarter (at least one point): near 0 on
    a plateau; NaN for a curve of one point."""
    curves = np.asarray(curves_BT, np.float64)
    back = max(1, curves.shape[1] // 4)
    if curves.shape[1] <= back:
        return np.full(curves.shape[0], np.nan)
    return (curves[:, -1] - curves[:, -1 - back]) / np.abs(curves[:, -1 - back])


def bootstrap_interval(values, level: float = CI_LEVEL, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (units along axis 0, resampled with
    replacement; trailing axes are averaged into each unit's value first)."""
    v = np.asarray(values, np.float64)
    v = v.reshape(len(v), -1).mean(axis=1)
    if len(v) < 2:
        return float(v.mean()), float(v.mean())
    means = v[np.random.default_rng(seed).integers(0, len(v), (resamples, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def interval(values, level: float = CI_LEVEL) -> tuple[float, float]:
    """Interval of the mean over units (axis 0): the percentile bootstrap from BOOTSTRAP_MIN_UNITS
    units on; below that Student's t, since a bootstrap of a few values (3 seeds: 10 distinct
    resampled means) is far too narrow."""
    v = np.asarray(values, np.float64)
    v = v.reshape(len(v), -1).mean(axis=1)
    if len(v) >= BOOTSTRAP_MIN_UNITS or len(v) < 2:
        return bootstrap_interval(v, level)
    half = scipy_stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def paired_comparison(a, b, higher_is_better: bool = True, level: float = CI_LEVEL) -> dict:
    """a against b on the same units (the same seeds, images or image pairs), axis 0.

    diff: mean of a - b; ci: its interval (stats.interval); effect_size: mean / sd of the differences
    (Cohen's d_z; None when every difference is equal); better: +1 when the interval lies wholly on
    the better side of 0, -1 wholly on the worse side, 0 when it contains 0.
    """
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    d = d.reshape(len(d), -1).mean(axis=1)
    lo, hi = interval(d, level)
    sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    sign = 1 if higher_is_better else -1
    better = sign if lo > 0 else -sign if hi < 0 else 0
    return {"diff": float(d.mean()), "ci": [lo, hi], "level": level, "n": int(len(d)),
            "effect_size": float(d.mean() / sd) if sd > 0 else None, "better": better}


def two_sample_comparison(a, b, higher_is_better: bool = True, level: float = CI_LEVEL,
                          resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:
    """a against b on different units (axis 0 of each; trailing axes averaged first), as paired_comparison
    reports it: diff = mean(a) - mean(b); ci: a percentile bootstrap resampling each set on its own (Welch's
    t when a set has fewer than BOOTSTRAP_MIN_UNITS units); effect_size: Cohen's d (pooled sd)."""
    a, b = (np.asarray(v, np.float64) for v in (a, b))
    a, b = a.reshape(len(a), -1).mean(axis=1), b.reshape(len(b), -1).mean(axis=1)
    diff = float(a.mean() - b.mean())
    if min(len(a), len(b)) >= BOOTSTRAP_MIN_UNITS:
        rng = np.random.default_rng(seed)
        diffs = (a[rng.integers(0, len(a), (resamples, len(a)))].mean(1)
                 - b[rng.integers(0, len(b), (resamples, len(b)))].mean(1))
        lo, hi = (float(q) for q in np.percentile(diffs, [50 * (1 - level), 50 * (1 + level)]))
    else:
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
        half = float(scipy_stats.t.ppf(0.5 + level / 2, dof) * np.sqrt(va + vb))
        lo, hi = diff - half, diff + half
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    sign = 1 if higher_is_better else -1
    better = sign if lo > 0 else -sign if hi < 0 else 0
    return {"diff": diff, "ci": [lo, hi], "level": level, "n": [int(len(a)), int(len(b))],
            "effect_size": float(diff / pooled) if pooled > 0 else None, "better": better}
