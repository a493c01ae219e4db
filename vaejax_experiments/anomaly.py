"""Anomaly detection (notes 000): an autoencoder trained on normal images only, scoring test images.

Two protocols, each with K models per kind (AE, VAE) and S seeds:

- leave_one_out: model k trains on every class but k; class k's test images are the anomalies.
- one_class: model k trains on class k only; the other classes' test images are the anomalies
  (the protocol of the one-class literature's tables).

Five scores per test image, higher = more anomalous:

- recon: the training loss (AE: summed Bernoulli NLL; VAE: negative ELBO, mean of a few samples).
- recon_minus_floor: recon minus the image's entropy floor sum_i H(x_i), the least a Bernoulli
  loss can be on grey levels x_i (the KL form of the loss). Textured images have a high floor and
  sparse ones a low one, whatever the model learned (Nalisnick et al. 2019; Serra et al. 2020).
- mse: the summed squared error of the mean reconstruction (z = the code, or mu).
- complexity: recon in bits minus the image's PNG length in bits (Serra et al. 2020). The
  Bernoulli loss of grey levels is not a code length of 8-bit images, so here the difference is
  a heuristic recalibration, not a likelihood ratio.
- floor_only: the entropy floor alone, no model: what the image's texture alone detects.

The verdict reads three co-primary scores, recon (the notes' loss), recon_minus_floor and mse (the
usual reconstruction error), under each protocol. AUROCs are averaged over seeds; their 95%
intervals and paired differences (between scores, or AE against VAE, on the same test images)
add two variances: the test images' (DeLong's per-image influences, metrics.auroc_influence) and
the seeds' (the between-seed variance of the AUROC over the number of seeds). All K x S models of one kind and protocol train at once through
vaejax.fit on a model axis, each model on its own rows of the shared training images (train_rows:
nothing is copied). Every model of a protocol trains on the same number of images, for the same
number of updates.
"""

from __future__ import annotations

import dataclasses
import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from vaejax import config, data, engine, fit, metrics, models, plots, recipe
from vaejax_experiments import harness, markdown, settings, stats, training

@dataclasses.dataclass(frozen=True)
class Settings:
    """What an anomaly run trains and scores (written into metrics.json)."""

    steps: int | None  # updates per model, to the nearest whole number of epochs (None: until the plateau test)
    batch_size: int
    n_score: int | None  # test images scored (None: the whole test split)
    elbo_samples: int  # draws of the negative ELBO averaged into a VAE's score
    max_epochs: int | None = None  # with steps None: the plateau test's limit
    images_per_model: int | None = None  # with steps None: each model's training images, at most
    arch: str | None = None  # the models' architecture (None: the scale's)


SETTINGS = {"smoke": Settings(steps=8, batch_size=64, n_score=200, elbo_samples=2),
            "quick": Settings(steps=100, batch_size=64, n_score=2000, elbo_samples=2),
            "full": Settings(steps=1500, batch_size=128, n_score=None, elbo_samples=2),
            # 2 protocols x 10 classes x 2 kinds x the seeds, each model until its plateau test passes: the
            # MLP pair (the notes name no architecture for this use), at most 12,000 images each, fits two CPU cores.
            "reference": Settings(steps=None, batch_size=128, n_score=None, elbo_samples=2, max_epochs=40,
                                  images_per_model=12000, arch="mlp")}


CLAIM = ("An autoencoder trained only on normal data flags anomalies: images of a class it never saw get a "
         "higher reconstruction error (AE) or negative ELBO (VAE), so the score detects them (AUROC above chance).")
KINDS = (("ae", "AE"), ("vae", "VAE"))
PROTOCOLS = (("leave_one_out", "leave one class out (the held-out class is anomalous)"),
             ("one_class", "one class in (the nine other classes are anomalous)"))
SCORES = (("recon", "recon"), ("recon_minus_floor", "recon − floor"), ("mse", "MSE"),
          ("complexity", "recon − PNG bits"), ("floor_only", "floor alone"))
CO_PRIMARY = ("recon", "recon_minus_floor", "mse")  # the scores the verdict reads


