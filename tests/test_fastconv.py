"""The fast conv path (im2col, phase, scatter and dense forms) computes exactly what the
straightforward flax nn.Conv / nn.ConvTranspose layers compute: same parameters, same
outputs, same gradients with respect to parameters and inputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaejax import config, layers, models

KEY = jax.random.key(0)


class NotesEncoder(nn.Module):
    """The notes' encoder, written with flax's own conv layers: the reference."""

    cfg: config.ModelConfig

    @nn.compact
    def __call__(self, x):
        (c0, _, _, _), (c1, _, _, _), (c2, k, _, _) = self.cfg.conv_layers  # the notes' stack
        pad = ((1, 1), (1, 1))
        h = nn.relu(nn.Conv(c0, (3, 3), strides=(2, 2), padding=pad)(x))
        h = nn.relu(nn.Conv(c1, (3, 3), strides=(2, 2), padding=pad)(h))
        h = nn.Conv(c2, (k, k), padding="VALID")(h)
        return h.reshape(h.shape[:-3] + (c2,))


def notes_conv_transpose(features, k, s=1, p=0, op=0):
    lo, hi = k - 1 - p, k - 1 - p + op
    return nn.ConvTranspose(features, (k, k), strides=(s, s), padding=((lo, hi), (lo, hi)))


class NotesDecoder(nn.Module):
    cfg: config.ModelConfig

    @nn.compact
    def __call__(self, code):
        (c0, _, _, _), (c1, _, _, _), (c2, k, _, _) = self.cfg.conv_layers
        _, (op2, op1, _) = models.conv_plan(self.cfg)
        h = code.reshape(code.shape[:-1] + (1, 1, c2))
        h = nn.relu(notes_conv_transpose(c1, k)(h))
        h = nn.relu(notes_conv_transpose(c0, 3, 2, 1, op1)(h))
        return notes_conv_transpose(self.cfg.image_shape[-1], 3, 2, 1, op2)(h)


def assert_trees_close(a, b, rtol=2e-4, atol=2e-4):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert x.shape == y.shape
        scale = float(jnp.max(jnp.abs(y))) + 1e-6
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol * scale)


def value_and_grads(apply, params, x):
    """Output, and gradients of a random projection of it w.r.t. params and input."""
    out = apply(params, x)
    probe = jax.random.normal(jax.random.key(7), out.shape)
    grads = jax.grad(lambda p, x: jnp.sum(apply(p, x) * probe), argnums=(0, 1))(params, x)
    return out, grads


# ------------------------------------------------------------------ layers of the presets


@pytest.mark.parametrize("name", ("conv_ae", "conv_ae_rgb"))
def test_encoder_and_decoder_match_flax_layers(name):
    """28x28x1 and 32x32x3 stacks (conv_vae's conv layers are conv_ae's); one compiled program each."""
    cfg = config.preset(name)
    x = jax.random.uniform(jax.random.key(1), (3,) + cfg.image_shape)
    code = jax.random.normal(jax.random.key(2), (3, cfg.code_size))
    pairs = ((models.ConvEncoder(cfg, "fast"), NotesEncoder(cfg), x),
             (models.ConvDecoder(cfg, "fast"), NotesDecoder(cfg), code))
    inits = jax.jit(lambda k: [(fast.init(k, inp), ref.init(k, inp)) for fast, ref, inp in pairs])(KEY)
    for fast_params, params in inits:  # the same parameter tree, names, shapes and initial values
        assert_trees_close(fast_params, params, rtol=0, atol=0)
    params = [p for _, p in inits]

    def both(params):
        return [(value_and_grads(fast.apply, p, inp), value_and_grads(ref.apply, p, inp))
                for (fast, ref, inp), p in zip(pairs, params)]

    for got, want in jax.jit(both)(params):
        assert_trees_close(got, want)


def test_whole_model_paths_agree(monkeypatch):
    """conv_vae under VAEJAX_CONV_PATH=fast and =lax: same logits, same gradients; one image alone as in a batch."""
    cfg = config.preset("conv_vae")
    params = jax.jit(models.init, static_argnums=1)(KEY, cfg)
    x = jax.random.uniform(jax.random.key(3), (2,) + cfg.image_shape)
    apply = lambda p, x: models.apply(cfg, p, x, jax.random.key(4))[0]
    results = {}
    for path in ("fast", "lax"):
        monkeypatch.setenv("VAEJAX_CONV_PATH", path)  # read at trace time: trace afresh per path
        results[path] = jax.jit(lambda p, x: value_and_grads(apply, p, x))(params, x)
    assert_trees_close(results["fast"], results["lax"])
    monkeypatch.setenv("VAEJAX_CONV_PATH", "fast")
    mu = jax.jit(lambda p, x: models.encode(cfg, p, x)[0])
    np.testing.assert_allclose(mu(params, x[1]), mu(params, x)[1], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ primitives over a grid of shapes


# (stride, kernel, padding p, output padding op, input size, C_in, C_out): the notes' layers,
# stride 1 and 3, even kernels, kernels smaller than the stride (phases without taps),
# p = k - 1, 1x1 inputs, and few output channels (where the fast path scatters).
TRANSPOSED = [(2, 3, 1, 1, 7, 3, 2), (2, 3, 1, 0, 4, 8, 1), (1, 3, 1, 0, 4, 3, 2), (3, 5, 2, 2, 3, 8, 1),
              (2, 4, 1, 1, 3, 3, 2), (3, 2, 0, 1, 2, 3, 2), (1, 7, 0, 0, 1, 3, 2), (3, 4, 3, 0, 2, 8, 1)]
FORMS = (layers.conv_transpose_fast, layers.conv_transpose_phases, layers.conv_transpose_scatter)
# (stride, kernel, padding, input size) for convs: the notes', stride 1 and 3, whole-map kernels.
CONVS = [(2, 3, 1, 28), (2, 3, 1, 7), (1, 3, 1, 5), (3, 4, 1, 8), (1, 7, 0, 7), (2, 7, 0, 8), (2, 1, 0, 5)]


def _rand(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _vjp_pair(fast_fn, lax_fn, x, w):
    """(fast output and gradients, lax output and gradients) for one fixed cotangent."""
    (y_f, vjp_f), (y_l, vjp_l) = jax.vjp(fast_fn, x, w), jax.vjp(lax_fn, x, w)
    g = jnp.cos(jnp.arange(y_l.size, dtype=jnp.float32)).reshape(y_l.shape)
    return (y_f, vjp_f(g)), (y_l, vjp_l(g))


def test_transposed_conv_forms_match_lax_over_a_grid():
    """Each form, forward and both gradients, against lax.conv_transpose; one compiled program."""
    def all_cases(xs, ws):
        out = []
        for (s, k, p, op, *_), x, w in zip(TRANSPOSED, xs, ws):
            pad = ((k - 1 - p, k - 1 - p + op),) * 2
            lax_fn = lambda x, w: layers.conv_transpose2d(x, w, s, pad, "lax")
            for form in FORMS:
                out.append(_vjp_pair(lambda x, w: form(x, w, s, pad), lax_fn, x, w))
        return out

    xs = [_rand((2, i, i + 1, ci), n) for n, (*_, i, ci, co) in enumerate(TRANSPOSED)]
    ws = [_rand((k, k, ci, co), 100 + n) for n, (s, k, p, op, i, ci, co) in enumerate(TRANSPOSED)]
    for got, want in jax.jit(all_cases)(xs, ws):
        assert got[0].shape == want[0].shape
        assert_trees_close(got, want)


def test_dense_transposed_conv_matches_lax():
    cases = [(7, 0, 1, 0), (8, 0, 1, 0), (3, 1, 2, 0), (4, 1, 3, 0), (3, 1, 2, 1), (4, 2, 3, 2)]  # kernel, padding,
    # stride, output padding on a 1x1 map

    def all_cases(xs, ws):
        out = []
        for (k, p, s, op), x, w in zip(cases, xs, ws):
            pad = ((k - 1 - p, k - 1 - p + op),) * 2
            out.append(_vjp_pair(lambda x, w: layers.conv_transpose_dense(x, w, pad),
                                 lambda x, w: layers.conv_transpose2d(x, w, s, pad, "lax"), x, w))
        return out

    xs = [_rand((3, 1, 1, 5), i) for i, _ in enumerate(cases)]
    ws = [_rand((k, k, 5, 4), 10 + i) for i, (k, *_) in enumerate(cases)]
    for got, want in jax.jit(all_cases)(xs, ws):
        assert_trees_close(got, want)


def test_strided_conv_im2col_matches_lax_over_a_grid():
    def all_cases(xs, ws):
        out = []
        for (s, k, p, i), x, w in zip(CONVS, xs, ws):
            pad = ((p, p), (p, p))
            out.append(_vjp_pair(lambda x, w: layers.conv_im2col(x, w, s, pad),
                                 lambda x, w: layers.conv2d(x, w, s, pad, "lax"), x, w))
        return out

    xs = [_rand((2, i, i, 3), n) for n, (s, k, p, i) in enumerate(CONVS)]
    ws = [_rand((k, k, 3, 4), 50 + n) for n, (s, k, p, i) in enumerate(CONVS)]
    for got, want in jax.jit(all_cases)(xs, ws):
        assert got[0].shape == want[0].shape
        assert_trees_close(got, want)


def test_conv_transpose_helper_keeps_pytorch_sizes_on_both_paths():
    x = _rand((1, 7, 7, 3), 0)
    for path in ("fast", "lax"):
        layer = layers.conv_transpose(2, 3, 2, 1, 1, path=path)
        out, _ = layer.init_with_output(KEY, x)
        assert out.shape == (1, layers.conv_transpose_output_size(7, 2, 3, 1, 1), 14, 2)


# ------------------------------------------------------------------ choosing the path


def test_conv_path_choice(monkeypatch):
    monkeypatch.delenv("VAEJAX_CONV_PATH", raising=False)
    assert layers.conv_path() == ("fast" if jax.default_backend() == "cpu" else "lax")
    assert layers.conv_path("lax") == "lax"
    monkeypatch.setenv("VAEJAX_CONV_PATH", "lax")
    assert layers.conv_path() == "lax"
    assert layers.conv_path("fast") == "fast"  # an explicit argument wins over the environment
    monkeypatch.setenv("VAEJAX_CONV_PATH", "cudnn")
    with pytest.raises(ValueError, match="VAEJAX_CONV_PATH"):
        layers.conv_path()


def test_conv_takes_an_int_valid_and_same_padding_as_flax_does():
    from vaejax.layers import Conv, ConvTranspose

    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))
    for stride in (1, 2):
        for padding, flax_padding in ((1, ((1, 1), (1, 1))), ("VALID", "VALID"), ("SAME", "SAME")):
            mine = Conv(4, 3, stride, padding)
            params = mine.init(jax.random.key(1), x)
            theirs = nn.Conv(4, (3, 3), (stride, stride), flax_padding).apply(params, x)
            np.testing.assert_allclose(mine.apply(params, x), theirs, rtol=1e-5, atol=1e-5)
    assert Conv(4, 3, 2, "SAME").apply(params, x).shape == (2, 5, 5, 4)  # ceil(9 / 2)
    for layer, takes_same in ((ConvTranspose(4, 3, 2, "SAME"), False), (Conv(4, 3, 1, "FULL"), True),
                              (Conv(4, 3, 1, (1, 1)), True)):
        with pytest.raises(ValueError, match=r'padding=.*an int for every side, or "VALID"') as e:
            layer.init(jax.random.key(1), x)
        assert ('"SAME"' in str(e.value).splitlines()[0]) == takes_same
