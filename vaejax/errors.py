"""The errors a user of vaejax can catch, each with a message of one line that names the fix.

    UsageError    a mistake the user can fix before anything runs (a bad flag, a missing dataset)
    FitError      training could not go on; the run's files are left consistent:
      NonFinite     a NaN or Inf loss; the last good checkpoint is kept
      WriteFailed   a checkpoint could not be written; nothing partial is left
      Preempted     SIGTERM; the state is saved, resume to go on
      WorkdirError  the workdir cannot take the run's writes; raised before anything is written
      StateMismatch the checkpoints hold another model's or optimizer's state; nothing is moved
    DatasetError  a dataset that cannot be found or read (vaejax.data)

They live apart from the code that raises them so that a client (the CLI, the experiments, a
user's script) can catch them without importing the training loop or the command line.
"""

from __future__ import annotations


class UsageError(Exception):
    """A mistake the user can fix (a bad flag, a missing dataset); str(e) is one line naming the fix."""


class FitError(Exception):
    """Training could not go on; str(e) is one line."""


class NonFinite(FitError):
    """A non-finite loss, or non-finite parameters after an epoch; the last good checkpoint is kept."""

    def __init__(self, epoch: int, step: int | None, num_steps: int, value: float, last_saved_epoch: int | None):
        self.epoch, self.step, self.num_steps, self.value = epoch, step, num_steps, value
        self.last_saved_epoch = last_saved_epoch
        where = (f"at epoch {epoch}, step {step} of {num_steps}" if step is not None
                 else f"in the parameters after epoch {epoch}")
        kept = f"the last good checkpoint is epoch {last_saved_epoch}" if last_saved_epoch else "no checkpoint was saved"
        super().__init__(f"non-finite loss ({value}) {where}; stopped, {kept}")


class WriteFailed(FitError):
    """A checkpoint could not be written (a full disk, a read-only folder); its remains are removed."""


class Preempted(FitError):
    """SIGTERM stopped training; the state is saved where it stopped, so a resumed run goes on from there."""


class WorkdirError(FitError, ValueError):
    """The workdir cannot take this run's writes (before anything was written)."""


class DatasetError(Exception):
    """A dataset that cannot be found or read; str(e) is one line naming where we looked and the fix."""


class StateMismatch(FitError, ValueError):
    """A checkpoint's state has another structure or shapes than the one asked for (another model,
    objective or optimizer): the checkpoint is intact and left where it is."""
