"""Noise reduction (notes 000): denoisers trained on x + noise -> x, against classical denoisers.

Noise: Gaussian, sigma in intensity units, at several levels, both clipped to [0, 1] (what a
sensor saturates to) and unclipped. Learned denoisers, each level x noise kind x seed one model of
a single compiled program per family (sigma and clipping traced hyperparameters, fresh noise
every step, objectives.denoising):

- ae_bottleneck: the notes' autoencoder (the scale's MLP AE) trained with squared error, the
  loss PSNR measures; ae_bottleneck_bce: the same trained with the notes' Bernoulli loss
  (clipped noise; below full scale at the middle level only), to show what the loss changes;
- denoiser_skip: a small residual convolutional denoiser without a bottleneck (DnCNN-style,
  Zhang et al. 2017: full-resolution 3x3 convs predict the noise, subtracted from the input;
  below full scale on clipped noise only, one seed, one epoch: it is slow on a CPU);
- clean_ceiling: the same bottleneck AE trained and tested without noise: its reconstruction of
  clean images, the best its bottleneck allows (one value, shown at every level).

Baselines, each parameter chosen per noise level and kind on held-out training-split images (never
on the test set), on a grid whose ends the report flags when the choice lands there: a Gaussian
blur, a Wiener filter (scipy, the window chosen, the true noise variance given), non-local means
(scikit-image; it assumes zero-mean Gaussian noise, which clipping breaks), a PCA projection onto as
many principal components of the clean training images as the AE's code has numbers (any learned
subspace of that size denoises by projecting), and BM3D where its package is installed
(`pip install -e ".[bm3d]"`; free for non-commercial use only), quoted only when it ran on at least
MIN_BM3D test images. Scores: PSNR and SSIM per test image; every method sees the same noisy draw of
each test image, so comparisons are paired by image (bootstrap intervals over images; the learned
denoisers' scores are first averaged over seeds). The verdict reads both noise kinds.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage, signal

from vaejax import config, latent, layers, metrics, objectives, plots, recipe
from vaejax_experiments import harness, markdown, settings, stats, training

CLAIM = ("An autoencoder trained to map noisy images to clean ones reduces noise: its outputs have a higher PSNR "
         "than the noisy inputs and than classical denoisers.")
LEVELS = (0.1, 0.3, 0.5)
NOISE_KINDS = ("clipped", "unclipped")
BLUR_SIGMAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
NL_MEANS_H = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.5)  # filter strength, in multiples of the noise sigma
WIENER_SIZES = (3, 5, 7, 9)  # window sides, pixels
METHODS = (("noisy", "noisy input"), ("blur", "best Gaussian blur"), ("wiener", "Wiener filter"),
           ("nl_means", "non-local means"), ("pca", "PCA projection (the code's width)"), ("bm3d", "BM3D"),
           ("ae_bottleneck", "bottleneck AE (MSE)"), ("ae_bottleneck_bce", "bottleneck AE (BCE)"),
           ("denoiser_skip", "residual conv denoiser"), ("clean_ceiling", "bottleneck AE on clean input"))
BASELINES = ("blur", "wiener", "nl_means", "pca", "bm3d")  # what the AE must beat, besides the noisy input
GRIDS = {"blur_sigma": BLUR_SIGMAS, "wiener_size": WIENER_SIZES, "nl_means_h": NL_MEANS_H}
CLEAN = (0.0, "clipped")  # the condition without noise: the bottleneck AE's clean-input ceiling
MIN_BM3D = 200  # test images BM3D must have run on to be quoted
SHOW = 8
# the example figure's rows (the residual denoiser's only where it was trained at every clipped level)
EXAMPLE_ROWS = {"noisy": "noisy", "nl_means": "non-local\nmeans", "ae_bottleneck": "bottleneck\nAE",
                "denoiser_skip": "residual\ndenoiser"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a denoise run trains and scores (written into metrics.json)."""

    levels: tuple[float, ...]
    steps: int | None  # updates per model (None: the scale's)
    n_held_out: int  # training-split images the baselines' parameters are chosen on
    n_bm3d: int  # test images BM3D denoises, when installed
    bce_levels: tuple[float, ...]  # the clipped-noise levels the BCE-trained AE is compared at
    skip_kinds: tuple[str, ...]  # the noise kinds the residual conv denoiser is trained on
    skip_seeds: int | None  # its seeds (None: the run's)
    skip_epochs: int | None  # its epochs (None: the bottleneck AEs')
    n_train: int | None = None  # training images (None: the scale's)
    max_epochs: int | None = None  # with it, the AEs train until the plateau test passes, at most this many epochs
    skip_levels: tuple[float, ...] | None = None  # the levels the residual conv denoiser is trained at (None: all)


