"""The one place benchmark scripts write NAME.json + NAME.md (benchmarks/_results.py)."""

from __future__ import annotations

import json

import numpy as np

from conftest import load_benchmark

save = load_benchmark("_results").save


def test_save_writes_both_files_side_by_side(tmp_path):
    md = save(tmp_path / "deep" / "run_1.5K", {"x": np.float64(0.25), "n": 3}, "# table", default=float)
    assert md == tmp_path / "deep" / "run_1.5K.md"
    assert md.read_text() == "# table\n"
    assert json.loads((tmp_path / "deep" / "run_1.5K.json").read_text()) == {"x": 0.25, "n": 3}


def test_save_accepts_a_stem_with_a_suffix_and_replaces_old_results(tmp_path):
    save(tmp_path / "r.json", {"v": 1}, "old\n")
    save(tmp_path / "r.md", {"v": 2}, "new\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]
    assert json.loads((tmp_path / "r.json").read_text()) == {"v": 2}
    assert (tmp_path / "r.md").read_text() == "new\n"
