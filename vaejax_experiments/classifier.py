"""The judge's network: a small CNN classifier trained from scratch, with outlier exposure.

    Classifier                  Conv(3x3, s2) -> ReLU -> Conv(3x3, s2) -> ReLU -> Dense -> ReLU -> Dense(K);
                                its convolutions are patches and a matmul (the same function, faster on CPU)
    classifier_init / _apply    pure functions of params: the sizes are read off the kernels
    train_classifier            Adam on (image, label) pairs through vaejax.fit, optionally with
                                outlier exposure on structureless images (classifier_objective)
    classifier_outputs          softmax probabilities and penultimate features (engine.map_chunks)

judge.py builds the reference classifier of a dataset from these; the layer names (conv0, conv1,
hidden, head) are part of its on-disk cache, so they do not change.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaejax import data, engine, fit

# ---------------------------------------------------------------------------- the network


def _patches_3x3_s2(x):
    """3x3 stride-2 patches of x (..., H, W, C) with padding 1 -> (..., ceil(H/2), ceil(W/2), 9C).

    Nine strided slices of the padded input: on CPU a slice-and-matmul convolution trains
    many times faster than XLA's native convolution, and its gradient is a cheap pad.
    """
    h, w = x.shape[-3], x.shape[-2]
    ho, wo = (h + 1) // 2, (w + 1) // 2
    pads = [(0, 0)] * (x.ndim - 3) + [(1, 2 * ho - h), (1, 2 * wo - w), (0, 0)]
    xp = jnp.pad(x, pads)
    cols = [xp[..., i:i + 2 * ho:2, j:j + 2 * wo:2, :] for i in range(3) for j in range(3)]
    return jnp.concatenate(cols, axis=-1)


class Classifier(nn.Module):
    """A small CNN: Conv(c0, 3x3, s2) -> ReLU -> Conv(c1, 3x3, s2) -> ReLU -> Dense(width) -> ReLU -> Dense(K).

    The convolutions are patch extraction followed by a Dense layer (same function, faster on CPU).
    __call__ returns (logits, features), features being the penultimate activations.
    """

    num_classes: int
    channels: tuple[int, int] = (32, 64)
    width: int = 128

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(self.channels[0], name="conv0")(_patches_3x3_s2(x)))
        h = nn.relu(nn.Dense(self.channels[1], name="conv1")(_patches_3x3_s2(h)))
        h = nn.relu(nn.Dense(self.width, name="hidden")(h.reshape(h.shape[:-3] + (-1,))))
        return nn.Dense(self.num_classes, name="head")(h), h


def _classifier_module(params) -> Classifier:
    """The Classifier whose parameters these are (sizes read off the kernels)."""
    channels = (int(params["conv0"]["kernel"].shape[-1]), int(params["conv1"]["kernel"].shape[-1]))
    width = int(params["hidden"]["kernel"].shape[-1])
    return Classifier(int(params["head"]["kernel"].shape[-1]), channels, width)


def classifier_init(key, image_shape, num_classes: int, channels=(32, 64), width: int = 128):
    """Fresh parameters of a Classifier for images of image_shape (H, W, C)."""
    x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    return Classifier(num_classes, tuple(channels), width).init(key, x)["params"]


def classifier_apply(params, x, features: bool = False):
    """Logits for images x (NHWC in [0, 1]); with features=True, (logits, penultimate features)."""
    logits, h = _classifier_module(params).apply({"params": params}, x)
    return (logits, h) if features else logits


# ---------------------------------------------------------------------------- training and outputs


def structureless_image(key, x, smooth_fields: bool = True):
    """An image with no structure, an outlier for outlier exposure: x with its pixels shuffled or,
    with even odds when smooth_fields, a smooth random field (uniform 7x7 noise upsampled
    bilinearly). Smooth fields teach the classifier to distrust smoothness itself, which is why
    they are a choice (judge.reference measures both)."""
    k_coin, k_perm, k_field = jax.random.split(key, 3)
    shuffled = engine.permutation(k_perm, x.reshape(-1)).reshape(x.shape)
    if not smooth_fields:
        return shuffled
    field = jax.image.resize(jax.random.uniform(k_field, (7, 7, x.shape[-1])), x.shape, "bilinear")
    return jnp.where(jax.random.bernoulli(k_coin), shuffled, field)


def augmented(key, x, shift: int = 2, flip: bool = True):
    """x shifted by up to `shift` pixels each way (zeros come in) and, with flip, flipped left-right with
    even odds: variations a class does not depend on, so a judge trained on them generalises better."""
    k_flip, k_shift = jax.random.split(key)
    if flip:
        x = jnp.where(jax.random.bernoulli(k_flip), x[:, ::-1], x)
    padded = jnp.pad(x, ((shift, shift), (shift, shift), (0, 0)))
    dy, dx = jax.random.randint(k_shift, (2,), 0, 2 * shift + 1)
    return jax.lax.dynamic_slice(padded, (dy, dx, 0), x.shape)


def classifier_objective(outlier_exposure: float = 0.0, smooth_fields: bool = True, augment: bool = False,
                         flip: bool = True):
    """Cross-entropy of Classifier on one (image, label) pair, for the engine.

    outlier_exposure > 0 adds that weight times the cross-entropy between the uniform
    distribution and the softmax on a structureless image (Hendrycks et al. 2019), so that
    max-softmax stays low off the data manifold instead of being arbitrarily confident.
    smooth_fields: whether smooth random fields are among those images (structureless_image).
    augment: train on augmented(x, flip=flip) (small shifts, and flips), not x itself.
    """
    def objective(params, example, key, step, hparams):
        x, label = example
        if augment:
            key, k_augment = jax.random.split(key)
            x = augmented(k_augment, x, flip=flip)
        if outlier_exposure <= 0:
            logits = classifier_apply(params, x)
            return jax.nn.logsumexp(logits) - logits[label], {}
        # the image and its outlier in one pass: a smaller program than two
        logits, outlier = classifier_apply(params, jnp.stack([x, structureless_image(key, x, smooth_fields)]))
        return (jax.nn.logsumexp(logits) - logits[label]
                - outlier_exposure * jnp.mean(jax.nn.log_softmax(outlier))), {}

    return objective


def train_classifier(key, x_N, y_N, num_classes: int, epochs: int, batch_size: int = 128,
                     learning_rate: float = 1e-3, channels=(32, 64), width: int = 64,
                     outlier_exposure: float = 0.0, smooth_fields: bool = True, cosine: bool = False,
                     augment: bool = False, flip: bool = True):
    """Parameters of a Classifier trained from scratch (Adam, through vaejax.fit) on images x_N (float NHWC)
    and labels y_N.

    outlier_exposure, smooth_fields: see classifier_objective (0: plain cross-entropy). cosine: the
    learning rate decays to 0 over the run (a cosine), which a judge trained to its best accuracy wants;
    augment: see classifier_objective.
    """
    batch_size = min(batch_size, x_N.shape[0])
    if cosine:
        learning_rate = optax.cosine_decay_schedule(learning_rate, epochs * (x_N.shape[0] // batch_size))
    init_key, run_key = jax.random.split(key)
    x_N, y_N = jnp.asarray(x_N, jnp.float32), jnp.asarray(y_N, jnp.int32)
    # initialised from its own key, trained on the run key: the streams the judge's cache was made with
    fresh = _init(init_key, tuple(x_N.shape[1:]), num_classes, tuple(channels), width)
    result = fit.fit(classifier_objective(outlier_exposure, smooth_fields, augment, flip), optax.adam(learning_rate),
                     lambda _: fresh, (x_N, y_N), None, epochs=epochs, batch_size=batch_size,
                     key=run_key, pieces=1)
    return result.state.params


_init = jax.jit(classifier_init, static_argnums=(1, 2, 3, 4))  # one compile, not one per layer


def classifier_outputs(params, images, mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(softmax probabilities (N, K), penultimate features (N, F)) for images (float in [0, 1] or uint8);
    with mirror, each the mean over the image and its left-right mirror image (a two-view ensemble)."""
    x, n = engine.bucket(jnp.asarray(_as_float(images)))
    probs, feats = _outputs(params, x, mirror)
    return np.asarray(probs)[:n], np.asarray(feats)[:n]


@functools.partial(jax.jit, static_argnums=2)
def _outputs(params, x_N, mirror: bool):
    def views(x_B):
        logits, features = classifier_apply(params, x_B, features=True)
        return jax.nn.softmax(logits), features

    def chunk(x_B):
        if not mirror:
            return views(x_B)
        return jax.tree_util.tree_map(lambda a, b: (a + b) / 2, views(x_B), views(x_B[..., ::-1, :]))

    return engine.map_chunks(chunk, x_N)


def classifier_accuracy(params, images, labels) -> float:
    """Fraction of images whose most probable class is their label."""
    probs, _ = classifier_outputs(params, images)
    return float(np.mean(probs.argmax(-1) == np.asarray(labels)))


def _as_float(images) -> np.ndarray:
    x = np.asarray(images)
    return data.to_float(x) if x.dtype == np.uint8 else x.astype(np.float32)
