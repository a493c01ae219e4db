"""Pretraining with autoencoders (notes 003): pretrain AE and VAE encoders on the training images
without labels, drop the decoder, and train a classifier on 1, 10, 100 and 1000 labelled images
per class (at quick scale up to 100: the claim is about at most LOW labels per class, and 100 is far
enough along scratch's curve to read the label efficiency at LOW). Methods (keys of metrics.json):

- scratch: the AE's encoder architecture with a linear head, randomly initialised, all trained;
- pixels, pca: a linear probe on the raw pixels, or on the PCA codes of the unlabelled training
  images (as many components as the AE's code is wide; fitted without labels): what a classifier
  gets with no deep pretraining at all;
- {ae,vae}_frozen, {ae,vae}_frozen_mlp: the encoder frozen, a linear probe or a small MLP head on
  its code (the VAE's posterior mean); {ae,vae}_hidden: a linear probe on the encoder's last hidden
  layer (the ReLU activations just before the bottleneck);
- {ae,vae}_finetune: the whole encoder + a fresh linear head trained at a 10x lower learning rate;
  {ae,vae}_lp_ft: linear probe, then fine-tune (Kumar et al. 2022): the same, starting from the
  frozen linear probe's head, so that a random head's gradients do not wreck the pretrained features.

Draws. Draw d is one class-balanced labelled subset (the same images for every method, so
comparisons are paired by draw). Its n labels per class are every label a method reads: there is
no validation subset, and the test set is only ever scored. Heads on frozen features are cheap, so
they get many draws (20 at quick scale, all in one vmapped program); scratch and LP-FT get 2 per
pretrained model at quick and full scale, 4 at the reference scale (draw d fine-tunes pretrained
model d % seeds), and plain fine-tuning, kept to set LP-FT against, one.

Training and scaling (few_labels.py). Hyperparameters are fixed in advance, the same for every count
and dataset, and chosen on no labels: every run takes a fixed number of Adam steps of batches of 128
and keeps its last parameters. Each run's accuracy on its own training labels, at its start and end,
shows whether it optimised; LP-FT starts at its linear probe, so its start is the probe's, and it
must end no lower (the LP-FT check in metrics.json). Codes enter every head centred by their mean
over the unlabelled training images and divided by one root-mean-square spread per encoder (or per
pixel/PCA representation): no labels are needed for either.

Positive control. The same code, settings and architecture run on MNIST digits (CONTROL: the 4,000
training and 1,000 test digits of mnist_5k, which every install has offline), where
pretraining on unlabelled images is known to cut the labels a classifier needs (Kingma et al. 2014,
"Semi-supervised learning with deep generative models", Table 1: their M1 model, a VAE's latent code
with an SVM, beats a network trained on the labels alone at 100 labels). A verdict on the primary
dataset counts only when the instrument finds that gain: some pretrained variant needs far fewer
labels than scratch (the rule below) at LOW labels per class on MNIST; else the verdict is
undecided.

Statistics. Per labels-per-class count: each method's mean test accuracy with its interval over
draws (stats.interval: Student's t below 10 draws, a bootstrap from 10 on); each pretrained variant
against scratch, pixels and PCA, paired by draw (stats.paired_comparison: difference, 95% interval,
d_z), on the draws both have; and the label efficiency: how many labels per class scratch needs to
match a variant's accuracy, read off scratch's mean accuracy-against-labels curve (linear in log
labels between measured counts), as a ratio to the variant's own count, with a bootstrap interval
over draws from 10 draws on and the range of the draws' own ratios below.

Verdict (when the control passes). "Far fewer labels" holds when some pretrained variant, at every count <= 10 labels per
class, beats scratch (paired 95% interval above 0) and scratch needs at least RATIO = 3 times its
labels to match it (the lower end of the ratio's interval); it does not hold when no variant does
both at any such count; mixed otherwise. The reason sets that variant against pixels and PCA and
says where they do as well, i.e. where the gain needs no deep autoencoder.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.decomposition import PCA

from vaejax import data, engine, models, plots
from vaejax_experiments import few_labels, harness, markdown, settings, stats, sweep, training

CLAIM = ("An encoder pretrained as an autoencoder (or VAE) on unlabelled images lets a classifier reach a given "
         "accuracy with far fewer labelled images than the same network trained from scratch.")

LABELS_PER_CLASS = (1, 10, 100, 1000)
METHODS = (  # key in metrics.json, label
    ("scratch", "scratch (same architecture)"),
    ("pixels", "pixels + linear probe"),
    ("pca", "PCA codes + linear probe"),
    ("ae_frozen", "AE code + linear probe"),
    ("ae_hidden", "AE hidden layer + linear probe"),
    ("ae_frozen_mlp", "AE code + MLP head"),
    ("ae_finetune", "AE fine-tuned"),
    ("ae_lp_ft", "AE linear probe, then fine-tuned"),
    ("vae_frozen", "VAE code + linear probe"),
    ("vae_hidden", "VAE hidden layer + linear probe"),
    ("vae_frozen_mlp", "VAE code + MLP head"),
    ("vae_finetune", "VAE fine-tuned"),
    ("vae_lp_ft", "VAE linear probe, then fine-tuned"),
)
PRETRAINED = tuple(key for key, _ in METHODS if key.startswith(("ae_", "vae_")))  # what the claim is about
BASELINES = ("pixels", "pca")  # no deep pretraining: set against the pretrained variants
HEADS = {  # method -> (the features it reads, its hidden widths): heads on frozen features
    "pixels": ("pixels", ()), "pca": ("pca", ()),
    **{f"{e}_frozen": (f"{e} code", ()) for e in ("ae", "vae")},
    **{f"{e}_hidden": (f"{e} hidden", ()) for e in ("ae", "vae")},
}
MLP_WIDTH = 128
HEADS.update({f"{e}_frozen_mlp": (f"{e} code", (MLP_WIDTH,)) for e in ("ae", "vae")})
LEARNING_RATE = 1e-3  # networks trained from scratch
FINETUNE_LEARNING_RATE = LEARNING_RATE / 10  # pretrained networks: small steps keep the pretrained features
HEAD_LEARNING_RATE = 1e-2  # heads on frozen codes: small convex-ish problems, converge in fewer steps
SCALING_IMAGES = 5000  # unlabelled images that set the feature scaling
LOW = 10  # the claim is about at most this many labels per class
CONTROL = "mnist_5k"  # the positive control's dataset: MNIST digits, offline everywhere
RATIO = 3.0  # "far fewer": scratch needs at least this many times the labels (lower end of the interval)


def _flat(x):
    return np.asarray(x, np.float32).reshape(len(x), -1)


def frozen_features(source: str, trained: dict, unlabelled, x_pool, x_test) -> dict:
    """Feature name -> (pool, test, scaling) arrays, each (models, N, F), for one source: "pixels",
    "pca" (fitted on every unlabelled image) or a pretrained encoder ("ae", "vae": code and hidden)."""
    scaling = unlabelled[:SCALING_IMAGES]
    if source == "pixels":
        return {"pixels": tuple(_flat(x)[None] for x in (x_pool, x_test, scaling))}
    if source == "pca":
        pca = PCA(trained["ae"].model_cfg.latent_dim, random_state=0).fit(_flat(unlabelled))
        return {"pca": tuple(pca.transform(_flat(x)).astype(np.float32)[None] for x in (x_pool, x_test, scaling))}
    cfg, params = trained[source].model_cfg, trained[source].params
    code, hidden = zip(*(few_labels.encoder_features(cfg, params, x) for x in (x_pool, x_test, scaling)))
    return {f"{source} code": code, f"{source} hidden": hidden}


# ---------------------------------------------------------------------------- the experiment


class Labelled(NamedTuple):
    """What every classifier sees: the images any draw uses (x_pool, float), the draws per count
    (rows of x_pool), the test images and labels, and the number of classes."""

    x_pool: np.ndarray
    draws: list
    x_test: np.ndarray
    y_test: np.ndarray
    k: int


class Fits(NamedTuple):
    """Per method, per count: (draws,) test accuracies, and (draws, 2) accuracies on each draw's own
    training labels at the start and end of its training."""

    acc: dict
    own: dict

    def add(self, key, test_acc, own_acc):
        self.acc.setdefault(key, []).append(np.asarray(test_acc))
        self.own.setdefault(key, []).append(np.asarray(own_acc))


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a pretrain_classify run labels, trains and scores (written into metrics.json)."""

    n_test: int | None  # test images scored (None: the whole test split)
    labels_per_class: tuple[int, ...]  # the labelled counts, those the training split has
    steps: int  # Adam steps of a whole network (scratch, fine-tuning)
    probe_steps: int  # Adam steps of a head on frozen features
    batch_size: int
    net_draws_per_model: int  # labelled draws per pretrained model for the networks
    head_draws: int  # labelled draws for the heads (at least as many as the networks get)


