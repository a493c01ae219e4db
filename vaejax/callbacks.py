"""What a run reports as it goes: the Callback interface and vaejax's own callbacks.

fit calls each callback's methods on process 0 only, in this order:

    on_epoch_begin(epoch, num_steps)
    on_steps(epoch, done, num_steps, mean_loss)   after each compiled piece of the epoch
    on_epoch_end(epoch, record, state)            record: the epoch's record (its line of
                                                  metrics.jsonl); True stops training after it
    on_train_end(state, records)                  after the last epoch, unless training raised

`Progress` draws a tqdm bar, `JsonLines` prints each record, `TensorBoard` writes event files
(tensorboardX, no TensorFlow), `KeepBest` keeps the parameters of the best epoch by a validation
metric. Callbacks observe a run and may stop it. The state handed to
on_epoch_end goes on to the next epoch's updates, which donate its buffers: copy what you keep
(parallel.to_host).
"""

from __future__ import annotations

import json

import jax
import numpy as np

from vaejax import engine, parallel


class Callback:
    """What a run reports; override the methods you need. Called on process 0 only."""

    def on_epoch_begin(self, epoch: int, num_steps: int) -> None: ...

    def on_steps(self, epoch: int, done: int, num_steps: int, mean_loss: float) -> None:
        """After each compiled piece of an epoch: `done` of its `num_steps` updates taken."""

    def on_epoch_end(self, epoch: int, record: dict, state: engine.TrainState) -> None:
        """After the epoch's record is in metrics.jsonl and its checkpoint is on its way."""

    def on_train_end(self, state: engine.TrainState, records: list[dict]) -> None: ...


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


def _short_num(v):
    return f"{np.mean(v):.2f}"


class KeepBest(Callback):
    """The parameters of the epoch whose record scores best on `metric` (e.g. "val_accuracy"), per
    model with a model axis: after training, `params` (host arrays), `epoch` and `value`.

    The earliest epoch wins a tie; a non-finite score never wins. Held in memory on process 0, not
    in the workdir: a resumed run's best is the best of the epochs since it resumed.
    """

    def __init__(self, metric: str, higher_is_better: bool = True):
        self.metric, self.sign = metric, 1.0 if higher_is_better else -1.0
        self.params = self.epoch = self._score = None

    @property
    def value(self):
        """The best score (a float, or one per model)."""
        return None if self._score is None else self.sign * self._score

    def on_epoch_end(self, epoch, record, state):
        if self.metric not in record:
            raise KeyError(f"KeepBest: the epoch's record has no {self.metric!r}; it has {', '.join(record)}")
        score = self.sign * np.asarray(record[self.metric], np.float64)
        score = np.where(np.isfinite(score), score, -np.inf)
        params = parallel.to_host(state.params)  # a copy: the state's buffers go on to the next epoch
        if self._score is None:
            self.params, self.epoch, self._score = params, np.full(score.shape, epoch), score
            return
        better = score > self._score

        def pick(new, old):
            return np.where(better.reshape(better.shape + (1,) * (np.ndim(new) - better.ndim)), new, old)

        self.params = jax.tree_util.tree_map(pick, params, self.params)
        self.epoch, self._score = np.where(better, epoch, self.epoch), np.maximum(score, self._score)
