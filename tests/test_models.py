"""Tests for vaejax.models and vaejax.config: shapes, parameter counts, the transposed-conv
size formula, reparameterization, encode/decode/apply consistency, config validation."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaejax import config, layers, models, objectives
from conftest import TINY_CONV_AE, TINY_CONV_VAE, TINY_MLP_AE, TINY_MLP_VAE, fake_params

KEY = jax.random.key(0)


@functools.lru_cache(maxsize=None)
def abstract_params(cfg):
    """Parameter shapes of cfg without computing anything."""
    return jax.eval_shape(lambda k: models.init(k, cfg), KEY)


def count(shapes_tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes_tree))


# ------------------------------------------------------------------ shapes and parameter counts


@pytest.mark.parametrize("name", sorted(config.PRESETS))
@pytest.mark.parametrize("batch", [(), (3,)], ids=["unbatched", "batched"])
def test_preset_output_shapes(name, batch):
    cfg = config.preset(name)
    params = abstract_params(cfg)
    x = jax.ShapeDtypeStruct(batch + tuple(cfg.image_shape), jnp.float32)

    logits, aux = jax.eval_shape(lambda p, x: models.apply(cfg, p, x, KEY), params, x)
    assert logits.shape == batch + tuple(cfg.image_shape)
    assert logits.dtype == jnp.float32
    assert aux["z"].shape == batch + (cfg.latent_dim,)

    code = jax.eval_shape(lambda p, x: models.encode(cfg, p, x), params, x)
    if cfg.kind == "vae":
        mu, logvar = code
        assert mu.shape == logvar.shape == batch + (cfg.latent_dim,)
        assert aux["mu"].shape == aux["logvar"].shape == batch + (cfg.latent_dim,)
    else:
        assert code.shape == batch + (cfg.latent_dim,)

    z = jax.ShapeDtypeStruct(batch + (cfg.latent_dim,), jnp.float32)
    decoded = jax.eval_shape(lambda p, z: models.decode(cfg, p, z), params, z)
    assert decoded.shape == batch + tuple(cfg.image_shape)


def dense(n_in, n_out):
    return n_in * n_out + n_out


def conv(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


def test_mlp_vae_param_count_is_pytorch_examples_vae():
    # pytorch/examples VAE: fc1 784->400, fc21 400->20, fc22 400->20, fc3 20->400, fc4 400->784.
    expected = dense(784, 400) + 2 * dense(400, 20) + dense(20, 400) + dense(400, 784)
    assert expected == 652_824
    assert models.param_count(abstract_params(config.preset("mlp_vae"))) == expected


def test_conv_ae_param_count_is_the_notes_conv_ae():
    # Conv(1->16, 3x3) Conv(16->32, 3x3) Conv(32->64, 7x7) | ConvT(64->32, 7x7) ConvT(32->16, 3x3) ConvT(16->1, 3x3)
    encoder = conv(3, 1, 16) + conv(3, 16, 32) + conv(7, 32, 64)
    decoder = conv(7, 64, 32) + conv(3, 32, 16) + conv(3, 16, 1)
    assert encoder + decoder == 210_369
    assert models.param_count(abstract_params(config.preset("conv_ae"))) == 210_369


def expected_param_count(cfg):
    """The parameter count implied by the architecture the issue specifies, from cfg's sizes alone."""
    h, _, c = cfg.image_shape
    pixels = cfg.num_pixels
    code = cfg.latent_dim * (2 if cfg.kind == "vae" else 1)
    if cfg.arch == "mlp":
        enc = [pixels, *cfg.hidden, code]
        dec = [cfg.latent_dim, *reversed(cfg.hidden), pixels]
        return sum(dense(a, b) for a, b in zip(enc[:-1], enc[1:])) + sum(dense(a, b) for a, b in zip(dec[:-1], dec[1:]))
    widths = [c] + [layer[0] for layer in cfg.conv_layers]
    kernels = [layer[1] for layer in cfg.conv_layers]
    n = sum(conv(k, widths[i], widths[i + 1]) for i, k in enumerate(kernels))  # encoder
    n += sum(conv(k, widths[i + 1], widths[i]) for i, k in enumerate(kernels))  # mirrored decoder
    if cfg.kind == "vae":  # code -> (mu, logvar); z -> code
        n += dense(cfg.code_size, 2 * cfg.latent_dim) + dense(cfg.latent_dim, cfg.code_size)
    return n


