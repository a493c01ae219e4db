"""Tests for vaejax.checkpoint's own integrity check: a checkpoint whose files orbax reads without
complaint but whose arrays are another state's, or whose metadata has no SHA-256, is damaged."""

import os
import shutil

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vaejax import checkpoint


def _state(value):
    return {"w": jnp.full((3, 2), value, jnp.float32), "step": jnp.asarray(int(value), jnp.int32)}


@pytest.fixture
def two_checkpoints(tmp_path):
    """A manager holding checkpoints 1 and 2 of two different states of one structure."""
    mngr = checkpoint.manager(str(tmp_path))
    for step in (1, 2):
        checkpoint.save(mngr, step, _state(float(step)), {"run": "test"})
        mngr.wait_until_finished()
    yield mngr, tmp_path
    mngr.close()


def test_both_checkpoints_read_back_as_saved(two_checkpoints):
    mngr, _ = two_checkpoints
    for step in (1, 2):
        state, meta = checkpoint.restore(mngr, _state(0.0), step)
        np.testing.assert_array_equal(np.asarray(state["w"]), np.full((3, 2), float(step), np.float32))
        assert meta[checkpoint.DIGEST_KEY] == checkpoint.state_digest(_state(float(step)))


def test_valid_files_of_another_state_fail_the_digest(two_checkpoints):
    """Orbax reads step 2's arrays under step 1's name without error: only the digest can tell."""
    mngr, root = two_checkpoints
    ckpts = root / "checkpoints"
    shutil.rmtree(ckpts / "1" / "state")
    shutil.copytree(ckpts / "2" / "state", ckpts / "1" / "state")
    mngr.reload()
    with pytest.raises(checkpoint.CheckpointDamaged, match="SHA-256"):
        checkpoint.restore(mngr, _state(0.0), 1)
    step, state, _ = checkpoint.restore_good(mngr, _state(0.0), move_damaged=False)
    assert step == 2  # the newest is intact


def test_a_missing_digest_is_damage(tmp_path):
    mngr = checkpoint.manager(str(tmp_path))
    mngr.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(_state(1.0)),
                                         meta=ocp.args.JsonSave({"run": "test"})))
    mngr.wait_until_finished()
    with pytest.raises(checkpoint.CheckpointDamaged, match="no SHA-256"):
        checkpoint.restore(mngr, _state(0.0), 1)
    moved = []
    step, state, _ = checkpoint.restore_good(mngr, _state(0.0), lambda *a: moved.append(a))
    assert step is None and state is None
    assert len(moved) == 1 and os.path.isdir(moved[0][2])  # set aside, not deleted
    mngr.close()


def _meta_with(mngr, **fields) -> dict:
    """Step 1's true metadata with some fields replaced."""
    meta = mngr.restore(1, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    return {**meta, **fields}


@pytest.mark.parametrize("fields, named", [
    ({"num_models": "4"}, "num_models must be an int"),
    ({"num_models": 10**12}, "num_models must be an int in [0, 65536]"),
    ({"num_models": True}, "num_models must be an int"),
    ({checkpoint.DIGEST_KEY: 5}, "state_sha256 must be a SHA-256 in hex"),
    ({checkpoint.SIGNATURE_KEY: ["['w']"]}, "state_signature must be an object of strings"),
    ({checkpoint.SIGNATURE_KEY: {"['w']": 3}}, "state_signature must be an object of strings"),
    ({"partial": {"loss": ["a", "b"]}}, "partial must be an object of lists of numbers"),
    ({"partial": [1.0]}, "partial must be an object of lists of numbers"),
])
def test_malformed_metadata_is_damage_named_before_any_array_is_read(fields, named, tmp_path):
    """Metadata whose fields vaejax reads have the wrong type or size: CheckpointDamaged naming the field,
    from read_meta and restore alike; restore_good sets it aside and falls back to the checkpoint before."""
    mngr = checkpoint.manager(str(tmp_path))
    checkpoint.save(mngr, 1, _state(1.0), {"run": "test"})
    mngr.wait_until_finished()
    meta = _meta_with(mngr, **fields)
    mngr.save(2, args=ocp.args.Composite(state=ocp.args.StandardSave(_state(1.0)), meta=ocp.args.JsonSave(meta)))
    mngr.wait_until_finished()
    for read in (lambda: checkpoint.read_meta(mngr, 2), lambda: checkpoint.restore(mngr, _state(0.0), 2)):
        with pytest.raises(checkpoint.CheckpointDamaged) as e:
            read()
        assert named in str(e.value) and "update 2" in str(e.value) and len(str(e.value).splitlines()) == 1
    moved = []
    step, state, _ = checkpoint.restore_good(mngr, _state(0.0), lambda *a: moved.append(a))
    assert step == 1 and [m[0] for m in moved] == [2] and os.path.isdir(moved[0][2])
    mngr.close()


def test_metadata_that_is_not_an_object_is_damage(tmp_path):
    mngr = checkpoint.manager(str(tmp_path))
    mngr.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(_state(1.0)), meta=ocp.args.JsonSave([1, 2])))
    mngr.wait_until_finished()
    with pytest.raises(checkpoint.CheckpointDamaged, match="must be a JSON object"):
        checkpoint.read_meta(mngr)
    mngr.close()


def test_written_files_respect_the_umask(tmp_path):
    from vaejax import files

    old = os.umask(0o022)
    try:
        files.write_atomic(str(tmp_path / "a.json"), "{}")
        os.umask(0o077)
        files.write_atomic(str(tmp_path / "b.json"), "{}")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "b.json").st_mode & 0o777 == 0o600
