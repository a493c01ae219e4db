"""Learning a transformation (notes 000, Example 1): train an autoencoder on colour images x with the
loss MSE(dec(enc(x)), T(x)), T(x) = rescale_0.5(rotate_90(grayscale(x))), and ask what it learned.

T: grayscale with ITU-R 601 luma weights (what torchvision's Grayscale uses), rotation by 90 degrees
counter-clockwise (torchvision's rotate(90)), and a 2x2 mean pool (an antialiased 50% rescale).
The model is the dataset's MLP autoencoder preset (mlp_ae_rgb for colour) whose decoder outputs
T's shape: its encoder flattens the input image, whatever its shape, so input and output shapes may
differ. Loss: squared error of sigmoid(logits) (likelihood "mse"). MLP at every scale: the conv
presets mirror the input shape, so they cannot emit T's smaller, rotated output.

Predictions of T(x), all scored by MSE per pixel against T(x), per image:
- the autoencoder (every seed; per image, the mean over seeds);
- a least-squares linear map: T is linear (every output pixel is a fixed weighted sum of input
  values), so an affine map flatten(x) -> flatten(T(x)) fitted on the same training images recovers
  T exactly once they span the input space (more images than input values); with fewer (small
  scales) it is the minimum-norm fit, exact on the span of the training images only (linear_map.py). Its
  fitted weights are also compared with T's own matrix;
- the notes' two weak baselines: the mean T(x) of the training set, and the input itself, resized
  (x channel-averaged and downscaled to T's size but not rotated).

They are scored on the test images and on three sets of inputs unlike the training images
(the off-manifold sets, as many images as the test set): the test images inverted (1 - x: natural
edges and textures with intensities the training set does not have), uniform noise in [0, 1]
(independent pixels), smooth random fields (uniform noise at 1/8 of the size, bilinearly
upsampled, each channel independent: blobs of arbitrary colour), and the notes' other-photo test:
crops of four photos of scikit-image that no training crop comes from. A model that learned T
itself predicts T on all of them; one that learned T on the data manifold only does not.

A least-squares linear map of rank k, the code's width (linear_map.fit_rank_limited), sets the
autoencoder against the best linear predictor that passes k numbers: the full-rank map is not
comparable, since a k-number code cannot carry T's 256 output values. The code-width sweep trains the
same autoencoder with wider and narrower codes, up to T's size and beyond, beside the rank-k map of
each width, so that "learned T on the data manifold only" can be told apart from "its code is too
narrow to carry T".

Verdicts come from paired comparisons over the images of a set (stats.paired_comparison: the
mean difference of per-image MSE, its 95% bootstrap interval, and the effect size d_z): the
autoencoder against the best weak baseline and against the linear map, and "R² clearly at least
R2_BAR" as the autoencoder's MSE against (1 - R2_BAR) x the mean-image MSE, image by image
(R² = 1 - MSE / mean-image MSE, the mean image being the training set's mean T(x)).

Then the notes' compute and memory comparison on this device: time per image and peak memory of
computing T directly versus running the autoencoder, both compiled, on the same batch (costs.measure).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import config, models, plots
from vaejax_experiments import costs, harness, linear_map, off_manifold, stats, training
from vaejax_experiments.transform_report import report, verdict

__all__ = ["main", "verdict", "report", "CLAIM", "transform"]

CLAIM = ("An autoencoder trained with MSE(dec(enc(x)), T(x)) captures a pipeline of colour-space and affine "
         "transformations, T = rescale 50% (rotate 90° (grayscale(x))): on test images it predicts T(x) far better "
         "than the mean image or the resized input.")
DEFAULT_DATASET = "sample_patches"
LUMA = (0.299, 0.587, 0.114)
SHOW = 8


# ---------------------------------------------------------------------------- the transformation


def grayscale(x_NHWC):
    """Luma of RGB images (ITU-R 601 weights), keeping a channel axis; grayscale images unchanged."""
    if x_NHWC.shape[-1] == 1:
        return x_NHWC
    return jnp.tensordot(x_NHWC, jnp.asarray(LUMA, x_NHWC.dtype), axes=[[-1], [0]])[..., None]


def rotate_90(x_NHWC):
    """Rotation by 90 degrees counter-clockwise."""
    return jnp.rot90(x_NHWC, k=1, axes=(-3, -2))


def rescale_half(x_NHWC):
    """50% downscale by 2x2 mean pooling (odd trailing rows/columns dropped)."""
    h, w, c = x_NHWC.shape[-3:]
    x = x_NHWC[..., : h // 2 * 2, : w // 2 * 2, :]
    return x.reshape(x.shape[:-3] + (h // 2, 2, w // 2, 2, c)).mean(axis=(-4, -2))


def transform(x_NHWC):
    """T(x) = rescale_0.5(rotate_90(grayscale(x)))."""
    return rescale_half(rotate_90(grayscale(x_NHWC)))


def identity_resized(x_NHWC):
    """The input itself at T's size: channels averaged, downscaled by 2x2 mean pooling, not rotated."""
    return rescale_half(jnp.mean(x_NHWC, axis=-1, keepdims=True))


