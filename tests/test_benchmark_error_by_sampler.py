"""benchmarks/error_by_sampler.py: groups and its one-line input errors."""

from __future__ import annotations

import pytest

from conftest import load_benchmark


@pytest.fixture(scope="module")
def mod():
    return load_benchmark("error_by_sampler")


def test_groups_are_sampler_and_md_temperature(mod):
    assert mod.group_of({"sampler": "md", "params": {"T": 1200.0, "step": 5}}) == "md 1200 K"
    assert mod.group_of({"sampler": "rattle", "params": {"stdev": 0.1}}) == "rattle"
    assert mod.group_of({"sampler": "none", "params": {}}) == "none"


def test_missing_data_stops_in_one_line(mod, tmp_path):
    with pytest.raises(SystemExit, match="no dataset file .*nope.h5: give labelled .h5 files"):
        mod.main(["a=b", "--data", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "o")])