SETTINGS = {
    "smoke": Settings(n_test=200, labels_per_class=(1, 10), steps=10, probe_steps=20, batch_size=128,
                      net_draws_per_model=1, head_draws=4),
    "quick": Settings(n_test=10000, labels_per_class=LABELS_PER_CLASS[:3], steps=250, probe_steps=500, batch_size=128,
                      net_draws_per_model=2, head_draws=20),
    "full": Settings(n_test=None, labels_per_class=LABELS_PER_CLASS, steps=1000, probe_steps=2000, batch_size=128,
                     net_draws_per_model=2, head_draws=20),
    # 4 network draws per pretrained model: at least 10 draws for every interval once there are 3 seeds
    "reference": Settings(n_test=None, labels_per_class=LABELS_PER_CLASS, steps=1000, probe_steps=2000,
                          batch_size=128, net_draws_per_model=4, head_draws=20),
}


def main(scale="quick", dataset=None, seeds=None, out="results") -> dict:
    run = harness.start("pretrain_classify", scale, dataset, seeds, out)
    s = run.scale.pick(**SETTINGS)
    result = classify(run, s, run.dataset, pretrained_pair(run, run.dataset))
    result["figures"] = [figure(result, run.path("accuracy_vs_labels.png"), run.dataset).split("/")[-1]]
    if run.dataset != CONTROL:
        run.log(f"positive control: the same protocol on {CONTROL}")
        control = classify(run, s, CONTROL, pretrained_pair(run, CONTROL))
        result["positive_control"] = {"dataset": CONTROL, **control}
        result["figures"].append(figure(control, run.path("control_accuracy_vs_labels.png"), CONTROL).split("/")[-1])
    return harness.finish(run, result, s)


