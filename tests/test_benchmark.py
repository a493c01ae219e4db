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
                           "epoch", "devices", "--windows", "5", "--json", str(out)],
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
