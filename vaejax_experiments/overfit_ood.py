"""Overfitting and out-of-distribution inputs (notes 000, Example 2).

Autoencoders of one architecture (S seeds each, a vmapped axis), each with the same batch (BATCH) and
about the same number of optimizer steps (whole epochs, so the count is rounded; it is recorded), so
that they differ in their training images alone:
  small    trained on a small class-balanced subset (500 images at quick scale) of the dataset;
  full     trained on the scale's training set of the same dataset;
  reverse  trained on the counterpart dataset (fashion_mnist <-> mnist_5k);
  curve    trained on class-balanced subsets of geometrically spaced sizes, from 100 images up to the
           scale's training set (3 sizes at quick scale: 100, 500, 20,000); the small model is the
           curve's point at its size, the full model its largest.
Loss: the training objective (Bernoulli NLL, nats per image); also MSE per pixel, which has no floor
that depends on the images, to compare different image sets.

Overfitting, as memorisation. Each image's loss is taken above its entropy floor (the Bernoulli
loss of a perfect reconstruction, metrics.entropy_floor), so that images with more ink do not
weigh more. memorisation = the mean excess loss on n_eval held-out images of the training split
(class-balanced; no model of the dataset trains on them) minus that on (up to n_eval of) the
model's own training images, after training: the two sets are drawn alike, so the difference is
what the model learned of its own images, not which images were drawn. Its interval is over images
(stats.two_sample_comparison of the seed-averaged excess losses: a bootstrap resampling each set).
The curve gives it against the training-set size, and the first size at which it is no longer
significant. Overfitting shows if it is significant at the small size and larger there than at the
curve's largest size (compared per seed, Student's t over seeds: models of the same seed start from
the same parameters). The test-split loss and its gap to the training loss are reported beside it.

Out of distribution. The full and reverse models are fed each other's test images and uniform noise
(the small model too; recorded, not judged). Judged by MSE (the NLL of a mostly black image is low
however badly it is reconstructed):
  AUROC       of telling the OOD images (positive) from the model's own test images (negative) by
              per-image MSE, per seed and their mean, with DeLong's interval over images (the per-image
              components averaged over seeds, so that each image counts once); the AUROC by the loss is
              recorded beside it;
  excess MSE  of the same images under this model against under the model trained on their dataset,
              paired per image (stats.paired_comparison over images); noise has no such model.
An OOD set is reconstructed clearly worse if its AUROC interval lies above 0.5 and, where there is one,
its excess-MSE interval above 0.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import data, engine, latent, metrics, plots, recipe
from vaejax_experiments import harness, judge, markdown, settings, stats, training

CLAIM = ("An autoencoder overfits a small training set (train loss falls while test loss stays high), and it "
         "reconstructs images unlike its training data (another dataset, noise) poorly.")
COUNTERPART = {"fashion_mnist": "mnist_5k", "mnist_5k": "fashion_mnist", "mnist": "fashion_mnist"}
SHOW = 6
BATCH = 50  # every model's: 10 updates an epoch on the small set's 500 images
CURVE_SMALLEST = 100  # images in the curve's smallest training set


@dataclasses.dataclass(frozen=True)
class Settings:
    """What an overfit_ood run trains (written into metrics.json)."""

    n_small: int  # the small model's training images
    steps: int | None  # updates per model, to the nearest whole number of epochs (None: the scale's)
    curve_points: int  # training-set sizes on the curve, from CURVE_SMALLEST to the scale's training set


SETTINGS = {"smoke": Settings(n_small=100, steps=None, curve_points=2),
            "quick": Settings(n_small=500, steps=600, curve_points=3),
            "full": Settings(n_small=500, steps=3000, curve_points=5)}


def main(scale="quick", dataset=None, seeds=None, out="results") -> dict:
    run = harness.start("overfit_ood", scale, dataset, seeds, out, datasets=tuple(COUNTERPART))
    sc, S = run.scale, run.seeds
    primary, other = run.dataset, COUNTERPART[run.dataset]
    cfg, _ = settings.model_pair(sc, primary)
    st = sc.pick(**SETTINGS)
    n_small, steps = st.n_small, st.steps or sc.steps
    n = sc.n_eval
    held_out, full_x = _held_out(sc, primary, n)
    sets = {  # name -> (images, label)
        "primary_test": harness.eval_images(sc, primary).x,
        "other_test": harness.eval_images(sc, other).x,
        "noise": judge.uniform_noise(harness.stream(run.key, "noise"), n, data.SHAPES[primary]),
    }
    setups = {  # name -> (training images, description, its test set, its OOD sets)
        "small": (harness.load_images(primary, "train", n_small).x, f"{primary}, {n_small} images",
                  "primary_test", ("other_test", "noise")),
        "full": (full_x, f"{primary}, full training set", "primary_test", ("other_test", "noise")),
        "reverse": (harness.train_images(sc, other).x, f"{other}, full training set",
                    "other_test", ("primary_test", "noise")),
    }
    set_labels = {"primary_test": f"{primary} test", "other_test": f"{other} test", "noise": "uniform noise"}
    scores = engine.make_scores(recipe.objective(cfg))
    mse_of = _mse_fn(cfg)

    def train_and_score(label, x, eval_sets=None, memorised=False):
        batch = min(BATCH, len(x))
        tc = sc.train_config(len(x), batch_size=batch, epochs=max(1, round(steps / (len(x) // batch))))
        run.log(f"{label}: {len(x)} images, {tc.epochs} epochs of batch {batch}")
        t = training.train_seeds(cfg, tc, x, S, eval_sets=eval_sets, log=run.log)
        scored = dict(sets, train=x[:n], **({"held_out": held_out} if memorised else {}))
        return t, _score(t, scored, scores, mse_of)  # every set, the training images and (its dataset's) held-out ones

    trained, per_image = {}, {}
    for name, (x, desc, test_set, _) in setups.items():
        trained[name], per_image[name] = train_and_score(f"{name}: {desc}", x, {"train": x[:n], "test": sets[test_set]},
                                                         memorised=name != "reverse")
    points = {}  # size -> (Trained, per-image scores)
    reused = {n_small: "small", len(full_x): "full"}  # the points that are these models: same data, batch and steps
    for size in _curve_sizes(CURVE_SMALLEST, n_small, len(full_x), st.curve_points):
        if size in reused:
            points[size] = trained[reused[size]], per_image[reused[size]]
        else:
            x = harness.load_images(primary, "train", size).x
            points[size] = train_and_score(f"curve: {primary}, {size} images", x, memorised=True)

    result = {"settings": {}, "set_labels": set_labels, "n_eval": n, "n_held_out": len(held_out), "primary": primary,
              "other": other}
    own_model = {"primary_test": "full", "other_test": "reverse"}  # the model trained on each test set's dataset
    for name, (x, desc, test_set, ood_sets) in setups.items():
        t, pi = trained[name], per_image[name]
        own_test_mse = pi[test_set]["mse"].mean(1)
        row = {"description": desc, "dataset": primary if name != "reverse" else other, "test_set": test_set,
               **training.training_summary(t), **_losses(pi, test_set), **(_memorisation(pi) if "held_out" in pi else {})}
        row.update(stats.stat("train_mse", pi["train"]["mse"].mean(1)))
        row.update(stats.stat("test_mse", own_test_mse))
        row["ood"] = {}
        for o in ood_sets:
            own = per_image[own_model[o]][o]["mse"] if o in own_model else None  # under their dataset's model
            ref_mse = own_test_mse if own is None else own.mean(1)  # noise: the model's own test error
            ood = {**stats.stat("loss", pi[o]["loss"].mean(1)), **stats.stat("mse", pi[o]["mse"].mean(1)),
                   **stats.stat("reference_mse", ref_mse), **stats.stat("mse_ratio", pi[o]["mse"].mean(1) / ref_mse),
                   "reference": "the same images under the model trained on their dataset" if o in own_model
                   else "this model's own test images",
                   "auroc": _aurocs(pi, o, test_set)}
            if own is not None:  # per image, averaged over seeds; better = +1 means this model's MSE is higher
                ood["excess_mse"] = stats.paired_comparison(pi[o]["mse"].mean(0), own.mean(0))
            row["ood"][o] = ood
        steps_per_epoch = t.n_train // t.train_cfg.batch_size
        ev = t.eval_curves
        row["curves"] = {"steps": ((np.arange(ev["train"]["loss"].shape[1]) + 1) * steps_per_epoch).tolist(),
                         "train": ev["train"]["loss"].mean(0).tolist(), "train_std": ev["train"]["loss"].std(0).tolist(),
                         "test": ev["test"]["loss"].mean(0).tolist(), "test_std": ev["test"]["loss"].std(0).tolist()}
        result["settings"][name] = row
    for key in ("train_loss", "test_loss"):  # at the top level too: per setting, mean and std over seeds
        result[key] = {name: r[key] for name, r in result["settings"].items()}
        result[f"{key}_std"] = {name: r[f"{key}_std"] for name, r in result["settings"].items()}
    result["ood_loss"] = {name: {o: r["ood"][o]["loss"] for o in r["ood"]} for name, r in result["settings"].items()}
    result["ood_loss_std"] = {name: {o: r["ood"][o]["loss_std"] for o in r["ood"]} for name, r in result["settings"].items()}
    result["ood_auroc"] = {name: {o: r["ood"][o]["auroc"] for o in r["ood"]} for name, r in result["settings"].items()}
    result["gap_curve"] = _gap_curve(points, n_small)
    result["figures"] = _figures(run, result, trained, per_image, sets, setups)
    result["run_settings"] = dataclasses.asdict(st)  # "settings" names the small, full and reverse models here
    return harness.finish(run, result)


def _curve_sizes(smallest: int, n_small: int, n_full: int, k: int) -> list[int]:
    """k training-set sizes spaced geometrically from `smallest` to n_full (multiples of 10 below n_full:
    class-balanced subsets), the one nearest n_small replaced by it so that the small model is reused."""
    grid = np.geomspace(smallest, n_full, k)[:-1]
    grid[np.argmin(np.abs(np.log(grid / n_small)))] = n_small
    return sorted({int(round(g, -1)) for g in grid} | {int(n_full)})


def _held_out(sc, dataset: str, n: int):
    """(n class-balanced training-split images that no model of the dataset trains on, the training set of
    the full model): the highest ranks of each class in the order every class-balanced subset is drawn
    from (harness.load_images), which the subsets of fewer images never reach; at a scale that trains on
    the whole split, the full model trains on the rest of it."""
    split = data.load(dataset, "train")
    per_class = max(1, n // data.NUM_CLASSES[dataset])
    ranks = data.class_ranks(split.labels, 0)
    counts = np.bincount(split.labels)
    held = ranks >= counts[split.labels] - per_class
    full_x = (harness.train_images(sc, dataset).x if sc.n_train is not None
              else data.to_float(split.images[~held]))
    if sc.n_train is not None and sc.n_train // data.NUM_CLASSES[dataset] > counts.min() - per_class:
        raise ValueError(f"{sc.n_train} training images leave fewer than {n} of {dataset} held out")
    return data.to_float(split.images[held]), full_x


def _score(t, image_sets: dict, scores, mse_of) -> dict:
    """set name -> {"loss": (S, N), "mse": (S, N), "floor": (N,)}: per-image loss and MSE under every seed of
    t, and the images' entropy floors."""
    seeds = [t.seed_params(s) for s in range(t.num_seeds)]
    key = jax.random.key(0)  # the AE's loss draws nothing; the scorer's signature takes a key
    return {name: {"loss": np.stack([np.asarray(scores(p, jnp.asarray(x), key)["loss"]) for p in seeds]),
                   "mse": np.stack([mse_of(p, x) for p in seeds]), "floor": metrics.entropy_floor(x)}
            for name, x in image_sets.items()}


