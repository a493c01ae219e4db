"""Likelihoods and objectives: pure functions of ONE example, in nats; the engine batches them with vmap.

An objective has the engine's signature

    objective(params, example, key, step, hparams) -> (loss, metrics)

where `example` is an image x (the target is x itself) or a pair (x, target). The builders
here read their hyperparameters (beta, warmup_steps, free_bits) from `hparams` when it is a
dict holding that name, as traced values, and otherwise use the default given to the builder:
one compiled program then serves every value, a schedule never recompiles, and a sweep is a
vmapped axis.

The model interface (the one place it is written down). vaejax's objectives take a Flax Linen
module, or a flax.nnx one wrapped as `Nnx(make)`, with two methods:

    encode(x) -> z                 an AE's code, shape (D,)
              -> (mu, logvar)      a VAE's diagonal Gaussian posterior q(z | x), each (D,)
    decode(z) -> the parameters of p(target | z) the likelihood reads: logits of the target's
                 shape, or (logits, log_sigma) for `gaussian_learned`
    embed(x)  -> the code of x, (D,), that latent-space tools read (optional: without it, encode's
                 z, or its mu; see `embed` below)

and `__call__(x, key)` for `init` (returning (decoder output, aux) by convention). The
objectives call them on ONE example, with no batch axis; the engine's vmap adds it, which XLA
compiles into one batched program. Modules whose layers take any leading axes (nn.Dense,
nn.Conv, vaejax's own) need nothing more. A module that needs a batch axis of its own (nn.GroupNorm
normalises over all but the first axis; a reshape(x.shape[0], -1)) goes in as
`BatchOfOne(module)`, which runs it on a batch of one; the objectives stop with a message naming
it when the shapes show that this was missing. Anything else trains through the engine by
writing its own objective.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------- likelihoods


class Likelihood(NamedTuple):
    """p(x | decoder output): nll(out, x) = -log p(x | out) summed over pixels; mean(out) = E[x | out];
    support: the (low, high) range of x it is defined on, None for any real x."""

    nll: Callable
    mean: Callable
    support: tuple[float, float] | None = None


@jax.custom_jvp
def _softplus(logits):
    """jax.nn.softplus with its derivative written as sigmoid(l). jnp.logaddexp's own rule computes
    exp(l - softplus(l)), which ties the gradient to the forward's exp and log1p; this one reads only l
    (the MLP VAE's update runs about 5% faster, docs/benchmark.md)."""
    return jax.nn.softplus(logits)


_softplus.defjvp(lambda primals, tangents: (_softplus(primals[0]), jax.nn.sigmoid(primals[0]) * tangents[0]))


def bernoulli_nll(logits, x):
    """-sum log Bernoulli(x; sigmoid(logits)); x may be intensities in [0, 1] (binary cross-entropy).

    -[x log s(l) + (1 - x) log(1 - s(l))] = softplus(l) - x l: stable, and its gradient in the logits
    is sigmoid(l) - x.
    """
    return jnp.sum(_softplus(logits) - x * logits)


def gaussian_nll(mean, x, log_sigma):
    """-sum log N(x; mean, sigma^2), log_sigma a scalar or per pixel."""
    return jnp.sum(0.5 * jnp.square((x - mean) * jnp.exp(-log_sigma)) + log_sigma + 0.5 * LOG_2PI)


def continuous_bernoulli_log_norm(logits):
    """log C(lambda) of the continuous Bernoulli (Loaiza-Ganem and Cunningham 2019), lambda = sigmoid(l).

    C = 2 artanh(1 - 2 lambda) / (1 - 2 lambda) = l / tanh(l / 2) in logits: even in l, 2 at l = 0
    (the series 2 + l^2 / 6 there), |l| far from it.
    """
    small = jnp.abs(logits) < 1e-2
    safe = jnp.where(small, 1.0, logits)  # keeps the other branch's gradient finite
    exact = jnp.log(jnp.abs(safe)) - jnp.log(jnp.abs(jnp.tanh(safe / 2)))
    return jnp.where(small, jnp.log(2.0 + jnp.square(logits) / 6.0), exact)


def continuous_bernoulli_mean(logits):
    """E[x] under the continuous Bernoulli: sigmoid(l) / tanh(l / 2) - 1 / l (1/2 + l / 12 near 0)."""
    small = jnp.abs(logits) < 1e-2
    safe = jnp.where(small, 1.0, logits)
    exact = jax.nn.sigmoid(safe) / jnp.tanh(safe / 2) - 1.0 / safe
    return jnp.where(small, 0.5 + logits / 12.0, exact)


UNIT = (0.0, 1.0)  # intensities: what vaejax.data.to_float makes of uint8 images

bernoulli = Likelihood(bernoulli_nll, jax.nn.sigmoid, UNIT)

continuous_bernoulli = Likelihood(
    lambda logits, x: bernoulli_nll(logits, x) - jnp.sum(continuous_bernoulli_log_norm(logits)),
    continuous_bernoulli_mean, UNIT)

squared_error = Likelihood(lambda logits, x: jnp.sum(jnp.square(x - jax.nn.sigmoid(logits))), jax.nn.sigmoid)
"""Not a likelihood: the sum of squared errors of sigmoid(logits), for plain AEs trained on MSE."""


def gaussian(sigma: float) -> Likelihood:
    """N(x; sigmoid(logits), sigma^2 I) with a fixed sigma."""
    log_sigma = math.log(sigma)
    return Likelihood(lambda logits, x: gaussian_nll(jax.nn.sigmoid(logits), x, log_sigma), jax.nn.sigmoid)


def gaussian_optimal(min_sigma: float = 1e-3) -> Likelihood:
    """N(x; sigmoid(logits), sigma*^2 I) with sigma* the maximum-likelihood sigma of each image.

    The optimal sigma-VAE of Rybkin et al. (2021), per image: sigma*^2 = max(MSE, min_sigma^2),
    which gives nll = D/2 (log(2 pi sigma*^2) + MSE / sigma*^2).
    """
    def nll(logits, x):
        mean = jax.nn.sigmoid(logits)
        mse = jnp.mean(jnp.square(x - mean))
        return gaussian_nll(mean, x, 0.5 * jnp.log(jnp.maximum(mse, min_sigma**2)))

    return Likelihood(nll, jax.nn.sigmoid)


gaussian_learned = Likelihood(
    lambda out, x: gaussian_nll(jax.nn.sigmoid(out[0]), x, out[1]),
    lambda out: jax.nn.sigmoid(out[0]))
"""N(x; sigmoid(logits), sigma^2 I) with log sigma learned: the decoder returns (logits, log_sigma)."""


# ---------------------------------------------------------------------------- terms


def kl_per_dim(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, 1)) of each latent dimension, analytic."""
    return -0.5 * (1.0 + logvar - jnp.square(mu) - jnp.exp(logvar))


def kl_diag_gaussian(mu, logvar):
    """KL(N(mu, diag(exp(logvar))) || N(0, I)), summed over dimensions."""
    return jnp.sum(kl_per_dim(mu, logvar))


def log_normal(z, mu, logvar):
    """log N(z; mu, diag(exp(logvar))), summed over dimensions."""
    return -0.5 * jnp.sum(LOG_2PI + logvar + jnp.square(z - mu) * jnp.exp(-logvar))


def reparameterize(key, mu, logvar):
    """z = mu + sigma * eps, eps ~ N(0, I): a sample of N(mu, diag(exp(logvar))) that gradients flow through."""
    eps = jax.random.normal(key, jnp.shape(mu), jnp.result_type(mu))
    return mu + jnp.exp(0.5 * logvar) * eps


def reads(objective, *names: str):
    """The objective, declaring the hyperparameters it reads from hparams: the engine then refuses any
    other name (a misspelt "bata" is an error, not a silent default). An objective that declares
    nothing is not checked."""
    objective.hparam_names = frozenset(names)
    return objective


def targets_in(objective, support: tuple[float, float] | None):
    """The objective, declaring the range its targets must lie in (its likelihood's support): fit refuses
    data outside it, and the engine integer images, instead of training on them."""
    objective.target_support = support
    return objective


def _reads_as(objective, wrapped, *extra: str):
    """wrapped, declaring what objective declares, and reading `extra` too."""
    wrapped = targets_in(wrapped, getattr(objective, "target_support", None))
    names = getattr(objective, "hparam_names", None)
    return wrapped if names is None else reads(wrapped, *names, *extra)


def hparam(hparams, name: str, default):
    """hparams[name] when hparams is a dict holding it (a traced value), else the default."""
    if isinstance(hparams, dict) and name in hparams:
        return hparams[name]
    return default


def warmup_factor(step, warmup_steps):
    """min(1, step / warmup_steps): a linear KL warm-up; 1 throughout when warmup_steps is 0."""
    steps = jnp.asarray(warmup_steps, jnp.float32)
    return jnp.where(steps > 0, jnp.minimum(1.0, step / jnp.maximum(steps, 1.0)), 1.0)


def split_example(example):
    """(input, target): a pair as it is, an image as its own target."""
    if isinstance(example, (tuple, list)):
        x, target = example
        return x, target
    return example, example


class BatchOfOne(NamedTuple):
    """A module that needs a batch axis, run on one example as a batch of one (then vmapped by the engine).

    Slower than a module that takes any leading axes (XLA:CPU runs the resulting rank-3 products
    less well), so use it for modules that need it: GroupNorm, or a reshape over axis 0.
    """

    module: object

    def apply(self, variables, x, method):
        out = self.module.apply(variables, x[None], method=method)
        return jax.tree_util.tree_map(lambda a: a[0], out)


class Nnx(NamedTuple):
    """A flax.nnx module as the objectives' model: make(rngs) builds it (e.g. `lambda rngs: MyVAE(rngs=rngs)`),
    and Nnx gives it Linen's two entry points over its nnx.Param values as a plain dict of arrays, which
    the engine, optax and the checkpoints take as they are:

        model = objectives.Nnx(lambda rngs: MyVAE(rngs=rngs))
        init_params = lambda key: model.init(key)["params"]

    Its methods (encode, decode, embed) run on one example, as a Linen module's do. Only nnx.Param
    state is trained; a module with state of other kinds (batch statistics, RNG streams) is refused,
    since its updates would be lost between steps.
    """

    make: Callable

    def init(self, key, *_):
        """{"params": the Param values of a module built with nnx.Rngs(key)} (further arguments are ignored)."""
        from flax import nnx

        module = self.make(nnx.Rngs(key))
        other = nnx.state(module, nnx.Not(nnx.Param))
        if jax.tree_util.tree_leaves(other):
            raise ValueError(f"objectives.Nnx trains nnx.Param state only, and {type(module).__name__} also holds "
                             f"{', '.join(sorted(nnx.to_pure_dict(other)))}; write an objective of one's own for it")
        return {"params": nnx.to_pure_dict(nnx.state(module, nnx.Param))}

    def apply(self, variables, x, method="__call__"):
        """The module's `method` (a name) on x, with the Param values in variables["params"]."""
        from flax import nnx

        graphdef, state = nnx.split(self.abstract())
        nnx.replace_by_pure_dict(state, variables["params"])
        return getattr(nnx.merge(graphdef, state), method)(x)

    def abstract(self):
        """The module with shapes in place of arrays (nothing computed)."""
        from flax import nnx

        return nnx.eval_shape(lambda: self.make(nnx.Rngs(0)))


_BATCH_HINT = ("the objectives run modules on one example, without a batch axis: if this module needs one "
               "(GroupNorm, a reshape over axis 0), pass objectives.BatchOfOne(module) to the objective")


def encode(model, params, x):
    """model.encode on one example."""
    return _call(model, params, x, "encode")


def embed(model, params, x):
    """The code of one example: model.embed when the module has one, else encode's z or its mu.

    The one place that says what a model's code is; vaejax's AE and VAE define embed themselves.
    """
    module = model.module if isinstance(model, BatchOfOne) else model
    if hasattr(module.abstract() if isinstance(module, Nnx) else module, "embed"):
        return _call(model, params, x, "embed")
    code = encode(model, params, x)
    return code[0] if isinstance(code, (tuple, list)) else code


def decode(model, params, z):
    """model.decode on one latent."""
    return _call(model, params, z, "decode")


def _call(model, params, x, method):
    try:
        return model.apply({"params": params}, x, method=method)
    except Exception as e:  # raised while tracing, most often by a module that assumes a batch axis
        if isinstance(model, BatchOfOne):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{method} failed on one example of shape {x.shape} ({type(e).__name__}: {first}); "
                         f"{_BATCH_HINT}") from e


