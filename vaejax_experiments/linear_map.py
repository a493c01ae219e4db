"""The least-squares affine map between flattened images: the exact baseline for a linear transformation.

fit_linear(x_N, t_N) solves for W, (D + 1, P), with flatten(t) = [flatten(x), 1] @ W: the
least-squares solution when there are at least as many images as unknowns per output, the
minimum-norm one otherwise. apply_linear predicts with it. transform.py sets the autoencoder
against this map: a pipeline T that is linear is learned exactly by it from enough images.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

# Ridge of the least-squares fit, relative to the Gram matrix's mean diagonal: numerical jitter that keeps an
# exactly singular system (duplicate images) solvable, not regularisation: far below any weight it could bias.
RIDGE = 1e-10


def _design(x_N) -> np.ndarray:
    """Flattened images with a constant 1 appended (for the bias), float64: (N, D + 1)."""
    x = np.asarray(x_N, np.float64).reshape(len(x_N), -1)
    return np.concatenate([x, np.ones((len(x), 1))], axis=1)


def _solve_gram(G, B) -> np.ndarray:
    """G^-1 B for a Gram matrix G, with the RIDGE jitter (Cholesky)."""
    G = G + RIDGE * np.trace(G) / len(G) * np.eye(len(G))
    return scipy.linalg.solve(G, B, assume_a="pos")


def fit_linear(x_N, t_N) -> np.ndarray:
    """Least-squares affine map flatten(x) -> flatten(t): W of shape (D + 1, P), the bias its last row.

    Normal equations in float64: far cheaper than numpy's SVD-based lstsq on thousands of images of
    thousands of values, and float64 absorbs their squared condition number. With at least as many images as unknowns per output (N >= D + 1) W = (X'X)^-1 X'Y, the least-squares
    solution. With fewer (small scales) the system is underdetermined and W = X'(XX')^-1 Y, its
    minimum-norm solution: exact on the training images, blind to input directions outside their span.
    """
    X, Y = _design(x_N), np.asarray(t_N, np.float64).reshape(len(t_N), -1)
    if len(X) >= X.shape[1]:
        return _solve_gram(X.T @ X, X.T @ Y)
    return X.T @ _solve_gram(X @ X.T, Y)


def fit_rank_limited(x_N, t_N, rank: int) -> np.ndarray:
    """The least-squares affine map whose linear part has rank at most `rank` (reduced-rank regression):
    the full fit's predictions around their mean projected onto their `rank` leading principal
    directions, which is the best rank-limited linear predictor in squared error on x_N. A bottleneck
    of `rank` numbers is the most a linear autoencoder of that code width can pass. Same layout as fit_linear."""
    W = fit_linear(x_N, t_N)
    fitted = _design(x_N) @ W
    mean = fitted.mean(0)
    basis = np.linalg.svd(fitted - mean, full_matrices=False)[2][:rank]  # (rank, P)
    P = basis.T @ basis
    W_k = W @ P
    W_k[-1] += mean - mean @ P  # the bias keeps the mean prediction outside the rank limit
    return W_k


def apply_linear(W, x_N, out_shape) -> np.ndarray:
    """The linear map's prediction for images x_N, shaped (N, *out_shape)."""
    return (_design(x_N) @ W).reshape((len(x_N),) + tuple(out_shape))