def _memorisation(pi: dict) -> dict:
    """Held-out minus training images' loss above the entropy floor: per seed, and over images (seed means,
    a two-sample bootstrap) with its interval."""
    excess = {k: pi[k]["loss"] - pi[k]["floor"] for k in ("held_out", "train")}  # (S, N) each
    over_images = stats.two_sample_comparison(excess["held_out"].mean(0), excess["train"].mean(0))
    return {**stats.stat("memorisation", excess["held_out"].mean(1) - excess["train"].mean(1)),
            "memorisation_ci": over_images["ci"], "memorisation_effect_size": over_images["effect_size"],
            "memorisation_better": over_images["better"]}


def _losses(pi: dict, test_set: str) -> dict:
    """Train and test loss and their gap per seed (mean ± std), and the gap's paired interval over seeds
    (stats.paired_comparison: Student's t for a few seeds)."""
    train, test = pi["train"]["loss"].mean(1), pi[test_set]["loss"].mean(1)
    gap = stats.paired_comparison(test, train)  # the same model's test against train loss
    return {**stats.stat("train_loss", train), **stats.stat("test_loss", test), **stats.stat("gap", test - train),
            "gap_ci": gap["ci"], "gap_effect_size": gap["effect_size"], "gap_better": gap["better"]}


def _aurocs(pi: dict, o: str, test_set: str) -> dict:
    """AUROC of telling set o from the test set, by per-image MSE and by per-image loss."""
    return {score: auroc_interval(pi[o][score], pi[test_set][score]) for score in ("mse", "loss")}


