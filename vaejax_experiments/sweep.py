"""The AE-to-VAE sweep that the latent-space experiments share: its models, trained and measured, and their scores.

A family is the scale's VAE with one likelihood, trained for every KL weight beta and every seed as
one compiled program (beta a traced hyperparameter of objectives.elbo). Seed s of every beta starts
from the same key (the same initialisation and batches), so members compare paired by seed. Its
beta = 0 member is a VAE with no KL term, not an AE: it starts with posterior noise of about unit
variance, which it only slowly learns away. So the notes' AE is the deterministic autoencoder of the
same architecture and code width (the "ae" family, NOTES_AE), trained from the same seeds, and the
beta 0 member stays beside it as a row; the notes' VAE is the Bernoulli family's beta 1 member
(NOTES_VAE). At full scale every family is also trained at the latent widths LATENT_SIZES, each width
a family of its own; at the reference scale every family is also trained with the MLP
(<family>_mlp). Which families there are, built-in or a user's, is families.py's business.

Every latent-space score is measured on every model of the sweep (score_members), so a claim can be
read along beta, and with the distortion of each model beside it: two models whose decoders differ
in sharpness differ in more than their latent spaces. How a claim is decided from these scores
(paired by seed, with a margin of equivalence) is verdicts.py's business.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import config, engine, latent, objectives, plots
from vaejax_experiments import harness, markdown, settings, stats, training, verdicts
from vaejax_experiments.families import DETERMINISTIC, FAMILIES, UserFamily, label

BETAS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
LATENT_SIZES = (8, 16, 32, 64)  # swept at full scale besides the scale's own width
ACTIVE = 0.01  # Burda et al. 2016's threshold on Cov_x(E_q[z_d])
NOTES_AE, NOTES_VAE = (DETERMINISTIC, 0.0), ("bernoulli", 1.0)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the shared sweep trains at a scale.

    families: the built-in families; betas: the KL weights of each; other_archs: architectures trained
    beside the scale's own (<family>_<arch>); other_widths: latent widths trained beside the scale's own
    (<family>_z<width>); epochs_divisor: the scale's epochs divided by this (the demo halves them: a
    sweep is len(betas) models per family and seed)."""

    families: tuple[str, ...]
    betas: tuple[float, ...]
    other_archs: tuple[str, ...] = ()
    other_widths: tuple[int, ...] = ()
    epochs_divisor: int = 1


SETTINGS = {"smoke": Settings(families=(DETERMINISTIC, "bernoulli"), betas=(0.0, 1.0)),
            "quick": Settings(families=(DETERMINISTIC, "bernoulli"), betas=(0.0, 1.0),
                              epochs_divisor=2),
            "full": Settings(families=tuple(FAMILIES), betas=BETAS, other_widths=LATENT_SIZES),
            "reference": Settings(families=(DETERMINISTIC, "bernoulli"), betas=(0.0, 1.0), other_archs=("mlp",))}


def settings_for(scale: settings.Scale) -> Settings:
    return scale.pick(**SETTINGS)


def archs_for(scale: settings.Scale) -> tuple[str, ...]:
    """The architectures the sweep trains: the scale's own first, then its other_archs."""
    return (scale.arch,) + tuple(a for a in settings_for(scale).other_archs if a != scale.arch)


def latent_sizes_for(scale: settings.Scale, own: int) -> tuple[int, ...]:
    """The latent widths each family is trained at: the scale's own and its other_widths, ascending."""
    return tuple(sorted({own, *settings_for(scale).other_widths}))


def describe(fam: "Family") -> str:
    """The family's model in words, for reports."""
    if isinstance(fam.model, latent.Model):
        module = fam.model.module
        name = type(module.abstract() if isinstance(module, objectives.Nnx) else module).__name__
        return f"{name} (a user family), latent {fam.trained.model_cfg.latent_dim}"
    return f"{fam.model.arch} {fam.model.kind} latent {fam.model.latent_dim}, {fam.model.likelihood}"


@dataclasses.dataclass
class Family:
    """One likelihood's (or one user family's) models: trained.params has a leading axis of len(betas) *
    seeds (beta-major); rate, distortion, active_units and noise_ratio are (betas, seeds) arrays measured
    on test images (a deterministic AE has no rate: NaN); model is what latent.embed and latent.decode
    take (a preset's config, or a latent.Model)."""

    name: str
    betas: tuple[float, ...]
    model: config.ModelConfig | latent.Model
    trained: training.Trained
    rate: np.ndarray
    distortion: np.ndarray
    active_units: np.ndarray
    noise_ratio: np.ndarray

    @property
    def seeds(self) -> int:
        return self.trained.num_seeds // len(self.betas)

    def member(self, beta: float) -> training.Trained:
        """The seeds of one beta, as their own Trained."""
        b = self.betas.index(beta)
        return self.trained.select(np.arange(b * self.seeds, (b + 1) * self.seeds))