def _posterior(model, params, x):
    """(mu, logvar) of one example, each (D,); a message naming BatchOfOne when the shapes say it is needed."""
    mu, logvar = encode(model, params, x)
    if mu.ndim != 1:
        raise ValueError(f"encode gave mu of shape {mu.shape} for one example of shape {x.shape}, not (D,); "
                         f"{_BATCH_HINT}")
    return mu, logvar


def _checked(out, target):
    """The decoder output, once its shape is the target's (the same message otherwise)."""
    logits = out[0] if isinstance(out, tuple) else out
    if logits.shape != target.shape:
        raise ValueError(f"decode gave shape {logits.shape} for one example whose target is {target.shape}; "
                         f"{_BATCH_HINT}")
    return out


# ---------------------------------------------------------------------------- objectives


def reconstruction(model, likelihood: Likelihood = bernoulli):
    """An AE's objective: loss = -log p(target | decode(encode(x)))."""
    def objective(params, example, key, step, hparams):
        x, target = split_example(example)
        rec = likelihood.nll(_checked(decode(model, params, encode(model, params, x)), target), target)
        return rec, {"recon": rec}

    return targets_in(reads(objective), likelihood.support)


def elbo(model, likelihood: Likelihood = bernoulli, *, beta=1.0, warmup_steps=0, free_bits=0.0):
    """A VAE's objective: loss = recon + beta_t * sum_d max(KL_d, free_bits), one sample of z.

    With beta = 1 and no free bits it is the negative ELBO. beta_t = beta * min(1, step /
    warmup_steps) is a linear KL warm-up (none for 0). free_bits > 0 lets each latent dimension
    keep that many nats of KL per example without penalty (its gradient is zero below it). Each
    of beta, warmup_steps and free_bits is read from hparams when given there (traced).
    metrics: recon, kl (unweighted), nelbo = recon + kl, beta (the weight applied), kl_per_dim.
    """
    def objective(params, example, key, step, hparams):
        x, target = split_example(example)
        mu, logvar = _posterior(model, params, x)
        z = reparameterize(key, mu, logvar)
        rec = likelihood.nll(_checked(decode(model, params, z), target), target)
        kl_D = kl_per_dim(mu, logvar)
        weight = hparam(hparams, "beta", beta) * warmup_factor(step, hparam(hparams, "warmup_steps", warmup_steps))
        penalised = jnp.sum(jnp.maximum(kl_D, hparam(hparams, "free_bits", free_bits)))
        kl = jnp.sum(kl_D)
        return rec + weight * penalised, {"recon": rec, "kl": kl, "nelbo": rec + kl, "beta": weight,
                                          "kl_per_dim": kl_D}

    return targets_in(reads(objective, "beta", "warmup_steps", "free_bits"), likelihood.support)


