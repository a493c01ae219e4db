"""Experiments pretrain_classify, transform, overfit_ood, denoise, anomaly: their helpers, verdicts
that follow the numbers, and a smoke-scale run of each that writes metrics.json with the keys its verdict and report read."""

import json
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaejax import config, data, metrics, objectives
from conftest import TINY_MLP_AE, structured_images
from vaejax_experiments import (anomaly, costs, denoise, few_labels, harness, overfit_ood, pretrain_classify,
                                transform, training)

# ---------------------------------------------------------------------------- transform: T and its baselines


def test_transform_is_grayscale_rotate_rescale():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 4, 6, 3)).astype(np.float32)
    t = np.asarray(transform.transform(jnp.asarray(x)))
    gray = x @ np.array(transform.LUMA, np.float32)  # (2, 4, 6)
    rotated = np.rot90(gray, k=1, axes=(1, 2))  # counter-clockwise: (2, 6, 4)
    expected = rotated.reshape(2, 3, 2, 2, 2).mean(axis=(2, 4))[..., None]
    assert t.shape == (2, 3, 2, 1)
    np.testing.assert_allclose(t, expected, rtol=1e-6)
    # Counter-clockwise: the top-right pixel of the input ends up top-left.
    one = np.zeros((1, 2, 2, 1), np.float32)
    one[0, 0, 1, 0] = 1.0
    assert np.asarray(transform.rotate_90(jnp.asarray(one)))[0, 0, 0, 0] == 1.0


def test_identity_resized_and_grayscale_of_gray():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1) / 16
    np.testing.assert_array_equal(np.asarray(transform.grayscale(jnp.asarray(x))), x)
    r = np.asarray(transform.identity_resized(jnp.asarray(np.repeat(x, 3, axis=-1))))
    np.testing.assert_allclose(r[0, :, :, 0], x[0, :, :, 0].reshape(2, 2, 2, 2).mean(axis=(1, 3)), rtol=1e-6)


def test_transform_model_maps_input_shape_to_output_shape():
    from vaejax import models

    cfg = transform.model_config((32, 32, 3))
    assert cfg.image_shape == (16, 16, 1) and cfg.likelihood == "mse"
    params = transform.init_params(jax.random.key(0), cfg, (32, 32, 3))
    logits, _ = models.apply(cfg, params, jnp.zeros((5, 32, 32, 3)))
    assert logits.shape == (5, 16, 16, 1)


def test_measure_reports_time_and_memory():
    m = costs.measure(lambda x: x * 2.0, jnp.ones((8, 4, 4, 1)), windows=3, window_seconds=0.001)
    assert m["seconds_per_batch"] > 0 and m["windows"] == 3
    assert m["peak_bytes"] >= m["argument_bytes"] >= 8 * 16 * 4


# ---------------------------------------------------------------------------- denoise


def test_gaussian_blur_and_best_sigma():
    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (4, 16, 1))[..., None]  # smooth ramps
    np.testing.assert_array_equal(denoise.gaussian_blur(clean, 0.0), clean)
    noisy = np.clip(clean + 0.3 * rng.normal(size=clean.shape).astype(np.float32), 0, 1)
    sigma, scores = denoise.best_blur_sigma(clean, noisy)
    assert sigma > 0 and scores[int(np.argmax(scores))] > scores[0]  # blurring helps smooth images
    assert float(jnp.max(denoise.add_noise(jax.random.key(0), jnp.asarray(clean), 5.0))) <= 1.0
    unclipped = denoise.add_noise(jax.random.key(0), jnp.asarray(clean), 5.0, clip=False)
    assert float(jnp.min(unclipped)) < 0.0 < 1.0 < float(jnp.max(unclipped))
    h, by_h = denoise.best_parameter(lambda n, f: denoise.nl_means(n, 0.3, f), clean, noisy, denoise.NL_MEANS_H)
    assert max(by_h) > float(np.mean(denoise.psnr(noisy, clean)))  # non-local means denoises smooth images


