"""The surface / interior split of benchmarks/surface_error.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import fcc111

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def mod():
    sys.path.insert(0, str(BENCH))  # the script imports its sibling _results.py
    try:
        spec = importlib.util.spec_from_file_location("bench_surface_error", BENCH / "surface_error.py")
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
        return m
    finally:
        sys.path.remove(str(BENCH))


def test_surface_atoms_are_the_outer_layers_and_the_error_splits(mod):
    slab = fcc111("Cu", size=(2, 2, 6), vacuum=6.0)  # 6 layers, 4 atoms each, 2.08 A apart
    z = slab.positions[:, 2]
    mask = mod.surface_mask(slab.positions, 1.0)
    assert mask.sum() == 8 and set(np.round(z[mask], 3)) == {round(z.min(), 3), round(z.max(), 3)}
    assert mod.surface_mask(slab.positions, 2.5).sum() == 16  # two layers on each side
    rng = np.random.default_rng(0)
    f_ref = rng.normal(size=(len(slab), 3))
    f_pred = f_ref.copy()
    f_pred[mask] += 0.1  # an error on the surface atoms only
    parts = mod.split_error(f_ref, f_pred, mask)
    assert parts["se_interior"] == 0.0 and parts["se_surface"] == pytest.approx(8 * 3 * 0.01)
    assert parts["sr_surface"] + parts["sr_interior"] == pytest.approx(float((f_ref ** 2).sum()))


def test_bad_depth_and_missing_runs_stop_in_one_line(mod, tmp_path):
    with pytest.raises(SystemExit, match="--depth 0.0: give a positive depth"):
        mod.main(["a=b", "--cache", str(tmp_path), "--out", str(tmp_path / "o"), "--depth", "0"])
    with pytest.raises(SystemExit, match="no cached runs matching 'slab'"):
        mod.main(["a=b", "--cache", str(tmp_path), "--out", str(tmp_path / "o")])
