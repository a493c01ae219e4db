"""A trained run back in Python in one call: its configs, model and parameters, and what to do with them.

    run = vaejax.load("runs/x")               # a workdir written by `vaejax train`
    z = run.encode(x)                         # the AE's code, the VAE's posterior mean
    images = run.decode(z)                    # the likelihood's mean, in [0, 1]
    run.sample(key, 16); run.interpolate(x1, x2, 9, "slerp")
    run.nelbo(x, key); run.iwae_nll(x, key, k=100)  # -ELBO and the IWAE bound on -log p(x): nats per image, VAEs

Reading touches nothing in the workdir, so a run that is still training can be loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import checkpoint, config, engine, files, latent, objectives, recipe
from vaejax.errors import WorkdirError
from vaejax.workdir import RUN_FILE, check_local


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What defines a `vaejax train` run; stored in run.json and with every checkpoint."""

    preset: str
    dataset: str
    model: dict
    train: dict
    seed: int
    seeds: int

    def configs(self) -> tuple[config.ModelConfig, config.TrainConfig]:
        """The ModelConfig and TrainConfig (hashable: JSON lists become tuples again); RunNotFound naming
        the field when run.json holds one that no config has, or a value of the wrong type or size."""
        try:
            model = {k: _tuples(v) for k, v in self.model.items()}
            return config.ModelConfig(**model), config.TrainConfig(**self.train)
        except (TypeError, ValueError) as e:
            raise RunNotFound(f"run.json describes no valid run ({str(e).splitlines()[0]}); restore it or train "
                              "again in a new workdir") from None


def _tuples(value):
    """JSON lists (nested too) back into the tuples a frozen config holds."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


_SPEC_TYPES = {"preset": str, "dataset": str, "model": dict, "train": dict, "seed": int, "seeds": int}


def read_spec(workdir: str) -> RunSpec | None:
    """The workdir's run.json as a RunSpec, or None when it has none (or one that is not a preset run's).

    RunNotFound (one line) when it is a preset run's with a field of the wrong type or out of bounds.
    """
    saved = files.read_json(os.path.join(workdir, RUN_FILE))
    if not isinstance(saved, dict) or any(name not in saved for name in _SPEC_TYPES):
        return None
    for name, kind in _SPEC_TYPES.items():
        value = saved[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise RunNotFound(f"{os.path.join(workdir, RUN_FILE)}: {name} must be {kind.__name__}, got {value!r:.60}; "
                              "restore the file or train again in a new workdir")
    if not 1 <= saved["seeds"] <= 1024:
        raise RunNotFound(f"{os.path.join(workdir, RUN_FILE)}: seeds must be in [1, 1024], got {saved['seeds']}")
    return RunSpec(**{name: saved[name] for name in _SPEC_TYPES})


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A loaded run: the model, its likelihood and the parameters of one model (the one chosen at load).

    model_cfg and train_cfg are those of a preset run (None for a model of one's own).
    """

    workdir: str
    meta: dict  # run.json
    model: Any  # the Flax module (objectives.py's model interface)
    likelihood: objectives.Likelihood
    state: Any  # the engine.TrainState as saved (a leading model axis when several were trained)
    params: Any
    updates: int  # updates the saved state had taken
    model_cfg: config.ModelConfig | None = None
    train_cfg: config.TrainConfig | None = None

    def encode(self, x_N, chunk: int = 500):
        """Codes (N, D): the AE's z, the VAE's posterior mean."""
        return latent.embed(self.latent_model, self.params, x_N, chunk)

    def decode(self, z_ND, chunk: int = 500):
        """Images decoded from codes: the likelihood's mean, in [0, 1]."""
        return latent.decode(self.latent_model, self.params, z_ND, chunk)

    def reconstruct(self, x_N):
        """decode(encode(x)): through the posterior mean, no sampling."""
        return self.decode(self.encode(x_N))

    def sample(self, key, n: int, latent_dim: int | None = None):
        """n images decoded from z ~ N(0, I); latent_dim is needed only for a model of one's own."""
        latent_dim = latent_dim or (self.model_cfg.latent_dim if self.model_cfg else None)
        if latent_dim is None:
            raise ValueError("pass latent_dim: the run's model is not a preset")
        return self.decode(latent.prior_samples(key, n, latent_dim))

    def interpolate(self, x1, x2, num: int = 9, method: str = "linear"):
        """num images decoded along the path from the code of image x1 to that of x2 (method: linear | slerp)."""
        z = self.encode(np.stack([x1, x2]))
        return self.decode(latent.interpolate(z[0], z[1], jnp.linspace(1.0, 0.0, num), method))  # alpha 1 is x1

    def nelbo(self, x_N, key, chunk: int = 500):
        """(N,) one-sample negative ELBO per image, nats (a VAE): an upper bound on -log p(x), as iwae_nll
        (which is its k-sample tightening)."""
        return self.iwae_nll(x_N, key, k=1, chunk=chunk)

    def iwae_nll(self, x_N, key, k: int = 100, chunk: int = 100):
        """(N,) the k-sample IWAE estimate of -log p(x) per image, an upper bound, nats (a VAE)."""
        scores = _iwae_scores(self.model, self.likelihood, k, chunk)
        return -scores(self.params, jnp.asarray(x_N, jnp.float32), key)["iwae"]

    @property
    def latent_model(self) -> latent.Model:
        """The model as latent.embed and latent.decode take it."""
        return latent.Model(self.model, self.likelihood)