def pretrained_pair(run, dataset: str) -> dict:
    """The notes' AE and VAE (sweep.NOTES_AE, NOTES_VAE) trained without labels on a dataset's training
    images, as the sweep trains them (until the plateau test at the reference scale): the same for the
    claim's dataset and the control's."""
    x = harness.train_images(run.scale, dataset).x
    _, base = settings.model_pair(run.scale, dataset)
    pair = {}
    for name, (family, beta) in (("ae", sweep.NOTES_AE), ("vae", sweep.NOTES_VAE)):
        fam = sweep.train_one(base, sweep.train_config(run.scale, len(x)), x, harness.eval_images(run.scale, dataset).x,
                              family, (beta,), run.seeds, log=run.log, converge=run.scale, cache=run.cache)
        pair[name] = fam.member(beta)
    return pair


def classify(run, s: Settings, dataset: str, trained: dict) -> dict:
    """Every method at every labels-per-class count on one dataset: accuracies, the LP-FT check and statistics."""
    S = run.seeds
    unlabelled = harness.train_images(run.scale, dataset).x
    full_train = data.load(dataset, "train")
    test = harness.load_images(dataset, "test")
    x_test, y_test = (test.x[: s.n_test], test.y[: s.n_test]) if s.n_test else (test.x, test.y)
    counts = few_labels.label_counts(full_train, s.labels_per_class)
    k = data.NUM_CLASSES[dataset]
    net_draws = s.net_draws_per_model * S  # draw d fine-tunes pretrained model d % S
    head_draws = max(net_draws, s.head_draws)
    run.log(f"{dataset}: labels per class {counts}, {s.steps} network steps, {s.probe_steps} head steps, "
            f"{len(y_test)} test images, {head_draws} draws for heads, {net_draws} for networks")

    draws = [few_labels.labelled_draws(full_train.labels, n, head_draws, k * max(counts)) for n in counts]
    rows, draws = few_labels.pooled(draws)
    labelled = Labelled(data.to_float(full_train.images[rows]), draws, x_test, y_test, k)
    fits = Fits({}, {})
    probes = frozen_heads(fits, trained, unlabelled, labelled, s.probe_steps, s.batch_size, run.log)
    networks(fits, trained, unlabelled, labelled, probes, s.steps, s.batch_size, net_draws, run.log)
    acc, own = fits

    result = {"labels_per_class": counts, "n_test": len(y_test), "steps": s.steps, "probe_steps": s.probe_steps,
              "batch_size": s.batch_size,
              "learning_rates": {"scratch": LEARNING_RATE, "finetune": FINETUNE_LEARNING_RATE,
                                 "head": HEAD_LEARNING_RATE},
              "methods": {key: label for key, label in METHODS}, "draws": {key: len(acc[key][0]) for key, _ in METHODS}}
    for key, _ in METHODS:
        result[key] = [float(np.mean(a)) for a in acc[key]]
        result[f"{key}_std"] = [stats.mean_std(a)[1] for a in acc[key]]
        result[f"{key}_ci"] = [list(stats.interval(a)) for a in acc[key]]  # Student's t below 10 draws
        result[f"{key}_seeds"] = [[float(v) for v in a] for a in acc[key]]
        result[f"{key}_own_labels"] = [[float(v) for v in np.mean(o, 0)] for o in own[key]]  # per count: [start, end]
    result["lp_ft_check"] = {key: [float(np.mean(o[:, 1] >= o[:, 0])) for o in own[key]]
                             for key in PRETRAINED if key.endswith("lp_ft")}
    result.update(few_labels.statistics(counts, acc, PRETRAINED, BASELINES))
    result["train"] = {name: training.training_summary(t) for name, t in trained.items()}
    return result


