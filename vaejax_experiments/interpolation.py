"""Interpolation (notes 003): decode e = alpha e1 + (1 - alpha) e2 between the embeddings of two
test images of different classes, for an AE and a VAE of the same architecture, linearly and
spherically; score the interior interpolants with the reference classifier.

Besides realism (plausibility, Frechet distance), two measures of the path itself:
- smoothness, in the classifier's feature space: the path's length over the straight distance
  between its ends (1: a straight, even path), and its largest step over its mean step (1: even
  speed; large: the path jumps);
- the notes' "alpha% similar to image 1": the classifier's probability of image 1's class along
  alpha, and its mean absolute gap to alpha itself.
The pixel cross-fade of the same pairs is the control for all of them.

Which scores decide, stated before any number: the interpolants' Frechet distance minus that of the
same model's reconstructions (a blurry decoder pays for its blur in both terms), and the path's
largest step over its mean step (a smooth latent space has no jumps). Plausibility and the Frechet
distance themselves are reported, not deciding: a sharper decoder wins them whatever its latent
space. Margins: the Frechet distance's is what 0.5 px of blur costs on real images; a path
measure's is RELATIVE_MARGIN of the deterministic AE's value."""

from __future__ import annotations

import functools

import numpy as np

from vaejax import latent, plots
from vaejax_experiments import harness, judge, markdown, stats, sweep, training, verdicts

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


def path_smoothness(feats_APF) -> dict:
    """Over pairs, in feature space: path length / end-to-end distance, and largest step / mean step."""
    steps = np.linalg.norm(np.diff(np.asarray(feats_APF, np.float64), axis=0), axis=-1)  # (A - 1, P)
    ends = np.linalg.norm(feats_APF[-1] - feats_APF[0], axis=-1)
    return {"path_stretch": float(np.mean(steps.sum(0) / np.maximum(ends, 1e-12))),
            "max_step_ratio": float(np.mean(steps.max(0) / np.maximum(steps.mean(0), 1e-12)))}


def class_probability(probs_APK, labels_P) -> np.ndarray:
    """(A,) the classifier's mean probability of each pair's image-1 class, along alpha."""
    return np.take_along_axis(probs_APK, np.asarray(labels_P)[None, :, None], axis=-1)[..., 0].mean(-1)


def score_paths(ref, images_APHWC, y1, n_eval: int) -> dict:
    """Paths of images along ALPHAS (a model's or the pixel cross-fade), scored. Floats: realism of the
    first n_eval interior images (plausibility, frechet, ...), path smoothness, the gap between
    P(class of image 1) and alpha. Arrays: per_alpha plausibility and class1 probability (A,)."""
    probs, feats = ref.outputs(images_APHWC.reshape((-1,) + images_APHWC.shape[2:]))
    probs, feats = probs.reshape(images_APHWC.shape[:2] + (-1,)), feats.reshape(images_APHWC.shape[:2] + (-1,))
    inner = slice(1, -1)
    class1 = class_probability(probs, y1)
    return {**ref.scores_of_outputs(probs[inner].reshape(-1, probs.shape[-1])[:n_eval],
                                    feats[inner].reshape(-1, feats.shape[-1])[:n_eval]),
            **path_smoothness(feats), "class1_gap": float(np.mean(np.abs(class1[inner] - ALPHAS[inner]))),
            "per_alpha": probs.max(-1).mean(-1), "class1": class1}


def path_scores(ref, cfg, params, x1, x2, y1, recon_x, n_eval: int, method: str = "linear") -> dict:
    """One model's interpolants between x1 and x2 (score_paths, and the first STRIP_PAIRS paths as
    `strip` for the figure); for linear paths also its reconstructions of recon_x (recon_*) and
    frechet_minus_recon, which do not depend on the path."""
    e1, e2 = latent.embed(cfg, params, x1), latent.embed(cfg, params, x2)
    images_APHWC = np.asarray(latent.decode(cfg, params, latent.interpolate(e1, e2, ALPHAS, method)))
    out = {**score_paths(ref, images_APHWC, y1, n_eval), "strip": images_APHWC[:, :STRIP_PAIRS]}
    if method == "linear":
        recon = ref.scores(np.asarray(latent.reconstruct(cfg, params, recon_x)))
        out.update({f"recon_{k}": v for k, v in recon.items()}, frechet_minus_recon=out["frechet"] - recon["frechet"])
    return out


