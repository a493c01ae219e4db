"""S models of one configuration trained at once, through vaejax.fit, with nothing on disk.

The experiments own no training loop: train_seeds hands a preset's recipe (or an objective, hparams
and initialiser of the experiment's own) to fit.fit over a model axis of S keys split from one seed,
and returns a Trained, the S parameter sets with their per-epoch curves. Model i of a Trained is
"seed i" in every report.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import fit, recipe
from vaejax.config import ModelConfig, TrainConfig
from vaejax_experiments import stats


@dataclasses.dataclass
class Trained:
    """S models trained in one vmapped program.

    params: pytree with a leading seed axis S; curves: per-epoch mean training terms, name ->
    (S, epochs); eval_curves: eval-set name -> term -> (S, epochs); seconds: wall time of the
    whole call, compilation included.
    """

    model_cfg: ModelConfig
    train_cfg: TrainConfig
    params: Any
    curves: dict[str, np.ndarray]
    eval_curves: dict[str, dict[str, np.ndarray]]
    seconds: float
    n_train: int

    @property
    def num_seeds(self) -> int:
        return int(jax.tree_util.tree_leaves(self.params)[0].shape[0])

    def seed_params(self, i: int):
        """The parameters of seed i (no seed axis)."""
        return jax.tree_util.tree_map(lambda a: a[i], self.params)

    def select(self, models) -> "Trained":
        """The models at the given indices of the model axis, as their own Trained."""
        idx = np.asarray(models)
        take = lambda tree: jax.tree_util.tree_map(lambda a: a[idx], tree)
        return dataclasses.replace(self, params=take(self.params), curves=take(self.curves),
                                   eval_curves=take(self.eval_curves))

    def final(self, term: str = "loss") -> np.ndarray:
        """(S,) the last epoch's mean training `term` of each seed."""
        return self.curves[term][:, -1]


def train_seeds(model_cfg: ModelConfig, train_cfg: TrainConfig, x_N, seeds: int, seed: int = 0,
                target_N=None, eval_sets: dict | None = None, log: Callable[[str], None] | None = None,
                objective=None, hparams=None, init_params=None) -> Trained:
    """Train `seeds` models of model_cfg on x_N at once through vaejax.fit (a model axis, nothing on disk).

    Model i starts from and trains with its own key, split from `seed`. target_N: what the decoder
    should output (default x_N). eval_sets: name -> images (or (input, target) pairs) whose mean
    metrics per seed are recorded after every epoch. objective, hparams (with a leading model axis) and init_params
    replace the preset's, for experiments that train something else through the same loop.
    """
    start = time.perf_counter()
    r = recipe.build(model_cfg, train_cfg)
    x_N = jnp.asarray(x_N, jnp.float32)
    train_data = x_N if target_N is None else (x_N, jnp.asarray(target_N, jnp.float32))
    result = fit.fit(objective or r.objective, r.optimizer, init_params or r.init_params, train_data, None,
                     epochs=train_cfg.epochs, batch_size=train_cfg.batch_size,
                     key=jax.random.split(jax.random.key(seed), seeds), model_axis="auto", hparams=hparams,
                     eval_data={name: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), d)
                                for name, d in (eval_sets or {}).items()},
                     callbacks=[_EpochLog(model_cfg.kind, train_cfg.epochs, seeds, log)] if log else [], pieces=1)
    jax.block_until_ready(result.state.params)

    def curves(prefix):  # record key <prefix>_<metric> -> metric: (seeds, epochs)
        names = [k for k in result.records[0] if k.startswith(prefix + "_")]
        return {k[len(prefix) + 1:]: np.stack([np.asarray(r[k], np.float64) for r in result.records], axis=1)
                for k in names}

    return Trained(model_cfg, train_cfg, result.state.params, curves("train"),
                   {name: curves(name) for name in eval_sets or {}}, time.perf_counter() - start, int(x_N.shape[0]))


class _EpochLog(fit.Callback):
    """A log line at each quarter of the epochs: the mean training loss over the seeds."""

    def __init__(self, kind, epochs, seeds, log):
        self.kind, self.epochs, self.seeds, self.log = kind, epochs, seeds, log

    def on_epoch_end(self, epoch, record, state):
        if epoch == self.epochs or epoch % max(1, self.epochs // 4) == 0:
            self.log(f"  {self.kind} epoch {epoch}/{self.epochs}: loss {np.mean(record['train_loss']):.2f} "
                     f"(mean over {self.seeds} seeds)")


def training_summary(trained: Trained) -> dict:
    """What a report says about how models were trained: size, epochs, final loss over seeds, seconds."""
    out = {"preset": f"{trained.model_cfg.arch} {trained.model_cfg.kind} latent {trained.model_cfg.latent_dim}",
           "n_train": trained.n_train, "epochs": trained.train_cfg.epochs,
           "steps": trained.train_cfg.epochs * (trained.n_train // trained.train_cfg.batch_size),
           "seconds": round(trained.seconds, 2)}
    out.update(stats.stat("final_loss", trained.final("loss")))
    return out
