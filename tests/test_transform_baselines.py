"""transform's least-squares linear baseline, off-manifold scores and interval-based verdict."""

import jax.numpy as jnp
import numpy as np
import pytest

from vaejax_experiments import linear_map, off_manifold, transform


def _t(x):
    return np.asarray(transform.transform(jnp.asarray(x)))


def test_least_squares_recovers_T_exactly():
    """T is linear: with more images than inputs the fit is T itself, on any input."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(400, 8, 8, 3)).astype(np.float32)  # 192 inputs + bias < 400 images
    W = linear_map.fit_linear(x, _t(x))
    fresh = rng.uniform(size=(100, 8, 8, 3)).astype(np.float32)
    assert np.mean(np.square(linear_map.apply_linear(W, fresh, (4, 4, 1)) - _t(fresh))) < 1e-10
    np.testing.assert_allclose(W, transform.transform_matrix((8, 8, 3)), atol=1e-5)


def test_underdetermined_fit_is_exact_on_its_images_only():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(50, 8, 8, 3)).astype(np.float32)  # fewer images than inputs: minimum-norm solution
    W = linear_map.fit_linear(x, _t(x))
    assert np.mean(np.square(linear_map.apply_linear(W, x, (4, 4, 1)) - _t(x))) < 1e-10
    fresh = rng.uniform(size=(50, 8, 8, 3)).astype(np.float32)
    assert np.mean(np.square(linear_map.apply_linear(W, fresh, (4, 4, 1)) - _t(fresh))) > 1e-4


def test_off_manifold_inputs_are_images_in_unit_range():
    test_x = np.random.default_rng(2).uniform(size=(6, 28, 28, 1)).astype(np.float32)
    for label, x in off_manifold.inputs(test_x).values():
        assert label and x.shape == test_x.shape and x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0


def _set(ae, mean_image=0.1, identity=0.05, linear=1e-12, n=60, seed=0):
    """Per-image MSEs of one set: each predictor's level times the same image-to-image variation."""
    scale = np.random.default_rng(seed).uniform(0.5, 1.5, n)
    levels = {"autoencoder": ae, "linear": linear, "rank_limited": 0.01, "mean_image": mean_image, "identity": identity}
    return {k: (v * scale * np.random.default_rng(seed + i).uniform(0.9, 1.1, n)).tolist()
            for i, (k, v) in enumerate(levels.items())}


def _metrics(test_ae, noise_ae):
    compute = {"batch": 8, "time_ratio": 10.0, "memory_ratio": 5.0, "direct": {"seconds_per_image": 1e-6, "peak_bytes": 1000},
               "autoencoder": {"seconds_per_image": 1e-5, "peak_bytes": 5000}}
    return {"test_per_image": _set(test_ae), "compute": compute,
            "off_manifold": {"inverted": {"label": "inverted", "per_image": _set(0.005, seed=1)},
                             "noise": {"label": "uniform noise", "per_image": _set(noise_ae, mean_image=0.02, seed=2)}}}


@pytest.mark.parametrize("test_ae,noise_ae,expected,phrase", [
    (0.005, 0.001, "holds", "on test images and off the training manifold"),
    (0.005, 0.03, "mixed", "on the data manifold only: its R² is not clearly above 0.9 on uniform noise"),
    (0.03, 0.001, "mixed", "does not clearly explain"),
    (0.08, 0.001, "does not hold", "does not clearly beat"),
])
def test_verdict_outcomes(test_ae, noise_ae, expected, phrase):
    v, reason = transform.verdict(_metrics(test_ae, noise_ae))
    assert v == expected and phrase in reason
    # every verdict states the comparison with the linear map, with its interval and effect size
    assert "clearly worse than it (difference +" in reason and ", d = " in reason


def test_the_rank_limited_map_is_the_best_of_its_rank():
    """Targets of rank 2 plus a little of a third direction: rank 2 recovers the main part, its training error
    falls with the rank, and no other rank-2 map (here a random one) does better."""
    from vaejax_experiments import linear_map

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    A = rng.normal(size=(6, 2)) @ rng.normal(size=(2, 5))
    t = x @ A + 0.01 * np.outer(x[:, 0], rng.normal(size=5)) + 3.0
    err = {k: np.mean(np.square(linear_map.apply_linear(linear_map.fit_rank_limited(x, t, k), x, (5,)) - t))
           for k in (1, 2, 5)}
    assert err[1] > err[2] > err[5] and err[2] < 1e-3 and err[5] < 1e-16
    full = linear_map.fit_linear(x, t)
    np.testing.assert_allclose(linear_map.fit_rank_limited(x, t, 5), full, atol=1e-8)  # full rank: the plain fit
    W2 = linear_map.fit_rank_limited(x, t, 2)
    assert np.linalg.matrix_rank(W2[:-1], tol=1e-8) == 2
    U = np.linalg.qr(rng.normal(size=(5, 2)))[0]
    other = full @ (U @ U.T)
    assert np.mean(np.square(linear_map.apply_linear(other, x, (5,)) - t)) > err[2]


def test_the_verdict_sets_the_autoencoder_against_the_rank_limited_map():
    m = _metrics(0.005, 0.005)
    _, reason = transform.verdict(m)
    assert "Limited to the code's rank, the linear map's test MSE is 0.01" in reason
    assert "the autoencoder is clearly better than it" in reason.split("Limited to the code's rank")[1]


def test_unseen_photo_crops_come_from_other_photos():
    crops = off_manifold.unseen_photo_crops(8, (32, 32, 3), np.random.default_rng(0))
    assert crops.shape == (8, 32, 32, 3) and 0.0 <= crops.min() and crops.max() <= 1.0
    grey = off_manifold.unseen_photo_crops(4, (28, 28, 1), np.random.default_rng(0))
    assert grey.shape == (4, 28, 28, 1)
    from vaejax import data

    train = data.load("sample_patches", "train").images.reshape(-1, 32 * 32 * 3)
    mine = np.rint(crops * 255).astype(np.uint8).reshape(8, -1)
    assert not any((train == row).all(1).any() for row in mine)  # no training crop is one of them
