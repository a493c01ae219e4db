"""Learning a transformation (seed 000, Example 1): train an autoencoder on colour images x with the
loss MSE(dec(enc(x)), T(x)), T(x) = rescale_0.5(rotate_90(grayscale(x))), and compare it with two
baselines on test images ("predict the mean T(x) of the training set", "the input itself, resized":
x channel-averaged and downscaled to T's size but not rotated). Then the seed's compute and memory
comparison on this device: time per image and peak memory of computing T directly versus running
the autoencoder, both compiled, on the same batch.

T: grayscale with ITU-R 601 luma weights (what torchvision's Grayscale uses), rotation by 90 degrees
counter-clockwise (torchvision's rotate(90)), and a 2x2 mean pool (an antialiased 50% rescale).
The model is the dataset's MLP autoencoder preset (mlp_ae_rgb for colour) whose decoder outputs
T's shape: its encoder flattens the input image, whatever its shape, so input and output shapes may
differ. Loss: squared error of sigmoid(logits) (likelihood "mse"). MLP at every scale: the conv
presets mirror the input shape.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from vaejax_experiments import common
from vaejax import config, models, plots

CLAIM = ("An autoencoder trained with MSE(dec(enc(x)), T(x)) captures a pipeline of colour-space and affine "
         "transformations, T = rescale 50% (rotate 90° (grayscale(x))): on test images it predicts T(x) far better "
         "than the mean image or the resized input.")
DEFAULT_DATASET = "sample_patches"
R2_BAR = 0.9  # "captures T": explains at least this fraction of T(x)'s variance around the mean image
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
    """S autoencoders trained at once (common.train_seeds) to map x_N to t_N.

    Returns (params_S, train loss per epoch (S, E), test MSE per pixel per epoch (S, E), seconds).
    """
    trained = common.train_seeds(cfg, tc, x_N, seeds, seed=seed, target_N=t_N, eval_sets={"test": (x_test, t_test)},
                                 init_params=lambda key: init_params(key, cfg, x_N.shape[1:]), log=log)
    test_mse = trained.eval_curves["test"]["recon"] / cfg.num_pixels
    return trained.params, trained.curves["loss"], test_mse, trained.seconds


# ---------------------------------------------------------------------------- compute and memory


def measure(fn, *args, windows: int = 7, window_seconds: float = 0.05) -> dict:
    """Compile fn(*args) (timed apart), then the median of `windows` timed windows, each blocking once.

    Memory from XLA's analysis of the compiled program: peak = arguments + outputs + temporaries
    - aliased bytes (what the program needs resident at once; the same on every backend).
    """
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_seconds = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    once = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, int(window_seconds / once))
    times = []
    for _ in range(windows):
        t0 = time.perf_counter()
        out = None
        for _ in range(reps):
            out = compiled(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / reps)
    mem = compiled.memory_analysis()
    arg, outb, temp, alias = (int(getattr(mem, f, 0) or 0) for f in
                              ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                               "alias_size_in_bytes"))
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    return {"seconds_per_batch": float(np.median(times)), "compile_seconds": compile_seconds, "windows": windows,
            "reps_per_window": reps, "argument_bytes": arg, "output_bytes": outb, "temp_bytes": temp,
            "peak_bytes": arg + outb + temp - alias, "flops": float(cost.get("flops", float("nan")))}


def compare_compute(cfg, params, x_B) -> dict:
    """Time per image and peak memory of T computed directly vs the autoencoder, on batch x_B."""
    n = x_B.shape[0]
    direct = measure(transform, x_B)
    net = measure(lambda p, x: jax.nn.sigmoid(models.apply(cfg, p, x)[0]), params, x_B)
    out = {}
    for name, m in (("direct", direct), ("autoencoder", net)):
        out[name] = dict(m, seconds_per_image=m["seconds_per_batch"] / n, flops_per_image=m["flops"] / n)
    out["batch"] = int(n)
    out["param_bytes"] = int(sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(params)))
    out["time_ratio"] = out["autoencoder"]["seconds_per_image"] / out["direct"]["seconds_per_image"]
    out["memory_ratio"] = out["autoencoder"]["peak_bytes"] / max(1, out["direct"]["peak_bytes"])
    return out


# ---------------------------------------------------------------------------- the experiment


def main(scale="quick", dataset=None, seeds=None, out="results") -> dict:
    run = common.start("transform", scale, dataset, seeds, out, default_dataset=DEFAULT_DATASET)
    sc, S = run.scale, run.seeds
    train_x = common.train_images(sc, run.dataset).x
    test_x = common.eval_images(sc, run.dataset).x
    t_train, t_test = np.asarray(transform(jnp.asarray(train_x))), np.asarray(transform(jnp.asarray(test_x)))
    cfg = model_config(train_x.shape[1:])
    batch = min(sc.pick(smoke=64, quick=64, full=128), len(train_x))
    steps = sc.pick(smoke=sc.steps, quick=500, full=3000)
    tc = sc.train_config(len(train_x), batch_size=batch, epochs=max(1, round(steps / (len(train_x) // batch))))
    run.log(f"{len(train_x)} train / {len(test_x)} test images {train_x.shape[1:]} -> T {t_train.shape[1:]}; "
            f"{cfg.arch} AE hidden {cfg.hidden} latent {cfg.latent_dim}; {tc.epochs} epochs of batch {batch}, {S} seeds")
    params, loss_curve, test_curve, seconds = train_mapping(cfg, tc, train_x, t_train, S, jnp.asarray(test_x),
                                                            jnp.asarray(t_test), log=run.log)

    test_mse_S = test_curve[:, -1]
    mean_image = t_train.mean(0)
    mean_image_mse = float(np.mean(np.square(t_test - mean_image[None])))
    identity_mse = float(np.mean(np.square(t_test - np.asarray(identity_resized(jnp.asarray(test_x))))))
    result = common.stat("test_mse", test_mse_S)
    result.update(common.stat("r2", 1.0 - test_mse_S / mean_image_mse))
    result.update(mean_image_mse=mean_image_mse, mean_image_mse_std=0.0, identity_mse=identity_mse, identity_mse_std=0.0)

    n_time = sc.pick(smoke=64, quick=512, full=1024)
    x_time = jnp.asarray(np.resize(test_x, (n_time,) + test_x.shape[1:]))
    seed0 = jax.tree_util.tree_map(lambda a: a[0], params)
    result["compute"] = compare_compute(cfg, seed0, x_time)
    c = result["compute"]
    run.log(f"direct {c['direct']['seconds_per_image'] * 1e6:.2f} us/image, {c['direct']['peak_bytes'] / 2**20:.2f} MiB; "
            f"AE {c['autoencoder']['seconds_per_image'] * 1e6:.2f} us/image, "
            f"{c['autoencoder']['peak_bytes'] / 2**20:.2f} MiB")
    result.update(
        n_train=len(train_x), n_test=len(test_x), input_shape=list(train_x.shape[1:]), output_shape=list(t_train.shape[1:]),
        model={"preset": f"mlp ae hidden {list(cfg.hidden)} latent {cfg.latent_dim}", "likelihood": cfg.likelihood,
               "params": int(models.param_count(seed0))},
        train={"epochs": tc.epochs, "batch_size": batch, "steps": tc.epochs * (len(train_x) // batch),
               "seconds": round(seconds, 2), **common.stat("final_loss", loss_curve[:, -1])},
        test_mse_curve=test_curve.mean(0).tolist(), test_mse_curve_std=test_curve.std(0, ddof=1 if S > 1 else 0).tolist(),
    )
    result["figures"] = _figures(run, cfg, seed0, test_x, t_test, test_curve, mean_image_mse, identity_mse, tc, len(train_x))
    return common.finish(run, result)


def _figures(run, cfg, params, test_x, t_test, test_curve, mean_image_mse, identity_mse, tc, n_train) -> list[str]:
    # Textured examples (a spread over the upper half of test images ranked by T(x)'s contrast):
    # flat patches of sky show nothing.
    rank = np.argsort(-t_test.reshape(len(t_test), -1).std(axis=1))
    show = rank[np.linspace(0, max(SHOW, len(rank) // 2) - 1, SHOW).astype(int)]
    x = jnp.asarray(test_x[show])
    pred = np.asarray(jax.nn.sigmoid(models.apply(cfg, params, x)[0]))
    h, w, c = test_x.shape[1:]

    def as_input(img):  # T-sized gray images shown at the input's size and channels (nearest upsampling)
        up = np.repeat(np.repeat(np.asarray(img), h // img.shape[1], axis=1), w // img.shape[2], axis=2)
        return np.repeat(up, c, axis=-1)

    rows = [test_x[show], as_input(t_test[show]), as_input(pred), as_input(identity_resized(x))]
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


# ---------------------------------------------------------------------------- verdict and report


def verdict(m: dict) -> tuple[str, str]:
    """Holds when the AE's test MSE is clearly below both baselines and it explains >= R2_BAR of T(x)'s
    variance; mixed when it beats both baselines but explains less; does not hold otherwise."""
    beats = [common.clearly(m["test_mse"], m["test_mse_std"], m[b], 0.0, higher_is_better=False) == 1
             for b in ("mean_image_mse", "identity_mse")]
    c = m["compute"]
    nums = (f"test MSE per pixel {common.cell(m, 'test_mse', '.4g')} vs mean image {m['mean_image_mse']:.4g} and "
            f"identity-resized {m['identity_mse']:.4g}; R² {common.cell(m, 'r2', '.3f')} (bar {R2_BAR})")
    compute = (f" Computing T directly takes {c['direct']['seconds_per_image'] * 1e6:.3g} µs per image and "
               f"{_mib(c['direct']['peak_bytes'])} peak memory for a batch of {c['batch']}; the autoencoder "
               f"{c['autoencoder']['seconds_per_image'] * 1e6:.3g} µs per image ({c['time_ratio']:.3g}x) and "
               f"{_mib(c['autoencoder']['peak_bytes'])} ({c['memory_ratio']:.3g}x).")
    if all(beats) and m["r2"] >= R2_BAR:
        return "holds", f"The autoencoder learns T: {nums}." + compute
    if all(beats):
        return "mixed", (f"The autoencoder beats both baselines but explains less than {R2_BAR} of T's variance: "
                         f"{nums}." + compute)
    return "does not hold", f"The autoencoder does not clearly beat both baselines: {nums}." + compute


def _mib(b) -> str:
    return f"{b / 2**20:.3g} MiB"


def report(m: dict) -> str:
    rows = [["autoencoder dec(enc(x))", common.cell(m, "test_mse", ".4g"), common.cell(m, "r2", ".3f")],
            ["predict the mean T(x) of the training set", f"{m['mean_image_mse']:.4g}", "0"],
            ["identity-resized (x averaged over channels, downscaled, not rotated)", f"{m['identity_mse']:.4g}",
             f"{1 - m['identity_mse'] / m['mean_image_mse']:.3f}"]]
    c = m["compute"]
    comp = []
    for name, label in (("direct", "T(x) computed directly"), ("autoencoder", "autoencoder forward pass")):
        d = c[name]
        comp.append([label, f"{d['seconds_per_image'] * 1e6:.3g}", f"{d['flops_per_image']:.3g}", _mib(d["peak_bytes"]),
                     _mib(d["temp_bytes"]), f"{d['compile_seconds']:.2f}"])
    t = m["train"]
    head = (f"{m['n_train']} training and {m['n_test']} test images {tuple(m['input_shape'])} → T(x) "
            f"{tuple(m['output_shape'])}. Model: {m['model']['preset']} ({m['model']['params']:,} parameters), "
            f"{t['steps']} steps of batch {t['batch_size']} ({t['seconds']:.0f} s for all seeds). MSE per pixel "
            f"against T(x) on test images; R² = 1 - MSE / (mean-image MSE).")
    comp_head = (f"Compute and memory on {m['device']}, batch of {c['batch']} images, both compiled (compile "
                 f"timed apart), median of {c['direct']['windows']} windows. Peak memory: XLA's analysis of the "
                 f"compiled program (arguments + outputs + temporaries); the autoencoder's arguments include its "
                 f"{_mib(c['param_bytes'])} of parameters.")
    return (head + "\n\n" + common.table(["prediction of T(x)", "test MSE per pixel ↓", "R² ↑"], rows) + "\n\n"
            + comp_head + "\n\n" + common.table(["path", "µs per image", "FLOPs per image", "peak memory per batch",
                                                 "temporaries", "compile s"], comp))


if __name__ == "__main__":
    common.cli(main)
