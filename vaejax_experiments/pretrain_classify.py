"""Pretraining with autoencoders (seed 003): pretrain AE and VAE encoders on the training images
without labels, drop the decoder, and train a classifier on 1, 10, 100 and 1000 labelled images
per class: (a) encoder frozen, with a linear probe or a small MLP head on its code (the VAE's
posterior mean), (b) encoder fine-tuned with a linear head, (c) the same architecture (encoder +
linear head) trained from scratch. Every variant trains for the same number of Adam steps on the
same labelled images; seed s uses pretrained model s, its own labelled subset and its own head init.

Codes enter every head centred by their mean over the unlabelled training images and divided by
one number per encoder, their root-mean-square spread (no labels needed for either), so the heads
see inputs of one scale whatever the encoder. One number, not a std per dimension: a VAE leaves
some dimensions inactive (posterior mean nearly constant), and dividing those by their own tiny
std would turn them into unit-variance noise that a probe with few labels fits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaejax_experiments import common
from vaejax import data, engine, models, objectives, plots

CLAIM = ("An encoder pretrained as an autoencoder (or VAE) on unlabelled images lets a classifier reach a given "
         "accuracy with far fewer labelled images than the same network trained from scratch.")

LABELS_PER_CLASS = (1, 10, 100, 1000)
METHODS = (  # key in metrics.json, label
    ("scratch", "scratch (same architecture)"),
    ("ae_frozen", "AE frozen + linear probe"),
    ("ae_frozen_mlp", "AE frozen + MLP head"),
    ("ae_finetune", "AE fine-tuned"),
    ("vae_frozen", "VAE frozen + linear probe"),
    ("vae_frozen_mlp", "VAE frozen + MLP head"),
    ("vae_finetune", "VAE fine-tuned"),
)
MAIN = ("ae_frozen", "vae_frozen", "ae_finetune", "vae_finetune")  # the variants the verdict is about
MLP_WIDTH = 128
LEARNING_RATE = 1e-3  # networks (scratch, fine-tuned)
HEAD_LEARNING_RATE = 1e-2  # heads on frozen codes: small convex-ish problems, converge in fewer steps


# ---------------------------------------------------------------------------- heads (plain jnp parameters)


def head_init(key, dims: tuple[int, ...]):
    """Dense layers of the given widths (dims[0] inputs ... dims[-1] logits), LeCun-normal weights."""
    keys = jax.random.split(key, len(dims) - 1)
    return [{"w": jax.random.normal(k, (a, b)) / jnp.sqrt(a), "b": jnp.zeros((b,))}
            for k, a, b in zip(keys, dims[:-1], dims[1:])]


def head_apply(layers, h):
    for i, layer in enumerate(layers):
        h = h @ layer["w"] + layer["b"]
        if i < len(layers) - 1:
            h = jax.nn.relu(h)
    return h


def code_fn(cfg):
    """(params, x) -> code: the AE's z, the VAE's posterior mean; differentiable in params."""
    def code(params, x):
        out = models.encode(cfg, params, x)
        return out[0] if cfg.kind == "vae" else out
    return code


# ---------------------------------------------------------------------------- training S classifiers at once


def make_fit(predict, steps: int, batch: int, learning_rate: float = 1e-3):
    """Jitted fit(params_S, x_SN, y_SN, n_S, keys_S) -> params_S: `steps` Adam steps of cross-entropy, S models.

    predict(params, x_B) -> logits. Model s trains on the first n_s of its N (padded) examples, each
    step drawing `batch` of them with replacement, so one compiled program serves every labelled-set
    size. The S labelled sets become one dataset and each model's batches index its own rows.
    """
    optimizer = optax.adam(learning_rate)
    train_steps = engine.make_steps(objectives.classification(predict), optimizer, models="auto")

    def fit(params_S, x_SN, y_SN, n_S, keys_S):
        s, n = y_SN.shape
        draws_SKB = jax.vmap(lambda key, n_s: jax.random.randint(key, (steps, batch), 0, n_s))(keys_S, n_S)
        order_SKB = draws_SKB + (n * jnp.arange(s))[:, None, None]
        states = jax.vmap(lambda p: engine.init(p, optimizer))(params_S)
        data = (x_SN.reshape((s * n,) + x_SN.shape[2:]), y_SN.reshape(-1))
        return train_steps(states, data, order_SKB, keys_S)[0].params

    return jax.jit(fit)  # one program: the caller's params are not donated to the steps inside


def make_accuracy(predict, chunk: int = 1000):
    """Jitted accuracy(params_S, x_N, y_N) -> (S,) fraction correct, in fixed-size chunks."""
    def one(params, x_N, y_N):
        n = x_N.shape[0]
        c = min(chunk, n)
        pad = (-n) % c
        x = jnp.pad(x_N, [(0, pad)] + [(0, 0)] * (x_N.ndim - 1)).reshape((-1, c) + x_N.shape[1:])
        pred = jax.lax.map(lambda x_B: jnp.argmax(predict(params, x_B), -1), x).reshape(-1)[:n]
        return jnp.mean(pred == y_N)
    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def labelled_subsets(split: data.Split, per_class: int, seeds: int, pad_to: int):
    """(x (S, pad_to, H, W, C) float, y (S, pad_to)): a different class-balanced subset of
    K * per_class images per seed, zero-padded to pad_to rows (see make_fit's n)."""
    xs, ys = [], []
    for s in range(seeds):
        sub = data.subset_per_class(split, per_class, 1000 + s)
        pad = pad_to - len(sub.labels)
        xs.append(np.pad(data.to_float(sub.images), [(0, pad)] + [(0, 0)] * 3))
        ys.append(np.pad(sub.labels, (0, pad)))
    return np.stack(xs), np.stack(ys).astype(np.int32)


def label_counts(split: data.Split, wanted=LABELS_PER_CLASS) -> list[int]:
    """The wanted labels per class that the split has, plus all of the smallest class if some were too many."""
    fewest = int(np.unique(split.labels, return_counts=True)[1].min())
    counts = [n for n in wanted if n <= fewest]
    if len(counts) < len(wanted) and fewest not in counts:
        counts.append(fewest)
    return counts


# ---------------------------------------------------------------------------- the experiment


def main(scale="quick", dataset=None, seeds=None, out="results") -> dict:
    run = common.start("pretrain_classify", scale, dataset, seeds, out)
    sc, S = run.scale, run.seeds
    ae, vae = common.shared_pair(sc, run.dataset, S, log=run.log)  # pretrained without labels
    unlabelled = common.train_images(sc, run.dataset).x
    full_train = data.load(run.dataset, "train")
    test = common.load_images(run.dataset, "test")
    n_test = sc.pick(smoke=sc.n_eval, quick=10000, full=None)
    x_test, y_test = (test.x[:n_test], test.y[:n_test]) if n_test else (test.x, test.y)
    counts = label_counts(full_train, sc.pick(smoke=(1, 10), quick=LABELS_PER_CLASS, full=LABELS_PER_CLASS))
    k = data.NUM_CLASSES[run.dataset]
    steps = sc.pick(smoke=10, quick=300, full=1000)
    probe_steps = sc.pick(smoke=20, quick=500, full=2000)
    batch = 128
    run.log(f"labels per class {counts}, {steps} steps (probes {probe_steps}), {len(y_test)} test images, {S} seeds")

    # Encoders with a seed axis: the two pretrained ones and fresh ones of the AE's architecture.
    scratch_params = jax.vmap(lambda key: models.init(key, ae.model_cfg))(jax.random.split(jax.random.key(77), S))
    encoders = {"scratch": (ae.model_cfg, scratch_params), "ae": (ae.model_cfg, ae.params),
                "vae": (vae.model_cfg, vae.params)}
    stats = {name: code_scaling(codes(cfg, params, unlabelled[:5000])) for name, (cfg, params) in encoders.items()}

    def net_predict(cfg):
        code = code_fn(cfg)
        return lambda p, x: head_apply(p["head"], (code(p["enc"], x) - p["mu"]) / p["sd"])

    def frozen_predict(p, h):
        return head_apply(p["head"], (h - p["mu"]) / p["sd"])

    # Frozen codes of test images once per encoder.
    test_codes = {name: codes(cfg, params, x_test) for name, (cfg, params) in encoders.items() if name != "scratch"}

    # One jitted function per architecture, compiled once: labelled sets are padded to the largest.
    # Scratch and AE fine-tuning share the AE's architecture, so they train as one batch of 2S networks.
    cfgs = (ae.model_cfg, vae.model_cfg)
    fit_net = {cfg: make_fit(_frozen_stats(net_predict(cfg)), steps, batch, LEARNING_RATE) for cfg in cfgs}
    acc_net = {cfg: make_accuracy(net_predict(cfg)) for cfg in (ae.model_cfg, vae.model_cfg)}
    fit_head = make_fit(_frozen_stats(frozen_predict), probe_steps, batch, HEAD_LEARNING_RATE)
    acc_head = jax.jit(jax.vmap(lambda p, h, y: jnp.mean(jnp.argmax(frozen_predict(p, h), -1) == y),
                                in_axes=(0, 0, None)))
    stack = lambda *trees: jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *trees)  # noqa: E731
    pad_to = k * max(counts)

    acc = {key: [] for key, _ in METHODS}  # key -> per count, (S,) accuracies
    key0 = jax.random.key(5)
    x_test_dev, y_test_dev = jnp.asarray(x_test), jnp.asarray(y_test)
    for ci, per_class in enumerate(counts):
        x_l, y_l = labelled_subsets(full_train, per_class, S, pad_to)
        x_l_dev, y_l_dev = jnp.asarray(x_l), jnp.asarray(y_l)
        n_S = jnp.full((S,), k * per_class, jnp.int32)
        p0 = {}
        for name in ("scratch", "ae", "vae"):  # whole network trained: from scratch or fine-tuned
            cfg, params = encoders[name]
            d = stats[name][0].shape[-1]
            heads = jax.vmap(lambda kk: head_init(kk, (d, k)))(jax.random.split(jax.random.fold_in(key0, ci), S))
            p0[name] = {"enc": params, "head": heads, "mu": stats[name][0], "sd": stats[name][1]}
        fit_keys = jax.random.split(jax.random.fold_in(key0, 100 + ci), S)
        two = lambda a: jnp.concatenate([a, a])  # noqa: E731
        fitted = fit_net[ae.model_cfg](stack(p0["scratch"], p0["ae"]), two(x_l_dev), two(y_l_dev), two(n_S),
                                       two(fit_keys))
        a = np.asarray(acc_net[ae.model_cfg](fitted, x_test_dev, y_test_dev))
        acc["scratch"].append(a[:S])
        acc["ae_finetune"].append(a[S:])
        fitted = fit_net[vae.model_cfg](p0["vae"], x_l_dev, y_l_dev, n_S, fit_keys)
        acc["vae_finetune"].append(np.asarray(acc_net[vae.model_cfg](fitted, x_test_dev, y_test_dev)))
        for name in ("ae", "vae"):  # encoder frozen: heads on its codes
            cfg, params = encoders[name]
            codes_l = codes(cfg, params, x_l)
            d = codes_l.shape[-1]
            for suffix, dims in (("frozen", (d, k)), ("frozen_mlp", (d, MLP_WIDTH, k))):
                heads = jax.vmap(lambda kk: head_init(kk, dims))(jax.random.split(jax.random.fold_in(key0, 200 + ci), S))
                p = {"head": heads, "mu": stats[name][0], "sd": stats[name][1]}
                fitted = fit_head(p, codes_l, y_l_dev, n_S, jax.random.split(jax.random.fold_in(key0, 300 + ci), S))
                acc[f"{name}_{suffix}"].append(np.asarray(acc_head(fitted, test_codes[name], y_test_dev)))
        run.log(f"{per_class:>5} labels/class: " + ", ".join(f"{key} {float(np.mean(v[-1])):.3f}" for key, v in acc.items()))

    result = {"labels_per_class": counts, "n_test": int(len(y_test)), "steps": steps, "probe_steps": probe_steps,
              "batch_size": batch, "methods": {key: label for key, label in METHODS}}
    for key, per_count in acc.items():
        result[key] = [float(np.mean(a)) for a in per_count]
        result[f"{key}_std"] = [common.mean_std(a)[1] for a in per_count]
        result[f"{key}_seeds"] = [[float(v) for v in a] for a in per_count]
    result["train"] = {"ae": common.training_summary(ae), "vae": common.training_summary(vae)}
    series = {label: (counts, result[key], result[f"{key}_std"]) for key, label in METHODS}
    styles = {label: {"linestyle": "--" if "frozen" in key else "-",
                      "color": "black" if key == "scratch" else ("tab:blue" if key.startswith("ae") else "tab:red"),
                      "marker": "s" if key.endswith("mlp") else "o"} for key, label in METHODS}
    fig = plots.save_curves_spread(series, run.path("accuracy_vs_labels.png"), xlabel="labelled images per class",
                                   ylabel="test accuracy", log_x=True, styles=styles,
                                   title=f"Test accuracy vs labels ({run.dataset}, mean ± std over {S} seeds)")
    result["figures"] = [fig.split("/")[-1]]
    return common.finish(run, result)


