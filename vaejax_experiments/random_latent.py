"""Random latents (notes 003): decode random points of latent space, from each model with each sampler.

Model (the deterministic AE, the VAE at beta 1) times sampler: N(0, I) (the VAE's prior; for the AE what
the notes literally say), a Gaussian with the mean and covariance of the training codes, and an
ex-post density, a Gaussian mixture of 10 components fitted to them (Ghosh et al. 2020); the AE also
uniform in its codes' bounding box. Two questions, each decided by verdicts.decide on plausibility and
the Frechet distance (margins: what 0.5 px of blur costs on them):

- the claim as the notes state it: the VAE sampling its prior against the AE decoding N(0, I);
- is the KL term needed to sample well: the VAE against the AE with the same fitted sampler.

Positive control: an AE with a fitted GMM samples better than with a fitted Gaussian (Ghosh et al.).
Precision and recall are reported only when the judge passes their own check (uniform noise has a
precision near 0); else left out, with the reason."""

from __future__ import annotations

import functools

import jax
import numpy as np

from vaejax import latent, plots
from vaejax_experiments import harness, judge, markdown, stats, sweep, training, verdicts

CLAIM = ("Decoding a random embedding with a plain autoencoder usually gives nonsense, while a VAE, trained to "
         "match a N(0, I) prior, is a true generative model: random latents decode to plausible images.")

SAMPLERS = (  # (key in metrics.json, model, how z is drawn, label)
    ("vae", "vae", "prior", "VAE, z ~ N(0, I) (its prior)"),
    ("vae_fit", "vae", "gaussian_fit", "VAE, z ~ N(mean, cov of its training means)"),
    ("vae_gmm", "vae", "gmm", "VAE, z ~ a 10-component GMM fitted to its training means"),
    ("ae_normal", "ae", "prior", "AE, z ~ N(0, I)"),
    ("ae", "ae", "gaussian_fit", "AE, z ~ N(mean, cov of its training codes)"),
    ("ae_gmm", "ae", "gmm", "AE, z ~ a 10-component GMM fitted to its training codes"),
    ("ae_box", "ae", "box", "AE, z uniform in the codes' bounding box"),
)
FITTED = ("gaussian_fit", "gmm")  # the samplers both models are compared with
FITTED_WORDS = {"gaussian_fit": "Gaussian", "gmm": "10-component GMM"}
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


def sampler_scores(ref, x_train, n: int, key, cfg, params, s: int, samplers=("prior",)) -> dict:
    """<sampler>_<score> of n latents drawn each named way (from key folded with the seed s) from one
    model, decoded and scored; and the first SHOW images of each (<sampler>_images). The training codes
    are embedded only for the samplers fitted to them (then code_std is their spread); the prior needs
    their width alone."""
    fitted = any(how != "prior" for how in samplers)
    codes = latent.embed(cfg, params, x_train if fitted else x_train[:1])
    out = {"code_std": float(np.std(np.asarray(codes)))} if fitted else {}
    for how in samplers:
        images = np.asarray(latent.decode(cfg, params, draw(jax.random.fold_in(key, s), how, codes, n)))
        out.update({f"{how}_{k}": v for k, v in ref.scores(images).items()})
        out[f"{how}_images"] = images[:SHOW]
    return out


DECIDING = {"plausibility": True, "frechet": False}  # score: higher is better


