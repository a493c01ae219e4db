"""From AE to VAE: one family of models per likelihood, swept over the KL weight beta.

The sweep is the one the latent-space experiments share (vaejax_experiments.sweep): each family is
the scale's VAE architecture with one likelihood, every beta and seed one model of one compiled
program; at beta = 0 the family's autoencoder. For every model, on test images:

- rate: the mean KL(q(z|x) || N(0, I)) in nats, what the code spends;
- distortion: the mean squared error per pixel of the mean reconstruction at z = mu;
- active units: latent dimensions whose posterior mean varies over images, Cov_x(E_q[z_d]) > 0.01
  (Burda et al. 2016);
- noise ratio: the posterior's standard deviation over the spread of the codes, averaged over
  dimensions: 0 for a deterministic code. The beta = 0 member trains with the encoder's noise,
  so it is an AE only as far as this ratio is small.

Families: Bernoulli (the notes'), a Gaussian with fixed sigma 0.1, which weighs a grey pixel's
error about as an MSE does, and at full scale the sigma-VAE (Rybkin et al. 2021), which learns one
sigma. The figures set rate and active units against distortion, a curve per family; comparing
an AE with a VAE at equal distortion means reading these curves at the AE's distortion.
"""

from __future__ import annotations

import math

import numpy as np

from vaejax import plots
from vaejax_experiments import families, harness, markdown, stats, sweep

TITLE = "Rate and distortion: from AE to VAE"
CLAIM = ("Between the autoencoder (beta = 0) and the VAE (beta = 1) lies a curve: a larger KL weight buys a "
         "cheaper, more regular code with blurrier reconstructions, and where a model sits on it depends on the "
         "likelihood as much as on beta.")
MEASURES = ("rate", "distortion", "active_units", "noise_ratio")


def main(scale="quick", dataset=None, seeds=None, out="results", families=()) -> dict:
    """families: user families (families.UserFamily) swept beside the built-in ones."""
    run = harness.start("rate_distortion", scale, dataset, seeds, out)
    families = sweep.shared(run.scale, run.dataset, run.seeds, log=run.log, extra=families, cache=run.cache)
    first = next(iter(families.values())).trained
    result = {"betas": list(sweep.settings_for(run.scale).betas), "families": list(families), "sweep": {},
              "n_train": first.n_train, "n_test": len(harness.eval_images(run.scale, run.dataset).x),
              "epochs": first.train_cfg.epochs, "batch_size": first.train_cfg.batch_size}
    for name, fam in families.items():
        entry = {"model": sweep.describe(fam), "betas": list(fam.betas), "seconds": round(fam.trained.seconds, 1)}
        for measure in MEASURES:
            per_beta = [stats.mean_std(v) for v in getattr(fam, measure)]
            entry[measure] = [m for m, _ in per_beta]
            entry[f"{measure}_std"] = [s for _, s in per_beta]
            entry[f"{measure}_seeds"] = getattr(fam, measure).tolist()
        loss = fam.trained.curves["loss"].reshape(len(fam.betas), fam.seeds, -1).mean(1)  # (betas, epochs)
        entry["loss_curve"] = loss.tolist()
        entry["last_quarter_change"] = stats.last_quarter_change(loss).tolist()
        if fam.trained.plateau is not None:
            entry["plateau"] = fam.trained.plateau
        result["sweep"][name] = entry
        run.log(f"  {name}: " + "; ".join(
            f"beta {b}: rate {r:.1f} nats, distortion {d:.4f}, {a:.0f} active, noise ratio {n:.3f}"
            for b, r, d, a, n in zip(fam.betas, *(entry[k] for k in MEASURES))))
    result["figures"] = _figures(run, result)
    return harness.finish(run, result, sweep.settings_for(run.scale))


