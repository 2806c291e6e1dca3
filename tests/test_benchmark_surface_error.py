"""The surface / interior split of benchmarks/surface_error.py."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import fcc111

from conftest import load_benchmark


@pytest.fixture(scope="module")
def mod():
    return load_benchmark("surface_error")


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


def test_coordination_split_and_phase_tell_a_crystal_from_a_disordered_cell(mod):
    from ase.build import bulk

    crystal = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)  # 64 atoms, 4 neighbours at 2.35 A
    assert (mod.coordination(crystal, 2.75) == 4).all()
    moved = crystal.copy()
    moved.positions[:8] += [0.0, 0.0, 1.2]  # eight atoms pushed out of their shell
    frames = [crystal, moved]
    p = mod.phase(frames, 2.75, 4)
    assert p["fold_fraction_first"] == 1.0 and p["fold_fraction_last"] < 0.9
    assert p["msd_last_A2"] == pytest.approx(8 * 1.44 / 64)
    mask = mod.coordination(moved, 2.75) != 4
    f_ref = np.ones((len(moved), 3))
    parts = mod.split_error(f_ref, f_ref + mask[:, None] * 0.5, mask, ("not_4fold", "4fold"))
    assert parts["se_4fold"] == 0.0 and parts["se_not_4fold"] == pytest.approx(mask.sum() * 3 * 0.25)


def test_bad_bond_or_fold_stop_in_one_line(mod, tmp_path):
    with pytest.raises(SystemExit, match="--bond -1.0 --fold 4: give a positive distance"):
        mod.main(["a=b", "--cache", str(tmp_path), "--out", str(tmp_path / "o"), "--split", "coordination",
                  "--bond", "-1"])
