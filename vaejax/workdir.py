"""A run's persistence in its workdir: checkpoints, the log, run.json, and resume from them.

    <workdir>/run.json          the run's meta (JSON), rewritten only when it changes
    <workdir>/metrics.jsonl     one JSON object per finished epoch, the whole file rewritten atomically
    <workdir>/checkpoints/<n>   orbax: the state after n updates and the meta, the last few kept

`Store` is what the run loop writes through. Before anything is written it proves that the
workdir takes writes and has room for the checkpoints (prepare_workdir, a WorkdirError
otherwise, with nothing left behind). It restores the newest checkpoint that reads back intact
(a damaged one is moved aside) and trims metrics.jsonl to the epochs that checkpoint holds, so a
resumed run writes the log an uninterrupted one would. Saves are asynchronous: the next save,
or finish(), waits for the one in flight, and a failed write raises WriteFailed naming its epoch,
with its remains removed and the log trimmed back to the last complete checkpoint.

Process 0 writes the files; every process takes part in the checkpoints (orbax coordinates
them). With workdir None nothing persists. Notices go to the "vaejax" logger.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil

import jax
import numpy as np

from vaejax import checkpoint, files, parallel
from vaejax.errors import WorkdirError, WriteFailed

LOG_FILE = "metrics.jsonl"
RUN_FILE = "run.json"
MAX_TO_KEEP = 3
log = logging.getLogger("vaejax")


class Store:
    """A run's workdir as the run loop sees it: restore, start, then per epoch log and save; finish.

    Process 0 writes the files; orbax coordinates the checkpoints. With workdir None nothing persists.
    """

    def __init__(self, workdir, abstract, num_steps, max_to_keep, main):
        self.workdir, self.abstract, self.num_steps, self.main = workdir, abstract, num_steps, main
        self.mngr = self.saver = None
        if workdir is None:
            return
        state_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(abstract))
        # the checkpoints kept, the one being written beside them, and room for the log and figures
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


def has_run(workdir: str) -> bool:
    """Whether a run has started in workdir: it holds a checkpoint, a log or a run.json."""
    return checkpoint.has_checkpoints(workdir) or any(
        os.path.exists(os.path.join(workdir, name)) for name in ("metrics.jsonl", "run.json"))


def where(step: int, num_steps: int) -> str:
    """A checkpoint's place in the run: "epoch 3", or "epoch 4, step 12 of 20" inside an epoch."""
    epoch, done = divmod(step, num_steps)
    return f"epoch {epoch}" if done == 0 else f"epoch {epoch + 1}, step {done} of {num_steps}"


def updates(state) -> int:
    """The updates a state has taken (every model of a stack has taken as many)."""
    return int(np.asarray(parallel.to_host(state.step)).reshape(-1)[0])


def check_local(workdir: str) -> None:
    """A WorkdirError for a URL (gs://, s3://, file://): workdirs are written through the local
    filesystem, so a bucket must be mounted (gcsfuse, s3fs) and its mount point passed instead."""
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", workdir)
    if scheme:
        raise WorkdirError(f"workdir {workdir} is a {scheme.group(1)}:// URL, and workdirs are written through the "
                           "local filesystem; mount the bucket (e.g. gcsfuse) and pass the mounted path")


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
        # created here or not at all: a file or link already at that name is neither followed nor removed
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        finally:
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
    """Bytes free on the file system that holds path."""
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
