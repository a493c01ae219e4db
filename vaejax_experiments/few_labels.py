"""Classifiers from few labels, many at once: the machinery of pretrain_classify.

    Draws               class-balanced labelled subsets, one row per draw, padded to one shape
    head_init / _apply  heads as plain jnp parameters (dense layers; a leading axis of heads)
    code_fn, feature_fn an encoder's code, and its last hidden layer, as differentiable functions
    encoder_features    codes and hidden layers of S encoders, in fixed-size chunks
    train_classifiers   D classifiers at once through vaejax.fit, each on its own draw
    label_efficiency    how many labels a reference curve needs to match an accuracy, with intervals

Training. Every run trains through vaejax.fit, a fixed number of Adam steps on its labelled subset
(batches drawn with replacement, so that one compiled program serves every count), and keeps its
last parameters: no
labels besides the draw's own are read, so the labels on the x axis are all the labels spent
(selecting steps or parameters on validation labels would spend more than the budget, and help the
method with the most to gain from early stopping). Each run reports its accuracy on its own
training labels at the start and at the end, which tells whether it optimised.

Scaling. Codes enter every head centred by a mean and divided by one number per encoder (or per
pixel/PCA representation), their root-mean-square spread (code_scaling), so the heads see inputs of
one scale. One number, not a std per dimension: a VAE leaves some dimensions inactive (posterior
mean nearly constant), and dividing those by their own tiny std would turn them into unit-variance
noise that a probe with few labels fits.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaejax import data, engine, fit, models, objectives, parallel
from vaejax_experiments import stats

CHUNK = 1000  # images per call of the feature extractor


# ---------------------------------------------------------------------------- heads (plain jnp parameters)


def head_init(rng: np.random.Generator, dims: tuple[int, ...], count: int):
    """`count` heads (a leading axis): dense layers of the given widths (dims[0] inputs ... dims[-1]
    logits), LeCun-normal weights. Drawn by numpy: jax.random would compile a program per shape."""
    return [{"w": jnp.asarray(rng.standard_normal((count, a, b)) / np.sqrt(a), jnp.float32),
             "b": jnp.zeros((count, b))} for a, b in itertools.pairwise(dims)]


def head_apply(layers, h):
    for i, layer in enumerate(layers):
        h = h @ layer["w"] + layer["b"]
        if i < len(layers) - 1:
            h = jax.nn.relu(h)
    return h


def code_fn(cfg):
    """(params, x) -> code: the model's embed (the AE's z, the VAE's posterior mean); differentiable in params."""
    return lambda params, x: models.embed(cfg, params, x)


def feature_fn(cfg):
    """(params, x) -> (code, hidden): code_fn's code and the encoder's last hidden layer, flattened.

    The hidden layer is the one before the bottleneck (the last of an MLP encoder's hidden stack, the
    map before a conv encoder's last conv, after its ReLU), which the encoders sow as "hidden": one
    pass gives both.
    """
    def features(params, x):
        code, state = models.module(cfg).apply({"params": params}, x, method="embed", mutable=["intermediates"])
        hidden = state["intermediates"]["encoder"]["hidden"][0]
        return code, hidden.reshape(code.shape[:-1] + (-1,))
    return features


# ---------------------------------------------------------------------------- labelled draws


class Draws(NamedTuple):
    """Labelled subsets, one row per draw, as rows of a table: rows idx (the first n of each row; the
    rest is padding). Padding keeps one shape for every count: one compiled program."""

    idx: np.ndarray  # (D, P) int
    n: np.ndarray  # (D,) int


def draw_rows(labels, per_class: int, seed: int) -> np.ndarray:
    """Indices of per_class random images of each class."""
    order = np.random.default_rng(seed).permutation(len(labels))
    return np.concatenate([order[labels[order] == c][:per_class] for c in np.unique(labels)])


def labelled_draws(labels, per_class: int, draws: int, pad_to: int) -> Draws:
    """Draws of per_class labelled images per class; draw d uses seed 1000 + d whatever the count, so
    a draw's subsets grow by adding images."""
    labels = np.asarray(labels)
    rows = [draw_rows(labels, per_class, 1000 + d) for d in range(draws)]
    idx = np.stack([np.pad(r, (0, pad_to - len(r))) for r in rows])
    return Draws(idx, np.full(draws, len(rows[0]), np.int32))


def pooled(draws_per_count: list[Draws]) -> tuple[np.ndarray, list[Draws]]:
    """(rows, draws): the training-split rows any draw uses, and the draws indexing into those rows,
    so that features are computed once per image, and only for images some draw uses."""
    rows = np.unique(np.concatenate([d.idx.ravel() for d in draws_per_count]))
    return rows, [d._replace(idx=np.searchsorted(rows, d.idx).astype(np.int32)) for d in draws_per_count]