def iwae_bound(model, likelihood: Likelihood, params, example, key, k: int):
    """The importance-weighted bound log (1/k) sum_i p(x, z_i) / q(z_i | x) of one example.

    k = 1 is a one-sample ELBO; the bound tightens towards log p(x) as k grows (Burda et al. 2016).
    """
    x, target = split_example(example)
    mu, logvar = _posterior(model, params, x)
    z_R = reparameterize(key, jnp.broadcast_to(mu, (k,) + mu.shape), logvar)
    out_R = jax.vmap(lambda z: _checked(decode(model, params, z), target))(z_R)
    log_px_R = -jax.vmap(likelihood.nll, in_axes=(0, None))(out_R, target)
    log_pz_R = jax.vmap(log_normal, in_axes=(0, None, None))(z_R, 0.0, 0.0)
    log_qz_R = jax.vmap(log_normal, in_axes=(0, None, None))(z_R, mu, logvar)
    return jax.nn.logsumexp(log_px_R + log_pz_R - log_qz_R) - math.log(k)


def iwae(model, likelihood: Likelihood = bernoulli, k: int = 5):
    """Training on the IWAE bound with k samples: loss = -iwae_bound (k = 1: the negative ELBO)."""
    def objective(params, example, key, step, hparams):
        bound = iwae_bound(model, likelihood, params, example, key, k)
        return -bound, {"iwae": bound}

    return targets_in(reads(objective), likelihood.support)


