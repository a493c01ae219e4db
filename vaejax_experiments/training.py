"""S models of one configuration trained at once, through vaejax.fit.

The experiments own no training loop: train_seeds hands a preset's recipe (or an objective, hparams
and initialiser of the experiment's own) to fit.fit over a model axis of S keys split from one seed,
and returns a Trained, the S parameter sets with their per-epoch curves. Model i of a Trained is
"seed i" in every report.

Trained for a fixed number of epochs, nothing is kept on disk. Trained `until` a Plateau, the run
lives in a workdir (checkpoints each epoch): an interrupted reference run resumes where it stopped,
and a finished one is read back instead of trained again.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import fit, recipe, workdir as workdirs
from vaejax.config import ModelConfig, TrainConfig
from vaejax_experiments import stats


@dataclasses.dataclass(frozen=True)
class Plateau:
    """When training has converged: every model's training loss above its floor falls by less than `tol`
    of itself per epoch, averaged over the last `window` epochs; training stops there, or at max_epochs.

    floor: the least loss the objective can reach on the data (loss_floor), so that an irreducible
    constant, such as the entropy of grey pixels under a Bernoulli likelihood, does not make a loss
    that still falls look flat; a tuple gives each model its own (models trained on different images).
    None: the loss itself is the denominator.
    """

    tol: float
    max_epochs: int
    floor: float | tuple[float, ...] | None = None
    window: int = 3

    def change(self, loss_SE) -> np.ndarray:
        """(S,) each curve's fall per epoch over its last `window` epochs, relative to its last value above the
        floor (NaN before window + 1 epochs)."""
        loss = np.atleast_2d(np.asarray(loss_SE, np.float64))
        if loss.shape[1] <= self.window:
            return np.full(loss.shape[0], np.nan)
        above = loss[:, -1] - np.asarray(self.floor) if self.floor is not None else np.abs(loss[:, -1])
        return (loss[:, -1 - self.window] - loss[:, -1]) / self.window / np.maximum(above, 1e-12)

    def passed(self, loss_SE) -> np.ndarray:
        """(S,) whether each curve passes the test at its last epoch."""
        change = self.change(loss_SE)
        return np.isfinite(change) & (np.abs(change) < self.tol)

    def summary(self, loss_SE) -> dict:
        """What metrics.json records: the test in words, each model's epochs, last change and first passing epoch."""
        loss = np.atleast_2d(np.asarray(loss_SE, np.float64))
        first = [next((e + 1 for e in range(loss.shape[1]) if self.passed(loss[i:i + 1, :e + 1])[0]), None)
                 for i in range(loss.shape[0])]
        above = ("" if self.floor is None else f" above the floor {self.floor:.2f}" if np.ndim(self.floor) == 0
                 else f" above each model's floor ({min(self.floor):.2f} to {max(self.floor):.2f})")
        return {"test": f"training loss{above} falls by less than {self.tol:.1%} per epoch over "
                        f"{self.window} epochs (at most {self.max_epochs})",
                "floor": self.floor, "tol": self.tol, "window": self.window, "epochs": int(loss.shape[1]),
                "change_per_epoch": [float(c) for c in self.change(loss)],
                "passed": [bool(p) for p in self.passed(loss)], "passed_at": first}


def loss_floor(model_cfg: ModelConfig, x_N) -> float | None:
    """The mean loss of a perfect reconstruction of x_N under the preset's likelihood: the entropy of the
    pixels for a Bernoulli likelihood, the normaliser for a Gaussian of fixed sigma, 0 for squared error;
    None for the others (a learned variance has no floor)."""
    if model_cfg.likelihood not in ("bernoulli", "gaussian", "mse"):
        return None
    nll = recipe.likelihood(model_cfg).nll
    x = jnp.asarray(x_N, jnp.float32)
    logits = jax.scipy.special.logit(jnp.clip(x, 1e-6, 1 - 1e-6))
    return float(jnp.mean(jax.lax.map(lambda pair: nll(*pair), (logits, x), batch_size=1024)))


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
    plateau: dict | None = None  # Plateau.summary of the run when it trained until one

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
        plateau = self.plateau and {k: [v[i] for i in idx] if isinstance(v, list) else v
                                    for k, v in self.plateau.items()}
        return dataclasses.replace(self, params=take(self.params), curves=take(self.curves),
                                   eval_curves=take(self.eval_curves), plateau=plateau)

    def final(self, term: str = "loss") -> np.ndarray:
        """(S,) the last epoch's mean training `term` of each seed."""
        return self.curves[term][:, -1]


