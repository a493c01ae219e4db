"""The benchmark's records carry what docs/benchmark.md promises (correctness only; no timing asserted)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import CHEAP_COMPILE
from vaejax import data


def test_epoch_and_devices_records(tmp_path):
    from vaejax_experiments import benchmark

    try:
        data.load(benchmark.DATASET, "train")
    except data.DatasetError:
        pytest.skip("the benchmark's dataset is not available offline here")
    out = tmp_path / "bench.json"
    # From its command line, compiled as users compile it: under the suite's cheap-compile flag
    # (conftest.py) its whole epochs would run several times slower.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f != CHEAP_COMPILE]
    env.update(PYTHONPATH=os.getcwd(), **({"XLA_FLAGS": " ".join(flags)} if flags else {}))
    proc = subprocess.run([sys.executable, "-m", "vaejax_experiments.benchmark", "--preset", "mlp_vae", "--modes",
                           "epoch", "devices", "--windows", "5", "--images", "12800", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = json.loads(out.read_text())
    assert [r["mode"] for r in records] == ["epoch", "devices"]
    for r in records:
        for key in ("preset", "batch", "devices", "seeds", "images_per_s", "images_per_s_min", "images_per_s_max",
                    "compile_s", "backend", "device", "jax"):
            assert key in r, key
        assert r["images_per_s_min"] <= r["images_per_s"] <= r["images_per_s_max"]
        assert r["compile_s"] > 0
    assert "images/s" in proc.stdout  # the printed table
    assert "train (12800 images)" in proc.stdout


def test_the_conv_profile_finds_each_layer_of_a_step_with_its_matmul():
    from vaejax import config
    from vaejax_experiments import conv_profile

    found = conv_profile.conv_layers(config.preset("conv_ae"), batch=2)
    # the notes' stack, encoder then decoder, as one update sees it (vmapped examples: a batch axis of 2)
    assert [(f.name, f.x_shape[1:], f.out_shape()[1:]) for f in found] == [
        ("Conv_0 conv", (28, 28, 1), (14, 14, 16)), ("Conv_1 conv", (14, 14, 16), (7, 7, 32)),
        ("Conv_2 conv", (7, 7, 32), (1, 1, 64)), ("ConvTranspose_0 conv_transpose", (1, 1, 64), (7, 7, 32)),
        ("ConvTranspose_1 conv_transpose", (7, 7, 32), (14, 14, 16)),
        ("ConvTranspose_2 conv_transpose", (14, 14, 16), (28, 28, 1))]
    # each layer's multiply-adds: a conv's per output pixel, a transposed conv's per input pixel
    assert [f.matmul_dims() for f in found] == [(2 * 14 * 14, 9, 16), (2 * 7 * 7, 9 * 16, 32), (2, 49 * 32, 64),
                                                (2, 64, 49 * 32), (2 * 7 * 7, 32, 9 * 16), (2 * 14 * 14, 16, 9)]
    row = conv_profile.profile_layer(found[1], windows=1)
    assert row["flops"] == 6 * 98 * 144 * 32 and all(row[k] > 0 for k in ("fast", "lax", "matmul"))


def test_the_op_profile_ranks_the_updates_xla_ops_by_their_traced_time():
    from conftest import TINY_CONV_AE
    from vaejax_experiments import conv_profile

    ops = conv_profile.op_profile(TINY_CONV_AE, batch=8, path="fast", updates=2, top=5)
    assert len(ops) == 5 and all(op["ms"] > 0 for op in ops)
    assert [op["ms"] for op in ops] == sorted((op["ms"] for op in ops), reverse=True)
    assert any("coder/Conv" in op["source"] for op in ops)  # the metadata names the layer an op belongs to


@pytest.mark.parametrize("argv, names", [(["--images", "100"], "--images"), (["--windows", "4"], "--windows"),
                                         (["--seeds", "0"], "--seeds")])
def test_bad_flags_exit_2_with_one_line_naming_the_flag(argv, names, capsys):
    from vaejax_experiments import benchmark

    with pytest.raises(SystemExit) as e:
        benchmark.parse_args(["--preset", "mlp_vae", *argv])
    assert e.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("python -m vaejax_experiments.benchmark: error:") and names in last
