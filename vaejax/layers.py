"""Convolution layers with PyTorch's size semantics, in two exact implementations.

    Conv, ConvTranspose              Flax modules (HWIO kernels, NHWC maps), either implementation
    conv_transpose(features, k, s, p, op)   a ConvTranspose whose output size is
                                     conv_transpose_output_size(i, s, k, p, op) = (i-1)s + (k-1) - 2p + op + 1
    conv2d, conv_transpose2d         the same as pure functions of (x, kernel)
    conv_path()                      which implementation runs: $VAEJAX_CONV_PATH, else by backend

vaejax.models builds its conv encoders and decoders from these; they take any leading batch dims.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
from jax import lax


def conv_transpose_output_size(i: int, s: int, k: int, p: int, op: int) -> int:
    """Spatial size after a transposed convolution (PyTorch's definition): (i-1)s + (k-1) - 2p + op + 1."""
    return (i - 1) * s + (k - 1) - 2 * p + op + 1


def conv_transpose(features: int, k: int, s: int = 1, p: int = 0, op: int = 0, name=None, path=None) -> "ConvTranspose":
    """A transposed conv with PyTorch's (stride, padding, output_padding) semantics.

    lax.conv_transpose pads the stride-dilated input; padding (k-1-p, k-1-p+op) per side
    makes its output size equal conv_transpose_output_size(i, s, k, p, op).
    """
    lo, hi = k - 1 - p, k - 1 - p + op
    return ConvTranspose(features, k, s, ((lo, hi), (lo, hi)), path, name=name)


# ---------------------------------------------------------------------------- convolutions
#
# Two exact implementations of the same convolutions: "lax" (lax.conv_general_dilated and
# lax.conv_transpose, what nn.Conv / nn.ConvTranspose run) and "fast", which XLA:CPU runs
# several times faster in training (the benchmark measures both): XLA:CPU spends most of a conv model's step in lhs-dilated
# convolutions (a stride-2 transposed conv, and the input gradient of a stride-2 conv), in
# weight gradients computed as convolutions, and in 7x7 convs on 7x7 maps. The fast path
# computes every one of them with matmuls: over strided patches (conv_im2col), over the
# stride^2 output phases (conv_transpose_phases / _scatter), or as a dense layer (whole maps).

CONV_PATHS = ("fast", "lax")
_DIMS = ("NHWC", "HWIO", "NHWC")


def conv_path(path=None) -> str:
    """The conv implementation to trace: `path`, else $VAEJAX_CONV_PATH, else "fast" on CPU and "lax" elsewhere."""
    path = path or os.environ.get("VAEJAX_CONV_PATH") or ("fast" if jax.default_backend() == "cpu" else "lax")
    if path not in CONV_PATHS:
        raise ValueError(f"conv path must be one of {CONV_PATHS}, got {path!r}; set VAEJAX_CONV_PATH=fast or lax")
    return path


def _batched(fn, x, *args):
    """fn on x with its leading dims (any number, or none) flattened into one batch axis."""
    lead = x.shape[:-3]
    y = fn(x.reshape((-1,) + x.shape[-3:]), *args)
    return y.reshape(lead + y.shape[1:])


def _pad_hw(x_BHWC, padding):
    """Zero padding of the two spatial axes; a negative amount crops."""
    (t, b), (l, r) = padding
    return lax.pad(x_BHWC, jnp.zeros((), x_BHWC.dtype), ((0, 0, 0), (t, b, 0), (l, r, 0), (0, 0, 0)))


def _matmul(p_NP, w_PO):
    """p @ w, with w entering transposed behind an optimization barrier.

    The barrier only steers layout: XLA:CPU then computes the weight gradient p^T g into a
    column-major (P, O) buffer, several times faster than its default for the tall, skinny
    products of conv layers (P = k*k*C_in, O = C_out, contracting over every pixel).
    """
    w_OP = lax.optimization_barrier(w_PO.T)
    return lax.dot_general(p_NP, w_OP, (((1,), (1,)), ((), ())))


def conv_im2col(x_BHWC, kernel_HWIO, stride: int, padding):
    """lax.conv_general_dilated (NHWC, HWIO) as one matmul over strided-slice patches.

    Exact. The gradients are matmuls and pads, where XLA:CPU's own strided conv has an
    lhs-dilated conv as its input gradient, which it runs slowly.
    """
    kh, kw, ci, co = kernel_HWIO.shape
    x = _pad_hw(x_BHWC, padding)
    b, h, w, _ = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    if (h, w) == (kh, kw):  # the kernel covers the whole map: a dense layer
        patches = x
    else:
        patches = jnp.concatenate(
            [x[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
             for i in range(kh) for j in range(kw)], axis=-1)
    y = _matmul(patches.reshape(b * ho * wo, kh * kw * ci), kernel_HWIO.reshape(kh * kw * ci, co))
    return y.reshape(b, ho, wo, co)


def _phase_taps(n: int, k: int, s: int, lo: int, hi: int):
    """How a transposed conv's output splits into s phases along one axis.

    lax.conv_transpose gives out[s*t + r] = sum over taps (d, a) of phase r of x[t + d] * w[a].
    Returns (T, n_out, dmin, select_AER): T outputs per phase, the output size, the lowest
    offset d, and a 0/1 array select[a, e, r] = 1 where tap a reads x[t + dmin + e] in phase r.
    """
    n_out = (n - 1) * s + lo + hi - k + 2
    taps = [((r + a - lo) // s, a, r) for r in range(s) for a in range(k) if (r + a - lo) % s == 0]
    ds = [d for d, _, _ in taps]
    dmin, span = min(ds), max(ds) - min(ds) + 1
    select = np.zeros((k, span, s), np.float32)
    for d, a, r in taps:
        select[a, d - dmin, r] = 1
    return -(-n_out // s), n_out, dmin, select


def conv_transpose_phases(x_BHWC, kernel_HWIO, stride: int, padding):
    """lax.conv_transpose (NHWC, HWIO, kernel not flipped) without dilating the input.

    Output pixel (s*t + r) only sees taps of phase r, so the s*s phases are one stride-1
    conv of x (computed by conv_im2col) with s*s*O output channels, then depth-to-space. Exact.
    """
    b, h, w, ci = x_BHWC.shape
    kh, kw, _, co = kernel_HWIO.shape
    s = stride
    (th, nh, dh, sel_h), (tw, nw, dw, sel_w) = (
        _phase_taps(n, k, s, lo, hi) for n, k, (lo, hi) in zip((h, w), (kh, kw), padding))
    kernel = jnp.einsum("aer,bfq,abio->efirqo", sel_h, sel_w, kernel_HWIO)
    eh, ew = sel_h.shape[1], sel_w.shape[1]
    kernel = kernel.reshape(eh, ew, ci, s * s * co)
    pad = ((-dh, th - 1 + dh + eh - 1 - (h - 1)), (-dw, tw - 1 + dw + ew - 1 - (w - 1)))
    y = conv_im2col(x_BHWC, kernel, 1, pad)  # (b, th, tw, s*s*co)
    y = y.reshape(b, th, tw, s, s, co).transpose(0, 1, 3, 2, 4, 5).reshape(b, th * s, tw * s, co)
    return y[:, :nh, :nw]


def conv_transpose_scatter(x_BHWC, kernel_HWIO, stride: int, padding):
    """lax.conv_transpose as z = x @ kernel (every input pixel times every tap), then each
    output phase a sum of shifted slices of z, then depth-to-space. Exact.

    Materializes k*k*C_out numbers per input pixel where conv_transpose_phases materializes
    its patches, (k/s)^2 * C_in per pixel: the cheaper one for layers with few output channels.
    """
    b, h, w, ci = x_BHWC.shape
    kh, kw, _, co = kernel_HWIO.shape
    s = stride
    (th, nh, dh, sel_h), (tw, nw, dw, sel_w) = (
        _phase_taps(n, k, s, lo, hi) for n, k, (lo, hi) in zip((h, w), (kh, kw), padding))
    eh, ew = sel_h.shape[1], sel_w.shape[1]
    z = _matmul(x_BHWC.reshape(b * h * w, ci), kernel_HWIO.transpose(2, 0, 1, 3).reshape(ci, kh * kw * co))
    z = _pad_hw(z.reshape(b, h, w, kh * kw * co), ((-dh, th + dh + eh - 1 - h), (-dw, tw + dw + ew - 1 - w)))
    # One array per tap, split rather than indexed: the gradient then concatenates the taps' gradients,
    # where indexing z would pad each of them to z's full size and add the k*k copies.
    taps = lax.split(z, (co,) * (kh * kw), axis=3)
    zero = jnp.zeros((b, th, tw, co), z.dtype)
    phases = [[sum((taps[a * kw + c][:, e:e + th, f:f + tw] for a, e in np.argwhere(sel_h[:, :, r])
                    for c, f in np.argwhere(sel_w[:, :, q])), zero)
               for q in range(s)] for r in range(s)]
    y = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # (b, th, r, tw, q, co)
    return y.reshape(b, th * s, tw * s, co)[:, :nh, :nw]


def conv_transpose_fast(x_BHWC, kernel_HWIO, stride: int, padding):
    """lax.conv_transpose by whichever exact method materializes least: dense, scatter or phases."""
    h, w, ci = x_BHWC.shape[-3:]
    kh, kw, _, co = kernel_HWIO.shape
    if (h, w) == (1, 1):
        return conv_transpose_dense(x_BHWC, kernel_HWIO, padding)
    patch_width = -(-kh // stride) * -(-kw // stride) * ci
    if kh * kw * co < patch_width:
        return conv_transpose_scatter(x_BHWC, kernel_HWIO, stride, padding)
    return conv_transpose_phases(x_BHWC, kernel_HWIO, stride, padding)


def conv_transpose_dense(x_B11C, kernel_HWIO, padding):
    """lax.conv_transpose of a 1x1 map (any stride): out[i, j] = x @ kernel[lo_h - i, lo_w - j], a dense layer."""
    kh, kw, ci, co = kernel_HWIO.shape
    (lo_h, hi_h), (lo_w, hi_w) = padding
    nh, nw = lo_h + hi_h - kh + 2, lo_w + hi_w - kw + 2
    # kernel[lo - i] for i < n (zero off the kernel) is a window of the flipped kernel: a pad or crop, no product
    a_h, a_w = lo_h + 1 - kh, lo_w + 1 - kw
    window = lax.pad(kernel_HWIO[::-1, ::-1], jnp.zeros((), kernel_HWIO.dtype),
                     ((a_h, nh - kh - a_h, 0), (a_w, nw - kw - a_w, 0), (0, 0, 0), (0, 0, 0)))
    kernel = window.transpose(2, 0, 1, 3).reshape(ci, nh * nw * co)
    return _matmul(x_B11C.reshape(-1, ci), kernel).reshape(-1, nh, nw, co)


def _conv_lax(x_BHWC, kernel_HWIO, stride, padding):
    return lax.conv_general_dilated(x_BHWC, kernel_HWIO, (stride, stride), padding, dimension_numbers=_DIMS)


def _conv_transpose_lax(x_BHWC, kernel_HWIO, stride, padding):
    return lax.conv_transpose(x_BHWC, kernel_HWIO, (stride, stride), padding, dimension_numbers=_DIMS)


def conv2d(x_BHWC, kernel_HWIO, stride: int, padding, path: str = "lax"):
    """nn.Conv's math (NHWC, HWIO, explicit (lo, hi) padding per spatial axis) on the chosen path."""
    if path == "lax":
        return _batched(_conv_lax, x_BHWC, kernel_HWIO, stride, padding)
    return _batched(conv_im2col, x_BHWC, kernel_HWIO, stride, padding)


def conv_transpose2d(x_BHWC, kernel_HWIO, stride: int, padding, path: str = "lax"):
    """nn.ConvTranspose's math (NHWC, HWIO, explicit padding, no kernel flip) on the chosen path."""
    if path == "lax":
        return _batched(_conv_transpose_lax, x_BHWC, kernel_HWIO, stride, padding)
    return _batched(conv_transpose_fast, x_BHWC, kernel_HWIO, stride, padding)


class _ConvLayer(nn.Module):
    """A square-kernel conv with nn.Conv's parameters (kernel HWIO, lecun-normal; bias zeros); subclasses
    name the op. The class name is the parameters' name, as in flax.

    padding: ((top, bottom), (left, right)), an int p for p on every side, or "VALID" (none); Conv also
    takes "SAME" (output size ceil(input / stride), the extra row or column at the bottom or right)."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: tuple | int | str = ((0, 0), (0, 0))
    path: str | None = None  # None: conv_path()

    @nn.compact
    def __call__(self, x):
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return self.op(x, kernel, self.stride, self.explicit_padding(x.shape[-3:-1]), conv_path(self.path)) + bias

    def explicit_padding(self, size_hw) -> tuple:
        p = self.padding
        if isinstance(p, str) and p.upper() == "VALID":
            return ((0, 0), (0, 0))
        if isinstance(p, str) and p.upper() == "SAME" and self.op is conv2d:
            return tuple(_same(n, self.kernel_size, self.stride) for n in size_hw)
        if isinstance(p, int) and not isinstance(p, bool) and p >= 0:
            return ((p, p), (p, p))
        if (isinstance(p, (tuple, list)) and len(p) == 2
                and all(isinstance(a, (tuple, list)) and len(a) == 2 and all(isinstance(v, int) for v in a) for a in p)):
            return tuple(tuple(a) for a in p)
        same = ', "SAME"' if self.op is conv2d else ""
        raise ValueError(f"{type(self).__name__} padding={p!r}: pass ((top, bottom), (left, right)), an int for every "
                         f"side, or \"VALID\"{same}")


def _same(n: int, kernel: int, stride: int) -> tuple[int, int]:
    """(lo, hi) padding of one axis that gives ceil(n / stride) outputs, as lax's "SAME"."""
    total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


class Conv(_ConvLayer):
    """nn.Conv with a square kernel: the same parameters, either path."""

    op = staticmethod(conv2d)


class ConvTranspose(_ConvLayer):
    """nn.ConvTranspose with a square kernel (PyTorch's padding semantics): the same parameters, either path."""

    op = staticmethod(conv_transpose2d)
