"""The latent-space experiments' own measures: interpolation paths, centroid holes and neighbourhoods."""

import jax
import numpy as np

from vaejax_experiments import centroids, interpolation


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


def test_hole_ratio_finds_a_centroid_in_a_hole():
    rng = np.random.default_rng(0)
    ring = rng.normal(size=(400, 2))
    ring = 5 * ring / np.linalg.norm(ring, axis=1, keepdims=True)  # class 0: a ring, its centroid in the hole
    blob = rng.normal(10, 0.5, (400, 2))  # class 1: a blob, its centroid among its codes
    codes, labels = np.concatenate([ring, blob]), np.repeat([0, 1], 400)
    ratio = centroids.hole_ratio(codes, labels, 2)
    assert ratio[0] > 10 and ratio[1] < 3


def test_radius_latents_sit_at_the_asked_distance():
    rng = np.random.default_rng(1)
    codes, labels = rng.normal(size=(300, 3)) * [1.0, 2.0, 0.5], np.repeat([0, 1, 2], 100)
    z = centroids.radius_latents(jax.random.key(0), codes, labels, 3, (0.0, 1.0, 2.0), per_radius=7)
    assert z.shape == (3, 3, 7, 3)
    c = np.stack([codes[labels == k].mean(0) for k in range(3)])
    spread = np.array([np.sqrt(np.mean(np.sum((codes[labels == k] - c[k]) ** 2, -1))) for k in range(3)])
    dist = np.linalg.norm(z - c[None, :, None], axis=-1)
    expected = np.array([0.0, 1.0, 2.0])[:, None, None] * spread[None, :, None]
    np.testing.assert_allclose(dist, np.broadcast_to(expected, dist.shape), atol=1e-4)