def train_family(cfg, tc, x_N, betas, seeds: int, log=None, model: latent.Model | None = None,
                 until: training.Plateau | None = None, workdir: str | None = None) -> training.Trained:
    """len(betas) * seeds models (beta-major: model b * seeds + s, started from seed s's key) in one
    program, beta traced: the preset cfg, or `model` (trained with the ELBO of its likelihood, cfg giving
    the image shape). until and workdir: training.train_seeds'."""
    keys = jax.random.split(settings.shared_key("model init"), seeds)[np.tile(np.arange(seeds), len(betas))]
    hparams = {"beta": jnp.repeat(jnp.asarray(betas, jnp.float32), seeds)} if cfg.kind == "vae" else None
    custom = {}
    if model is not None:
        @jax.jit
        def init_params(key):  # the interface's __call__(x, key), on one example
            k_init, k_sample = jax.random.split(key)
            return model.module.init(k_init, jnp.zeros(cfg.image_shape, jnp.float32), k_sample)["params"]
        custom = {"objective": objectives.elbo(model.module, model.likelihood), "init_params": init_params}
    return training.train_seeds(cfg, tc, x_N, len(betas) * seeds, hparams=hparams, log=log, keys=keys, until=until,
                                workdir=workdir, **custom)


def measure(model, params_M, x_N) -> dict[str, np.ndarray]:
    """Per model (M,), on images x_N: rate (nats; NaN for a deterministic AE), distortion (MSE per pixel),
    active units, and the noise ratio: the posterior's standard deviation over the spread of the codes'
    means, averaged over dimensions (0: a deterministic code, as a plain AE's; near 1: codes drowned in
    their noise)."""
    mu, kl, se, var = (np.asarray(a) for a in _posterior_terms(model, params_M, jnp.asarray(x_N, jnp.float32)))
    spread = np.maximum(np.std(mu.astype(np.float64), axis=1), 1e-12)  # (M, D)
    noise_ratio = np.mean(np.sqrt(var.astype(np.float64).mean(axis=1)) / spread, axis=-1)
    return {"rate": kl.mean(1), "distortion": se.mean(1), "active_units": active_units(mu), "noise_ratio": noise_ratio}


@functools.partial(jax.jit, static_argnums=0)  # once per model and shape
def _posterior_terms(model, params_M, x_N):
    """(mu (M, N, D), KL (M, N), squared error per pixel (M, N), posterior variance (M, N, D)) of M VAEs."""
    module, likelihood = latent.module_and_likelihood(model)

    def one_image(params, x):
        code = objectives.encode(module, params, x)
        if isinstance(code, tuple):
            mu, logvar = code
            kl, var = jnp.sum(objectives.kl_per_dim(mu, logvar)), jnp.exp(logvar)
        else:  # a deterministic code
            mu, kl, var = code, jnp.nan, jnp.zeros_like(code)
        x_hat = likelihood.mean(objectives.decode(module, params, mu))
        return mu, kl, jnp.mean(jnp.square(x_hat - x)), var

    return jax.vmap(lambda p: engine.map_chunks(jax.vmap(lambda x: one_image(p, x)), x_N))(params_M)


def active_units(mu_MND) -> np.ndarray:
    """(M,) latent dimensions whose posterior mean varies over the N images by more than ACTIVE."""
    return (np.var(np.asarray(mu_MND, np.float64), axis=1) > ACTIVE).sum(-1)


