"""The experiments' judge: the classifier network, its training, and the cached reference classifier."""

import jax
import numpy as np
import pytest

from vaejax import data
from vaejax_experiments import classifier, judge


def test_patch_conv_classifier_equals_a_convolution():
    """classifier.Classifier's patch-and-matmul conv computes a 3x3 stride-2 pad-1 convolution."""
    params = classifier.classifier_init(jax.random.key(0), (28, 28, 1), 10, channels=(4, 8), width=16)
    x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
    kernel = params["conv0"]["kernel"].reshape(3, 3, 1, 4)  # patches are ordered (i, j, c)
    ref = jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["conv0"]["bias"]
    got = classifier._patches_3x3_s2(x) @ params["conv0"]["kernel"] + params["conv0"]["bias"]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    logits, feats = classifier.classifier_apply(params, x, features=True)
    assert logits.shape == (2, 10) and feats.shape == (2, 16)


def test_classifier_learns_a_separable_toy_problem():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 512).astype(np.int32)
    x = np.zeros((512, 8, 8, 1), np.float32)
    x[y == 1, :4] = 1.0  # class 1: bright top half
    x += rng.uniform(0, 0.3, x.shape).astype(np.float32)
    params = classifier.train_classifier(jax.random.key(0), x, y, 2, epochs=3, batch_size=32, channels=(4, 8), width=8)
    assert classifier.classifier_accuracy(params, x, y) > 0.95


def test_reference_classifier_scores_and_cache(tmp_path):
    ref = judge.fit_reference("mnist_5k", n_train=1000, epochs=8, cache_dir=str(tmp_path))
    assert ref.test_accuracy > 0.5
    test = data.load("mnist_5k", "test")  # digits are not mirrored: one view, so both accuracies are it
    assert ref.settings["single_view_accuracy"] == ref.test_accuracy == classifier.classifier_accuracy(
        ref.params, test.images, test.labels)
    holdout = judge.real_holdout("mnist_5k").images[:300]
    noise = judge.uniform_noise(jax.random.key(0), 300, (28, 28, 1))
    real, nonsense = ref.scores(holdout), ref.scores(noise)
    assert real["plausibility"] > nonsense["plausibility"]
    assert real["frechet"] < nonsense["frechet"]
    assert ref.plausibility(holdout) == pytest.approx(real["plausibility"])
    # A second call reads the cached copy: same parameters, same statistics.
    again = judge.fit_reference("mnist_5k", n_train=1000, epochs=8, cache_dir=str(tmp_path))
    assert again.test_accuracy == pytest.approx(ref.test_accuracy)
    assert again.frechet(holdout) == pytest.approx(real["frechet"], rel=1e-5)
    # The cache file is named by a hash of the settings (the architecture among them): stable across runs.
    assert [p.name for p in tmp_path.glob("classifier-mnist_5k-*.npz")] == ["classifier-mnist_5k-be430497b7.npz"]


def test_reference_halves_are_class_balanced_and_disjoint():
    labels = np.tile(np.arange(10), 7)  # interleaved by class, like mnist_5k's test split
    ref, held = judge.reference_halves(labels)
    assert len(set(ref) & set(held)) == 0 and len(ref) + len(held) == len(labels)
    assert np.bincount(labels[ref]).tolist() == [4] * 10
    assert np.bincount(labels[held]).tolist() == [3] * 10