# ---------------------------------------------------------------------------- anomaly


def test_training_indices_of_both_protocols():
    labels = np.repeat(np.arange(3), 20)
    idx = anomaly.training_indices(labels, 3, "leave_one_out", jax.random.key(0))
    assert idx.shape == (3, 40)
    for k in range(3):
        assert not np.any(labels[idx[k]] == k)
        np.testing.assert_array_equal(anomaly.anomalous(labels, k, "leave_one_out"), labels == k)
    one = anomaly.training_indices(labels, 3, "one_class", jax.random.key(0))
    assert one.shape == (3, 20)
    for k in range(3):
        assert np.all(labels[one[k]] == k)
        np.testing.assert_array_equal(anomaly.anomalous(labels, k, "one_class"), labels != k)


def test_each_model_trains_on_its_own_rows_only():
    """Images of a fourth class are NaN: a model that drew one would stop training with NonFinite."""
    labels = np.repeat(np.arange(4), 16)
    x = structured_images(0, len(labels))
    x[labels == 3] = np.nan
    idx = anomaly.training_indices(labels, 3, "one_class", jax.random.key(0))
    tc = config.TrainConfig(batch_size=8, learning_rate=1e-2)
    params, losses, taken, plateau = anomaly.train_on_subsets(TINY_MLP_AE, tc, x, idx, steps=4, seeds=2,
                                                              key=jax.random.key(1))
    assert jax.tree_util.tree_leaves(params)[0].shape[0] == 3 * 2 and taken == 4  # 2 epochs of 16 // 8
    assert len(losses) == 2 * 2 and np.all(np.isfinite(losses))  # a mean per piece (of 2 per epoch here)
    assert losses[-1] < losses[0] and plateau is None


def test_subset_models_train_until_each_passes_the_plateau_test_against_its_own_floor():
    labels = np.repeat(np.arange(3), 16)
    x = structured_images(0, len(labels))
    idx = anomaly.training_indices(labels, 3, "one_class", jax.random.key(0))
    tc = config.TrainConfig(batch_size=8, learning_rate=1e-2)
    floors = anomaly.subset_floors(TINY_MLP_AE, x, idx, seeds=2)
    assert len(floors) == 6 and floors[0] == floors[1] and len(set(floors)) == 3  # one per class, repeated per seed
    np.testing.assert_allclose(floors[::2], [training.loss_floor(TINY_MLP_AE, x[i]) for i in idx], rtol=1e-6)
    never = training.Plateau(tol=0.0, max_epochs=3, floor=floors)  # no fall is below 0: runs to max_epochs
    _, _, taken, plateau = anomaly.train_on_subsets(TINY_MLP_AE, tc, x, idx, None, 2, jax.random.key(1), until=never)
    assert taken == 3 * 2 and plateau["epochs"] == 3 and plateau["passed"] == [False] * 6
    assert "each model's floor" in plateau["test"]
    anything = training.Plateau(tol=1e9, max_epochs=30, floor=floors)  # passes as soon as it can be measured
    _, _, taken, plateau = anomaly.train_on_subsets(TINY_MLP_AE, tc, x, idx, None, 2, jax.random.key(1), until=anything)
    assert plateau["epochs"] == anything.window + 1 and all(plateau["passed"]) and taken == (anything.window + 1) * 2


