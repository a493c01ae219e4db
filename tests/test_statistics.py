"""The experiments' statistics: bootstrap intervals and paired comparisons."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from vaejax_experiments import markdown, stats


def _coverage(make_interval, n, trials=2000, seed=0):
    rng = np.random.default_rng(seed)
    return np.mean([lo <= 2.0 <= hi for lo, hi in (make_interval(rng.normal(2.0, 1.0, n), i) for i in range(trials))])


def test_bootstrap_interval_covers_the_true_mean_about_as_often_as_its_level():
    """2,000 trials pin coverage to about +-0.006. The percentile bootstrap runs slightly narrow at n = 60
    (about 0.93 at 95%, 0.87 at 90%): the bounds admit the first and not the second."""
    coverage = _coverage(lambda v, i: stats.bootstrap_interval(v, resamples=500, seed=i), n=60)
    assert 0.905 <= coverage <= 0.975, coverage


def test_few_units_get_students_t_at_its_level():
    """Below BOOTSTRAP_MIN_UNITS: exact for normal data (a bootstrap of 3 values would cover far less)."""
    coverage = _coverage(lambda v, i: stats.interval(v), n=3)
    assert 0.935 <= coverage <= 0.965, coverage


def test_paired_comparison_uses_the_pairing():
    rng = np.random.default_rng(1)
    base = rng.normal(0.0, 5.0, 40)  # large spread between units, small paired difference
    a, b = base + 0.5 + rng.normal(0, 0.1, 40), base
    paired = stats.paired_comparison(a, b)
    assert paired["better"] == 1 and paired["ci"][0] > 0.3 and paired["effect_size"] > 3
    assert stats.paired_comparison(a, b, higher_is_better=False)["better"] == -1
    # unpaired, the same numbers overlap by far: the spread between units hides the difference
    assert stats.bootstrap_interval(a)[0] < stats.bootstrap_interval(b)[1]


def test_paired_comparison_without_a_difference():
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, 30)
    same = stats.paired_comparison(a, a)
    assert same["diff"] == 0 and same["effect_size"] is None and same["better"] == 0
    text = markdown.ci_text({"diff": 0.123, "ci": [0.05, 0.2], "effect_size": 1.27})
    assert text == "+0.123 [0.05, 0.2], d = 1.3"


def test_last_quarter_change_reads_a_plateau_and_a_falling_curve():
    curves = [[10.0, 8.0, 6.0, 5.0, 5.0, 5.0, 5.0, 5.0], [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]]
    np.testing.assert_allclose(stats.last_quarter_change(curves), [0.0, (1.0 - 3.0) / 3.0])  # 8 points: back 2
    np.testing.assert_allclose(stats.last_quarter_change([[4.0, 2.0]]), [-0.5])  # at least one point back
    assert np.isnan(stats.last_quarter_change([[3.0]])[0])  # one point: no change to read


def test_two_sample_comparison_covers_a_difference_of_means():
    """Two independent sets: 95% coverage of the true difference, by the bootstrap (n = 60) and Welch's t (n = 5)."""
    rng = np.random.default_rng(0)
    for n, low, high in ((60, 0.92, 0.975), (5, 0.93, 0.97)):
        covered = []
        for i in range(600 if n == 60 else 2000):
            a, b = rng.normal(1.0, 1.0, n), rng.normal(0.0, 2.0, n + 3)
            lo, hi = stats.two_sample_comparison(a, b, resamples=400, seed=i)["ci"]
            covered.append(lo <= 1.0 <= hi)
        assert low <= np.mean(covered) <= high, (n, np.mean(covered))
    c = stats.two_sample_comparison(np.full(20, 3.0) + rng.normal(0, 0.01, 20), np.zeros(30), higher_is_better=False)
    assert c["better"] == -1 and c["n"] == [20, 30] and c["diff"] == pytest.approx(3.0, abs=0.01)


def test_two_sample_comparison_is_welch_the_bootstrap_of_each_set_and_cohens_d():
    """Coverage cannot tell a slightly wrong interval apart; these can. Few units: Welch's interval as scipy
    computes it. Many, in sets of very different sizes: the bootstrap's width is the normal approximation's,
    each set resampled at its own size. Cohen's d: over the pooled sd, which for two sets of the same
    spread is that spread."""
    rng = np.random.default_rng(5)
    a, b = rng.normal(1.0, 1.0, 5), rng.normal(0.0, 2.0, 8)
    welch = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(stats.CI_LEVEL)
    np.testing.assert_allclose(stats.two_sample_comparison(a, b)["ci"], [welch.low, welch.high], rtol=1e-10)

    a, b = rng.normal(0.0, 1.0, 12), rng.normal(0.0, 1.0, 400)
    lo, hi = stats.two_sample_comparison(a, b, resamples=4000)["ci"]
    normal = 2 * scipy_stats.norm.ppf(0.5 + stats.CI_LEVEL / 2) * np.sqrt(a.var() / len(a) + b.var() / len(b))
    assert hi - lo == pytest.approx(normal, rel=0.1)

    a = rng.normal(0.0, 1.0, 7)
    c = stats.two_sample_comparison(a + 5.0, a)
    assert c["effect_size"] == pytest.approx(5.0 / a.std(ddof=1), rel=1e-12)
