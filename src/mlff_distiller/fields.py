"""The one registry of field names, shared by dataset, model, trainer and calculator.

Every array that crosses a stage boundary is named here with its dtype on disk, its
shape and its unit. Units are ASE's: eV, Angstrom (A), eV/A, eV/A^3.

Conventions (chosen once, used everywhere):

* ``cell`` rows are lattice vectors (ASE); a structure without a cell stores zeros and
  ``pbc = (False, False, False)``.
* ``stress`` is ASE's stress, ``(1/V) dE/d(strain)``, in **Voigt order**
  ``(xx, yy, zz, yz, xz, xy)``, eV/A^3. It is defined only for 3-D periodic cells; its
  label mask is false otherwise.
* Neighbour pairs: ``edge_index[0]`` is the centre atom ``i``, ``edge_index[1]`` the
  neighbour ``j``; ``edge_shift`` holds integer cell shifts ``S`` such that the pair
  vector is ``r_ij = positions[j] - positions[i] + S @ cell`` (cell of the structure
  both atoms belong to).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Field:
    name: str
    per: str  # "atom" | "structure" | "edge"
    dtype: str  # numpy dtype name used on disk / in numpy batches
    shape: tuple  # trailing shape after the leading (n_atoms | n_structures | n_edges) axis
    unit: str
    doc: str

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)


# -- per-atom ---------------------------------------------------------------------------
NUMBERS = "numbers"  # (n_atoms,) int: atomic numbers Z
POSITIONS = "positions"  # (n_atoms, 3) A
FORCES = "forces"  # (n_atoms, 3) eV/A
# -- per-structure ----------------------------------------------------------------------
ENERGY = "energy"  # (n_structures,) eV, total potential energy
STRESS = "stress"  # (n_structures, 6) eV/A^3, Voigt xx yy zz yz xz xy
CELL = "cell"  # (n_structures, 3, 3) A, rows are lattice vectors
PBC = "pbc"  # (n_structures, 3) bool
N_ATOMS = "n_atoms"  # (n_structures,) int
CHARGE = "charge"  # (n_structures,) e, total charge
SPIN = "spin_multiplicity"  # (n_structures,) 2S+1
# -- graph / batch ----------------------------------------------------------------------
BATCH = "batch"  # (n_atoms,) int: index of the structure each atom belongs to
EDGE_INDEX = "edge_index"  # (2, n_edges) int: (i, j)
EDGE_SHIFT = "edge_shift"  # (n_edges, 3) int: cell shifts S
PTR = "ptr"  # (n_structures + 1,) int: atom offsets of each structure in the batch

LABELS = (ENERGY, FORCES, STRESS)

FIELDS: dict[str, Field] = {
    f.name: f
    for f in [
        Field(NUMBERS, "atom", "uint8", (), "", "atomic number Z (1..118)"),
        Field(POSITIONS, "atom", "float64", (3,), "A", "Cartesian positions"),
        Field(FORCES, "atom", "float32", (3,), "eV/A", "forces, -dE/dx"),
        Field(ENERGY, "structure", "float64", (), "eV", "total potential energy"),
        Field(STRESS, "structure", "float64", (6,), "eV/A^3", "stress, Voigt xx yy zz yz xz xy"),
        Field(CELL, "structure", "float64", (3, 3), "A", "cell, rows are lattice vectors"),
        Field(PBC, "structure", "bool", (3,), "", "periodic along each cell vector"),
        Field(N_ATOMS, "structure", "int32", (), "", "number of atoms"),
        Field(CHARGE, "structure", "float32", (), "e", "total charge"),
        Field(SPIN, "structure", "float32", (), "", "spin multiplicity 2S+1"),
        Field(BATCH, "atom", "int64", (), "", "structure index of each atom in a batch"),
        Field(EDGE_INDEX, "edge", "int64", (), "", "neighbour pairs (i, j), shape (2, n_edges)"),
        Field(EDGE_SHIFT, "edge", "int64", (3,), "", "integer cell shifts of neighbour j"),
        Field(PTR, "structure", "int64", (), "", "atom offsets, length n_structures + 1"),
    ]
}

UNITS = {name: f.unit for name, f in FIELDS.items() if f.unit}
UNIT_SYSTEM = "ASE: energy eV, length A, force eV/A, stress eV/A^3 (Voigt xx yy zz yz xz xy), time fs, mass amu"


def voigt_to_matrix(voigt: np.ndarray) -> np.ndarray:
    """(..., 6) Voigt (xx yy zz yz xz xy) -> (..., 3, 3) symmetric."""
    v = np.asarray(voigt)
    xx, yy, zz, yz, xz, xy = (v[..., k] for k in range(6))
    return np.stack(
        [np.stack([xx, xy, xz], -1), np.stack([xy, yy, yz], -1), np.stack([xz, yz, zz], -1)], -2
    )


def matrix_to_voigt(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 6) Voigt (xx yy zz yz xz xy), symmetrising."""
    m = np.asarray(m)
    s = 0.5 * (m + np.swapaxes(m, -1, -2))
    return np.stack([s[..., 0, 0], s[..., 1, 1], s[..., 2, 2], s[..., 1, 2], s[..., 0, 2], s[..., 0, 1]], -1)


def source_kind(atoms) -> str | None:
    """The kind part of a structure's provenance source (``"bulk"`` for ``"bulk:Si-diamond"``),
    or ``None`` when the structure carries no provenance source."""
    prov = atoms.info.get("provenance")
    if isinstance(prov, dict) and prov.get("source"):
        return str(prov["source"]).split(":")[0]
    return None
