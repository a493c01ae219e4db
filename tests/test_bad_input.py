"""What a user can get wrong, and what `vaejax train` answers: the table below, one test per row.

Every row must end with exit code 2, exactly one line on stderr naming the problem and the
fix, no traceback, and nothing written: a new --workdir is not created, an existing one is
left as it was. The rows run `cli.main` in-process (stderr captured at the file descriptor);
`test_console_script_answers_in_one_line` checks the installed entry point end to end.

Placeholders: {work} a fresh workdir, {trained} a workdir with a finished tiny run,
{idx} a folder with four valid mnist IDX files that the row then damages, {file} a plain file.
"""

import json
import os
import struct
import subprocess

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cli_runs
from vaejax import cli, data

BASE = ["train", "--dataset", "mnist_5k", "--workdir", "{work}", "--no-progress", "--no-figures"]
TINY_MODEL = ["--set", "hidden=32", "--set", "latent_dim=4", "--batch-size", "200"]

# (id, extra arguments, setup of {idx}, what stderr says: the table of what was tried)
ROWS = [
    ("unknown-preset", ["--preset", "mlp_vea"], None,
     "vaejax: error: unknown preset 'mlp_vea'; choose one of: mlp_ae, mlp_vae, conv_ae, conv_vae, mlp_ae_2d, "
     "mlp_vae_2d, mlp_ae_rgb, mlp_vae_rgb, conv_ae_rgb, conv_vae_rgb"),
    ("unknown-dataset", ["--dataset", "mnsit"], None,
     "vaejax: error: unknown dataset 'mnsit'; choose one of: fashion_mnist, mnist, mnist_5k, cifar10, sample_patches, "
     "or pass the path of an .npz file or a folder of images"),
    ("cifar10-into-28x28x1", ["--dataset", "cifar10", "--preset", "mlp_vae"], None,
     "vaejax: error: cifar10 images are (32, 32, 3) but preset mlp_vae takes (28, 28, 1); use a preset for "
     "(32, 32, 3): mlp_ae_rgb, mlp_vae_rgb, conv_ae_rgb, conv_vae_rgb"),
    ("sample-patches-into-conv", ["--dataset", "sample_patches", "--preset", "conv_vae"], None,
     "vaejax: error: sample_patches images are (32, 32, 3) but preset conv_vae takes (28, 28, 1); use a preset for "
     "(32, 32, 3): mlp_ae_rgb, mlp_vae_rgb, conv_ae_rgb, conv_vae_rgb"),
    ("mnist-into-rgb-preset", ["--dataset", "mnist_5k", "--preset", "conv_vae_rgb"], None,
     "vaejax: error: mnist_5k images are (28, 28, 1) but preset conv_vae_rgb takes (32, 32, 3); use a preset for "
     "(28, 28, 1): mlp_ae, mlp_vae, conv_ae, conv_vae, mlp_ae_2d, mlp_vae_2d"),
    ("latent-zero", ["--latent-dim", "0"], None,
     "vaejax: error: latent_dim must be in [1, 4096], got 0; change --latent-dim"),
    ("latent-huge", ["--latent-dim", "100000"], None,
     "vaejax: error: latent_dim must be in [1, 4096], got 100000; change --latent-dim"),
    ("latent-of-conv-ae", ["--preset", "conv_ae", "--latent-dim", "8"], None,
     "vaejax: error: a conv AE's latent size is its last conv width; use a conv_vae preset to set --latent-dim"),
    ("batch-zero", ["--batch-size", "0"], None,
     "vaejax: error: batch_size must be in [1, 65536], got 0; change --batch-size"),
    ("batch-negative", ["--batch-size", "-8"], None,
     "vaejax: error: batch_size must be in [1, 65536], got -8; change --batch-size"),
    ("batch-not-a-number", ["--batch-size", "12x"], None,
     "vaejax: error: argument --batch-size: invalid int value: '12x' (see `vaejax train --help`)"),
    ("batch-larger-than-dataset", ["--batch-size", "5000"], None,
     "vaejax: error: batch size 5000 is larger than the 4000 training images of mnist_5k; "
     "use --batch-size 4000 or less"),
    ("epochs-zero", ["--epochs", "0"], None, "vaejax: error: --epochs must be at least 1, got 0"),
    ("epochs-negative", ["--epochs", "-3"], None, "vaejax: error: --epochs must be at least 1, got -3"),
    ("epochs-too-many", ["--epochs", "1000000"], None,
     "vaejax: error: epochs must be in [0, 100000], got 1000000; change --epochs"),
    ("lr-zero", ["--lr", "0"], None, "vaejax: error: learning_rate must be in (0, 1], got 0.0; change --lr"),
    ("lr-too-big", ["--lr", "3"], None, "vaejax: error: learning_rate must be in (0, 1], got 3.0; change --lr"),
    ("lr-nan", ["--lr", "nan"], None, "vaejax: error: learning_rate must be in (0, 1], got nan; change --lr"),
    ("lr-not-a-number", ["--lr", "1e-3x"], None,
     "vaejax: error: argument --lr: invalid float value: '1e-3x' (see `vaejax train --help`)"),
    ("seeds-zero", ["--seeds", "0"], None, "vaejax: error: --seeds must be in [1, 1024], got 0"),
    ("devices-zero", ["--devices", "0"], None, "vaejax: error: --devices must be 'all' or a positive integer, got '0'"),
    ("devices-more-than-present", ["--devices", "64"], None,
     "vaejax: error: --devices 64: this process sees only 1 cpu device(s); use --devices 1 or --devices all"),
    ("coordinator-without-count", ["--coordinator", "10.0.0.1:1234"], None,
     "vaejax: error: --coordinator 10.0.0.1:1234 needs --num-processes N and --process-id i "
     "(or JAX_NUM_PROCESSES and JAX_PROCESS_ID)"),
    ("process-id-out-of-range", ["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"], None,
     "vaejax: error: --process-id must be in [0, 1] for --num-processes 2, got 2"),
    ("count-without-coordinator", ["--num-processes", "2", "--process-id", "0"], None,
     "vaejax: error: --num-processes / --process-id need a coordinator; add --coordinator host:port "
     "(or set JAX_COORDINATOR_ADDRESS), or --coordinator auto on a TPU VM or SLURM"),
    ("resume-without-checkpoint", ["--resume"], None,
     "vaejax: error: --resume: no checkpoint in {work}; drop --resume to start a new run"),
    ("resume-other-preset", ["--resume", "--workdir", "{trained}", "--preset", "mlp_ae"] + TINY_MODEL, None,
     "vaejax: error: --resume: {trained} was trained with other settings: preset=mlp_vae (now mlp_ae), "
     "kind=vae (now ae); repeat its flags or choose a new --workdir"),
    ("resume-other-latent", ["--resume", "--workdir", "{trained}"] + TINY_MODEL + ["--set", "latent_dim=8"], None,
     "vaejax: error: --resume: {trained} was trained with other settings: latent_dim=4 (now 8); "
     "repeat its flags or choose a new --workdir"),
    ("existing-run-without-resume", ["--workdir", "{trained}"] + TINY_MODEL, None,
     "vaejax: error: {trained} already holds checkpoints; add --resume to continue or choose a new --workdir"),
    ("workdir-is-a-file", ["--workdir", "{file}"], None,
     "vaejax: error: --workdir {file} is a file; choose a folder"),
    ("data-dir-missing", ["--dataset", "mnist", "--data-dir", "{work}-data"], None,
     "vaejax: error: --data-dir {work}-data is not a folder; pass the folder that holds the data"),
    ("data-dir-without-idx-files", ["--dataset", "mnist", "--data-dir", "{idx}"], "empty -",
     "vaejax: error: mnist (train) not found: no IDX files in {idx}/mnist, {idx}, {cache}/mnist, no prepared TFDS "
     "copy in {idx}, and downloading file:///offline/train-images-idx3-ubyte.gz failed (URLError: <urlopen error "
     "[Errno 2] No such file or directory: '/offline/train-images-idx3-ubyte.gz'>); to get it, rerun with internet "
     "access, or put the four IDX files in a folder named by --data-dir (data_dir=) or $VAEJAX_DATA_DIR"),
    ("idx-file-missing", ["--dataset", "mnist", "--data-dir", "{idx}"], "remove t10k-labels-idx1-ubyte",
     "vaejax: error: IDX files in {idx} are incomplete: t10k-labels-idx1-ubyte missing (raw or .gz); "
     "put all four mnist IDX files there"),
    ("idx-wrong-magic", ["--dataset", "mnist", "--data-dir", "{idx}"], "magic train-images-idx3-ubyte",
     "vaejax: error: {idx}/train-images-idx3-ubyte is not a uint8 IDX file (starts with 0x00000d03, expected "
     "0x000008NN); replace it with the original download"),
    ("idx-truncated", ["--dataset", "mnist", "--data-dir", "{idx}"], "truncate t10k-images-idx3-ubyte",
     "vaejax: error: IDX file {idx}/t10k-images-idx3-ubyte has 7740 data bytes where its header says 7840; "
     "it is truncated or corrupt, replace it with the original download"),
    ("idx-labels-do-not-match", ["--dataset", "mnist", "--data-dir", "{idx}"], "shorten train-labels-idx1-ubyte",
     "vaejax: error: IDX files in {idx} do not match: images (30, 28, 28), labels (29,); "
     "replace them with the original download"),
    ("set-without-equals", ["--set", "hidden"], None,
     "vaejax: error: --set 'hidden': expected KEY=VALUE, e.g. --set hidden=512,256"),
    ("set-unknown-key", ["--set", "hiden=512"], None,
     "vaejax: error: --set hiden=512: unknown key 'hiden'; choose one of: kind, arch, image_shape, hidden, conv_layers, "
     "latent_dim, likelihood, obs_sigma, learning_rate, batch_size, epochs, beta, binarize, warmup_steps, free_bits, iwae_k"),
    ("set-bad-tuple", ["--set", "hidden=512;256"], None,
     "vaejax: error: --set hidden=512;256: expected comma-separated integers, e.g. --set hidden=512,256"),
    ("set-bad-float", ["--set", "obs_sigma=small"], None,
     "vaejax: error: --set obs_sigma=small: expected a number, e.g. --set obs_sigma=0.5"),
    ("set-out-of-range", ["--set", "obs_sigma=-0.2"], None,
     "vaejax: error: obs_sigma must be > 0, got -0.2; change --set obs_sigma=..."),
    ("set-bad-choice", ["--set", "likelihood=poisson"], None,
     "vaejax: error: likelihood must be one of ('bernoulli', 'gaussian', 'gaussian_optimal', 'gaussian_learned', 'continuous_bernoulli', 'mse'), got 'poisson'; "
     "change --set likelihood=..."),
    ("set-wrong-length", ["--set", "image_shape=28,28"], None,
     "vaejax: error: --set image_shape=28,28: expected 3 comma-separated integers, e.g. --set image_shape=28,28,1"),
]


