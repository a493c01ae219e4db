"""Noise reduction (seed 000): train an autoencoder on x + noise -> x, at several levels of Gaussian
noise (sigma in intensity units, noisy images clipped to [0, 1]); a fresh noise draw every step
(objectives.denoising), every level and seed one model of a single program, sigma a traced input.
On test images (their own noise draw per seed): PSNR of the noisy input, of the autoencoder's output,
and of a classical baseline, a Gaussian blur whose sigma is chosen per noise level on held-out
training-split images (never on the test set); sigma 0 (no blur) is among the choices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from vaejax_experiments import common
from vaejax import latent, metrics, objectives, plots, recipe

CLAIM = ("An autoencoder trained to map noisy images to clean ones reduces noise: its outputs have a higher PSNR "
         "than the noisy inputs and than a classical Gaussian-blur denoiser.")
LEVELS = (0.1, 0.3, 0.5)
BLUR_SIGMAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
SHOW = 8


@jax.jit
def add_noise(key, x, sigma):
    """x + sigma * N(0, 1), clipped to [0, 1]."""
    return jnp.clip(x + sigma * jax.random.normal(key, x.shape, x.dtype), 0.0, 1.0)


def gaussian_blur(x_NHWC, sigma: float) -> np.ndarray:
    """Each image blurred by a Gaussian of std `sigma` pixels (reflecting borders); sigma 0: unchanged."""
    x = np.asarray(x_NHWC, np.float32)
    return x if sigma == 0 else ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="reflect")


def mean_psnr(a, b) -> float:
    return float(jnp.mean(metrics.psnr(a, b)))


def best_blur_sigma(clean, noisy, sigmas=BLUR_SIGMAS) -> tuple[float, list[float]]:
    """(the sigma with the highest mean PSNR on these images, mean PSNR of each sigma)."""
    scores = [mean_psnr(gaussian_blur(noisy, s), clean) for s in sigmas]
    return float(sigmas[int(np.argmax(scores))]), scores


def train_denoisers(cfg, tc, x_N, levels, seeds: int, log=None):
    """len(levels) * seeds autoencoders in one program (level-major: model l * seeds + s), each trained on
    clip(x + sigma_l eps) -> x with fresh noise every step, sigma a traced hyperparameter.

    Returns (params with that leading axis, the per-epoch mean training loss (models, epochs), seconds).
    """
    r = recipe.build(cfg, tc)
    sigma_M = jnp.repeat(jnp.asarray(levels, jnp.float32), seeds)
    trained = common.train_seeds(cfg, tc, x_N, len(levels) * seeds, objective=objectives.denoising(r.objective),
                                 hparams={"noise_sigma": sigma_M}, log=log)
    return trained.params, trained.curves["loss"], trained.seconds


def main(scale="quick", dataset=None, seeds=None, out="results") -> dict:
    run = common.start("denoise", scale, dataset, seeds, out)
    sc, S = run.scale, run.seeds
    cfg, _ = common.model_pair(sc, run.dataset)
    x = common.train_images(sc, run.dataset).x
    test = common.eval_images(sc, run.dataset).x
    held_out = common.eval_images(sc, run.dataset, split="train").x  # for choosing the blur's sigma only
    levels = sc.pick(smoke=(0.1, 0.5), quick=LEVELS, full=LEVELS)
    steps = sc.pick(smoke=sc.steps, quick=625, full=3000)
    batch = min(sc.batch_size, len(x))
    tc = sc.train_config(len(x), epochs=max(1, round(steps / (len(x) // batch))))
    run.log(f"{cfg.arch} AE latent {cfg.latent_dim}, {len(x)} images, {tc.epochs} epochs of batch {tc.batch_size}, "
            f"noise levels {list(levels)}, {S} seeds")
    rows = {"psnr_noisy": [], "psnr_denoised": [], "psnr_blur": []}
    result = {"noise_levels": list(levels), "blur_sigma": [], "blur_psnr_by_sigma": [], "blur_sigmas": list(BLUR_SIGMAS),
              "train_seconds": [], "final_loss": [], "final_loss_std": []}
    figure = {}
    params_M, curves_M, seconds = train_denoisers(cfg, tc, x, levels, S, log=run.log)
    for li, sigma in enumerate(levels):
        params = jax.tree_util.tree_map(lambda a: a[li * S:(li + 1) * S], params_M)
        curve = curves_M[li * S:(li + 1) * S]
        noisy_ho = np.asarray(add_noise(jax.random.key(123), jnp.asarray(held_out), sigma))
        blur_sigma, by_sigma = best_blur_sigma(held_out, noisy_ho)
        per_seed = {k: [] for k in rows}
        for s in range(S):
            p = jax.tree_util.tree_map(lambda a: a[s], params)
            noisy = np.asarray(add_noise(jax.random.fold_in(jax.random.key(99), s), jnp.asarray(test), sigma))
            denoised = np.asarray(latent.decode(cfg, p, latent.embed(cfg, p, noisy)))
            blurred = np.clip(gaussian_blur(noisy, blur_sigma), 0.0, 1.0)
            per_seed["psnr_noisy"].append(mean_psnr(noisy, test))
            per_seed["psnr_denoised"].append(mean_psnr(denoised, test))
            per_seed["psnr_blur"].append(mean_psnr(blurred, test))
            if s == 0:
                figure[sigma] = np.concatenate([noisy[:SHOW], denoised[:SHOW], blurred[:SHOW], test[:SHOW]])
        for k in rows:
            rows[k].append(per_seed[k])
        result["blur_sigma"].append(blur_sigma)
        result["blur_psnr_by_sigma"].append(by_sigma)
        result["train_seconds"].append(round(seconds / len(levels), 2))  # one program trained every level
        result["final_loss"].append(float(curve[:, -1].mean()))
        result["final_loss_std"].append(common.mean_std(curve[:, -1])[1])
        run.log(f"sigma {sigma}: PSNR noisy {np.mean(per_seed['psnr_noisy']):.2f}, denoised "
                f"{np.mean(per_seed['psnr_denoised']):.2f}, blur (sigma {blur_sigma}) "
                f"{np.mean(per_seed['psnr_blur']):.2f} dB")
    for k, per_level in rows.items():
        result[k] = [float(np.mean(v)) for v in per_level]
        result[f"{k}_std"] = [common.mean_std(v)[1] for v in per_level]
        result[f"{k}_seeds"] = per_level
    result.update(n_train=len(x), n_test=len(test), n_held_out=len(held_out), epochs=tc.epochs,
                  steps=tc.epochs * (len(x) // tc.batch_size), batch_size=tc.batch_size,
                  model=f"{cfg.arch} ae latent {cfg.latent_dim}")
    panels = {f"noise σ = {sigma}": images for sigma, images in figure.items()}
    figs = [plots.save_image_panels(panels, run.path("denoise_examples.png"), ncol=SHOW,
                                    row_labels=["noisy", "denoised", "blur", "clean"],
                                    title=f"Test images ({run.dataset}, seed 0): noisy input, autoencoder, best blur, clean")]
    series = {label: (list(levels), result[k], result[f"{k}_std"])
              for k, label in (("psnr_denoised", "autoencoder"), ("psnr_blur", "best Gaussian blur"),
                               ("psnr_noisy", "noisy input"))}
    figs.append(plots.save_curves_spread(series, run.path("denoise_psnr.png"), xlabel="noise σ", ylabel="PSNR (dB)",
                                         title=f"Test PSNR vs noise level ({run.dataset}, mean ± std over seeds)"))
    result["figures"] = [f.split("/")[-1] for f in figs]
    return common.finish(run, result)


# ---------------------------------------------------------------------------- verdict and report


def verdict(m: dict) -> tuple[str, str]:
    """Holds when the AE's PSNR is clearly (beyond the summed seed spreads) above both the noisy input and
    the best blur at every level; does not hold when it is not clearly above the noisy input at any level."""
    def clear(i, other):
        return common.clearly(m["psnr_denoised"][i], m["psnr_denoised_std"][i], m[other][i], m[f"{other}_std"][i])
    n = len(m["noise_levels"])
    vs_noisy = [clear(i, "psnr_noisy") for i in range(n)]
    vs_blur = [clear(i, "psnr_blur") for i in range(n)]
    nums = "; ".join(f"σ {s}: autoencoder {common.pm(m['psnr_denoised'][i], m['psnr_denoised_std'][i], '.2f')} dB, "
                     f"noisy {common.pm(m['psnr_noisy'][i], m['psnr_noisy_std'][i], '.2f')}, blur "
                     f"{common.pm(m['psnr_blur'][i], m['psnr_blur_std'][i], '.2f')}"
                     for i, s in enumerate(m["noise_levels"]))
    if all(v == 1 for v in vs_noisy + vs_blur):
        return "holds", f"The autoencoder beats the noisy input and the best blur at every noise level ({nums})."
    if not any(v == 1 for v in vs_noisy):
        return "does not hold", f"The autoencoder's output is not clearly better than the noisy input at any level ({nums})."
    beats_noisy = [s for s, v in zip(m["noise_levels"], vs_noisy) if v == 1]
    beats_blur = [s for s, v in zip(m["noise_levels"], vs_blur) if v == 1]
    return "mixed", (f"The autoencoder beats the noisy input at σ in {beats_noisy} and the best blur at σ in "
                     f"{beats_blur or 'none'} ({nums}).")


def report(m: dict) -> str:
    rows = []
    for i, s in enumerate(m["noise_levels"]):
        rows.append([s, common.pm(m["psnr_noisy"][i], m["psnr_noisy_std"][i], ".2f"),
                     common.pm(m["psnr_denoised"][i], m["psnr_denoised_std"][i], ".2f"),
                     common.pm(m["psnr_blur"][i], m["psnr_blur_std"][i], ".2f"), m["blur_sigma"][i]])
    head = (f"PSNR in dB on {m['n_test']} test images (a fresh noise draw per seed). Autoencoder: {m['model']}, trained "
            f"on {m['n_train']} images for {m['steps']} steps of batch {m['batch_size']} per noise level. Blur: a "
            f"Gaussian filter whose sigma (pixels, from {m['blur_sigmas']}) maximises PSNR on {m['n_held_out']} "
            f"held-out training-split images.")
    return head + "\n\n" + common.table(["noise σ", "noisy input", "autoencoder ↑", "best blur", "blur sigma"], rows)


if __name__ == "__main__":
    common.cli(main)