# Below full scale the two side comparisons train fewer models: BCE at one level, the residual conv
# denoiser (far slower per image on a CPU) on clipped noise, one seed, one epoch (the demo: one level).
_SIDE = {"bce_levels": (LEVELS[1],), "skip_kinds": ("clipped",), "skip_seeds": 1, "skip_epochs": 1}
SETTINGS = {"smoke": Settings(levels=(0.1, 0.5), steps=None, n_held_out=50, n_bm3d=4, **dict(_SIDE, bce_levels=(0.1,))),
            "quick": Settings(levels=LEVELS, steps=320, n_held_out=100, n_bm3d=MIN_BM3D, **_SIDE, skip_levels=LEVELS[1:2]),
            "full": Settings(levels=LEVELS, steps=3000, n_held_out=500, n_bm3d=MIN_BM3D, bce_levels=LEVELS,
                             skip_kinds=NOISE_KINDS, skip_seeds=None, skip_epochs=None),
            # the notes' conv AE, each of its models until the plateau test passes, on a class-balanced
            # 20k-image subset: 7 noise conditions x the seeds, on two CPU cores.
            "reference": Settings(levels=LEVELS, steps=None, n_held_out=500, n_bm3d=MIN_BM3D, n_train=20000,
                                  max_epochs=30, **_SIDE)}


# ---------------------------------------------------------------------------- noise and classical denoisers


def add_noise(key, x, sigma, clip: bool = True):
    """x + sigma * N(0, 1), clipped to [0, 1] when clip."""
    noisy = jnp.asarray(x) + sigma * jax.random.normal(key, jnp.shape(x), jnp.float32)
    return jnp.clip(noisy, 0.0, 1.0) if clip else noisy


def gaussian_blur(x_NHWC, sigma: float) -> np.ndarray:
    """Each image blurred by a Gaussian of std `sigma` pixels (reflecting borders); sigma 0: unchanged."""
    x = np.asarray(x_NHWC, np.float32)
    return x if sigma == 0 else ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="reflect")


def nl_means(x_NHWC, noise_sigma: float, h_factor: float) -> np.ndarray:
    """scikit-image's non-local means of each image, filter strength h = h_factor * noise_sigma."""
    from skimage.restoration import denoise_nl_means

    x = np.asarray(x_NHWC, np.float32)
    return np.stack([denoise_nl_means(img, h=h_factor * noise_sigma, sigma=noise_sigma, patch_size=5,
                                      patch_distance=6, fast_mode=True, channel_axis=-1).reshape(img.shape)
                     for img in x])


