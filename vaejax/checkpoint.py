"""Checkpoints of a TrainState (orbax CheckpointManager): save, keep the last few, resume.

A checkpoint is a folder per save, named by the state's update count, holding the state (StandardSave) and a small JSON of
metadata (the run's configuration and a SHA-256 of the state's bytes). Orbax writes into a
temporary folder and renames it when complete, so a save cut short (a kill, a full disk) is
never listed as a checkpoint; the manager removes such leftovers when it opens. A listed
checkpoint whose files were damaged later fails to restore or fails the SHA-256 check:
`restore_good` moves it aside to <workdir>/damaged_checkpoints/ and falls back to the one before.
A checkpoint of another model or optimizer (its saved signature differs from the state asked for)
is not damaged: restoring it raises StateMismatch and moves nothing.

With several processes, orbax writes each array from the processes that hold it and
coordinates the rename itself; every process must call save / restore alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import sys
import time
import types

import jax
import numpy as np

from vaejax.errors import StateMismatch


@contextlib.contextmanager
def _orbax_quietly():
    """Around orbax's import and a manager's opening: its absl warnings off, and the root logger put back
    as it was. A library's logging.info() with no handler configured adds one to the root logger, after
    which every library's warnings print; vaejax leaves the user's logging as it found it."""
    root, absl = logging.getLogger(), logging.getLogger("absl")
    handlers, levels = list(root.handlers), (root.level, absl.level)
    absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(levels[0])
        absl.setLevel(levels[1])


with _orbax_quietly():
    import orbax.checkpoint as ocp

DIGEST_KEY = "state_sha256"
SIGNATURE_KEY = "state_signature"
DAMAGED_DIR = "damaged_checkpoints"
MAX_MODELS = 1 << 16  # models on one model axis; a larger count in metadata is damage, not a run to allocate


class CheckpointDamaged(Exception):
    """A listed checkpoint that cannot be read back as it was written; str(e) is one line."""


def manager(workdir: str, max_to_keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
    """The run's checkpoint manager, over <workdir>/checkpoints (created if missing).

    A writing manager removes what interrupted saves left; read_only=True touches nothing
    (for reading a run that may still be training).
    """
    silence_abandoned_io(checkpoint_dir(workdir))
    if read_only:
        options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
    else:
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True)
    with _orbax_quietly():  # e.g. its warning that a read-only manager is read-only: what was asked for
        return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=("state", "meta"))




def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def has_checkpoints(workdir: str) -> bool:
    """Whether the workdir lists a finished checkpoint (a save cut short leaves only a *.orbax-checkpoint-tmp* folder)."""
    root = checkpoint_dir(workdir)
    return os.path.isdir(root) and any(n.isdigit() and os.path.isdir(os.path.join(root, n)) for n in os.listdir(root))


def save(mngr: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
    """Save the state as checkpoint `step` (asynchronously; call mngr.wait_until_finished() before exit).

    The metadata gains the state's SHA-256, checked again on restore, and its signature (signature()),
    which tells a state of another model or optimizer from a damaged one.
    """
    meta = dict(meta, **{DIGEST_KEY: state_digest(state), SIGNATURE_KEY: signature(state)})
    with _orbax_quietly():
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))


def restore(mngr: ocp.CheckpointManager, abstract_state, step: int | None = None):
    """(state, meta) of `step` (default: the latest); abstract_state comes from jax.eval_shape.

    Raises StateMismatch, before reading any array, when the checkpoint holds a state of another
    structure or shapes than abstract_state (another model or optimizer); CheckpointDamaged when
    its metadata is malformed (check_meta), when the restored bytes do not match the SHA-256 saved
    with them, or when no SHA-256 was saved (every checkpoint vaejax writes has one).
    """
    step = mngr.latest_step() if step is None else step
    meta = read_meta(mngr, step)
    saved_signature = meta.get(SIGNATURE_KEY)  # absent from checkpoints of older versions
    if saved_signature is not None and (difference := signature_difference(saved_signature, signature(abstract_state))):
        raise StateMismatch(f"the checkpoint of update {step} in {mngr.directory} holds another state than "
                            f"this run's model and optimizer make ({difference}); pass the model, objective and "
                            f"optimizer it was trained with (nothing was moved)")
    with _orbax_quietly():
        state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))).state
    saved = meta.get(DIGEST_KEY)
    if saved is None:
        raise CheckpointDamaged("its metadata holds no SHA-256 of the state, so its arrays cannot be checked")
    if saved != state_digest(state):
        raise CheckpointDamaged("its arrays do not match the SHA-256 saved with them")
    return state, meta


def restore_good(mngr: ocp.CheckpointManager, abstract_state, on_damaged=None, move_damaged: bool = True):
    """(step, state, meta) of the newest checkpoint that reads back intact, or (None, None, None).

    Each damaged one on the way is reported as on_damaged(step, reason, moved_to) and, with
    move_damaged, moved out of the checkpoint folder so that training can write that step again.
    """
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            state, meta = restore(mngr, abstract_state, step)
            return step, state, meta
        except StateMismatch:  # intact, but not this run's: the caller's mistake, not the files'
            raise
        except Exception as e:  # orbax / tensorstore raise many types for unreadable files
            moved_to = quarantine(mngr, step) if move_damaged else None
            if on_damaged is not None:
                on_damaged(step, one_line(e), moved_to)
    return None, None, None


_QUIET_DIRS: set[str] = set()  # checkpoint folders whose failed reads and writes are reported by vaejax


def silence_abandoned_io(directory: str) -> None:
    """Drop the noise orbax leaves when one of its reads or writes fails; `directory`: a checkpoint folder.

    When one array fails to read (a damaged checkpoint) or to write (a full disk), orbax gives up
    on the others and closes its event loop while they are still in flight. Each then reports its
    own failure as a stray traceback on stderr: an unawaited coroutine, a callback into the closed
    loop, or asyncio's "<Task, Future or _GatheringFuture> exception was never retrieved". They
    repeat the one line vaejax reports, so they are dropped; everything else still reaches the
    previous hook and the asyncio logger. Installed when a manager opens, since a leftover can be
    reported while orbax is still unwinding, before its error reaches vaejax.
    """
    _QUIET_DIRS.add(directory)
    logging.getLogger("asyncio").addFilter(_not_an_orbax_leftover)  # addFilter skips a repeat
    previous = sys.unraisablehook
    if getattr(previous, "_vaejax_filter", False):
        return

    def hook(unraisable):
        obj, exc = unraisable.object, unraisable.exc_value
        if isinstance(obj, types.CoroutineType) and _is_orbax_file(obj.cr_code.co_filename):
            return
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        previous(unraisable)

    hook._vaejax_filter = True
    sys.unraisablehook = hook


def _not_an_orbax_leftover(record: logging.LogRecord) -> bool:
    """False for "... exception was never retrieved" about an error raised in orbax or naming a checkpoint folder.

    The second test catches tensorstore's own futures, whose errors carry no Python traceback.
    """
    message = record.getMessage()
    if "exception was never retrieved" not in message:
        return True
    exc = record.exc_info[1] if record.exc_info else None
    text = message + str(exc)
    return not (_raised_in_orbax(exc) or any(d in text for d in _QUIET_DIRS))


def _raised_in_orbax(exc: BaseException | None) -> bool:
    """Whether orbax's code is on the traceback of exc or of the exceptions it was raised from."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            if _is_orbax_file(tb.tb_frame.f_code.co_filename):
                return True
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return False