def train_config(scale: settings.Scale, n_train: int) -> config.TrainConfig:
    """The scale's training, its epochs divided by the sweep's epochs_divisor (at least one)."""
    epochs = max(1, scale.epochs_for(n_train) // settings_for(scale).epochs_divisor)
    return scale.train_config(n_train, epochs=epochs)


def train_one(base: config.ModelConfig, train_cfg: config.TrainConfig, x_N, test_N, family: str | UserFamily,
              betas, seeds: int, log=None, converge: settings.Scale | None = None, cache: str | None = None) -> Family:
    """One family over betas x seeds, measured on test_N: a built-in likelihood on the preset base (the
    deterministic AE: beta 0 only), or a user family made at base's image shape and latent width.
    converge: a scale that trains until its plateau test passes; cache: the folder of its runs' workdirs."""
    if isinstance(family, UserFamily):
        name, cfg = family.name, base
        model = latent.Model(*family.make(tuple(base.image_shape), base.latent_dim))
    else:
        name, cfg = family, config.replace(base, **FAMILIES[family])
        model = cfg
        betas = (0.0,) if cfg.kind == "ae" else betas
    until = workdir = None
    if converge is not None and converge.converges:
        until = training.Plateau(converge.plateau, converge.max_epochs_for(len(x_N), train_cfg.batch_size),
                                 training.loss_floor(cfg, x_N))
        workdir = cache and os.path.join(cache, "models", _run_tag(name, cfg, train_cfg, betas, seeds, until, x_N))
    if log:
        log(f"{name}: beta {list(betas)} x {seeds} seeds, {cfg.arch} latent {base.latent_dim}"
            + (f", until {until.tol:.1%} per epoch (at most {until.max_epochs} epochs)" if until else ""))
    trained = train_family(cfg, train_cfg, x_N, betas, seeds, log=log,
                           model=model if isinstance(model, latent.Model) else None, until=until, workdir=workdir)
    m = {k: v.reshape(len(betas), seeds) for k, v in measure(model, trained.params, test_N).items()}
    return Family(name, tuple(betas), model, trained, **m)


def _run_tag(name, cfg, train_cfg, betas, seeds, until, x_N) -> str:
    """A name for a family's training run that changes with anything that changes its models. The plateau
    test's epoch limit is left out: a run stopped at a lower limit resumes toward a higher one."""
    x = np.asarray(x_N)
    test = {k: v for k, v in dataclasses.asdict(until).items() if k != "max_epochs"}
    what = {"family": name, "model": dataclasses.asdict(cfg), "train": dataclasses.asdict(train_cfg),
            "betas": list(betas), "seeds": seeds, "until": test, "data": x.shape,
            "data_sha1": hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()}
    return f"{name}-{hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]}"


def train(base: config.ModelConfig, train_cfg: config.TrainConfig, x_N, test_N, families, betas, seeds: int,
          log=None, converge: settings.Scale | None = None, cache: str | None = None) -> dict[str, Family]:
    """Each family (a built-in name or a UserFamily) over betas x seeds, measured on test_N."""
    trained = [train_one(base, train_cfg, x_N, test_N, f, betas, seeds, log, converge, cache) for f in families]
    return {f.name: f for f in trained}


_SWEEPS: dict = {}


def shared(scale: settings.Scale, dataset: str, seeds: int, log=None, extra: tuple = (),
           cache: str | None = None) -> dict[str, Family]:
    """The scale's families, and the user families in `extra`, trained on the scale's training images at
    every latent width of latent_sizes_for (a family at another width than the scale's own is named
    <family>_z<width>) and with every architecture of archs_for (<family>_<arch> for another than the
    scale's own). Memoized per family in this process: the latent-space experiments, pretrain_classify
    and rate_distortion study the same models. cache: where a converging scale keeps its runs."""
    x = harness.train_images(scale, dataset).x
    out = {}
    for arch in archs_for(scale):
        _, vae = settings.model_pair(scale, dataset, arch)  # the VAE's latent as wide as the AE's code
        for size in latent_sizes_for(scale, vae.latent_dim):
            for family in settings_for(scale).families + tuple(extra):
                key = (dataclasses.replace(scale, judge_seed=0), dataset, seeds, family, arch, size)  # judged twice, trained once
                if key not in _SWEEPS:
                    fam = train_one(config.replace(vae, latent_dim=size), train_config(scale, len(x)), x,
                                    harness.eval_images(scale, dataset).x, family, settings_for(scale).betas, seeds, log=log,
                                    converge=scale, cache=cache)
                    suffix = ("" if size == vae.latent_dim else f"_z{size}") + ("" if arch == scale.arch else f"_{arch}")
                    _SWEEPS[key] = dataclasses.replace(fam, name=fam.name + suffix)
                out[_SWEEPS[key].name] = _SWEEPS[key]
    return out


def notes_pair(sweep: dict[str, Family]) -> tuple[training.Trained, training.Trained]:
    """The notes' AE and VAE: the deterministic AE and the Bernoulli family's beta 1 member."""
    return sweep[NOTES_AE[0]].member(NOTES_AE[1]), sweep[NOTES_VAE[0]].member(NOTES_VAE[1])


# ---------------------------------------------------------------------------- scores along the sweep


def score_members(sweep: dict[str, Family], score) -> dict:
    """scores[family][beta]: [score(model, params, seed) for each seed], for every member of the sweep.
    score returns a dict; its float values are what the sweep tables and comparisons read."""
    return {name: {beta: [score(fam.model, fam.trained.seed_params(b * fam.seeds + s), s)
                          for s in range(fam.seeds)]
                   for b, beta in enumerate(fam.betas)}
            for name, fam in sweep.items()}


def entries(sweep: dict[str, Family], scores: dict, names) -> list[dict]:
    """metrics.json's `sweep`: one entry per model (family, beta) with its rate, distortion, active
    units and the named scores, each a mean with its _std over seeds, and on a converging scale its
    plateau test per seed."""
    out = []
    for fam in sweep.values():
        for b, beta in enumerate(fam.betas):
            e = {"family": fam.name, "beta": beta, "latent_dim": fam.trained.model_cfg.latent_dim,
                 "deterministic": bool(np.isnan(fam.rate).all())}
            for name in ("rate", "distortion", "active_units", "noise_ratio"):
                e.update(_mean_std(name, getattr(fam, name)[b]))
            for name in names:
                e.update(_mean_std(name, verdicts.member_values(scores, (fam.name, beta), name)))
            if fam.trained.plateau is not None:  # the convergence test, per seed
                p, seeds = fam.trained.plateau, slice(b * fam.seeds, (b + 1) * fam.seeds)
                e["plateau"] = {"test": p["test"], "epochs": p["epochs"], "passed": p["passed"][seeds],
                                "change_per_epoch": p["change_per_epoch"][seeds], "passed_at": p["passed_at"][seeds]}
            out.append(e)
    return out


def _mean_std(name, v) -> dict:
    m, s = stats.mean_std(v)
    return {name: m, f"{name}_std": s}


def report(m: dict, names) -> str:
    """The report's sweep part: every model's scores with its distortion (and convergence), then each
    VAE family's β 1 member against the deterministic AE and against its own β 0 member."""
    rows = [[label(e["family"]), "—" if e.get("deterministic") else f"{e['beta']:g}" + (" (no KL)" if e["beta"] == 0 else ""),
             markdown.pm(e["distortion"], e["distortion_std"], ".4f"), markdown.pm(e["rate"], e["rate_std"], ".3g")]
            + [markdown.pm(e[n], e[f"{n}_std"], ".3g") for n in names] for e in m["sweep"]]
    header = ["family", "β", "distortion (MSE/pixel)", "rate (nats)", *names]
    if any("plateau" in e for e in m["sweep"]):
        header.append("plateau test passed (seeds), epochs")
        for row, e in zip(rows, m["sweep"]):
            p = e.get("plateau")
            row.append(f"{sum(p['passed'])}/{len(p['passed'])}, {p['epochs']}" if p else "n/a")
    return (f"**Every model** (mean ± std over seeds):\n\n{markdown.table(header, rows)}\n\n"
            f"**Comparisons** ({verdicts.RULE}):\n\n{verdicts.table(m['comparisons'])}")


def figure(path: str, sweep: dict[str, Family], scores: dict, name: str, ylabel: str, controls: dict,
           title: str) -> str:
    """The score against distortion, a curve per family (mean ± std over seeds), the AE starred,
    the controls as horizontal lines."""
    series, styles = {}, {}
    for fam in sweep.values():
        d = fam.distortion.mean(1)
        v = np.array([verdicts.member_values(scores, (fam.name, b), name) for b in fam.betas])
        spread = v.std(1, ddof=1) if v.shape[1] > 1 else np.zeros(len(d))
        series[f"{label(fam.name)} (β {', '.join(f'{b:g}' for b in fam.betas)})"] = (d, v.mean(1), spread)
    ae = verdicts.member_values(scores, NOTES_AE, name)
    d_ae = sweep[NOTES_AE[0]].distortion[sweep[NOTES_AE[0]].betas.index(NOTES_AE[1])].mean()
    series["the AE (deterministic)"] = ([d_ae], [ae.mean()], [0.0])
    styles["the AE (deterministic)"] = {"marker": "*", "markersize": 14, "linestyle": "none", "color": "black"}
    return plots.save_curves_spread(series, path, xlabel="distortion: test MSE per pixel", ylabel=ylabel,
                                    title=title, styles=styles, levels=controls)
