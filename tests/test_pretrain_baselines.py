"""pretrain_classify's protocol and statistics: fits that read no labels but their draw's, the
label-efficiency read-off, the verdict and its positive control on hand-made numbers, and a smoke
run's keys."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaejax_experiments import few_labels
from vaejax_experiments import pretrain_classify as pc

COUNTS = [1, 10, 100, 1000]


# ---------------------------------------------------------------------------- the protocol: no labels but the draw's


def _two_class_problem():
    """Points on a line, class = (x > 0); each of 2 draws labels the 20 even rows (then 20 rows of padding)."""
    x = np.linspace(-1, 1, 40, dtype=np.float32)[:, None]
    truth = (x[:, 0] > 0).astype(np.int32)
    order = np.concatenate([np.arange(0, 40, 2), np.arange(1, 40, 2)])
    return (jnp.asarray(x), truth), few_labels.Draws(np.tile(order, (2, 1)), np.full(2, 20, np.int32))


def _fit(draws, data, head, steps=100, lr=0.1):
    params = {"head": head, "mu": jnp.zeros((2, 1)), "sd": jnp.ones((2, 1))}
    return few_labels.train_classifiers(few_labels.frozen_predict, params, lr, data, draws, jax.random.key(0), steps,
                                        batch=8, how="vmap")


def test_a_fit_reports_its_accuracy_on_its_own_labels_at_start_and_end_and_keeps_its_last_parameters():
    data, draws = _two_class_problem()
    head = [{"w": jnp.tile(jnp.array([[3.0, -3.0]]), (2, 1, 1)), "b": jnp.zeros((2, 2))}]  # wrong at the start
    params, own = _fit(draws, data, head)
    assert own.shape == (2, 2)
    np.testing.assert_array_equal(own[:, 0], 0.0)  # every one of its 20 labelled points wrong at the start
    np.testing.assert_array_equal(own[:, 1], 1.0)  # and right at the end
    kept = few_labels.make_accuracy(few_labels.frozen_predict, how="vmap")(
        {"head": params["head"], "mu": jnp.zeros((2, 1)), "sd": jnp.ones((2, 1))}, data[0],
        jnp.asarray(draws.idx[:, :20]), jnp.asarray(data[1][draws.idx[:, :20]]))
    np.testing.assert_allclose(kept, own[:, 1])  # the last parameters are what it returns


def test_a_fit_reads_only_its_draws_rows():
    """Rows past a draw's n are padding: labels there, even wrong ones, change nothing it learns."""
    (x, truth), draws = _two_class_problem()
    poisoned = truth.copy()
    poisoned[1::2] = 1 - poisoned[1::2]  # the odd rows, all padding, labelled wrongly
    head = [{"w": jnp.zeros((2, 1, 2)), "b": jnp.zeros((2, 2))}]
    clean, clean_own = _fit(draws, (x, truth), head)
    params, own = _fit(draws, (x, poisoned), head)
    np.testing.assert_array_equal(params["head"][0]["w"], clean["head"][0]["w"])
    np.testing.assert_array_equal(own, clean_own)
    assert np.all(own[:, 1] > 0.9)


def test_draws_are_class_balanced_nested_and_differ_between_draws():
    labels = np.repeat(np.arange(3), 40).astype(np.int32)
    small, large = (few_labels.labelled_draws(labels, n, draws=3, pad_to=15) for n in (2, 5))
    assert small.idx.shape == (3, 15) and small.n.tolist() == [6, 6, 6]
    for s in range(3):
        assert sorted(labels[small.idx[s, :6]].tolist()) == [0, 0, 1, 1, 2, 2]
        assert set(small.idx[s, :6]) <= set(large.idx[s, :15])  # a draw's subset grows by adding images
    assert not np.array_equal(small.idx[0, :6], small.idx[1, :6])


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


def _metrics(curves: dict, counts=COUNTS, control: dict | None = None):
    """Hand-made per-draw accuracies: every method at scratch's level unless given, each draw the
    same offset for every method (an easy or hard labelled subset) plus a little noise of its own.
    control: the positive control's curves (default: the known gain found)."""
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
    m["dataset"] = "fashion_mnist" if control is not False else pc.CONTROL
    if control is not False:
        m["positive_control"] = {"dataset": pc.CONTROL, **_metrics(control or {"scratch": SCR, "vae_frozen": GOOD},
                                                                   counts, control=False)}
    return m


SCR = [0.30, 0.50, 0.70, 0.80]
GOOD = [0.60, 0.75, 0.80, 0.82]  # scratch needs ~32x the labels at 1 and at 10 per class
LOWER = [0.25, 0.45, 0.65, 0.75]


def test_the_verdict_is_undecided_when_the_positive_control_misses_the_known_gain():
    m = _metrics({"scratch": SCR, "ae_lp_ft": GOOD, "pixels": LOWER, "pca": LOWER}, control={"scratch": SCR})
    v, reason = pc.verdict(m)
    assert v == "undecided"
    assert reason.startswith(f"The positive control on {pc.CONTROL} does not find the known gain")
    assert "On fashion_mnist it would read holds" in reason
    m = _metrics({"scratch": SCR}, control={"scratch": SCR, "ae_frozen": [a + 0.02 for a in SCR]})  # clear but small
    assert pc.verdict(m)[0] == "undecided" and "plateau" not in pc.verdict(m)[1]
    m["positive_control"]["train"] = {"ae": {"plateau": {"passed": [True, False]}}, "vae": {"plateau": {"passed": [True]}}}
    assert "its ae encoders did not all pass their plateau test" in pc.verdict(m)[1]


def test_the_verdict_counts_once_the_control_finds_the_gain_whatever_it_reads():
    for curves, expected in (({"scratch": SCR, "ae_lp_ft": GOOD}, "holds"), ({"scratch": SCR}, "does not hold")):
        v, reason = pc.verdict(_metrics(curves))
        assert v == expected and f"The positive control on {pc.CONTROL} finds the known gain" in reason


def test_without_a_control_the_verdict_is_undecided():
    m = _metrics({"scratch": SCR, "ae_lp_ft": GOOD}, control=False)
    assert pc.verdict(m)[0] == "undecided"


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

