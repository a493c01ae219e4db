"""The run loop as a library function: any objective trained through the engine for some epochs in a
workdir, with evaluation, a checkpoint each epoch, metrics.jsonl and bitwise resume.

    from vaejax import fit
    result = fit.fit(objective, optimizer, init_params, x_train, "runs/mine", epochs=10,
                     batch_size=128, key=jax.random.key(0), eval_data={"test": x_test},
                     callbacks=[fit.Progress()])

The workdir holds `metrics.jsonl` (one JSON object per epoch: epoch, train_<metric> and
<eval set>_<metric> for every scalar metric of the objective, seconds, and skipped with
skip_nonfinite) and `checkpoints/<update>` (orbax, the state after that many updates, the last
few kept). Rerun with resume=True after any interruption: training continues from the newest
intact checkpoint and ends with bitwise the parameters and log of a run never stopped.

Behaviour is added with callbacks (`Callback`; called on process 0 only): `Progress` (a tqdm
bar), `JsonLines` (a line per epoch on stdout) and `TensorBoard` (event files, no TensorFlow).
Notices (resuming, a damaged checkpoint set aside, skipped updates) go to the "vaejax" logger.

Faults raise a FitError whose message is one line: NonFinite (a NaN or Inf loss; the last good
checkpoint is kept; skip_nonfinite=True skips such updates instead), WriteFailed (a checkpoint
could not be written; nothing partial is left) and Preempted (SIGTERM, what a preempted cloud
VM receives: the state is saved at the next boundary between compiled pieces of an epoch, so a
resumed run goes on exactly where it stopped).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import threading
import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import checkpoint, engine, files, parallel

LOG_FILE = "metrics.jsonl"
RUN_FILE = "run.json"
MAX_TO_KEEP = 3
log = logging.getLogger("vaejax")


class FitError(Exception):
    """Training could not go on; str(e) is one line."""


class NonFinite(FitError):
    def __init__(self, epoch: int, step: int | None, num_steps: int, value: float, last_saved_epoch: int | None):
        self.epoch, self.step, self.num_steps, self.value = epoch, step, num_steps, value
        self.last_saved_epoch = last_saved_epoch
        where = (f"at epoch {epoch}, step {step} of {num_steps}" if step is not None
                 else f"in the parameters after epoch {epoch}")
        kept = f"the last good checkpoint is epoch {last_saved_epoch}" if last_saved_epoch else "no checkpoint was saved"
        super().__init__(f"non-finite loss ({value}) {where}; stopped, {kept}")


class WriteFailed(FitError):
    pass


class Preempted(FitError):
    pass


class WorkdirError(FitError, ValueError):
    """The workdir cannot take this run's writes (before anything was written)."""


class Callback:
    """What a run reports; override the methods you need. Called on process 0 only."""

    def on_epoch_begin(self, epoch: int, num_steps: int) -> None: ...

    def on_steps(self, epoch: int, done: int, num_steps: int, mean_loss: float) -> None:
        """After each compiled piece of an epoch: `done` of its `num_steps` updates taken."""

    def on_epoch_end(self, epoch: int, record: dict, state: engine.TrainState) -> None:
        """After the epoch's record is in metrics.jsonl and its checkpoint is on its way."""

    def on_train_end(self, state: engine.TrainState, records: list[dict]) -> None: ...


class FitResult(NamedTuple):
    state: engine.TrainState  # replicated over the mesh (parallel.to_host gives numpy)
    records: list[dict]  # every epoch's record, the resumed ones included
    resumed_from: int  # updates taken before this call (0 for a fresh run)


