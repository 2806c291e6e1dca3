"""Molecules from SMILES with RDKit: explicit hydrogens, ETKDG conformers, force-field pre-optimisation.

Positions are in Angstrom. The hydrogen count of every embedded conformer is checked against
the molecular formula RDKit derives from the SMILES: a molecule that silently loses its
hydrogens (the failure of the one public attempt at this system) raises instead of entering
a pool.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from ase import Atoms

from ..errors import ConfigError, UserError

#: Force fields accepted for the pre-optimisation of conformers.
OPTIMIZERS = ("mmff", "uff", "none")


class SmilesError(UserError):
    """A SMILES string cannot be parsed or embedded; the run skips it and counts it."""


@dataclass(frozen=True)
class MoleculeEntry:
    smiles: str
    name: str


def builtin_smiles() -> list[MoleculeEntry]:
    """The built-in library (``generation/data/smiles.txt``): neutral molecules over H C N O F P S Cl Br I."""
    text = resources.files("mlff_distiller.generation").joinpath("data/smiles.txt").read_text()
    return _parse_smiles_lines(text.splitlines(), "built-in library")


def read_smiles_file(path: str | Path) -> list[MoleculeEntry]:
    """A user SMILES file: one ``SMILES [name]`` per line, ``#`` starts a comment."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read SMILES file '{path}': {err.__class__.__name__}; give a readable text file "
                          "with one SMILES per line") from None
    return _parse_smiles_lines(text.splitlines(), str(path))


def _parse_smiles_lines(lines, origin: str) -> list[MoleculeEntry]:
    entries = []
    for line in lines:
        parts = line.split()
        # '#' is also the SMILES triple bond: only a line or a field that *starts* with it is a comment
        if not parts or parts[0].startswith("#"):
            continue
        name = parts[1] if len(parts) > 1 and not parts[1].startswith("#") else parts[0]
        entries.append(MoleculeEntry(parts[0], name))
    return entries


def _rdkit():
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")  # we report bad SMILES ourselves, once, in one line
    return Chem, AllChem


def parse_smiles(smiles: str):
    """RDKit molecule with explicit hydrogens; ``SmilesError`` if the SMILES is invalid."""
    Chem, _ = _rdkit()
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise SmilesError(f"invalid SMILES '{smiles}' (RDKit cannot parse it)")
    return Chem.AddHs(mol)


def expected_hydrogens(smiles: str) -> int:
    """Number of hydrogens implied by the SMILES (implicit + explicit), from RDKit's valence model."""
    Chem, _ = _rdkit()
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise SmilesError(f"invalid SMILES '{smiles}' (RDKit cannot parse it)")
    return sum(a.GetTotalNumHs() for a in mol.GetAtoms()) + sum(1 for a in mol.GetAtoms() if a.GetAtomicNum() == 1)


def count_atoms(smiles: str) -> int:
    """Number of atoms including hydrogens."""
    return parse_smiles(smiles).GetNumAtoms()


def smiles_elements(smiles: str) -> set[str]:
    return {a.GetSymbol() for a in parse_smiles(smiles).GetAtoms()}


def stable_seed(text: str, seed: int) -> int:
    """A seed that depends only on ``text`` and ``seed`` (not on Python's hash randomisation)."""
    return int((zlib.crc32(text.encode()) ^ (int(seed) * 2654435761)) % (2**31 - 1))


def embed_smiles(smiles: str, n_conformers: int = 1, seed: int = 0, optimizer: str = "mmff",
                 max_iters: int = 500) -> list[Atoms]:
    """Embed ``n_conformers`` 3-D conformers (ETKDGv3), pre-optimised with ``optimizer``.

    Returns non-periodic ``Atoms`` (no cell) with ``info["charge"]`` (formal charge, e) and
    ``info["spin_multiplicity"]`` (radical electrons + 1). ``optimizer="mmff"`` falls back to
    UFF when MMFF94 lacks parameters. Raises ``SmilesError`` when parsing or embedding fails.
    """
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer '{optimizer}' unknown; allowed: {', '.join(OPTIMIZERS)}")
    Chem, AllChem = _rdkit()
    from rdkit.Chem import Descriptors

    mol = parse_smiles(smiles)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed) % (2**31 - 1)
    params.numThreads = 1
    params.pruneRmsThresh = 0.1
    conf_ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=int(n_conformers), params=params))
    if not conf_ids:
        params.useRandomCoords = True  # large or strained molecules embed from random coordinates
        conf_ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=int(n_conformers), params=params))
    if not conf_ids:
        raise SmilesError(f"SMILES '{smiles}' could not be embedded in 3-D by ETKDG")
    if optimizer == "mmff" and AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMoleculeConfs(mol, numThreads=1, maxIters=max_iters)
    elif optimizer in ("mmff", "uff") and AllChem.UFFHasAllMoleculeParams(mol):
        AllChem.UFFOptimizeMoleculeConfs(mol, numThreads=1, maxIters=max_iters)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    n_h = int((numbers == 1).sum())
    if n_h != expected_hydrogens(smiles):
        raise RuntimeError(f"hydrogens lost while embedding '{smiles}': {n_h} present, "
                           f"{expected_hydrogens(smiles)} expected")
    charge = int(Chem.GetFormalCharge(mol))
    multiplicity = int(Descriptors.NumRadicalElectrons(mol)) + 1
    out = []
    for cid in conf_ids:
        pos = np.array(mol.GetConformer(cid).GetPositions(), dtype=float)
        atoms = Atoms(numbers=numbers, positions=pos - pos.mean(axis=0), pbc=False)
        atoms.info["charge"] = charge
        atoms.info["spin_multiplicity"] = multiplicity
        out.append(atoms)
    return out
