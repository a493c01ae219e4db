"""Data parallelism on CPU without network: 4 virtual devices against 1, and two real processes on 127.0.0.1.

XLA_FLAGS must be set before jax starts, so the multi-device runs are subprocesses.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cli_runs
from vaejax import parallel

EPOCHS = 3

# Runs inside a subprocess with 4 virtual CPU devices: the same tiny run on 1 and on 4 of them,
# the one-line error for a batch that does not split, and the compiled step's all-reduce.
_FOUR_DEVICES = textwrap.dedent("""
    import contextlib, io, json, sys
    import jax, numpy as np, optax
    from vaejax import checkpoint, cli, config, engine, parallel, recipe

    root, tiny, epochs = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    out = {"devices": len(jax.devices()), "metrics": {}, "params": {}}
    model = config.replace(config.preset("mlp_vae"), hidden=(32,), latent_dim=4)
    tc = config.TrainConfig(batch_size=200)
    r = recipe.build(model, tc)
    make = r.init_state
    for n in ("1", "4"):
        workdir = f"{root}/devices-{n}"
        assert cli.main(["train", *tiny, "--epochs", epochs, "--workdir", workdir, "--devices", n]) == 0
        out["metrics"][n] = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
        mngr = checkpoint.manager(workdir)
        state, _ = checkpoint.restore(mngr, checkpoint.abstract(make, jax.random.key(0)))
        out["params"][n] = [np.asarray(a).ravel().tolist() for a in jax.tree_util.tree_leaves(state.params)]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        out["uneven_rc"] = cli.main(["train", *tiny, "--epochs", "1", "--workdir", f"{root}/uneven",
                                     "--devices", "3"])
    out["uneven_err"] = err.getvalue()
    mesh = parallel.data_mesh()
    steps = engine.make_steps(r.objective, r.optimizer, mesh=mesh)
    x = parallel.put_replicated(np.zeros((4000, 28, 28, 1), np.float32), mesh)
    order = parallel.put_sharded(np.arange(400).reshape(2, 200), mesh, axis=1)
    state = parallel.put_replicated(make(jax.random.key(0)), mesh)
    hlo = steps.lower(state, x, order, jax.random.key(0)).compile().as_text()
    out["all_reduce"] = "all-reduce" in hlo
    out["order_shard"] = list(order.addressable_shards[0].data.shape)
    # plain SGD, whose step is proportional to the gradient: a sum over devices instead of a mean shows
    batch = np.random.default_rng(0).uniform(size=(200, 28, 28, 1)).astype(np.float32)
    params = r.init_params(jax.random.key(0))
    out["sgd"] = {"init": [np.asarray(a).ravel().tolist() for a in jax.tree_util.tree_leaves(params)]}
    for n in (1, 4):
        mesh_n, sgd = parallel.data_mesh(n), optax.sgd(0.05)
        step = engine.make_step(r.objective, sgd, mesh=mesh_n)
        state = parallel.put_replicated(engine.init(params, sgd), mesh_n)
        for i in range(2):
            state, _ = step(state, parallel.put_sharded(batch, mesh_n, axis=0), jax.random.key(1))
        out["sgd"][str(n)] = [np.asarray(a).ravel().tolist() for a in jax.tree_util.tree_leaves(state.params)]
    print("RESULT " + json.dumps(out))
