"""The ZBL short-range repulsion prior (student/repulsion.py): the formula, its switch-off,
torch == Numba kernel, finite-difference forces, and that it survives save/load and export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.fd import calculate_numerical_forces
from ase.data import covalent_radii

from mlff_distiller.data.normalization import NormalizationStats
from mlff_distiller.errors import ConfigError
from mlff_distiller.student import (
    StudentCalculator,
    StudentConfig,
    build_student,
    export_torchscript,
    load_student,
    save_student,
)
from mlff_distiller.student.repulsion import COULOMB_EV_A

CUTOFF = 4.0
STATS = NormalizationStats(
    element_energies={1: -1.1, 6: -5.3, 8: -3.7, 14: -4.6}, energy_mean=0.0, energy_std=0.05,
    force_rms=0.7, avg_num_neighbors=12.0, cutoff=CUTOFF,
)


def make_model(repulsion="zbl", dtype="float64", silent_network=False):
    torch.manual_seed(11)
    model = build_student(
        StudentConfig(cutoff=CUTOFF, dtype=dtype, num_features=16, num_layers=2, num_rbf=8, repulsion=repulsion),
        STATS,
    ).eval()
    if silent_network:  # network energy exactly zero: only the prior and the constants remain
        with torch.no_grad():
            model.readout[-1].weight.zero_()
            model.readout[-1].bias.zero_()
    return model


def zbl_reference(z1, z2, r):
    """The ZBL pair energy written out independently (eV), switch included."""
    a = 0.46850 / (z1**0.23 + z2**0.23)  # 0.8854 Bohr, rounded as ZBL tabulate it
    x = r / a
    phi = (0.18175 * np.exp(-3.1998 * x) + 0.50986 * np.exp(-0.94229 * x)
           + 0.28022 * np.exp(-0.4029 * x) + 0.02817 * np.exp(-0.20162 * x))
    u = r / (covalent_radii[z1] + covalent_radii[z2])
    sw = 1 - 28 * u**6 + 48 * u**7 - 21 * u**8 if u < 1 else 0.0
    return 14.399645 * z1 * z2 / r * phi * sw


def dimer_energy(model, symbols, r, backend="torch"):
    atoms = Atoms(symbols, positions=[[0, 0, 0], [r, 0, 0]])
    atoms.calc = StudentCalculator(model, backend=backend)
    consts = sum(STATS.element_energies[z] for z in atoms.numbers)
    return atoms.get_potential_energy() - consts, atoms.get_forces()


@pytest.mark.parametrize("symbols,z", [("OH", (8, 1)), ("HH", (1, 1)), ("SiSi", (14, 14))])
def test_dimer_energy_is_the_zbl_formula_and_vanishes_at_bond_lengths(symbols, z):
    model = make_model(silent_network=True)
    r_off = covalent_radii[z[0]] + covalent_radii[z[1]]
    for r in (0.2, 0.4, 0.6 * r_off, 0.9 * r_off):
        for backend in ("torch", "numba"):
            e, f = dimer_energy(model, symbols, r, backend)
            assert e == pytest.approx(zbl_reference(*z, r), rel=1e-9, abs=1e-12), (r, backend)
            assert f[0, 0] < 0 < f[1, 0]  # repulsive: the atoms are pushed apart
    assert dimer_energy(model, symbols, 1.001 * r_off)[0] == 0.0
    e_close, e_far = dimer_energy(model, symbols, 0.3)[0], dimer_energy(model, symbols, 0.5)[0]
    assert e_close > e_far > 0
    assert COULOMB_EV_A == pytest.approx(14.3996, abs=1e-4)


def squeezed():
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=3)
    mol.set_positions(mol.positions * 0.55)  # bonds at ~0.6 A: deep inside the prior's range
    si = bulk("Si", "diamond", 5.43, cubic=True)
    cell = si.cell.array.copy()
    cell[1] += [0.6, 0.0, 0.0]
    si.set_cell(cell * 0.72, scale_atoms=True)
    si.rattle(0.1, seed=5)
    small = bulk("Si", "diamond", 5.43 * 0.7)  # 2-atom cell smaller than the cutoff
    small.rattle(0.05, seed=6)
    return {"molecule": mol, "crystal": si, "small-cell": small}


def test_numba_kernel_equals_torch_and_finite_differences():
    model = make_model()
    plain = make_model("none")
    for name, atoms in squeezed().items():
        out = {}
        for backend in ("torch", "numba"):
            a = atoms.copy()
            a.calc = StudentCalculator(model, backend=backend, skin=0.5)
            out[backend] = (a.get_potential_energy(), a.get_forces(), a.get_stress() if a.pbc.all() else None)
        e_t, f_t, s_t = out["torch"]
        e_n, f_n, s_n = out["numba"]
        assert e_n == pytest.approx(e_t, rel=1e-12, abs=1e-9), name
        np.testing.assert_allclose(f_n, f_t, atol=1e-9, err_msg=name)
        if s_t is not None:
            np.testing.assert_allclose(s_n, s_t, atol=1e-10, err_msg=name)
        b = atoms.copy()
        b.calc = StudentCalculator(plain)
        assert e_t - b.get_potential_energy() > 1.0, name  # the prior is really on
        a = atoms.copy()
        a.calc = StudentCalculator(model, backend="torch")
        np.testing.assert_allclose(calculate_numerical_forces(a, eps=1e-6), f_t, atol=1e-5 * np.abs(f_t).max())


def test_prior_is_silent_at_equilibrium_and_float32_matches():
    si = bulk("Si", "diamond", 5.43, cubic=True)
    si.rattle(0.03, seed=1)
    energies = []
    for repulsion in ("zbl", "none"):
        si.calc = StudentCalculator(make_model(repulsion))
        energies.append(si.get_potential_energy())
    assert energies[0] == energies[1]
    atoms = squeezed()["crystal"]
    ref = atoms.copy()
    ref.calc = StudentCalculator(make_model(dtype="float64"))
    for backend in ("torch", "numba"):
        a = atoms.copy()
        a.calc = StudentCalculator(make_model(dtype="float32"), backend=backend)
        assert a.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=2e-5 * len(a))
        np.testing.assert_allclose(a.get_forces(), ref.get_forces(), atol=1e-5 * np.abs(ref.get_forces()).max())


def test_saved_and_exported_students_keep_the_prior(tmp_path):
    model = make_model(dtype="float32")
    atoms = squeezed()["molecule"]
    atoms.calc = StudentCalculator(model)
    e_ref, f_ref = atoms.get_potential_energy(), atoms.get_forces()
    save_student(tmp_path / "student.pt", model)
    loaded = load_student(tmp_path / "student.pt")
    assert loaded.config.repulsion == "zbl"
    ts = export_torchscript(model, tmp_path / "student_ts.pt")
    for source in (loaded, ts):
        a = atoms.copy()
        a.calc = StudentCalculator(source)
        assert a.get_potential_energy() == pytest.approx(e_ref, rel=1e-6)
        np.testing.assert_allclose(a.get_forces(), f_ref, rtol=1e-5, atol=1e-4)


def test_unknown_repulsion_is_a_config_error():
    with pytest.raises(ConfigError, match=r"student.repulsion: unknown value 'lj'; allowed: none, zbl"):
        StudentConfig(repulsion="lj")