def for_models(draws: Draws, count: int, n_models: int, rows: int) -> Draws:
    """The first `count` draws, draw d reading the rows of model d % n_models in a table that
    stacks the models' copies (`rows` each)."""
    offset = (np.arange(count) % n_models * rows)[:, None]
    d = Draws(*(a[:count] for a in draws))
    return d._replace(idx=d.idx + offset)


def label_counts(split: data.Split, wanted) -> list[int]:
    """The wanted labels per class that the split has, plus all that the smallest class has if some
    were too many."""
    fewest = int(np.unique(split.labels, return_counts=True)[1].min())
    counts = [n for n in wanted if n <= fewest]
    if len(counts) < len(wanted) and fewest not in counts:
        counts.append(fewest)
    return counts


# ---------------------------------------------------------------------------- training many classifiers at once


def accuracy(predict, params, table, idx_N, y_N, w_N, chunk: int = CHUNK):
    """Weighted fraction of rows idx_N of table that predict(params, rows) -> logits labels y_N, in chunks."""
    pred = engine.map_chunks(lambda rows: jnp.argmax(predict(params, table[rows]), -1), idx_N, chunk)
    return jnp.sum(w_N * (pred == y_N)) / jnp.sum(w_N)


def train_classifiers(predict, params_D, learning_rate: float, data, draws: Draws, key, steps: int, batch: int,
                      how: str = "auto"):
    """(params_D, own_accuracy_D2): D classifiers trained through vaejax.fit, classifier d from params_D[d]
    on rows draws.idx[d, :n_d] of data = (inputs, labels), keeping its last parameters.

    Each takes `steps` Adam steps at learning_rate on batches of `batch` of its rows drawn with
    replacement: one epoch over a with-replacement sample of steps * batch rows, so that every labelled-set
    size runs the same compiled program. own_accuracy: each classifier's accuracy on its own rows at the
    start and at the end. how: the model axis ("vmap" suits small heads; "auto" maps networks one after
    another on CPU).
    """
    sample_key, fit_key = jax.random.split(key)
    at = jax.random.randint(sample_key, (len(draws.n), steps * batch), 0, draws.n[:, None])
    rows = np.take_along_axis(draws.idx, np.asarray(at), axis=1)
    objective, optimizer = _trainer(predict, learning_rate)
    result = fit.fit(objective, optimizer, params_D, data, None, epochs=1, batch_size=batch,
                     key=jax.random.split(fit_key, len(draws.n)), model_axis=how, train_rows=rows, pieces=1)
    own = _own_accuracy(predict, how)
    labels, weights = np.asarray(data[1])[draws.idx], (np.arange(draws.idx.shape[1]) < draws.n[:, None])
    # both on the host, so that one compiled accuracy serves both (arrays placed otherwise compile anew)
    start, trained = parallel.to_host(params_D), parallel.to_host(result.state.params)
    return trained, np.stack([np.asarray(own(p, data[0], draws.idx, labels, weights.astype(np.float32)))
                              for p in (start, trained)], axis=1)


@functools.cache  # one objective and optimizer per classifier and rate: fit's compiled steps are reused
def _trainer(predict, learning_rate: float):
    return objectives.classification(predict), optax.adam(learning_rate)


@functools.cache
def _own_accuracy(predict, how: str):
    one = lambda p, table, idx, y, w: accuracy(predict, p, table, idx, y, w)
    return jax.jit(engine.over_models(one, shared=(1,), how=how))


@functools.cache
def make_accuracy(predict, how: str = "auto"):
    """Jitted accuracy(params_D, table, idx_DN, y_DN) -> (D,) test accuracies."""
    one = lambda p, table, idx, y: accuracy(predict, p, table, idx, y, jnp.ones(y.shape))
    return jax.jit(engine.over_models(one, shared=(1,), how=how))


def frozen_predict(p, h):
    return head_apply(p["head"], (h - jax.lax.stop_gradient(p["mu"])) / jax.lax.stop_gradient(p["sd"]))


@functools.cache  # one function per architecture: what fit's and the accuracy's compiled programs are keyed on
def net_predict(cfg):
    """A whole network: the encoder's code, scaled by constants (no gradient into them), a head."""
    code = code_fn(cfg)
    return lambda p, x: frozen_predict(p, code(p["enc"], x))


# ---------------------------------------------------------------------------- features


