"""Tests for vaejax.provenance: a commit is recorded only for the repository whose top level holds vaejax."""

import os
import subprocess

import pytest

from vaejax import provenance


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                   env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                            GIT_COMMITTER_EMAIL="t@t"))


@pytest.fixture
def outer_repo(tmp_path):
    """A repository with one commit that holds a folder standing for site-packages."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "README").write_text("someone else's project\n")
    _git(tmp_path, "add", "README")
    _git(tmp_path, "commit", "-q", "-m", "first")
    (tmp_path / "site-packages").mkdir()
    return tmp_path


def test_a_copy_inside_another_repository_records_no_commit(outer_repo):
    assert provenance._git_state(str(outer_repo / "site-packages")) == (None, None)


def test_the_repositorys_own_root_records_its_commit(outer_repo):
    commit, dirty = provenance._git_state(str(outer_repo))
    assert len(commit) == 40 and dirty is False
    (outer_repo / "README").write_text("changed\n")
    assert provenance._git_state(str(outer_repo)) == (commit, True)


def test_the_summary_names_an_uninstalled_source_tree_by_its_commit_alone():
    p = {"versions": {"python": "3.12.3", "jax": "0.11.2", "jaxlib": None, "vaejax": None},
         "git_commit": "0123abcd" * 5, "git_dirty": False, "device": "gpu (NVIDIA H100 80GB HBM3) x1"}
    assert provenance.summary(p) == ("vaejax, not installed (commit 0123abcd, clean), Python 3.12.3, jax 0.11.2, "
                                     "on gpu (NVIDIA H100 80GB HBM3) x1")
    installed = dict(p, versions=dict(p["versions"], vaejax="0.1.0"))
    assert provenance.summary(installed).startswith("vaejax 0.1.0 (commit 0123abcd, clean), Python 3.12.3")
