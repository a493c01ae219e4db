"""Interpolation (seed 003): decode e = alpha e1 + (1 - alpha) e2 between the embeddings of two
test images of different classes, for an AE and a VAE of the same architecture; score the
interior interpolants with the reference classifier; spherical interpolation for the VAE too."""

from __future__ import annotations

import numpy as np

from vaejax_experiments import common
from vaejax import latent, plots

CLAIM = ("Decoding e = alpha e1 + (1 - alpha) e2 between the embeddings of two images gives new in-between "
         "images, and a VAE, whose latent space is made smooth, gives more plausible interpolants than a plain "
         "autoencoder.")

ALPHAS = np.linspace(0.0, 1.0, 10)  # interior: the 8 values strictly between 0 and 1
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

    rows = {"ae": [], "vae": [], "vae_slerp": [], "ae_recon": [], "vae_recon": []}
    per_alpha = {"ae": [], "vae": [], "vae_slerp": []}
    strips = {}
    for name, trained, method in (("ae", ae, "linear"), ("vae", vae, "linear"), ("vae_slerp", vae, "slerp")):
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
                               "frechet": ref.frechet_of_features(inner_f)})
            per_alpha[name].append(probs.max(-1).mean(-1))
            if s == 0:
                strips[name] = images_APHWC[:, :STRIP_PAIRS]
            if method == "linear":
                rec = np.asarray(latent.decode(cfg, params, latent.embed(cfg, params, recon_x)))
                rows[f"{name}_recon"].append(ref.scores(rec))
    result = {name: common.summarize(r) for name, r in rows.items()}
    for name in ("ae", "vae", "vae_slerp"):  # each model against its own reconstructions, seed by seed
        own = rows[f"{name.split('_')[0]}_recon"]
        result[name].update(common.stat("frechet_minus_recon", [r["frechet"] - o["frechet"]
                                                                for r, o in zip(rows[name], own)]))
    inner = ALPHAS[1:-1, None, None, None, None]
    crossfade = (inner * x1[None] + (1 - inner) * x2[None]).reshape((-1,) + x1.shape[1:])[: run.scale.n_eval]
    result["crossfade"] = ref.scores(crossfade)  # the control: the same pairs faded in pixel space
    result.update(
        alphas=ALPHAS.tolist(), n_pairs=n_pairs, n_interpolants=n_pairs * interior, n_frechet=run.scale.n_eval,
        per_alpha_plausibility={k: np.mean(v, 0).tolist() for k, v in per_alpha.items()},
        per_alpha_plausibility_std={k: np.std(v, 0, ddof=1 if len(v) > 1 else 0).tolist() for k, v in per_alpha.items()},
        anchors=common.reference_anchors(run.scale, run.dataset, out),
        train={"ae": common.training_summary(ae), "vae": common.training_summary(vae)},
        figures=_figures(run, strips, x1, x2, test.y[i1], test.y[i2], result_alpha=per_alpha,
                         anchors=common.reference_anchors(run.scale, run.dataset, out)),
    )
    return common.finish(run, result)


def _figures(run, strips, x1, x2, y1, y2, result_alpha, anchors) -> list[str]:
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
    series = {label: (ALPHAS, np.mean(result_alpha[key], 0))
              for key, label in (("ae", "AE linear"), ("vae", "VAE linear"), ("vae_slerp", "VAE spherical"))}
    series["real test images"] = (ALPHAS, np.full(len(ALPHAS), anchors["real"]["plausibility"]))
    series["uniform noise"] = (ALPHAS, np.full(len(ALPHAS), anchors["noise"]["plausibility"]))
    figs.append(plots.save_curves(series, run.path("interpolation_plausibility.png"), xlabel="alpha (weight of image 1)",
                                  ylabel="plausibility (mean max-softmax)",
                                  title=f"Plausibility along the path ({run.seeds} seeds)"))
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
    return v, reason + relative


def report(m: dict) -> str:
    a = m["anchors"]
    rows = [[label, common.cell(m[key], "plausibility"), common.cell(m[key], "frechet"),
             common.cell(m[key], "frechet_minus_recon")]
            for key, label in (("ae", "AE, linear, interior α"), ("vae", "VAE, linear, interior α"),
                               ("vae_slerp", "VAE, spherical, interior α"))]
    rows += [[label, common.cell(m[key], "plausibility"), common.cell(m[key], "frechet"), ""]
             for key, label in (("ae_recon", "AE reconstructions (α ∈ {0, 1})"),
                                ("vae_recon", "VAE reconstructions (α ∈ {0, 1})"))]
    if "crossfade" in m:
        rows.append(["pixel cross-fade (1-α)·x2 + α·x1, interior α (control)", f"{m['crossfade']['plausibility']:.3g}",
                     f"{m['crossfade']['frechet']:.3g}", ""])
    rows += common.anchor_rows(a, columns=3)
    t = m["train"]
    head = (f"{m['n_pairs']} test-image pairs of different classes, {len(m['alphas']) - 2} interior α each "
            f"({m['n_interpolants']} images per model; Frechet distance on the first {m['n_frechet']}, the size of every scored set). "
            f"Models: {t['ae']['preset']} and {t['vae']['preset']}, {t['vae']['n_train']} training images, "
            f"{t['vae']['epochs']} epochs; final training loss AE {common.cell(t['ae'], 'final_loss', '.4g')}, "
            f"VAE {common.cell(t['vae'], 'final_loss', '.4g')} nats.")
    return head + "\n\n" + common.table(["images", "plausibility ↑", "frechet ↓",
                                         "frechet minus the model's reconstructions' (per seed)"], rows)


if __name__ == "__main__":
    common.cli(main)