@functools.lru_cache(maxsize=32)
def _iwae_scores(model, likelihood, k: int, chunk: int):
    return engine.make_scores(objectives.iwae(model, likelihood, k), chunk)


class RunNotFound(ValueError):
    """The workdir holds no run that can be loaded; str(e) is one line naming the fix."""


def load(workdir: str, seed_index: int = 0, *, model=None, init_params=None, optimizer=None,
         likelihood: objectives.Likelihood = objectives.bernoulli) -> TrainedRun:
    """The run in `workdir` from its newest intact checkpoint (damaged ones are skipped, not moved).

    A `vaejax train` run needs nothing more: its run.json names the preset. A run of one's own
    model (vaejax.fit.fit) needs what built it: the Flax module, init_params and the optimizer
    (they give the checkpoint's shapes), and the likelihood its decoder's output is read with.
    seed_index picks the model when several were trained at once.
    """
    try:
        check_local(workdir)
    except WorkdirError as e:
        raise RunNotFound(str(e)) from None
    meta = files.read_json(os.path.join(workdir, RUN_FILE))
    if not checkpoint.has_checkpoints(workdir):
        raise RunNotFound(f"no complete checkpoint in {workdir}; train first with `vaejax train --workdir {workdir}`")
    spec = read_spec(workdir)
    model_cfg = train_cfg = None
    if model is None:
        if spec is None:
            raise RunNotFound(f"{workdir} holds no run.json of a preset run; pass model=, init_params= and "
                              "optimizer= to load a run of one's own model")
        model_cfg, train_cfg = spec.configs()
        r = recipe.build(model_cfg, train_cfg)
        model, likelihood, init_params, optimizer = r.model, r.likelihood, r.init_params, r.optimizer
    elif init_params is None or optimizer is None:
        raise ValueError("a run of one's own model needs init_params= and optimizer= as well as model=")
    mngr = checkpoint.manager(workdir, read_only=True)
    stacked = _num_models(mngr)
    keys = jax.random.split(jax.random.key(0), stacked) if stacked else jax.random.key(0)
    fresh = jax.vmap(lambda k: engine.init(init_params(k), optimizer)) if stacked else (
        lambda k: engine.init(init_params(k), optimizer))
    updates, state, _ = checkpoint.restore_good(mngr, checkpoint.abstract(fresh, keys), move_damaged=False)
    if state is None:
        raise RunNotFound(f"no intact checkpoint in {workdir}; train again")
    if not 0 <= seed_index < max(stacked, 1):
        raise ValueError(f"seed_index must be in [0, {max(stacked, 1) - 1}], got {seed_index}")
    params = jax.tree_util.tree_map(lambda a: a[seed_index], state.params) if stacked else state.params
    return TrainedRun(workdir, meta or {}, model, likelihood, state, params, int(np.asarray(updates)),
                      model_cfg, train_cfg)


def _num_models(mngr) -> int:
    """Models trained at once (0: no model axis), from the newest checkpoint whose metadata reads back."""
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            return checkpoint.read_meta(mngr, step).get("num_models", 0)
        except Exception as e:  # noqa: BLE001 - damaged like the checkpoints restore_good skips
            damage = checkpoint.one_line(e)
    raise RunNotFound(f"no checkpoint in {mngr.directory} has readable metadata ({damage}); "
                      "restore the workdir from a copy or train again")


def run_keys(spec: RunSpec):
    """The run's key: jax.random.key(seed), or one per model, key(seed + i), stacked."""
    if spec.seeds == 1:
        return jax.random.key(spec.seed)
    return jnp.stack([jax.random.key(spec.seed + i) for i in range(spec.seeds)])