def transform_matrix(in_shape) -> np.ndarray:
    """T's own matrix in linear_map.fit_linear's layout: T of every basis image, and a zero bias row."""
    d = int(np.prod(in_shape))
    basis = np.eye(d, dtype=np.float32).reshape((d,) + tuple(in_shape))
    M = np.asarray(transform(jnp.asarray(basis)), np.float64).reshape(d, -1)
    return np.concatenate([M, np.zeros((1, M.shape[1]))])


# ---------------------------------------------------------------------------- model


def model_config(in_shape) -> config.ModelConfig:
    """The MLP AE preset for the input's channels, decoding to T's shape, scored by squared error."""
    h, w, c = in_shape
    base = config.preset("mlp_ae_rgb" if c == 3 else "mlp_ae")
    return config.replace(base, image_shape=(w // 2, h // 2, 1), likelihood="mse")


def init_params(key, cfg: config.ModelConfig, in_shape):
    """Parameters whose encoder takes images of in_shape (the decoder emits cfg.image_shape)."""
    init_key, sample_key = jax.random.split(key)
    return models.module(cfg).init(init_key, jnp.zeros((1,) + tuple(in_shape)), sample_key)["params"]


def train_mapping(cfg, tc, x_N, t_N, seeds: int, x_test, t_test, seed: int = 0, log=None):
    """S autoencoders trained at once (training.train_seeds) to map x_N to t_N.

    Returns (params_S, train loss per epoch (S, E), test MSE per pixel per epoch (S, E), seconds).
    """
    trained = training.train_seeds(cfg, tc, x_N, seeds, seed=seed, target_N=t_N, eval_sets={"test": (x_test, t_test)},
                                   init_params=lambda key: init_params(key, cfg, x_N.shape[1:]), log=log)
    test_mse = trained.eval_curves["test"]["recon"] / cfg.num_pixels
    return trained.params, trained.curves["loss"], test_mse, trained.seconds


# ---------------------------------------------------------------------------- scores


def ae_predictor(cfg):
    """Compiled (params_S, x_N) -> every seed's output sigmoid(logits), (S, N, *T shape)."""
    one = lambda p, x: jax.nn.sigmoid(models.apply(cfg, p, x)[0])
    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def per_image_mse(pred, target) -> np.ndarray:
    """MSE per pixel of each image (the last three axes), float64."""
    diff = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
    return np.mean(np.square(diff), axis=(-3, -2, -1))


def score_set(predict, params_S, maps, mean_image, x_N) -> dict:
    """Every predictor's MSE per pixel against T(x) on images x_N: per image (the autoencoder's averaged
    over seeds, for paired comparisons) and over the set (the autoencoder's also per seed). maps: the
    linear maps {"linear": W, "rank_limited": W_k}."""
    x = jnp.asarray(x_N)
    t = np.asarray(transform(x))
    ae_SN = per_image_mse(predict(params_S, x), t[None])
    per_image = {"autoencoder": ae_SN.mean(0),
                 **{name: per_image_mse(linear_map.apply_linear(W, x_N, t.shape[1:]), t) for name, W in maps.items()},
                 "mean_image": per_image_mse(mean_image[None], t),
                 "identity": per_image_mse(identity_resized(x), t)}
    out = {name: float(v.mean()) for name, v in per_image.items()}
    out.update(stats.stat("autoencoder", ae_SN.mean(1)))
    out.update(n=len(x_N), per_image={name: v.tolist() for name, v in per_image.items()})
    return out


# ---------------------------------------------------------------------------- the experiment


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a transform run trains and times (written into metrics.json)."""

    batch_size: int  # at most the training images
    steps: int  # updates per model, to the nearest whole number of epochs
    timed_images: int  # images per timed call of the direct transform and of the autoencoder
    widths: tuple[int, ...]  # the code widths of the sweep (the preset's is trained anyway)


SETTINGS = {"smoke": Settings(batch_size=64, steps=8, timed_images=64, widths=(16, 256)),
            "quick": Settings(batch_size=64, steps=500, timed_images=512, widths=(512,)),
            "full": Settings(batch_size=128, steps=3000, timed_images=1024, widths=(16, 32, 128, 256, 512)),
            "reference": Settings(batch_size=128, steps=3000, timed_images=1024, widths=(16, 256, 512))}


def main(scale="quick", dataset=None, seeds=None, out="results") -> dict:
    run = harness.start("transform", scale, dataset, seeds, out, default_dataset=DEFAULT_DATASET)
    s = run.scale.pick(**SETTINGS)
    sc, S = run.scale, run.seeds
    train_x = harness.train_images(sc, run.dataset).x
    test_x = harness.eval_images(sc, run.dataset).x
    t_train, t_test = np.asarray(transform(jnp.asarray(train_x))), np.asarray(transform(jnp.asarray(test_x)))
    cfg = model_config(train_x.shape[1:])
    batch = min(s.batch_size, len(train_x))
    tc = sc.train_config(len(train_x), batch_size=batch, epochs=max(1, round(s.steps / (len(train_x) // batch))))
    run.log(f"{len(train_x)} train / {len(test_x)} test images {train_x.shape[1:]} -> T {t_train.shape[1:]}; "
            f"{cfg.arch} AE hidden {cfg.hidden} latent {cfg.latent_dim}; {tc.epochs} epochs of batch {batch}, {S} seeds")
    params, loss_curve, test_curve, seconds = train_mapping(cfg, tc, train_x, t_train, S, jnp.asarray(test_x),
                                                            jnp.asarray(t_test), log=run.log)

    test_mse_S = test_curve[:, -1]
    t0 = time.perf_counter()
    W = linear_map.fit_linear(train_x, t_train)  # on the images the AE trains on
    linear_seconds = time.perf_counter() - t0
    truth = transform_matrix(train_x.shape[1:])
    linear = {"solution": "least squares" if len(train_x) >= W.shape[0] else "minimum norm (fewer images than inputs)",
              "n_train": len(train_x), "unknowns_per_output": int(W.shape[0]), "seconds": round(linear_seconds, 2),
              "weight_error": float(np.abs(W - truth).max()), "t_weight_max": float(np.abs(truth).max())}
    run.log(f"linear map: {linear['solution']} in {linear_seconds:.1f}s, weights within {linear['weight_error']:.2g} of T's")
    maps = {"linear": W, "rank_limited": linear_map.fit_rank_limited(train_x, t_train, cfg.latent_dim)}
    linear["rank"] = cfg.latent_dim

    predict, mean_image = ae_predictor(cfg), t_train.mean(0)
    test = score_set(predict, params, maps, mean_image, test_x)
    off_inputs = off_manifold.inputs(test_x)
    off = {name: dict(label=label, **score_set(predict, params, maps, mean_image, x))
           for name, (label, x) in off_inputs.items()}
    for name, o in off.items():
        run.log(f"{name}: MSE autoencoder {o['autoencoder']:.3g}, linear {o['linear']:.3g}, "
                f"mean image {o['mean_image']:.3g}, identity-resized {o['identity']:.3g}")
    mean_image_mse, identity_mse = test["mean_image"], test["identity"]
    result = stats.stat("test_mse", test_mse_S)
    result.update(stats.stat("r2", 1.0 - test_mse_S / mean_image_mse))
    result.update(mean_image_mse=mean_image_mse, mean_image_mse_std=0.0, identity_mse=identity_mse, identity_mse_std=0.0,
                  linear_mse=test["linear"], linear=linear, test_per_image=test["per_image"], off_manifold=off)

    x_time = jnp.asarray(np.resize(test_x, (s.timed_images,) + test_x.shape[1:]))
    seed0 = jax.tree_util.tree_map(lambda a: a[0], params)
    result["compute"] = costs.compare(transform, lambda p, x: jax.nn.sigmoid(models.apply(cfg, p, x)[0]), seed0, x_time)
    c = result["compute"]
    run.log(f"direct {c['direct']['seconds_per_image'] * 1e6:.2f} us/image, {c['direct']['peak_bytes'] / 2**20:.2f} MiB; "
            f"AE {c['autoencoder']['seconds_per_image'] * 1e6:.2f} us/image, "
            f"{c['autoencoder']['peak_bytes'] / 2**20:.2f} MiB")
    result.update(
        n_train=len(train_x), n_test=len(test_x), input_shape=list(train_x.shape[1:]), output_shape=list(t_train.shape[1:]),
        model={"preset": f"mlp ae hidden {list(cfg.hidden)} latent {cfg.latent_dim}", "likelihood": cfg.likelihood,
               "params": int(models.param_count(seed0))},
        train={"epochs": tc.epochs, "batch_size": batch, "steps": tc.epochs * (len(train_x) // batch),
               "seconds": round(seconds, 2), **stats.stat("final_loss", loss_curve[:, -1])},
        test_mse_curve=test_curve.mean(0).tolist(), test_mse_curve_std=test_curve.std(0, ddof=1 if S > 1 else 0).tolist(),
    )
    result["width_sweep"] = width_sweep(run, cfg, tc, s.widths, (train_x, t_train), (test_x, t_test), off_inputs,
                                        {cfg.latent_dim: (params, maps["rank_limited"])})
    result["figures"] = _figures(run, cfg, seed0, test_x, t_test, test_curve, mean_image_mse, identity_mse, tc, len(train_x))
    result["figures"].append(_off_manifold_figure(run, cfg, seed0, W, test_x, off_inputs))
    result["figures"].append(_width_figure(run, result["width_sweep"], output_size=int(np.prod(t_train.shape[1:]))))
    return harness.finish(run, result, s)


def width_sweep(run, cfg, tc, widths, train, test, off_inputs, trained: dict) -> list[dict]:
    """Per code width (the sweep's and the preset's, ascending): the autoencoder's and the rank-width linear
    map's mean MSE per pixel on the test images and on each off-manifold set, and the autoencoder's R² on
    each (against the training set's mean T(x)). trained: width -> (params_S, rank-width map) already fitted."""
    (train_x, t_train), (test_x, t_test) = train, test
    mean_image = t_train.mean(0)
    sets = {"test": test_x, **{name: x for name, (_, x) in off_inputs.items()}}
    rows = []
    for width in sorted(set(widths) | set(trained)):
        wide = config.replace(cfg, latent_dim=width)
        if width in trained:
            params, W_k = trained[width]
        else:
            params = train_mapping(wide, tc, train_x, t_train, run.seeds, jnp.asarray(test_x),
                                   jnp.asarray(t_test))[0]
            W_k = linear_map.fit_rank_limited(train_x, t_train, min(width, t_train[0].size))
        predict, row = ae_predictor(wide), {"width": width}
        for name, x in sets.items():
            scores = score_set(predict, params, {"rank_limited": W_k}, mean_image, x)
            row[name] = {"autoencoder": scores["autoencoder"], "autoencoder_std": scores["autoencoder_std"],
                         "rank_limited": scores["rank_limited"], "r2": 1.0 - scores["autoencoder"] / scores["mean_image"]}
        run.log(f"code width {width}: test MSE {row['test']['autoencoder']:.3g} (rank-{width} map "
                f"{row['test']['rank_limited']:.3g}); off-manifold R² "
                + ", ".join(f"{name} {row[name]['r2']:.2f}" for name in off_inputs))
        rows.append(row)
    return rows


def _textured(t_N, k: int) -> np.ndarray:
    """Indices of k textured images (a spread over the upper half ranked by T(x)'s contrast): flat patches of
    sky show nothing."""
    rank = np.argsort(-t_N.reshape(len(t_N), -1).std(axis=1))
    return rank[np.linspace(0, max(k, len(rank) // 2) - 1, k).astype(int)]


def _at_input_size(img_N, in_shape) -> np.ndarray:
    """T-sized gray images shown at the input's size and channels (nearest upsampling), clipped to [0, 1]."""
    h, w, c = in_shape
    img = np.clip(np.asarray(img_N), 0.0, 1.0)
    up = np.repeat(np.repeat(img, h // img.shape[1], axis=1), w // img.shape[2], axis=2)
    return np.repeat(up, c, axis=-1)


def _figures(run, cfg, params, test_x, t_test, test_curve, mean_image_mse, identity_mse, tc, n_train) -> list[str]:
    show = _textured(t_test, SHOW)
    x = jnp.asarray(test_x[show])
    pred = np.asarray(jax.nn.sigmoid(models.apply(cfg, params, x)[0]))
    rows = [test_x[show]] + [_at_input_size(r, test_x.shape[1:]) for r in (t_test[show], pred, identity_resized(x))]
    figs = [plots.save_image_panels({"": np.concatenate(rows)}, run.path("transform_examples.png"), ncol=SHOW,
                                    row_labels=["input x", "target T(x)", "autoencoder", "identity-resized"],
                                    title=f"T(x) = rescale 50% (rotate 90° (grayscale x)) and the autoencoder's "
                                          f"output\n({run.dataset} test images, seed 0; T-sized images shown 2x)")]
    steps = (np.arange(test_curve.shape[1]) + 1) * (n_train // tc.batch_size)
    zero = np.zeros(len(steps))
    series = {"autoencoder (test)": (steps, test_curve.mean(0), test_curve.std(0)),
              "mean-image baseline": (steps, zero + mean_image_mse, zero),
              "identity-resized baseline": (steps, zero + identity_mse, zero)}
    styles = {"mean-image baseline": {"linestyle": "--", "marker": None},
              "identity-resized baseline": {"linestyle": ":", "marker": None}}
    figs.append(plots.save_curves_spread(series, run.path("transform_test_mse.png"), xlabel="training steps",
                                         ylabel="test MSE per pixel vs T(x)", log_y=True, styles=styles,
                                         title=f"Learning T ({run.dataset}, mean ± std over seeds)"))
    return [f.split("/")[-1] for f in figs]


def _width_figure(run, sweep: list[dict], output_size: int) -> str:
    """MSE against code width on each set: the autoencoder (mean ± std over seeds) and the rank-width linear map."""
    widths = [row["width"] for row in sweep]
    series, styles = {}, {}
    for name in [k for k in sweep[0] if k != "width"]:
        series[f"autoencoder, {name}"] = (widths, [r[name]["autoencoder"] for r in sweep],
                                          [r[name]["autoencoder_std"] for r in sweep])
        series[f"rank-k linear map, {name}"] = (widths, [r[name]["rank_limited"] for r in sweep], [0.0] * len(widths))
        styles[f"rank-k linear map, {name}"] = {"linestyle": ":", "marker": "x"}
    path = plots.save_curves_spread(series, run.path("transform_code_width.png"), xlabel="code width k",
                                    ylabel="MSE per pixel vs T(x)", log_x=True, log_y=True, styles=styles,
                                    title=f"Code width against MSE ({run.dataset}; T(x) has {output_size} values)")
    return path.split("/")[-1]


def _off_manifold_figure(run, cfg, params, W, test_x, off_inputs, k: int = 3) -> str:
    """Columns of k textured images per input set (test images, then each off-manifold set); rows: the input,
    T(x), the autoencoder's output (seed 0) and the linear map's."""
    panels = {}
    for name, x_all in {"test images": test_x, **{name: x for name, (_, x) in off_inputs.items()}}.items():
        x = x_all[_textured(np.asarray(transform(jnp.asarray(x_all))), k)]
        t = np.asarray(transform(jnp.asarray(x)))
        outputs = (t, jax.nn.sigmoid(models.apply(cfg, params, jnp.asarray(x))[0]), linear_map.apply_linear(W, x, t.shape[1:]))
        rows = [x] + [_at_input_size(o, x.shape[1:]) for o in outputs]
        panels[name] = np.concatenate(rows)
    path = plots.save_image_panels(panels, run.path("transform_off_manifold.png"), ncol=k,
                                   row_labels=["input x", "target T(x)", "autoencoder", "linear map"],
                                   title=f"On and off the training manifold ({run.dataset}; autoencoder seed 0; "
                                         f"T-sized images shown 2x)")
    return path.split("/")[-1]


if __name__ == "__main__":
    harness.cli(main)
