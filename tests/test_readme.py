"""The README and docs/: every Python block runs as written, in a fresh namespace or continuing the
block it says it continues, and does what its text says; the README's quickstart commands run;
the README stays short; every relative link resolves."""

import glob
import os
import re
import shlex
import subprocess

import numpy as np
import pytest

import cli_runs
from conftest import require_offline

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
README = "README.md"
README_MAX_LINES = 200

# The Python blocks each file holds. Every one is run by a test below; a block added without a test
# fails test_every_python_block_is_run_by_a_test.
PYTHON_BLOCKS = {README: 4, "docs/library.md": 3}

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
UNTRAINED_NATS = 543  # an untrained model on 28x28 images: about 784 log 2 nats per image


def _doc_files() -> list[str]:
    """README.md and every page of docs/, as paths relative to the repository."""
    pages = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
    return [README, *pages]


def _read(name: str) -> str:
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def _blocks(name: str, lang: str = "python") -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _read(name), re.S)


def _block(name: str, marker: str, lang: str = "python") -> str:
    """The one `lang` block of file `name` that contains `marker`."""
    found = [b for b in _blocks(name, lang) if marker in b]
    assert len(found) == 1, f"{name}: {len(found)} {lang} blocks contain {marker!r}, expected 1"
    return found[0]


def _exec(name: str, marker: str, namespace: dict) -> dict:
    """Run the block of `name` holding `marker` in namespace (a block that continues another runs in its namespace)."""
    exec(compile(_block(name, marker), f"{name} block with {marker!r}", "exec"), namespace)
    return namespace


@pytest.fixture
def fashion_mnist():
    require_offline("fashion_mnist")


def test_every_python_block_is_run_by_a_test():
    found = {name: len(_blocks(name)) for name in _doc_files()}
    expected = {name: PYTHON_BLOCKS.get(name, 0) for name in found}
    assert found == expected, "a Python block was added or removed: give each new one a test in tests/test_readme.py"
    assert set(PYTHON_BLOCKS) <= set(found)


def test_readme_is_short_and_links_every_page_of_docs():
    lines = _read(README).splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    linked = {os.path.normpath(target.split("#")[0]) for target in _links(README)}
    assert set(_doc_files()[1:]) <= linked, "every page of docs/ is linked from the README"


def _links(name: str) -> list[str]:
    """The targets of the Markdown links of file `name`, outside code."""
    text = re.sub(r"```.*?```", "", _read(name), flags=re.S)
    return LINK.findall(re.sub(r"`[^`\n]*`", "", text))


def _slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_resolves():
    for name in _doc_files():
        for target in _links(name):
            if re.match(r"[a-z]+:", target):
                continue  # http(s) and the like: not checked offline
            path, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(name), path)) if path else name
            assert os.path.exists(os.path.join(ROOT, resolved)), f"{name}: link to {target}, which does not exist"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", _read(resolved), re.M)
                assert anchor in {_slug(h) for h in headings}, f"{name}: link to {target}, no such heading"


def test_quickstart_commands_then_the_run_back_in_python(fashion_mnist, tmp_path, monkeypatch, capsys):
    """The README's quickstart as written: `vaejax train`, `vaejax sample`, then its Python block."""
    commands = [shlex.split(line, comments=True) for line in _block(README, "vaejax sample", "bash").splitlines()]
    commands = [c for c in commands if c]
    assert [c[:2] for c in commands] == [["vaejax", "train"], ["vaejax", "sample"]]
    for c in commands:
        proc = subprocess.run(cli_runs.command(*c[1:]), cwd=tmp_path, env=cli_runs.env(), capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"{shlex.join(c)} failed:\n{proc.stdout}\n{proc.stderr}"
    workdir = tmp_path / "runs" / "quickstart"
    for written in ("run.json", "metrics.jsonl", "checkpoints", "samples.png", "reconstructions.png"):
        assert (workdir / written).exists(), written

    monkeypatch.chdir(tmp_path)
    ns = _exec(README, 'vaejax.load("runs/quickstart")', {})
    assert ns["z_ND"].shape == (100, 20) and ns["x_hat"].shape == ns["x_N"].shape == (100, 28, 28, 1)
    assert ns["images"].shape == (16, 28, 28, 1)
    out = capsys.readouterr().out
    assert f"{3 * (60000 // 128)} updates; codes (100, 20)" in out  # three epochs of 468 batches
    nll = float(out.split("IWAE NLL")[1].split()[0])
    assert 0 < nll < UNTRAINED_NATS


def test_library_example_trains(fashion_mnist, capsys):
    ns = _exec("docs/library.md", "loss after", {})
    assert int(ns["state"].step) == 50
    # An untrained mlp_vae scores about 543 nats (784 * log 2); 50 Adam steps take it well below.
    assert float(ns["metrics"]["loss"]) < 400
    assert "loss after 50 steps" in capsys.readouterr().out


def test_own_model_then_many_models_then_fit_and_load(fashion_mnist, tmp_path, monkeypatch, capsys):
    """The README's own model through the engine; docs/library.md's block that continues it (four
    seeds, four betas); then the README's fit block, which continues it too (fit, resume, load)."""
    monkeypatch.chdir(tmp_path)  # the fit block writes runs/my_vae
    ns = _exec(README, "class MyVAE", {})
    assert int(ns["state"].step) == 8 + 16  # eight steps, then one epoch of 2048 / 128 batches
    assert np.asarray(ns["metrics"]["loss"]).shape == (16,) and np.all(np.isfinite(ns["metrics"]["loss"]))

    _exec("docs/library.md", "KL by beta", ns)
    kl = np.asarray(ns["metrics"]["kl"])
    loss = np.asarray(ns["metrics"]["loss"])
    assert kl.shape == loss.shape == (4, 16) and np.all(np.isfinite(loss))
    assert np.all(loss[:, -1] < 0.9 * UNTRAINED_NATS)
    assert "KL by beta:" in capsys.readouterr().out

    _exec(README, "fit.fit(objective", ns)
    result = ns["result"]
    assert result.resumed_from == 2 * 16 and [r["epoch"] for r in result.records] == [1, 2, 3]
    assert (tmp_path / "runs" / "my_vae" / "metrics.jsonl").exists()
    out = capsys.readouterr().out
    nll = float(out.split("IWAE NLL, k=100:")[1].split()[0])
    assert 0 < nll < UNTRAINED_NATS


def test_own_data_in_python(fashion_mnist, tmp_path, monkeypatch, capsys):
    """The README's own-data block on a .npz of uint8 NHWC images, as it describes them."""
    from vaejax import data

    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "my_images.npz", images=data.load("fashion_mnist", "test").images[:1200])
    ns = _exec(README, "my_images.npz", {})
    records = ns["result"].records
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert 0 < records[-1]["test_loss"] < 0.9 * UNTRAINED_NATS
    assert ns["run"].reconstruct(ns["x_N"][:8]).shape == (8, 28, 28, 1)
    assert "test loss" in capsys.readouterr().out


def test_the_nnx_example_trains_and_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # it writes runs/nnx_vae
    ns = _exec("docs/library.md", "objectives.Nnx(", {})
    losses = [r["train_loss"] for r in ns["result"].records]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert "nnx: test codes (4, 8)" in capsys.readouterr().out
    assert (tmp_path / "runs" / "nnx_vae" / "metrics.jsonl").exists()
