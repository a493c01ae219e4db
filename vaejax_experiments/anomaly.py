"""Anomaly detection (seed 000): for every class k, train an AE and a VAE on the training images of
all other classes; score test images by reconstruction error (AE: its Bernoulli NLL, nats per
image) and by negative ELBO (VAE, averaged over a few posterior samples); AUROC of telling the
held-out class (positive) from the rest (negative) by a high score.

All K x S models of one kind (K held-out classes, S seeds) train in one compiled program:
engine.make_steps(models="auto") maps over a leading model axis, each model with its own batch
order drawn from the indices of its training classes (the data is shared, not copied). The
training subsets are class-balanced, so every model sees the same number of images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vaejax_experiments import common
from vaejax import data, engine, metrics, plots, recipe

CLAIM = ("An autoencoder trained only on normal data flags anomalies: images of a class it never saw get a "
         "higher reconstruction error (AE) or negative ELBO (VAE), so the score detects them (AUROC above chance).")
ELBO_SAMPLES = 2
KINDS = (("ae", "AE, reconstruction error"), ("vae", "VAE, negative ELBO"))


def leave_one_out_indices(labels_N, num_classes: int, seed: int = 0) -> np.ndarray:
    """(K, L): for each class k, L indices of training images of the other classes (L the same for all k)."""
    rng = np.random.default_rng(seed)
    idx = [rng.permutation(np.flatnonzero(np.asarray(labels_N) != k)) for k in range(num_classes)]
    length = min(len(i) for i in idx)
    return np.stack([i[:length] for i in idx]).astype(np.int32)


def batch_orders(keys_M, idx_ML, steps: int, batch: int):
    """(M, steps, batch) indices: model m shuffles its own idx_ML[m] each epoch, drops the remainder."""
    length = idx_ML.shape[1]
    per_epoch = length // batch
    epochs = -(-steps // per_epoch)

    def one(key, idx_L):
        def epoch(e):
            perm = jax.random.permutation(jax.random.fold_in(key, e), length)
            return idx_L[perm[: per_epoch * batch]].reshape(per_epoch, batch)
        return jax.vmap(epoch)(jnp.arange(epochs)).reshape(-1, batch)[:steps]

    return jax.jit(jax.vmap(one))(keys_M, jnp.asarray(idx_ML))


def train_leave_one_out(cfg, tc, x_N, idx_KL, steps: int, seeds: int, seed: int = 0, log=None, chunks: int = 4):
    """K * S models (class-major: model k * S + s) trained in one vmapped program. Returns params (M, ...)."""
    k = idx_KL.shape[0]
    m = k * seeds
    init_key, order_key, run_key = jax.random.split(jax.random.key(seed), 3)
    r = recipe.build(cfg, tc)
    states = engine.init_many(r.init_params, jax.random.split(init_key, m), r.optimizer)
    orders = batch_orders(jax.random.split(order_key, m), np.repeat(idx_KL, seeds, axis=0), steps, tc.batch_size)
    keys = jax.random.split(run_key, m)
    fn = engine.make_steps(r.objective, r.optimizer, models="auto")
    x_N = jnp.asarray(x_N, jnp.float32)
    bounds = np.linspace(0, steps, min(chunks, steps) + 1).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:]):  # equal-sized pieces compile once (a remainder piece once more)
        states, mets = fn(states, x_N, orders[:, a:b], keys)
        if log:
            log(f"  {cfg.kind}: step {b}/{steps}, loss {float(jnp.mean(mets['loss'][:, -1])):.2f} (mean over {m} models)")
    return states.params


def score_all(cfg, params_M, x_N, samples: int) -> np.ndarray:
    """(M, N) anomaly scores: each model's per-image loss (AE: reconstruction; VAE: negative ELBO, mean of `samples`)."""
    scores = engine.make_scores(recipe.objective(cfg))
    fn = jax.jit(jax.vmap(lambda p, x, key: scores(p, x, key)["loss"], in_axes=(0, None, None)))
    x = jnp.asarray(x_N, jnp.float32)
    reps = samples if cfg.kind == "vae" else 1
    return np.mean([np.asarray(fn(params_M, x, jax.random.key(1000 + r))) for r in range(reps)], axis=0)


