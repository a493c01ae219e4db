"""pretrain_classify's baselines and statistics: early stopping on a validation split, the
label-efficiency read-off, the verdict on hand-made numbers, and a smoke run's new keys."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaejax_experiments import few_labels
from vaejax_experiments import pretrain_classify as pc

COUNTS = [1, 10, 100, 1000]


# ---------------------------------------------------------------------------- early stopping


def test_keep_best_keeps_the_highest_accuracy_and_the_earlier_on_a_tie():
    best = (jnp.array(0.0), jnp.array(0.2))
    for step, acc in enumerate([0.7, 0.5, 0.7, 0.1], start=1):
        best = few_labels.keep_best(best, (jnp.array(float(step)), jnp.array(acc)))
    assert float(best[0]) == 1.0 and float(best[1]) == pytest.approx(0.7)


def _two_class_problem(flip_training: bool):
    """Points on a line; validation says class = (x > 0); training says the same, or the opposite."""
    x = np.linspace(-1, 1, 40, dtype=np.float32)[:, None]
    truth = (x[:, 0] > 0).astype(np.int32)
    train, val = np.arange(0, 40, 2), np.arange(1, 40, 2)
    y = 1 - truth if flip_training else truth
    d = 2  # draws
    draws = few_labels.Draws(np.tile(train, (d, 1)), np.tile(y[train], (d, 1)), np.full(d, 20, np.int32),
                             np.tile(val, (d, 1)), np.tile(truth[val], (d, 1)), np.ones((d, 20), np.float32))
    return jnp.asarray(x), draws


def _fit(draws, table, head):
    params = {"head": head, "mu": jnp.zeros((2, 1)), "sd": jnp.ones((2, 1))}
    fit = few_labels.make_fit(few_labels.frozen_predict, steps=100, batch=8, how="vmap")
    return fit(params, jnp.full(2, 0.1), table, draws, jax.random.split(jax.random.key(0), 2))


def test_early_stopping_falls_back_to_the_start_when_training_hurts_validation():
    table, draws = _two_class_problem(flip_training=True)
    head = [{"w": jnp.tile(jnp.array([[-3.0, 3.0]]), (2, 1, 1)), "b": jnp.zeros((2, 2))}]  # right on validation
    params, val = _fit(draws, table, head)
    val = np.asarray(val)
    assert val.shape == (2, few_labels.CHECKS + 1)
    assert np.all(val[:, 0] == 1.0) and np.all(val[:, -1] < 0.5)  # training on wrong labels ruins it...
    np.testing.assert_array_equal(params["head"][0]["w"], head[0]["w"])  # ...so the start is kept


def test_early_stopping_keeps_the_checkpoint_that_scored_best():
    table, draws = _two_class_problem(flip_training=False)
    head = [{"w": jnp.tile(jnp.array([[3.0, -3.0]]), (2, 1, 1)), "b": jnp.zeros((2, 2))}]  # wrong at the start
    params, val = _fit(draws, table, head)
    val = np.asarray(val)
    assert np.all(val[:, 0] == 0.0) and np.all(val.max(1) == 1.0)
    kept = few_labels.make_accuracy(few_labels.frozen_predict, how="vmap")(
        {"head": params["head"], "mu": jnp.zeros((2, 1)), "sd": jnp.ones((2, 1))}, table, jnp.asarray(draws.val_idx),
        jnp.asarray(draws.val_y))
    np.testing.assert_allclose(kept, val.max(1))


def test_validation_draws_are_disjoint_from_the_labelled_ones_and_balanced():
    labels = np.repeat(np.arange(3), 40).astype(np.int32)
    d = few_labels.labelled_draws(labels, 2, draws=3, pad_to=9, val_pad_to=3 * few_labels.val_per_class(2))
    assert d.idx.shape == (3, 9) and d.val_idx.shape == (3, 3 * few_labels.VAL_MIN)
    for s in range(3):
        train, val = d.idx[s, :d.n[s]], d.val_idx[s][d.val_w[s] > 0]
        assert not set(train) & set(val)
        assert sorted(labels[train].tolist()) == [0, 0, 1, 1, 2, 2]
        assert np.bincount(labels[val]).tolist() == [few_labels.VAL_MIN] * 3
    assert not np.array_equal(d.idx[0, :6], d.idx[1, :6])


# ---------------------------------------------------------------------------- label efficiency


SCRATCH = [0.4, 0.6, 0.8, 0.85]


@pytest.mark.parametrize("target,labels,where", [
    (0.7, math.sqrt(10 * 100), "within"),  # halfway between 10 and 100 in log labels
    (0.6, 10.0, "within"),
    (0.3, 1.0, "below"),  # scratch already does it at 1: at most 1
    (0.9, None, "never"),
])
def test_labels_to_match_reads_the_curve_in_log_labels(target, labels, where):
    got, got_where = few_labels.labels_to_match(COUNTS, SCRATCH, target)
    assert got_where == where
    assert got == (None if labels is None else pytest.approx(labels))


def test_labels_to_match_takes_the_first_crossing():
    assert few_labels.labels_to_match(COUNTS, [0.4, 0.7, 0.6, 0.8], 0.65)[0] == pytest.approx(10 ** (0.25 / 0.3))  # not 100


def test_label_efficiency_ratio_and_never_reached():
    scratch = np.tile(SCRATCH, (5, 1))
    variant = np.tile([0.6, 0.9, 0.9, 0.9], (5, 1))  # at 1/class what scratch gets at 10; then never
    e = few_labels.label_efficiency(COUNTS, variant, scratch)
    assert e[0]["ratio"] == pytest.approx(10.0) and e[0]["ratio_ci"] == pytest.approx([10.0, 10.0])
    assert e[1]["labels"] is None and e[1]["ratio"] is None and e[1]["reached"] == "never"
    assert e[1]["ratio_ci"] == [math.inf, math.inf]


# ---------------------------------------------------------------------------- verdict


def _metrics(curves: dict, counts=COUNTS):
    """Hand-made per-draw accuracies: every method at scratch's level unless given, each draw the
    same offset for every method (an easy or hard labelled subset) plus a little noise of its own."""
    rng = np.random.default_rng(0)
    offset = rng.normal(0, 0.03, 20)
    acc = {}
    for i, (key, _) in enumerate(pc.METHODS):
        draws = 20 if key in pc.HEADS else 6
        curve = np.asarray(curves.get(key, curves["scratch"]))
        acc[key] = [curve[c] + offset[:draws] + rng.normal(0, 0.003, draws) for c in range(len(counts))]
    m = {"labels_per_class": counts, "methods": dict(pc.METHODS)}
    for key, per_count in acc.items():
        m[key] = [float(np.mean(a)) for a in per_count]
    m.update(few_labels.statistics(counts, acc, pc.PRETRAINED, pc.BASELINES))
    return m


SCR = [0.30, 0.50, 0.70, 0.80]
GOOD = [0.60, 0.75, 0.80, 0.82]  # scratch needs ~32x the labels at 1 and at 10 per class
LOWER = [0.25, 0.45, 0.65, 0.75]


def test_verdict_holds_when_a_variant_needs_far_fewer_labels_and_beats_the_baselines():
    v, reason = pc.verdict(_metrics({"scratch": SCR, "ae_lp_ft": GOOD, "pixels": LOWER, "pca": LOWER}))
    assert v == "holds" and reason.startswith("ae_lp_ft")
    assert "PCA codes + linear probe do worse than ae_lp_ft at 1, 10/class" in reason and "d = " in reason
    assert "needs no deep autoencoder" not in reason


def test_verdict_says_so_when_pca_does_as_well():
    v, reason = pc.verdict(_metrics({"scratch": SCR, "ae_lp_ft": GOOD, "pixels": LOWER, "pca": GOOD}))
    assert v == "holds"
    assert "PCA codes + linear probe do as well as ae_lp_ft at 1, 10/class" in reason
    assert "where ae_lp_ft beats scratch (1, 10/class) that gain needs no deep autoencoder" in reason


def test_verdict_does_not_hold_when_nothing_beats_scratch():
    assert pc.verdict(_metrics({"scratch": SCR}))[0] == "does not hold"


def test_verdict_does_not_hold_for_a_clear_but_small_gain():
    """+0.02 everywhere is outside the interval, but scratch needs only ~1.3x the labels to catch up."""
    small = [a + 0.02 for a in SCR]
    m = _metrics({"scratch": SCR, **{key: small for key in pc.PRETRAINED}})
    assert m["comparisons"]["ae_lp_ft"]["scratch"][0]["better"] == 1
    assert pc.verdict(m)[0] == "does not hold"


def test_verdict_is_mixed_when_the_gain_is_at_one_count_only():
    v, reason = pc.verdict(_metrics({"scratch": SCR, "vae_frozen": [0.60, 0.50, 0.70, 0.80]}))
    assert v == "mixed" and "vae_frozen" in reason


# ---------------------------------------------------------------------------- smoke run