DECIDING = {"frechet_minus_recon": False, "max_step_ratio": False}  # score: higher is better
REPORTED = {"plausibility": True, "frechet": False, "path_stretch": False, "class1_gap": False}
RELATIVE_MARGIN = 0.05  # a path measure's margin of equivalence, as a fraction of the AE's value
ALONG_SWEEP = ("plausibility", "frechet", "frechet_minus_recon", "max_step_ratio", "class1_gap", "precision", "recall")


def main(scale="quick", dataset=None, seeds=None, out="results", families=()) -> dict:
    """families: user families (families.UserFamily) swept and judged beside the built-in ones."""
    run = harness.start("interpolation", scale, dataset, seeds, out)
    ref = judge.reference(run.scale, run.dataset, out)
    families = sweep.shared(run.scale, run.dataset, run.seeds, log=run.log, extra=families, cache=run.cache)
    ae, vae = sweep.notes_pair(families)
    test = harness.load_images(run.dataset, "test")
    interior = len(ALPHAS) - 2
    n_pairs = int(np.ceil(run.scale.n_eval / interior))
    i1, i2 = different_class_pairs(test.y, n_pairs)
    x1, x2 = test.x[i1], test.x[i2]
    recon_x = harness.eval_images(run.scale, run.dataset).x
    run.log(f"{n_pairs} pairs x {interior} interior alphas, {run.seeds} seeds, every model of the sweep")
    score = functools.partial(path_scores, ref, x1=x1, x2=x2, y1=test.y[i1], recon_x=recon_x, n_eval=run.scale.n_eval)
    along = sweep.score_members(families, lambda cfg, params, s: score(cfg, params))
    per_seed = {"ae": along[sweep.NOTES_AE[0]][sweep.NOTES_AE[1]], "vae": along[sweep.NOTES_VAE[0]][sweep.NOTES_VAE[1]]}
    for name, trained in (("ae_slerp", ae), ("vae_slerp", vae)):  # against the same model's reconstructions
        per_seed[name] = [score(trained.model_cfg, trained.seed_params(s), method="slerp") for s in range(run.seeds)]
        for r, linear in zip(per_seed[name], per_seed[name.split("_")[0]]):
            r["frechet_minus_recon"] = r["frechet"] - linear["recon_frechet"]
    result = {name: stats.summarize([_floats(r, recon=False) for r in rows]) for name, rows in per_seed.items()}
    for name in ("ae", "vae"):
        result[f"{name}_recon"] = stats.summarize([{k[6:]: v for k, v in r.items() if k.startswith("recon_")}
                                                   for r in per_seed[name]])
    fade = ALPHAS[:, None, None, None, None] * x1[None] + (1 - ALPHAS[:, None, None, None, None]) * x2[None]
    fade = score_paths(ref, fade, test.y[i1], run.scale.n_eval)  # the control: the same pairs faded in pixels
    fade_class1 = fade["class1"]
    result["crossfade"] = _floats(fade)
    anchors = judge.reference_anchors(run.scale, run.dataset, out)
    result["controls"] = {"crossfade": result["crossfade"], **judge.controls(anchors)}
    result["sweep"] = sweep.entries(families, along, ALONG_SWEEP)
    result["margins"] = margins(anchors, result["ae"])
    result["comparisons"] = {s: verdicts.against_aes(families, along, s, higher, result["margins"][s])
                             for s, higher in {**DECIDING, **REPORTED}.items()}
    result["positive_controls"] = judge.positive_controls(anchors, {"the pixel cross-fade": result["crossfade"]})
    class1 = {k: np.mean([r["class1"] for r in rows], 0).tolist() for k, rows in per_seed.items()}
    result.update(
        class1_probability={**class1, "crossfade": fade_class1.tolist()},
        alphas=ALPHAS.tolist(), n_pairs=n_pairs, n_interpolants=n_pairs * interior, n_frechet=run.scale.n_eval,
        per_alpha_plausibility={k: np.mean([r["per_alpha"] for r in rows], 0).tolist() for k, rows in per_seed.items()},
        per_alpha_plausibility_std={k: np.std([r["per_alpha"] for r in rows], 0, ddof=1 if len(rows) > 1 else 0).tolist()
                                    for k, rows in per_seed.items()},
        anchors=anchors,
        train={"ae": training.training_summary(ae), "vae": training.training_summary(vae)},
    )
    result["figures"] = _figures(run, {k: rows[0]["strip"] for k, rows in per_seed.items()}, x1, x2, test.y[i1],
                                 test.y[i2], result) + _sweep_figures(run, families, along, result)
    return harness.finish(run, result, sweep.settings_for(run.scale))