def binarized(objective):
    """The objective on a fresh Bernoulli draw of x (dynamic binarization); the draw is its target too."""
    def wrapped(params, example, key, step, hparams):
        draw_key, key = jax.random.split(key)
        x, target = split_example(example)
        x_bin = jax.random.bernoulli(draw_key, x).astype(x.dtype)
        example = (x_bin, target) if isinstance(example, (tuple, list)) else x_bin
        return objective(params, example, key, step, hparams)

    return targets_in(_reads_as(objective, wrapped), UNIT)  # x is a probability of drawing 1


def denoising(objective, noise_sigma: float = 0.1, clip: bool = True):
    """The objective on a noisy input, x + noise_sigma * eps (clipped to [0, 1] with clip), aimed at
    the clean target: a denoising autoencoder, with fresh noise every step. noise_sigma and
    noise_clip (nonzero: clip) are read from hparams when given there (traced: one program for
    every noise level and kind)."""
    def wrapped(params, example, key, step, hparams):
        noise_key, key = jax.random.split(key)
        x, target = split_example(example)
        noisy = x + hparam(hparams, "noise_sigma", noise_sigma) * jax.random.normal(noise_key, x.shape, x.dtype)
        noisy = jnp.where(hparam(hparams, "noise_clip", clip), jnp.clip(noisy, 0.0, 1.0), noisy)
        return objective(params, (noisy, target), key, step, hparams)

    return _reads_as(objective, wrapped, "noise_sigma", "noise_clip")


def classification(apply: Callable):
    """Softmax cross-entropy of apply(params, x) -> logits on one (x, label) pair; metrics: accuracy."""
    def objective(params, example, key, step, hparams):
        x, label = example
        logits = apply(params, x)
        loss = jax.nn.logsumexp(logits) - logits[label]
        return loss, {"accuracy": (jnp.argmax(logits) == label).astype(jnp.float32)}

    return reads(objective)
