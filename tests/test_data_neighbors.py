"""vesin neighbour lists against ase.neighborlist, and the batch adapter."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from mlff_distiller.data.graph import atoms_to_graph, collate
from mlff_distiller.data.neighbors import edge_vectors, neighbor_list
from mlff_distiller.errors import UserError


def _pairs(i, j, S):
    return sorted(zip(i.tolist(), j.tolist(), map(tuple, np.asarray(S).tolist())))


def _cases():
    mol = molecule("CH3CH2OH")
    small = bulk("Cu", "sc", a=2.1)  # one atom, cubic cell much smaller than the cutoff
    small.rattle(0.0)
    tric = Atoms("SiO2", scaled_positions=[[0.1, 0.2, 0.3], [0.6, 0.4, 0.9], [0.3, 0.8, 0.5]],
                 cell=[[4.0, 0.0, 0.0], [1.7, 3.6, 0.0], [-0.9, 1.1, 3.9]], pbc=True)
    slab = bulk("Al", "fcc", a=4.05, cubic=True) * (2, 2, 1)
    slab.pbc = (True, True, False)
    slab.rattle(0.05, seed=1)
    return {"molecule": mol, "small_cubic_cell": small, "triclinic": tric, "slab_2d": slab}


@pytest.mark.parametrize("name", list(_cases()))
@pytest.mark.parametrize("cutoff", [2.5, 5.0])
def test_neighbor_list_equals_ase(name, cutoff):
    atoms = _cases()[name]
    ei, es = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    i, j, S = ase_neighbor_list("ijS", atoms, cutoff)
    assert _pairs(ei[0], ei[1], es) == _pairs(i, j, S)
    d = np.linalg.norm(edge_vectors(atoms.positions, atoms.cell.array, ei, es), axis=1)
    assert (d < cutoff).all() and (d > 0).all()
    if name == "small_cubic_cell":  # 2.1 A cell, 5 A cutoff: many periodic self-images
        assert len(i) > 0 and (ei[0] == ei[1]).all()


def test_singular_periodic_cell_is_a_user_error():
    a = Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]], cell=np.zeros((3, 3)), pbc=True)
    with pytest.raises(UserError, match="singular cell"):
        neighbor_list(a.positions, a.cell.array, a.pbc, 3.0)


def test_collate_offsets_edges_and_masks():
    from ase.calculators.singlepoint import SinglePointCalculator

    a, b = _cases()["molecule"], _cases()["triclinic"]
    a.calc = SinglePointCalculator(a, energy=1.0, forces=np.ones((len(a), 3)))
    b.calc = SinglePointCalculator(b, energy=2.0, forces=np.zeros((3, 3)), stress=np.arange(6.0))
    ga, gb = atoms_to_graph(a, 4.0), atoms_to_graph(b, 4.0)
    batch = collate([ga, gb])
    assert batch["ptr"].tolist() == [0, len(a), len(a) + 3]
    ea = ga["edge_index"].shape[1]
    assert (batch["edge_index"][:, ea:].numpy() == gb["edge_index"] + len(a)).all()
    assert batch["stress_mask"].tolist() == [False, True]
    assert batch["energy"].dtype.is_floating_point and batch["energy"].tolist() == [1.0, 2.0]


def _brute_force_closest(atoms, cutoff):
    """(distance, ratio) over every pair and periodic image, by enumerating cell shifts."""
    from ase.data import covalent_radii

    pos, cell, pbc = atoms.positions, atoms.cell.array, atoms.pbc
    reach = [int(np.ceil(cutoff / max(np.linalg.norm(cell[k]), 1e-9))) + 1 if pbc[k] else 0 for k in range(3)]
    best_d, best_r = np.inf, np.inf
    r = covalent_radii[atoms.numbers]
    for s in np.ndindex(*(2 * n + 1 for n in reach)):
        shift = np.array(s) - reach
        for i in range(len(atoms)):
            for j in range(len(atoms)):
                if i == j and not shift.any():
                    continue
                d = np.linalg.norm(pos[j] - pos[i] + shift @ cell)
                if d < cutoff:
                    best_d, best_r = min(best_d, d), min(best_r, d / (r[i] + r[j]))
    return best_d, best_r


@pytest.mark.parametrize("name", list(_cases()))
@pytest.mark.parametrize("engine", ["vesin", "ase"])
def test_closest_pair_equals_brute_force(name, engine):
    from mlff_distiller.data.neighbors import closest_pair

    atoms = _cases()[name]
    if name == "triclinic":
        atoms = atoms.copy()
        atoms.positions[1] = atoms.positions[0] + [0.3, -2.9, 1.0]  # closest through an image
    for cutoff in (1.0, 2.5, 5.0):
        ref_d, ref_r = _brute_force_closest(atoms, cutoff)
        pair = closest_pair(atoms.positions, atoms.cell.array, atoms.pbc, cutoff, atoms.numbers, engine=engine)
        assert pair.distance == pytest.approx(ref_d, abs=1e-12) if np.isfinite(ref_d) else pair.distance == np.inf
        assert pair.ratio == pytest.approx(ref_r, abs=1e-12) if np.isfinite(ref_r) else pair.ratio == np.inf
        assert pair.found == bool(np.isfinite(ref_d))
        if pair.found:  # the reported pair is at the reported distance (through some image)
            _, _, shifts = ase_neighbor_list("ijS", atoms, cutoff)
            d_ij = [np.linalg.norm(atoms.positions[pair.j] - atoms.positions[pair.i] + s @ atoms.cell.array)
                    for s in shifts]
            assert min(abs(d - pair.distance) for d in d_ij) < 1e-9


def test_closest_pair_in_a_cell_smaller_than_the_cutoff():
    from mlff_distiller.data.neighbors import closest_pair

    small = bulk("Cu", "sc", a=2.1)  # one atom: the closest pair is the atom and its own image
    pair = closest_pair(small.positions, small.cell.array, small.pbc, 5.0, small.numbers)
    assert pair.distance == pytest.approx(2.1) and (pair.i, pair.j) == (0, 0)
    lone = closest_pair(small.positions, None, [False] * 3, 5.0)
    assert not lone.found and lone.distance == np.inf