def margins(anchors: dict, ae: dict) -> dict[str, float]:
    """Each score's margin of equivalence (the module docstring): from the blur control for the judge's
    scores, RELATIVE_MARGIN of the AE's mean (`ae`: its summarized scores) for the path measures."""
    out = verdicts.margins_from(anchors, ("plausibility", "frechet"))
    out["frechet_minus_recon"] = out["frechet"]
    out.update({s: RELATIVE_MARGIN * abs(ae[s]) for s in ("max_step_ratio", "path_stretch", "class1_gap")})
    return out


def _floats(scores: dict, recon: bool = True) -> dict:
    """The float scores of a path_scores dict (optionally without the reconstructions')."""
    return {k: v for k, v in scores.items() if isinstance(v, float) and (recon or not k.startswith("recon_"))}


def _sweep_figures(run, families, along, result) -> list[str]:
    c = result["controls"]
    figs = []
    for s, label in (("frechet", "Frechet distance ↓"), ("plausibility", "plausibility ↑")):
        levels = {"pixel cross-fade (control)": c["crossfade"][s], "real blurred 1 px (control)": c["blur_1"][s],
                  "real test images": result["anchors"]["real"][s]}
        figs.append(sweep.figure(run.path(f"interpolation_sweep_{s}.png"), families, along, s,
                                 f"interior interpolants: {label}", levels,
                                 f"Interpolants' {s} against distortion ({run.dataset}, linear paths)"))
    return [f.split("/")[-1] for f in figs]


def _figures(run, strips, x1, x2, y1, y2, result) -> list[str]:
    result_alpha, anchors, class1 = result["per_alpha_plausibility"], result["anchors"], result["class1_probability"]
    names = harness.CLASS_NAMES.get(run.dataset)
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
    series = {label: (ALPHAS, np.asarray(result_alpha[key])) for key, label in PATH_LABELS}
    series["real test images"] = (ALPHAS, np.full(len(ALPHAS), anchors["real"]["plausibility"]))
    series["uniform noise"] = (ALPHAS, np.full(len(ALPHAS), anchors["noise"]["plausibility"]))
    figs.append(plots.save_curves(series, run.path("interpolation_plausibility.png"), xlabel="alpha (weight of image 1)",
                                  ylabel="plausibility (mean max-softmax)",
                                  title=f"Plausibility along the path ({run.seeds} seeds)"))
    series = {label: (ALPHAS, np.asarray(class1[key])) for key, label in PATH_LABELS + (("crossfade", "pixel cross-fade"),)}
    series["the notes' claim: α"] = (ALPHAS, ALPHAS)
    figs.append(plots.save_curves(series, run.path("interpolation_class1.png"), xlabel="alpha (weight of image 1)",
                                  ylabel="P(class of image 1)",
                                  title=f"Is the interpolant α% like image 1? ({run.dataset}, mean over pairs)"))
    return [f.split("/")[-1] for f in figs]