def fit(objective, optimizer, init_params, train_data, workdir: str | None, *, epochs: int, batch_size: int, key,
        models: str | None = None, eval_data: dict | None = None, hparams=None, mesh=None,
        skip_nonfinite: bool = False, resume: bool = False, meta: dict | None = None, callbacks=(),
        pieces: int = 10, max_to_keep: int = MAX_TO_KEEP) -> FitResult:
    """Train for `epochs` epochs in total (a resumed run does what is left) and return the final state.

    init_params(key) -> params starts a fresh run, called as it is (once per model: pass a jitted function;
    models.init is one); with models="vmap" | "map" | "auto", `key` is a stack of S keys (one model each) and
    every number gains a model axis. train_data and the values of
    eval_data ({name: data}, each scored after every epoch as <name>_<metric>) are dataset
    pytrees: arrays with a leading example axis, put on every device. hparams: the objective's
    traced hyperparameters. mesh: a parallel.data_mesh (default: one device). workdir=None keeps
    nothing on disk (no checkpoints, log or resume). meta: JSON describing the run, written to
    <workdir>/run.json and saved with every checkpoint. pieces: compiled pieces per epoch, each one
    host sync (progress, non-finite checks and SIGTERM are seen at their boundaries). A callback
    whose on_epoch_end returns True stops training after that epoch (early stopping).
    """
    mesh = mesh or parallel.data_mesh(1)
    replicated = parallel.replicated(mesh)
    num_steps = engine.batch_size_of(train_data) // batch_size
    if num_steps == 0:
        raise ValueError(f"batch size {batch_size} is larger than the {engine.batch_size_of(train_data)} "
                         f"training examples; use a batch size of at most {engine.batch_size_of(train_data)}")
    if resume and workdir is None:
        raise ValueError("resume needs a workdir")

    def fresh_state(key):
        if models is None:
            return engine.init(init_params(key), optimizer)
        return engine.init_many(init_params, key, optimizer)

    main = parallel.is_main_process()
    abstract = checkpoint.abstract(fresh_state, key, sharding=replicated) if workdir is not None else None
    store = _Store(workdir, abstract, num_steps, max_to_keep, main)
    state, partial = store.restore() if resume else (None, None)
    if state is None:
        state = parallel.put_replicated(fresh_state(key), mesh)
    resumed_from = updates(state)
    records = store.start(resumed_from // num_steps, meta)

    data = parallel.put_replicated(train_data, mesh)
    evals = {name: parallel.put_replicated(d, mesh) for name, d in (eval_data or {}).items()}
    steps = engine.make_steps(objective, optimizer, models=models, mesh=mesh, skip_nonfinite=skip_nonfinite)
    evaluate = _evaluator(objective, models, replicated)
    finite = jax.jit(engine.all_finite, out_shardings=replicated)
    callbacks = list(callbacks) if main else []
    meta = dict(meta or {}, num_models=int(jnp.shape(key)[0]) if models else 0)  # what load() needs to know
    try:
        with _sigterm(enabled=workdir is not None) as stopping:
            for epoch in range(resumed_from // num_steps + 1, epochs + 1):
                t0 = time.perf_counter()
                for cb in callbacks:
                    cb.on_epoch_begin(epoch, num_steps)
                state, stats = _run_epoch(state, steps, data, key, hparams, num_steps, batch_size, pieces, mesh,
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
                    eval_key = _fold(key, 10**6 + epoch)
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
    except FitError:
        raise
    except BaseException:
        store.abandon()
        raise
    for cb in callbacks:
        cb.on_train_end(state, records)
    return FitResult(state, records, resumed_from)


class _Store:
    """Where a run persists: checkpoints, metrics.jsonl and run.json in the workdir (process 0 writes
    the files; orbax coordinates the checkpoints). With workdir None nothing persists."""

    def __init__(self, workdir, abstract, num_steps, max_to_keep, main):
        self.workdir, self.abstract, self.num_steps, self.main = workdir, abstract, num_steps, main
        self.mngr = self.saver = None
        if workdir is None:
            return
        state_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(abstract))
        prepare_workdir(workdir, (max_to_keep + 1) * state_bytes + 16 * 2**20)
        if main:
            files.remove_temporaries(workdir, LOG_FILE)
        self.mngr = checkpoint.manager(workdir, max_to_keep=max_to_keep)
        self.saver = _Saver(self.mngr, workdir, num_steps)
        self.log_path = os.path.join(workdir, LOG_FILE)

    def restore(self):
        return _restore(self.mngr, self.abstract, self.workdir, self.num_steps, self.main)

    def start(self, done_epochs: int, meta) -> list[dict]:
        """The records of the epochs done; the log trimmed to them and run.json written."""
        if self.workdir is None or not self.main:
            return []
        records = read_log(self.log_path, done_epochs)
        write_log(self.log_path, records)  # drops what came after the checkpoint (and a torn last line)
        run_file = os.path.join(self.workdir, RUN_FILE)
        if meta is not None and files.read_json(run_file) != json.loads(json.dumps(meta)):
            files.write_atomic(run_file, json.dumps(meta, indent=1) + "\n")
        return records

    def log(self, records):
        if self.workdir is not None and self.main:
            write_log(self.log_path, records)

    def save(self, state, meta):
        if self.saver is not None:
            self.saver.save(state, meta)

    def finish(self):
        if self.saver is not None:
            self.saver.finish()

    def abandon(self):
        if self.saver is not None:
            self.saver.abandon()

    def last_epoch(self) -> int | None:
        last = None if self.mngr is None else self.mngr.latest_step()
        return None if last is None else last // self.num_steps


def updates(state) -> int:
    """The updates a state has taken (every model of a stack has taken as many)."""
    return int(np.asarray(parallel.to_host(state.step)).reshape(-1)[0])


@functools.partial(jax.jit, static_argnums=(2, 3))  # one compile per shape: op by op, it cost ms an epoch
def _epoch_orders(key, step, num_examples: int, batch_size: int):
    """engine.epoch_order for one key, or for each of a stack of them."""
    if jnp.ndim(key) == 0:
        return engine.epoch_order(key, step, num_examples, batch_size)
    return jax.vmap(engine.epoch_order, in_axes=(0, None, None, None))(key, step, num_examples, batch_size)


def _fold(key, data):
    """fold_in for one key or a stack of them."""
    if jnp.ndim(key) == 0:
        return jax.random.fold_in(key, data)
    return jax.vmap(lambda k: jax.random.fold_in(k, data))(key)


def _restore(mngr, abstract, workdir, num_steps, main):
    """(state, the metrics of a partial epoch or None) of the newest intact checkpoint, or (None, None).

    Notices go to the "vaejax" logger, from process 0 only.
    """
    def damaged(step, reason, moved_to):
        if main:
            log.warning(f"checkpoint of {where(step, num_steps)} is damaged ({short_reason(reason)}); moved to "
                        f"{moved_to}, falling back to the one before")

    step, state, meta = checkpoint.restore_good(mngr, abstract, damaged)
    if main:
        log.info(f"no complete checkpoint in {workdir} yet; starting from epoch 1" if state is None
                 else f"resuming {workdir} after {where(step, num_steps)}")
    return (None, None) if state is None else (state, (meta or {}).get("partial"))


def where(step: int, num_steps: int) -> str:
    """A checkpoint's place in the run: "epoch 3", or "epoch 4, step 12 of 20" inside an epoch."""
    epoch, done = divmod(step, num_steps)
    return f"epoch {epoch}" if done == 0 else f"epoch {epoch + 1}, step {done} of {num_steps}"


def _evaluator(objective, models, replicated):
    """Jitted (params, data, key, hparams, step) -> the mean of every scalar metric (per model with models)."""
    scores = engine.make_scores(objective, models=models)

    def mean_metrics(params, data, key, hparams, step):
        metrics = scores(params, data, key, hparams, step)
        axis = 0 if models is None else 1
        return {name: jnp.mean(v, axis=axis) for name, v in metrics.items() if v.ndim == axis + 1}

    return jax.jit(mean_metrics, out_shardings=replicated)


def _run_epoch(state, steps, data, key, hparams, num_steps, batch_size, pieces, mesh, partial, skip_nonfinite,
               stopping, epoch, callbacks):
    """One epoch (or what is left of it) in a few compiled pieces, reporting between them.

    Every process knows the epoch's whole order (a few KB); each hands its devices only their
    columns of every batch. Returns (state, stats): the epoch's mean of each scalar training
    metric, skipped updates, the first non-finite step, or where SIGTERM stopped it with the
    metrics of the steps so far.
    """
    n = engine.batch_size_of(data)
    epoch_start = (epoch - 1) * num_steps
    done = updates(state) - epoch_start
    order = np.asarray(_epoch_orders(key, epoch_start, n, batch_size))
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
        loss = np.asarray(metrics["loss"])  # (K,) or (S, K)
        for name, v in metrics.items():
            if np.ndim(v) == loss.ndim:  # the scalar metrics (not, say, a KL per latent dimension)
                series.setdefault(name, []).append(np.asarray(v))
        bad_K = ~np.isfinite(loss.reshape(-1, b - a)).all(axis=0)
        if not skip_nonfinite and bad_K.any():
            i = int(np.argmax(bad_K))
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


class _Saver:
    """Asynchronous checkpoint saves, named by update count; a failed write (full disk, read-only)
    names its epoch, removes its remains and trims metrics.jsonl back to the last checkpoint."""

    def __init__(self, mngr, workdir, num_steps):
        self.mngr, self.workdir, self.num_steps = mngr, workdir, num_steps
        self.pending = None  # update count whose save may still be in flight

    def save(self, state, meta):
        self._wait()
        self.pending = updates(state)
        try:
            checkpoint.save(self.mngr, self.pending, state, meta)
        except Exception as e:  # noqa: BLE001 - orbax raises many types for a failed write
            self._failed(e)

    def finish(self):
        self._wait()
        self.pending = None

    def abandon(self):
        """On an unexpected error: let a save in flight finish, silently."""
        try:
            self.mngr.wait_until_finished()
        except Exception:  # noqa: BLE001
            pass

    def _wait(self):
        if self.pending is None:
            return
        try:
            self.mngr.wait_until_finished()
            self.mngr.check_for_errors()
        except Exception as e:  # noqa: BLE001
            self._failed(e)

    def _failed(self, e):
        step, self.pending = self.pending, None
        checkpoint.remove_partial(self.mngr, step)
        self.mngr.reload()
        last = self.mngr.latest_step()
        log_path = os.path.join(self.workdir, LOG_FILE)
        if parallel.is_main_process() and os.path.exists(log_path):
            try:
                write_log(log_path, read_log(log_path, (last or 0) // self.num_steps))
            except OSError:
                pass
        epoch = -(-step // self.num_steps)
        raise WriteFailed(f"cannot write the checkpoint of epoch {epoch} to {self.workdir}/checkpoints "
                          f"({short_reason(checkpoint.one_line(e))}); free space or fix permissions, then resume "
                          f"(last complete checkpoint: {'epoch ' + str(last // self.num_steps) if last else 'none'})"
                          ) from None


# ---------------------------------------------------------------------------- the workdir


def prepare_workdir(workdir: str, need_bytes: int) -> None:
    """Create the workdir and prove it takes writes and has room; on failure remove what was created."""
    created = []
    path = os.path.abspath(workdir)
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write-probe-{os.getpid()}-{parallel.process_index()}")
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        finally:
            if os.path.exists(probe):
                os.remove(probe)
        free = free_bytes(workdir)
        if free < need_bytes:
            raise WorkdirError(f"{workdir} has {free / 2**20:.1f} MiB free but checkpoints and figures need about "
                               f"{need_bytes / 2**20:.1f} MiB; free some space or choose another workdir")
    except OSError as e:
        _remove_created(created)
        raise WorkdirError(f"cannot write to workdir {workdir} ({e.strerror or e}); choose a writable folder") from None
    except WorkdirError:
        _remove_created(created)
        raise


def free_bytes(path: str) -> int:
    return shutil.disk_usage(path).free


def _remove_created(created: list[str]) -> None:
    for path in created:  # deepest first
        try:
            os.rmdir(path)
        except OSError:
            pass


def read_log(path: str, last_epoch: int) -> list[dict]:
    """The records of epochs 1..last_epoch from metrics.jsonl (one per epoch; unreadable lines dropped)."""
    if not os.path.exists(path):
        return []
    by_epoch = {}
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
                epoch = int(record["epoch"])
            except (ValueError, KeyError, TypeError):
                continue
            if 1 <= epoch <= last_epoch:
                by_epoch[epoch] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def write_log(path: str, records: list[dict]) -> None:
    files.write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def short_reason(reason: str, limit: int = 160) -> str:
    """An exception's line, trimmed; the usual I/O failures in plain words."""
    for marker, plain in (("RESOURCE_EXHAUSTED", "no space left on device"), ("No space left", "no space left on device"),
                          ("Read-only file system", "read-only file system"), ("PERMISSION_DENIED", "permission denied"),
                          ("Permission denied", "permission denied")):
        if marker in reason:
            return plain
    reason = reason.split(" See full", 1)[0].split(" [tensorstore_spec", 1)[0]
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


# ---------------------------------------------------------------------------- callbacks


class Progress(Callback):
    """A tqdm progress bar per epoch with the running mean loss."""

    def __init__(self, total_epochs: int | None = None):
        self.total, self.bar = total_epochs, None

    def on_epoch_begin(self, epoch, num_steps):
        from tqdm import tqdm

        desc = f"epoch {epoch}" + (f"/{self.total}" if self.total else "")
        self.bar = tqdm(total=num_steps, desc=desc, unit="step", leave=True, dynamic_ncols=True)

    def on_steps(self, epoch, done, num_steps, mean_loss):
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix(loss=f"{mean_loss:.2f}")

    def on_epoch_end(self, epoch, record, state):
        summary = {k: v for k, v in record.items() if k in ("test_loss", "test_kl")}
        if summary:
            self.bar.set_postfix({k: _short_num(v) for k, v in summary.items()})
        self.bar.close()


class JsonLines(Callback):
    """Each epoch's record as one JSON line on stdout."""

    def on_epoch_end(self, epoch, record, state):
        print(json.dumps(record), flush=True)


class TensorBoard(Callback):
    """Each epoch's scalars as TensorBoard events in `logdir` (tensorboardX; no TensorFlow needed).

    With several models, each gets its own tag suffix /model_i.
    """

    def __init__(self, logdir: str):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError("TensorBoard logging needs tensorboardX: pip install tensorboardX") from None
        self.writer = SummaryWriter(logdir)

    def on_epoch_end(self, epoch, record, state):
        for name, value in record.items():
            if name in ("epoch", "seconds") or value is None:
                continue
            if isinstance(value, list):
                for i, v in enumerate(value):
                    self.writer.add_scalar(f"{name}/model_{i}", v, epoch)
            else:
                self.writer.add_scalar(name, value, epoch)
        self.writer.flush()

    def on_train_end(self, state, records):
        self.writer.close()


# ---------------------------------------------------------------------------- numbers for the log


def _nanmean(x) -> float:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def _short_num(v):
    return f"{np.mean(v):.2f}"


def _count(x):
    """An int, or a list of ints (one per model)."""
    x = np.asarray(x)
    return int(x) if x.ndim == 0 else [int(v) for v in x]


def _num(x) -> Any:
    """A float, or a list of floats (one per model)."""
    x = np.asarray(x, np.float64)
    return round(float(x), 4) if x.ndim == 0 else [round(float(v), 4) for v in x]