def _figures(run, result) -> list[str]:
    figs = []
    for family, s in result["sweep"].items():  # training curves: has each model reached a plateau?
        epochs = np.arange(1, len(s["loss_curve"][0]) + 1)
        series = {f"β {b:g}": (epochs, c, np.zeros(len(c))) for b, c in zip(s["betas"], s["loss_curve"])}
        figs.append(plots.save_curves_spread(series, run.path(f"sweep_training_{family}.png"), xlabel="epoch",
                                             ylabel="training loss (nats per image)",
                                             title=f"{families.label(family)}: training loss ({run.dataset}, "
                                                   f"mean over seeds)"))
    for name, label, log_y in (("rate", "rate: KL in nats per image", True), ("active_units", "active units", False)):
        series = {f"{families.label(family)} (β {', '.join(f'{b:g}' for b in s['betas'])})":
                  (s["distortion"], s[name], s[f"{name}_std"]) for family, s in result["sweep"].items()}
        figs.append(plots.save_curves_spread(series, run.path(f"sweep_{name}.png"), xlabel="distortion: MSE per pixel",
                                             ylabel=label, log_y=log_y,
                                             title=f"{label.split(':')[0].capitalize()} against distortion "
                                                   f"({run.dataset}); leftmost point: β 0, the AE"))
    return [f.split("/")[-1] for f in figs]


def report(m: dict) -> str:
    plateau = any("plateau" in e for e in m["sweep"].values())
    epochs = ("until its plateau test passed (each family's epochs in the table)" if plateau
              else f"{m['epochs']} epochs")
    lines = [f"Every family: {m['n_train']} training images, {epochs}, batch {m['batch_size']}, each "
             f"beta and seed one model of one program; measured on {m['n_test']} test images (mean ± std over "
             f"{m['seeds']} seeds). Rate: KL to the prior in nats; distortion: MSE per pixel of the reconstruction "
             f"at z = mu; active units: Cov_x(E[z_d]) > {sweep.ACTIVE}. These are the models of the latent-space "
             f"experiments: the notes' AE is the deterministic AE (no rate), their VAE the Bernoulli family's β 1.", ""]
    rows = []
    for family, s in m["sweep"].items():
        for i, beta in enumerate(s.get("betas", m["betas"])):
            rows.append([families.label(family) if i == 0 else "", f"{beta:g}" + (" (no KL)" if beta == 0 else ""),
                         markdown.pm(s["rate"][i], s["rate_std"][i], ".3g"),
                         markdown.pm(s["distortion"][i], s["distortion_std"][i], ".4f"),
                         markdown.pm(s["active_units"][i], s["active_units_std"][i], ".3g"),
                         markdown.pm(s["noise_ratio"][i], s["noise_ratio_std"][i], ".3g"),
                         _change(s, i), _plateau(s, i)])
    lines.append(markdown.table(["family", "beta", "rate (nats)", "distortion (MSE/pixel)", "active units",
                                 "noise ratio (posterior std / code spread)",
                                 "training loss change, last quarter of the epochs",
                                 "plateau test passed (seeds), epochs"], rows))
    lines += ["", "A model on a plateau changes its training loss by well under 1% over the last quarter of its "
                  "epochs; one that changes more was still learning when it stopped (curves: the figures below)."]
    return "\n".join(lines)


def _plateau(s: dict, i: int) -> str:
    """How many seeds of beta i passed the reference scale's plateau test, and in how many epochs."""
    p = s.get("plateau")
    if p is None:
        return "n/a (fixed steps)"
    seeds = len(p["passed"]) // len(s["betas"])
    return f"{sum(p['passed'][i * seeds:(i + 1) * seeds])}/{seeds}, {p['epochs']}"


def _change(s: dict, i: int) -> str:
    """The relative change in percent; n/a for a single epoch (NaN in memory, null once written)."""
    change = s["last_quarter_change"][i]
    return "n/a" if change is None or math.isnan(change) else f"{100 * change:+.2f}%"


if __name__ == "__main__":
    harness.cli(main)