def training_indices(labels_N, num_classes: int, protocol: str, key) -> np.ndarray:
    """(K, L): for each class k, L shuffled indices of model k's training images (L the same for all k)."""
    labels = np.asarray(labels_N)
    keep = (lambda k: labels != k) if protocol == "leave_one_out" else (lambda k: labels == k)
    idx = [np.asarray(jax.random.permutation(jax.random.fold_in(key, k), np.flatnonzero(keep(k))))
           for k in range(num_classes)]
    length = min(len(i) for i in idx)
    return np.stack([i[:length] for i in idx]).astype(np.int32)


def anomalous(labels_N, k: int, protocol: str) -> np.ndarray:
    """Which test images are anomalies for model k under the protocol."""
    labels = np.asarray(labels_N)
    return labels == k if protocol == "leave_one_out" else labels != k


def png_bits(x_N) -> np.ndarray:
    """(N,) length in bits of each image as an 8-bit PNG (maximum compression)."""
    def bits(image_HWC):
        buffer = io.BytesIO()
        Image.fromarray(image_HWC[..., 0] if image_HWC.shape[-1] == 1 else image_HWC).save(
            buffer, format="PNG", compress_level=9)
        return 8 * buffer.tell()

    images = np.rint(np.asarray(x_N) * 255).astype(np.uint8)
    return np.array([bits(image) for image in images], np.float64)


def train_on_subsets(cfg, tc, x_N, idx_KL, steps: int | None, seeds: int, key, log=None,
                     until: training.Plateau | None = None):
    """K * S models (class-major: model k * S + s), model k on images idx_KL[k], all at once through fit.

    Each model trains on its own rows of the shared images, epoch after epoch, for the whole number
    of epochs nearest to `steps` updates (at least one), or with `until` (steps None) until every model
    passes the plateau test. Returns (params with a leading model axis M, the mean training loss over the
    models in each quarter of every epoch, the updates taken, the plateau test's summary or None).
    """
    rows_ML = np.repeat(idx_KL, seeds, axis=0)
    per_epoch = rows_ML.shape[1] // tc.batch_size
    epochs = until.max_epochs if until else max(1, round(steps / per_epoch))
    r = recipe.build(cfg, tc)
    curve = LossPieces(cfg.kind, epochs, rows_ML.shape[0], log)
    stop = until and training.UntilPlateau(until)
    result = fit.fit(r.objective, r.optimizer, r.init_params, jnp.asarray(x_N, jnp.float32), None, epochs=epochs,
                     batch_size=tc.batch_size, key=jax.random.split(key, rows_ML.shape[0]),
                     model_axis="auto", train_rows=rows_ML, pieces=4, callbacks=[curve] + ([stop] if stop else []))
    return (result.state.params, np.array(curve.losses), len(result.records) * per_epoch,
            stop.summary() if stop else None)


def subset_floors(cfg, x_N, idx_KL, seeds: int) -> tuple[float, ...]:
    """Each model's loss floor (training.loss_floor of its own images), class-major like train_on_subsets."""
    return tuple(float(f) for f in np.repeat([training.loss_floor(cfg, x_N[i]) for i in idx_KL], seeds))


class LossPieces(fit.Callback):
    """The mean training loss over all models in each compiled piece of each epoch (from the running
    means fit reports), logged at each epoch's end."""

    def __init__(self, kind, epochs, num_models, log=None):
        self.kind, self.epochs, self.num_models, self.log = kind, epochs, num_models, log
        self.losses = []

    def on_epoch_begin(self, epoch, num_steps):
        self.done, self.mean = 0, 0.0

    def on_steps(self, epoch, done, num_steps, mean_loss):
        self.losses.append((mean_loss * done - self.mean * self.done) / (done - self.done))
        self.done, self.mean = done, mean_loss

    def on_epoch_end(self, epoch, record, state):
        if self.log:
            self.log(f"  {self.kind}: epoch {epoch}/{self.epochs}, loss {self.mean:.2f} "
                     f"(mean over {self.num_models} models)")


