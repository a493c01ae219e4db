"""Random latents (seed 003): decode random points of latent space. VAE: z ~ N(0, I), its prior.
AE: there is no prior, so random points with the mean and covariance of its training codes
(a Gaussian fit), uniform in their bounding box, and N(0, I) as the seed literally says. Both:
an ex-post density sampler, a Gaussian mixture of 10 components fitted to the training codes
(Ghosh et al. 2020), which measures what a fitted sampler buys each model."""

from __future__ import annotations

import jax
import numpy as np

from vaejax_experiments import common
from vaejax import latent, plots

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


def main(scale="quick", dataset=None, seeds=None, out="results") -> dict:
    run = common.start("random_latent", scale, dataset, seeds, out)
    ref = common.reference(run.scale, run.dataset, out)
    ae, vae = common.shared_pair(run.scale, run.dataset, run.seeds, log=run.log)
    x_train = common.train_images(run.scale, run.dataset).x
    n = run.scale.n_eval
    rows = {key: [] for key, *_ in SAMPLERS}
    shown = {}
    codes_cache = {}
    for key, model, how, label in SAMPLERS:
        trained = ae if model == "ae" else vae
        for s in range(run.seeds):
            params = trained.seed_params(s)
            if (model, s) not in codes_cache:
                codes_cache[(model, s)] = latent.embed(trained.model_cfg, params, x_train)
            z = draw(jax.random.fold_in(jax.random.key(11), s), how, codes_cache[(model, s)], n)
            images = np.asarray(latent.decode(trained.model_cfg, params, z))
            rows[key].append(ref.scores(images))
            if s == 0:
                shown[label] = images[:SHOW]
    code_scale = {m: common.stat("code_std", [float(np.std(np.asarray(c))) for (mm, _), c in codes_cache.items() if mm == m])
                  for m in ("ae", "vae")}
    result = {key: common.summarize(r) for key, r in rows.items()}
    result.update(
        n_samples=n, code_spread=code_scale,
        anchors=common.reference_anchors(run.scale, run.dataset, out),
        train={"ae": common.training_summary(ae), "vae": common.training_summary(vae)},
    )
    result["figures"] = [plots.save_image_panels(
        {"": np.concatenate(list(shown.values()))}, run.path("random_latent_samples.png"), ncol=SHOW,
        row_labels=[label.replace(", ", "\n", 1) for label in shown],
        title=f"Decoded random latents ({run.dataset}, seed 0)").split("/")[-1]]
    result["scores_note"] = ("precision: share of samples on the real images' feature manifold; recall: share of "
                             "real images on the samples' (Kynkaanniemi et al. 2019, k = 3)")
    return common.finish(run, result)


def verdict(m: dict) -> tuple[str, str]:
    """Holds when the VAE's prior samples beat every AE sampler on both scores (the ex-post GMM included
    where it was run)."""
    samplers = [k for k in AE_SAMPLERS if k in m]
    outcome = {k: [common.better(m, "vae", k, s) for s in ("plausibility", "frechet")] for k in samplers}
    nums = "; ".join(f"{k}: plausibility {common.cell(m[k], 'plausibility')}, Frechet {common.cell(m[k], 'frechet')}"
                     for k in ["vae"] + samplers + (["vae_gmm"] if "vae_gmm" in m else []))
    if all(o == [1, 1] for o in outcome.values()):
        return "holds", f"VAE prior samples beat every AE sampler on both scores ({nums})."
    if all(max(o) <= 0 for o in outcome.values()):
        return "does not hold", f"VAE prior samples are not clearly better than any AE sampler ({nums})."
    beaten = [k for k, o in outcome.items() if o == [1, 1]]
    not_beaten = [k for k, o in outcome.items() if o != [1, 1]]
    return "mixed", (f"VAE prior samples clearly beat {', '.join(beaten) or 'no AE sampler'} on both scores but not "
                     f"{', '.join(not_beaten)} ({nums}).")


def report(m: dict) -> str:
    a = m["anchors"]
    rows = [[label] + [common.cell(m[key], s) if s in m[key] else "" for s in SCORES]
            for key, _, _, label in SAMPLERS if key in m]
    rows += common.anchor_rows(a, columns=len(SCORES), scores=SCORES)
    t = m["train"]
    head = (f"{m['n_samples']} decoded latents per sampler and seed. The same models as the interpolation "
            f"experiment ({t['ae']['preset']}, {t['vae']['preset']}). Spread of the training codes (std over all "
            f"dimensions): AE {common.cell(m['code_spread']['ae'], 'code_std')}, "
            f"VAE (means) {common.cell(m['code_spread']['vae'], 'code_std')}.")
    return head + "\n\n" + common.table(["sampler", "plausibility ↑", "frechet ↓", "precision ↑", "recall ↑",
                                         "KID ↓ (unbiased at any size)"], rows)


if __name__ == "__main__":
    common.cli(main)
