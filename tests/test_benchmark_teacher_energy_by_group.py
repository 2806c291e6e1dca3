"""benchmarks/teacher_energy_by_group.py: per-group teacher energies of datasets and held-out runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import load_benchmark
from mlff_distiller.bench.heldout import _store_frames
from mlff_distiller.data.store import DatasetWriter


@pytest.fixture(scope="module")
def mod():
    return load_benchmark("teacher_energy_by_group")


def _labelled(seed: int, sampler: str, T=None):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.05 * (1 + seed % 3), seed=seed)
    atoms.calc = EMT()
    res = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "stress": atoms.get_stress()}
    atoms.calc = SinglePointCalculator(atoms, **res)
    atoms.info["provenance"] = {"source": "bulk:Cu", "sampler": sampler, "params": {"T": T} if T else {},
                                "parent": -1, "group": f"g{seed}", "seed": seed}
    return atoms


def test_groups_energies_and_heldout_runs(mod, tmp_path):
    frames = [_labelled(s, "md", 300.0) for s in range(3)] + [_labelled(s, "rattle") for s in range(3, 5)]
    with DatasetWriter(tmp_path / "d.h5", mode="w") as w:
        w.append(frames)
    run = []
    for s in range(5, 7):
        a = _labelled(s, "md", 300.0)
        a.info["energy_ref"] = a.get_potential_energy()
        a.arrays["forces_ref"] = a.get_forces()
        a.calc = None
        run.append(a)
    _store_frames(tmp_path / "cache", "cu@300K", {"k": 1}, run, {"status": "ok"})
    assert mod.main(["--data", str(tmp_path / "d.h5"), "--heldout-cache", str(tmp_path / "cache"),
                     "--out", str(tmp_path / "o")]) == 0
    groups = json.loads((tmp_path / "o.json").read_text())["groups"]
    md = groups["d.h5"]["Cu md 300 K"]
    expect = [a.get_potential_energy() / len(a) for a in frames[:3]]
    assert md["n"] == 3 and md["energy_per_atom_mean"] == pytest.approx(np.mean(expect), abs=1e-5)
    assert groups["d.h5"]["Cu rattle"]["n"] == 2
    held = groups["held-out teacher MD"]["cu@300K"]
    assert held["n"] == 2 and held["energy_per_atom_mean"] == pytest.approx(
        np.mean([a.info["energy_ref"] / len(a) for a in run]), abs=1e-9)
    f_ref = np.concatenate([a.arrays["forces_ref"] for a in run])
    assert held["force_rms"] == pytest.approx(np.sqrt(np.mean(f_ref**2)))
    assert "| held-out teacher MD | cu@300K | 2 |" in (tmp_path / "o.md").read_text()


def test_bad_input_stops_in_one_line(mod, tmp_path):
    with pytest.raises(SystemExit, match="no dataset file .*nope.h5"):
        mod.main(["--data", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="no cached held-out runs in"):
        mod.main(["--heldout-cache", str(tmp_path), "--out", str(tmp_path / "o")])
