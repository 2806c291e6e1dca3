"""benchmarks/error_by_sampler.py: groups and its one-line input errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def mod():
    sys.path.insert(0, str(BENCH))  # the script imports its sibling _results.py
    try:
        spec = importlib.util.spec_from_file_location("bench_error_by_sampler", BENCH / "error_by_sampler.py")
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
        return m
    finally:
        sys.path.remove(str(BENCH))


def test_groups_are_sampler_and_md_temperature(mod):
    assert mod.group_of({"sampler": "md", "params": {"T": 1200.0, "step": 5}}) == "md 1200 K"
    assert mod.group_of({"sampler": "rattle", "params": {"stdev": 0.1}}) == "rattle"
    assert mod.group_of({"sampler": "none", "params": {}}) == "none"


def test_missing_data_stops_in_one_line(mod, tmp_path):
    with pytest.raises(SystemExit, match="no dataset file .*nope.h5: give labelled .h5 files"):
        mod.main(["a=b", "--data", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "o")])
