"""The run loop as a library function: any objective trained through the engine for some epochs in a
workdir, with evaluation, a checkpoint each epoch, metrics.jsonl and bitwise resume.

    from vaejax import fit
    result = fit.fit(objective, optimizer, init_params, x_train, "runs/mine", epochs=10,
                     batch_size=128, key=jax.random.key(0), eval_data={"test": x_test},
                     callbacks=[fit.Progress()])

The workdir holds `metrics.jsonl` (one JSON object per epoch: epoch, train_<metric> and
<eval set>_<metric> for every scalar metric of the objective, seconds, and skipped with
skip_nonfinite) and `checkpoints/<update>` (orbax, the state after that many updates, the last
few kept). Rerun with resume=True after any interruption (resume="auto": resume if the workdir
holds a run, else start one): training continues from the newest intact checkpoint and ends with bitwise the parameters and log of a run never stopped.

This module is the loop alone: each epoch in a few compiled pieces, the checks between them,
the evaluation and the epoch's record. What persists is vaejax.workdir's, what reports is
vaejax.callbacks', and the errors are vaejax.errors'. The names a user needs are importable
from here too: the callbacks `Callback`, `Progress` (a tqdm bar), `JsonLines` (a line per epoch
on stdout), `TensorBoard` (event files, no TensorFlow) and `KeepBest` (each model's best epoch by
an evaluation metric), called on process 0 only, and the errors. Notices (resuming, a damaged checkpoint set aside, skipped updates) go to the "vaejax"
logger.

Faults raise a FitError whose message is one line: NonFinite (a NaN or Inf loss; the last good
checkpoint is kept; skip_nonfinite=True skips such updates instead), WriteFailed (a checkpoint
could not be written; nothing partial is left), Preempted (SIGTERM, what a preempted cloud
VM receives: the state is saved at the next boundary between compiled pieces of an epoch, so a
resumed run goes on exactly where it stopped), WorkdirError (the workdir cannot take the
run's writes, found before anything is written) and StateMismatch (resume=True with another
model, objective or optimizer than the checkpoints were made with: nothing is moved, and the run
resumes once given the right ones).
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import checkpoint, engine, parallel
from vaejax.callbacks import Callback, JsonLines, KeepBest, Progress, TensorBoard  # noqa: F401 - public here too
from vaejax.errors import (FitError, NonFinite, Preempted, StateMismatch, UsageError, WorkdirError,  # noqa: F401
                           WriteFailed)  # public here too
from vaejax.workdir import MAX_TO_KEEP, Store, check_local, has_run, updates

log = logging.getLogger("vaejax")
EVAL_STREAM = 10**6  # epoch e's evaluation draws from fold_in(key, EVAL_STREAM + e), apart from the run's two streams


class FitResult(NamedTuple):
    state: engine.TrainState  # replicated over the mesh (parallel.to_host gives numpy)
    records: list[dict]  # every epoch's record, the resumed ones included
    resumed_from: int  # updates taken before this call (0 for a fresh run)


def fit(objective, optimizer, init_params, train_data, workdir: str | None, *, epochs: int, batch_size: int, key,
        model_axis: str | None = None, train_rows=None, eval_data: dict | None = None, hparams=None, mesh=None,
        skip_nonfinite: bool = False, resume: bool | str = False, meta: dict | None = None, callbacks=(),
        pieces: int = 10, max_to_keep: int = MAX_TO_KEEP) -> FitResult:
    """Train for `epochs` epochs in total (a resumed run does what is left) and return the final state.

    init_params(key) -> params starts a fresh run, called as it is (once per model: pass a jitted function;
    models.init is one); or init_params is the parameters to start from (a pretrained model's, say). With
    model_axis="vmap" | "map" | "auto", `key` is a stack of S keys (one model each) and every number,
    given parameters included, gains a model axis. train_data and the values of
    eval_data ({name: data}, each scored after every epoch as <name>_<metric>) are dataset
    pytrees: arrays with a leading example axis, put on every device. train_rows: which rows of
    train_data the model trains on, (L,) ints, or (S, L) with a model axis, each model its own rows
    of the one shared dataset (nothing is copied); an epoch is then a pass over L rows, shuffled
    anew each epoch. Default: every row. hparams: the objective's
    traced hyperparameters. mesh: a parallel.data_mesh (default: one device). workdir=None keeps
    nothing on disk (no checkpoints, log or resume). meta: JSON describing the run, written to
    <workdir>/run.json and saved with every checkpoint. pieces: compiled pieces per epoch, each one
    host sync (progress, non-finite checks and SIGTERM are seen at their boundaries). A callback
    whose on_epoch_end returns True stops training after that epoch (early stopping).
    """
    mesh = mesh or parallel.data_mesh(1)
    replicated = parallel.replicated(mesh)
    rows = _check_rows(train_rows, engine.batch_size_of(train_data), model_axis, key)
    num_examples = engine.batch_size_of(train_data) if rows is None else rows.shape[-1]
    num_steps = num_examples // batch_size
    if num_steps == 0:
        raise ValueError(f"batch size {batch_size} is larger than the {num_examples} "
                         f"training examples; use a batch size of at most {num_examples}")
    engine.check_hparams(objective, hparams)  # before anything is written
    given = None if callable(init_params) else init_params
    if model_axis is not None:
        engine.check_model_axis(model_axis, key=key, hparams=hparams, init_params=given)
    for data in (train_data, *(eval_data or {}).values()):
        engine.check_targets(objective, data)
    if resume not in (False, True, "auto"):
        raise ValueError(f"resume must be False, True or 'auto' (resume if the workdir holds a run), got {resume!r}")
    if resume and workdir is None:
        raise ValueError("resume needs a workdir")
    if workdir is not None:
        check_local(workdir)
    if resume is True and not has_run(workdir):
        raise UsageError(f"resume=True, but {workdir} holds no run to resume; check the path, or pass "
                         f"resume='auto' to resume a run if there is one and start it otherwise")

    def fresh_state(key):
        if given is not None:
            return engine.init(given, optimizer) if model_axis is None else engine.init_stacked(given, optimizer)
        if model_axis is None:
            return engine.init(init_params(key), optimizer)
        return engine.init_many(init_params, key, optimizer)

    main = parallel.is_main_process()
    abstract = checkpoint.abstract(fresh_state, key, sharding=replicated) if workdir is not None else None
    store = Store(workdir, abstract, num_steps, max_to_keep, main)
    state, partial = store.restore() if resume else (None, None)
    if state is None:
        state = parallel.put_replicated(fresh_state(key), mesh)
    resumed_from = updates(state)
    records = store.start(resumed_from // num_steps, meta)

    data = parallel.put_replicated(train_data, mesh)
    evals = {name: parallel.put_replicated(d, mesh) for name, d in (eval_data or {}).items()}
    steps = engine.make_steps(objective, optimizer, model_axis=model_axis, mesh=mesh, skip_nonfinite=skip_nonfinite)
    evaluate = _evaluator(objective, model_axis, replicated)
    finite = jax.jit(engine.all_finite, out_shardings=replicated)
    callbacks = list(callbacks) if main else []
    meta = dict(meta or {}, num_models=int(jnp.shape(key)[0]) if model_axis else 0)  # what load() needs to know
    try:
        with _sigterm(enabled=workdir is not None) as stopping:
            for epoch in range(resumed_from // num_steps + 1, epochs + 1):
                t0 = time.perf_counter()
                for cb in callbacks:
                    cb.on_epoch_begin(epoch, num_steps)
                state, stats = _run_epoch(state, steps, data, rows, key, hparams, num_steps, batch_size, pieces, mesh,
                                          partial, skip_nonfinite, stopping, epoch, callbacks)
                partial = None
                if stats["stopped_at"] is not None:
                    store.save(state, dict(meta, partial=stats["partial"]))
                    store.finish()
                    raise Preempted(f"stopped by SIGTERM at epoch {epoch}, step {stats['stopped_at']} of {num_steps}; "
                                    f"the state is saved in {workdir}/checkpoints, resume to go on")
                if stats["nonfinite_at"] is not None or not bool(parallel.to_host(finite(state.params))):
                    store.finish()
                    raise NonFinite(epoch, stats["nonfinite_at"], num_steps, stats["nonfinite_value"],
                                    store.last_epoch())
                record = {"epoch": epoch, **{f"train_{name}": _num(v) for name, v in stats["train"].items()}}
                for set_name, d in evals.items():
                    eval_key = _fold(key, EVAL_STREAM + epoch)
                    for name, v in parallel.to_host(evaluate(state.params, d, eval_key, hparams, state.step)).items():
                        record[f"{set_name}_{name}"] = _num(v)
                record["seconds"] = round(time.perf_counter() - t0, 3)
                if skip_nonfinite:
                    record["skipped"] = _count(stats["skipped"])
                    if main and np.any(np.asarray(stats["skipped"]) > 0):
                        log.info(f"epoch {epoch}: skipped {_count(stats['skipped'])} non-finite update(s)")
                records.append(record)
                store.log(records)
                store.save(state, meta)
                if any([bool(cb.on_epoch_end(epoch, record, state)) for cb in callbacks]):
                    break
            store.finish()
    except FitError:  # raised once the saves were settled
        raise
    except BaseException:  # an error of the objective, a callback's, Ctrl-C: let a save in flight finish
        store.abandon()
        raise
    for cb in callbacks:
        cb.on_train_end(state, records)
    return FitResult(state, records, resumed_from)


def _check_rows(train_rows, num_examples: int, model_axis, key):
    """train_rows as an int32 host array, checked against the data and the model axis (None stays None)."""
    if train_rows is None:
        return None
    rows = np.asarray(train_rows)
    want = (int(jnp.shape(key)[0]),) if model_axis else ()
    if not np.issubdtype(rows.dtype, np.integer) or rows.ndim != len(want) + 1 or rows.shape[:-1] != want:
        shape = "(S, L), one row of L indices per model" if model_axis else "(L,)"
        raise ValueError(f"train_rows must be integer indices of shape {shape}, got {rows.dtype}{rows.shape}")
    if rows.size and (rows.min() < 0 or rows.max() >= num_examples):
        raise ValueError(f"train_rows must index the {num_examples} training examples, got values in "
                         f"[{rows.min()}, {rows.max()}]")
    return rows.astype(np.int32)


@functools.partial(jax.jit, static_argnums=(3, 4))  # one program per shape, not a dispatch per op each epoch
def _epoch_orders(key, step, rows, num_examples: int, batch_size: int):
    """engine.epoch_order for one key, or for each of a stack of them; with rows, positions in them
    turned into row numbers (each model's own)."""
    def one(key, rows):
        order = engine.epoch_order(key, step, num_examples, batch_size)
        return order if rows is None else rows[order]

    return one(key, rows) if jnp.ndim(key) == 0 else jax.vmap(one)(key, rows)


def _fold(key, data):
    """fold_in for one key or a stack of them."""
    if jnp.ndim(key) == 0:
        return jax.random.fold_in(key, data)
    return jax.vmap(lambda k: jax.random.fold_in(k, data))(key)


def _evaluator(objective, model_axis, replicated):
    """Jitted (params, data, key, hparams, step) -> the mean of every scalar metric (per model with a model axis)."""
    scores = engine.make_scores(objective, model_axis=model_axis)

    def mean_metrics(params, data, key, hparams, step):
        metrics = scores(params, data, key, hparams, step)
        axis = 0 if model_axis is None else 1
        return {name: jnp.mean(v, axis=axis) for name, v in metrics.items() if v.ndim == axis + 1}

    return jax.jit(mean_metrics, out_shardings=replicated)


def _run_epoch(state, steps, data, rows, key, hparams, num_steps, batch_size, pieces, mesh, partial, skip_nonfinite,
               stopping, epoch, callbacks):
    """One epoch (or what is left of it) in a few compiled pieces, reporting between them.

    Every process knows the epoch's whole order (a few KB); each hands its devices only their
    columns of every batch. Returns (state, stats): the epoch's mean of each scalar training
    metric, skipped updates, the first non-finite step, or where SIGTERM stopped it with the
    metrics of the steps so far.
    """
    n = engine.batch_size_of(data) if rows is None else rows.shape[-1]
    epoch_start = (epoch - 1) * num_steps
    done = updates(state) - epoch_start
    order = np.asarray(_epoch_orders(key, epoch_start, rows, n, batch_size))
    series = {name: [np.asarray(v, np.float32)] for name, v in (partial or {}).items()}  # name -> pieces
    stats = {"nonfinite_at": None, "nonfinite_value": None, "stopped_at": None}
    bounds = np.linspace(0, num_steps, min(pieces, num_steps) + 1).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b <= done:
            continue
        a = max(a, done)
        order_piece = parallel.put_sharded(order[..., a:b, :], mesh, axis=order.ndim - 1)
        state, metrics = steps(state, data, order_piece, key, hparams)
        metrics = parallel.to_host(metrics)
        loss = np.asarray(metrics["loss"])  # (T,) or (S, T)
        for name, v in metrics.items():
            if np.ndim(v) == loss.ndim:  # the scalar metrics (not, say, a KL per latent dimension)
                series.setdefault(name, []).append(np.asarray(v))
        bad_T = ~np.isfinite(loss.reshape(-1, b - a)).all(axis=0)
        if not skip_nonfinite and bad_T.any():
            i = int(np.argmax(bad_T))
            values = loss[..., i].reshape(-1)
            stats.update(nonfinite_at=a + i + 1, nonfinite_value=float(values[~np.isfinite(values)][0]))
            break
        for cb in callbacks:
            cb.on_steps(epoch, int(b), num_steps, _nanmean(np.concatenate(series["loss"], axis=-1)))
        if stopping.is_set() and b < num_steps:
            stats["stopped_at"] = int(b)
            stats["partial"] = {name: np.concatenate(v, axis=-1).tolist() for name, v in series.items()}
            return state, stats
    per_step = {name: np.concatenate(v, axis=-1) for name, v in series.items()}
    skipped = per_step.pop("skipped", None)
    if skipped is not None:
        stats["skipped"] = skipped.sum(axis=-1)
        per_step = {name: np.where(skipped > 0, np.nan, v) for name, v in per_step.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an epoch of skipped updates has no mean
        stats["train"] = {name: np.nanmean(v, axis=-1) for name, v in per_step.items()}
    return state, stats


class _sigterm:
    """A threading.Event set by SIGTERM while the block runs (main thread only; elsewhere never set)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def __enter__(self):
        self.event, self.previous = threading.Event(), None
        if self.enabled and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, lambda *_: self.event.set())
        return self.event

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


# ---------------------------------------------------------------------------- numbers for the log


def _nanmean(x) -> float:
    """The mean of the finite values (nan if none): the running loss between pieces."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def _count(x):
    """An int, or a list of ints (one per model)."""
    x = np.asarray(x)
    return int(x) if x.ndim == 0 else [int(v) for v in x]


def _num(x) -> Any:
    """A float, or a list of floats (one per model)."""
    x = np.asarray(x, np.float64)
    return round(float(x), 4) if x.ndim == 0 else [round(float(v), 4) for v in x]
