"""Read a dataset (file or list of ``ase.Atoms``) once into plain per-structure arrays.

Units: positions and cell A, energy eV, forces eV/A, stress Voigt eV/A^3.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import DatasetError
from ..labels import LabelError, check_energy, check_forces, check_stress


@dataclass
class Records:
    """Per-structure arrays of a dataset. Missing labels are ``None``."""

    numbers: list  # (n_i,) int
    positions: list  # (n_i, 3) A
    cells: list  # (3, 3) A
    pbcs: list  # (3,) bool
    energy: list  # float eV or None
    forces: list  # (n_i, 3) eV/A or None
    stress: list  # (6,) eV/A^3 or None
    provenance: list  # dict
    label_fields: tuple = ("energy", "forces", "stress")
    attrs: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)  # (pool index, reason)
    path: str | None = None

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def n_atoms(self) -> np.ndarray:
        return np.array([len(z) for z in self.numbers], dtype=np.int64)

    def atoms(self, i: int):
        """Structure ``i`` as an unlabelled ``ase.Atoms`` (for descriptors)."""
        from ase import Atoms

        return Atoms(numbers=self.numbers[i], positions=self.positions[i], cell=self.cells[i], pbc=self.pbcs[i])

    def source(self, i: int) -> str:
        return str(self.provenance[i].get("source", "unknown") or "unknown")

    def sampler(self, i: int) -> str:
        return str(self.provenance[i].get("sampler", "unknown") or "unknown")


def _from_atoms_list(atoms_list) -> Records:
    rec = Records([], [], [], [], [], [], [], [])
    for k, atoms in enumerate(atoms_list):
        if not hasattr(atoms, "get_atomic_numbers"):
            raise DatasetError(
                f"item {k} is a {type(atoms).__name__}, not an ase.Atoms: pass a list of Atoms or a dataset path"
            )
        rec.numbers.append(np.asarray(atoms.numbers, dtype=np.int64))
        rec.positions.append(np.asarray(atoms.positions, dtype=np.float64))
        rec.cells.append(np.asarray(atoms.cell[:], dtype=np.float64))
        rec.pbcs.append(np.asarray(atoms.pbc, dtype=bool))
        results = getattr(atoms.calc, "results", None) or {}
        e, f, s = (results.get(name) for name in ("energy", "forces", "stress"))
        try:  # shapes only: NaN/inf labels are what the "finite" check reports
            rec.energy.append(None if e is None else check_energy(e, finite=False))
            rec.forces.append(None if f is None else check_forces(f, len(atoms), finite=False))
            rec.stress.append(None if s is None else check_stress(s, finite=False))
        except LabelError as err:
            raise DatasetError(f"item {k} has {err}; fix or drop the structure") from None
        prov = atoms.info.get("provenance") or {}
        rec.provenance.append(dict(prov) if isinstance(prov, dict) else {})
    # A plain list declares the label fields that at least one structure carries.
    present = [
        name
        for name, values in (("energy", rec.energy), ("forces", rec.forces), ("stress", rec.stress))
        if any(v is not None for v in values)
    ]
    rec.label_fields = tuple(present)
    return rec


def _from_file(path: str) -> Records:
    if not os.path.exists(path):
        raise DatasetError(f"dataset {path} not found: give the path of a labelled dataset file (.h5)")
    try:
        from ..data.store import DatasetReader
    except ImportError as err:  # pragma: no cover - store not installed
        raise DatasetError(f"cannot read {path}: the dataset store is unavailable ({err})") from None
    reader = DatasetReader(path)
    rec = Records([], [], [], [], [], [], [], [])
    try:
        for i in range(len(reader)):
            arr = reader.get_arrays(i)
            rec.numbers.append(np.asarray(arr["numbers"], dtype=np.int64))
            rec.positions.append(np.asarray(arr["positions"], dtype=np.float64))
            rec.cells.append(np.asarray(arr["cell"], dtype=np.float64).reshape(3, 3))
            rec.pbcs.append(np.asarray(arr["pbc"], dtype=bool).reshape(3))
            rec.energy.append(float(arr["energy"]) if "energy" in arr else None)
            rec.forces.append(np.asarray(arr["forces"], dtype=np.float64).reshape(-1, 3) if "forces" in arr else None)
            rec.stress.append(np.asarray(arr["stress"], dtype=np.float64).reshape(6) if "stress" in arr else None)
            rec.provenance.append(dict(reader.provenance(i)))
        rec.label_fields = tuple(reader.label_fields)
        rec.attrs = dict(reader.attrs)
        rec.failures = [tuple(x) for x in reader.failures()]
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()
    rec.path = str(path)
    return rec


def load_records(atoms_or_path, require_labels: bool = True) -> Records:
    """A :class:`Records` from a dataset path, a :class:`Records`, or a sequence of ``ase.Atoms``.

    Raises :class:`DatasetError` for an empty dataset or (``require_labels``) one without any
    energy labels.
    """
    if isinstance(atoms_or_path, Records):
        rec = atoms_or_path
    elif isinstance(atoms_or_path, (str, os.PathLike)):
        rec = _from_file(os.fspath(atoms_or_path))
    else:
        try:
            items = list(atoms_or_path)
        except TypeError:
            raise DatasetError(
                f"expected a dataset path or a list of ase.Atoms, got {type(atoms_or_path).__name__}"
            ) from None
        rec = _from_atoms_list(items)
    where = rec.path or "the dataset"
    if len(rec) == 0:
        raise DatasetError(f"{where} is empty (0 structures): label some structures before checking quality")
    if require_labels:
        if "energy" not in rec.label_fields or all(e is None for e in rec.energy):
            raise DatasetError(
                f"{where} has no energy labels: label it first (mlff-distill label POOL --teacher SPEC -o dataset.h5)"
            )
    return rec
