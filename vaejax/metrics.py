"""Generic array metrics of images, scores and features: pure functions, nothing trained here.

psnr, ssim: per-image fidelity of a reconstruction to its target.
auroc, auroc_influence, auroc_interval: ranking quality of scores, with DeLong intervals.
frechet_distance, precision_recall, kernel_inception_distance: distances between two sets of
feature vectors (from any feature extractor), as FID, improved precision/recall and KID compute them;
frechet_distance_to, precision_recall_to, kernel_inception_distance_to: the same from one reference
to many sets, what depends on the reference alone computed once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def psnr(x_hat, x, max_value: float = 1.0):
    """Peak signal-to-noise ratio in dB of each image (the last three axes): 10 log10(max^2 / MSE)."""
    mse = jnp.mean(jnp.square(jnp.asarray(x_hat, jnp.float32) - jnp.asarray(x, jnp.float32)), axis=(-3, -2, -1))
    return 10.0 * jnp.log10(max_value**2 / jnp.maximum(mse, 1e-12))


@functools.partial(jax.jit, static_argnames="radius")  # compiled: op by op it is over ten times slower
def ssim(x_hat, x, max_value: float = 1.0, sigma: float = 1.5, radius: int = 5):
    """Structural similarity of each image (the last three axes; Wang et al. 2004): local means,
    variances and covariance under an 11x11 Gaussian window (sigma 1.5), over the windows that fit
    inside the image, averaged over positions and channels."""
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    g = jnp.exp(-0.5 * jnp.square(offsets / sigma))
    g = g / g.sum()

    def local_mean(img_NHWC):  # separable 'valid' Gaussian filter
        n, h, w, c = img_NHWC.shape
        flat = jnp.moveaxis(img_NHWC, -1, 1).reshape(n * c, h, w)
        rows = jax.vmap(lambda im: jax.vmap(lambda r: jnp.convolve(r, g, mode="valid"))(im))(flat)
        both = jax.vmap(lambda im: jax.vmap(lambda col: jnp.convolve(col, g, mode="valid"), in_axes=1, out_axes=1)(im))(rows)
        return both.reshape(n, c, *both.shape[1:])

    a = jnp.asarray(x_hat, jnp.float32)
    b = jnp.asarray(x, jnp.float32)
    lead = a.shape[:-3]
    a, b = a.reshape((-1,) + a.shape[-3:]), b.reshape((-1,) + b.shape[-3:])
    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a**2
    var_b = local_mean(b * b) - mu_b**2
    cov = local_mean(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean(axis=(1, 2, 3)).reshape(lead)


def auroc(scores, labels) -> float:
    """Area under the ROC curve (scikit-learn's): P(score of a positive > score of a negative), ties 1/2.

    scores: (N,) higher means "more positive"; labels: (N,) truthy for positives.
    """
    from sklearn.metrics import roc_auc_score

    positive = np.asarray(labels).reshape(-1).astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"auroc needs positives and negatives, got {n_pos} and {n_neg}")
    return float(roc_auc_score(positive, np.asarray(scores, np.float64).reshape(-1)))


def entropy_floor(x_N) -> np.ndarray:
    """(N,) sum_i H(x_i) in nats: the Bernoulli loss of a perfect reconstruction of grey levels x_i, the
    least that loss can be on an image (textured images have a high floor, sparse ones a low one)."""
    from scipy.special import entr

    x = np.asarray(x_N, np.float64)
    return (entr(x) + entr(1.0 - x)).reshape(len(x), -1).sum(axis=1)


def auroc_influence(scores, labels) -> tuple[float, np.ndarray]:
    """AUROC and each example's influence on it (DeLong et al. 1988, as centred structural components).

    scores: (N,) or (R, N): R scorings of the same examples (e.g. seeds), whose AUROCs are averaged.
    The influences are what makes intervals cheap and paired: the standard error of any average or
    difference of AUROCs measured on the same examples is sqrt(sum(c**2)) for the same average or
    difference c of their influence vectors (see auroc_interval).
    """
    from scipy.stats import rankdata

    rows = np.atleast_2d(np.asarray(scores, np.float64))
    positive = np.asarray(labels).reshape(-1).astype(bool)
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        raise ValueError(f"auroc needs positives and negatives, got {m} and {n}")
    above_negatives, below_positives = np.zeros(m), np.zeros(n)
    for row in rows:  # midranks: ties count 1/2
        ranks = rankdata(row)
        above_negatives += (ranks[positive] - rankdata(row[positive])) / n
        below_positives += 1.0 - (ranks[~positive] - rankdata(row[~positive])) / m
    above_negatives, below_positives = above_negatives / len(rows), below_positives / len(rows)
    value = float(above_negatives.mean())
    influence = np.empty(m + n)
    influence[positive] = (above_negatives - value) / m
    influence[~positive] = (below_positives - value) / n
    return value, influence


def auroc_interval(value: float, influence, level: float = 0.95) -> list[float]:
    """The normal-approximation interval of an AUROC (or an average or difference of AUROCs on the same
    examples) from its influence vector."""
    from scipy.stats import norm

    half = float(norm.ppf(0.5 + level / 2) * np.sqrt(np.sum(np.square(influence))))
    return [value - half, value + half]


def gaussian_stats(features_ND) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of N feature vectors, in float64."""
    f = np.asarray(features_ND, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"gaussian_stats needs (N >= 2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2).

    |mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2)), the quantity FID reports.
    tr((cov1 cov2)^(1/2)) is the sum of square roots of the eigenvalues of the symmetric
    PSD matrix s1 cov2 s1, s1 = cov1^(1/2): no complex sqrtm needed.
    """
    return frechet_distance_to(mu1, cov1)(mu2, cov2)


def frechet_distance_to(mu1, cov1):
    """frechet_distance from N(mu1, cov1) as a function of (mu2, cov2), for one reference scored
    against many sets: cov1's square root, the one eigendecomposition with vectors, is taken once."""
    mu1, cov1 = np.asarray(mu1, np.float64), np.asarray(cov1, np.float64)
    s1, trace1 = _psd_sqrt(cov1), np.trace(cov1)

    def distance(mu2, cov2) -> float:
        mu2, cov2 = np.asarray(mu2, np.float64), np.asarray(cov2, np.float64)
        middle = s1 @ cov2 @ s1
        tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
        d2 = np.sum(np.square(mu1 - mu2)) + trace1 + np.trace(cov2) - 2.0 * tr_sqrt
        return float(max(d2, 0.0))

    return distance