def auroc_interval(pos, neg, level: float = stats.CI_LEVEL) -> dict:
    """AUROC of scores `pos` (positives) over `neg` (negatives), per model and averaged, with DeLong's interval.

    pos (S, m), neg (S, n): S models scoring the same images (higher = more positive). Returns
    stats.stat("auroc", per-model AUROCs) plus se and ci (normal, clipped to [0, 1]) of their mean,
    from metrics.auroc_influence: the components are averaged over models first, so an image counts
    once however many models score it (the interval is over images, not over seeds).
    """
    pos, neg = np.atleast_2d(np.asarray(pos, np.float64)), np.atleast_2d(np.asarray(neg, np.float64))
    scores = np.concatenate([pos, neg], axis=1)
    labels = np.r_[np.ones(pos.shape[1]), np.zeros(neg.shape[1])]
    value, influence = metrics.auroc_influence(scores, labels)
    lo, hi = metrics.auroc_interval(value, influence, level)
    return {**stats.stat("auroc", [metrics.auroc(row, labels) for row in scores]),
            "se": float(np.sqrt(np.sum(np.square(influence)))), "ci": [max(0.0, lo), min(1.0, hi)], "level": level}


def _gap_curve(points: dict, n_small: int) -> dict:
    """Columns over the training-set sizes: train, test loss and gap (per seed), the gap's interval over
    seeds, the primary model's OOD AUROCs; the first size whose gap is not significant; the gap at the
    small size against the largest (paired by seed)."""
    rows = []
    for size, (t, pi) in sorted(points.items()):
        rows.append({"sizes": size, "steps": training.training_summary(t)["steps"], **_losses(pi, "primary_test"),
                     **_memorisation(pi), "ood_auroc": {o: _aurocs(pi, o, "primary_test") for o in ("other_test", "noise")}})
    curve = {key: [r[key] for r in rows] for key in rows[0] if key != "ood_auroc"}
    curve["ood_auroc"] = {o: [r["ood_auroc"][o] for r in rows] for o in rows[0]["ood_auroc"]}
    curve["batch"] = points[n_small][0].train_cfg.batch_size
    curve["small"] = n_small
    curve["memorisation_stops_at"] = next((s for s, b in zip(curve["sizes"], curve["memorisation_better"]) if b != 1),
                                          None)
    per_seed = {s: np.asarray(g) for s, g in zip(curve["sizes"], curve["memorisation_seeds"])}
    curve["small_vs_largest"] = stats.paired_comparison(per_seed[n_small], per_seed[curve["sizes"][-1]])
    return curve


