"""From AE to VAE: one family of models per likelihood, swept over the KL weight beta.

Each family is the scale's VAE architecture with one likelihood, trained for every beta in its
sweep and every seed as one compiled program (beta a traced hyperparameter, objectives.elbo). At
beta = 0 the KL term is gone and nothing stops the posterior's variance from vanishing: the
family's autoencoder. For every model, on test images:

- rate: the mean KL(q(z|x) || N(0, I)) in nats, what the code spends;
- distortion: the mean squared error per pixel of the mean reconstruction at z = mu;
- active units: latent dimensions whose posterior mean varies over images, Cov_x(E_q[z_d]) > 0.01
  (Burda et al. 2016).

Families: Bernoulli (the seed's), a Gaussian with fixed sigma 0.1, which weighs a grey pixel's
error about as an MSE does, and at full scale the sigma-VAE (Rybkin et al. 2021), which learns one
sigma. The figures set rate and active units against distortion, a curve per family; comparing
an AE with a VAE at equal distortion means reading these curves at the AE's distortion.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vaejax_experiments import common
from vaejax import config, models, objectives, plots, recipe

TITLE = "Rate and distortion: from AE to VAE"
CLAIM = ("Between the autoencoder (beta = 0) and the VAE (beta = 1) lies a curve: a larger KL weight buys a "
         "cheaper, more regular code with blurrier reconstructions, and where a model sits on it depends on the "
         "likelihood as much as on beta.")
FAMILIES = {"bernoulli": {"likelihood": "bernoulli"},
            "gaussian": {"likelihood": "gaussian", "obs_sigma": 0.1},
            "sigma_vae": {"likelihood": "gaussian_learned"}}
BETAS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
ACTIVE = 0.01  # Burda et al. 2016's threshold on Cov_x(E_q[z_d])


def sweep_config(scale: common.Scale, dataset: str, family: str) -> config.ModelConfig:
    """The scale's VAE (latent as wide as its AE's code) with the family's likelihood."""
    _, vae = common.model_pair(scale, dataset)
    return config.replace(vae, **FAMILIES[family])


def train_family(cfg, tc, x_N, betas, seeds: int, log=None) -> common.Trained:
    """len(betas) * seeds models (beta-major: model b * seeds + s) in one program, beta traced."""
    beta_M = jnp.repeat(jnp.asarray(betas, jnp.float32), seeds)
    return common.train_seeds(cfg, tc, x_N, len(betas) * seeds, hparams={"beta": beta_M}, log=log)


def measure(cfg, params_M, x_N, chunk: int = 500) -> dict[str, np.ndarray]:
    """Per model (M,): rate (nats), distortion (MSE per pixel) and active units, on images x_N."""
    mean_of = recipe.likelihood(cfg).mean

    @jax.jit
    def one_chunk(params_M, x_B):
        def one(params):
            mu, logvar = models.encode(cfg, params, x_B)
            x_hat = mean_of(models.decode(cfg, params, mu))
            kl = jnp.sum(objectives.kl_per_dim(mu, logvar), axis=-1)
            return mu, kl, jnp.mean(jnp.square(x_hat - x_B), axis=(1, 2, 3))
        return jax.vmap(one)(params_M)

    x = jnp.asarray(x_N, jnp.float32)
    parts = [one_chunk(params_M, x[i:i + chunk]) for i in range(0, len(x), chunk)]
    mu, kl, se = (np.concatenate([np.asarray(p[k]) for p in parts], axis=1) for k in range(3))
    return {"rate": kl.mean(1), "distortion": se.mean(1), "active_units": active_units(mu)}


def active_units(mu_MND) -> np.ndarray:
    """(M,) latent dimensions whose posterior mean varies over the N images by more than ACTIVE."""
    return (np.var(np.asarray(mu_MND, np.float64), axis=1) > ACTIVE).sum(-1)


