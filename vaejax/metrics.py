"""Numbers that judge models and images.

psnr, auroc, frechet_distance: plain array metrics.
train_classifier / classifier_accuracy: the small CNN of models.Classifier, trained from scratch.
ReferenceClassifier / fit_reference: a CNN trained on a dataset's real training split that
judges images without eyes: `plausibility` (mean max-softmax probability) and `frechet`
(Frechet distance between its penultimate features of the images and of real test images,
a Frechet classifier distance: FID for MNIST-sized data). Cached on disk by dataset and settings.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaejax import data, engine, files, models

# ---------------------------------------------------------------------------- array metrics


def psnr(x_hat, x, max_value: float = 1.0):
    """Peak signal-to-noise ratio in dB of each image (the last three axes): 10 log10(max^2 / MSE)."""
    mse = jnp.mean(jnp.square(jnp.asarray(x_hat, jnp.float32) - jnp.asarray(x, jnp.float32)), axis=(-3, -2, -1))
    return 10.0 * jnp.log10(max_value**2 / jnp.maximum(mse, 1e-12))


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
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    s1 = _psd_sqrt(cov1)
    middle = s1 @ cov2 @ s1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum()
    d2 = np.sum(np.square(mu1 - mu2)) + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_sqrt
    return float(max(d2, 0.0))


def precision_recall(real_NF, fake_MF, k: int = 3, real_radii=None) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of fake features against real ones.

    Each set's manifold is the union of balls around its points, each reaching the point's k-th
    nearest neighbour in its own set. Precision: the fraction of fakes inside the real manifold
    (realism); recall: the fraction of reals inside the fake manifold (coverage). real_radii:
    manifold_radii(real_NF, k), for a real set scored against many fake ones.
    """
    real, fake = np.asarray(real_NF, np.float64), np.asarray(fake_MF, np.float64)
    real_radii = manifold_radii(real, k) if real_radii is None else real_radii

    def inside(queries, points, r):
        return float(np.mean(np.any(_distances(queries, points) <= r[None, :], axis=1)))

    return inside(fake, real, real_radii), inside(real, fake, manifold_radii(fake, k))


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
    real, fake = np.asarray(real_NF, np.float64), np.asarray(fake_MF, np.float64)
    f = real.shape[1]
    kernel = lambda a, b: (a @ b.T / f + 1.0) ** 3  # noqa: E731
    k_rr, k_ff, k_rf = kernel(real, real), kernel(fake, fake), kernel(real, fake)
    n, m = len(real), len(fake)
    return float((k_rr.sum() - np.trace(k_rr)) / (n * (n - 1)) + (k_ff.sum() - np.trace(k_ff)) / (m * (m - 1))
                 - 2 * k_rf.mean())


def frechet_distance_features(features_a, features_b) -> float:
    """frechet_distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D)."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


# ---------------------------------------------------------------------------- classifier training


def structureless_image(key, x, smooth_fields: bool = True):
    """An image with no structure, an outlier for outlier exposure: x with its pixels shuffled or,
    with even odds when smooth_fields, a smooth random field (uniform 7x7 noise upsampled
    bilinearly). Smooth fields teach the classifier to distrust smoothness itself, which is why
    they are a choice (common.reference measures both)."""
    k_coin, k_perm, k_field = jax.random.split(key, 3)
    shuffled = jax.random.permutation(k_perm, x.reshape(-1)).reshape(x.shape)
    if not smooth_fields:
        return shuffled
    field = jax.image.resize(jax.random.uniform(k_field, (7, 7, x.shape[-1])), x.shape, "bilinear")
    return jnp.where(jax.random.bernoulli(k_coin), shuffled, field)


def classifier_objective(outlier_exposure: float = 0.0, smooth_fields: bool = True):
    """Cross-entropy of models.Classifier on one (image, label) pair, for the engine.

    outlier_exposure > 0 adds that weight times the cross-entropy between the uniform
    distribution and the softmax on a structureless image (Hendrycks et al. 2019), so that
    max-softmax stays low off the data manifold instead of being arbitrarily confident.
    smooth_fields: whether smooth random fields are among those images (structureless_image).
    """
    def objective(params, example, key, step, hparams):
        x, label = example
        if outlier_exposure <= 0:
            logits = models.classifier_apply(params, x)
            return jax.nn.logsumexp(logits) - logits[label], {}
        # the image and its outlier in one pass: a smaller program than two
        logits, outlier = models.classifier_apply(params, jnp.stack([x, structureless_image(key, x, smooth_fields)]))
        return (jax.nn.logsumexp(logits) - logits[label]
                - outlier_exposure * jnp.mean(jax.nn.log_softmax(outlier))), {}

    return objective


def train_classifier(key, x_N, y_N, num_classes: int, epochs: int, batch_size: int = 128,
                     learning_rate: float = 1e-3, channels=(32, 64), width: int = 64,
                     outlier_exposure: float = 0.0, smooth_fields: bool = True):
    """Parameters of a models.Classifier trained from scratch (Adam) on images x_N (float NHWC) and labels y_N.

    outlier_exposure, smooth_fields: see classifier_objective (0: plain cross-entropy).
    """
    init_key, run_key = jax.random.split(key)
    x_N, y_N = jnp.asarray(x_N, jnp.float32), jnp.asarray(y_N, jnp.int32)
    init = jax.jit(models.classifier_init, static_argnums=(1, 2, 3, 4))  # one compile, not one per layer
    optimizer = optax.adam(learning_rate)
    state = engine.init(init(init_key, tuple(x_N.shape[1:]), num_classes, tuple(channels), width), optimizer)
    objective = classifier_objective(outlier_exposure, smooth_fields)
    epoch = engine.make_epoch(objective, optimizer, min(batch_size, x_N.shape[0]))
    for _ in range(epochs):
        state, _ = epoch(state, (x_N, y_N), run_key)
    return state.params


_apply_features = jax.jit(lambda params, x: models.classifier_apply(params, x, features=True))


def classifier_outputs(params, images, chunk: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(softmax probabilities (N, K), penultimate features (N, F)) for images (float in [0, 1] or uint8)."""
    x = _as_float(images)
    probs, feats = [], []
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk]
        pad = chunk - len(part)  # every call has one shape: one compile
        logits, f = _apply_features(params, jnp.pad(part, [(0, pad)] + [(0, 0)] * 3))
        probs.append(np.asarray(jax.nn.softmax(logits))[: len(part)])
        feats.append(np.asarray(f)[: len(part)])
    return np.concatenate(probs), np.concatenate(feats)