def wiener(x_NHWC, noise_sigma: float, size: int) -> np.ndarray:
    """scipy's Wiener filter of each image over a size x size window, given the noise variance."""
    x = np.asarray(x_NHWC, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # flat windows: scipy divides 0 by 0, then keeps their mean
        return np.stack([np.stack([signal.wiener(img[..., c], size, noise=noise_sigma**2)
                                   for c in range(img.shape[-1])], axis=-1) for img in x]).astype(np.float32)


def pca_projection(train_N, k: int):
    """A denoiser that projects images onto the k leading principal components of train_N (and its mean)."""
    flat = np.asarray(train_N, np.float64).reshape(len(train_N), -1)
    mean = flat.mean(0)
    basis = np.linalg.svd(flat - mean, full_matrices=False)[2][:k]  # (k, D)

    def project(x_N):
        x = np.asarray(x_N, np.float64).reshape(len(x_N), -1) - mean
        return ((x @ basis.T) @ basis + mean).reshape(np.shape(x_N)).astype(np.float32)

    return project


def bm3d_denoise(x_NHWC, noise_sigma: float) -> np.ndarray:
    """BM3D (the `bm3d` package) of each image with the true noise sigma."""
    import bm3d

    return np.stack([np.asarray(bm3d.bm3d(img, sigma_psd=noise_sigma), np.float32).reshape(img.shape)
                     for img in np.asarray(x_NHWC, np.float32)])


def psnr(x_hat, x) -> np.ndarray:
    """(N,) PSNR in dB of outputs clipped to [0, 1] (as every method's output is shown)."""
    return np.asarray(metrics.psnr(np.clip(x_hat, 0.0, 1.0), x))


def ssim(x_hat, x) -> np.ndarray:
    return np.asarray(metrics.ssim(np.clip(x_hat, 0.0, 1.0), x))


def best_parameter(denoise, clean, noisy, choices) -> tuple[float, list[float]]:
    """(the choice with the highest mean PSNR of denoise(noisy, choice) on these images, each choice's PSNR)."""
    scores = [float(np.mean(psnr(denoise(noisy, c), clean))) for c in choices]
    return choices[int(np.argmax(scores))], scores


def best_blur_sigma(clean, noisy, sigmas=BLUR_SIGMAS) -> tuple[float, list[float]]:
    return best_parameter(gaussian_blur, clean, noisy, sigmas)


# ---------------------------------------------------------------------------- the residual denoiser


class ResidualDenoiser(nn.Module):
    """Full-resolution 3x3 convs with ReLUs predict the noise; the output is the input minus it."""

    width: int = 8  # small: full-resolution convs are slow on CPU
    depth: int = 3

    @nn.compact
    def __call__(self, x_HWC):
        same = ((1, 1), (1, 1))
        h = x_HWC
        for _ in range(self.depth - 1):
            h = nn.relu(layers.Conv(self.width, 3, padding=same)(h))
        return x_HWC - layers.Conv(x_HWC.shape[-1], 3, padding=same)(h)


def squared_error_objective(module):
    """Per example: the summed squared error of module(input) against the target."""
    def objective(params, example, key, step, hparams):
        x, target = example
        return jnp.sum(jnp.square(module.apply(params, x) - target)), {}

    return objective


# ---------------------------------------------------------------------------- training


def conditions(levels, kinds) -> list[tuple[float, str]]:
    """Every (noise sigma, noise kind), kind-major."""
    return [(sigma, kind) for kind in kinds for sigma in levels]


def train_family(name, cfg, tc, x_N, conds, seeds: int, log, objective=None, init_params=None, until=None):
    """len(conds) * seeds models of one family (condition-major: model c * seeds + s) in one program;
    until: a training.Plateau to train to instead of tc.epochs."""
    hparams = {"noise_sigma": jnp.repeat(jnp.asarray([c[0] for c in conds], jnp.float32), seeds),
               "noise_clip": jnp.repeat(jnp.asarray([c[1] == "clipped" for c in conds], jnp.float32), seeds)}
    log(f"{name}: {len(conds)} conditions x {seeds} seeds")
    objective = objectives.denoising(objective or recipe.objective(cfg, tc))
    return training.train_seeds(cfg, tc, x_N, len(conds) * seeds, objective=objective, hparams=hparams,
                                init_params=init_params, log=log, until=until or None)


def outputs_per_seed(apply, params_M, x_N, seeds: int, cond: int) -> np.ndarray:
    """(seeds, N, ...) outputs of the condition's models."""
    return np.stack([np.asarray(apply(jax.tree_util.tree_map(lambda a: a[cond * seeds + s], params_M), x_N))
                     for s in range(seeds)])


# ---------------------------------------------------------------------------- the experiment


def main(scale="quick", dataset=None, seeds=None, out="results") -> dict:
    run = harness.start("denoise", scale, dataset, seeds, out)
    sc, S = run.scale, run.seeds
    st = sc.pick(**SETTINGS)
    ae_cfg, _ = settings.model_pair(sc, run.dataset)
    ae_mse = config.replace(ae_cfg, likelihood="mse")
    x = harness.load_images(run.dataset, "train", st.n_train or sc.n_train).x
    test = harness.eval_images(sc, run.dataset).x
    held_out = harness.eval_images(sc, run.dataset, split="train").x[: st.n_held_out]
    levels = st.levels
    n_bm3d = min(st.n_bm3d, len(test)) if importlib.util.find_spec("bm3d") else 0
    steps = st.steps or sc.steps
    project = pca_projection(x, ae_cfg.latent_dim)
    batch = min(sc.batch_size, len(x))
    tc = sc.train_config(len(x), epochs=max(1, round(steps / (len(x) // batch))))
    conds = conditions(levels, NOISE_KINDS)
    bce_conds = conditions(st.bce_levels, ("clipped",))
    skip_conds = conditions(st.skip_levels or levels, st.skip_kinds)
    length = (f"until the plateau test (at most {st.max_epochs} epochs)" if st.max_epochs
              else f"{tc.epochs} epochs")
    run.log(f"{len(x)} training images, {length} of batch {tc.batch_size}, noise levels {list(levels)}, "
            f"{S} seeds; BM3D {'on ' + str(n_bm3d) + ' test images' if n_bm3d else 'not installed'}")

    skip = ResidualDenoiser()
    skip_seeds = st.skip_seeds or S
    skip_tc = config.replace(tc, epochs=st.skip_epochs or tc.epochs)
    until = {cfg.likelihood: st.max_epochs and training.Plateau(sc.plateau, st.max_epochs, training.loss_floor(cfg, x))
             for cfg in (ae_mse, ae_cfg)}
    family_seeds = {"ae_bottleneck": S, "ae_bottleneck_bce": S, "denoiser_skip": skip_seeds}
    families = {
        "ae_bottleneck": train_family("bottleneck AE, MSE", ae_mse, tc, x, conds + [CLEAN], S, run.log,
                                      until=until["mse"]),
        "ae_bottleneck_bce": train_family("bottleneck AE, BCE", ae_cfg, tc, x, bce_conds, S, run.log,
                                          until=until[ae_cfg.likelihood]),
        "denoiser_skip": train_family("residual conv denoiser", ae_mse, skip_tc, x, skip_conds, skip_seeds, run.log,
                                      objective=squared_error_objective(skip),
                                      init_params=jax.jit(lambda key: skip.init(key, jnp.zeros(x.shape[1:])))),
    }
    reconstruct = {"ae_bottleneck": functools.partial(latent.reconstruct, ae_mse),
                   "ae_bottleneck_bce": functools.partial(latent.reconstruct, ae_cfg),
                   "denoiser_skip": jax.jit(jax.vmap(skip.apply, in_axes=(None, 0)))}
    family_conds = {"ae_bottleneck": conds, "ae_bottleneck_bce": bce_conds, "denoiser_skip": skip_conds}

    ceiling = outputs_per_seed(reconstruct["ae_bottleneck"], families["ae_bottleneck"].params, test, S, len(conds))
    per_image, choices, figure = {}, {}, {}
    shown = [k for k in EXAMPLE_ROWS if k != "denoiser_skip" or all(c in skip_conds for c in conds if c[1] == "clipped")]
    for ci, (sigma, kind) in enumerate(conds):
        clip = kind == "clipped"
        noisy = np.asarray(add_noise(harness.stream(run.key, f"noise/test/{kind}/{sigma}"), test, sigma, clip))
        noisy_ho = np.asarray(add_noise(harness.stream(run.key, f"noise/held_out/{kind}/{sigma}"), held_out, sigma,
                                        clip))
        chosen = {"blur_sigma": best_blur_sigma(held_out, noisy_ho)[0],
                  "wiener_size": best_parameter(lambda n, w: wiener(n, sigma, w), held_out, noisy_ho, WIENER_SIZES)[0],
                  "nl_means_h": best_parameter(lambda n, h: nl_means(n, sigma, h), held_out, noisy_ho, NL_MEANS_H)[0]}
        # blur sigma 0 (no blur) is a natural end; any other choice at an end of its grid may lie beyond it
        chosen["at_grid_end"] = [name for name, v in chosen.items()
                                 if v == GRIDS[name][-1] or (v == GRIDS[name][0] and name != "blur_sigma")]
        choices[kind, sigma] = chosen
        out = {"noisy": noisy[None], "blur": gaussian_blur(noisy, chosen["blur_sigma"])[None],
               "wiener": wiener(noisy, sigma, chosen["wiener_size"])[None],
               "nl_means": nl_means(noisy, sigma, chosen["nl_means_h"])[None], "pca": project(noisy)[None]}
        if n_bm3d:
            out["bm3d"] = bm3d_denoise(noisy[:n_bm3d], sigma)[None]
        for name, fam_conds in family_conds.items():
            if (sigma, kind) in fam_conds:
                c = fam_conds.index((sigma, kind))
                out[name] = outputs_per_seed(reconstruct[name], families[name].params, noisy, family_seeds[name], c)
        out["clean_ceiling"] = ceiling
        for name, images in out.items():  # scores averaged over seeds, kept per image for paired comparisons
            target = test[: images.shape[1]]
            per_image[kind, sigma, name] = {
                "psnr": np.mean([psnr(o, target) for o in images], axis=0),
                "ssim": np.mean([ssim(o, target) for o in images], axis=0)}
        if clip:
            figure[sigma] = np.concatenate([out[k][0][:SHOW] for k in shown] + [test[:SHOW]])
        run.log(f"{kind} σ {sigma}: PSNR " + ", ".join(f"{name} {per_image[kind, sigma, name]['psnr'].mean():.2f}"
                                                        for name in out))

    result = _summarize(per_image, choices, levels)
    result.update(n_train=len(x), n_test=len(test), n_held_out=len(held_out), n_bm3d=n_bm3d,
                  bm3d_quoted=n_bm3d >= MIN_BM3D, pca_components=ae_cfg.latent_dim,
                  epochs=families["ae_bottleneck"].train_cfg.epochs,
                  steps=families["ae_bottleneck"].train_cfg.epochs * (len(x) // tc.batch_size), batch_size=tc.batch_size,
                  plateau={name: t.plateau for name, t in families.items() if t.plateau},
                  model=f"{ae_cfg.arch} ae latent {ae_cfg.latent_dim}",
                  skip_model=f"{skip.depth} conv layers of width {skip.width}, 3x3, no downsampling",
                  skip_training={"seeds": skip_seeds, "epochs": skip_tc.epochs},
                  train_seconds={name: round(t.seconds, 1) for name, t in families.items()})
    result["figures"] = _figures(run, result, figure, levels, shown)
    return harness.finish(run, result, st)


def _summarize(per_image: dict, choices: dict, levels) -> dict:
    """metrics.json's psnr/ssim[kind][method] (per level, None where not run), intervals, paired comparisons."""
    result = {"noise_levels": list(levels), "noise_kinds": list(NOISE_KINDS), "psnr": {}, "ssim": {},
              "psnr_ci": {}, "ssim_ci": {}, "paired": {}, "choices": {}}
    for kind in NOISE_KINDS:
        result["choices"][kind] = [choices[kind, s] for s in levels]
        for score in ("psnr", "ssim"):
            result[score][kind] = {m: [_mean(per_image, kind, s, m, score) for s in levels] for m, _ in METHODS}
            result[f"{score}_ci"][kind] = {m: [_ci(per_image, kind, s, m, score) for s in levels] for m, _ in METHODS}
        result["paired"][kind] = [_paired(per_image, kind, s) for s in levels]
    return result


def _mean(per_image, kind, sigma, method, score):
    v = per_image.get((kind, sigma, method))
    return None if v is None else float(v[score].mean())


def _ci(per_image, kind, sigma, method, score):
    v = per_image.get((kind, sigma, method))
    return None if v is None else list(stats.bootstrap_interval(v[score]))


def _paired(per_image, kind, sigma) -> dict:
    """PSNR of the bottleneck AE minus each other method's, paired by image (on BM3D's subset for BM3D)."""
    ae = per_image[kind, sigma, "ae_bottleneck"]["psnr"]
    out = {}
    for method, _ in METHODS:
        other = per_image.get((kind, sigma, method))
        if method != "ae_bottleneck" and other is not None:
            n = len(other["psnr"])
            out[method] = stats.paired_comparison(ae[:n], other["psnr"])
    return out


def _figures(run, result, figure, levels, shown) -> list[str]:
    panels = {f"clipped noise σ = {sigma}": images for sigma, images in figure.items()}
    figs = [plots.save_image_panels(panels, run.path("denoise_examples.png"), ncol=SHOW,
                                    row_labels=[EXAMPLE_ROWS[k] for k in shown] + ["clean"],
                                    title=f"Test images ({run.dataset}, seed 0)")]
    for kind in NOISE_KINDS:
        psnr_k, ci_k = result["psnr"][kind], result["psnr_ci"][kind]
        series = {label: (list(levels), psnr_k[m], [(hi - lo) / 2 for lo, hi in ci_k[m]])
                  for m, label in METHODS if all(v is not None for v in psnr_k[m])}
        figs.append(plots.save_curves_spread(series, run.path(f"denoise_psnr_{kind}.png"), xlabel="noise σ",
                                             ylabel="PSNR (dB)", title=f"Test PSNR, {kind} noise ({run.dataset}, "
                                                                       f"95% intervals over images)"))
    return [f.split("/")[-1] for f in figs]


# ---------------------------------------------------------------------------- verdict and report


def _best_baseline(m, kind, i) -> str:
    """The baseline the AE leads by least at level i (BM3D only when quoted)."""
    available = [b for b in BASELINES if m["paired"][kind][i].get(b) and (b != "bm3d" or m.get("bm3d_quoted"))]
    return min(available, key=lambda b: m["paired"][kind][i][b]["diff"])


def _kind_verdict(m: dict, kind: str) -> tuple[str, str]:
    """One noise kind: holds when the bottleneck AE's PSNR beats the noisy input and the best baseline at
    every level (95% intervals of the paired differences above 0); does not hold when it beats the noisy
    input at no level; mixed otherwise."""
    parts, vs_noisy, vs_best = [], [], []
    for i, sigma in enumerate(m["noise_levels"]):
        paired = m["paired"][kind][i]
        best = _best_baseline(m, kind, i)
        vs_noisy.append(paired["noisy"]["better"] == 1)
        vs_best.append(paired[best]["better"] == 1)
        skip = m["psnr"][kind]["denoiser_skip"][i]
        parts.append(f"σ {sigma}: AE {m['psnr'][kind]['ae_bottleneck'][i]:.2f} dB, minus noisy "
                     f"{markdown.ci_text(paired['noisy'], '.2f')}, minus {best} {markdown.ci_text(paired[best], '.2f')}"
                     + (f"; residual denoiser {skip:.2f}" if skip is not None else "")
                     + f", clean-input ceiling {m['psnr'][kind]['clean_ceiling'][i]:.2f}")
    nums = "; ".join(parts)
    if all(vs_noisy) and all(vs_best):
        return "holds", f"the bottleneck AE beats the noisy input and every baseline at every level ({nums})."
    if not any(vs_noisy):
        return "does not hold", f"the bottleneck AE's output is not better than the noisy input at any level ({nums})."
    return "mixed", (f"the bottleneck AE beats the noisy input at σ in "
                     f"{[s for s, v in zip(m['noise_levels'], vs_noisy) if v]} and the best baseline at σ "
                     f"in {[s for s, v in zip(m['noise_levels'], vs_best) if v] or 'none'} ({nums}).")


def verdict(m: dict) -> tuple[str, str]:
    """The rule of _kind_verdict on clipped noise (the notes' setting: a sensor saturates) and on unclipped
    noise (the classical denoisers' own); the claim's verdict when both agree, mixed when they differ."""
    per_kind = {kind: _kind_verdict(m, kind) for kind in m["noise_kinds"]}
    found = {v for v, _ in per_kind.values()}
    v = found.pop() if len(found) == 1 else "mixed"
    return v, " ".join(f"{kind.capitalize()} noise, **{kv}**: {text}" for kind, (kv, text) in per_kind.items())


def _plateau_text(plateau: dict) -> str:
    """How many of each family's models passed the plateau test, where they trained until it."""
    return "".join(f" ({name}: {sum(p['passed'])} of {len(p['passed'])} models pass the plateau test, {p['test']}, "
                   f"in {p['epochs']} epochs)" for name, p in plateau.items())


def report(m: dict) -> str:
    lines = [f"PSNR and SSIM on {m['n_test']} test images, every method on the same noisy draw of each image "
             f"(means with 95% bootstrap intervals over images; learned denoisers averaged over {m['seeds']} seeds). "
             f"Bottleneck AE: {m['model']}, trained on {m['n_train']} images for {m['steps']} steps of batch "
             f"{m['batch_size']} per condition{_plateau_text(m.get('plateau', {}))}; residual denoiser: {m['skip_model']}, "
             f"{m['skip_training']['epochs']} epoch(s), {m['skip_training']['seeds']} seed(s) per condition. Blur sigma and non-local-means "
             f"strength and Wiener window chosen on {m['n_held_out']} held-out training-split images; PCA projection "
             f"onto {m['pca_components']} principal components of the clean training images (the code's width). "
             + (f"BM3D on the first {m['n_bm3d']} test images." if m.get("bm3d_quoted") else
                f"BM3D: not compared (not installed here, `pip install -e \".[bm3d]\"`, or run on fewer than "
                f"{MIN_BM3D} test images)."), ""]
    for kind in m["noise_kinds"]:
        rows = []
        for method, label in METHODS:
            if all(v is None for v in m["psnr"][kind][method]) or (method == "bm3d" and not m.get("bm3d_quoted")):
                continue
            rows.append([label] + [_cell(m, kind, method, i) for i in range(len(m["noise_levels"]))])
        lines += [f"**{kind.capitalize()} noise** (PSNR dB / SSIM):", "",
                  markdown.table(["method"] + [f"σ {s}" for s in m["noise_levels"]], rows), "",
                  "Parameters chosen on the held-out images: " + "; ".join(
                      f"σ {s}: blur σ {c['blur_sigma']:g} px, Wiener window {c['wiener_size']}, non-local means h "
                      f"{c['nl_means_h']:g}σ" + (f" (at the end of its grid: {', '.join(c['at_grid_end'])})"
                                                 if c["at_grid_end"] else "")
                      for s, c in zip(m["noise_levels"], m["choices"][kind])) + ".", ""]
    return "\n".join(lines)


def _cell(m, kind, method, i) -> str:
    p, s = m["psnr"][kind][method][i], m["ssim"][kind][method][i]
    if p is None:
        return "—"
    lo, hi = m["psnr_ci"][kind][method][i]
    return f"{p:.2f} [{lo:.2f}, {hi:.2f}] / {s:.3f}"


if __name__ == "__main__":
    harness.cli(main)