def model_scores(cfg, params_M, x_N, samples: int, key) -> dict[str, np.ndarray]:
    """{"recon": (M, N) training loss per image (VAE: mean of `samples` ELBO draws from key), "mse": (M, N)
    summed squared error of the mean reconstruction}."""
    x = jnp.asarray(x_N, jnp.float32)
    m = jax.tree_util.tree_leaves(params_M)[0].shape[0]
    reps = samples if cfg.kind == "vae" else 1
    recon = np.mean([np.asarray(_scores(cfg)(params_M, x, jax.random.split(jax.random.fold_in(key, r), m))["loss"])
                     for r in range(reps)], axis=0)
    return {"recon": recon, "mse": np.asarray(_squared_error(cfg, params_M, x))}


@functools.cache  # one compiled scorer per model config, shared by both protocols
def _scores(cfg):
    return engine.make_scores(recipe.objective(cfg), model_axis="vmap")


@functools.partial(jax.jit, static_argnames="cfg")
def _squared_error(cfg, params_M, x_N):
    """(M, N) summed squared error of each model's mean reconstruction (decoded from its code)."""
    mean_of = recipe.likelihood(cfg).mean

    def one(params):
        def chunk(x_B):
            x_hat = mean_of(models.decode(cfg, params, models.embed(cfg, params, x_B)))
            return jnp.sum(jnp.square(x_hat - x_B), axis=(1, 2, 3))

        return engine.map_chunks(chunk, x_N)

    return jax.vmap(one)(params_M)


def all_scores(model: dict, floor_N, bits_N) -> dict[str, np.ndarray]:
    """The five scores (M, N) from a model's recon and mse and the images' floor and PNG bits."""
    recon = model["recon"]
    return {"recon": recon, "recon_minus_floor": recon - floor_N, "mse": model["mse"],
            "complexity": recon / np.log(2.0) - bits_N, "floor_only": np.broadcast_to(floor_N, recon.shape)}


def auroc_table(scores_KSN, labels_N, protocol: str) -> dict:
    """Per class k: the seed-mean AUROC of model k's scores, its interval and per-seed values; the mean over
    classes with its interval. Influences and per-seed means are kept for paired comparisons (not written
    to metrics.json)."""
    k = scores_KSN.shape[0]
    values, influences = zip(*(metrics.auroc_influence(scores_KSN[c], anomalous(labels_N, c, protocol))
                               for c in range(k)))
    per_seed = [[metrics.auroc(row, anomalous(labels_N, c, protocol)) for row in scores_KSN[c]] for c in range(k)]
    mean, mean_influence, mean_seeds = float(np.mean(values)), np.mean(influences, axis=0), np.mean(per_seed, axis=0)
    return {"auroc": list(values), "ci": [interval(v, i, seeds) for v, i, seeds in zip(values, influences, per_seed)],
            "seeds": per_seed, "mean": mean, "mean_ci": interval(mean, mean_influence, mean_seeds),
            "mean_influence": mean_influence, "mean_seeds": mean_seeds}


def interval(value: float, influence, per_seed, level: float = 0.95) -> list[float]:
    """The normal interval of a seed-mean AUROC (or difference) with both variances: the test images'
    (DeLong, from the influences) and the seeds' (the between-seed variance over the number of seeds),
    the latter entering metrics.auroc_interval as one more component of the influence vector."""
    per_seed = np.asarray(per_seed, np.float64)
    seeds = np.sqrt(np.var(per_seed, ddof=1) / len(per_seed)) if len(per_seed) > 1 else 0.0
    return metrics.auroc_interval(value, np.append(influence, seeds), level)


def paired_auroc(a: dict, b: dict) -> dict:
    """Mean AUROC of a minus that of b, on the same test images and seeds, with its interval."""
    diff = a["mean"] - b["mean"]
    lo, hi = interval(diff, a["mean_influence"] - b["mean_influence"], a["mean_seeds"] - b["mean_seeds"])
    return {"diff": diff, "ci": [lo, hi], "better": 1 if lo > 0 else -1 if hi < 0 else 0}


