"""The Numba inference kernel (student/fast.py) against the torch model it replaces in MD.

The kernel's backward pass is derived by hand, so every layer layout is compared with the
torch model's autograd forces and stress: first layer only, vector layers, a vector last
message, a scalar-only last message; float64 to 1e-10 and float32 to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.fd import calculate_numerical_forces

from mlff_distiller.data.normalization import NormalizationStats
from mlff_distiller.errors import UserError
from mlff_distiller.student import StudentCalculator, StudentConfig, build_student, export_torchscript

pytest.importorskip("numba")  # a dependency; the torch backend is what runs without it

CUTOFF = 4.0
STATS = NormalizationStats(
    element_energies={1: -1.1, 6: -5.3, 8: -3.7, 14: -4.6}, energy_mean=0.02, energy_std=0.05,
    force_rms=0.7, avg_num_neighbors=12.0, cutoff=CUTOFF,
)


def make_model(dtype="float64", **kw):
    torch.manual_seed(7)
    kw = {"num_features": 16, "num_layers": 3, "num_rbf": 8, **kw}
    model = build_student(StudentConfig(cutoff=CUTOFF, dtype=dtype, **kw), STATS).eval()
    with torch.no_grad():  # sizeable outputs, and non-trivial biases everywhere
        model.readout[-1].weight.mul_(20.0)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def structures():
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=3)
    si = bulk("Si", "diamond", 5.43, cubic=True)
    cell = si.cell.array.copy()
    cell[1] += [0.6, 0.0, 0.0]
    cell[2] += [0.3, -0.4, 0.0]
    si.set_cell(cell, scale_atoms=True)
    si.rattle(0.08, seed=5)
    small = bulk("Si", "diamond", 5.43)  # 2-atom primitive cell, smaller than the cutoff
    small.rattle(0.05, seed=6)
    lonely = Atoms("CO", positions=[[0, 0, 0], [9.0, 0, 0]])  # no neighbours at all
    return {"molecule": mol, "triclinic-crystal": si, "small-cell": small, "no-edges": lonely}


def both(model, atoms, skin):
    """(torch results, numba results) of two calculators on the same structure."""
    out = []
    for backend in ("torch", "numba"):
        a = atoms.copy()
        a.calc = StudentCalculator(model, backend=backend, skin=skin)
        res = {"energy": a.get_potential_energy(), "forces": a.get_forces()}
        if a.pbc.all():
            res["stress"] = a.get_stress()
        assert a.calc.backend == backend
        out.append(res)
    return out


LAYOUTS = {
    "one-layer": {"num_layers": 1},
    "two-layers-vector-last": {"num_layers": 2, "scalar_last_message": False},
    "three-layers-scalar-last": {"num_layers": 3, "scalar_last_message": True},
    "three-layers-vector-last": {"num_layers": 3, "scalar_last_message": False},
    "two-layers-angular": {"num_layers": 2, "angular_channels": 3},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_numba_equals_torch_float64(layout):
    model = make_model("float64", **LAYOUTS[layout])
    for name, atoms in structures().items():
        ref, fast = both(model, atoms, skin=0.7)  # the skin list holds pairs beyond the cutoff
        assert fast["energy"] == pytest.approx(ref["energy"], rel=1e-12, abs=1e-10), name
        np.testing.assert_allclose(fast["forces"], ref["forces"], atol=1e-10, err_msg=name)
        if "stress" in ref:
            np.testing.assert_allclose(fast["stress"], ref["stress"], atol=1e-11, err_msg=name)
        if name != "no-edges":
            assert np.abs(ref["forces"]).max() > 1e-2  # the comparison is not between zeros


def test_numba_equals_torch_float32_and_finite_differences():
    model = make_model("float32", num_layers=2, scalar_last_message=True)
    for name, atoms in structures().items():
        ref, fast = both(model, atoms, skin=0.5)
        assert fast["energy"] == pytest.approx(ref["energy"], abs=1e-4 * len(atoms)), name
        scale = max(np.abs(ref["forces"]).max(), 1e-3)
        np.testing.assert_allclose(fast["forces"], ref["forces"], atol=2e-5 * scale, err_msg=name)
        if "stress" in ref:
            np.testing.assert_allclose(fast["stress"], ref["stress"], atol=2e-5 * np.abs(ref["stress"]).max())
    # and the float64 kernel against finite differences of its own energy
    atoms = structures()["triclinic-crystal"]
    for extra in ({}, {"angular_channels": 3}):
        atoms.calc = StudentCalculator(make_model("float64", num_layers=2, **extra), backend="numba")
        np.testing.assert_allclose(calculate_numerical_forces(atoms, eps=1e-5), atoms.get_forces(), atol=1e-6)


@pytest.mark.parametrize("extra", [{}, {"angular_channels": 3}], ids=["plain", "angular"])
def test_exported_file_runs_on_the_numba_backend(tmp_path, extra):
    model = make_model("float32", num_layers=2, **extra)
    path = export_torchscript(model, tmp_path / "student_ts.pt")
    atoms = structures()["triclinic-crystal"]
    results = []
    for source, backend in ((path, "torch"), (path, "numba"), (model, "torch")):
        a = atoms.copy()
        a.calc = StudentCalculator(source, backend=backend)
        assert a.calc.backend == backend
        results.append((a.get_potential_energy(), a.get_forces()))
    for e, f in results[1:]:
        assert e == pytest.approx(results[0][0], abs=1e-4)
        np.testing.assert_allclose(f, results[0][1], atol=1e-4)


def test_backend_choice_and_bad_backend_arguments():
    model = make_model("float64", num_layers=1)
    assert StudentCalculator(model).backend == "numba"  # auto on the CPU with numba installed
    assert StudentCalculator(model, backend="torch").backend == "torch"
    with pytest.raises(UserError, match="backend must be one of auto, numba, torch"):
        StudentCalculator(model, backend="jax")
    with pytest.raises(UserError, match="compile=True needs backend='torch'"):
        StudentCalculator(model, backend="numba", compile=True)


def test_numba_calculator_rejects_an_unknown_element():
    atoms = molecule("CH3CH2OH")
    atoms[0].symbol = "Fe"
    atoms.calc = StudentCalculator(make_model("float64", num_layers=1), backend="numba")
    with pytest.raises(UserError, match=r"Fe \(Z=26\)"):
        atoms.get_forces()


def test_numba_accepts_radial_frequencies_with_float32_drift():
    """Students trained before the EMA stopped averaging buffers carry ~1e-6 relative drift
    in the radial frequencies; the kernel still runs them and agrees with torch."""
    model = make_model("float32")
    with torch.no_grad():
        model.rbf_freq.mul_(1 + 1.03e-6)  # the drift measured on a twice warm-started student
    atoms = bulk("Si", "diamond", 5.43, cubic=True)
    atoms.rattle(0.05, seed=2)
    f = {}
    for backend in ("torch", "numba"):
        atoms.calc = StudentCalculator(model, backend=backend)
        f[backend] = atoms.get_forces()
    np.testing.assert_allclose(f["numba"], f["torch"], atol=2e-4)
