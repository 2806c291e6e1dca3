"""Finite-difference helpers used by the teacher tests, and a check of the helpers on LJ."""

from __future__ import annotations

import numpy as np

VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def fd_forces(teacher, atoms, components, h, batch_size=None):
    """-dE/dx for the given (atom, axis) components, central differences, in one label() call."""
    displaced = []
    for a, k in components:
        for sign in (+1, -1):
            d = atoms.copy()
            d.positions[a, k] += sign * h
            displaced.append(d)
    res = teacher.label(displaced, batch_size=batch_size)
    assert all(r.ok for r in res), [r.error for r in res if not r.ok]
    e = np.array([r.energy for r in res]).reshape(-1, 2)
    return -(e[:, 0] - e[:, 1]) / (2 * h)


def fd_stress(teacher, atoms, h, batch_size=None):
    """ASE stress (1/V) dE/d(strain), Voigt, by central differences of symmetric strains."""
    strained = []
    for i, j in VOIGT_PAIRS:
        for sign in (+1, -1):
            eps = np.zeros((3, 3))
            if i == j:
                eps[i, i] = sign * h
            else:
                eps[i, j] = eps[j, i] = sign * h / 2
            deform = np.eye(3) + eps
            d = atoms.copy()
            d.set_cell(atoms.cell.array @ deform, scale_atoms=False)
            d.positions = atoms.positions @ deform
            strained.append(d)
    res = teacher.label(strained, batch_size=batch_size)
    assert all(r.ok for r in res), [r.error for r in res if not r.ok]
    e = np.array([r.energy for r in res]).reshape(6, 2)
    # d(eps_ij + eps_ji) counted once for shear: dE/d(gamma) with gamma = 2 eps_ij -> Voigt stress
    return (e[:, 0] - e[:, 1]) / (2 * h) / atoms.get_volume()


def test_fd_helpers_reproduce_analytic_lennard_jones():
    """The helpers themselves: LJ forces/stress from ASE are analytic, so FD must agree."""
    from ase.build import bulk

    from mlff_distiller.teachers import build_teacher

    lj = build_teacher({"name": "lj", "kwargs": {"sigma": 2.3, "epsilon": 0.1, "rc": 5.0, "smooth": True}})
    atoms = bulk("Ar", "fcc", a=3.7, cubic=True)
    atoms.rattle(0.05, seed=1)
    ref = lj.label([atoms])[0]
    comps = [(0, 0), (1, 1), (3, 2)]
    fd = fd_forces(lj, atoms, comps, 1e-4)
    np.testing.assert_allclose(fd, [ref.forces[a, k] for a, k in comps], atol=1e-6)
    np.testing.assert_allclose(fd_stress(lj, atoms, 1e-5), ref.stress, atol=1e-7)
    assert np.abs(ref.stress).max() > 1e-4  # a real, non-zero stress was checked