def _mse_fn(cfg):
    """(params, images) -> per-image MSE per pixel of the reconstructions (host numpy)."""
    def mse(params, images):
        rec = np.asarray(latent.reconstruct(cfg, params, images))
        return np.mean(np.square(rec - np.asarray(images)), axis=(1, 2, 3))
    return mse


def _figures(run, result, trained, per_image, sets, setups) -> list[str]:
    series, styles = {}, {}
    colors = {"small": "tab:red", "full": "tab:blue", "reverse": "tab:green"}
    for name in ("small", "full", "reverse"):
        c = result["settings"][name]["curves"]
        label = f"{name} ({setups[name][1]})"
        for part, ls in (("train", "--"), ("test", "-")):
            key = f"{label}: {part}"
            series[key] = (c["steps"], c[part], c[f"{part}_std"])
            styles[key] = {"color": colors[name], "linestyle": ls, "marker": None}
    figs = [plots.save_curves_spread(series, run.path("loss_curves.png"), xlabel="training steps",
                                     ylabel="loss (nats per image)", styles=styles, log_y=True,
                                     title="Train (dashed) and test (solid) loss, mean ± std over seeds")]
    c = result["gap_curve"]
    curve = {label: (c["sizes"], c[key], c[f"{key}_std"])
             for key, label in (("test_loss", "test loss"), ("train_loss", "train loss"), ("gap", "gap (test - train)"))}
    figs.append(plots.save_curves_spread(curve, run.path("gap_curve.png"), xlabel="training images", log_x=True,
                                         log_y=True, ylabel="loss (nats per image)",
                                         title=f"Loss against training-set size ({result['primary']}, batch "
                                               f"{c['batch']}, {min(c['steps'])}-{max(c['steps'])} steps), mean ± std over seeds"))
    images, row_labels = [], []
    for name, set_names in (("full", ("primary_test", "other_test", "noise")), ("reverse", ("other_test", "primary_test"))):
        params = trained[name].seed_params(0)
        cfg = trained[name].model_cfg
        model = result["primary"] if name == "full" else result["other"]
        for s_name in set_names:
            worst = np.argsort(-per_image[name][s_name]["mse"][0])[:SHOW]
            x = np.asarray(sets[s_name])[worst]
            images += [x, np.asarray(latent.reconstruct(cfg, params, x))]
            row_labels += [f"{model} model fed\n{result['set_labels'][s_name]}: input", "reconstruction"]
    figs.append(plots.save_image_panels({"": np.concatenate(images)}, run.path("worst_reconstructions.png"),
                                        ncol=SHOW, row_labels=row_labels,
                                        title="Worst reconstructions (highest MSE) of each set, seed 0"))
    return [f.split("/")[-1] for f in figs]


