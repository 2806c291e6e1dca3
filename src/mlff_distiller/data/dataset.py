"""``MolecularDataset``: a PyTorch dataset over a dataset file, plus its transforms.

Items are graph dicts of numpy arrays with the keys of :func:`mlff_distiller.data.graph.atoms_to_graph`
(``numbers, positions, cell, pbc, edge_index, edge_shift`` and the labels present:
``energy`` eV, ``forces`` eV/A, ``stress`` Voigt eV/A^3); batch them with
:func:`mlff_distiller.data.graph.collate` (``ds.loader(...)`` does that for you).

The file is opened lazily, once per process: a DataLoader worker opens its own handle, and
pickling drops the handle (``preload=True`` reads everything into RAM instead, and the
arrays travel with the pickle).
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .. import fields as F
from ..errors import DatasetError
from .graph import collate
from .neighbors import neighbor_list
from .store import DatasetReader

Transform = Callable[[dict, np.random.Generator], dict]


# ----------------------------------------------------------------------------------------
# Transforms: callables ``(arrays, rng) -> arrays`` on the per-structure arrays, applied
# before the neighbour list is built. ``rng`` is seeded from (seed, epoch, index), so an
# item's augmentation does not depend on which worker loads it.
# ----------------------------------------------------------------------------------------
def random_rotation_matrix(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed proper rotation (det +1), 3x3."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


class RandomRotation:
    """Rotate positions, forces, cell and stress by one random rotation per item.

    Vectors transform as ``v @ R.T`` (cell rows too); stress as ``R s R^T``. Energies are
    unchanged. Periodic images and the neighbour list are preserved, since the cell rotates
    with the atoms.
    """

    def __call__(self, arrays: dict, rng: np.random.Generator) -> dict:
        rot = random_rotation_matrix(rng)
        out = dict(arrays)
        out[F.POSITIONS] = arrays[F.POSITIONS] @ rot.T
        out[F.CELL] = arrays[F.CELL] @ rot.T
        if F.FORCES in arrays:
            out[F.FORCES] = arrays[F.FORCES] @ rot.T
        if F.STRESS in arrays:
            out[F.STRESS] = F.matrix_to_voigt(rot @ F.voigt_to_matrix(arrays[F.STRESS]) @ rot.T)
        return out

    def __repr__(self):
        return "RandomRotation()"


class UnitConversion:
    """Multiply lengths by ``length`` and energies by ``energy`` (forces and stress follow).

    Use :meth:`to_ase` to bring data given in other units into ASE units (eV, A), e.g.
    ``UnitConversion.to_ase(energy="kcal/mol", length="Bohr")``.
    """

    def __init__(self, length: float = 1.0, energy: float = 1.0):
        if not (np.isfinite(length) and np.isfinite(energy) and length > 0 and energy > 0):
            raise DatasetError(f"unit conversion factors must be positive numbers, got length={length}, energy={energy}")
        self.length, self.energy = float(length), float(energy)

    @classmethod
    def to_ase(cls, energy: str = "eV", length: str = "Ang") -> "UnitConversion":
        from ase import units

        names = {"eV": 1.0, "meV": 1e-3, "Hartree": units.Hartree, "Ha": units.Hartree, "kcal/mol": units.kcal / units.mol,
                 "kJ/mol": units.kJ / units.mol, "Ry": units.Rydberg, "Ang": 1.0, "A": 1.0, "Angstrom": 1.0,
                 "Bohr": units.Bohr, "nm": 10.0, "pm": 0.01}
        for name, kind in ((energy, "energy"), (length, "length")):
            if name not in names:
                raise DatasetError(f"unknown {kind} unit {name!r}; use one of {sorted(names)}")
        return cls(length=names[length], energy=names[energy])

    def __call__(self, arrays: dict, rng=None) -> dict:
        out = dict(arrays)
        out[F.POSITIONS] = arrays[F.POSITIONS] * self.length
        out[F.CELL] = arrays[F.CELL] * self.length
        if F.ENERGY in arrays:
            out[F.ENERGY] = arrays[F.ENERGY] * self.energy
        if F.FORCES in arrays:
            out[F.FORCES] = arrays[F.FORCES] * (self.energy / self.length)
        if F.STRESS in arrays:
            out[F.STRESS] = arrays[F.STRESS] * (self.energy / self.length**3)
        return out

    def __repr__(self):
        return f"UnitConversion(length={self.length}, energy={self.energy})"


class MolecularDataset(Dataset):
    """PyTorch dataset over a dataset file (see module docstring).

    Parameters
    ----------
    path: the dataset file (main file; unmerged journal segments are read too).
    cutoff: neighbour-list cutoff in A.
    indices: structures of the file in this view (default: all, in file order).
    transform: a transform or a list of transforms ``(arrays, rng) -> arrays``.
    preload: read all arrays into RAM once (fast random access; the data travel with pickles).
    elements: keep only structures whose atomic numbers all lie in this set.
    with_labels: include labels in items (False for inference on a pool).
    seed: base seed of the per-item random generators of transforms (see :meth:`set_epoch`).
    no_energy: structures of the file (indices) whose items leave the energy label out: they
        train on forces and stress only (see ``TrainConfig.energy_skip_sources``).
    """

    def __init__(self, path, cutoff: float, indices: Sequence[int] | None = None,
                 transform: Transform | Sequence[Transform] | None = None, preload: bool = False,
                 elements: Iterable[int] | None = None, with_labels: bool = True, seed: int = 0,
                 no_energy: Iterable[int] | None = None):
        if not (np.isfinite(cutoff) and cutoff > 0):
            raise DatasetError(f"cutoff must be a positive distance in A, got {cutoff}")
        self.path = os.fspath(path)
        self.cutoff = float(cutoff)
        self.with_labels = with_labels
        self.seed = int(seed)
        self.epoch = 0
        if transform is None:
            self.transforms: list = []
        elif callable(transform):
            self.transforms = [transform]
        else:
            self.transforms = list(transform)
        # preload: the store's in-memory reader (per-atom arrays in RAM, files closed; it
        # travels with pickles into DataLoader workers)
        r = DatasetReader(self.path, preload=preload)
        try:
            self.label_fields = r.label_fields
            self.attrs = r.attrs
            self._file_len = len(r)
            self._n_atoms_file = r.n_atoms.copy()
            self._group_keys = _group_keys(r)
            if indices is None:
                idx = np.arange(len(r), dtype=np.int64)
            else:
                idx = np.asarray(indices, dtype=np.int64).reshape(-1)
                if idx.size and (idx.min() < 0 or idx.max() >= len(r)):
                    raise DatasetError(f"indices out of range for {self.path} with {len(r)} structures")
            if elements is not None:
                keep = _structures_within(r, {int(z) for z in elements})
                idx = idx[keep[idx]]
        finally:
            if not preload:
                r.close()
        self.indices = idx
        self._no_energy = frozenset(int(i) for i in (no_energy if no_energy is not None else ()))
        self._memory: DatasetReader | None = r if preload else None
        self._reader: DatasetReader | None = None
        self._pid: int | None = None

    # -- access -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.indices)

    @property
    def n_atoms(self) -> np.ndarray:
        """Atoms per structure of this view."""
        return self._n_atoms_file[self.indices]

    def _get_reader(self) -> DatasetReader:
        if self._reader is None or self._pid != os.getpid():
            # A handle inherited through fork is not safe to use: open our own.
            self._reader = DatasetReader(self.path)
            self._pid = os.getpid()
        return self._reader

    def get_arrays(self, idx: int) -> dict:
        """Untransformed arrays of item ``idx`` of this view (see DatasetReader.get_arrays)."""
        i = int(self.indices[idx])
        if self._memory is not None:
            return self._memory.get_arrays(i)
        return self._get_reader().get_arrays(i)

    def set_epoch(self, epoch: int) -> None:
        """Change the random stream of transforms (call once per training epoch)."""
        self.epoch = int(epoch)

    def __getitem__(self, idx) -> dict:
        if isinstance(idx, (slice, list, np.ndarray)):
            raise DatasetError("index a MolecularDataset with one integer; use ds.subset(indices) for several")
        n = len(self.indices)
        if idx < 0:
            idx += n
        if not 0 <= idx < n:
            raise IndexError(f"item {idx} out of range for a dataset of {n} structures")
        arrays = self.get_arrays(idx)
        if self.transforms:
            rng = np.random.default_rng([self.seed, self.epoch, int(self.indices[idx])])
            for t in self.transforms:
                arrays = t(arrays, rng)
        edge_index, edge_shift = neighbor_list(arrays[F.POSITIONS], arrays[F.CELL], arrays[F.PBC], self.cutoff)
        g = {
            F.NUMBERS: arrays[F.NUMBERS],
            F.POSITIONS: arrays[F.POSITIONS],
            F.CELL: arrays[F.CELL],
            F.PBC: arrays[F.PBC],
            F.EDGE_INDEX: edge_index,
            F.EDGE_SHIFT: edge_shift,
            "index": np.int64(self.indices[idx]),
        }
        if self.with_labels:
            skip = (F.ENERGY,) if int(self.indices[idx]) in self._no_energy else ()
            for key in F.LABELS:
                if key in arrays and key not in skip:
                    g[key] = arrays[key]
        return g

    # -- pickling (DataLoader workers) --------------------------------------------------
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_reader"] = None
        state["_pid"] = None
        return state

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- views ----------------------------------------------------------------------------
    def subset(self, positions: Sequence[int]) -> "MolecularDataset":
        """A view on items ``positions`` of this dataset (shares preloaded memory)."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if pos.size and (pos.min() < -len(self) or pos.max() >= len(self)):
            raise DatasetError(f"subset positions out of range for a dataset of {len(self)} structures")
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__getstate__())
        new.indices = self.indices[pos]
        new.transforms = list(self.transforms)
        return new

    def filter_elements(self, elements: Iterable[int]) -> "MolecularDataset":
        """Keep only structures made of the given atomic numbers."""
        allowed = {int(z) for z in elements}
        if self._memory is not None:
            keep = _structures_within(self._memory, allowed)
        else:
            with DatasetReader(self.path) as r:
                keep = _structures_within(r, allowed)
        return self.subset(np.nonzero(keep[self.indices])[0])

    def group_keys(self) -> np.ndarray:
        """Group id of each item: provenance ``group``, else the root of its ``parent`` chain."""
        return self._group_keys[self.indices]

    def split(self, fractions: Sequence[float], seed: int = 0, grouped: bool = True) -> list["MolecularDataset"]:
        """Random split into ``len(fractions)`` views with about these fractions of structures.

        ``grouped=True`` keeps each provenance group (everything derived from one root
        structure) inside one split, so near-duplicates never straddle train and test.
        Deterministic for a given ``seed``.
        """
        from .split import grouped_partition

        if grouped:
            groups = self.group_keys().astype(str)
        else:
            groups = np.arange(len(self)).astype(str)  # every structure its own group
        return [self.subset(idx) for idx in grouped_partition(groups, fractions, seed)]

    def loader(self, batch_size: int = 16, shuffle: bool = False, num_workers: int = 0,
               dtype: torch.dtype = torch.float32, **kwargs) -> DataLoader:
        """A DataLoader yielding batch dicts from :func:`collate` (``dtype`` for float tensors)."""
        if num_workers > 0:
            kwargs.setdefault("persistent_workers", True)
        return DataLoader(self, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                          collate_fn=functools.partial(collate, dtype=dtype), **kwargs)

    def __repr__(self):
        return (f"MolecularDataset({self.path!r}, cutoff={self.cutoff}, n={len(self)}, "
                f"labels={list(self.label_fields)}, preload={self._memory is not None})")


def _within_from_arrays(numbers: np.ndarray, offsets: np.ndarray, allowed: set[int]) -> np.ndarray:
    bad_atom = ~np.isin(numbers, np.fromiter(allowed, dtype=np.int64, count=len(allowed)))
    if len(offsets) <= 1:
        return np.zeros(0, bool)
    bad = np.add.reduceat(bad_atom.astype(np.int64), offsets[:-1]) if numbers.size else np.zeros(len(offsets) - 1)
    return bad == 0


def _structures_within(reader: DatasetReader, allowed: set[int]) -> np.ndarray:
    """Boolean per structure of the file: all its atomic numbers are in ``allowed``."""
    keep = [_within_from_arrays(nums, offsets, allowed) for offsets, nums in reader.iter_atom_blocks(F.NUMBERS)]
    return np.concatenate(keep) if keep else np.zeros(0, bool)


def _group_keys(reader: DatasetReader) -> np.ndarray:
    """Integer group id per structure (:func:`mlff_distiller.data.split.provenance_groups`)."""
    from .split import provenance_groups

    keys = provenance_groups(reader)
    _, ids = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True) if keys else (None, [])
    return np.asarray(ids, dtype=np.int64)
