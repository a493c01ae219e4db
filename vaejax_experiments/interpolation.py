"""Interpolation (seed 003): decode e = alpha e1 + (1 - alpha) e2 between the embeddings of two
test images of different classes, for an AE and a VAE of the same architecture, linearly and
spherically; score the interior interpolants with the reference classifier.

Besides realism (plausibility, Frechet distance), two measures of the path itself:
- smoothness, in the classifier's feature space: the path's length over the straight distance
  between its ends (1: a straight, even path), and its largest step over its mean step (1: even
  speed; large: the path jumps);
- the seed's "alpha% similar to image 1": the classifier's probability of image 1's class along
  alpha, and its mean absolute gap to alpha itself.
The pixel cross-fade of the same pairs is the control for all of them."""

from __future__ import annotations

import numpy as np

from vaejax_experiments import common
from vaejax import latent, plots

CLAIM = ("Decoding e = alpha e1 + (1 - alpha) e2 between the embeddings of two images gives new in-between "
         "images, and a VAE, whose latent space is made smooth, gives more plausible interpolants than a plain "
         "autoencoder.")

ALPHAS = np.linspace(0.0, 1.0, 10)  # interior: the 8 values strictly between 0 and 1
PATH_LABELS = (("ae", "AE linear"), ("ae_slerp", "AE spherical"), ("vae", "VAE linear"), ("vae_slerp", "VAE spherical"))
STRIP_PAIRS = 6