def verdict(m: dict) -> tuple[str, str]:
    """The Bernoulli VAE at β 1 against the deterministic AE on the deciding scores (verdicts.decide); the
    reason adds the other families and architectures, the β 0 member, and the controls."""
    c = m["comparisons"]
    family = sweep.NOTES_VAE[0]
    v, reason = verdicts.decide({s: c[s][family]["vs_ae"] for s in DECIDING},
                                "VAE (β 1) - AE on the interpolants' Frechet distance above the model's own "
                                "reconstructions', and on the path's largest step over its mean step")
    others = "; ".join(f"{s}: {a}" for s in DECIDING if (a := verdicts.agreement(c[s], family)))
    beta0 = "; ".join(verdicts.comparison_text(s, c[s][family]["vs_beta0"]) for s in DECIDING if "vs_beta0" in c[s][family])
    return v, (reason + (f" The other families and architectures, against their own AE: {others}." if others else "")
               + (f" Against its own β 0 member: {beta0}." if beta0 else "")
               + f" Not deciding: Frechet distance {verdicts.comparison_text('frechet', c['frechet'][family]['vs_ae'])}"
               f" (the pixel cross-fade of the same pairs scores {m['crossfade']['frechet']:.3g}, real images blurred by "
               f"1 px {m['controls']['blur_1']['frechet']:.3g}). {judge.positive_controls_text(m['positive_controls'])}")


def report(m: dict) -> str:
    def path_cells(d):
        return [markdown.cell(d, "path_stretch", ".3g"), markdown.cell(d, "max_step_ratio", ".3g"),
                markdown.cell(d, "class1_gap", ".3f")]

    rows = [[f"{label}, interior α", markdown.cell(m[key], "plausibility"), markdown.cell(m[key], "frechet"),
             markdown.cell(m[key], "frechet_minus_recon")] + path_cells(m[key])
            for key, label in PATH_LABELS]
    rows += [[label, markdown.cell(m[key], "plausibility"), markdown.cell(m[key], "frechet"), "", "", "", ""]
             for key, label in (("ae_recon", "AE reconstructions (α ∈ {0, 1})"),
                                ("vae_recon", "VAE reconstructions (α ∈ {0, 1})"))]
    rows.append(["pixel cross-fade α·x1 + (1-α)·x2, interior α (control)", f"{m['crossfade']['plausibility']:.3g}",
                 f"{m['crossfade']['frechet']:.3g}", ""] + [f"{m['crossfade'][k]:.3g}" for k in
                                                           ("path_stretch", "max_step_ratio", "class1_gap")])
    rows += judge.anchor_rows(m["anchors"], columns=6)
    t = m["train"]
    head = (f"{m['n_pairs']} test-image pairs of different classes, {len(m['alphas']) - 2} interior α each "
            f"({m['n_interpolants']} images per model; Frechet distance on the first {m['n_frechet']}, the size of "
            f"every scored set). The notes' pair: {t['ae']['preset']} (deterministic) and {t['vae']['preset']} at β 1, "
            f"{t['vae']['n_train']} training images, {t['vae']['epochs']} epochs; final training loss AE "
            f"{markdown.cell(t['ae'], 'final_loss', '.4g')}, VAE {markdown.cell(t['vae'], 'final_loss', '.4g')} nats.")
    table = markdown.table(
        ["images", "plausibility ↑", "frechet ↓", "frechet minus the model's reconstructions' (per seed)",
         "path length / straight line (features)", "largest step / mean step", "mean gap between P(class 1) and α"], rows)
    deciding = ", ".join(DECIDING)
    return "\n\n".join([head, table, f"Deciding scores: {deciding} (module docstring); margins: "
                         + ", ".join(f"{s} ±{v:.3g}" for s, v in m["margins"].items()) + ".",
                         sweep.report(m, [n for n in ALONG_SWEEP if n not in ("precision", "recall")
                                          or judge.precision_recall_valid(m["anchors"])])])


if __name__ == "__main__":
    harness.cli(main)
