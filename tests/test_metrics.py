"""Tests for vaejax.metrics: psnr, ssim, auroc and its intervals, Frechet distance, precision/recall, KID."""

import os
import numpy as np
import pytest

from vaejax import metrics


def test_psnr_known_values():
    x = np.zeros((2, 4, 4, 1), np.float32)
    y = x.copy()
    y[0] += 0.1  # MSE 0.01 -> 20 dB
    y[1] += 0.5  # MSE 0.25 -> 6.02 dB
    np.testing.assert_allclose(metrics.psnr(y, x), [20.0, 10 * np.log10(4)], rtol=1e-5)
    assert float(metrics.psnr(x[0], x[0])) > 100  # identical images: large, finite


def test_auroc_extremes_and_errors():
    assert metrics.auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert metrics.auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert metrics.auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5
    with pytest.raises(ValueError):
        metrics.auroc([1, 2], [1, 1])


def test_frechet_distance_of_known_gaussians():
    d = 3
    mu1, mu2 = np.zeros(d), np.array([1.0, 2.0, 0.0])
    # Commuting diagonal covariances: tr(C1 + C2 - 2 sqrt(C1 C2)) = sum (s1 - s2)^2 in std devs.
    s1, s2 = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 1.0])
    expected = 5.0 + np.sum((s1 - s2) ** 2)
    got = metrics.frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2))
    assert got == pytest.approx(expected, rel=1e-9)
    assert metrics.frechet_distance(mu1, np.diag(s1**2), mu1, np.diag(s1**2)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_non_commuting_matches_scipy_sqrtm():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    c1, c2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * np.real(sqrtm(c1 @ c2)))
    assert metrics.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-7)


def test_frechet_distance_features_from_samples():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20000, 2))
    b = rng.normal(size=(20000, 2)) * 2.0 + np.array([3.0, 0.0])  # distance 9 + 2 * (2 - 1)^2 = 11
    assert metrics.frechet_distance_features(a, b) == pytest.approx(11.0, rel=0.05)


def test_frechet_distance_to_one_reference_scores_many_sets_either_way_round():
    """A judge's case: ReLU features, a dead unit, and sets smaller than the feature width (singular
    covariances). The reference's square root is reused across sets, and the distance is symmetric."""
    rng = np.random.default_rng(2)

    def stats(n, shift):
        f = np.maximum(rng.normal(size=(n, 16)) + shift, 0.0)
        f[:, 3] = 0.0  # a unit that never fires
        return metrics.gaussian_stats(f)

    reference = stats(400, 0.0)
    to_reference = metrics.frechet_distance_to(*reference)
    for n, shift in [(10, 0.5), (12, 0.0), (300, 1.0)]:
        other = stats(n, shift)
        d = to_reference(*other)
        assert d > 0
        # to 1e-7, not 1e-9: the square roots of eigenvalues that are zero but for rounding (~1e-16) are ~1e-8
        assert d == pytest.approx(metrics.frechet_distance(*other, *reference), rel=1e-7)  # the other way round
        (mu1, c1), (mu2, c2) = reference, other  # tr (C1 C2)^(1/2) from the eigenvalues of the product itself
        tr_sqrt = np.sqrt(np.clip(np.linalg.eigvals(c1 @ c2).real, 0.0, None)).sum()
        assert d == pytest.approx(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt, rel=1e-7)
    assert to_reference(*reference) == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------------------- AUROC intervals


def test_auroc_influence_matches_pairs_and_averages_rows():
    rng = np.random.default_rng(0)
    positive = rng.random(60) < 0.3
    rows = np.round(rng.normal(size=(3, 60)) + positive, 1)  # rounded: ties occur
    value, influence = metrics.auroc_influence(rows, positive)
    pairs = [np.mean((r[positive][:, None] > r[~positive][None]) + 0.5 * (r[positive][:, None] == r[~positive][None]))
             for r in rows]
    assert value == pytest.approx(np.mean(pairs), abs=1e-12)
    assert value == pytest.approx(np.mean([metrics.auroc(r, positive) for r in rows]), abs=1e-12)
    assert influence.shape == (60,) and abs(influence.sum()) < 1e-12
    # DeLong's variance (with 1/m, 1/n normalisations): that of each positive's share of pairs won over the
    # m positives, plus that of each negative's share of pairs lost over the n negatives
    won = np.mean([(r[positive][:, None] > r[~positive][None]) + 0.5 * (r[positive][:, None] == r[~positive][None])
                   for r in rows], axis=0)  # (m, n), averaged over the rows
    m, n = won.shape
    delong = won.mean(1).var() / m + won.mean(0).var() / n
    assert m != n and np.sum(np.square(influence)) == pytest.approx(delong, rel=1e-10)


def test_auroc_interval_has_its_coverage():
    rng = np.random.default_rng(1)
    true_auc = 0.7602  # P(X > Y) for X ~ N(1, 1), Y ~ N(0, 1): Phi(1 / sqrt(2))
    covered = []
    for _ in range(300):
        positive = np.arange(200) < 80
        scores = rng.normal(size=200) + positive
        value, influence = metrics.auroc_influence(scores, positive)
        lo, hi = metrics.auroc_interval(value, influence)
        covered.append(lo <= true_auc <= hi)
    assert 0.91 <= np.mean(covered) <= 0.98


