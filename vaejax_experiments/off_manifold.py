"""Inputs unlike a model's training images, to ask what it learned off its data manifold.

inputs(test_x) gives, as many as test_x and of its shape, in [0, 1]: crops of photos that no
training crop comes from (scikit-image's UNSEEN_PHOTOS), the test images inverted (natural edges
and textures with intensities the training set does not have), uniform noise (independent pixels),
and smooth random fields (uniform noise at 1/SMOOTH_FACTOR of the size, bilinearly upsampled, each
channel independent: blobs of arbitrary colour).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SMOOTH_FACTOR = 8
UNSEEN_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # scikit-image's; the training crops are sklearn's two


def unseen_photo_crops(n: int, shape, rng) -> np.ndarray:
    """n random crops of `shape` (H, W, C) from scikit-image's photos UNSEEN_PHOTOS, in [0, 1] (grey for C = 1)."""
    import skimage.data

    h, w, c = shape
    photos = [np.asarray(getattr(skimage.data, name)(), np.float32) / 255 for name in UNSEEN_PHOTOS]
    photos = [p.mean(-1, keepdims=True) if c == 1 else p for p in photos]
    crops = []
    for i in range(n):
        p = photos[i % len(photos)]
        top, left = rng.integers(0, p.shape[0] - h + 1), rng.integers(0, p.shape[1] - w + 1)
        crops.append(p[top:top + h, left:left + w])
    return np.stack(crops)


def inputs(test_x, seed: int = 0) -> dict:
    """name -> (label, images): inputs unlike the training images, as many as test_x, in [0, 1]."""
    rng = np.random.default_rng(seed)
    n, (h, w, c) = len(test_x), test_x.shape[1:]
    coarse = rng.uniform(size=(n, max(1, h // SMOOTH_FACTOR), max(1, w // SMOOTH_FACTOR), c)).astype(np.float32)
    # Linear interpolation weights are convex, so the fields stay in [0, 1].
    smooth = np.asarray(jax.image.resize(jnp.asarray(coarse), (n, h, w, c), method="linear"))
    return {"other_photos": ("crops of photos never seen in training", unseen_photo_crops(n, (h, w, c), rng)),
            "inverted": ("test images inverted (1 − x)", (1.0 - test_x).astype(np.float32)),
            "noise": ("uniform noise in [0, 1]", rng.uniform(size=test_x.shape).astype(np.float32)),
            "smooth": (f"smooth random fields (noise at 1/{SMOOTH_FACTOR} size, upsampled)", smooth)}
