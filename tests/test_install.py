"""The installed distribution: the names it puts on sys.path, and experiment commands in any folder."""

import importlib.metadata
import os
import subprocess
import sys


def test_distribution_installs_only_its_own_top_level_names():
    names = {name for name, dists in importlib.metadata.packages_distributions().items() if "vaejax" in dists}
    assert names == {"vaejax", "vaejax_experiments"}


def test_experiment_commands_run_beside_a_users_experiments_package(tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text("OWNER = 'user'\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True)

    documented = run("-m", "vaejax_experiments.run_all", "--help")
    assert documented.returncode == 0, documented.stderr
    assert "vaejax_experiments.run_all" in documented.stdout
    users = run("-c", "import experiments; print(experiments.OWNER)")
    assert users.stdout.strip() == "user", users.stderr