# ---------------------------------------------------------------------------- verdict and report


def _gap(c: dict, i: int) -> dict:
    """The curve's test-minus-train gap at its i-th size as a comparison (for ci_text)."""
    return {"diff": c["gap"][i], "ci": c["gap_ci"][i], "effect_size": c["gap_effect_size"][i]}


def _memo(c: dict, i: int | None = None) -> dict:
    """The memorisation at the curve's i-th size (or of a setting's row) as a comparison (for ci_text)."""
    pick = (lambda k: c[k][i]) if i is not None else (lambda k: c[k])
    return {"diff": pick("memorisation"), "ci": pick("memorisation_ci"),
            "effect_size": pick("memorisation_effect_size")}


def _auc_text(a: dict) -> str:
    lo, hi = a["ci"]
    return f"{a['auroc']:.3g} [{lo:.3g}, {hi:.3g}]"


def _ood_decision(d: dict) -> int:
    """+1 if every interval says the set is reconstructed worse than in-distribution images (AUROC above 0.5;
    excess MSE above 0, where there is a reference), -1 if every one says better, 0 otherwise."""
    lo, hi = d["auroc"]["mse"]["ci"]
    votes = [1 if lo > 0.5 else -1 if hi < 0.5 else 0]
    if "excess_mse" in d:
        votes.append(d["excess_mse"]["better"])
    return votes[0] if len(set(votes)) == 1 else 0