def _log_curve(log, key, counts, acc):
    log(f"{key:>14}: " + ", ".join(f"{n}/class {np.mean(a):.3f}" for n, a in zip(counts, acc[key])))


def frozen_heads(fits: Fits, trained: dict, unlabelled, labelled: Labelled, steps: int, batch: int, log) -> dict:
    """Heads on frozen features (HEADS), every draw of a method in one vmapped program, one feature
    source at a time (so that only one source's features are in memory). Returns the linear probes:
    "ae"/"vae" -> per count (params, mu, sd), which LP-FT starts from."""
    fit = few_labels.make_fit(few_labels.frozen_predict, steps, batch, how="vmap")
    acc = few_labels.make_accuracy(few_labels.frozen_predict, how="vmap")
    draws, n_test = labelled.draws[0].n.shape[0], len(labelled.y_test)
    counts = [int(d.n[0]) // labelled.k for d in labelled.draws]
    probes = {}
    for source in ("pixels", "pca", "ae", "vae"):
        tables = frozen_features(source, trained, unlabelled, labelled.x_pool, labelled.x_test)
        for key, (feature, widths) in HEADS.items():
            if feature not in tables:
                continue
            pool, test, scaling = tables[feature]
            n_models, rows, width = pool.shape
            m = np.arange(draws) % n_models  # draw d reads model d % n_models
            mu, sd = few_labels.code_scaling(jnp.asarray(scaling))
            table, test_table = jnp.reshape(pool, (-1, width)), jnp.reshape(test, (-1, width))
            test_rows = (m * n_test)[:, None] + np.arange(n_test)
            for ci, d in enumerate(labelled.draws):
                heads = few_labels.head_init(np.random.default_rng([_index(key), ci]), (width,) + widths + (labelled.k,),
                                             draws)
                p, own = fit({"head": heads, "mu": mu[m], "sd": sd[m]}, jnp.full(draws, HEAD_LEARNING_RATE),
                             table, few_labels.for_models(d, draws, n_models, rows),
                             jax.random.split(jax.random.key(100 * _index(key) + ci), draws))
                fits.add(key, acc(p, test_table, test_rows, np.tile(labelled.y_test, (draws, 1))), own)
                if key.endswith("_frozen"):
                    probes.setdefault(source, []).append((p, mu, sd))
            _log_curve(log, key, counts, fits.acc)
        del tables, table, test_table
    return probes


def networks(fits: Fits, trained: dict, unlabelled, labelled: Labelled, probes: dict, steps: int, batch: int,
             net_draws: int, log) -> None:
    """Whole networks: scratch and the fine-tuned encoders, one program per architecture. Plain
    fine-tuning, kept to set LP-FT against, gets one draw per pretrained model; the rest of the budget
    goes to scratch and LP-FT, which decide the claim."""
    ae, S, k = trained["ae"], trained["ae"].num_seeds, labelled.k
    draws_of = {"scratch": net_draws, "ae_lp_ft": net_draws, "vae_lp_ft": net_draws,
                "ae_finetune": S, "vae_finetune": S}
    first = lambda tree, d: jax.tree_util.tree_map(lambda a: a[:d], tree)
    stack = lambda *trees: jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *trees)
    scratch = engine.stack_models([models.init(kk, ae.model_cfg)
                                   for kk in jax.random.split(jax.random.key(77), net_draws)])
    scratch_codes = few_labels.encoder_features(ae.model_cfg, scratch, unlabelled[:SCALING_IMAGES])[0]
    scratch_mu, scratch_sd = few_labels.code_scaling(scratch_codes)

    def start(name, ci, fresh):
        """(initial params, learning rate) of a network method's draws at count ci; fresh: random heads."""
        d = draws_of[name]
        if name == "scratch":
            return {"enc": scratch, "head": fresh, "mu": scratch_mu, "sd": scratch_sd}, LEARNING_RATE
        source = name.split("_")[0]
        probe, mu, sd = probes[source][ci]
        m = np.arange(d) % S  # draw d fine-tunes pretrained model d % S, the one its probe read
        enc = jax.tree_util.tree_map(lambda a: a[m], trained[source].params)
        head = first(probe["head"] if name.endswith("lp_ft") else fresh, d)
        return {"enc": enc, "head": head, "mu": mu[m], "sd": sd[m]}, FINETUNE_LEARNING_RATE

    x_pool, x_test = jnp.asarray(labelled.x_pool), jnp.asarray(labelled.x_test)
    counts = [int(d.n[0]) // k for d in labelled.draws]
    for cfg, names in ((ae.model_cfg, ("scratch", "ae_finetune", "ae_lp_ft")),
                       (trained["vae"].model_cfg, ("vae_finetune", "vae_lp_ft"))):
        predict = few_labels.net_predict(cfg)
        fit, acc = few_labels.make_fit(predict, steps, batch), few_labels.make_accuracy(predict)
        sizes = [draws_of[name] for name in names]
        ends = np.cumsum([0] + sizes)
        test_rows = np.tile(np.arange(len(labelled.y_test)), (ends[-1], 1))
        for ci, draws in enumerate(labelled.draws):
            fresh = few_labels.head_init(np.random.default_rng([len(METHODS), ci]), (cfg.latent_dim, k), net_draws)
            starts = [start(name, ci, fresh) for name in names]
            lrs = np.concatenate([np.full(d, lr) for d, (_, lr) in zip(sizes, starts)])
            sub = few_labels.Draws(*(np.concatenate([a[:d] for d in sizes]) for a in draws))
            p, own = fit(stack(*(params for params, _ in starts)), jnp.asarray(lrs), x_pool, sub,
                         jax.random.split(jax.random.key(2000 + ci), ends[-1]))
            a = np.asarray(acc(p, x_test, test_rows, np.tile(labelled.y_test, (ends[-1], 1))))
            for name, lo, hi in zip(names, ends[:-1], ends[1:]):
                fits.add(name, a[lo:hi], np.asarray(own)[lo:hi])
        for name in names:
            _log_curve(log, name, counts, fits.acc)


def _index(key: str) -> int:
    return [k for k, _ in METHODS].index(key)


# ---------------------------------------------------------------------------- statistics


# ---------------------------------------------------------------------------- figure, verdict and report


def figure(m: dict, path: str, dataset: str) -> str:
    """Mean test accuracy against labels per class, every method, with a +-1 standard error band."""
    counts = m["labels_per_class"]
    series = {label: (counts, m[key], [s / math.sqrt(m["draws"][key]) for s in m[f"{key}_std"]])
              for key, label in METHODS}
    color = {"scratch": "black", "pixels": "tab:gray", "pca": "tab:olive", "ae": "tab:blue", "vae": "tab:red"}
    line = {"frozen": ("--", "o", 1), "hidden": (":", "^", 1), "mlp": ("--", "s", 1), "finetune": ("-.", "v", 1),
            "ft": ("-", "D", 2), "scratch": ("-", "o", 2.5)}  # last: line width; LP-FT and scratch stand out
    styles = {}
    for key, label in METHODS:
        dash, marker, width = line.get(key.split("_")[-1], ("-.", "x", 1))
        styles[label] = {"color": color[key.split("_")[0]], "linestyle": dash, "marker": marker, "linewidth": width}
    return plots.save_curves_spread(series, path, xlabel="labelled images per class", ylabel="test accuracy",
                                    log_x=True, styles=styles,
                                    title=f"Test accuracy vs labels ({dataset}, mean ± s.e. over draws)")


def _low_counts(m) -> list[int]:
    """Indices of the label counts the claim is about: at most LOW labels per class."""
    return [i for i, n in enumerate(m["labels_per_class"]) if n <= LOW]


def _ratio_low_end(e: dict) -> float:
    lo = e["ratio_ci"][0]
    return math.inf if lo is None else lo  # null in metrics.json: scratch never got there


def _far_fewer(m, key: str, i: int) -> bool:
    """At count i, key beats scratch (paired interval above 0) and scratch needs >= RATIO times the labels
    (the lower end of the ratio's interval)."""
    return m["comparisons"][key]["scratch"][i]["better"] == 1 and _ratio_low_end(m["label_efficiency"][key][i]) >= RATIO


def _ratio_text(e: dict, counts, i: int) -> str:
    fmt = lambda r: "∞" if r is None or math.isinf(r) else f"{r:.2g}"
    if e["labels"] is None:
        point = f">{counts[-1] / counts[i]:.3g}x (scratch never reaches it)"
    else:
        point = ("≤" if e["reached"] == "below" else "") + f"{e['ratio']:.2g}x"
    return f"{point} [{fmt(e['ratio_ci'][0])}, {fmt(e['ratio_ci'][1])}]"


def _against(m: dict, best: str, baseline: str, low: list[int]) -> str:
    """What a baseline does at the low counts, set against the pretrained variant `best`."""
    counts, c = m["labels_per_class"], m["comparisons"][best][baseline]
    groups = {1: f"worse than {best}", 0: f"as well as {best}", -1: f"better than {best}"}
    said = []
    for outcome, words in groups.items():
        at = [i for i in low if c[i]["better"] == outcome]
        if at:
            said.append(f"{words} at {', '.join(str(counts[i]) for i in at)}/class "
                        f"({'; '.join(markdown.ci_text(c[i], '.3f') for i in at)})")
    text = f"{m['methods'][baseline]} do " + ", ".join(said)
    gains = m["comparisons"][best]["scratch"]
    matched = [str(counts[i]) for i in low if c[i]["better"] != 1 and gains[i]["better"] == 1]
    if matched:
        text += f"; where {best} beats scratch ({', '.join(matched)}/class) that gain needs no deep autoencoder"
    return text


def _variants_far_fewer(m, low) -> tuple[list[str], list[str]]:
    """(variants that need far fewer labels at every low count, those that do at some)."""
    everywhere = [key for key in PRETRAINED if all(_far_fewer(m, key, i) for i in low)]
    somewhere = [key for key in PRETRAINED if any(_far_fewer(m, key, i) for i in low)]
    return everywhere, somewhere


def control_text(c: dict) -> tuple[bool, str]:
    """Whether the positive control passed (some variant needs far fewer labels than scratch at LOW
    labels per class on the control dataset), and what it found."""
    counts = c["labels_per_class"]
    if LOW not in counts:
        return False, f"the positive control on {c['dataset']} has no count of {LOW} labels per class"
    i = counts.index(LOW)
    passed = [key for key in PRETRAINED if _far_fewer(c, key, i)]
    best = max(passed or PRETRAINED, key=lambda key: c[key][i])
    facts = (f"at {LOW}/class {c['methods'][best]} {c[best][i]:.3f} vs scratch {c['scratch'][i]:.3f}, difference "
             f"{markdown.ci_text(c['comparisons'][best]['scratch'][i], '.3f')}, scratch needs "
             f"{_ratio_text(c['label_efficiency'][best][i], counts, i)} the labels")
    if passed:
        return True, f"The positive control on {c['dataset']} finds the known gain ({facts})."
    return False, (f"The positive control on {c['dataset']} does not find the known gain of pretraining ({facts}): "
                   f"this protocol cannot show the claim where it is known to hold, so its verdict here is not "
                   f"evidence either way")


def verdict(m: dict) -> tuple[str, str]:
    """Undecided when the positive control (control_text) does not pass. Otherwise: holds when some pretrained variant, at every count <= LOW labels per class, beats scratch (paired
    95% interval of the accuracy difference above 0) and scratch needs at least RATIO = 3 times the
    labels to match it (lower end of the label-efficiency interval); does not hold when no variant
    does both at any such count; mixed otherwise. The reason quotes the best such variant (else the
    most accurate at those counts) with effect sizes, and sets it against pixels and PCA codes: when a
    baseline is not clearly worse than it, the reason says so (the verdict is about the claim, which
    is against scratch; the baselines say whether an autoencoder was needed for the gain)."""
    low, counts = _low_counts(m), m["labels_per_class"]
    everywhere, somewhere = _variants_far_fewer(m, low)
    mean_low = lambda key: float(np.mean([m[key][i] for i in low]))
    best = max(everywhere or somewhere or PRETRAINED, key=mean_low)
    c = m["comparisons"][best]
    facts = "; ".join(f"{counts[i]}/class: {m['methods'][best]} {m[best][i]:.3f} vs scratch {m['scratch'][i]:.3f}, "
                      f"difference {markdown.ci_text(c['scratch'][i], '.3f')}, scratch needs "
                      f"{_ratio_text(m['label_efficiency'][best][i], counts, i)} the labels" for i in low)
    baselines = [_against(m, best, b, low) for b in BASELINES]
    against = "Against the baselines: " + "; ".join(baselines) + "."
    rule = f"(beats scratch with a 95% interval above 0 and scratch needs >= {RATIO:g}x the labels)"
    control = m.get("positive_control")
    passed, said = control_text(control) if control else (False, "No positive control was run (the run's dataset "
                                                                  "is the control's)")
    if not passed:
        observed = "holds" if everywhere else "does not hold" if not somewhere else "mixed"
        return "undecided", f"{said}. On {m['dataset']} it would read {observed}: {facts}. {against}"
    against = f"{said} {against}"
    if everywhere:
        return "holds", (f"{', '.join(everywhere)} reach their accuracy with far fewer labels than scratch at every "
                         f"count <= {LOW}/class {rule}. {facts}. {against}")
    if not somewhere:
        return "does not hold", (f"No pretrained variant needs far fewer labels than scratch at any count "
                                 f"<= {LOW}/class {rule}. Best of them, {best}: {facts}. {against}")
    return "mixed", (f"Only {', '.join(somewhere)} need far fewer labels than scratch {rule}, and not at every count "
                     f"<= {LOW}/class. {facts}. {against}")


def report(m: dict) -> str:
    t = m["train"]
    head = (f"Test accuracy ({m['n_test']} test images), mean over labelled-subset draws with its 95% interval "
            f"(bootstrap over draws from 10 draws on, Student's t below). Networks take {m['steps']} Adam steps (learning rate {m['learning_rates']['scratch']:g} from "
            f"scratch, {m['learning_rates']['finetune']:g} when fine-tuning), heads on frozen features "
            f"{m['probe_steps']} (learning rate {m['learning_rates']['head']:g}), batch {m['batch_size']} drawn with "
            f"replacement from the draw's labelled images, the only labels any method reads; each keeps its last "
            f"parameters. Pretrained encoders: the notes' {t['ae']['preset']} and {t['vae']['preset']} (beta 1), "
            f"trained on {t['ae']['n_train']} unlabelled images ({_converged(t)}); PCA on those images, "
            f"as many components as the AE code is wide. Scratch: the AE's encoder architecture with a linear head, "
            f"randomly initialised.")
    parts = [head] + _dataset_tables(m)
    control = m.get("positive_control")
    if control:
        passed, said = control_text(control)
        parts += [f"### Positive control: {control['dataset']}",
                  f"{said}{'' if passed else '.'} The same protocol, settings and architecture, with encoders "
                  f"pretrained on {control['train']['ae']['n_train']} unlabelled {control['dataset']} images "
                  f"({_converged(control['train'])}). Published anchor: Kingma et al. 2014 (Table 1) report their M1 "
                  f"model (a VAE's code with an SVM) ahead of a network trained on the labels alone at 100 labels; "
                  f"their numbers could not be checked against a copy of the paper here, so none is quoted."]
        parts += _dataset_tables(control)
    return "\n\n".join(parts)


def _converged(train: dict) -> str:
    """How the pretrained encoders were trained: their plateau test, or their fixed length."""
    tests = [t["plateau"] for t in train.values() if t.get("plateau")]
    if not tests:
        return ", ".join(f"{name} {t['steps']} steps" for name, t in train.items())
    return "; ".join(f"{name}: {sum(t['plateau']['passed'])} of {len(t['plateau']['passed'])} models pass the plateau "
                     f"test in {t['plateau']['epochs']} epochs" for name, t in train.items())


def _dataset_tables(m: dict) -> list[str]:
    """The accuracy, comparison, label-efficiency and own-label tables of one dataset's run."""
    counts, draws = m["labels_per_class"], m["draws"]
    cols = [f"{n} labels/class" for n in counts]

    def accuracy_cell(key, i):
        lo, hi = m[f"{key}_ci"][i]
        return f"{m[key][i]:.3f} [{lo:.3f}, {hi:.3f}]"

    rows = [[label, draws[key]] + [accuracy_cell(key, i) for i in range(len(counts))] for key, label in METHODS]
    diff = lambda v, b: [m["methods"][v]] + [markdown.ci_text(c, ".3f") for c in m["comparisons"][v][b]]
    efficiency = [[m["methods"][v]] + [_ratio_text(e, counts, i) for i, e in enumerate(m["label_efficiency"][v])]
                  for v in BASELINES + PRETRAINED]
    own = [[label] + [f"{a:.3f} → {b:.3f}" for a, b in m[f"{key}_own_labels"]] for key, label in METHODS]
    check = [[m["methods"][key]] + [f"{f:.0%}" for f in fractions] for key, fractions in m["lp_ft_check"].items()]
    parts = [markdown.table(["method", "draws"] + cols, rows),
             "Paired differences of test accuracy against scratch (draws both have; 95% interval, d_z):",
             markdown.table(["method"] + cols, [diff(v, "scratch") for v in BASELINES + PRETRAINED])]
    for b in BASELINES:
        parts += [f"Paired differences against {m['methods'][b]}:",
                  markdown.table(["method"] + cols, [diff(v, b) for v in PRETRAINED])]
    parts += [(f"Label efficiency: labels per class scratch needs to match each method, as a multiple of its own "
               f"(linear in log labels on scratch's mean curve, on the draws both have; "
               f"{m['label_efficiency'][PRETRAINED[0]][0].get('interval', '95% bootstrap interval')}; "
               f"∞: scratch does not get there within {counts[-1]}/class; ≤: scratch already matches it at "
               f"{counts[0]}/class). "
               f"The claim needs >= {RATIO:g}x at every count <= {LOW}/class."),
              markdown.table(["method"] + cols, efficiency),
              "Accuracy on each draw's own training labels at the start → end of training (mean over draws): "
              "whether each method optimised.",
              markdown.table(["method"] + cols, own),
              "LP-FT check: the fraction of draws whose fine-tuned network ends at least as accurate on its training "
              "labels as the linear probe it started from.",
              markdown.table(["method"] + cols, check)]
    return parts


if __name__ == "__main__":
    harness.cli(main)