def code_scaling(c_SND: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(S, D) means and (S, 1) root-mean-square spreads of S encoders' codes of N images: h -> (h - mu) / sd."""
    return jnp.mean(c_SND, 1), jnp.sqrt(jnp.mean(jnp.var(c_SND, 1), -1, keepdims=True)) + 1e-6



def encoder_features(cfg, params_S, x) -> tuple[jax.Array, jax.Array]:
    """(codes (S, N, D), hidden (S, N, H)) of images x (N, H, W, C) under S encoders."""
    return _features(cfg, params_S, jnp.asarray(x, jnp.float32))


@functools.partial(jax.jit, static_argnums=0)  # once per architecture and shape
def _features(cfg, params_S, x_N):
    return jax.vmap(lambda params: engine.map_chunks(lambda x_B: feature_fn(cfg)(params, x_B), x_N, CHUNK))(params_S)


# ---------------------------------------------------------------------------- label efficiency


def labels_to_match(counts, curve, target: float) -> tuple[float | None, str]:
    """Labels per class at which an accuracy curve (measured at increasing counts) first reaches target,
    linear in log(labels) between measured counts: (labels, "within"); (counts[0], "below") when it
    already does at the smallest count (so: at most that many); (None, "never") when it does not
    within the measured counts."""
    if curve[0] >= target:
        return float(counts[0]), "below"
    for n0, n1, a0, a1 in zip(counts[:-1], counts[1:], curve[:-1], curve[1:]):
        if a1 >= target:  # the first crossing: a0 < target <= a1
            t = (target - a0) / (a1 - a0)
            return float(math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0)))), "within"
    return None, "never"


def label_efficiency(counts, acc_DC, scratch_DC, resamples: int = stats.BOOTSTRAP_RESAMPLES, seed: int = 0) -> list:
    """Per count: labels per class scratch needs to match the variant's mean accuracy there, as a ratio
    to the count, with an interval over draws (acc and scratch: (draws, counts), paired by draw; a
    ratio that scratch never reaches counts as infinite, written null in metrics.json). The interval
    is a bootstrap over draws from stats.BOOTSTRAP_MIN_UNITS draws on; with fewer, the range of the
    draws' own ratios (each draw's accuracy read off its own scratch curve), a bootstrap of a few
    values being far too narrow."""
    def ratios(a_C, s_C):
        out = []
        for i, n in enumerate(counts):
            labels, _ = labels_to_match(counts, s_C, a_C[i])
            out.append(math.inf if labels is None else labels / n)
        return out

    if len(acc_DC) >= stats.BOOTSTRAP_MIN_UNITS:
        pick = np.random.default_rng(seed).integers(0, len(acc_DC), (resamples, len(acc_DC)))
        boot = np.array([ratios(acc_DC[p].mean(0), scratch_DC[p].mean(0)) for p in pick])
        bounds = np.quantile(boot, [0.5 - stats.CI_LEVEL / 2, 0.5 + stats.CI_LEVEL / 2], axis=0,
                             method="inverted_cdf").T
        how = f"{stats.CI_LEVEL:.0%} bootstrap interval over {len(acc_DC)} draws"
    else:
        per_draw = np.array([ratios(a, s) for a, s in zip(acc_DC, scratch_DC)])
        bounds, how = np.stack([per_draw.min(0), per_draw.max(0)], 1), f"range over {len(acc_DC)} draws"
    mean_a, mean_s = acc_DC.mean(0), scratch_DC.mean(0)
    out = []
    for i, n in enumerate(counts):
        labels, where = labels_to_match(counts, mean_s, mean_a[i])
        out.append({"labels": labels, "ratio": None if labels is None else labels / n, "reached": where,
                    "ratio_ci": [float(b) for b in bounds[i]], "interval": how})
    return out


def statistics(counts, acc: dict, pretrained: tuple[str, ...], baselines: tuple[str, ...]) -> dict:
    """comparisons[variant][baseline]: per count, stats.paired_comparison of test accuracies on the
    draws both have (draw d is the same labelled subset for every method), each variant against scratch
    and each pretrained one against the baselines too; label_efficiency[variant]: per count,
    label_efficiency against scratch. acc: method -> per count, (draws,) accuracies."""
    def paired(a, b):
        d = min(len(acc[a][0]), len(acc[b][0]))
        return np.stack([x[:d] for x in acc[a]], 1), np.stack([x[:d] for x in acc[b]], 1)

    comparisons, efficiency = {}, {}
    for v in baselines + pretrained:
        against = ("scratch",) + (baselines if v in pretrained else ())
        comparisons[v] = {}
        for b in against:
            a_DC, b_DC = paired(v, b)
            comparisons[v][b] = [stats.paired_comparison(a_DC[:, i], b_DC[:, i]) for i in range(len(counts))]
        efficiency[v] = label_efficiency(counts, *paired(v, "scratch"))
    return {"comparisons": comparisons, "label_efficiency": efficiency}