def _is_orbax_file(filename: str) -> bool:
    return f"{os.sep}orbax{os.sep}" in filename


def quarantine(mngr: ocp.CheckpointManager, step: int) -> str:
    """Move checkpoint `step` to <workdir>/damaged_checkpoints/ (process 0) and forget it; returns where."""
    src = os.path.join(str(mngr.directory), str(step))
    dest_dir = os.path.join(os.path.dirname(str(mngr.directory)), DAMAGED_DIR)
    dest = os.path.join(dest_dir, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    if jax.process_index() == 0 and os.path.exists(src):
        os.makedirs(dest_dir, exist_ok=True)
        while os.path.exists(dest):
            dest += "x"
        shutil.move(src, dest)
    _sync(f"vaejax_quarantine_{step}")
    mngr.reload()
    return dest


def read_meta(mngr: ocp.CheckpointManager, step: int | None = None) -> dict:
    """The metadata of a checkpoint without reading its arrays, checked (check_meta)."""
    step = mngr.latest_step() if step is None else step
    with _orbax_quietly():
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    return check_meta(meta, f"the checkpoint of update {step} in {mngr.directory}")


def check_meta(meta, where: str) -> dict:
    """meta, once the fields vaejax reads from it have their types and bounds, before anything is read
    or allocated from them; else CheckpointDamaged naming the first malformed field."""
    def malformed(field: str, expected: str):
        raise CheckpointDamaged(f"the metadata of {where} is malformed: {field} must be {expected}")

    if not isinstance(meta, dict):
        malformed("it", "a JSON object")
    digest = meta.get(DIGEST_KEY)
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        malformed(DIGEST_KEY, "a SHA-256 in hex")
    saved = meta.get(SIGNATURE_KEY)
    if saved is not None and not (isinstance(saved, dict) and all(isinstance(v, str) for v in saved.values())):
        malformed(SIGNATURE_KEY, "an object of strings")
    models = meta.get("num_models", 0)
    if type(models) is not int or not 0 <= models <= MAX_MODELS:
        malformed("num_models", f"an int in [0, {MAX_MODELS}]")
    partial = meta.get("partial")
    if partial is not None and not (isinstance(partial, dict) and all(_numbers(v) for v in partial.values())):
        malformed("partial", "an object of lists of numbers")
    return meta


def _numbers(v) -> bool:
    """Whether v is a (nested) list of numbers, as a partial epoch's series are saved."""
    if not isinstance(v, list):
        return False
    try:
        return np.asarray(v, np.float64).ndim > 0
    except (TypeError, ValueError):
        return False


def abstract(fn, *args, sharding=None):
    """Shapes and dtypes of fn(*args) without computing it: the restore target (optionally with a sharding)."""
    shapes = jax.eval_shape(fn, *args)
    if sharding is None:
        return shapes
    return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def signature(state) -> dict[str, str]:
    """{leaf path: "dtype[shape]"} of a pytree of arrays or shape structs: what a restore must match."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    return {jax.tree_util.keystr(path): f"{np.dtype(leaf.dtype).name}{list(leaf.shape)}" for path, leaf in leaves}


def signature_difference(saved: dict[str, str], wanted: dict[str, str], show: int = 3) -> str:
    """'' when two signatures agree; else the first few differences in words."""
    only_saved = [p for p in saved if p not in wanted]
    only_wanted = [p for p in wanted if p not in saved]
    reshaped = [f"{p}: {saved[p]} saved, {wanted[p]} asked" for p in saved if p in wanted and saved[p] != wanted[p]]
    parts = []
    for words, items in (("only in the checkpoint", only_saved), ("only in this run", only_wanted),
                         ("shapes differ", reshaped)):
        if items:
            more = f" and {len(items) - show} more" if len(items) > show else ""
            parts.append(f"{words}: {', '.join(items[:show])}{more}")
    return "; ".join(parts)


def state_digest(state) -> str:
    """SHA-256 (hex) of a pytree's structure, shapes, dtypes and bytes; arrays must be replicated or local."""
    h = hashlib.sha256(str(jax.tree_util.tree_structure(state)).encode())
    for leaf in jax.tree_util.tree_leaves(state):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            leaf = leaf.addressable_data(0)
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def remove_partial(mngr: ocp.CheckpointManager, step: int) -> None:
    """Delete what an unfinished save of `step` left (its temporary folder), on process 0."""
    root = str(mngr.directory)
    if jax.process_index() != 0 or not os.path.isdir(root):
        return
    for name in os.listdir(root):
        if name == str(step) and step not in mngr.all_steps() or name.startswith(f"{step}.orbax-checkpoint-tmp"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def one_line(e: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