def classifier_accuracy(params, images, labels, chunk: int = 500) -> float:
    """Fraction of images whose most probable class is their label."""
    probs, _ = classifier_outputs(params, images, chunk)
    return float(np.mean(probs.argmax(-1) == np.asarray(labels)))


def _as_float(images) -> np.ndarray:
    x = np.asarray(images)
    return data.to_float(x) if x.dtype == np.uint8 else x.astype(np.float32)


# ---------------------------------------------------------------------------- reference classifier


REAL_FEATURES = 2000  # real reference features kept for the nearest-neighbour and kernel metrics


@dataclasses.dataclass(frozen=True)
class ReferenceClassifier:
    """A CNN trained on real training images, with the feature statistics of real test images.

    The real statistics come from one half of the test images (reference_halves: the even
    ranks within each class); the other half is left out of them, so it can stand for "real
    images" in a sanity row.
    """

    dataset: str
    params: Any
    real_mu: np.ndarray
    real_cov: np.ndarray
    test_accuracy: float
    settings: dict
    real_features: np.ndarray  # of REAL_FEATURES reference images, for precision, recall and KID

    @functools.cached_property
    def real_radii(self) -> np.ndarray:
        """manifold_radii of the real features, computed once for every set scored."""
        return manifold_radii(self.real_features)

    def outputs(self, images) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, penultimate features) of images."""
        return classifier_outputs(self.params, images)

    def predict(self, images) -> np.ndarray:
        return self.outputs(images)[0].argmax(-1)

    def plausibility(self, images) -> float:
        """Mean max-softmax probability: near 1 for confidently recognised images, near 1/K for nonsense."""
        return float(self.outputs(images)[0].max(-1).mean())

    def frechet(self, images) -> float:
        """Squared Frechet distance between the images' features and the real test features (lower is closer)."""
        return self.frechet_of_features(self.outputs(images)[1])

    def frechet_of_features(self, features_NF) -> float:
        """frechet() for penultimate features already computed (outputs(images)[1])."""
        return frechet_distance(*gaussian_stats(features_NF), self.real_mu, self.real_cov)

    def scores(self, images) -> dict[str, float]:
        """{"plausibility", "frechet", "precision", "recall", "kid"} of images, from one pass of the classifier."""
        return self.scores_of_outputs(*self.outputs(images))

    def scores_of_outputs(self, probs, feats) -> dict[str, float]:
        """scores() for outputs already computed (outputs(images))."""
        precision, recall = precision_recall(self.real_features, feats, real_radii=self.real_radii)
        return {"plausibility": float(probs.max(-1).mean()), "frechet": self.frechet_of_features(feats),
                "precision": precision, "recall": recall, "kid": kernel_inception_distance(self.real_features, feats)}