@pytest.mark.parametrize("name", sorted(config.PRESETS))
def test_every_preset_param_count(name):
    cfg = config.preset(name)
    n = count(abstract_params(cfg))
    assert n > 0
    assert n == expected_param_count(cfg)


# ------------------------------------------------------------------ transposed-conv size formula


def _grid():
    for i, s, k in itertools.product((1, 2, 5), (1, 2, 3), (1, 2, 3, 4, 7)):
        for p in sorted({0, 1, k // 2, k - 1} & set(range(k))):  # no padding, some, the most
            for op in range(min(s, k)):
                if layers.conv_transpose_output_size(i, s, k, p, op) >= 1:
                    yield i, s, k, p, op


GRID = list(_grid())


def test_conv_transpose_output_size_formula_by_hand():
    # PyTorch's documented H_out = (H_in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    for i, s, k, p, op in GRID:
        assert layers.conv_transpose_output_size(i, s, k, p, op) == (i - 1) * s - 2 * p + (k - 1) + op + 1
    # the notes' decoder: 1 -> 7 -> 14 -> 28
    assert layers.conv_transpose_output_size(1, 1, 7, 0, 0) == 7
    assert layers.conv_transpose_output_size(7, 2, 3, 1, 1) == 14
    assert layers.conv_transpose_output_size(14, 2, 3, 1, 1) == 28


def test_conv_transpose_output_size_matches_layer_shapes():
    assert len(GRID) > 100
    mismatches = []
    for i, s, k, p, op in GRID:
        layer = layers.conv_transpose(2, k, s, p, op)
        x = jax.ShapeDtypeStruct((1, i, i, 3), jnp.float32)
        out, _ = jax.eval_shape(layer.init_with_output, KEY, x)
        want = layers.conv_transpose_output_size(i, s, k, p, op)
        if out.shape != (1, want, want, 2):
            mismatches.append(((i, s, k, p, op), out.shape, want))
    assert not mismatches, mismatches[:10]


COMPUTED = [(1, 1, 7, 0, 0), (7, 2, 3, 1, 1), (4, 2, 3, 1, 0), (3, 3, 5, 2, 2), (5, 1, 3, 1, 0), (2, 2, 4, 3, 1)]


def random_like(shapes_tree, seed=0):
    """Random float32 arrays with the shapes of an abstract pytree (cheaper than compiling an initializer)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes_tree)


def test_conv_transpose_output_size_matches_computed_outputs():
    """The same check on real computed outputs (one compiled program for all the cases)."""
    convs, xs, params = [], [], []
    for j, (i, s, k, p, op) in enumerate(COMPUTED):
        convs.append(layers.conv_transpose(4, k, s, p, op))
        xs.append(np.random.default_rng(j).normal(size=(2, i, i, 3)).astype(np.float32))
        params.append(random_like(jax.eval_shape(convs[-1].init, KEY, xs[-1]), seed=j))

    outs = jax.jit(lambda params, xs: [c.apply(p, x) for c, p, x in zip(convs, params, xs)])(params, xs)
    for (i, s, k, p, op), out in zip(COMPUTED, outs):
        want = layers.conv_transpose_output_size(i, s, k, p, op)
        assert out.shape == (2, want, want, 4), (i, s, k, p, op)
        assert bool(jnp.all(jnp.isfinite(out))) and bool(jnp.any(out != 0))


# ------------------------------------------------------------------ reparameterize

MU = jnp.array([0.5, -1.0, 2.0], jnp.float32)
LOGVAR = jnp.array([0.0, -2.0, 1.0], jnp.float32)


def test_reparameterize_same_key_same_z():
    z1 = objectives.reparameterize(jax.random.key(7), MU, LOGVAR)
    z2 = objectives.reparameterize(jax.random.key(7), MU, LOGVAR)
    assert z1.shape == MU.shape and z1.dtype == MU.dtype
    np.testing.assert_array_equal(np.asarray(z1), np.asarray(z2))


def test_reparameterize_different_keys_different_z():
    z1 = objectives.reparameterize(jax.random.key(7), MU, LOGVAR)
    z2 = objectives.reparameterize(jax.random.key(8), MU, LOGVAR)
    assert np.all(np.asarray(z1) != np.asarray(z2))


def test_reparameterize_moments():
    n = 20_000
    keys = jax.random.split(jax.random.key(3), n)
    z = np.asarray(jax.jit(jax.vmap(objectives.reparameterize, in_axes=(0, None, None)))(keys, MU, LOGVAR), np.float64)
    sigma = np.exp(0.5 * np.asarray(LOGVAR, np.float64))
    # 5 standard errors: the mean's is sigma / sqrt(n), the standard deviation's about sigma / sqrt(2n)
    np.testing.assert_array_less(np.abs(z.mean(0) - np.asarray(MU)), 5 * sigma / np.sqrt(n))
    np.testing.assert_array_less(np.abs(z.std(0) - sigma), 5 * sigma / np.sqrt(2 * n))
    # the coordinates are independent
    corr = np.corrcoef(z.T)[np.triu_indices(3, 1)]
    np.testing.assert_array_less(np.abs(corr), 5 / np.sqrt(n))


def test_reparameterize_gradients():
    key = jax.random.key(11)
    z = objectives.reparameterize(key, MU, LOGVAR)
    sigma = jnp.exp(0.5 * LOGVAR)
    eps = (z - MU) / sigma  # the standard-normal draw behind z
    # each z_i depends only on (mu_i, logvar_i): the Jacobians are diagonal
    jac_mu, jac_logvar = jax.jit(jax.jacobian(objectives.reparameterize, argnums=(1, 2)))(key, MU, LOGVAR)
    np.testing.assert_allclose(np.asarray(jac_mu), np.eye(3), rtol=0, atol=0)
    np.testing.assert_allclose(np.asarray(jac_logvar), np.diag(np.asarray(0.5 * sigma * eps)), rtol=1e-6, atol=1e-7)
    assert np.all(np.abs(np.diag(np.asarray(jac_logvar))) > 0)


# ------------------------------------------------------------------ encode / decode / apply


def _images(shape, n=3, seed=5):
    return np.random.default_rng(seed).uniform(size=(n,) + tuple(shape)).astype(np.float32)


@pytest.mark.parametrize("cfg", [TINY_MLP_AE, TINY_CONV_AE], ids=["mlp", "conv"])
def test_ae_apply_is_decode_of_encode(cfg):
    params = fake_params(cfg)
    x = _images(cfg.image_shape)

    @jax.jit
    def run(params, x):
        logits, aux = models.apply(cfg, params, x)
        z = models.encode(cfg, params, x)
        logits_other_key, _ = models.apply(cfg, params, x, jax.random.key(99))
        single, _ = models.apply(cfg, params, x[1])
        return logits, aux["z"], z, models.decode(cfg, params, z), logits_other_key, single

    logits, aux_z, z, decoded, logits_other_key, single = map(np.asarray, run(params, x))
    np.testing.assert_allclose(aux_z, z, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(logits, decoded, rtol=1e-6, atol=1e-6)
    # an AE is deterministic: the key does not matter
    np.testing.assert_array_equal(logits, logits_other_key)
    # batched and one-at-a-time agree
    np.testing.assert_allclose(single, logits[1], rtol=1e-5, atol=1e-5)
    assert np.std(logits) > 0


@pytest.mark.parametrize("cfg", [TINY_MLP_VAE, TINY_CONV_VAE], ids=["mlp", "conv"])
def test_vae_apply_is_decode_of_its_sample(cfg):
    params = fake_params(cfg)
    x = _images(cfg.image_shape)

    @jax.jit
    def run(params, x, key):
        logits, aux = models.apply(cfg, params, x, key)
        mu, logvar = models.encode(cfg, params, x)
        return logits, aux, mu, logvar, models.decode(cfg, params, aux["z"])

    logits, aux, mu, logvar, decoded = jax.tree_util.tree_map(np.asarray, run(params, x, jax.random.key(4)))
    np.testing.assert_allclose(aux["mu"], mu, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(aux["logvar"], logvar, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(logits, decoded, rtol=1e-6, atol=1e-6)
    # the sample is random: same key, same z; another key, another z (and other logits)
    logits_same, aux_same, *_ = jax.tree_util.tree_map(np.asarray, run(params, x, jax.random.key(4)))
    np.testing.assert_array_equal(aux_same["z"], aux["z"])
    np.testing.assert_array_equal(logits_same, logits)
    logits_other, aux_other, *_ = jax.tree_util.tree_map(np.asarray, run(params, x, jax.random.key(5)))
    assert np.all(aux_other["z"] != aux["z"])
    assert not np.allclose(logits_other, logits)


# ------------------------------------------------------------------ config


def test_preset_unknown_name_raises():
    with pytest.raises(ValueError, match="mlp_vae"):  # the message lists the choices
        config.preset("no_such_preset")


def test_presets_are_returned_by_name():
    for name, cfg in config.PRESETS.items():
        assert config.preset(name) == cfg
    cfg = config.preset("mlp_vae")
    assert (cfg.kind, cfg.arch, cfg.hidden, cfg.latent_dim, cfg.image_shape) == ("vae", "mlp", (400,), 20, (28, 28, 1))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(latent_dim=0),
        dict(latent_dim=-3),
        dict(kind="gan"),
        dict(arch="resnet"),
        dict(likelihood="poisson"),
        dict(obs_sigma=0.0),
        dict(obs_sigma=-1.0),
        dict(image_shape=(28, 28)),
        dict(image_shape=(28, 0, 1)),
        dict(arch="conv", conv_layers=((16, 3, 2, 1), (32, 30, 1, 0))),  # 14x14 cannot take a 30x30 kernel
        dict(arch="conv", conv_layers=((16, 0, 2, 1),)),
        dict(arch="conv", conv_layers=()),
        dict(arch="conv", image_shape=(28, 32, 1)),
        dict(kind="ae", arch="conv", latent_dim=20),  # the notes' code is 1x1x64
    ],
)
def test_model_config_validation(overrides):
    with pytest.raises(ValueError):
        config.ModelConfig(**overrides)
    with pytest.raises(ValueError):
        config.replace(config.preset("mlp_vae"), **overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(batch_size=0),
        dict(batch_size=-8),
        dict(learning_rate=-1e-3),
        dict(learning_rate=0.0),
        dict(epochs=-1),
        dict(beta=-0.5),
        dict(binarize="static"),
    ],
)
def test_train_config_validation(overrides):
    with pytest.raises(ValueError):
        config.TrainConfig(**overrides)
    with pytest.raises(ValueError):
        config.replace(config.TrainConfig(), **overrides)


def test_valid_configs_construct():
    config.ModelConfig()
    config.TrainConfig()
    config.TrainConfig(beta=0.0, epochs=0, batch_size=1, binarize="dynamic")
    config.replace(config.preset("conv_ae"), conv_layers=config.notes_conv_stack((4, 8, 8)), latent_dim=8)


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_conv_layers_set_depth_and_kernels(kind):
    """Four layers, a 5x5 kernel and a 3x3x32 code: the decoder lands on 28x28 again."""
    layers = ((8, 5, 1, 2), (16, 3, 2, 1), (16, 3, 2, 1), (32, 3, 2, 0))
    cfg = config.replace(config.preset(f"conv_{kind}"), conv_layers=layers, latent_dim=288 if kind == "ae" else 6)
    assert models.conv_plan(cfg) == ((28, 28, 14, 7, 3), (0, 1, 1, 0))
    assert cfg.code_size == 3 * 3 * 32
    params = abstract_params(cfg)
    assert count(params) == expected_param_count(cfg)
    out = jax.eval_shape(lambda p, x: models.apply(cfg, p, x, jax.random.key(0))[0], params,
                         jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32))
    assert out.shape == (2, 28, 28, 1)