def test_entropy_floor_and_png_bits():
    flat = np.full((1, 4, 4, 1), 0.5, np.float32)
    assert metrics.entropy_floor(flat)[0] == pytest.approx(16 * np.log(2.0))  # H(1/2) = log 2 per pixel
    assert metrics.entropy_floor(np.zeros((1, 4, 4, 1)))[0] == 0.0  # black pixels: a perfect score costs nothing
    grey = np.random.default_rng(1).uniform(0.05, 0.95, (2, 4, 4, 1))  # the Bernoulli loss of a perfect reconstruction
    perfect = [float(objectives.bernoulli_nll(jnp.asarray(np.log(g / (1 - g)), jnp.float32), jnp.asarray(g, jnp.float32)))
               for g in grey]
    np.testing.assert_allclose(metrics.entropy_floor(grey), perfect, rtol=1e-5)
    rng = np.random.default_rng(0)
    noise, blank = rng.random((1, 28, 28, 1)), np.zeros((1, 28, 28, 1))
    bits = anomaly.png_bits(np.concatenate([noise, blank]))
    assert bits[0] > 28 * 28 * 6 and bits[1] < bits[0] / 10  # noise hardly compresses, a blank image does


# ---------------------------------------------------------------------------- pretrain_classify


def test_label_counts_cap_at_the_smallest_class():
    split = data.Split(np.zeros((50, 1, 1, 1), np.uint8), np.repeat(np.arange(2), 25).astype(np.int32))
    assert few_labels.label_counts(split, (1, 10, 100)) == [1, 10, 25]
    assert few_labels.label_counts(split, (1, 10)) == [1, 10]


def test_train_classifiers_learns_a_separable_problem_using_only_the_first_n():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(40, 2)).astype(np.float32)
    y = (table[:, 0] > 0).astype(np.int32)
    y[30:] = 1 - y[30:]  # padding rows with wrong labels must be ignored
    rows = np.tile(np.arange(40), (2, 1))
    truth = np.tile((table[:30, 0] > 0).astype(np.int32), (2, 1))
    draws = few_labels.Draws(rows, np.array([30, 30]))
    predict = lambda p, h: few_labels.head_apply(p, h)  # noqa: E731
    p0 = few_labels.head_init(np.random.default_rng(0), (2, 2), 2)
    p, own = few_labels.train_classifiers(predict, p0, 0.05, (jnp.asarray(table), y), draws, jax.random.key(1),
                                          steps=200, batch=16)
    acc = few_labels.make_accuracy(predict)(p, jnp.asarray(table), rows[:, :30], truth)
    assert np.all(np.asarray(acc) > 0.9)
    np.testing.assert_allclose(own[:, 1], acc)  # its own 30 labels are the truth


def test_code_scaling_keeps_inactive_dimensions_quiet():
    """One spread per encoder: a nearly constant code dimension (an inactive VAE unit) stays near zero."""
    key_active, key_inactive = jax.random.split(jax.random.key(0))
    active = 3.0 * jax.random.normal(key_active, (2, 5000, 3)) + 1.0
    inactive = 1e-3 * jax.random.normal(key_inactive, (2, 5000, 1))
    c = jnp.concatenate([active, inactive], -1)
    mu, sd = few_labels.code_scaling(c)
    assert mu.shape == (2, 4) and sd.shape == (2, 1)
    h = (c - mu[:, None]) / sd[:, None]
    np.testing.assert_allclose(jnp.mean(h ** 2, (1, 2)), 1.0, rtol=1e-3)  # one scale for the whole code
    assert float(jnp.max(jnp.std(h[..., 3], 1))) < 0.01  # not blown up to unit variance
    np.testing.assert_allclose(jnp.std(h[..., :3], 1), np.sqrt(4 / 3), rtol=0.05)  # 3 of 4 dims carry the variance


def _transform_metrics(test_mse, r2):
    # per-image MSEs of 40 images: the autoencoder at test_mse, the mean image at test_mse / (1 - r2), the same
    # on an off-manifold set
    scale = np.random.default_rng(0).uniform(0.5, 1.5, 40)
    per_image = {"autoencoder": test_mse * scale, "mean_image": test_mse / (1 - r2) * scale,
                 "identity": 0.05 * scale, "linear": 1e-12 * scale, "rank_limited": 0.01 * scale}
    return {"test_per_image": per_image, "off_manifold": {"noise": {"label": "noise", "per_image": per_image}},
            "compute": {"batch": 8, "time_ratio": 10.0, "memory_ratio": 5.0,
                        "direct": {"seconds_per_image": 1e-6, "peak_bytes": 1000},
                        "autoencoder": {"seconds_per_image": 1e-5, "peak_bytes": 5000}}}