def precision_recall(real_NF, fake_MF, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of fake features against real ones.

    Each set's manifold is the union of balls around its points, each reaching the point's k-th
    nearest neighbour in its own set. Precision: the fraction of fakes inside the real manifold
    (realism); recall: the fraction of reals inside the fake manifold (coverage).
    """
    return precision_recall_to(real_NF, k)(fake_MF)


def precision_recall_to(real_NF, k: int = 3):
    """precision_recall against real_NF as a function of fake_MF, for one real set scored against many:
    the real manifold's radii are measured once."""
    real = np.asarray(real_NF, np.float64)
    real_radii = manifold_radii(real, k)

    def scores(fake_MF) -> tuple[float, float]:
        fake = np.asarray(fake_MF, np.float64)
        fake_to_real_MN = _distances(fake, real)
        precision = np.mean(np.any(fake_to_real_MN <= real_radii[None, :], axis=1))
        recall = np.mean(np.any(fake_to_real_MN.T <= manifold_radii(fake, k)[None, :], axis=1))
        return float(precision), float(recall)

    return scores


def manifold_radii(points_NF, k: int = 3) -> np.ndarray:
    """(N,) each point's distance to its k-th nearest other point (index 0 of the sorted row is itself)."""
    points = np.asarray(points_NF, np.float64)
    return np.partition(_distances(points, points), k, axis=1)[:, k]


def _distances(a_NF, b_MF) -> np.ndarray:
    d2 = np.sum(a_NF**2, 1)[:, None] - 2 * a_NF @ b_MF.T + np.sum(b_MF**2, 1)[None, :]
    return np.sqrt(np.maximum(d2, 0.0))


def kernel_inception_distance(real_NF, fake_MF) -> float:
    """KID (Binkowski et al. 2018): the unbiased estimate of MMD^2 between the feature sets under the
    kernel (x.y / F + 1)^3; unlike the Frechet distance, its expectation does not depend on the sizes."""
    return kernel_inception_distance_to(real_NF)(fake_MF)


def kernel_inception_distance_to(real_NF):
    """kernel_inception_distance from real_NF as a function of fake_MF, for one real set scored against
    many: the real-real kernel, N^2 of the N^2 + NM + M^2 terms, is summed once."""
    real = np.asarray(real_NF, np.float64)
    f = real.shape[1]

    def kernel(a, b):
        g = a @ b.T / f + 1.0
        return g * g * g  # twice as fast as g ** 3

    def off_diagonal_mean(k):
        return (k.sum() - np.trace(k)) / (len(k) * (len(k) - 1))

    real_term = off_diagonal_mean(kernel(real, real))

    def distance(fake_MF) -> float:
        fake = np.asarray(fake_MF, np.float64)
        return float(real_term + off_diagonal_mean(kernel(fake, fake)) - 2 * kernel(real, fake).mean())

    return distance


def frechet_distance_features(features_a, features_b) -> float:
    """frechet_distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D)."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