def main(scale="quick", dataset=None, seeds=None, out="results") -> dict:
    run = harness.start("anomaly", scale, dataset, seeds, out)
    sc, S = run.scale, run.seeds
    train_set = harness.train_images(sc, run.dataset)
    k = data.NUM_CLASSES[run.dataset]
    s = sc.pick(**SETTINGS)
    steps, batch = s.steps, s.batch_size
    test = harness.load_images(run.dataset, "test")
    if s.n_score and s.n_score < len(test.y):
        pick = np.asarray(jax.random.permutation(harness.stream(run.key, "scored_test_images"), len(test.y)))
        test = harness.Images(test.x[pick[: s.n_score]], test.y[pick[: s.n_score]])
    names = harness.CLASS_NAMES.get(run.dataset) or [str(i) for i in range(k)]
    configs = dict(zip(("ae", "vae"), settings.model_pair(sc, run.dataset, arch=s.arch)))
    floor, bits = metrics.entropy_floor(test.x), png_bits(test.x)
    result = {"class_names": names, "n_test": int(len(test.y)), "steps": steps, "batch_size": {},
              "positives_per_class": [int(np.sum(test.y == c)) for c in range(k)],
              "models": {kind: f"{c.arch} {c.kind} latent {c.latent_dim}, {c.likelihood}" for kind, c in configs.items()},
              "auroc": {}, "auroc_ci": {}, "auroc_seeds": {}, "mean_auroc": {}, "n_train_per_model": {},
              "loss_pieces": {}, "steps_taken": {}, "plateau": {}, "paired": {}}
    hist = {}
    for protocol, _ in PROTOCOLS:
        idx_KL = training_indices(train_set.y, k, protocol, harness.stream(run.key, f"{protocol}/rows"))
        # more images than `steps` updates can see (or than the scale affords): a fixed random subset
        idx_KL = idx_KL[:, : s.images_per_model if steps is None else steps * batch]
        tc = config.TrainConfig(learning_rate=sc.learning_rate, batch_size=min(batch, idx_KL.shape[1]))
        length = f"until the plateau test (at most {s.max_epochs} epochs)" if steps is None else f"{steps} steps"
        run.log(f"{protocol}: {k} models x {S} seeds per kind, {idx_KL.shape[1]} training images each, "
                f"{length} of batch {tc.batch_size}; scoring {len(test.y)} test images")
        result["n_train_per_model"][protocol] = int(idx_KL.shape[1])
        result["batch_size"][protocol] = tc.batch_size
        tables = {}
        for kind, cfg in configs.items():
            until = steps is None and training.Plateau(sc.plateau, s.max_epochs,
                                                       subset_floors(cfg, train_set.x, idx_KL, S))
            params, losses, taken, plateau = train_on_subsets(cfg, tc, train_set.x, idx_KL, steps, S,
                                                              harness.stream(run.key, f"{protocol}/training"),
                                                              log=run.log, until=until or None)
            result["loss_pieces"].setdefault(protocol, {})[kind] = losses.tolist()
            result["steps_taken"].setdefault(protocol, {})[kind] = taken
            result["plateau"].setdefault(protocol, {})[kind] = plateau
            scores = all_scores(model_scores(cfg, params, test.x, s.elbo_samples,
                                             harness.stream(run.key, f"{protocol}/elbo_draws")), floor, bits)
            for score, _ in SCORES:
                tables[score, kind] = auroc_table(scores[score].reshape(k, S, -1), test.y, protocol)
            hist[protocol, kind] = scores["recon"].reshape(k, S, -1)[:, 0]
            run.log(f"  {kind} mean AUROC: " + ", ".join(f"{score} {tables[score, kind]['mean']:.3f}"
                                                        for score, _ in SCORES))
        _store(result, protocol, tables)
    result["figures"] = _figures(run, result, hist, test.y, names)
    return harness.finish(run, result, s)


def _store(result: dict, protocol: str, tables: dict) -> None:
    """Write one protocol's AUROC tables into result: auroc[protocol][score][kind] = per class, and so on."""
    for name in ("auroc", "auroc_ci", "auroc_seeds", "mean_auroc"):
        result[name][protocol] = {score: {} for score, _ in SCORES}
    for (score, kind), t in tables.items():
        result["auroc"][protocol][score][kind] = t["auroc"]
        result["auroc_ci"][protocol][score][kind] = t["ci"]
        result["auroc_seeds"][protocol][score][kind] = t["seeds"]
        result["mean_auroc"][protocol][score][kind] = {"auroc": t["mean"], "ci": t["mean_ci"]}
    result["paired"][protocol] = {
        "floor_correction": {kind: paired_auroc(tables["recon_minus_floor", kind], tables["recon", kind])
                             for kind, _ in KINDS},
        "floor_only_vs_recon": {kind: paired_auroc(tables["floor_only", kind], tables["recon", kind])
                                for kind, _ in KINDS},
        "vae_vs_ae": {score: paired_auroc(tables[score, "vae"], tables[score, "ae"]) for score, _ in SCORES},
    }


