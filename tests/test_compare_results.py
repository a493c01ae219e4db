"""tools/compare_results.py: equal results pass, timings are ignored, a moved number is found."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import compare_results  # noqa: E402


def _write(folder, metrics):
    os.makedirs(folder / "exp", exist_ok=True)
    (folder / "exp" / "metrics.json").write_text(json.dumps(metrics))


def test_timings_are_ignored_and_a_moved_number_is_found(tmp_path, capsys):
    before = {"auroc": [0.5, 0.75], "seconds": 3.0, "provenance": {"git_commit": "a"}, "n": 10}
    _write(tmp_path / "a", before)
    _write(tmp_path / "b", dict(before, seconds=9.0, provenance={"git_commit": "b"}))
    assert compare_results.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    _write(tmp_path / "c", dict(before, auroc=[0.5, 0.75 * (1 + 1e-7)]))
    assert compare_results.main([str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    assert "/auroc[1]" in capsys.readouterr().out
    assert compare_results.main([str(tmp_path / "a"), str(tmp_path / "c"), "--rtol", "1e-6"]) == 0
