"""`vaejax train | sample | presets` end to end, resume bitwise, checkpoint round trip, --set parsing."""

import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cli_runs
from vaejax import checkpoint, cli, cli_inputs, config, errors, parallel, recipe

TINY_MODEL = config.replace(config.preset("mlp_vae"), hidden=(32,), latent_dim=4)
TINY_TRAIN = config.TrainConfig(batch_size=200)


def _restore_state(workdir, epoch):
    """The TrainState saved after `epoch` by a tiny run."""
    mngr = checkpoint.manager(workdir)
    make = recipe.build(TINY_MODEL, TINY_TRAIN).init_state
    state, _ = checkpoint.restore(mngr, checkpoint.abstract(make, jax.random.key(0)), epoch * cli_runs.STEPS_PER_EPOCH)
    mngr.close()
    return state


def test_train_smoke_writes_metrics_checkpoints_and_figures(tmp_path):
    workdir = tmp_path / "run"
    args = [a for a in cli_runs.TINY if a != "--no-figures"]
    proc = subprocess.run(cli_runs.command("train", *args, "--epochs", 2, "--workdir", workdir),
                          env=cli_runs.env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    records = cli_runs.metrics(workdir)
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"train_loss", "test_loss", "test_kl", "seconds"} <= set(records[0])
    assert records[1]["train_loss"] < records[0]["train_loss"]
    assert cli_runs.checkpoint_names(workdir) == [cli_runs.checkpoint_name(1), cli_runs.checkpoint_name(2)]
    for name in ("run.json", "reconstructions.png", "samples.png", "loss_curve.png"):
        assert (workdir / name).stat().st_size > 0, name
    assert not [n for n in os.listdir(workdir) if ".tmp" in n or n.startswith(".write-probe")]
    assert "done:" in proc.stdout and "1 device(s), 1 process(es)" in proc.stdout

    out = tmp_path / "more.png"
    proc = subprocess.run(cli_runs.command("sample", "--workdir", workdir, "--num", 4, "--out", out),
                          env=cli_runs.env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


def test_resume_after_epoch_k_is_bitwise_equal(tmp_path_factory, tmp_path):
    reference = cli_runs.reference(tmp_path_factory.getbasetemp(), 4)
    workdir = tmp_path / "resumed"
    cli_runs.train(workdir, epochs=2)
    proc = cli_runs.train(workdir, "--resume", epochs=4)
    assert "resuming" in proc.stdout and "after epoch 2" in proc.stdout
    assert [r["epoch"] for r in cli_runs.metrics(workdir)] == [1, 2, 3, 4]
    want, got = _restore_state(reference, 4), _restore_state(workdir, 4)
    for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(got.step) == 4 * cli_runs.STEPS_PER_EPOCH
    # The logged losses of the resumed epochs are those of the uninterrupted run too.
    drop = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert drop(cli_runs.metrics(workdir)) == drop(cli_runs.metrics(reference))


def test_checkpoint_round_trip_and_digest(tmp_path):
    state = recipe.build(TINY_MODEL, TINY_TRAIN).init_state(jax.random.key(3))
    state = state._replace(step=jnp.asarray(7, jnp.int32))
    mngr = checkpoint.manager(tmp_path)
    checkpoint.save(mngr, 1, state, {"note": "x"})
    mngr.wait_until_finished()
    assert mngr.latest_step() == 1
    make = recipe.build(TINY_MODEL, TINY_TRAIN).init_state
    restored, meta = checkpoint.restore(mngr, checkpoint.abstract(make, jax.random.key(0)))
    assert meta["note"] == "x" and meta[checkpoint.DIGEST_KEY] == checkpoint.state_digest(state)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert checkpoint.read_meta(mngr)["note"] == "x"
    # Restoring onto a mesh gives replicated global arrays with the same bytes.
    mesh = parallel.data_mesh()
    target = checkpoint.abstract(make, jax.random.key(0), sharding=parallel.replicated(mesh))
    on_mesh, _ = checkpoint.restore(mngr, target)
    assert on_mesh.step.sharding == parallel.replicated(mesh)
    assert checkpoint.state_digest(on_mesh) == checkpoint.state_digest(state)
    mngr.close()


def test_cli_help_and_presets(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--devices", "--coordinator", "--resume", "--auto-resume", "--skip-nonfinite", "--set"):
        assert flag in text
    assert cli.main(["presets"]) == 0
    assert "mlp_vae" in capsys.readouterr().out


@pytest.mark.parametrize("items, model, train_", [
    (["hidden=512,256", "obs_sigma=0.2"], {"hidden": (512, 256), "obs_sigma": 0.2}, {}),
    (["latent-dim=8", "batch_size=64", "binarize=dynamic"], {"latent_dim": 8}, {"batch_size": 64, "binarize": "dynamic"}),
    (["image_shape=(32, 32, 3)", "learning_rate=3e-4"], {"image_shape": (32, 32, 3)}, {"learning_rate": 3e-4}),
])
def test_set_overrides_parse_by_field_type(items, model, train_):
    assert cli_inputs.parse_overrides(items) == (model, train_)


@pytest.mark.parametrize("item", ["hidden", "nope=1", "hidden=a,b", "hidden=", "latent_dim=1.5",
                                  "obs_sigma=x", "image_shape=28,28", "kind="])
def test_set_overrides_reject_malformed(item):
    with pytest.raises(errors.UsageError) as info:
        cli_inputs.parse_overrides([item])
    assert "\n" not in str(info.value)


def test_seeds_train_as_one_run_and_load_by_index(tmp_path):
    """--seeds 2: two models in one run; every number of metrics.jsonl is a pair; load picks either model."""
    import vaejax

    workdir = tmp_path / "seeds"
    cli_runs.train(workdir, "--seeds", 2, epochs=2)
    records = cli_runs.metrics(workdir)
    assert [r["epoch"] for r in records] == [1, 2]
    assert len(records[-1]["train_loss"]) == len(records[-1]["test_loss"]) == 2
    assert records[-1]["train_loss"][0] != records[-1]["train_loss"][1]
    first, second = vaejax.load(str(workdir)), vaejax.load(str(workdir), 1)
    assert first.updates == second.updates == 2 * cli_runs.STEPS_PER_EPOCH
    x = np.zeros((2, 28, 28, 1), np.float32)
    assert not np.allclose(np.asarray(first.encode(x)), np.asarray(second.encode(x)))
