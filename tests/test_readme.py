"""The README's library example runs as written and trains."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_library_example_trains(capsys):
    from vaejax import data

    try:
        data.load("fashion_mnist", "train")
    except data.DatasetError:
        pytest.skip("fashion_mnist is not available offline here")
    with open(README) as f:
        code = re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    state, metrics = namespace["state"], namespace["metrics"]
    assert int(state.step) == 50
    # An untrained mlp_vae scores about 543 nats (784 * log 2); 50 Adam steps take it well below.
    assert float(metrics["loss"]) < 400
    assert "loss after 50 steps" in capsys.readouterr().out
