"""overfit_ood: the AUROC's DeLong interval against brute force, the training-set sizes of the gap
curve, the interval-based verdict, and a smoke run writing ood_auroc and gap_curve."""


import numpy as np
import pytest
from scipy import stats

from vaejax import metrics
from vaejax_experiments import overfit_ood
from conftest import require_offline


def _scores(seed, shape, shift=0.0):
    """Scores rounded to one decimal, so that there are ties within and across the classes."""
    return np.round(np.random.default_rng(seed).normal(shift, 1.0, shape), 1)


def test_auroc_interval_matches_brute_force():
    pos, neg = _scores(0, (3, 40), shift=0.7), _scores(1, (3, 55))
    got = overfit_ood.auroc_interval(pos, neg)
    # Every positive against every negative: 1 if ranked above, 1/2 if tied.
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    per_seed = psi.mean(axis=(1, 2))
    assert np.allclose(got["auroc_seeds"], per_seed)
    assert np.allclose(got["auroc_seeds"], [metrics.auroc(np.r_[p, n], np.r_[np.ones(40), np.zeros(55)])
                                            for p, n in zip(pos, neg)])
    assert got["auroc"] == pytest.approx(per_seed.mean())
    v10, v01 = psi.mean(axis=2).mean(axis=0), psi.mean(axis=1).mean(axis=0)  # averaged over seeds
    se = np.sqrt(v10.var(ddof=1) / 40 + v01.var(ddof=1) / 55)  # DeLong's; the influences use ddof 0
    assert got["se"] == pytest.approx(se, rel=0.02)
    z = stats.norm.ppf(0.975)
    assert got["ci"] == pytest.approx([per_seed.mean() - z * got["se"], per_seed.mean() + z * got["se"]])


def test_delong_standard_error_agrees_with_a_stratified_bootstrap():
    pos, neg = _scores(2, (1, 60), shift=0.8), _scores(3, (1, 80))
    rng = np.random.default_rng(4)
    labels = np.r_[np.ones(60), np.zeros(80)]
    boot = [metrics.auroc(np.r_[pos[0, rng.integers(0, 60, 60)], neg[0, rng.integers(0, 80, 80)]], labels)
            for _ in range(1000)]
    assert overfit_ood.auroc_interval(pos, neg)["se"] == pytest.approx(np.std(boot), rel=0.15)


def test_auroc_interval_at_the_extremes():
    low, high = np.zeros((2, 10)), np.ones((2, 12))
    assert overfit_ood.auroc_interval(high, low)["ci"] == [1.0, 1.0]
    assert overfit_ood.auroc_interval(low, high)["ci"] == [0.0, 0.0]


def test_curve_sizes_are_geometric_and_reuse_the_small_set():
    assert overfit_ood._curve_sizes(100, 500, 20000, 4) == [100, 500, 3420, 20000]
    assert overfit_ood._curve_sizes(100, 100, 500, 2) == [100, 500]


def _metrics(gap_better=1, larger_better=1, auroc_ci=(0.9, 0.95), excess_better=1):
    """A metrics dict with what verdict reads: the gap curve (small size 500) and two OOD sets per model."""
    def cmp(better):
        return {"diff": 1.0 * better, "ci": [0.5 * better, 1.5 * better] if better else [-0.5, 0.5],
                "effect_size": 2.0 * better or None, "better": better}

    def ood(with_reference):
        d = {"auroc": {"mse": {"auroc": sum(auroc_ci) / 2, "ci": list(auroc_ci)}}}
        return dict(d, excess_mse=cmp(excess_better)) if with_reference else d

    curve = {"sizes": [100, 500, 20000], "small": 500, "memorisation": [30.0, 20.0, 5.0],
             "memorisation_ci": [[25, 35], [15, 25], [2, 8]], "memorisation_effect_size": [5.0, 4.0, 3.0],
             "memorisation_better": [1, gap_better, 1], "small_vs_largest": cmp(larger_better),
             "memorisation_stops_at": None if gap_better == 1 else 500}
    settings = {"full": {"dataset": "f", "ood": {"other_test": ood(True), "noise": ood(False)}},
                "reverse": {"dataset": "m", "ood": {"primary_test": ood(True), "noise": ood(False)}}}
    return {"gap_curve": curve, "settings": settings,
            "set_labels": {"primary_test": "f test", "other_test": "m test", "noise": "noise"}}


@pytest.mark.parametrize("kwargs,expected", [
    ({}, "holds"),
    ({"larger_better": 0}, "mixed"),  # the gap is no larger at 500 images than at the largest size
    ({"gap_better": 0}, "mixed"),  # no significant gap at 500 images
    ({"excess_better": 0}, "mixed"),  # the AUROC and the excess MSE disagree
    ({"auroc_ci": (0.45, 0.55)}, "mixed"),
    ({"larger_better": 0, "auroc_ci": (0.45, 0.55)}, "does not hold"),
    ({"gap_better": -1, "auroc_ci": (0.1, 0.2), "excess_better": -1}, "does not hold"),
])
def test_verdict_follows_the_intervals(kwargs, expected):
    v, reason = overfit_ood.verdict(_metrics(**kwargs))
    assert v == expected
    assert "d = " in reason and "AUROC by MSE" in reason


def test_verdict_says_where_the_gap_stops_being_significant():
    assert "no longer significant from 500 images on" in overfit_ood.verdict(_metrics(gap_better=0))[1]
    assert "significant at every size up to 20000 images" in overfit_ood.verdict(_metrics())[1]


def test_memorisation_compares_held_out_with_training_images_above_their_floors():
    """Two image sets drawn alike, scored by a model that fits its own images better: the excess loss above
    each image's floor differs by what it memorised, however much ink the images have."""
    rng = np.random.default_rng(0)
    floors = {"train": rng.uniform(50, 150, 200), "held_out": rng.uniform(50, 150, 200)}
    pi = {k: {"floor": f, "loss": f + (5.0 if k == "held_out" else 2.0) + rng.normal(0, 0.5, (3, 200))}
          for k, f in floors.items()}
    m = overfit_ood._memorisation(pi)
    assert m["memorisation"] == pytest.approx(3.0, abs=0.2) and m["memorisation_better"] == 1
    assert m["memorisation_ci"][0] > 2.5 and m["memorisation_ci"][1] < 3.5 and len(m["memorisation_seeds"]) == 3


def test_held_out_images_are_in_no_training_subset():
    """The held-out images are the highest ranks of each class in the order every class-balanced subset is
    drawn from; a subset of n images takes the ranks below n / 10."""
    from vaejax import data
    from vaejax_experiments import settings

    require_offline("fashion_mnist")
    sc = settings.get_scale("smoke")
    held, full = overfit_ood._held_out(sc, "fashion_mnist", 200)
    split = data.load("fashion_mnist", "train")
    ranks = data.class_ranks(split.labels, 0)
    is_held = ranks >= np.bincount(split.labels)[split.labels] - 20
    np.testing.assert_array_equal(held, data.to_float(split.images[is_held]))
    assert held.shape == (200, 28, 28, 1) and len(full) == sc.n_train
    assert ranks[is_held].min() >= 5000  # 6000 images a class: no subset below 50,000 images reaches them
    subset = data.subset_per_class(split, 50, 0)
    np.testing.assert_array_equal(np.sort(subset.images.reshape(len(subset.images), -1), axis=0),
                                  np.sort(split.images[ranks < 50].reshape(500, -1), axis=0))