def code_scaling(c_SND: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(S, D) means and (S, 1) root-mean-square spreads of S encoders' codes of N images: h -> (h - mu) / sd."""
    return jnp.mean(c_SND, 1), jnp.sqrt(jnp.mean(jnp.var(c_SND, 1), -1, keepdims=True)) + 1e-6


def _frozen_stats(predict):
    """predict with the scaling constants held fixed (no gradient into mu, sd)."""
    def wrapped(p, x):
        p = dict(p, mu=jax.lax.stop_gradient(p["mu"]), sd=jax.lax.stop_gradient(p["sd"]))
        return predict(p, x)
    return wrapped


CHUNK = 1000


def codes(cfg, params_S, x) -> jax.Array:
    """(S, N, D) codes of images x, shared (N, H, W, C) or one set per seed (S, N, H, W, C).

    Fixed-size chunks through one jitted program per architecture, whatever N.
    """
    s = jax.tree_util.tree_leaves(params_S)[0].shape[0]
    x = np.asarray(x, np.float32)
    if x.ndim == 4:
        x = np.broadcast_to(x, (s,) + x.shape)
    n = x.shape[1]
    out = [_codes_chunk(cfg, params_S, np.pad(x[:, i:i + CHUNK], [(0, 0), (0, max(0, i + CHUNK - n))] + [(0, 0)] * 3))
           for i in range(0, n, CHUNK)]
    return jnp.concatenate(out, axis=1)[:, :n]


@functools.partial(jax.jit, static_argnums=0)
def _codes_chunk(cfg, params_S, x_SB):
    return jax.vmap(code_fn(cfg))(params_S, x_SB)


# ---------------------------------------------------------------------------- verdict and report


def _low_counts(m) -> list[int]:
    """Indices of the label counts the claim is about: at most 10 labels per class."""
    return [i for i, n in enumerate(m["labels_per_class"]) if n <= 10]


def verdict(m: dict) -> tuple[str, str]:
    """Holds when every main pretrained variant clearly beats scratch (by more than the summed seed
    spreads) at every count <= 10 labels per class; does not hold when none does at any; else mixed."""
    low = _low_counts(m)
    wins = {key: [common.clearly(m[key][i], m[f"{key}_std"][i], m["scratch"][i], m["scratch_std"][i]) for i in low]
            for key in MAIN}
    def at(i):
        n = m["labels_per_class"][i]
        best = max(MAIN, key=lambda key: m[key][i])
        return (f"{n}/class: scratch {common.pm(m['scratch'][i], m['scratch_std'][i], '.3f')}, best main variant "
                f"({best}) {common.pm(m[best][i], m[f'{best}_std'][i], '.3f')}")
    nums = "; ".join(at(i) for i in range(len(m["labels_per_class"])))
    if all(w == 1 for ws in wins.values() for w in ws):
        return "holds", f"Every pretrained variant clearly beats scratch with <= 10 labels per class ({nums})."
    if not any(w == 1 for ws in wins.values() for w in ws):
        return "does not hold", f"No pretrained variant clearly beats scratch with <= 10 labels per class ({nums})."
    winners = [key for key, ws in wins.items() if all(w == 1 for w in ws)]
    return "mixed", (f"With <= 10 labels per class only {', '.join(winners) or 'some variants at some counts'} clearly "
                     f"beat scratch ({nums}).")


def report(m: dict) -> str:
    counts = m["labels_per_class"]
    rows = [[label] + [common.pm(m[key][i], m[f"{key}_std"][i], ".3f") for i in range(len(counts))]
            for key, label in METHODS]
    t = m["train"]
    head = (f"Test accuracy ({m['n_test']} test images) of classifiers trained on the labelled images only, "
            f"{m['steps']} Adam steps for networks, {m['probe_steps']} for heads on frozen codes (batch "
            f"{m['batch_size']}, full batch when smaller). Pretrained encoders: the {t['ae']['preset']} and "
            f"{t['vae']['preset']} of the interpolation experiment, trained on {t['ae']['n_train']} unlabelled "
            f"images. Scratch: the AE's encoder architecture with a linear head, randomly initialised.")
    return head + "\n\n" + common.table(["method"] + [f"{n} labels/class" for n in counts], rows)


if __name__ == "__main__":
    common.cli(main)
