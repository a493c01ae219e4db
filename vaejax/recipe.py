"""Presets as values: a ModelConfig and TrainConfig built into what the engine trains.

    r = recipe.build(config.preset("mlp_vae"), config.TrainConfig())
    state = engine.init(r.init_params(key), r.optimizer)
    epoch = engine.make_epoch(r.objective, r.optimizer, batch_size=128)

The engine never sees a config; a user's own model, objective and optimizer take the same
places as these.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import optax

from vaejax import engine, models, objectives
from vaejax.config import ModelConfig, TrainConfig


class Recipe(NamedTuple):
    model: object  # the Flax module (encode / decode, objectives.py's model interface)
    likelihood: objectives.Likelihood
    objective: Callable  # objective(params, example, key, step, hparams) -> (loss, metrics)
    optimizer: optax.GradientTransformation
    init_params: Callable  # key -> params

    def init_state(self, key) -> engine.TrainState:
        """A fresh engine.TrainState: the model's parameters for `key` and the optimizer's state."""
        return engine.init(self.init_params(key), self.optimizer)


def likelihood(cfg: ModelConfig) -> objectives.Likelihood:
    """The likelihood cfg.likelihood names."""
    return {"bernoulli": lambda: objectives.bernoulli,
            "gaussian": lambda: objectives.gaussian(cfg.obs_sigma),
            "gaussian_optimal": objectives.gaussian_optimal,
            "gaussian_learned": lambda: objectives.gaussian_learned,
            "continuous_bernoulli": lambda: objectives.continuous_bernoulli,
            "mse": lambda: objectives.squared_error}[cfg.likelihood]()


def objective(model_cfg: ModelConfig, train_cfg: TrainConfig = TrainConfig()):
    """AE: reconstruction; VAE: the ELBO with beta, warm-up and free bits, or the IWAE bound."""
    model, lik = models.module(model_cfg), likelihood(model_cfg)
    if model_cfg.kind == "ae":
        fn = objectives.reconstruction(model, lik)
    elif train_cfg.iwae_k > 0:
        fn = objectives.iwae(model, lik, train_cfg.iwae_k)
    else:
        fn = objectives.elbo(model, lik, beta=train_cfg.beta, warmup_steps=train_cfg.warmup_steps,
                             free_bits=train_cfg.free_bits)
    return objectives.binarized(fn) if train_cfg.binarize == "dynamic" else fn


def optimizer(train_cfg: TrainConfig) -> optax.GradientTransformation:
    return optax.adam(train_cfg.learning_rate)


def build(model_cfg: ModelConfig, train_cfg: TrainConfig = TrainConfig()) -> Recipe:
    return Recipe(models.module(model_cfg), likelihood(model_cfg), objective(model_cfg, train_cfg),
                  optimizer(train_cfg), lambda key: models.init(key, model_cfg))
