"""Systems the bench runs MD on: built-in structures by name, or a user's structure file.

Built-ins (deterministic; positions in A, cells in A, rows are lattice vectors):

========== ======= ==============================================================
name       atoms   what
========== ======= ==============================================================
aspirin    21      C9H8O4 from RDKit (ETKDG + MMFF), isolated, no cell
si-64      64      diamond Si, 2x2x2 conventional cells, a = 5.43 A
si-512     512     diamond Si, 4x4x4 conventional cells
water-192  192     64 H2O molecules at 1.0 g/cm^3, randomly oriented on a grid
water-576  576     192 H2O molecules at 1.0 g/cm^3
cu-64      64      fcc Cu, 4x4x4 primitive cells, a = 3.61 A (EMT-friendly)
cu-500     500     fcc Cu, 5x5x5 conventional cells
si-216     216     diamond Si, 3x3x3 conventional cells (a cell no recipe builds)
si-vac-63  63      si-64 with one vacancy
si-slab    48      Si(111) slab, 2x2 surface cell x 12 layers, 12 A of vacuum, periodic in z
water-96   96      32 H2O at 1.0 g/cm^3
water-slab 96      32 H2O at 1.0 g/cm^3 in a box doubled along z (two liquid/vacuum interfaces)
========== ======= ==============================================================

Anything else is read as a file with :func:`ase.io.read` (the last frame).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from ..errors import UserError

#: The three rows of the issue: a ~21-atom molecule, a ~64-atom crystal, a >= 500-atom crystal.
DEFAULT_SYSTEMS = ("aspirin", "si-64", "si-512")


def _aspirin() -> Atoms:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)OC1=CC=CC=C1C(=O)O"))
    params = AllChem.ETKDGv3()
    params.randomSeed = 7
    if AllChem.EmbedMolecule(mol, params) != 0:  # pragma: no cover - RDKit failure
        raise RuntimeError("RDKit could not embed aspirin")
    AllChem.MMFFOptimizeMolecule(mol, maxIters=500)
    pos = mol.GetConformer().GetPositions()
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    atoms = Atoms(numbers=numbers, positions=pos - pos.mean(axis=0))
    return atoms


def _diamond_si(n: int) -> Atoms:
    from ase.build import bulk

    return bulk("Si", "diamond", a=5.43, cubic=True).repeat((n, n, n))


def _water(n_molecules: int, seed: int = 11) -> Atoms:
    """``n_molecules`` rigid-geometry waters at 1.0 g/cm^3 on a cubic grid, random orientations."""
    from ase.build import molecule

    mass = n_molecules * 18.015 / 0.602214076  # g/mol -> (g/cm^3)*A^3 at density 1
    box = mass ** (1.0 / 3.0)
    per_side = int(np.ceil(n_molecules ** (1.0 / 3.0)))
    spacing = box / per_side
    rng = np.random.default_rng(seed)
    sites = np.array([(i, j, k) for i in range(per_side) for j in range(per_side) for k in range(per_side)])
    sites = sites[rng.permutation(len(sites))[:n_molecules]]
    template = molecule("H2O")
    template.positions -= template.positions[0]  # O at the origin
    atoms = Atoms(cell=[box, box, box], pbc=True)
    for site in sites:
        w = template.copy()
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        a, b, c, d = q
        rot = np.array(
            [
                [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
                [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
            ]
        )
        w.positions = w.positions @ rot.T + (site + 0.5) * spacing
        atoms += w
    atoms.wrap()
    return atoms


def _cu(kind: str) -> Atoms:
    from ase.build import bulk

    if kind == "cu-64":
        return bulk("Cu", "fcc", a=3.61).repeat((4, 4, 4))
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat((5, 5, 5))


def _si_vacancy() -> Atoms:
    atoms = _diamond_si(2)
    del atoms[0]
    return atoms


def _si_slab() -> Atoms:
    from ase.build import diamond111

    atoms = diamond111("Si", size=(2, 2, 12), a=5.43, vacuum=6.0, orthogonal=False)
    atoms.pbc = True  # 12 A of vacuum between images: more than any student cutoff
    return atoms


def _water_slab() -> Atoms:
    atoms = _water(32)
    cell = atoms.cell.array.copy()
    atoms.positions[:, 2] += 0.5 * cell[2, 2]
    cell[2] *= 2.0
    atoms.set_cell(cell, scale_atoms=False)
    return atoms


_BUILTINS = {
    "aspirin": _aspirin,
    "si-64": lambda: _diamond_si(2),
    "si-512": lambda: _diamond_si(4),
    "water-192": lambda: _water(64),
    "water-576": lambda: _water(192),
    "cu-64": lambda: _cu("cu-64"),
    "cu-500": lambda: _cu("cu-500"),
    "si-216": lambda: _diamond_si(3),
    "si-vac-63": _si_vacancy,
    "si-slab": _si_slab,
    "water-96": lambda: _water(32),
    "water-slab": _water_slab,
}

BUILTIN_SYSTEMS = tuple(_BUILTINS)


@dataclass
class BenchSystem:
    """One named structure the bench times and runs MD on."""

    name: str
    atoms: Atoms
    source: str  # "builtin" or the file path

    @property
    def elements(self) -> frozenset[int]:
        return frozenset(int(z) for z in self.atoms.numbers)

    @property
    def formula(self) -> str:
        return self.atoms.get_chemical_formula()


def load_system(spec) -> BenchSystem:
    """A built-in name, a path to any file ASE reads, or an ``ase.Atoms`` -> :class:`BenchSystem`.

    Raises :class:`UserError` for an unknown name or an unreadable / empty file.
    """
    if isinstance(spec, BenchSystem):
        return spec
    if isinstance(spec, Atoms):
        name = spec.info.get("name") or spec.get_chemical_formula()
        return BenchSystem(str(name), spec.copy(), "atoms")
    spec = str(spec)
    key = spec.lower()
    if key in _BUILTINS:
        return BenchSystem(key, _BUILTINS[key](), "builtin")
    if not os.path.exists(spec):
        raise UserError(
            f"system {spec!r} is neither a built-in ({', '.join(BUILTIN_SYSTEMS)}) nor an existing file; "
            "give a built-in name or a structure file ASE can read"
        )
    from ase.io import read

    try:
        atoms = read(spec, index=-1)
    except Exception as err:  # ASE raises many types for unreadable files
        raise UserError(
            f"cannot read system file {spec}: {type(err).__name__}: {err}; give a file ASE can read (xyz, cif, "
            "POSCAR, ...)"
        ) from None
    if len(atoms) == 0:
        raise UserError(f"system file {spec} holds no atoms; give a structure with at least one atom")
    atoms.calc = None
    name = os.path.splitext(os.path.basename(spec))[0]
    return BenchSystem(name, atoms, spec)


def symbols(zs) -> str:
    """``{6, 1, 8}`` -> ``"C, H, O"`` (sorted by Z)."""
    return ", ".join(chemical_symbols[z] for z in sorted(int(z) for z in zs))