@pytest.mark.parametrize("test_mse,r2,expected", [(0.005, 0.95, "holds"), (0.03, 0.7, "mixed"), (0.08, 0.2, "does not hold")])
def test_transform_verdict(test_mse, r2, expected):
    assert transform.verdict(_transform_metrics(test_mse, r2))[0] == expected


def _denoise_metrics(ae_minus_noisy, ae_minus_blur, unclipped=None, pca=None, bm3d=None, bm3d_quoted=False):
    """Paired PSNR differences (bottleneck AE minus noisy input / minus blur) at two levels for each noise
    kind (unclipped: as clipped unless given); pca, bm3d: the AE minus those baselines, when given."""
    def paired(diff):
        return {"diff": diff, "ci": [diff - 0.1, diff + 0.1], "effect_size": 1.0, "better": 1 if diff > 0.1 else -1 if diff < -0.1 else 0}
    m = {"noise_levels": [0.1, 0.5], "noise_kinds": ["clipped", "unclipped"], "paired": {}, "psnr": {},
         "bm3d_quoted": bm3d_quoted}
    for kind, (noisy, blur) in {"clipped": (ae_minus_noisy, ae_minus_blur),
                                "unclipped": unclipped or (ae_minus_noisy, ae_minus_blur)}.items():
        m["psnr"][kind] = {"ae_bottleneck": [20.0, 15.0], "denoiser_skip": [25.0, None], "clean_ceiling": [21.0, 21.0]}
        m["paired"][kind] = []
        for i, (a, b) in enumerate(zip(noisy, blur)):
            level = {"noisy": paired(a), "blur": paired(b), "wiener": paired(b + 0.5), "nl_means": paired(b + 1.0)}
            level |= {"pca": paired(pca[i])} if pca else {}
            level |= {"bm3d": paired(bm3d[i])} if bm3d else {}
            m["paired"][kind].append(level)
    return m


@pytest.mark.parametrize("denoised,blur,expected", [
    ([1.0, 5.0], [0.5, 1.0], "holds"),
    ([1.0, 5.0], [-1.0, 1.0], "mixed"),
    ([-1.0, 0.0], [-2.0, -1.0], "does not hold"),
])
def test_denoise_verdict(denoised, blur, expected):
    assert denoise.verdict(_denoise_metrics(denoised, blur))[0] == expected


def test_denoise_verdict_reads_both_noise_kinds_and_every_baseline():
    holds = ([1.0, 5.0], [0.5, 1.0])
    verdict, reason = denoise.verdict(_denoise_metrics(*holds, unclipped=([1.0, 5.0], [-1.0, -1.0])))
    assert verdict == "mixed" and "Clipped noise, **holds**" in reason and "Unclipped noise, **mixed**" in reason
    verdict, reason = denoise.verdict(_denoise_metrics(*holds, pca=[1.0, -2.0]))  # PCA beats the AE at σ 0.5
    assert verdict == "mixed" and "minus pca -2.00" in reason
    assert denoise.verdict(_denoise_metrics(*holds, bm3d=[-3.0, -3.0]))[0] == "holds"  # BM3D on too few images
    assert denoise.verdict(_denoise_metrics(*holds, bm3d=[-3.0, -3.0], bm3d_quoted=True))[0] == "mixed"