def train_seeds(model_cfg: ModelConfig, train_cfg: TrainConfig, x_N, seeds: int, seed: int = 0,
                target_N=None, eval_sets: dict | None = None, log: Callable[[str], None] | None = None,
                objective=None, hparams=None, init_params=None, keys=None, until: Plateau | None = None,
                workdir: str | None = None) -> Trained:
    """Train `seeds` models of model_cfg on x_N at once through vaejax.fit (a model axis).

    Model i starts from and trains with its own key, split from `seed` (or keys[i], when a stack of
    `seeds` keys is given). target_N: what the decoder should output (default x_N). eval_sets: name
    -> images (or (input, target) pairs) whose mean metrics per seed are recorded after every epoch.
    objective, hparams (with a leading model axis) and init_params replace the preset's, for
    experiments that train something else through the same loop. until: train until the plateau
    test passes for every model (at most until.max_epochs), not train_cfg.epochs; workdir: where the
    run's checkpoints and log live, so that it resumes (and a finished run is only read back).
    """
    start = time.perf_counter()
    r = recipe.build(model_cfg, train_cfg)
    x_N = jnp.asarray(x_N, jnp.float32)
    train_data = x_N if target_N is None else (x_N, jnp.asarray(target_N, jnp.float32))
    keys = jax.random.split(jax.random.key(seed), seeds) if keys is None else keys
    epochs, before, callbacks = train_cfg.epochs, [], []
    if until is not None:
        before = _finished_epochs(workdir)
        done = bool(before) and until.passed(_curve(before)).all()
        epochs = len(before) if done or len(before) >= until.max_epochs else until.max_epochs
        callbacks.append(UntilPlateau(until, before))
    if log:
        callbacks.append(_EpochLog(model_cfg.kind, epochs, seeds, log, every=1 if until else None))
    result = fit.fit(objective or r.objective, r.optimizer, init_params or r.init_params, train_data, workdir,
                     epochs=epochs, batch_size=train_cfg.batch_size, key=keys, model_axis="auto", hparams=hparams,
                     eval_data={name: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), d)
                                for name, d in (eval_sets or {}).items()},
                     callbacks=callbacks, pieces=1 if workdir is None else 10, resume="auto" if workdir else False)
    jax.block_until_ready(result.state.params)
    seconds = time.perf_counter() - start + sum(record["seconds"] for record in result.records[:len(before)])

    def curves(prefix):  # record key <prefix>_<metric> -> metric: (seeds, epochs)
        names = [k for k in result.records[0] if k.startswith(prefix + "_")]
        return {k[len(prefix) + 1:]: np.stack([np.asarray(r[k], np.float64) for r in result.records], axis=1)
                for k in names}

    return Trained(model_cfg, dataclasses.replace(train_cfg, epochs=len(result.records)), result.state.params,
                   curves("train"), {name: curves(name) for name in eval_sets or {}}, seconds, int(x_N.shape[0]),
                   until.summary(_curve(result.records)) if until else None)


def _finished_epochs(workdir: str | None) -> list[dict]:
    """The records a workdir's log holds (none without one)."""
    return [] if workdir is None else workdirs.read_log(os.path.join(workdir, "metrics.jsonl"), 10**9)


def _curve(records) -> np.ndarray:
    """(S, epochs) the training loss of each model in fit's records."""
    return np.stack([np.atleast_1d(np.asarray(r["train_loss"], np.float64)) for r in records], axis=1)


class UntilPlateau(fit.Callback):
    """Stops fit once every model passes the plateau test (the epochs of a resumed run included);
    `summary()` is the test's record of the run."""

    def __init__(self, plateau: Plateau, before: list[dict] = ()):
        self.plateau, self.records = plateau, list(before)

    def on_epoch_end(self, epoch, record, state):
        self.records.append(record)
        return bool(self.plateau.passed(_curve(self.records)).all())

    def summary(self) -> dict:
        return self.plateau.summary(_curve(self.records))


class _EpochLog(fit.Callback):
    """A log line at each quarter of the epochs (or `every` epochs): the mean training loss over the seeds."""

    def __init__(self, kind, epochs, seeds, log, every=None):
        self.kind, self.epochs, self.seeds, self.log = kind, epochs, seeds, log
        self.every = every or max(1, epochs // 4)

    def on_epoch_end(self, epoch, record, state):
        if epoch == self.epochs or epoch % self.every == 0:
            self.log(f"  {self.kind} epoch {epoch}/{self.epochs}: loss {np.mean(record['train_loss']):.2f} "
                     f"(mean over {self.seeds} seeds, {record['seconds']:.0f} s)")


def training_summary(trained: Trained) -> dict:
    """What a report says about how models were trained: size, epochs, final loss over seeds, seconds."""
    out = {"preset": f"{trained.model_cfg.arch} {trained.model_cfg.kind} latent {trained.model_cfg.latent_dim}",
           "n_train": trained.n_train, "epochs": trained.train_cfg.epochs,
           "steps": trained.train_cfg.epochs * (trained.n_train // trained.train_cfg.batch_size),
           "seconds": round(trained.seconds, 2)}
    out.update(stats.stat("final_loss", trained.final("loss")))
    if trained.plateau is not None:
        out["plateau"] = trained.plateau
    return out
