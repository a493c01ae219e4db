"""Overfitting and out-of-distribution inputs (seed 000, Example 2).

Three autoencoders (S seeds each, a vmapped axis), all with the same number of steps:
  small    trained on a small class-balanced subset (500 images at quick scale) of the dataset;
  full     trained on the scale's training set of the same dataset;
  reverse  trained on the counterpart dataset (fashion_mnist <-> mnist_5k).
Train and test loss per epoch show overfitting (the small model's test loss parts from its train
loss). Then each model is fed images unlike its training set: the counterpart's test images and
uniform noise. Loss: the training objective (Bernoulli NLL, nats per image); also MSE per pixel,
which has no floor that depends on the images, to compare different image sets. A fair reference
for "in distribution" is the same images under the model trained on their own dataset (the full
and reverse models), and for noise the model's own test error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vaejax_experiments import common
from vaejax import data, engine, latent, metrics, plots, recipe

CLAIM = ("An autoencoder overfits a small training set (train loss falls while test loss stays high), and it "
         "reconstructs images unlike its training data (another dataset, noise) poorly.")
COUNTERPART = {"fashion_mnist": "mnist_5k", "mnist_5k": "fashion_mnist", "mnist": "fashion_mnist"}
SHOW = 6


def main(scale="quick", dataset=None, seeds=None, out="results") -> dict:
    run = common.start("overfit_ood", scale, dataset, seeds, out, datasets=tuple(COUNTERPART))
    sc, S = run.scale, run.seeds
    primary, other = run.dataset, COUNTERPART[run.dataset]
    cfg, _ = common.model_pair(sc, primary)
    n_small = sc.pick(smoke=100, quick=500, full=500)
    steps = sc.pick(smoke=sc.steps, quick=600, full=3000)
    n = sc.n_eval
    sets = {  # name -> (images, label)
        "primary_test": common.eval_images(sc, primary).x,
        "other_test": common.eval_images(sc, other).x,
        "noise": metrics.uniform_noise(jax.random.key(3), n, data.SHAPES[primary]),
    }
    settings = {  # name -> (training images, batch, description, its test set, its OOD sets)
        "small": (common.load_images(primary, "train", n_small).x, 50, f"{primary}, {n_small} images",
                  "primary_test", ("other_test", "noise")),
        "full": (common.train_images(sc, primary).x, sc.batch_size, f"{primary}, full training set",
                 "primary_test", ("other_test", "noise")),
        "reverse": (common.train_images(sc, other).x, sc.batch_size, f"{other}, full training set",
                    "other_test", ("primary_test", "noise")),
    }
    set_labels = {"primary_test": f"{primary} test", "other_test": f"{other} test", "noise": "uniform noise"}
    scores = engine.make_scores(recipe.objective(cfg))
    mse_of = _mse_fn(cfg)
    trained, per_image = {}, {}
    for name, (x, batch, desc, test_set, _) in settings.items():
        batch = min(batch, len(x))
        tc = sc.train_config(len(x), batch_size=batch, epochs=max(1, round(steps / (len(x) // batch))))
        run.log(f"{name}: {desc}: {len(x)} images, {tc.epochs} epochs of batch {batch}")
        trained[name] = common.train_seeds(cfg, tc, x, S, eval_sets={"train": x[:n], "test": sets[test_set]},
                                           log=run.log)
        # Per-image loss and MSE of every set (and of the training images) under every seed.
        evals = dict(sets, train=x[:n])
        per_image[name] = {
            s_name: {"loss": np.stack([np.asarray(scores(trained[name].seed_params(s), jnp.asarray(imgs),
                                                         jax.random.key(0))["loss"]) for s in range(S)]),
                     "mse": np.stack([mse_of(trained[name].seed_params(s), imgs) for s in range(S)])}
            for s_name, imgs in evals.items()}

    result = {"settings": {}, "set_labels": set_labels, "n_eval": n, "primary": primary, "other": other}
    reference = {"primary_test": per_image["full"]["primary_test"]["mse"].mean(1),
                 "other_test": per_image["reverse"]["other_test"]["mse"].mean(1)}
    for name, (x, batch, desc, test_set, ood_sets) in settings.items():
        t, pi = trained[name], per_image[name]
        own_test_mse = pi[test_set]["mse"].mean(1)
        row = {"description": desc, "dataset": primary if name != "reverse" else other, "test_set": test_set,
               **common.training_summary(t)}
        row.update(common.stat("train_loss", pi["train"]["loss"].mean(1)))
        row.update(common.stat("test_loss", pi[test_set]["loss"].mean(1)))
        row.update(common.stat("gap", pi[test_set]["loss"].mean(1) - pi["train"]["loss"].mean(1)))
        row.update(common.stat("train_mse", pi["train"]["mse"].mean(1)))
        row.update(common.stat("test_mse", own_test_mse))
        row["ood"] = {}
        for o in ood_sets:
            ref = reference.get(o, own_test_mse)  # same images under their own model; noise: own test error
            ood = {**common.stat("loss", pi[o]["loss"].mean(1)), **common.stat("mse", pi[o]["mse"].mean(1)),
                   **common.stat("reference_mse", ref), **common.stat("mse_ratio", pi[o]["mse"].mean(1) / ref),
                   "reference": "the same images under the model trained on their dataset" if o in reference
                   else "this model's own test images"}
            row["ood"][o] = ood
        steps_per_epoch = t.n_train // t.train_cfg.batch_size
        ev = t.eval_curves
        row["curves"] = {"steps": ((np.arange(ev["train"]["loss"].shape[1]) + 1) * steps_per_epoch).tolist(),
                         "train": ev["train"]["loss"].mean(0).tolist(), "train_std": ev["train"]["loss"].std(0).tolist(),
                         "test": ev["test"]["loss"].mean(0).tolist(), "test_std": ev["test"]["loss"].std(0).tolist()}
        result["settings"][name] = row
    for key in ("train_loss", "test_loss"):  # the keys: per setting, mean and std over seeds
        result[key] = {name: r[key] for name, r in result["settings"].items()}
        result[f"{key}_std"] = {name: r[f"{key}_std"] for name, r in result["settings"].items()}
    result["ood_loss"] = {name: {o: r["ood"][o]["loss"] for o in r["ood"]} for name, r in result["settings"].items()}
    result["ood_loss_std"] = {name: {o: r["ood"][o]["loss_std"] for o in r["ood"]} for name, r in result["settings"].items()}
    result["figures"] = _figures(run, result, trained, per_image, sets, settings)
    return common.finish(run, result)


def _mse_fn(cfg):
    """(params, images) -> per-image MSE per pixel of the reconstructions (host numpy)."""
    def mse(params, images):
        rec = np.asarray(latent.decode(cfg, params, latent.embed(cfg, params, images)))
        return np.mean(np.square(rec - np.asarray(images)), axis=(1, 2, 3))
    return mse


def _figures(run, result, trained, per_image, sets, settings) -> list[str]:
    series, styles = {}, {}
    colors = {"small": "tab:red", "full": "tab:blue", "reverse": "tab:green"}
    for name in ("small", "full", "reverse"):
        c = result["settings"][name]["curves"]
        label = f"{name} ({settings[name][2]})"
        for part, ls in (("train", "--"), ("test", "-")):
            key = f"{label}: {part}"
            series[key] = (c["steps"], c[part], c[f"{part}_std"])
            styles[key] = {"color": colors[name], "linestyle": ls, "marker": None}
    figs = [plots.save_curves_spread(series, run.path("loss_curves.png"), xlabel="training steps",
                                     ylabel="loss (nats per image)", styles=styles, log_y=True,
                                     title="Train (dashed) and test (solid) loss, mean ± std over seeds")]
    images, row_labels = [], []
    for name, set_names in (("full", ("primary_test", "other_test", "noise")), ("reverse", ("other_test", "primary_test"))):
        params = trained[name].seed_params(0)
        cfg = trained[name].model_cfg
        model = result["primary"] if name == "full" else result["other"]
        for s_name in set_names:
            worst = np.argsort(-per_image[name][s_name]["mse"][0])[:SHOW]
            x = np.asarray(sets[s_name])[worst]
            images += [x, np.asarray(latent.decode(cfg, params, latent.embed(cfg, params, x)))]
            row_labels += [f"{model} model fed\n{result['set_labels'][s_name]}: input", "reconstruction"]
    figs.append(plots.save_image_panels({"": np.concatenate(images)}, run.path("worst_reconstructions.png"),
                                        ncol=SHOW, row_labels=row_labels,
                                        title="Worst reconstructions (highest MSE) of each set, seed 0"))
    return [f.split("/")[-1] for f in figs]


# ---------------------------------------------------------------------------- verdict and report


def _parts(m):
    s = m["settings"]
    overfit = common.clearly(s["small"]["gap"], s["small"]["gap_std"], s["full"]["gap"], s["full"]["gap_std"])
    ood = {(name, o): common.clearly(r["ood"][o]["mse"], r["ood"][o]["mse_std"], r["ood"][o]["reference_mse"],
                                     r["ood"][o]["reference_mse_std"])
           for name in ("full", "reverse") for o, r in [(o, s[name]) for o in s[name]["ood"]]}
    return overfit, ood


def verdict(m: dict) -> tuple[str, str]:
    """Two parts: overfitting (the small model's test-minus-train gap clearly above the full model's) and
    OOD (every OOD set of the full and reverse models has clearly higher MSE than its in-distribution
    reference). Holds if both, does not hold if neither (no OOD set at all), mixed otherwise."""
    overfit, ood = _parts(m)
    s = m["settings"]
    gap = (f"test-minus-train loss gap {common.cell(s['small'], 'gap')} nats (small) vs "
           f"{common.cell(s['full'], 'gap')} (full)")
    def against(name, o):
        r = s[name]["ood"][o]
        whose = "on its own test images" if o == "noise" else "for the same images under their own dataset's model"
        return (f"{s[name]['dataset']} model on {m['set_labels'][o]}: MSE {common.cell(r, 'mse', '.3g')} vs "
                f"{common.cell(r, 'reference_mse', '.3g')} {whose} (x{common.cell(r, 'mse_ratio', '.3g')})")
    ood_text = "; ".join(against(name, o) for (name, o) in ood)
    ood_ok = all(v == 1 for v in ood.values())
    ood_any = any(v == 1 for v in ood.values())
    if overfit == 1 and ood_ok:
        return "holds", (f"The small-subset model overfits ({gap}) and every OOD set is reconstructed clearly worse "
                          f"({ood_text}).")
    if overfit != 1 and not ood_any:
        return "does not hold", f"No clear overfitting ({gap}) and no OOD set is clearly worse ({ood_text})."
    what = ("Overfitting shows" if overfit == 1 else "Overfitting does not clearly show") + f" ({gap}); " + \
           ("every" if ood_ok else "not every") + f" OOD set is reconstructed clearly worse ({ood_text})"
    return "mixed", what + "."


def report(m: dict) -> str:
    s = m["settings"]
    rows = []
    for name in ("small", "full", "reverse"):
        r = s[name]
        rows.append([f"{name}: {r['description']}", r["n_train"], r["steps"], common.cell(r, "train_loss"),
                     common.cell(r, "test_loss"), common.cell(r, "gap"), common.cell(r, "train_mse", ".3g"),
                     common.cell(r, "test_mse", ".3g")])
    t1 = common.table(["setting", "train images", "steps", "train loss", "test loss", "gap", "train MSE", "test MSE"], rows)
    rows = []
    for name in ("small", "full", "reverse"):
        r = s[name]
        for o, d in r["ood"].items():
            rows.append([f"{r['dataset']} ({name})", m["set_labels"][o], common.cell(d, "loss"), common.cell(d, "mse", ".3g"),
                         common.cell(d, "reference_mse", ".3g"), common.cell(d, "mse_ratio", ".3g"), d["reference"]])
    t2 = common.table(["model", "fed", "loss", "MSE", "in-distribution MSE", "ratio", "reference"], rows)
    head = (f"Loss: Bernoulli NLL in nats per image (the training objective); MSE per pixel of the reconstruction. "
            f"Train loss is measured on (up to) {m['n_eval']} training images after training, test loss on "
            f"{m['n_eval']} test images; gap = test - train. The loss depends on how much ink an image has (a mostly "
            f"black digit has a low NLL floor), so out-of-distribution error is judged by MSE, against the same images' "
            f"MSE under the model trained on their own dataset (for noise: the model's own test MSE).")
    return head + "\n\n" + t1 + "\n\n" + ("Out of distribution: each model fed images unlike its training set. "
                                          "Ratio = MSE / in-distribution MSE (per seed, then mean ± std).") + "\n\n" + t2


if __name__ == "__main__":
    common.cli(main)
