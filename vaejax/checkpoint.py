"""Checkpoints of a TrainState (orbax CheckpointManager): save each epoch, keep the last few, resume.

A checkpoint is a folder per epoch holding the state (StandardSave) and a small JSON of
metadata (the run's configuration). Orbax writes into a temporary folder and renames it when
complete, so a save cut short is never listed as a checkpoint.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def manager(workdir: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
    """The run's checkpoint manager, over <workdir>/checkpoints."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                 options=options, item_names=("state", "meta"))


def save(mngr: ocp.CheckpointManager, epoch: int, state, meta: dict) -> None:
    """Save the state after `epoch` (asynchronously; call mngr.wait_until_finished() before exit)."""
    mngr.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))


def latest_epoch(mngr: ocp.CheckpointManager) -> int | None:
    return mngr.latest_step()


def restore(mngr: ocp.CheckpointManager, abstract_state, epoch: int | None = None):
    """(state, meta) of `epoch` (default: the latest); abstract_state comes from jax.eval_shape."""
    epoch = mngr.latest_step() if epoch is None else epoch
    restored = mngr.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta


def read_meta(mngr: ocp.CheckpointManager, epoch: int | None = None) -> dict:
    """The metadata of a checkpoint without reading its arrays."""
    epoch = mngr.latest_step() if epoch is None else epoch
    return mngr.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def abstract(fn, *args):
    """Shapes and dtypes of fn(*args) without computing it: the restore target."""
    return jax.eval_shape(fn, *args)
