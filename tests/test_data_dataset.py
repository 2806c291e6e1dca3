"""MolecularDataset: items, lazy/preloaded access, workers, pickling, splits, transforms."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from mlff_distiller.data import MolecularDataset, collate
from mlff_distiller.data.dataset import RandomRotation, UnitConversion
from mlff_distiller.data.graph import atoms_to_graph
from mlff_distiller.data.store import DatasetWriter
from mlff_distiller.errors import DatasetError

CUTOFF = 4.0


def _label(atoms):
    atoms.calc = EMT()
    res = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        res["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **res)
    return atoms


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """24 structures: 6 roots x 4 rattles; half the roots give group ids, half only parents."""
    path = tmp_path_factory.mktemp("ds") / "d.h5"
    atoms_list = []
    for root in range(6):
        base = (bulk("Cu", "fcc", a=3.6) * (2, 2, 2)) if root % 3 == 0 else (
            bulk("Ni", "fcc", a=3.52, cubic=True) if root % 3 == 1 else molecule("CH3OH"))
        first = len(atoms_list)
        for k in range(4):
            a = base.copy()
            a.rattle(0.05, seed=10 * root + k)
            _label(a)
            a.info["provenance"] = {"source": f"root{root}", "sampler": "rattle", "params": {}, "seed": k,
                                    "parent": -1 if k == 0 else first + k - 1,  # a chain: each from the previous
                                    "group": f"root{root}" if root % 2 == 0 else ""}
            atoms_list.append(a)
    with DatasetWriter(path) as w:
        w.append(atoms_list)
    return path, atoms_list


def _same_graph(g, h):
    assert set(k for k in g if k != "index") == set(h)
    for key in h:
        np.testing.assert_allclose(
            np.asarray(g[key], float), np.asarray(h[key], float), rtol=1e-6, atol=1e-6, err_msg=key
        )


@pytest.mark.parametrize("preload", [False, True])
def test_items_equal_atoms_to_graph(data_file, preload):
    path, atoms_list = data_file
    ds = MolecularDataset(path, cutoff=CUTOFF, preload=preload)
    assert len(ds) == len(atoms_list)
    for i in (0, 5, 11, 23):
        _same_graph(ds[i], atoms_to_graph(atoms_list[i], CUTOFF))
    assert ds[-1]["index"] == 23
    with pytest.raises(IndexError):
        ds[24]


def test_pickle_drops_handle_and_workers_match_single_process(data_file):
    path, _ = data_file
    ds = MolecularDataset(path, cutoff=CUTOFF)
    ds[0]  # opens the file in this process
    assert ds._reader is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._reader is None
    _same_graph(clone[3], {k: v for k, v in ds[3].items() if k != "index"})
    b0 = list(ds.loader(batch_size=5, num_workers=0))
    b2 = list(ds.loader(batch_size=5, num_workers=2))
    assert len(b0) == len(b2) == 5
    for x, y in zip(b0, b2):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key
    assert b0[0]["positions"].dtype == torch.float32 and b0[0]["energy"].dtype == torch.float64


def test_random_rotation_is_consistent_with_the_physics(data_file):
    """Rotated labels equal EMT evaluated on the rotated structure (forces, stress, energy)."""
    path, atoms_list = data_file
    ds = MolecularDataset(path, cutoff=CUTOFF, transform=RandomRotation(), seed=7)
    for i in (0, 4, 8):  # Cu supercell (triclinic primitive cell), cubic Ni, molecule
        g = ds[i]
        atoms = atoms_list[i].copy()
        atoms.positions = g["positions"]
        atoms.cell = g["cell"]
        assert not np.allclose(g["positions"], atoms_list[i].positions)  # it did rotate
        atoms.calc = EMT()
        assert atoms.get_potential_energy() == pytest.approx(g["energy"], abs=1e-8)
        np.testing.assert_allclose(atoms.get_forces(), g["forces"], atol=2e-5)
        if atoms.pbc.all():
            np.testing.assert_allclose(atoms.get_stress(), g["stress"], atol=1e-6)
        # same neighbour pairs with the same shifts: rotation moves cell and atoms together
        ref = atoms_to_graph(atoms_list[i], CUTOFF)
        assert sorted(map(tuple, np.c_[g["edge_index"].T, g["edge_shift"]])) == sorted(
            map(tuple, np.c_[ref["edge_index"].T, ref["edge_shift"]]))
    # deterministic per (seed, epoch, index); a new epoch draws new rotations
    np.testing.assert_array_equal(ds[4]["positions"], ds[4]["positions"])
    before = ds[4]["positions"]
    ds.set_epoch(1)
    assert not np.allclose(ds[4]["positions"], before)


def test_unit_conversion_scales_consistently(data_file):
    path, atoms_list = data_file
    conv = UnitConversion.to_ase(energy="kcal/mol", length="Bohr")
    ds = MolecularDataset(path, cutoff=CUTOFF, transform=conv)
    raw = MolecularDataset(path, cutoff=CUTOFF)
    g, h = ds[0], raw[0]
    from ase import units

    kcal = units.kcal / units.mol
    assert g["energy"] == pytest.approx(h["energy"] * kcal)
    np.testing.assert_allclose(g["positions"], h["positions"] * units.Bohr)
    np.testing.assert_allclose(g["forces"], h["forces"] * kcal / units.Bohr)
    np.testing.assert_allclose(g["stress"], h["stress"] * kcal / units.Bohr**3)
    with pytest.raises(DatasetError, match="unknown energy unit"):
        UnitConversion.to_ase(energy="furlong")


def test_grouped_split_keeps_groups_and_parent_chains_together(data_file):
    path, _ = data_file
    ds = MolecularDataset(path, cutoff=CUTOFF)
    keys = ds.group_keys()
    assert len(set(keys.tolist())) == 6  # 3 named groups + 3 parent chains
    assert len(set(keys[4:8].tolist())) == 1  # root 1 has no group string: its parent chain is one group
    parts = ds.split([0.5, 0.25, 0.25], seed=3)
    seen = [set(p.group_keys().tolist()) for p in parts]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert sum(len(p) for p in parts) == len(ds)
    assert [len(p) for p in parts] == [len(p) for p in ds.split([0.5, 0.25, 0.25], seed=3)]
    again = ds.split([0.5, 0.25, 0.25], seed=3)
    assert all(np.array_equal(a.indices, b.indices) for a, b in zip(parts, again))
    flat = ds.split([0.75, 0.25], seed=0, grouped=False)
    assert [len(p) for p in flat] == [18, 6]
    assert not set(flat[0].indices) & set(flat[1].indices)
    with pytest.raises(DatasetError, match="sum to at most 1"):
        ds.split([0.8, 0.5])


def test_subset_and_element_filter(data_file):
    path, atoms_list = data_file
    ds = MolecularDataset(path, cutoff=CUTOFF, preload=True)
    metals = ds.filter_elements([28, 29])
    assert len(metals) == 16 and all(set(metals[i]["numbers"]) <= {28, 29} for i in range(len(metals)))
    only_cu = MolecularDataset(path, cutoff=CUTOFF, elements=[29])
    assert len(only_cu) == 8 and set(only_cu.indices.tolist()) == {0, 1, 2, 3, 12, 13, 14, 15}
    sub = ds.subset([3, 1])
    assert sub.indices.tolist() == [3, 1]
    _same_graph(sub[0], atoms_to_graph(atoms_list[3], CUTOFF))
    batch = collate([sub[0], sub[1]])
    assert batch["n_atoms"].tolist() == [len(atoms_list[3]), len(atoms_list[1])]


def test_bad_arguments(tmp_path, data_file):
    path, _ = data_file
    with pytest.raises(DatasetError, match="cutoff"):
        MolecularDataset(path, cutoff=-1)
    with pytest.raises(DatasetError, match="out of range"):
        MolecularDataset(path, cutoff=3.0, indices=[0, 99])
    with pytest.raises(DatasetError, match="not found"):
        MolecularDataset(tmp_path / "missing.h5", cutoff=3.0)


def test_provenance_groups_fall_back_to_the_parent_chain_root_and_partition_keeps_groups():
    from mlff_distiller.data.split import grouped_partition, provenance_groups

    class Reader:  # the two columns provenance_groups reads
        cols = {"group": ["a", "", "", "", "b", ""], "parent": [-1, 0, 1, -1, -1, 4]}

        def __len__(self):
            return 6

        def column(self, name):
            return np.asarray(self.cols[name], dtype=object if name == "group" else np.int64)

    groups = provenance_groups(Reader())
    # 1 -> 0 (group a), 2 -> 1 -> 0 (group a), 3 has none (its own), 5 -> 4 (group b)
    assert groups == ["a", "a", "a", "#3", "b", "b"]
    parts = grouped_partition(groups, [0.5, 0.5], seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(6))
    for g in set(groups):
        members = {i for i, x in enumerate(groups) if x == g}
        assert any(members <= set(p.tolist()) for p in parts)