def test_wiener_and_pca_projection_denoise_what_they_should():
    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (40, 16, 1))[..., None] * rng.random((40, 1, 1, 1))
    noisy = (clean + 0.2 * rng.normal(size=clean.shape)).astype(np.float32)
    noisy_psnr = float(np.mean(denoise.psnr(noisy, clean)))
    assert float(np.mean(denoise.psnr(denoise.wiener(noisy, 0.2, 5), clean))) > noisy_psnr + 3
    project = denoise.pca_projection(clean, 1)  # the images span one direction: projecting removes the rest
    np.testing.assert_allclose(project(clean), clean, atol=1e-5)
    assert float(np.mean(denoise.psnr(project(noisy), clean))) > noisy_psnr + 10


def _anomaly_metrics(lo_one_class, lo_leave_one_out, mse=None):
    """AUROC intervals per class for both protocols (the same for AE and VAE, and for every co-primary score
    unless mse gives MSE's lower ends per protocol)."""
    m = {"class_names": ["a", "b", "c"], "auroc_ci": {}, "mean_auroc": {}, "paired": {}}
    for protocol, lows in (("one_class", lo_one_class), ("leave_one_out", lo_leave_one_out)):
        m["auroc_ci"][protocol], m["mean_auroc"][protocol] = {}, {}
        for score in anomaly.CO_PRIMARY:
            lo = (mse or {}).get(protocol, lows) if score == "mse" else lows
            cis = [[v, v + 0.1] for v in lo]
            mean = {"auroc": float(np.mean(lo)) + 0.05, "ci": [float(np.mean(lo)) + 0.02, float(np.mean(lo)) + 0.08]}
            m["auroc_ci"][protocol][score] = {"ae": cis, "vae": cis}
            m["mean_auroc"][protocol][score] = {"ae": mean, "vae": mean}
        none = {"diff": 0.0, "ci": [-0.01, 0.01]}
        m["paired"][protocol] = {"floor_correction": {"ae": none, "vae": none}}
    return m


@pytest.mark.parametrize("one_class,leave_one_out,expected", [
    ([0.8, 0.7, 0.6], [0.7, 0.6, 0.55], "holds"),
    ([0.8, 0.7, 0.6], [0.7, 0.3, 0.55], "mixed"),
    ([0.4, 0.41, 0.42], [0.3, 0.35, 0.4], "does not hold"),
])
def test_anomaly_verdict(one_class, leave_one_out, expected):
    assert anomaly.verdict(_anomaly_metrics(one_class, leave_one_out))[0] == expected


def test_anomaly_reads_each_co_primary_score_under_each_protocol():
    low = [0.3, 0.35, 0.4]
    m = _anomaly_metrics(low, low, mse={"one_class": [0.8, 0.7, 0.6], "leave_one_out": [0.8, 0.7, 0.6]})
    verdict, reason = anomaly.verdict(m)
    assert verdict == "mixed"  # the notes' loss misses every class, the squared error finds them all
    assert "one_class: **mixed** (recon does not hold, recon − floor does not hold, MSE holds)" in reason
    assert anomaly.score_verdict(m, "leave_one_out", "mse") == "holds"
    m = _anomaly_metrics(low, low, mse={"one_class": [0.8, 0.7, 0.6], "leave_one_out": low})
    assert anomaly.verdict(m)[0] == "mixed" and "leave_one_out: **does not hold**" in anomaly.verdict(m)[1]


def test_anomaly_intervals_add_the_seeds_variance_to_the_images():
    influence = np.full(100, 0.002)
    delong = anomaly.interval(0.7, influence, [0.7, 0.7, 0.7])
    assert delong == pytest.approx(anomaly.metrics.auroc_interval(0.7, influence))  # seeds agree: images alone
    spread = anomaly.interval(0.7, influence, [0.6, 0.7, 0.8])
    half = (spread[1] - spread[0]) / 2
    assert half == pytest.approx(1.959964 * np.sqrt(100 * 0.002**2 + 0.01 / 3), rel=1e-5)
    a = {"mean": 0.8, "mean_influence": influence, "mean_seeds": np.array([0.75, 0.8, 0.85])}
    b = {"mean": 0.7, "mean_influence": influence, "mean_seeds": np.array([0.65, 0.7, 0.75])}
    paired = anomaly.paired_auroc(a, b)  # the same images and a constant difference per seed: no width
    assert paired["diff"] == pytest.approx(0.1) and paired["ci"] == pytest.approx([0.1, 0.1]) and paired["better"] == 1


