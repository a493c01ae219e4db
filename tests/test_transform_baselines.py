"""transform's least-squares linear baseline, off-manifold scores and interval-based verdict."""

import jax.numpy as jnp
import numpy as np
import pytest

from vaejax_experiments import linear_map, transform


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
    for label, x in transform.off_manifold_inputs(test_x).values():
        assert label and x.shape == test_x.shape and x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0


def _set(ae, mean_image=0.1, identity=0.05, linear=1e-12, n=60, seed=0):
    """Per-image MSEs of one set: each predictor's level times the same image-to-image variation."""
    scale = np.random.default_rng(seed).uniform(0.5, 1.5, n)
    levels = {"autoencoder": ae, "linear": linear, "mean_image": mean_image, "identity": identity}
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
