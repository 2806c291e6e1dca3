"""Molecules from SMILES: explicit hydrogens (the public failure lost them all), every built-in SMILES
embeds, conformers, charge/spin, SMILES files."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdMolDescriptors

from mlff_distiller.errors import ConfigError
from mlff_distiller.generation import molecules as mol
from mlff_distiller.generation.geometry import min_pair_distance


def formula_counts(smiles: str) -> Counter:
    """Element counts from RDKit's molecular formula (an independent route to the H count)."""
    formula = rdMolDescriptors.CalcMolFormula(Chem.MolFromSmiles(smiles))
    counts = Counter()
    for sym, n in re.findall(r"([A-Z][a-z]?)(\d*)", formula):
        counts[sym] += int(n) if n else 1
    return counts


def test_builtin_library_size_and_element_coverage():
    lib = mol.builtin_smiles()
    assert len(lib) >= 30
    assert len({e.smiles for e in lib}) == len(lib), "duplicate SMILES in the library"
    elements = set()
    for e in lib:
        elements |= mol.smiles_elements(e.smiles)
        assert Chem.GetFormalCharge(Chem.MolFromSmiles(e.smiles)) == 0, f"{e.name} is not neutral"
    assert {"H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I"} <= elements


def test_every_builtin_smiles_embeds_with_all_hydrogens():
    from ase.data import covalent_radii

    for entry in mol.builtin_smiles():
        confs = mol.embed_smiles(entry.smiles, n_conformers=1, seed=3)
        assert len(confs) == 1, entry.name
        atoms = confs[0]
        got = Counter(atoms.get_chemical_symbols())
        assert got == formula_counts(entry.smiles), f"{entry.name}: {got} vs formula"
        # every hydrogen sits at a bonding distance from some atom (not stacked or left at the origin)
        d = atoms.get_all_distances()
        np.fill_diagonal(d, np.inf)
        for i in np.flatnonzero(atoms.numbers == 1):
            j = int(np.argmin(d[i]))
            assert d[i, j] < 1.3 * (covalent_radii[1] + covalent_radii[atoms.numbers[j]]), entry.name
        assert min_pair_distance(atoms) > 0.7, entry.name
        assert not atoms.pbc.any()
        assert atoms.info["charge"] == 0 and atoms.info["spin_multiplicity"] == 1


@pytest.mark.parametrize("smiles, n_atoms, n_h", [("CCO", 9, 6), ("c1ccccc1", 12, 6), ("[H]C([H])([H])[H]", 5, 4),
                                                  ("O=C=O", 3, 0), ("ClC(Cl)(Cl)Cl", 5, 0), ("CC#N", 6, 3)])
def test_hydrogen_counts(smiles, n_atoms, n_h):
    atoms = mol.embed_smiles(smiles, 1, seed=0)[0]
    assert len(atoms) == n_atoms
    assert int((atoms.numbers == 1).sum()) == n_h == mol.expected_hydrogens(smiles)


def test_conformers_are_distinct_and_deterministic():
    a = mol.embed_smiles("CCCCCCO", n_conformers=4, seed=11)
    b = mol.embed_smiles("CCCCCCO", n_conformers=4, seed=11)
    assert len(a) >= 2
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.positions, y.positions)
    # different conformers differ in their internal geometry (not just a rigid motion)
    da, db = a[0].get_all_distances(), a[1].get_all_distances()
    assert np.abs(da - db).max() > 0.1


def test_mmff_preoptimisation_gives_chemical_bond_lengths():
    atoms = mol.embed_smiles("CCO", 1, seed=0, optimizer="mmff")[0]
    d = atoms.get_all_distances()
    c = np.flatnonzero(atoms.numbers == 6)
    assert abs(d[c[0], c[1]] - 1.51) < 0.05  # C-C single bond
    ch = [d[i, j] for i in c for j in np.flatnonzero(atoms.numbers == 1) if d[i, j] < 1.3]
    assert len(ch) == 5 and all(abs(x - 1.09) < 0.04 for x in ch)


def test_charge_and_spin_from_smiles():
    cation = mol.embed_smiles("C[N+](C)(C)C", 1)[0]
    assert cation.info["charge"] == 1
    radical = mol.embed_smiles("[CH3]", 1)[0]
    assert radical.info["spin_multiplicity"] == 2 and len(radical) == 4


def test_invalid_smiles_raises_smiles_error_naming_it():
    with pytest.raises(mol.SmilesError, match="C1CC"):
        mol.embed_smiles("C1CC", 1)
    with pytest.raises(ConfigError, match="optimizer"):
        mol.embed_smiles("CCO", 1, optimizer="gaff")


def test_smiles_file_parsing(tmp_path):
    f = tmp_path / "mols.smi"
    f.write_text("# my molecules\nCC#N acetonitrile\n\nCCO  # ethanol, no name\nc1ccccc1\tbenzene extra\n")
    entries = mol.read_smiles_file(f)
    assert [(e.smiles, e.name) for e in entries] == [("CC#N", "acetonitrile"), ("CCO", "CCO"),
                                                      ("c1ccccc1", "benzene")]
    with pytest.raises(ConfigError, match="cannot read SMILES file") as err:
        mol.read_smiles_file(tmp_path / "missing.smi")
    assert "\n" not in str(err.value)