def different_class_pairs(labels, n_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (i, j), n_pairs long, of images with different labels (deterministic)."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    while len(first) < n_pairs:
        i, j = rng.integers(0, len(labels), 2)
        if labels[i] != labels[j]:
            first.append(i)
            second.append(j)
    return np.array(first), np.array(second)


def interpolation_paths(ae, vae):
    """(name, trained models, interpolation method) of every path scored."""
    return (("ae", ae, "linear"), ("ae_slerp", ae, "slerp"), ("vae", vae, "linear"), ("vae_slerp", vae, "slerp"))


def path_smoothness(feats_APF) -> dict:
    """Over pairs, in feature space: path length / end-to-end distance, and largest step / mean step."""
    steps = np.linalg.norm(np.diff(np.asarray(feats_APF, np.float64), axis=0), axis=-1)  # (A - 1, P)
    ends = np.linalg.norm(feats_APF[-1] - feats_APF[0], axis=-1)
    return {"path_stretch": float(np.mean(steps.sum(0) / np.maximum(ends, 1e-12))),
            "max_step_ratio": float(np.mean(steps.max(0) / np.maximum(steps.mean(0), 1e-12)))}


def class_probability(probs_APK, labels_P) -> np.ndarray:
    """(A,) the classifier's mean probability of each pair's image-1 class, along alpha."""
    return np.take_along_axis(probs_APK, np.asarray(labels_P)[None, :, None], axis=-1)[..., 0].mean(-1)


def main(scale="quick", dataset=None, seeds=None, out="results") -> dict:
    run = common.start("interpolation", scale, dataset, seeds, out)
    ref = common.reference(run.scale, run.dataset, out)
    ae, vae = common.shared_pair(run.scale, run.dataset, run.seeds, log=run.log)
    test = common.load_images(run.dataset, "test")
    interior = len(ALPHAS) - 2
    n_pairs = int(np.ceil(run.scale.n_eval / interior))
    i1, i2 = different_class_pairs(test.y, n_pairs)
    x1, x2 = test.x[i1], test.x[i2]
    recon_x = common.eval_images(run.scale, run.dataset).x
    run.log(f"{n_pairs} pairs x {interior} interior alphas, {run.seeds} seeds")

    rows = {"ae": [], "ae_slerp": [], "vae": [], "vae_slerp": [], "ae_recon": [], "vae_recon": []}
    per_alpha = {"ae": [], "ae_slerp": [], "vae": [], "vae_slerp": []}
    class1 = {name: [] for name in per_alpha}
    strips = {}
    for name, trained, method in interpolation_paths(ae, vae):
        cfg = trained.model_cfg
        for s in range(run.seeds):
            params = trained.seed_params(s)
            e1, e2 = latent.embed(cfg, params, x1), latent.embed(cfg, params, x2)
            images_APHWC = np.asarray(latent.decode(cfg, params, latent.interpolate(e1, e2, ALPHAS, method)))
            probs, feats = ref.outputs(images_APHWC.reshape((-1,) + images_APHWC.shape[2:]))
            probs = probs.reshape(len(ALPHAS), n_pairs, -1)
            feats = feats.reshape(len(ALPHAS), n_pairs, -1)
            inner_f = feats[1:-1].reshape(-1, feats.shape[-1])[: run.scale.n_eval]
            rows[name].append({"plausibility": float(probs[1:-1].max(-1).mean()),
                               "frechet": ref.frechet_of_features(inner_f), **path_smoothness(feats)})
            per_alpha[name].append(probs.max(-1).mean(-1))
            class1[name].append(class_probability(probs, test.y[i1]))
            if s == 0:
                strips[name] = images_APHWC[:, :STRIP_PAIRS]
            if method == "linear":
                rec = np.asarray(latent.reconstruct(cfg, params, recon_x))
                rows[f"{name}_recon"].append(ref.scores(rec))
    result = {name: common.summarize(r) for name, r in rows.items()}
    for name in ("ae", "ae_slerp", "vae", "vae_slerp"):  # each model against its own reconstructions, seed by seed
        own = rows[f"{name.split('_')[0]}_recon"]
        result[name].update(common.stat("frechet_minus_recon", [r["frechet"] - o["frechet"]
                                                                for r, o in zip(rows[name], own)]))
    fade = ALPHAS[:, None, None, None, None] * x1[None] + (1 - ALPHAS[:, None, None, None, None]) * x2[None]
    fade_probs, fade_feats = ref.outputs(fade.reshape((-1,) + x1.shape[1:]))
    fade_probs, fade_feats = fade_probs.reshape(len(ALPHAS), n_pairs, -1), fade_feats.reshape(len(ALPHAS), n_pairs, -1)
    scored = slice(0, run.scale.n_eval)  # as many interior images as every scored set
    result["crossfade"] = {  # the control: the same pairs faded in pixel space
        **ref.scores_of_outputs(fade_probs[1:-1].reshape(-1, fade_probs.shape[-1])[scored],
                                fade_feats[1:-1].reshape(-1, fade_feats.shape[-1])[scored]),
        **path_smoothness(fade_feats)}
    class1["crossfade"] = [class_probability(fade_probs, test.y[i1])]
    result["class1_probability"] = {k: np.mean(v, 0).tolist() for k, v in class1.items()}
    result["class1_gap"] = {k: common.stat("gap", [float(np.mean(np.abs(c[1:-1] - ALPHAS[1:-1]))) for c in v])
                            for k, v in class1.items()}
    result.update(
        alphas=ALPHAS.tolist(), n_pairs=n_pairs, n_interpolants=n_pairs * interior, n_frechet=run.scale.n_eval,
        per_alpha_plausibility={k: np.mean(v, 0).tolist() for k, v in per_alpha.items()},
        per_alpha_plausibility_std={k: np.std(v, 0, ddof=1 if len(v) > 1 else 0).tolist() for k, v in per_alpha.items()},
        anchors=common.reference_anchors(run.scale, run.dataset, out),
        train={"ae": common.training_summary(ae), "vae": common.training_summary(vae)},
        figures=_figures(run, strips, x1, x2, test.y[i1], test.y[i2], result_alpha=per_alpha,
                         anchors=common.reference_anchors(run.scale, run.dataset, out),
                         class1=result["class1_probability"]),
    )
    return common.finish(run, result)


def _figures(run, strips, x1, x2, y1, y2, result_alpha, anchors, class1) -> list[str]:
    names = common.CLASS_NAMES.get(run.dataset)
    k = STRIP_PAIRS
    panels = {}
    for name, title in (("ae", "AE, linear"), ("vae", "VAE, linear"), ("vae_slerp", "VAE, spherical")):
        # Columns: image 1, decoded alpha = 1 .. 0, image 2.
        decoded = strips[name][::-1].transpose(1, 0, 2, 3, 4)  # (pairs, alphas descending, H, W, C)
        panels[title] = np.concatenate([x1[:k, None], decoded, x2[:k, None]], axis=1).reshape((-1,) + x1.shape[1:])
    row_labels = [f"{names[a]}→{names[b]}" if names else f"{a}→{b}" for a, b in zip(y1[:k], y2[:k])]
    col_labels = ["x1"] + [f"{a:.2f}" for a in ALPHAS[::-1]] + ["x2"]
    figs = [plots.save_image_panels(panels, run.path("interpolation_strips.png"), ncol=len(ALPHAS) + 2,
                                    row_labels=row_labels, col_labels=col_labels, vertical=True,
                                    title=f"Decoded e = α·e1 + (1-α)·e2, α from 1 to 0 ({run.dataset}, seed 0)")]
    series = {label: (ALPHAS, np.mean(result_alpha[key], 0)) for key, label in PATH_LABELS}
    series["real test images"] = (ALPHAS, np.full(len(ALPHAS), anchors["real"]["plausibility"]))
    series["uniform noise"] = (ALPHAS, np.full(len(ALPHAS), anchors["noise"]["plausibility"]))
    figs.append(plots.save_curves(series, run.path("interpolation_plausibility.png"), xlabel="alpha (weight of image 1)",
                                  ylabel="plausibility (mean max-softmax)",
                                  title=f"Plausibility along the path ({run.seeds} seeds)"))
    series = {label: (ALPHAS, np.asarray(class1[key])) for key, label in PATH_LABELS + (("crossfade", "pixel cross-fade"),)}
    series["the seed's claim: α"] = (ALPHAS, ALPHAS)
    figs.append(plots.save_curves(series, run.path("interpolation_class1.png"), xlabel="alpha (weight of image 1)",
                                  ylabel="P(class of image 1)",
                                  title=f"Is the interpolant α% like image 1? ({run.dataset}, mean over pairs)"))
    return [f.split("/")[-1] for f in figs]


def verdict(m: dict) -> tuple[str, str]:
    """On absolute scores (common.compare_verdict); the reason adds each model's interpolants measured against
    its own reconstructions, and the pixel cross-fade control, because the two models' decoders differ in
    sharpness by more than the effect tested."""
    v, reason = common.compare_verdict(m, "vae", "ae", "the VAE's interior interpolants", "the AE's")
    if "frechet_minus_recon" not in m["ae"]:
        return v, reason
    relative = (f" Against each model's own reconstructions, the interpolants' Frechet distance rises by "
                f"{common.cell(m['ae'], 'frechet_minus_recon')} (AE) and {common.cell(m['vae'], 'frechet_minus_recon')} "
                f"(VAE; spherical {common.cell(m['vae_slerp'], 'frechet_minus_recon')}); a pixel cross-fade of the same "
                f"pairs scores {m['crossfade']['frechet']:.3g}. The absolute verdict compares decoders of different "
                f"sharpness (reconstructions: AE {common.cell(m['ae_recon'], 'frechet')}, VAE "
                f"{common.cell(m['vae_recon'], 'frechet')}), not only their latent spaces.")
    if "class1_gap" in m:
        g = m["class1_gap"]
        relative += (f" Along the path, the largest step over the mean step in the classifier's features is "
                     f"{common.cell(m['ae'], 'max_step_ratio')} (AE), {common.cell(m['vae'], 'max_step_ratio')} (VAE) "
                     f"and {m['crossfade']['max_step_ratio']:.3g} for the cross-fade; the probability of image 1's class "
                     f"departs from α by {common.cell(g['ae'], 'gap', '.3f')} (AE), {common.cell(g['vae'], 'gap', '.3f')} "
                     f"(VAE) and {g['crossfade']['gap']:.3f} (cross-fade) on average.")
    return v, reason + relative


def report(m: dict) -> str:
    a = m["anchors"]
    gap = m.get("class1_gap", {})

    def path_cells(d, key):
        return ([common.cell(d, "path_stretch", ".3g"), common.cell(d, "max_step_ratio", ".3g"),
                 common.cell(gap[key], "gap", ".3f")] if key in gap else ["", "", ""])

    rows = [[f"{label}, interior α", common.cell(m[key], "plausibility"), common.cell(m[key], "frechet"),
             common.cell(m[key], "frechet_minus_recon")] + path_cells(m[key], key)
            for key, label in PATH_LABELS if key in m]
    rows += [[label, common.cell(m[key], "plausibility"), common.cell(m[key], "frechet"), "", "", "", ""]
             for key, label in (("ae_recon", "AE reconstructions (α ∈ {0, 1})"),
                                ("vae_recon", "VAE reconstructions (α ∈ {0, 1})"))]
    if "crossfade" in m:
        rows.append(["pixel cross-fade α·x1 + (1-α)·x2, interior α (control)", f"{m['crossfade']['plausibility']:.3g}",
                     f"{m['crossfade']['frechet']:.3g}", ""] + path_cells(m["crossfade"], "crossfade"))
    rows += common.anchor_rows(a, columns=6)
    t = m["train"]
    head = (f"{m['n_pairs']} test-image pairs of different classes, {len(m['alphas']) - 2} interior α each "
            f"({m['n_interpolants']} images per model; Frechet distance on the first {m['n_frechet']}, the size of every scored set). "
            f"Models: {t['ae']['preset']} and {t['vae']['preset']}, {t['vae']['n_train']} training images, "
            f"{t['vae']['epochs']} epochs; final training loss AE {common.cell(t['ae'], 'final_loss', '.4g')}, "
            f"VAE {common.cell(t['vae'], 'final_loss', '.4g')} nats.")
    return head + "\n\n" + common.table(
        ["images", "plausibility ↑", "frechet ↓", "frechet minus the model's reconstructions' (per seed)",
         "path length / straight line (features)", "largest step / mean step", "mean gap between P(class 1) and α"], rows)


if __name__ == "__main__":
    common.cli(main)
