"""interpolation's path measures: smoothness in feature space and the probability of image 1's class."""

import numpy as np

from vaejax_experiments import interpolation


def test_an_even_straight_path_scores_one_and_a_jump_does_not():
    t = np.linspace(0, 1, 10)[:, None, None]
    straight = t * np.array([[3.0, 4.0]])[None]  # (A, P=1, F=2): even steps on a line
    even = interpolation.path_smoothness(straight)
    assert abs(even["path_stretch"] - 1) < 1e-12
    assert abs(even["max_step_ratio"] - 1) < 1e-12
    jump = np.where(t < 0.5, 0.0, 1.0) * np.array([[3.0, 4.0]])[None]  # stands still, then jumps
    assert abs(interpolation.path_smoothness(jump)["path_stretch"] - 1) < 1e-12  # still straight...
    assert interpolation.path_smoothness(jump)["max_step_ratio"] == 9.0  # ...but all in one of 9 steps
    detour = straight.copy()
    detour[5, 0] += [4.0, -3.0]  # off the line and back
    assert interpolation.path_smoothness(detour)["path_stretch"] > 1.5


def test_class_probability_follows_each_pairs_first_class():
    probs = np.zeros((3, 2, 4))
    probs[:, 0, 1] = [0.0, 0.5, 1.0]  # pair 0: image 1 is class 1
    probs[:, 1, 3] = [0.2, 0.4, 0.6]  # pair 1: image 1 is class 3
    np.testing.assert_allclose(interpolation.class_probability(probs, [1, 3]), [0.1, 0.45, 0.8])