def main(scale="quick", dataset=None, seeds=None, out="results") -> dict:
    run = common.start("rate_distortion", scale, dataset, seeds, out)
    sc, S = run.scale, run.seeds
    x = common.train_images(sc, run.dataset).x
    test = common.eval_images(sc, run.dataset).x
    families = sc.pick(smoke=("bernoulli", "gaussian"), quick=("bernoulli", "gaussian"), full=tuple(FAMILIES))
    betas = sc.pick(smoke=(0.0, 1.0), quick=(0.0, 0.03, 0.3, 1.0), full=BETAS)
    # Below full scale, half the scale's epochs: a sweep trains len(betas) models per family and seed.
    tc = sc.train_config(len(x), epochs=sc.pick(smoke=1, quick=max(1, sc.epochs_for(len(x)) // 2),
                                                  full=sc.epochs_for(len(x))))
    result = {"betas": list(betas), "families": list(families), "sweep": {}, "n_train": len(x), "n_test": len(test),
              "epochs": tc.epochs, "batch_size": tc.batch_size}
    for family in families:
        cfg = sweep_config(sc, run.dataset, family)
        run.log(f"{family}: beta {list(betas)} x {S} seeds, {cfg.arch} vae latent {cfg.latent_dim}")
        trained = train_family(cfg, tc, x, betas, S, log=run.log)
        per_model = {k: v.reshape(len(betas), S) for k, v in measure(cfg, trained.params, test).items()}
        result["sweep"][family] = {"model": f"{cfg.arch} vae latent {cfg.latent_dim}, {cfg.likelihood}",
                                   "seconds": round(trained.seconds, 1)}
        for name, values in per_model.items():
            result["sweep"][family][name] = [common.mean_std(v)[0] for v in values]
            result["sweep"][family][f"{name}_std"] = [common.mean_std(v)[1] for v in values]
            result["sweep"][family][f"{name}_seeds"] = values.tolist()
        run.log(f"  {family}: " + "; ".join(
            f"beta {b}: rate {r:.1f} nats, distortion {d:.4f}, {a:.0f} active"
            for b, r, d, a in zip(betas, *(result["sweep"][family][k] for k in ("rate", "distortion", "active_units")))))
    result["figures"] = _figures(run, result)
    return common.finish(run, result)


def _figures(run, result) -> list[str]:
    figs = []
    for name, label, log_y in (("rate", "rate: KL in nats per image", True), ("active_units", "active units", False)):
        series = {f"{family} (beta {', '.join(f'{b:g}' for b in result['betas'])})":
                  (s["distortion"], s[name], s[f"{name}_std"]) for family, s in result["sweep"].items()}
        figs.append(plots.save_curves_spread(series, run.path(f"sweep_{name}.png"), xlabel="distortion: MSE per pixel",
                                             ylabel=label, log_y=log_y,
                                             title=f"{label.split(':')[0].capitalize()} against distortion "
                                                   f"({run.dataset}); leftmost point: beta 0, the AE"))
    return [f.split("/")[-1] for f in figs]


def report(m: dict) -> str:
    lines = [f"Every family: {m['n_train']} training images, {m['epochs']} epochs of batch {m['batch_size']}, each "
             f"beta and seed one model of one program; measured on {m['n_test']} test images (mean ± std over "
             f"{m['seeds']} seeds). Rate: KL to the prior in nats; distortion: MSE per pixel of the reconstruction "
             f"at z = mu; active units: Cov_x(E[z_d]) > {ACTIVE}.", ""]
    rows = []
    for family, s in m["sweep"].items():
        for i, beta in enumerate(m["betas"]):
            rows.append([family if i == 0 else "", f"{beta:g}" + (" (AE)" if beta == 0 else ""),
                         common.pm(s["rate"][i], s["rate_std"][i], ".3g"),
                         common.pm(s["distortion"][i], s["distortion_std"][i], ".4f"),
                         common.pm(s["active_units"][i], s["active_units_std"][i], ".3g")])
    lines.append(common.table(["family", "beta", "rate (nats)", "distortion (MSE/pixel)", "active units"], rows))
    return "\n".join(lines)


if __name__ == "__main__":
    common.cli(main)