def _figures(run, result, hist, labels, names) -> list[str]:
    k = len(names)
    figs = []
    for protocol, title in PROTOCOLS:
        panels = {}
        for kind, label in KINDS:
            for c in range(k):
                normal = ~anomalous(labels, c, protocol)
                auroc = result["auroc"][protocol]["recon"][kind][c]
                panels[f"{label}, model {c} ({names[c]})\nAUROC {auroc:.2f}"] = {
                    "normal": hist[protocol, kind][c][normal], "anomalous": hist[protocol, kind][c][~normal]}
        figs.append(plots.save_histograms(panels, run.path(f"anomaly_scores_{protocol}.png"), ncol=min(5, k),
                                          xlabel="recon score (nats)",
                                          title=f"{run.dataset}, {title}: AE reconstruction loss, VAE negative "
                                                f"ELBO (seed 0)"))
    return [f.split("/")[-1] for f in figs]


# ---------------------------------------------------------------------------- verdict and report


def _interval(lo_hi, fmt=".3f") -> str:
    return f"[{lo_hi[0]:{fmt}}, {lo_hi[1]:{fmt}}]"


def _detected(m, protocol, kind, score="recon") -> list[bool]:
    """Per class: the score's AUROC interval lies above chance."""
    return [ci[0] > 0.5 for ci in m["auroc_ci"][protocol][score][kind]]


def score_verdict(m: dict, protocol: str, score: str) -> str:
    """One protocol and score: holds when both models detect every class above chance (95% interval of the
    AUROC above 0.5); does not hold when neither model's mean AUROC is above chance; mixed otherwise."""
    if all(all(_detected(m, protocol, kind, score)) for kind, _ in KINDS):
        return "holds"
    if not any(m["mean_auroc"][protocol][score][kind]["ci"][0] > 0.5 for kind, _ in KINDS):
        return "does not hold"
    return "mixed"


def _agreed(verdicts) -> str:
    found = set(verdicts)
    return found.pop() if len(found) == 1 else "mixed"


def verdict(m: dict) -> tuple[str, str]:
    """score_verdict for each protocol and co-primary score (recon, recon − floor, MSE); a protocol's verdict
    when its scores agree (else mixed), the claim's when both protocols agree (else mixed). The reason gives
    each, then the classes each model misses by the notes' score and what subtracting the floor changes."""
    names = m["class_names"]
    table = {(p, score): score_verdict(m, p, score) for p, _ in PROTOCOLS for score in CO_PRIMARY}
    per_protocol = {p: _agreed(table[p, score] for score in CO_PRIMARY) for p, _ in PROTOCOLS}
    labels = dict(SCORES)
    said = "; ".join(f"{p}: **{v}** (" + ", ".join(f"{labels[score]} {table[p, score]}" for score in CO_PRIMARY) + ")"
                     for p, v in per_protocol.items())
    parts = []
    for protocol, _ in PROTOCOLS:
        for kind, label in KINDS:
            mean = m["mean_auroc"][protocol]
            missed = [names[c] for c, ok in enumerate(_detected(m, protocol, kind)) if not ok]
            below = [names[c] for c, ci in enumerate(m["auroc_ci"][protocol]["recon"][kind]) if ci[1] < 0.5]
            floor = m["paired"][protocol]["floor_correction"][kind]
            parts.append(f"{protocol} {label}: mean AUROC recon {mean['recon'][kind]['auroc']:.3f} "
                         f"{_interval(mean['recon'][kind]['ci'])}, MSE {mean['mse'][kind]['auroc']:.3f} "
                         f"{_interval(mean['mse'][kind]['ci'])}; recon misses {', '.join(missed) or 'none'}"
                         + (f" (below chance: {', '.join(below)})" if below else "")
                         + f"; subtracting the floor changes recon's by {floor['diff']:+.3f} {_interval(floor['ci'])}")
    return _agreed(per_protocol.values()), f"By protocol and score: {said}. {'; '.join(parts)}."