def _write_idx(path, array, magic=None):
    header = magic or bytes([0, 0, 8, array.ndim])
    with open(path, "wb") as f:
        f.write(header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def _idx_folder(folder, damage):
    """Four small valid mnist IDX files (30 train, 10 test images), then one damaged as `damage` says."""
    os.makedirs(folder)
    if damage == "empty -":
        return
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), rng.integers(0, 256, (n, 28, 28), np.uint8))
        _write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), rng.integers(0, 10, (n,), np.uint8))
    action, name = damage.split(" ")
    path = os.path.join(folder, name)
    if action == "remove":
        os.remove(path)
    elif action == "magic":
        blob = open(path, "rb").read()
        open(path, "wb").write(b"\x00\x00\x0d\x03" + blob[4:])
    elif action == "truncate":
        os.truncate(path, os.path.getsize(path) - 100)
    elif action == "shorten":
        _write_idx(path, np.zeros((29,), np.uint8))


def _snapshot(folder):
    """Every path under folder with its size and mtime."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            out[p] = (os.path.getsize(p), os.path.getmtime(p))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return cli_runs.reference(tmp_path_factory.getbasetemp(), 4)


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch):
    for name in ("VAEJAX_DATA_DIR", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test downloads: the IDX publishers' address points at a folder that does not exist."""
    for name in data._IDX_DOWNLOADS:
        monkeypatch.setitem(data._IDX_DOWNLOADS, name, ("file:///offline/", {}))