def test_auroc_difference_interval_is_paired():
    rng = np.random.default_rng(2)
    positive = np.arange(300) < 100
    base = rng.normal(size=300) + positive
    better = base + 0.4 * positive  # the same examples, a slightly better score
    a, infl_a = metrics.auroc_influence(better, positive)
    b, infl_b = metrics.auroc_influence(base, positive)
    lo, hi = metrics.auroc_interval(a - b, infl_a - infl_b)
    assert 0 < lo < a - b < hi
    single_lo, single_hi = metrics.auroc_interval(a, infl_a)
    assert hi - lo < single_hi - single_lo  # pairing removes the variance the two scores share


def test_ssim_matches_scikit_image_and_is_one_for_identical_images():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    x = rng.random((3, 28, 28, 1)).astype(np.float32)
    y = np.clip(x + 0.2 * rng.normal(size=x.shape), 0, 1).astype(np.float32)
    ours = np.asarray(metrics.ssim(y, x))
    reference = [structural_similarity(x[i, ..., 0], y[i, ..., 0], data_range=1.0, gaussian_weights=True,
                                       sigma=1.5, use_sample_covariance=False) for i in range(3)]
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.asarray(metrics.ssim(x, x)), 1.0, atol=1e-5)
    rgb = rng.random((2, 32, 32, 3)).astype(np.float32)
    assert metrics.ssim(np.clip(rgb + 0.1, 0, 1), rgb).shape == (2,)


# ---------------------------------------------------------------------------- precision, recall, KID


def test_precision_and_recall_separate_realism_from_coverage():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [20.0, 0.0]])
    real = np.concatenate([rng.normal(c, 1.0, (300, 2)) for c in centers])
    same = np.concatenate([rng.normal(c, 1.0, (300, 2)) for c in centers])
    one_mode = rng.normal(centers[0], 1.0, (600, 2))  # realistic, but half the modes dropped
    elsewhere = rng.normal([0.0, 50.0], 1.0, (600, 2))
    p, r = metrics.precision_recall(real, same)
    assert p > 0.9 and r > 0.9
    p, r = metrics.precision_recall(real, one_mode)
    assert p > 0.9 and 0.4 < r < 0.6
    assert metrics.precision_recall(real, elsewhere) == (0.0, 0.0)

    def brute_radii(points):  # each point's distance to its 3rd nearest other point, by explicit norms
        return np.sort(np.linalg.norm(points[:, None] - points[None], axis=-1), axis=1)[:, 3]

    np.testing.assert_allclose(metrics.manifold_radii(real), brute_radii(real), atol=1e-6)
    to_real = metrics.precision_recall_to(real)  # the real radii measured once, for many sets
    for fake in (same, one_mode):
        fake_to_real = np.linalg.norm(fake[:, None] - real[None], axis=-1)
        expected = (np.mean(np.any(fake_to_real <= brute_radii(real)[None], axis=1)),
                    np.mean(np.any(fake_to_real.T <= brute_radii(fake)[None], axis=1)))
        assert to_real(fake) == pytest.approx(expected, abs=1e-12)


def test_kid_is_unbiased_at_small_sizes_and_grows_with_the_difference():
    rng = np.random.default_rng(1)
    same = [metrics.kernel_inception_distance(rng.normal(size=(20, 8)), rng.normal(size=(20, 8))) for _ in range(200)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))  # zero on average, even with 20 per set
    near = metrics.kernel_inception_distance(rng.normal(size=(200, 8)), rng.normal(0.3, 1.0, (200, 8)))
    far = metrics.kernel_inception_distance(rng.normal(size=(200, 8)), rng.normal(1.0, 1.0, (200, 8)))
    assert 0 < near < far


def test_kid_to_one_real_set_is_the_unbiased_mmd_for_each_fake_set():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(30, 5))

    def kernel(a, b):
        return (a @ b / a.shape[0] + 1.0) ** 3

    def within(s):  # the mean kernel over distinct pairs of one set
        return np.mean([kernel(s[i], s[j]) for i in range(len(s)) for j in range(len(s)) if i != j])

    def mmd2(x, y):
        return within(x) + within(y) - 2 * np.mean([kernel(a, b) for a in x for b in y])

    to_real = metrics.kernel_inception_distance_to(real)
    for fake in (rng.normal(size=(7, 5)), rng.normal(0.5, 1.0, (12, 5))):
        assert to_real(fake) == pytest.approx(mmd2(real, fake), rel=1e-10)
        assert metrics.kernel_inception_distance(real, fake) == to_real(fake)


def test_importing_vaejax_leaves_matplotlibs_backend_alone(tmp_path):
    import subprocess
    import sys

    code = ("import matplotlib, vaejax, vaejax.plots as p; "
            f"p.save_curves({{'a': ([0, 1], [1, 2])}}, {str(tmp_path / 'c.png')!r}, xlabel='x', ylabel='y', title='t'); "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "MPLBACKEND": "svg"})
    assert out.stdout.split()[-1] == "svg" and (tmp_path / "c.png").stat().st_size > 1000
