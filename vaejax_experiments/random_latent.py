"""Random latents (notes 003): decode random points of latent space. VAE: z ~ N(0, I), its prior.
AE: there is no prior, so random points with the mean and covariance of its training codes
(a Gaussian fit), uniform in their bounding box, and N(0, I) as the notes literally say. Both:
an ex-post density sampler, a Gaussian mixture of 10 components fitted to the training codes
(Ghosh et al. 2020), which measures what a fitted sampler buys each model."""

from __future__ import annotations

import functools

import jax
import numpy as np

from vaejax import latent, plots
from vaejax_experiments import harness, judge, markdown, stats, sweep, training

CLAIM = ("Decoding a random embedding with a plain autoencoder usually gives nonsense, while a VAE, trained to "
         "match a N(0, I) prior, is a true generative model: random latents decode to plausible images.")

SAMPLERS = (  # (key in metrics.json, model, how z is drawn, label)
    ("vae", "vae", "prior", "VAE, z ~ N(0, I) (its prior)"),
    ("ae", "ae", "gaussian_fit", "AE, z ~ N(mean, cov of its training codes)"),
    ("ae_box", "ae", "box", "AE, z uniform in the codes' bounding box"),
    ("ae_normal", "ae", "prior", "AE, z ~ N(0, I)"),
    ("ae_gmm", "ae", "gmm", "AE, z ~ a 10-component GMM fitted to its training codes"),
    ("vae_gmm", "vae", "gmm", "VAE, z ~ a 10-component GMM fitted to its training means"),
)
AE_SAMPLERS = ("ae", "ae_box", "ae_normal", "ae_gmm")
SHOW = 10  # images per sampler in the figure
SCORES = ("plausibility", "frechet", "precision", "recall", "kid")


def draw(key, how: str, codes_ND, n: int):
    """n latents drawn the named way ('prior', 'gaussian_fit', 'box', 'gmm') given training codes."""
    if how == "prior":
        return latent.prior_samples(key, n, codes_ND.shape[-1])
    if how == "gaussian_fit":
        return latent.gaussian_fit_samples(key, codes_ND, n)
    if how == "gmm":
        return latent.gmm_samples(key, codes_ND, n)
    return latent.bounding_box_samples(key, codes_ND, n)


def sampler_scores(ref, x_train, n: int, cfg, params, s: int, samplers=("prior",)) -> dict:
    """<sampler>_<score> of n latents drawn each named way from one model, decoded and scored; and the
    first SHOW images of each (<sampler>_images). The training codes are embedded only for the samplers
    fitted to them (then code_std is their spread); the prior needs their width alone."""
    fitted = any(how != "prior" for how in samplers)
    codes = latent.embed(cfg, params, x_train if fitted else x_train[:1])
    out = {"code_std": float(np.std(np.asarray(codes)))} if fitted else {}
    for how in samplers:
        images = np.asarray(latent.decode(cfg, params, draw(jax.random.fold_in(jax.random.key(11), s), how, codes, n)))
        out.update({f"{how}_{k}": v for k, v in ref.scores(images).items()})
        out[f"{how}_images"] = images[:SHOW]
    return out


DECIDING = {"plausibility": True, "frechet": False}  # the VAE's prior against the AE's Gaussian fit


