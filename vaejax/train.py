"""Training as pure, compiled functions of (state, data, key).

make_train_step   one jitted update on a batch (a Python loop over it is the common pattern);
make_train_epoch  a whole epoch in one program: shuffle on device, lax.scan over fixed-size batches;
make_train_steps  a slice of an epoch's batches, for progress reports at one host sync per slice;
make_train_many   the epoch vmapped over a leading seed axis: S models in one program;
make_evaluate     mean loss terms over a dataset, in fixed-size chunks.

Data parallelism (see parallel.py): the step, steps and epoch builders take an optional
`mesh`. The same update then runs with its batch constrained to a NamedSharding over the
mesh's `data` axis and its state replicated; XLA inserts the gradient all-reduce.
Non-finite updates: with skip_nonfinite=True an update whose loss or gradients are not
finite leaves params and optimizer state as they were (a select inside the compiled step,
no host sync) and reports metrics["skipped"] = 1.0; the step counter still advances.

Randomness: a run has one key. Each update draws from fold_in(noise_key, state.step) and each
epoch shuffles with fold_in(shuffle_key, state.step), so a run resumed from a saved state
draws exactly the numbers an uninterrupted run would.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from vaejax import data, losses, models
from vaejax.parallel import DATA
from vaejax.config import ModelConfig, TrainConfig


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar: updates taken so far
    params: Any
    opt_state: Any


def optimizer(train_cfg: TrainConfig) -> optax.GradientTransformation:
    return optax.adam(train_cfg.learning_rate)


def init_state(key, model_cfg: ModelConfig, train_cfg: TrainConfig) -> TrainState:
    params = models.init(key, model_cfg)
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer(train_cfg).init(params))


def _run_keys(key):
    shuffle_key, noise_key = jax.random.split(key)
    return shuffle_key, noise_key


def all_finite(tree) -> jax.Array:
    """A bool scalar: every element of every leaf is finite."""
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _update_fn(model_cfg: ModelConfig, train_cfg: TrainConfig, batch_sharding=None, skip_nonfinite: bool = False):
    """The pure update (state, x_B, key) -> (state, metrics), before jit; target_B defaults to x_B.

    batch_sharding: a Sharding the batch is constrained to (data parallelism), or None.
    """
    loss_fn = losses.batch_objective(model_cfg, train_cfg.beta)
    tx = optimizer(train_cfg)

    def update(state: TrainState, x_B, key, target_B=None):
        if batch_sharding is not None:
            x_B = jax.lax.with_sharding_constraint(x_B, batch_sharding)
            if target_B is not None:
                target_B = jax.lax.with_sharding_constraint(target_B, batch_sharding)
        step_key = jax.random.fold_in(_run_keys(key)[1], state.step)
        loss_key, binarize_key = jax.random.split(step_key)
        if train_cfg.binarize == "dynamic":
            x_B = data.binarize(binarize_key, x_B)
        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x_B, loss_key, target_B)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if skip_nonfinite:
            ok = jnp.isfinite(loss) & all_finite(grads)
            params, opt_state = jax.tree_util.tree_map(lambda new, old: jnp.where(ok, new, old),
                                                       (params, opt_state), (state.params, state.opt_state))
            terms = dict(terms, skipped=jnp.where(ok, 0.0, 1.0).astype(jnp.float32))
        return TrainState(state.step + 1, params, opt_state), terms

    return update


def _jit(fn, mesh):
    """jit donating the state; with a mesh, every output (state, metrics) comes back replicated."""
    if mesh is None:
        return jax.jit(fn, donate_argnums=0)
    return jax.jit(fn, donate_argnums=0, out_shardings=NamedSharding(mesh, PartitionSpec()))


def _batch_sharding(mesh):
    return None if mesh is None else NamedSharding(mesh, PartitionSpec(DATA))


def make_train_step(model_cfg: ModelConfig, train_cfg: TrainConfig, *, mesh=None, skip_nonfinite: bool = False):
    """Jitted step(state, x_B, key[, target_B]) -> (state, metrics); the state's buffers are donated.

    Pass the run's key every step: the step number is folded in. With a mesh, the batch is
    split over its `data` axis and the state is replicated (put it there with parallel.put_replicated).
    """
    return _jit(_update_fn(model_cfg, train_cfg, _batch_sharding(mesh), skip_nonfinite), mesh)


def epoch_order(key, step, num_examples: int, batch_size: int):
    """The epoch's batches as indices, shape (num_examples // batch_size, batch_size).

    A permutation drawn from fold_in(shuffle_key, step); the remainder is dropped so every
    batch has one shape and the step compiles once.
    """
    steps = num_examples // batch_size
    if steps == 0:
        raise ValueError(f"batch size {batch_size} is larger than the {num_examples} training images; "
                         f"use a batch size of at most {num_examples}")
    order = jax.random.permutation(jax.random.fold_in(_run_keys(key)[0], step), num_examples)
    return order[: steps * batch_size].reshape(steps, batch_size)


def _steps_fn(model_cfg: ModelConfig, train_cfg: TrainConfig, batch_sharding=None, skip_nonfinite: bool = False):
    """(state, x_N, order_KB, key[, target_N]) -> (state, metrics_K): K updates in one lax.scan."""
    update = _update_fn(model_cfg, train_cfg, batch_sharding, skip_nonfinite)

    def steps(state: TrainState, x_N, order_KB, key, target_N=None):
        def body(state, idx_B):
            target_B = None if target_N is None else target_N[idx_B]
            return update(state, x_N[idx_B], key, target_B)

        return jax.lax.scan(body, state, order_KB)

    return steps


def _epoch_fn(model_cfg: ModelConfig, train_cfg: TrainConfig, batch_sharding=None, skip_nonfinite: bool = False):
    steps = _steps_fn(model_cfg, train_cfg, batch_sharding, skip_nonfinite)

    def epoch(state: TrainState, x_N, key, target_N=None):
        order_KB = epoch_order(key, state.step, x_N.shape[0], train_cfg.batch_size)
        return steps(state, x_N, order_KB, key, target_N)

    return epoch


def make_train_steps(model_cfg: ModelConfig, train_cfg: TrainConfig, seeds: bool = False, *, mesh=None,
                     skip_nonfinite: bool = False):
    """Jitted steps(state, x_N, order_KB, key[, target_N]) -> (state, metrics_K): a slice of an epoch.

    Lets a caller report progress within an epoch (order_KB from epoch_order, cut in pieces)
    at one host sync per piece. seeds=True maps over a leading seed axis of state, order, key.
    With a mesh, each batch x_N[idx_B] is split over the `data` axis (x_N replicated).
    """
    one = _steps_fn(model_cfg, train_cfg, _batch_sharding(mesh), skip_nonfinite)
    if not seeds:
        return _jit(one, mesh)

    def many(states, x_N, order_SKB, keys_S, target_N=None):
        return jax.vmap(lambda s, o, k: one(s, x_N, o, k, target_N))(states, order_SKB, keys_S)

    return _jit(many, mesh)


def make_train_epoch(model_cfg: ModelConfig, train_cfg: TrainConfig, *, mesh=None, skip_nonfinite: bool = False):
    """Jitted epoch(state, x_N, key[, target_N]) -> (state, per-step metrics) over on-device data x_N.

    Shuffles with the key, then scans over len(x_N) // batch_size batches. Donates the state.
    """
    return _jit(_epoch_fn(model_cfg, train_cfg, _batch_sharding(mesh), skip_nonfinite), mesh)


def init_many(keys_S, model_cfg: ModelConfig, train_cfg: TrainConfig) -> TrainState:
    """S fresh states stacked on a leading axis, one per key (one compiled program, not one per layer)."""
    return jax.jit(jax.vmap(lambda k: init_state(k, model_cfg, train_cfg)))(keys_S)


def make_train_many(model_cfg: ModelConfig, train_cfg: TrainConfig):
    """Jitted epoch over S models at once: (states_S, x_N, keys_S[, target_N]) -> (states_S, metrics_S).

    The data is shared; each model has its own key, so its own shuffle and its own noise.
    """
    many = jax.vmap(_epoch_fn(model_cfg, train_cfg), in_axes=(0, None, 0, None))
    return jax.jit(lambda states, x_N, keys, target_N=None: many(states, x_N, keys, target_N), donate_argnums=0)


def make_scores(model_cfg: ModelConfig, beta: float = 1.0, chunk: int = 500):
    """Jitted scores(params, x_N, key[, target_N]) -> per-example loss terms, each of shape (N,).

    Runs in fixed-size chunks (the last one padded) so memory stays flat for any N.
    """
    per_example = losses.objective(model_cfg, beta)

    def scores(params, x_N, key, target_N=None):
        n = x_N.shape[0]
        target_N = x_N if target_N is None else target_N
        pad = (-n) % chunk
        x_CB = _chunks(x_N, pad, chunk)
        t_CB = _chunks(target_N, pad, chunk)
        keys_CB = jax.random.split(key, n + pad).reshape(-1, chunk)

        def one_chunk(args):
            x_B, t_B, k_B = args
            return jax.vmap(per_example, in_axes=(None, 0, 0, 0))(params, x_B, k_B, t_B)[1]

        terms = jax.lax.map(one_chunk, (x_CB, t_CB, keys_CB))
        return jax.tree_util.tree_map(lambda a: a.reshape(-1)[:n], terms)

    return jax.jit(scores)


def _chunks(x_N, pad, chunk):
    x = jnp.pad(x_N, [(0, pad)] + [(0, 0)] * (x_N.ndim - 1))
    return x.reshape((-1, chunk) + x_N.shape[1:])


def make_evaluate(model_cfg: ModelConfig, beta: float = 1.0, chunk: int = 500):
    """evaluate(params, x_N, key) -> mean loss terms over the dataset (nats per image)."""
    scores = make_scores(model_cfg, beta, chunk)

    def evaluate(params, x_N, key, target_N=None):
        return {name: float(jnp.mean(v)) for name, v in scores(params, x_N, key, target_N).items()}

    return evaluate