def _ood_metrics(small_gap, ratio_ok):
    def auroc(lo, hi):
        return {"mse": {"auroc": (lo + hi) / 2, "ci": [lo, hi]}}
    excess = {"diff": 0.04, "ci": [0.03, 0.05], "effect_size": 2.0, "better": 1}
    diff = small_gap - 5.0
    curve = {"sizes": [500, 20000], "small": 500, "memorisation": [small_gap, 5.0],
             "memorisation_ci": [[small_gap - 1, small_gap + 1], [4.0, 6.0]], "memorisation_effect_size": [3.0, 3.0],
             "memorisation_better": [1, 1], "memorisation_stops_at": None,
             "small_vs_largest": {"diff": diff, "ci": [diff - 1.0, diff + 1.0], "effect_size": 2.0 if diff else None,
                                  "better": 1 if diff > 1.0 else 0}}
    settings = {"full": {"dataset": "f", "ood": {"other_test": {"auroc": auroc(0.9, 0.95), "excess_mse": excess},
                                                 "noise": {"auroc": auroc(0.9, 0.95) if ratio_ok else auroc(0.45, 0.55)}}},
                "reverse": {"dataset": "m", "ood": {"primary_test": {"auroc": auroc(0.9, 0.95), "excess_mse": excess}}}}
    return {"gap_curve": curve, "settings": settings,
            "set_labels": {"primary_test": "f test", "other_test": "m test", "noise": "noise"}}


@pytest.mark.parametrize("gap,ratio_ok,expected", [(30.0, True, "holds"), (30.0, False, "mixed"), (5.0, True, "mixed")])
def test_overfit_ood_verdict(gap, ratio_ok, expected):
    assert overfit_ood.verdict(_ood_metrics(gap, ratio_ok))[0] == expected


# ---------------------------------------------------------------------------- smoke runs


REQUIRED = {
    "pretrain_classify": ("labels_per_class", "scratch", "ae_frozen", "vae_frozen", "ae_finetune", "vae_finetune",
                          "scratch_std", "ae_frozen_std", "vae_frozen_std", "ae_finetune_std", "vae_finetune_std",
                          "ae_frozen_mlp", "vae_frozen_mlp"),
    "transform": ("test_mse", "mean_image_mse", "identity_mse", "compute"),
    "overfit_ood": ("train_loss", "test_loss", "ood_loss"),
    "denoise": ("psnr", "ssim", "psnr_ci", "paired"),
    "anomaly": ("auroc",),
}
MODULES = {"pretrain_classify": pretrain_classify, "transform": transform, "overfit_ood": overfit_ood,
           "denoise": denoise, "anomaly": anomaly}
# Runs of this file's own: an experiment on a dataset other than its default (the others read their
# dataset through the same harness; transform's is the test_experiments CLI test). The runs on the
# default datasets are run_all's (the smoke_results fixture), checked here too.
RUNS = [("overfit_ood", "mnist_5k")]
DEFAULT_RUNS = [("pretrain_classify", "fashion_mnist"), ("transform", "sample_patches"), ("overfit_ood", "fashion_mnist"),
                ("denoise", "fashion_mnist"), ("anomaly", "fashion_mnist")]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("results_b"))


@pytest.mark.parametrize("name,dataset", RUNS)
def test_smoke_run_writes_metrics_and_figures(results_dir, name, dataset):
    out = os.path.join(results_dir, dataset)
    m = MODULES[name].main(scale="smoke", dataset=dataset, seeds=2, out=out)
    _check_run(name, dataset, out, m)


