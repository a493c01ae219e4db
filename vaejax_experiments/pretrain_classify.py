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
they get many draws (20, or 10 at quick scale, all in one vmapped program); scratch and LP-FT get 2
per pretrained model at full scale, 4 at the reference scale and 1 at quick scale (draw d fine-tunes
pretrained model d % seeds), and plain fine-tuning, kept to set LP-FT against, one.

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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.decomposition import PCA

from vaejax import data, engine, models
from vaejax_experiments import few_labels, harness, settings, stats, sweep, training
from vaejax_experiments.pretrain_report import BASELINES, CONTROL, METHODS, PRETRAINED, figure, report, verdict

__all__ = ["main", "verdict", "report", "CLAIM", "CONTROL", "METHODS", "PRETRAINED", "BASELINES"]

CLAIM = ("An encoder pretrained as an autoencoder (or VAE) on unlabelled images lets a classifier reach a given "
         "accuracy with far fewer labelled images than the same network trained from scratch.")

LABELS_PER_CLASS = (1, 10, 100, 1000)
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
    """What every classifier sees: the images any draw uses (x_pool, float) and their labels, the draws
    per count (rows of x_pool), the test images and labels, and the number of classes."""

    x_pool: np.ndarray
    y_pool: np.ndarray
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
    # the demo: fewer steps, one network draw per pretrained model, 10 head draws (a smoke check of the protocol)
    "quick": Settings(n_test=10000, labels_per_class=LABELS_PER_CLASS[:3], steps=150, probe_steps=300, batch_size=128,
                      net_draws_per_model=1, head_draws=10),
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
    labelled = Labelled(data.to_float(full_train.images[rows]), np.asarray(full_train.labels[rows], np.int32), draws,
                        x_test, y_test, k)
    fits, dataset_key = Fits({}, {}), harness.stream(run.key, dataset)
    probes = frozen_heads(fits, trained, unlabelled, labelled, s.probe_steps, s.batch_size, dataset_key, run.log)
    networks(fits, trained, unlabelled, labelled, probes, s.steps, s.batch_size, net_draws, dataset_key, run.log)
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


def frozen_heads(fits: Fits, trained: dict, unlabelled, labelled: Labelled, steps: int, batch: int, key, log) -> dict:
    """Heads on frozen features (HEADS), every draw of a method in one vmapped program, one feature
    source at a time (so that only one source's features are in memory). Returns the linear probes:
    "ae"/"vae" -> per count (params, mu, sd), which LP-FT starts from."""
    acc = few_labels.make_accuracy(few_labels.frozen_predict, how="vmap")
    draws, n_test = labelled.draws[0].n.shape[0], len(labelled.y_test)
    counts = [int(d.n[0]) // labelled.k for d in labelled.draws]
    probes = {}
    for source in ("pixels", "pca", "ae", "vae"):
        tables = frozen_features(source, trained, unlabelled, labelled.x_pool, labelled.x_test)
        for name, (feature, widths) in HEADS.items():
            if feature not in tables:
                continue
            pool, test, scaling = tables[feature]
            n_models, rows, width = pool.shape
            m = np.arange(draws) % n_models  # draw d reads model d % n_models
            mu, sd = few_labels.code_scaling(jnp.asarray(scaling))
            table = (jnp.reshape(pool, (-1, width)), np.tile(labelled.y_pool, n_models))  # (inputs, labels)
            test_table = jnp.reshape(test, (-1, width))
            test_rows = (m * n_test)[:, None] + np.arange(n_test)
            for ci, d in enumerate(labelled.draws):
                heads = few_labels.head_init(np.random.default_rng([_index(name), ci]),
                                             (width,) + widths + (labelled.k,), draws)
                p, own = few_labels.train_classifiers(
                    few_labels.frozen_predict, {"head": heads, "mu": mu[m], "sd": sd[m]}, HEAD_LEARNING_RATE, table,
                    few_labels.for_models(d, draws, n_models, rows), harness.stream(key, f"{name}/{counts[ci]}"),
                    steps, batch, how="vmap")
                fits.add(name, acc(p, test_table, test_rows, np.tile(labelled.y_test, (draws, 1))), own)
                if name.endswith("_frozen"):
                    probes.setdefault(source, []).append((p, mu, sd))
            _log_curve(log, name, counts, fits.acc)
        del tables, table, test_table
    return probes


def networks(fits: Fits, trained: dict, unlabelled, labelled: Labelled, probes: dict, steps: int, batch: int,
             net_draws: int, key, log) -> None:
    """Whole networks: scratch and the fine-tuned encoders, one fit per architecture and learning rate.
    Plain fine-tuning, kept to set LP-FT against, gets one draw per pretrained model; the rest of the
    budget goes to scratch and LP-FT, which decide the claim."""
    ae, S, k = trained["ae"], trained["ae"].num_seeds, labelled.k
    draws_of = {"scratch": net_draws, "ae_lp_ft": net_draws, "vae_lp_ft": net_draws,
                "ae_finetune": S, "vae_finetune": S}
    first = lambda tree, d: jax.tree_util.tree_map(lambda a: a[:d], tree)
    stack = lambda *trees: jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *trees)
    scratch = engine.stack_models([models.init(kk, ae.model_cfg)
                                   for kk in jax.random.split(harness.stream(key, "scratch"), net_draws)])
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

    pool, x_test = (jnp.asarray(labelled.x_pool), labelled.y_pool), jnp.asarray(labelled.x_test)
    counts = [int(d.n[0]) // k for d in labelled.draws]
    for cfg, names in ((ae.model_cfg, ("scratch", "ae_finetune", "ae_lp_ft")),
                       (trained["vae"].model_cfg, ("vae_finetune", "vae_lp_ft"))):
        predict = few_labels.net_predict(cfg)
        acc = few_labels.make_accuracy(predict)
        for ci, draws in enumerate(labelled.draws):
            fresh = few_labels.head_init(np.random.default_rng([len(METHODS), ci]), (cfg.latent_dim, k), net_draws)
            starts = {name: start(name, ci, fresh) for name in names}
            for lr in sorted({lr for _, lr in starts.values()}):  # one fit per learning rate
                group = [name for name in names if starts[name][1] == lr]
                sizes = [draws_of[name] for name in group]
                ends = np.cumsum([0] + sizes)
                sub = few_labels.Draws(*(np.concatenate([a[:d] for d in sizes]) for a in draws))
                p, own = few_labels.train_classifiers(
                    predict, stack(*(starts[name][0] for name in group)), lr, pool, sub,
                    harness.stream(key, f"{'+'.join(group)}/{counts[ci]}"), steps, batch)
                a = np.asarray(acc(p, x_test, np.tile(np.arange(len(labelled.y_test)), (ends[-1], 1)),
                                   np.tile(labelled.y_test, (ends[-1], 1))))
                for name, lo, hi in zip(group, ends[:-1], ends[1:]):
                    fits.add(name, a[lo:hi], own[lo:hi])
        for name in names:
            _log_curve(log, name, counts, fits.acc)


def _index(name: str) -> int:
    return [k for k, _ in METHODS].index(name)


if __name__ == "__main__":
    harness.cli(main)
