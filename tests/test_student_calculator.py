"""StudentCalculator: ASE properties, MD energy conservation, Verlet-skin reuse, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mlff_distiller.data.normalization import NormalizationStats
from mlff_distiller.errors import UserError
from mlff_distiller.student import StudentCalculator, StudentConfig, build_student, export_torchscript, save_student

CUTOFF = 4.0
STATS = NormalizationStats(element_energies={1: -1.1, 6: -5.3, 8: -3.7, 14: -4.6}, force_rms=0.5,
                           avg_num_neighbors=12.0, cutoff=CUTOFF)


def make_model(dtype="float64"):
    torch.manual_seed(2)
    model = build_student(StudentConfig(preset="tiny", cutoff=CUTOFF, dtype=dtype), STATS).eval()
    with torch.no_grad():
        model.readout[-1].weight.mul_(10.0)
    return model


@pytest.fixture(scope="module")
def model64():
    return make_model("float64")


def si_crystal():
    atoms = bulk("Si", "diamond", 5.43, cubic=True)
    atoms.rattle(0.05, seed=4)
    return atoms


def test_properties_and_class_attribute(model64):
    from ase.calculators.calculator import Calculator

    assert StudentCalculator.implemented_properties == ["energy", "free_energy", "forces", "stress", "energies"]
    assert Calculator.implemented_properties is not StudentCalculator.implemented_properties
    atoms = si_crystal()
    atoms.calc = StudentCalculator(model64)
    e = atoms.get_potential_energy()
    assert atoms.get_potential_energy(force_consistent=True) == e
    f = atoms.get_forces()
    assert f.shape == (8, 3) and f.dtype == np.float64 and np.abs(f).max() > 1e-3
    s = atoms.get_stress()
    assert s.shape == (6,)
    # ASE's own finite-difference stress (strains the cell and calls the calculator again).
    np.testing.assert_allclose(calculate_numerical_stress(atoms, eps=1e-5), s, atol=1e-7)
    np.testing.assert_allclose(calculate_numerical_forces(atoms, eps=1e-5), f, atol=1e-6)

    mol = molecule("CH3CH2OH")
    mol.calc = StudentCalculator(model64)
    assert np.isfinite(mol.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError):
        mol.get_stress()
    slab = si_crystal()
    slab.pbc = (True, True, False)
    slab.calc = StudentCalculator(model64)
    slab.get_forces()
    with pytest.raises(PropertyNotImplementedError):
        slab.get_stress()


def run_md(atoms, calc, steps, dt_fs, temperature_k=300.0):
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=temperature_k, rng=np.random.default_rng(0))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    totals, kinetic = [], []

    def record():
        totals.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        kinetic.append(atoms.get_kinetic_energy())

    dyn.attach(record, interval=1)
    dyn.run(steps)
    return np.array(totals), np.array(kinetic)


@pytest.mark.parametrize("system", ["molecule", "crystal"])
def test_velocity_verlet_conserves_energy(system, model64):
    if system == "molecule":
        atoms = molecule("CH3CH2OH")
    else:
        atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat((2, 1, 1))
    calc = StudentCalculator(model64, skin=0.5)
    totals, kinetic = run_md(atoms, calc, steps=150, dt_fs=0.5)
    drift = np.abs(totals - totals[0]).max() / len(atoms)
    assert np.ptp(kinetic) > 0.02 * len(atoms) * units.kB * 300  # the system really moves
    print(f"{system}: max |E_tot - E_tot(0)| = {drift:.2e} eV/atom, kinetic range {np.ptp(kinetic):.3f} eV")
    assert drift < 2e-4, f"total energy drifted by {drift:.2e} eV/atom"
    assert calc.neighbor_list_builds < 150  # the Verlet list was reused between steps


def test_skin_reuse_gives_the_same_forces_as_a_rebuild(model64):
    atoms = si_crystal().repeat((1, 1, 2))
    reused = StudentCalculator(model64, skin=1.0)
    fresh = StudentCalculator(model64, skin=0.0)
    atoms.calc = reused
    thermalize_momenta(atoms, temperature_K=1200, rng=np.random.default_rng(1))
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    for _ in range(12):
        dyn.run(1)
        probe = atoms.copy()
        probe.calc = fresh
        np.testing.assert_allclose(atoms.get_forces(), probe.get_forces(), atol=1e-10)
        assert atoms.get_potential_energy() == pytest.approx(probe.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(atoms.get_stress(), probe.get_stress(), atol=1e-12)
    assert 1 <= reused.neighbor_list_builds < 12
    assert fresh.neighbor_list_builds >= 12
    # Moving one atom further than skin/2 forces a rebuild.
    before = reused.neighbor_list_builds
    atoms.positions[0] += [0.6, 0.0, 0.0]
    atoms.get_forces()
    assert reused.neighbor_list_builds == before + 1


def test_calculator_runs_from_run_dir_checkpoint_and_exported_file(tmp_path):
    model = make_model("float32")
    save_student(tmp_path / "run" / "checkpoints" / "best.pt", model)
    ts = export_torchscript(model, tmp_path / "student_ts.pt")
    atoms = si_crystal()
    results = []
    for source in (model, tmp_path / "run", tmp_path / "run" / "checkpoints" / "best.pt", ts):
        a = atoms.copy()
        a.calc = StudentCalculator(source)
        results.append((a.get_potential_energy(), a.get_forces(), a.get_stress()))
    for e, f, s in results[1:]:
        assert e == pytest.approx(results[0][0], abs=1e-5)
        np.testing.assert_allclose(f, results[0][1], atol=1e-5)
        np.testing.assert_allclose(s, results[0][2], atol=1e-6)
    # Short MD on the exported file.
    a = molecule("H2O")
    totals, _ = run_md(a, StudentCalculator(ts), steps=20, dt_fs=0.25)
    assert np.all(np.isfinite(totals))


def test_unknown_element_is_a_one_line_error_naming_it(model64):
    atoms = molecule("CH3CH2OH")
    atoms[0].symbol = "Fe"
    atoms.calc = StudentCalculator(model64)
    with pytest.raises(UserError) as err:
        atoms.get_potential_energy()
    message = str(err.value)
    assert "Fe (Z=26)" in message and "H, C, O, Si" in message and "\n" not in message


def test_bad_construction_arguments(tmp_path, model64):
    with pytest.raises(UserError, match="training mode"):
        StudentCalculator(make_model().train())
    with pytest.raises(UserError, match="skin"):
        StudentCalculator(model64, skin=-1.0)
    with pytest.raises(UserError, match="does not exist"):
        StudentCalculator(tmp_path / "nope.pt")


@pytest.mark.slow
def test_compiled_calculator_matches_eager(model64):
    """torch.compile path (minutes of compilation on a loaded CPU, hence slow)."""
    atoms = si_crystal()
    eager = StudentCalculator(model64)
    compiled = StudentCalculator(model64, compile=True)
    assert compiled.model is not model64 and model64._compiled is None
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = eager, compiled
    np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-9)
    np.testing.assert_allclose(b.get_stress(), a.get_stress(), atol=1e-10)


def test_check_state_sees_every_change_that_matters(model64):
    """The exact-comparison check_state: cached results for an unchanged structure, a new
    calculation after any change of positions, numbers, cell, pbc or initial charges."""
    from ase.calculators.calculator import compare_atoms

    atoms = si_crystal()
    calc = StudentCalculator(model64, skin=0.0)
    atoms.calc = calc
    e0 = atoms.get_potential_energy()
    assert calc.check_state(atoms) == [] and atoms.get_potential_energy() == e0
    atoms.set_momenta(np.ones((len(atoms), 3)))  # MD velocities do not change the energy
    assert calc.check_state(atoms) == []
    edits = {
        "positions": lambda a: a.positions.__setitem__((0, 0), a.positions[0, 0] + 1e-9),
        "numbers": lambda a: a.numbers.__setitem__(0, 6),
        "cell": lambda a: a.set_cell(a.cell.array * 1.01, scale_atoms=False),
        "pbc": lambda a: a.set_pbc([True, True, False]),
        "initial_charges": lambda a: a.set_initial_charges(np.full(len(a), 0.1)),
    }
    for name, edit in edits.items():
        changed = atoms.copy()
        edit(changed)
        got = calc.check_state(changed)
        assert name in got, (name, got)
        assert set(got) <= set(compare_atoms(calc.atoms, changed)) | {name}
    atoms.positions[3] += 0.05
    assert atoms.get_potential_energy() != e0  # recalculated


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_per_atom_energies_sum_to_the_energy(backend, dtype, tmp_path):
    """``energies`` (eV per atom) sum to ``energy`` and match the torch model's per-atom terms
    on every backend and on a TorchScript export."""
    model = make_model(dtype)
    atoms = si_crystal()
    atoms.calc = StudentCalculator(model, backend=backend)
    e_atoms = atoms.get_potential_energies()
    assert e_atoms.shape == (8,) and e_atoms.dtype == np.float64
    assert np.ptp(e_atoms) > 1e-4  # rattled: atoms differ
    tol = 1e-4 if dtype == "float32" else 1e-10  # float32: the network sum is rounded in float32
    np.testing.assert_allclose(e_atoms.sum(), atoms.get_potential_energy(), rtol=0, atol=tol)
    ref = StudentCalculator(model, backend="torch")
    np.testing.assert_allclose(e_atoms, ref.get_property("energies", atoms.copy()), atol=tol)
    export_torchscript(model, tmp_path / "ts.pt")
    ts_calc = StudentCalculator(tmp_path / "ts.pt", backend=backend)
    np.testing.assert_allclose(ts_calc.get_property("energies", atoms.copy()), e_atoms, atol=tol)