def real_holdout(dataset: str) -> data.Split:
    """The real test images left out of the reference statistics (the odd ranks within each class)."""
    test = data.load(dataset, "test")
    _, held_out = reference_halves(test.labels)
    return data.Split(test.images[held_out], test.labels[held_out])


def reference_halves(labels) -> tuple[np.ndarray, np.ndarray]:
    """(reference, held-out) index arrays splitting a test set in two class-balanced halves:
    within each class, the examples at even and at odd ranks (in the split's order).

    Not test[0::2] / test[1::2]: in a class-interleaved split (mnist_5k) that would put whole
    classes on one side.
    """
    labels = np.asarray(labels)
    rank = np.empty(len(labels), np.int64)
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        rank[idx] = np.arange(len(idx))
    return np.flatnonzero(rank % 2 == 0), np.flatnonzero(rank % 2 == 1)


def fit_reference(dataset: str, n_train: int | None = None, epochs: int = 2, seed: int = 0,
                  cache_dir: str | None = None, batch_size: int = 128,
                  outlier_exposure: float = 0.5, smooth_fields: bool = True) -> ReferenceClassifier:
    """The reference classifier of `dataset`, trained on n_train real training images (None: all).

    With outlier exposure (default 0.5, see classifier_objective) on pixel-shuffled images and,
    with smooth_fields, smooth random fields: without it a ReLU classifier is often more confident
    on uniform noise than on real images, and max-softmax is no plausibility scale. Uniform noise
    itself is not among the training outliers, so the noise anchor stays an independent check.

    Read from `cache_dir` when a copy trained with the same settings is there; else trained
    and written there (atomically). No cache_dir: always trained.
    """
    settings = {"dataset": dataset, "n_train": n_train, "epochs": epochs, "seed": seed,
                "batch_size": batch_size, "outlier_exposure": outlier_exposure, "smooth_fields": smooth_fields,
                "arch": "patchconv32-64-dense64-v4"}
    tag = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    path = os.path.join(cache_dir, f"classifier-{dataset}-{tag}.npz") if cache_dir else None
    if path and os.path.exists(path):
        try:
            return _read_reference(path, dataset, settings)
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: train again
    train = data.load(dataset, "train")
    if n_train is not None and n_train < len(train.labels):
        per_class = max(1, n_train // data.NUM_CLASSES[dataset])
        train = data.subset_per_class(train, per_class, seed)
    params = train_classifier(jax.random.key(seed), data.to_float(train.images), train.labels,
                              data.NUM_CLASSES[dataset], epochs, batch_size, outlier_exposure=outlier_exposure,
                              smooth_fields=smooth_fields)
    test = data.load(dataset, "test")
    probs, feats = classifier_outputs(params, test.images)
    reference = feats[reference_halves(test.labels)[0]]
    real_mu, real_cov = gaussian_stats(reference)
    accuracy = float(np.mean(probs.argmax(-1) == test.labels))
    ref = ReferenceClassifier(dataset, params, real_mu, real_cov, accuracy, settings, reference[:REAL_FEATURES])
    if path:
        _write_reference(path, ref)
    return ref


def _write_reference(path: str, ref: ReferenceClassifier) -> None:
    flat = {"/".join(k): np.asarray(v) for k, v in _flatten(ref.params).items()}
    files.write_atomic(path, lambda f: np.savez(
        f, **{f"params/{k}": v for k, v in flat.items()}, real_mu=ref.real_mu, real_cov=ref.real_cov,
        real_features=ref.real_features,
        test_accuracy=np.float64(ref.test_accuracy), settings=json.dumps(ref.settings, sort_keys=True)))


def _read_reference(path: str, dataset: str, settings: dict) -> ReferenceClassifier:
    with np.load(path, allow_pickle=False) as z:
        if json.loads(str(z["settings"])) != settings:
            raise ValueError("cached classifier has other settings")
        params: dict = {}
        for name in z.files:
            if name.startswith("params/"):
                *parents, leaf = name.split("/")[1:]
                node = params
                for p in parents:
                    node = node.setdefault(p, {})
                node[leaf] = jnp.asarray(z[name])
        return ReferenceClassifier(dataset, params, z["real_mu"], z["real_cov"], float(z["test_accuracy"]), settings,
                                   z["real_features"])


def _flatten(tree, prefix=()) -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(_flatten(v, prefix + (str(k),)))
        else:
            out[prefix + (str(k),)] = v
    return out


def uniform_noise(key, n: int, image_shape) -> np.ndarray:
    """n images of independent uniform [0, 1] pixels: the 'nonsense' end of the scale."""
    return np.asarray(jax.random.uniform(key, (n,) + tuple(image_shape)))

