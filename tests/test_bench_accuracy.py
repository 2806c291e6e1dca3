"""Accuracy metrics of the bench: equal to a direct numpy computation; exact on scaled EMT."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from mlff_distiller.bench.accuracy import accuracy_metrics, evaluate, load_labelled
from mlff_distiller.errors import DatasetError


class ScaledEMT(Calculator):
    """EMT with energy and forces multiplied by ``scale``: a 'student' with a known error."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale
        self.inner = EMT()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms.copy()
        a.calc = self.inner
        self.results = {"energy": self.scale * a.get_potential_energy(), "forces": self.scale * a.get_forces()}


def _direct_angle(fr, fp, min_force):
    angles = []
    for a, b in zip(fr, fp):
        if np.linalg.norm(a) < min_force:
            continue
        c = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        angles.append(np.degrees(np.arccos(np.clip(c, -1, 1))))
    return np.mean(angles)


def test_metrics_equal_direct_numpy_computation():
    rng = np.random.default_rng(3)
    records = []
    sizes = [(3, "mol:A", "rattle"), (2, "mol:B", "md"), (4, "mol:A", "md")]
    for n, typ, sampler in sizes:
        fr = rng.normal(size=(n, 3))
        fp = fr + 0.3 * rng.normal(size=(n, 3))
        records.append(
            {
                "numbers": rng.choice([1, 6, 8], size=n),
                "energy_ref": float(rng.normal()),
                "energy_pred": float(rng.normal()),
                "forces_ref": fr,
                "forces_pred": fp,
                "type": typ,
                "sampler": sampler,
            }
        )
    # one atom with a vanishing teacher force: excluded from the angle only
    records[0]["forces_ref"][0] = 0.0
    m = accuracy_metrics(records, min_force=1e-3)

    fr = np.concatenate([r["forces_ref"] for r in records])
    fp = np.concatenate([r["forces_pred"] for r in records])
    z = np.concatenate([r["numbers"] for r in records])
    e_mae = np.mean([abs(r["energy_pred"] - r["energy_ref"]) / len(r["numbers"]) for r in records])
    assert m["n_structures"] == 3 and m["n_atoms"] == 9
    assert m["energy_mae_per_atom"] == pytest.approx(e_mae, rel=1e-12)
    assert m["force_mae"] == pytest.approx(np.abs(fp - fr).mean(), rel=1e-12)
    rmse = np.sqrt(((fp - fr) ** 2).mean())
    assert m["force_rmse"] == pytest.approx(rmse, rel=1e-12)
    assert m["force_rmse_relative"] == pytest.approx(rmse / np.sqrt((fr**2).mean()), rel=1e-12)
    assert m["force_angle_mean_deg"] == pytest.approx(_direct_angle(fr, fp, 1e-3), rel=1e-12)
    for sym, zz in (("H", 1), ("C", 6), ("O", 8)):
        if (z == zz).any():
            sel = z == zz
            assert m["per_element"][sym]["n_atoms"] == sel.sum()
            assert m["per_element"][sym]["force_mae"] == pytest.approx(np.abs(fp[sel] - fr[sel]).mean(), rel=1e-12)
    a = [records[0], records[2]]
    fa = np.concatenate([r["forces_ref"] for r in a])
    pa = np.concatenate([r["forces_pred"] for r in a])
    assert m["per_type"]["mol:A"]["n_structures"] == 2
    assert m["per_type"]["mol:A"]["force_rmse"] == pytest.approx(np.sqrt(((pa - fa) ** 2).mean()), rel=1e-12)
    assert m["per_type"]["mol:A"]["energy_mae_per_atom"] == pytest.approx(
        np.mean([abs(r["energy_pred"] - r["energy_ref"]) / len(r["numbers"]) for r in a]), rel=1e-12
    )
    assert set(m["per_sampler"]) == {"rattle", "md"}


def test_zero_student_force_counts_as_ninety_degrees():
    rec = {"numbers": [1, 1], "energy_ref": 0.0, "energy_pred": 0.0,
           "forces_ref": np.array([[1.0, 0, 0], [0, 1.0, 0]]), "forces_pred": np.array([[0.0, 0, 0], [0, -2.0, 0]])}
    m = accuracy_metrics([rec])
    assert m["force_angle_mean_deg"] == pytest.approx((90 + 180) / 2)


def _labelled_cu_frames(n=4):
    frames = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
        if k % 2:
            a[0].symbol = "Ag"
        a.rattle(0.1, seed=k)
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        a.info["provenance"] = {"source": "bulk:Cu-fcc" if k % 2 == 0 else "bulk:CuAg", "sampler": "rattle"}
        frames.append(a)
    return frames


def test_scaled_emt_student_has_exactly_the_known_error():
    frames = _labelled_cu_frames()
    scale = 1.1
    m, parity = evaluate(ScaledEMT(scale), frames)
    assert m["force_rmse_relative"] == pytest.approx(scale - 1, rel=1e-9)
    assert m["force_angle_mean_deg"] == pytest.approx(0.0, abs=1e-5)
    e_ref = np.array([a.calc.results["energy"] / len(a) for a in frames])
    assert m["energy_mae_per_atom"] == pytest.approx(np.mean(np.abs(e_ref)) * (scale - 1), rel=1e-9)
    assert set(m["per_element"]) == {"Cu", "Ag"}
    assert set(m["per_type"]) == {"bulk:Cu-fcc", "bulk:CuAg"}
    np.testing.assert_allclose(parity["forces_pred"], scale * parity["forces_ref"], rtol=1e-9, atol=1e-12)
    # a perfect student
    m1, _ = evaluate(EMT(), frames)
    assert m1["force_mae"] < 1e-12 and m1["energy_mae_per_atom"] < 1e-12


def test_load_labelled_from_extxyz_and_store(tmp_path):
    frames = _labelled_cu_frames(3)
    from ase.io import write

    path = tmp_path / "held.extxyz"
    write(path, frames)
    got = load_labelled(str(path))
    assert len(got) == 3
    np.testing.assert_allclose(got[1].calc.results["forces"], frames[1].calc.results["forces"])
    assert len(load_labelled(str(path), max_structures=2)) == 2

    store = pytest.importorskip("mlff_distiller.data.store")
    h5 = tmp_path / "held.h5"
    with store.DatasetWriter(str(h5), label_fields=("energy", "forces")) as w:
        w.append(frames)
    got = load_labelled(str(h5))
    assert len(got) == 3
    np.testing.assert_allclose(got[2].calc.results["forces"], frames[2].calc.results["forces"], atol=1e-5)
    m, _ = evaluate(EMT(), got)
    assert m["force_mae"] < 1e-4
    assert set(m["per_type"]) == {"bulk:Cu-fcc", "bulk:CuAg"}


def test_bad_datasets_raise_one_line_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_labelled(str(tmp_path / "nope.h5"))
    unlabelled = [Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]])]
    with pytest.raises(DatasetError, match="no structures with force labels"):
        load_labelled(unlabelled)