def verdict(m: dict) -> tuple[str, str]:
    """Two parts, each decided by intervals. Overfitting: the memorisation (held-out minus training images'
    loss above the floor) at the small size is significant and larger than at the curve's largest size. OOD: every OOD set of the full and reverse
    models is reconstructed clearly worse (_ood_decision). Holds if both, does not hold if neither
    (no OOD set clearly worse), mixed otherwise."""
    c, s = m["gap_curve"], m["settings"]
    i, last = c["sizes"].index(c["small"]), len(c["sizes"]) - 1
    overfit = c["memorisation_better"][i] == 1 and c["small_vs_largest"]["better"] == 1
    stops = (f"no longer significant from {c['memorisation_stops_at']} images on"
             if c["memorisation_stops_at"] is not None else f"significant at every size up to {c['sizes'][-1]} images")
    gap = (f"memorisation, held-out minus training images' loss above the entropy floor in nats per image, 95% "
           f"intervals over images: {markdown.ci_text(_memo(c, i))} at {c['small']} training images against "
           f"{markdown.ci_text(_memo(c, last))} at {c['sizes'][-1]}, difference over seeds "
           f"{markdown.ci_text(c['small_vs_largest'])}; it is {stops}")
    ood = {(name, o): _ood_decision(d) for name in ("full", "reverse") for o, d in s[name]["ood"].items()}

    def against(name, o):
        d = s[name]["ood"][o]
        text = f"{s[name]['dataset']} model on {m['set_labels'][o]}: AUROC by MSE {_auc_text(d['auroc']['mse'])}"
        if "excess_mse" in d:
            text += f", MSE above their own model's {markdown.ci_text(d['excess_mse'])}"
        return text
    ood_text = "; ".join(against(name, o) for (name, o) in ood)
    ood_ok = all(v == 1 for v in ood.values())
    ood_any = any(v == 1 for v in ood.values())
    if overfit and ood_ok:
        return "holds", (f"The small-subset model overfits ({gap}) and every OOD set is reconstructed clearly worse "
                          f"({ood_text}).")
    if not overfit and not ood_any:
        return "does not hold", f"No clear overfitting ({gap}) and no OOD set is clearly worse ({ood_text})."
    what = ("Overfitting shows" if overfit else "Overfitting does not clearly show") + f" ({gap}); " + \
           ("every" if ood_ok else "not every") + f" OOD set is reconstructed clearly worse ({ood_text})"
    return "mixed", what + "."


