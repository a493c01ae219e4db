"""The benchmark's records carry what the README promises (correctness only; no timing asserted)."""

import pytest

from vaejax import data


def test_epoch_and_devices_records(tmp_path):
    from vaejax_experiments import benchmark

    try:
        data.load(benchmark.DATASET, "train")
    except data.DatasetError:
        pytest.skip("the benchmark's dataset is not available offline here")
    out = tmp_path / "bench.json"
    records = benchmark.main(["--preset", "mlp_vae", "--modes", "epoch", "devices", "--windows", "5",
                              "--json", str(out)])
    assert [r["mode"] for r in records] == ["epoch", "devices"]
    for r in records:
        for key in ("preset", "batch", "devices", "seeds", "images_per_s", "images_per_s_min", "images_per_s_max",
                    "compile_s", "backend", "device", "jax"):
            assert key in r, key
        assert r["images_per_s_min"] <= r["images_per_s"] <= r["images_per_s_max"]
        assert r["compile_s"] > 0
    assert out.exists()