def main(scale="quick", dataset=None, seeds=None, out="results", families=()) -> dict:
    """families: user families (families.UserFamily) swept and judged beside the built-in ones."""
    run = harness.start("random_latent", scale, dataset, seeds, out)
    ref = judge.reference(run.scale, run.dataset, out)
    families = sweep.shared(run.scale, run.dataset, run.seeds, log=run.log, extra=families, cache=run.cache)
    ae, vae = sweep.notes_pair(families)
    x_train = harness.train_images(run.scale, run.dataset).x
    score = functools.partial(sampler_scores, ref, x_train, run.scale.n_eval)
    along = sweep.score_members(families, score)
    for s, d in enumerate(along[sweep.NOTES_AE[0]][sweep.NOTES_AE[1]]):  # the AE's other samplers
        d.update(score(ae.model_cfg, ae.seed_params(s), s, samplers=("gaussian_fit", "box", "gmm")))
    for s, d in enumerate(along[sweep.NOTES_VAE[0]][sweep.NOTES_VAE[1]]):
        d.update(score(vae.model_cfg, vae.seed_params(s), s, samplers=("gmm",)))
    pair = {"ae": along[sweep.NOTES_AE[0]][sweep.NOTES_AE[1]], "vae": along[sweep.NOTES_VAE[0]][sweep.NOTES_VAE[1]]}
    result, shown = {}, {}
    for key, model, how, label in SAMPLERS:
        result[key] = stats.summarize([{k: r[f"{how}_{k}"] for k in SCORES} for r in pair[model]])
        shown[label] = pair[model][0][f"{how}_images"]
    anchors = judge.reference_anchors(run.scale, run.dataset, out)
    result["sweep"] = sweep.entries(families, along, [f"prior_{k}" for k in SCORES])
    result["matched"] = {
        **{s: sweep.matched(families, along, f"prior_{s}", higher, ae_score=f"gaussian_fit_{s}")
           for s, higher in DECIDING.items()},
        **{f"{s}_vs_ae_gmm": sweep.matched(families, along, f"prior_{s}", higher, ae_score=f"gmm_{s}")
           for s, higher in DECIDING.items()}}
    result.update(
        n_samples=run.scale.n_eval, anchors=anchors, controls=judge.controls(anchors),
        code_spread={m: stats.stat("code_std", [r["code_std"] for r in rows]) for m, rows in pair.items()},
        train={"ae": training.training_summary(ae), "vae": training.training_summary(vae)},
    )
    result["figures"] = [plots.save_image_panels(
        {"": np.concatenate(list(shown.values()))}, run.path("random_latent_samples.png"), ncol=SHOW,
        row_labels=[label.replace(", ", "\n", 1) for label in shown],
        title=f"Decoded random latents ({run.dataset}, seed 0)").split("/")[-1]]
    for s, label in (("frechet", "Frechet distance ↓"), ("plausibility", "plausibility ↑")):
        levels = {"AE, Gaussian fit to its codes": result["ae"][s], "AE, 10-component GMM": result["ae_gmm"][s],
                  "real blurred 1 px (control)": anchors["blur_1"][s], "real test images": anchors["real"][s]}
        result["figures"].append(sweep.figure(
            run.path(f"random_latent_sweep_{s}.png"), families, along, f"prior_{s}", f"samples from N(0, I): {label}",
            levels, f"Prior samples' {s} against distortion ({run.dataset})").split("/")[-1])
    result["scores_note"] = ("precision: share of samples on the real images' feature manifold; recall: share of "
                             "real images on the samples' (Kynkaanniemi et al. 2019, k = 3)")
    return harness.finish(run, result)


def verdict(m: dict) -> tuple[str, str]:
    """At matched distortion, the VAE's prior samples against the AE's samples from a Gaussian fitted to its
    codes (the AE's counterpart of a prior); the reason adds the 10-component GMM and the notes' pair."""
    v, reason = sweep.verdict({s: m["matched"][s] for s in DECIDING},
                              "its prior samples (the AE: samples of a Gaussian fitted to its codes)")
    g = m["matched"]
    return v, (reason + f" Against the AE with a 10-component GMM on its codes, VAE prior - AE GMM at matched "
               f"distortion: Frechet {sweep.difference_text(g['frechet_vs_ae_gmm'])}, plausibility "
               f"{sweep.difference_text(g['plausibility_vs_ae_gmm'])}. The notes' pair, unmatched: Frechet VAE prior "
               f"{markdown.cell(m['vae'], 'frechet')}, AE Gaussian fit {markdown.cell(m['ae'], 'frechet')}, AE GMM "
               f"{markdown.cell(m['ae_gmm'], 'frechet')}, AE N(0, I) {markdown.cell(m['ae_normal'], 'frechet')}, VAE GMM "
               f"{markdown.cell(m['vae_gmm'], 'frechet')}.")


def report(m: dict) -> str:
    a = m["anchors"]
    rows = [[label] + [markdown.cell(m[key], s) if s in m[key] else "" for s in SCORES]
            for key, _, _, label in SAMPLERS if key in m]
    rows += judge.anchor_rows(a, columns=len(SCORES), scores=SCORES)
    t = m["train"]
    head = (f"{m['n_samples']} decoded latents per sampler and seed. The same models as the interpolation "
            f"experiment ({t['ae']['preset']}, {t['vae']['preset']}). Spread of the training codes (std over all "
            f"dimensions): AE {markdown.cell(m['code_spread']['ae'], 'code_std')}, "
            f"VAE (means) {markdown.cell(m['code_spread']['vae'], 'code_std')}.")
    table = markdown.table(["sampler", "plausibility ↑", "frechet ↓", "precision ↑", "recall ↑",
                            "KID ↓ (unbiased at any size)"], rows)
    return "\n\n".join([head, table, sweep.report(m, [f"prior_{k}" for k in SCORES])])


if __name__ == "__main__":
    harness.cli(main)