def report(m: dict) -> str:
    s, c = m["settings"], m["gap_curve"]
    rows = []
    for name in ("small", "full", "reverse"):
        r = s[name]
        rows.append([f"{name}: {r['description']}", r["n_train"], r["steps"], markdown.cell(r, "train_loss"),
                     markdown.cell(r, "test_loss"), markdown.cell(r, "gap"), "[{:.3g}, {:.3g}]".format(*r["gap_ci"]),
                     markdown.ci_text(_memo(r)) if "memorisation" in r else "n/a",
                     markdown.cell(r, "train_mse", ".3g"), markdown.cell(r, "test_mse", ".3g")])
    t1 = markdown.table(["setting", "train images", "steps", "train loss", "test loss", "test − train gap",
                         "gap 95% CI (seeds)", "memorisation [95% CI over images], d", "train MSE", "test MSE"], rows)
    rows = []
    for k, size in enumerate(c["sizes"]):
        rows.append([size, c["steps"][k], markdown.pm(c["train_loss"][k], c["train_loss_std"][k]),
                     markdown.pm(c["test_loss"][k], c["test_loss_std"][k]), markdown.ci_text(_gap(c, k)),
                     markdown.ci_text(_memo(c, k)), "yes" if c["memorisation_better"][k] == 1 else "no"]
                    + [_auc_text(c["ood_auroc"][o][k]["mse"]) for o in c["ood_auroc"]])
    t2 = markdown.table(["train images", "steps", "train loss", "test loss", "test − train gap [95% CI over seeds], d_z",
                         "memorisation [95% CI over images], d", "memorisation significant"]
                        + [f"AUROC {m['set_labels'][o]} (MSE)" for o in c["ood_auroc"]], rows)
    rows = []
    for name in ("small", "full", "reverse"):
        r = s[name]
        for o, d in r["ood"].items():
            rows.append([f"{r['dataset']} ({name})", m["set_labels"][o], markdown.cell(d, "loss"),
                         markdown.cell(d, "mse", ".3g"), markdown.cell(d, "reference_mse", ".3g"),
                         markdown.cell(d, "mse_ratio", ".3g"), _auc_text(d["auroc"]["mse"]),
                         _auc_text(d["auroc"]["loss"]),
                         markdown.ci_text(d["excess_mse"]) if "excess_mse" in d else "n/a", d["reference"]])
    t3 = markdown.table(["model", "fed", "loss", "MSE", "in-distribution MSE", "ratio", "AUROC by MSE [95% CI]",
                         "AUROC by loss [95% CI]", "excess MSE per image [95% CI], d_z", "reference"], rows)
    head = (f"Loss: Bernoulli NLL in nats per image (the training objective); MSE per pixel of the reconstruction. "
            f"Train loss is measured on (up to) {m['n_eval']} training images after training, test loss on "
            f"{m['n_eval']} test images; gap = test - train, mean ± std over seeds, its 95% interval Student's t over "
            f"seeds (each seed's test against its train loss). Memorisation: the loss above each image's entropy floor "
            f"on {m.get('n_held_out', m['n_eval'])} held-out training-split images minus on the model's own training "
            f"images (drawn alike, so it measures what was learned of the images themselves), 95% interval a "
            f"bootstrap over images resampling each set, Cohen's d. The loss depends on how much ink an image has (a "
            f"mostly black digit has a low NLL floor), so out-of-distribution error is judged by MSE, against the same "
            f"images' MSE under the model trained on their own dataset (for noise: the model's own test MSE).")
    curve = (f"Train-test gap against training-set size: class-balanced subsets of {m['primary']}, batch {c['batch']}, "
             f"the small model's number of steps rounded to whole epochs (the steps column), the same seeds; the "
             f"{c['small']}-image point is the small model. Gap interval: Student's t over seeds; memorisation interval: "
             f"bootstrap over images. AUROC: telling "
             f"the OOD set from {m['n_eval']} test images by per-image MSE, mean over seeds, DeLong's 95% interval "
             f"over images.")
    ood = ("Out of distribution: each model fed images unlike its training set. Ratio = MSE / in-distribution MSE (per "
           "seed, then mean ± std). AUROC: OOD images (positive) against the model's own test images by per-image "
           "MSE or loss, mean over seeds [DeLong's 95% interval over images]. Excess MSE: per image, this model's MSE "
           "minus that of the model trained on the images' dataset (seed-averaged), bootstrap over images. The AUROC by "
           "loss is for comparison only: an image with little ink has a low NLL however badly it is reconstructed, "
           "so it can fall below 0.5.")
    return f"{head}\n\n{t1}\n\n{curve}\n\n{t2}\n\n{ood}\n\n{t3}"


if __name__ == "__main__":
    harness.cli(main)