@pytest.mark.parametrize("extra, damage, expected", [pytest.param(*row[1:], id=row[0]) for row in ROWS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(extra, damage, expected, tmp_path, capfd, request):
    places = {"work": str(tmp_path / "run"), "idx": str(tmp_path / "idx"), "file": str(tmp_path / "a-file"),
              "cache": data._cache_dir(None)}
    if "{trained}" in " ".join(extra):  # a copy: a row that went wrong must not change the shared run
        places["trained"] = cli_runs.copy_run(request.getfixturevalue("trained"), tmp_path / "trained")
    if damage:
        _idx_folder(places["idx"], damage)
    with open(places["file"], "w") as f:
        f.write("not a folder")
    before = {k: _snapshot(v) for k, v in places.items() if k in ("trained", "idx") and os.path.exists(v)}

    rc = cli.main([a.format(**places) for a in BASE + extra])

    captured = capfd.readouterr()
    lines = captured.err.splitlines()
    assert rc == 2, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert lines == [expected.format(**places)]
    assert not os.path.exists(places["work"]), "a workdir was created"
    assert sorted(os.listdir(tmp_path)) == sorted(["a-file"] + [k for k in ("idx", "trained") if k in before])
    assert open(places["file"]).read() == "not a folder"
    assert {k: _snapshot(places[k]) for k in before} == before, "an existing folder was changed"


def test_console_script_answers_in_one_line(tmp_path):
    """The installed entry point, in a fresh process: same one line, exit code 2, nothing written."""
    proc = subprocess.run(cli_runs.command("train", "--dataset", "cifar10", "--workdir", tmp_path / "run"),
                          env=cli_runs.env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [ROWS[2][3]]
    assert "Traceback" not in proc.stderr and os.listdir(tmp_path) == []


@pytest.mark.parametrize("field, value, words", [
    ("seeds", "2", "seeds must be int"),
    ("model", ["mlp"], "model must be dict"),
    ("model.hidden", "wide", "hidden must be a tuple of ints"),
    ("model.hidden", [10**9], "hidden must be at most 16 widths"),
    ("model.image_shape", [100000, 100000, 1], "image_shape must be (H, W, C) with sides in [1, 4096]"),
    ("train.batch_size", 1.5, "batch_size must be int"),
])
def test_a_damaged_run_json_is_one_line_exit_2(field, value, words, trained, tmp_path, capfd):
    """vaejax sample and train --resume on a run.json with a field of the wrong type or size: one line,
    exit 2, nothing allocated from it and nothing written."""
    workdir = cli_runs.copy_run(trained, tmp_path / "run")
    path = os.path.join(workdir, "run.json")
    spec = json.load(open(path))
    *parents, leaf = field.split(".")
    node = spec
    for name in parents:
        node = node[name]
    node[leaf] = value
    json.dump(spec, open(path, "w"))
    before = _snapshot(workdir)
    rc = cli.main(["sample", "--workdir", workdir])
    err = capfd.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err and words in err, err
    # resuming with the run's own flags: refused, by the check of run.json or by the comparison with them
    rc = cli.main(["train", *cli_runs.TINY, "--epochs", "5", "--workdir", workdir, "--resume"])
    err = capfd.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert field.split(".")[-1] in err or words in err, err
    assert _snapshot(workdir) == before


def test_a_run_json_with_an_unknown_field_cannot_be_sampled(trained, tmp_path, capfd):
    workdir = cli_runs.copy_run(trained, tmp_path / "run")
    spec = json.load(open(os.path.join(workdir, "run.json")))
    spec["model"]["widths"] = 3
    json.dump(spec, open(os.path.join(workdir, "run.json"), "w"))
    rc = cli.main(["sample", "--workdir", workdir])
    err = capfd.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "unexpected keyword argument 'widths'" in err, err


def _set_checkpoint_meta(workdir, steps, **fields):
    for step in steps:
        path = os.path.join(workdir, "checkpoints", step, "meta", "metadata")
        meta = json.load(open(path))
        json.dump({**meta, **fields}, open(path, "w"))


def test_malformed_checkpoint_metadata_is_skipped_or_one_line_exit_2(trained, tmp_path, capfd):
    """`vaejax sample` reads past a checkpoint whose metadata has a wrong-typed field, as past any damaged one;
    with every checkpoint's so, one line naming the field, exit 2, nothing allocated or written."""
    workdir = cli_runs.copy_run(trained, tmp_path / "run")
    steps = sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int)
    assert len(steps) > 1
    _set_checkpoint_meta(workdir, steps[-1:], num_models=10**12)
    assert cli.main(["sample", "--workdir", workdir, "--out", str(tmp_path / "s.png")]) == 0
    assert os.path.exists(tmp_path / "s.png")
    capfd.readouterr()
    _set_checkpoint_meta(workdir, steps, num_models="4")
    before = _snapshot(workdir)
    rc = cli.main(["sample", "--workdir", workdir])
    err = capfd.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "num_models must be an int" in err and "train again" in err, err
    assert _snapshot(workdir) == before
    os.remove(os.path.join(workdir, "run.json"))  # resume then compares the flags with the checkpoint's metadata
    before = _snapshot(workdir)
    rc = cli.main(["train", *cli_runs.TINY, "--epochs", "5", "--workdir", workdir, "--resume"])
    err = capfd.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "num_models must be an int" in err, err
    assert _snapshot(workdir) == before


@pytest.mark.parametrize("workdir", ["gs://bucket/runs/x", "s3://b/x", "file:///tmp/x"])
def test_a_url_workdir_is_refused_before_anything_runs(workdir, tmp_path, monkeypatch, capfd):
    """Workdirs are written through the local filesystem: a URL gets one line naming the fix (mount the
    bucket), from the CLI, fit and load, and no local folder named after the scheme appears."""
    import jax

    from vaejax import fit, run

    monkeypatch.chdir(tmp_path)
    rc = cli.main(["train", *cli_runs.TINY, "--epochs", "1", "--workdir", workdir])
    err = capfd.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "mount the bucket" in err and "--workdir" in err, err
    with pytest.raises(fit.WorkdirError, match="URL, and workdirs are written through the local filesystem"):
        fit.fit(lambda p, x, k, s, h: (jnp.sum(p * x), {}), optax.sgd(0.1), lambda k: jnp.ones(()), np.ones((4, 1)),
                workdir, epochs=1, batch_size=2, key=jax.random.key(0))
    with pytest.raises(run.RunNotFound, match="mount the bucket"):
        run.load(workdir)
    assert os.listdir(tmp_path) == []