def main(scale="quick", dataset=None, seeds=None, out="results") -> dict:
    run = common.start("anomaly", scale, dataset, seeds, out)
    sc, S = run.scale, run.seeds
    train_set = common.train_images(sc, run.dataset)
    k = data.NUM_CLASSES[run.dataset]
    n_score = sc.pick(smoke=sc.n_eval, quick=4000, full=None)
    test = common.load_images(run.dataset, "test")
    if n_score and n_score < len(test.y):
        pick = np.asarray(jax.random.permutation(jax.random.key(4321), len(test.y)))[:n_score]
        test = common.Images(test.x[pick], test.y[pick])
    idx_KL = leave_one_out_indices(train_set.y, k)
    steps = sc.pick(smoke=sc.steps, quick=200, full=1000)
    batch = sc.pick(smoke=sc.batch_size, quick=64, full=128)
    tc = sc.train_config(idx_KL.shape[1], batch_size=batch)
    names = common.CLASS_NAMES.get(run.dataset) or [str(i) for i in range(k)]
    ae_cfg, vae_cfg = common.model_pair(sc, run.dataset)
    run.log(f"{k} held-out classes x {S} seeds per kind, {idx_KL.shape[1]} training images each, {steps} steps of "
            f"batch {batch}; scoring {len(test.y)} test images")
    result = {"auroc": {}, "auroc_std": {}, "auroc_seeds": {}, "mean_auroc": {}, "class_names": names,
              "n_train_per_model": int(idx_KL.shape[1]), "n_test": int(len(test.y)), "steps": steps, "batch_size": batch,
              "positives_per_class": [int(np.sum(test.y == c)) for c in range(k)], "models": {}}
    hist = {}
    for kind, cfg in (("ae", ae_cfg), ("vae", vae_cfg)):
        params = train_leave_one_out(cfg, tc, train_set.x, idx_KL, steps, S, seed=11, log=run.log)
        scores_KSN = score_all(cfg, params, test.x, ELBO_SAMPLES).reshape(k, S, -1)
        au = np.array([[metrics.auroc(scores_KSN[c, s], test.y == c) for s in range(S)] for c in range(k)])
        result["auroc"][kind] = au.mean(1).tolist()
        result["auroc_std"][kind] = [common.mean_std(a)[1] for a in au]
        result["auroc_seeds"][kind] = au.tolist()
        result["mean_auroc"][kind] = common.stat("auroc", au.mean(0))  # per seed: mean over classes
        result["models"][kind] = f"{cfg.arch} {cfg.kind} latent {cfg.latent_dim}"
        hist[kind] = scores_KSN[:, 0]
        run.log(f"{kind}: AUROC per held-out class " + ", ".join(f"{names[c]} {au[c].mean():.2f}" for c in range(k)))
    result["figures"] = _figures(run, result, hist, test.y, names)
    return common.finish(run, result)


def _figures(run, result, hist, labels, names) -> list[str]:
    k = len(names)
    panels = {}
    for kind, label in (("ae", "AE"), ("vae", "VAE")):
        for c in range(k):
            title = f"{label}, held out {names[c]}\nAUROC {result['auroc'][kind][c]:.2f}"
            panels[title] = {"other classes (normal)": hist[kind][c][labels != c],
                             "held-out class": hist[kind][c][labels == c]}
    ncol = min(5, k)
    figs = [plots.save_histograms(panels, run.path("anomaly_scores.png"), ncol=ncol, xlabel="score (nats)",
                                  title=f"Anomaly scores of test images ({run.dataset}, seed 0): "
                                        f"AE reconstruction error, VAE negative ELBO")]
    return [f.split("/")[-1] for f in figs]


# ---------------------------------------------------------------------------- verdict and report


def _detected(m, kind) -> list[bool]:
    """Per class: AUROC above chance by more than its seed spread."""
    return [a - s > 0.5 for a, s in zip(m["auroc"][kind], m["auroc_std"][kind])]


def verdict(m: dict) -> tuple[str, str]:
    """Holds when every held-out class is detected above chance (AUROC - std > 0.5) by both the AE and the
    VAE; does not hold when neither model's mean AUROC over classes is clearly above 0.5; mixed otherwise."""
    names = m["class_names"]
    parts = []
    for kind in ("ae", "vae"):
        mean = m["mean_auroc"][kind]
        missed = [names[c] for c, ok in enumerate(_detected(m, kind)) if not ok]
        below = [names[c] for c, (a, sd) in enumerate(zip(m["auroc"][kind], m["auroc_std"][kind])) if a + sd < 0.5]
        parts.append(f"{kind.upper()} mean AUROC {common.cell(mean, 'auroc', '.3f')}, not above chance for: "
                     f"{', '.join(missed) or 'none'}" + (f" (scored as *more* normal than the training classes: "
                                                         f"{', '.join(below)})" if below else ""))
    nums = "; ".join(parts)
    if all(all(_detected(m, kind)) for kind in ("ae", "vae")):
        return "holds", f"Every held-out class is detected above chance by both models ({nums})."
    if not any(m["mean_auroc"][kind]["auroc"] - m["mean_auroc"][kind]["auroc_std"] > 0.5 for kind in ("ae", "vae")):
        return "does not hold", f"Neither model detects held-out classes above chance on average ({nums})."
    return "mixed", f"Detection works for some held-out classes only ({nums})."


def report(m: dict) -> str:
    names = m["class_names"]
    rows = [[names[c], m["positives_per_class"][c], common.pm(m["auroc"]["ae"][c], m["auroc_std"]["ae"][c], ".3f"),
             common.pm(m["auroc"]["vae"][c], m["auroc_std"]["vae"][c], ".3f")] for c in range(len(names))]
    rows.append(["**mean over classes**", "", common.cell(m["mean_auroc"]["ae"], "auroc", ".3f"),
                 common.cell(m["mean_auroc"]["vae"], "auroc", ".3f")])
    head = (f"For each held-out class, an AE ({m['models']['ae']}) and a VAE ({m['models']['vae']}) trained on the other "
            f"classes ({m['n_train_per_model']} images, {m['steps']} steps of batch {m['batch_size']}), scored on "
            f"{m['n_test']} test images. AUROC: 1 = every held-out image scores above every normal one, 0.5 = chance, "
            f"below 0.5 = the held-out class looks *more* normal than the normal classes.")
    return head + "\n\n" + common.table(["held-out class", "test positives", "AUROC, AE (reconstruction)",
                                         "AUROC, VAE (negative ELBO)"], rows)


if __name__ == "__main__":
    common.cli(main)