def _updates(taken) -> str:
    """Updates per model of one protocol: one number, or one per kind."""
    if not isinstance(taken, dict):
        return str(taken)
    return " / ".join(f"{taken[kind]} ({label})" for kind, label in KINDS if kind in taken)


def report(m: dict) -> str:
    names = m["class_names"]
    taken = m.get("steps_taken", {})
    lines = [f"Models: AE {m['models']['ae']}; VAE {m['models']['vae']}; "
             + "; ".join(f"{_updates(taken[p])} updates each ({p.replace('_', ' ')})" for p, _ in PROTOCOLS if p in taken)
             + "; "
             f"{m['n_test']} test images scored. AUROC (seed mean over {m['seeds']} "
             f"seeds) with its 95% interval over test images and seeds (DeLong's variance plus the between-seed "
             f"variance over the number of seeds): 1 = every anomaly scores above every "
             f"normal image, 0.5 = chance, below 0.5 = anomalies look *more* normal. The floor is the image's "
             f"own entropy, sum_i H(x_i): what a Bernoulli loss cannot go below, high for textured images.", ""]
    for protocol, title in PROTOCOLS:
        auroc, ci = m["auroc"][protocol], m["auroc_ci"][protocol]
        pieces = m["loss_pieces"][protocol]
        change = {kind: stats.last_quarter_change([pieces[kind]])[0] for kind, _ in KINDS}
        plateau = ", ".join(f"{label} {100 * change[kind]:+.1f}%" for kind, label in KINDS
                            if not np.isnan(change[kind]))
        tests = m.get("plateau", {}).get(protocol, {})
        converged = "; ".join(f"{label}: {sum(t['passed'])} of {len(t['passed'])} models pass the plateau test "
                              f"({t['test']}) in {t['epochs']} epochs" for kind, label in KINDS if (t := tests.get(kind)))
        lines += [f"**{title}** ({m['n_train_per_model'][protocol]} training images per model, batch "
                  f"{m['batch_size'][protocol]}; training loss "
                  f"change over the last quarter of the steps: {plateau or 'n/a'}"
                  + (f"; {converged}" if converged else "") + ").", ""]
        header = ["model", "floor alone"] + [f"{label}: {s_label}" for _, label in KINDS
                                             for score, s_label in SCORES if score != "floor_only"]
        rows = []
        for c in range(len(names)):
            row = [names[c], f"{auroc['floor_only']['ae'][c]:.3f}"]
            row += [f"{auroc[score][kind][c]:.3f} {_interval(ci[score][kind][c], '.2f')}"
                    for kind, _ in KINDS for score, _ in SCORES if score != "floor_only"]
            rows.append(row)
        mean = m["mean_auroc"][protocol]
        rows.append(["**mean**", f"{mean['floor_only']['ae']['auroc']:.3f} {_interval(mean['floor_only']['ae']['ci'], '.2f')}"]
                    + [f"**{mean[score][kind]['auroc']:.3f}** {_interval(mean[score][kind]['ci'], '.2f')}"
                       for kind, _ in KINDS for score, _ in SCORES if score != "floor_only"])
        lines += [markdown.table(header, rows), ""]
        paired = m["paired"][protocol]
        lines += ["Paired differences of the mean AUROC on the same test images, with 95% intervals: "
                  + "; ".join(f"{label} recon − floor minus recon {_diff(paired['floor_correction'][kind])}, "
                              f"floor alone minus {label} recon {_diff(paired['floor_only_vs_recon'][kind])}"
                              for kind, label in KINDS)
                  + "; VAE minus AE: " + ", ".join(f"{s_label} {_diff(paired['vae_vs_ae'][score])}"
                                                   for score, s_label in SCORES if score != "floor_only") + ".", ""]
    lines += ["No published per-class table is set beside these numbers: the one-class tables of the literature "
              "(e.g. the convolutional AE of Ruff et al. 2018 on MNIST) could not be checked against their papers "
              "here, and unchecked numbers are not quoted."]
    return "\n".join(lines)


def _diff(d: dict) -> str:
    return f"{d['diff']:+.3f} {_interval(d['ci'])}"


if __name__ == "__main__":
    harness.cli(main)