@pytest.mark.parametrize("name,dataset", DEFAULT_RUNS)
def test_run_all_smoke_metrics_and_figures(smoke_results, name, dataset):
    out = smoke_results[0]
    _check_run(name, dataset, out, json.load(open(os.path.join(out, name, "metrics.json"))))


def _check_run(name, dataset, out, m):
    module = MODULES[name]
    on_disk = json.load(open(os.path.join(out, name, "metrics.json")))
    assert on_disk["dataset"] == dataset and on_disk["seeds"] == 2 and on_disk["scale"] == "smoke"
    assert isinstance(on_disk["seconds"], float) and on_disk["device"]
    for key in REQUIRED[name]:
        assert key in on_disk, key
    assert on_disk["figures"]
    for fig in on_disk["figures"]:
        assert os.path.getsize(os.path.join(out, name, fig)) > 1000
    v, reason = module.verdict(on_disk)
    assert v in harness.VERDICTS and reason
    text = module.report(on_disk)
    assert text.count("|") > 8 and re.search(r"±|\[-?\d", text)  # a table, with spreads or intervals
    _check_shapes(name, on_disk)
    assert module.verdict(m)[0] == v


def _check_shapes(name, m):
    if name == "pretrain_classify":
        n = len(m["labels_per_class"])
        for key in ("pixels", "pca", "ae_lp_ft", "vae_lp_ft", "ae_hidden", "vae_hidden"):
            assert len(m[key]) == n and all(0.0 <= a <= 1.0 for a in m[key]), key
            assert all(len(ci) == 2 and ci[0] <= a <= ci[1] for a, ci in zip(m[key], m[f"{key}_ci"]))
        assert m["draws"]["pixels"] > m["draws"]["ae_lp_ft"] >= m["seeds"]
        for key in pretrain_classify.BASELINES + pretrain_classify.PRETRAINED:
            for e in m["label_efficiency"][key]:
                assert e["reached"] in ("below", "within", "never")
                assert e["labels"] is None or (math.isfinite(e["labels"]) and e["ratio"] > 0)
            for c in m["comparisons"][key]["scratch"]:
                assert math.isfinite(c["diff"]) and c["n"] == m["draws"]["scratch"]
        assert "Label efficiency" in pretrain_classify.report(m)
        n = len(m["labels_per_class"])
        for key, _ in pretrain_classify.METHODS:
            assert len(m[key]) == len(m[f"{key}_std"]) == n
            assert all(0.0 <= a <= 1.0 for a in m[key])
            assert all(0.0 <= a <= 1.0 and 0.0 <= b <= 1.0 for a, b in m[f"{key}_own_labels"])
        assert set(m["lp_ft_check"]) == {"ae_lp_ft", "vae_lp_ft"}
        c = m["positive_control"]  # the same protocol on the control's digits, with its own pretrained pair
        assert c["dataset"] == pretrain_classify.CONTROL and c["labels_per_class"] == m["labels_per_class"]
        assert set(c["comparisons"]) == set(m["comparisons"]) and c["train"]["ae"]["n_train"] > 0
        assert "Positive control" in pretrain_classify.report(m) and len(m["figures"]) == 2
    elif name == "transform":
        assert m["test_mse"] > 0 and m["mean_image_mse"] > 0 and m["identity_mse"] > 0
        for path in ("direct", "autoencoder"):
            assert m["compute"][path]["seconds_per_image"] > 0 and m["compute"][path]["peak_bytes"] > 0
        assert math.isfinite(m["linear_mse"]) and len(m["test_per_image"]["linear"]) == m["n_test"]
        assert set(m["off_manifold"]) == {"other_photos", "inverted", "noise", "smooth"}
        for o in m["off_manifold"].values():
            for k in ("autoencoder", "linear", "mean_image", "identity"):
                assert math.isfinite(o[k]) and len(o["per_image"][k]) == o["n"] == m["n_test"]
            assert len(o["autoencoder_seeds"]) == m["seeds"]
        assert "transform_off_manifold.png" in m["figures"] and "transform_code_width.png" in m["figures"]
        widths = [row["width"] for row in m["width_sweep"]]
        assert widths == sorted(widths) and widths[-1] >= 256 and m["model"]["preset"].endswith(f"latent {64}")
        for row in m["width_sweep"]:
            assert set(row) == {"width", "test", *m["off_manifold"]}
            assert all(math.isfinite(v) for r in row.values() if isinstance(r, dict) for v in r.values())
        assert "Code-width sweep" in transform.report(m)
    elif name == "overfit_ood":
        c = m["gap_curve"]
        assert len(c["sizes"]) >= 2 and c["sizes"] == sorted(c["sizes"]) and c["small"] in c["sizes"]
        for key in ("train_loss", "test_loss", "gap", "steps"):
            assert len(c[key]) == len(c["sizes"]) and all(math.isfinite(v) for v in c[key])
        assert all(lo <= g <= hi for g, (lo, hi) in zip(c["gap"], c["gap_ci"]))
        # the curve's ends are the small and full models, not copies trained again
        assert c["sizes"][-1] == m["settings"]["full"]["n_train"] and c["train_loss"][-1] == m["train_loss"]["full"]
        assert c["train_loss"][c["sizes"].index(c["small"])] == m["train_loss"]["small"]
        entries = [a for per_size in c["ood_auroc"].values() for d in per_size for a in d.values()]
        entries += [a for per_set in m["ood_auroc"].values() for d in per_set.values() for a in d.values()]
        assert set(m["ood_auroc"]) == {"small", "full", "reverse"}
        for e in entries:
            assert 0.0 <= e["ci"][0] <= e["auroc"] <= e["ci"][1] <= 1.0 and math.isfinite(e["se"])
            assert len(e["auroc_seeds"]) == m["seeds"]
        assert "gap_curve.png" in m["figures"] and "AUROC" in overfit_ood.report(m)
        assert set(m["train_loss"]) == set(m["test_loss"]) == set(m["ood_loss"]) == {"small", "full", "reverse"}
        assert set(m["ood_loss"]["full"]) == {"other_test", "noise"}
        assert all(math.isfinite(v) for v in m["train_loss"].values())
    elif name == "denoise":
        n = len(m["noise_levels"])
        for kind in ("clipped", "unclipped"):
            methods = ("noisy", "blur", "nl_means", "ae_bottleneck", "clean_ceiling")
            for method in methods + (("denoiser_skip",) if kind == "clipped" else ()):  # below full: clipped only
                assert len(m["psnr"][kind][method]) == len(m["ssim"][kind][method]) == n
                assert all(math.isfinite(v) for v in m["psnr"][kind][method])
                assert all(-1.0 <= v <= 1.0 for v in m["ssim"][kind][method])
        assert all(v is None for v in m["psnr"]["unclipped"]["ae_bottleneck_bce"])  # trained on clipped noise only
    elif name == "anomaly":
        k = len(m["class_names"])
        assert set(m["auroc"]) == {"leave_one_out", "one_class"}
        for protocol, by_score in m["auroc"].items():
            assert set(by_score) == {"recon", "recon_minus_floor", "mse", "complexity", "floor_only"}
            for score, by_kind in by_score.items():
                for kind in ("ae", "vae"):
                    assert len(by_kind[kind]) == k and all(0.0 <= a <= 1.0 for a in by_kind[kind])
                    for a, (lo, hi) in zip(by_kind[kind], m["auroc_ci"][protocol][score][kind]):
                        assert lo < a < hi


def test_unsupported_dataset_is_a_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        harness.cli(overfit_ood.main, ["--scale", "smoke", "--dataset", "sample_patches", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: overfit_ood runs on") and err.count("\n") == 1