def main(scale="quick", dataset=None, seeds=None, out="results", families=()) -> dict:
    """families: user families (families.UserFamily) swept and judged beside the built-in ones."""
    run = harness.start("random_latent", scale, dataset, seeds, out)
    ref = judge.reference(run.scale, run.dataset, out)
    families = sweep.shared(run.scale, run.dataset, run.seeds, log=run.log, extra=families, cache=run.cache)
    ae, vae = sweep.notes_pair(families)
    x_train = harness.train_images(run.scale, run.dataset).x
    latents_key = harness.stream(run.key, "latents")
    score = functools.partial(sampler_scores, ref, x_train, run.scale.n_eval, latents_key)
    along = sweep.score_members(families, score)
    for fam in families.values():  # the fitted samplers, for every deterministic AE and every VAE at β 1
        for b, beta in enumerate(fam.betas):
            if beta == 1.0 or not any(fam.betas):
                for s, d in enumerate(along[fam.name][beta]):
                    d.update(score(fam.model, fam.trained.seed_params(b * fam.seeds + s), s, samplers=FITTED + ("box",)))
    pair = {"ae": along[sweep.NOTES_AE[0]][sweep.NOTES_AE[1]], "vae": along[sweep.NOTES_VAE[0]][sweep.NOTES_VAE[1]]}
    result, shown = {}, {}
    for key, model, how, label in SAMPLERS:
        result[key] = stats.summarize([{k: r[f"{how}_{k}"] for k in SCORES} for r in pair[model]])
        shown[label] = pair[model][0][f"{how}_images"]
    anchors = judge.reference_anchors(run.scale, run.dataset, out)
    result["sweep"] = sweep.entries(families, along, [f"prior_{k}" for k in SCORES])
    result["margins"] = verdicts.margins_from(anchors, DECIDING)
    result["comparisons"] = {f"{how}_{s}": verdicts.against_aes(families, along, f"{how}_{s}", higher,
                                                                result["margins"][s])
                             for how in ("prior",) + FITTED for s, higher in DECIDING.items()}
    ae_member = (sweep.NOTES_AE[0], 0.0)
    result["ghosh_control"] = {s: verdicts.compare(along, ae_member, ae_member, f"gmm_{s}", higher,
                                                   result["margins"][s], f"gaussian_fit_{s}")
                               for s, higher in DECIDING.items()}
    result["positive_controls"] = judge.positive_controls(anchors)
    result["precision_recall_valid"] = judge.precision_recall_valid(anchors)
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
    return harness.finish(run, result, sweep.settings_for(run.scale))


def verdict(m: dict) -> tuple[str, str]:
    """The claim as the notes state it: the VAE (β 1) sampling its prior against the deterministic AE decoding
    N(0, I); the reason adds the same question with both models on the same fitted sampler, the Ghosh et
    al. control and the judge's positive controls."""
    c, family = m["comparisons"], sweep.NOTES_VAE[0]
    v, reason = verdicts.decide({s: c[f"prior_{s}"][family]["vs_ae"] for s in DECIDING},
                                "VAE prior samples - AE samples of N(0, I)")
    same = []
    for how in FITTED:
        v_how, text = verdicts.decide({s: c[f"{how}_{s}"][family]["vs_ae"] for s in DECIDING},
                                      f"VAE - AE, both sampling a fitted {FITTED_WORDS[how]}")
        same.append(f"**{v_how}** ({text})")
    same = "; ".join(same)
    ghosh = verdicts.decide(m["ghosh_control"], "AE with a fitted GMM - AE with a fitted Gaussian")
    others = verdicts.agreement(c["prior_frechet"], family)
    return v, (reason + f" Is the KL term needed to sample well, the same sampler for both: {same}"
               + (f". Other families and architectures (Frechet, as stated): {others}" if others else "")
               + f". Positive control (Ghosh et al. 2020: a GMM beats a Gaussian fit for an AE): {ghosh[0]}; "
               f"{ghosh[1]} {judge.positive_controls_text(m['positive_controls'])}")


def report(m: dict) -> str:
    a = m["anchors"]
    shown = SCORES if m.get("precision_recall_valid") else tuple(s for s in SCORES if s not in ("precision", "recall"))
    rows = [[label] + [markdown.cell(m[key], s) if s in m[key] else "" for s in shown]
            for key, _, _, label in SAMPLERS if key in m]
    rows += judge.anchor_rows(a, columns=len(shown), scores=shown)
    t = m["train"]
    head = (f"{m['n_samples']} decoded latents per sampler and seed. The same models as the interpolation "
            f"experiment ({t['ae']['preset']}, {t['vae']['preset']}). Spread of the training codes (std over all "
            f"dimensions): AE {markdown.cell(m['code_spread']['ae'], 'code_std')}, "
            f"VAE (means) {markdown.cell(m['code_spread']['vae'], 'code_std')}.")
    names = {"plausibility": "plausibility ↑", "frechet": "frechet ↓", "precision": "precision ↑",
             "recall": "recall ↑", "kid": "KID ↓ (unbiased at any size)"}
    table = markdown.table(["sampler"] + [names[s] for s in shown], rows)
    dropped = ("" if m.get("precision_recall_valid") else
               f" Precision and recall are left out: the judge fails their own check (uniform noise has precision "
               f"{a['noise']['precision']:.2f}, not below {judge.NOISE_PRECISION}).")
    margins = ", ".join(f"{s} ±{v:.3g}" for s, v in m["margins"].items())
    return "\n\n".join([head + dropped, table, f"Margins of equivalence (0.5 px of blur on real images): {margins}.",
                         sweep.report(m, [f"prior_{k}" for k in shown])])


if __name__ == "__main__":
    harness.cli(main)