""")


# The tests that read one_vs_four run on one xdist worker (make test's --dist loadgroup), so it runs once.
on_its_worker = pytest.mark.xdist_group("one_vs_four")


@pytest.fixture(scope="module")
def one_vs_four(tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    proc = subprocess.run([sys.executable, "-c", _FOUR_DEVICES, str(root), json.dumps(cli_runs.TINY), str(EPOCHS)],
                          env=cli_runs.env(XLA_FLAGS="--xla_force_host_platform_device_count=4"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert result, proc.stdout
    return json.loads(result[-1][len("RESULT "):])


def _losses(records):
    return np.array([[r["train_loss"], r["test_loss"], r["test_kl"]] for r in records])


@on_its_worker
def test_four_devices_give_the_loss_curve_of_one(one_vs_four):
    assert one_vs_four["devices"] == 4
    one, four = one_vs_four["metrics"]["1"], one_vs_four["metrics"]["4"]
    assert [r["epoch"] for r in one] == [r["epoch"] for r in four] == list(range(1, EPOCHS + 1))
    np.testing.assert_allclose(_losses(four), _losses(one), rtol=1e-5, atol=2e-4)
    for a, b in zip(one_vs_four["params"]["1"], one_vs_four["params"]["4"]):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-5)


@on_its_worker
def test_four_devices_split_the_batch_and_all_reduce(one_vs_four):
    assert one_vs_four["all_reduce"], "the compiled step has no all-reduce: the batch was not split"
    assert one_vs_four["order_shard"] == [2, 50]  # each device holds a quarter of every batch's indices


@on_its_worker
def test_four_devices_average_the_gradient_as_one_does(one_vs_four):
    """Two SGD steps on one batch: split over four devices, the same parameters as on one (to rounding).
    A sum of the devices' gradients instead of their mean would move them four times as far."""
    sgd = one_vs_four["sgd"]
    moved = max(np.max(np.abs(np.array(b) - np.array(a))) for a, b in zip(sgd["init"], sgd["1"]))
    assert moved > 1e-3  # the steps did move the parameters
    for a, b in zip(sgd["1"], sgd["4"]):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5, atol=1e-6)


@on_its_worker
def test_batch_that_does_not_split_is_one_line(one_vs_four):
    assert one_vs_four["uneven_rc"] == 2
    assert one_vs_four["uneven_err"].splitlines() == [
        "vaejax: error: batch size 200 does not split over 3 devices; use a multiple of 3 "
        "(e.g. --batch-size 201) or --devices 2"]


def test_two_processes_train_together_and_agree(one_vs_four, tmp_path):
    workdir = tmp_path / "run"
    port = cli_runs.free_port()
    procs = [subprocess.Popen(cli_runs.command("train", *cli_runs.TINY, "--epochs", EPOCHS, "--workdir", workdir,
                                               "--coordinator", f"127.0.0.1:{port}", "--num-processes", 2,
                                               "--process-id", i),
                              env=cli_runs.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=180))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err
    digests = [cli_runs.done_digest(out) for out, _ in outs]
    assert digests[0] == digests[1], "the two processes ended with different parameters"
    assert "2 device(s), 2 process(es)" in outs[0][0]
    # Process 0 alone wrote the log (one record per epoch); orbax wrote the checkpoints.
    assert [r["epoch"] for r in cli_runs.metrics(workdir)] == list(range(1, EPOCHS + 1))
    assert not [line for line in outs[1][0].splitlines() if line.startswith("{")]
    assert cli_runs.checkpoint_names(workdir) == [cli_runs.checkpoint_name(e) for e in range(1, EPOCHS + 1)]
    # The same global batch over two processes: the loss curve of one device.
    np.testing.assert_allclose(_losses(cli_runs.metrics(workdir)), _losses(one_vs_four["metrics"]["1"]),
                               rtol=1e-5, atol=2e-4)


@pytest.mark.parametrize("flags, env, want", [
    ((None, None, None), {}, None),
    (("10.0.0.1:1234", 4, 3), {}, {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}),
    ((None, None, None), {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
     {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1}),
    (("h:2", None, 0), {"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
     {"coordinator_address": "h:2", "num_processes": 2, "process_id": 0}),
    (("auto", None, None), {}, {}),
])
def test_distributed_settings_from_flags_and_environment(flags, env, want):
    assert parallel.distributed_settings(*flags, environ=env) == want


@pytest.mark.parametrize("flags, env", [
    ((None, 2, None), {}),
    (("h:1", None, None), {}),
    (("h:1", 2, 5), {}),
    (("no-port", 2, 0), {}),
    ((None, None, None), {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}),
])
def test_distributed_settings_reject_incomplete(flags, env):
    with pytest.raises(parallel.ParallelError) as info:
        parallel.distributed_settings(*flags, environ=env)
    assert "\n" not in str(info.value)


def test_parse_devices():
    assert parallel.parse_devices("all") is None and parallel.parse_devices("4") == 4
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(parallel.ParallelError):
            parallel.parse_devices(bad)
