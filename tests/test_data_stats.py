"""Normalization statistics computed from a dataset file and stored in it."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list as ase_neighbor_list

from mlff_distiller.data import NormalizationStats
from mlff_distiller.data.normalization import dataset_statistics, load_statistics, store_statistics
from mlff_distiller.data.store import DatasetWriter
from mlff_distiller.errors import DatasetError

REFS = {1: -13.6, 8: -432.1, 29: -3.7}


def _synthetic(rng, k):
    if k % 3 == 0:
        a = bulk("Cu", "fcc", a=3.6, cubic=True) * (1, 1, 1 + k % 2)
        a.rattle(0.05, seed=k)
    else:
        n_o = 1 + k % 3
        a = Atoms(f"O{n_o}H{2 * n_o}", positions=rng.uniform(0, 6, size=(3 * n_o, 3)))
    resid = 0.01 * rng.normal()  # per-atom residual around the references
    energy = sum(REFS[int(z)] for z in a.numbers) + len(a) * (0.5 + resid)
    forces = rng.normal(size=(len(a), 3)) * 0.3
    a.calc = SinglePointCalculator(a, energy=energy, forces=forces)
    return a, resid, forces


def test_statistics_recover_references_scales_and_neighbours(tmp_path):
    rng = np.random.default_rng(0)
    made = [_synthetic(rng, k) for k in range(30)]
    atoms_list = [m[0] for m in made]
    path = tmp_path / "d.h5"
    with DatasetWriter(path, label_fields=("energy", "forces")) as w:
        w.append(atoms_list)
    stats = dataset_statistics(path, cutoff=3.0)
    # References are determined up to the constant per-atom offset (0.5 eV/atom) that the
    # least-squares fit absorbs; check the fit by reconstructing total energies.
    ref_e = np.array([sum(stats.element_energies[int(z)] for z in a.numbers) for a in atoms_list])
    n = np.array([len(a) for a in atoms_list])
    energies = np.array([a.get_potential_energy() for a in atoms_list])
    resid = (energies - ref_e) / n
    assert stats.energy_mean == pytest.approx(resid.mean(), abs=1e-9)
    assert stats.energy_std == pytest.approx(resid.std(), rel=1e-6)
    assert stats.energy_std < 0.02  # compositions explain everything but the 0.01 eV/atom noise
    allf = np.concatenate([m[2] for m in made])
    assert stats.force_rms == pytest.approx(np.sqrt(np.mean(allf.astype(np.float32).astype(float) ** 2)), rel=1e-6)
    n_pairs = sum(len(ase_neighbor_list("i", a, 3.0)) for a in atoms_list)
    assert stats.avg_num_neighbors == pytest.approx(n_pairs / n.sum())
    assert stats.n_structures == 30 and stats.cutoff == 3.0
    # stored in the file, and back
    store_statistics(path, stats)
    again = load_statistics(path)
    assert again.to_dict() == stats.to_dict()
    assert NormalizationStats.from_json(stats.to_json()).to_dict() == stats.to_dict()


def test_statistics_errors(tmp_path):
    pool = tmp_path / "pool.h5"
    with DatasetWriter(pool, label_fields=()) as w:
        w.append([Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]])])
    with pytest.raises(DatasetError, match="unlabelled pool"):
        dataset_statistics(pool, cutoff=3.0)
    with pytest.raises(DatasetError, match="no stored normalization statistics"):
        load_statistics(pool)
    with pytest.raises(DatasetError, match="cutoff"):
        dataset_statistics(pool, cutoff=0)
