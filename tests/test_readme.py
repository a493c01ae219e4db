"""Every Python block of the README runs as written, each in a fresh namespace, and trains."""

import os
import re

import numpy as np
import pytest

from conftest import require_offline

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def _blocks() -> list[str]:
    with open(README) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


@pytest.fixture(scope="module", autouse=True)
def needs_fashion_mnist():
    require_offline("fashion_mnist")


def _exec(i: int, namespace: dict) -> dict:
    """Block i of the README, run in namespace (a block that continues another runs in its namespace)."""
    exec(compile(_blocks()[i], f"README.md block {i}", "exec"), namespace)
    return namespace


def test_the_readme_has_the_blocks_these_tests_run():
    assert len(_blocks()) == 3


def test_library_example_trains(capsys):
    ns = _exec(0, {})
    assert int(ns["state"].step) == 50
    # An untrained mlp_vae scores about 543 nats (784 * log 2); 50 Adam steps take it well below.
    assert float(ns["metrics"]["loss"]) < 400
    assert "loss after 50 steps" in capsys.readouterr().out


def test_bring_your_own_model_then_fit_and_load_examples(tmp_path, monkeypatch, capsys):
    """Block 1 (your own model through the engine), then block 2, which continues it (fit, resume, load)."""
    monkeypatch.chdir(tmp_path)  # block 2 writes runs/my_vae
    ns = _exec(1, {})
    assert int(ns["state"].step) == 8 + 16  # eight steps, then one epoch of 2048 / 128 batches
    kl = np.asarray(ns["metrics"]["kl"])
    loss = np.asarray(ns["metrics"]["loss"])
    assert kl.shape == loss.shape == (4, 16) and np.all(np.isfinite(loss))
    assert np.all(loss[:, -1] < 0.9 * 543)  # below an untrained model's 784 log 2 nats
    assert "KL by beta:" in capsys.readouterr().out

    _exec(2, ns)
    result = ns["result"]
    assert result.resumed_from == 2 * 16 and [r["epoch"] for r in result.records] == [1, 2, 3]
    assert (tmp_path / "runs" / "my_vae" / "metrics.jsonl").exists()
    out = capsys.readouterr().out
    nll = float(out.split("IWAE NLL, k=100:")[1].split()[0])
    assert 0 < nll < 543  # below an untrained model's 784 log 2 nats
