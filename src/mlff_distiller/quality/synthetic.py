"""Small EMT-labelled datasets with provenance, for the quality tests and benchmark.

EMT (ASE's effective-medium theory) is an analytic, conservative, offline teacher for Al,
Cu, Ag, Au, Ni, Pd, Pt (and, crudely, H, C, N, O). Labels are energy (eV), forces (eV/A)
and, for 3-D periodic cells, stress (Voigt, eV/A^3) on a ``SinglePointCalculator``.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cluster import Icosahedron

# name -> builder of the root structure (periodic crystals, clusters, molecules)
SOURCES = {
    "bulk:Cu-fcc": lambda: bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2)),
    "bulk:Al-fcc": lambda: bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 2, 2)),
    "bulk:Ni-bcc": lambda: bulk("Ni", "bcc", a=2.80, cubic=True).repeat((3, 3, 3)),
    "bulk:Pt-fcc-prim": lambda: bulk("Pt", "fcc", a=3.92).repeat((3, 3, 3)),
    "cluster:Ag-ico13": lambda: _boxless(Icosahedron("Ag", 2, latticeconstant=4.09)),
    "cluster:Au-ico55": lambda: _boxless(Icosahedron("Au", 3, latticeconstant=4.08)),
    "bulk:CuAu-L12": lambda: _cu3au(),
    "smiles:CH4": lambda: _boxless(molecule("CH4")),
    "smiles:C2H6": lambda: _boxless(molecule("C2H6")),
}


def _boxless(atoms: Atoms) -> Atoms:
    atoms.cell = np.zeros((3, 3))
    atoms.pbc = False
    atoms.center()
    atoms.cell = np.zeros((3, 3))
    return atoms


def _cu3au() -> Atoms:
    a = 3.75
    atoms = Atoms("AuCu3", scaled_positions=[(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)],
                  cell=[a, a, a], pbc=True)
    return atoms.repeat((2, 2, 2))


def label_emt(atoms: Atoms) -> Atoms:
    """Attach EMT energy, forces (and stress for 3-D cells) as a SinglePointCalculator."""
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress(voigt=True)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def emt_dataset(sources=("bulk:Cu-fcc",), n_per_source: int = 10, amplitude: float = 0.05, seed: int = 0,
                sampler: str = "rattle", include_minimum: bool = False) -> list[Atoms]:
    """Rattled copies (Gaussian, ``amplitude`` A) of each source's root structure, EMT-labelled.

    Provenance is filled as in ``docs/architecture.md`` (source, sampler, params, parent,
    group, seed, teacher).
    """
    rng = np.random.default_rng(seed)
    out: list[Atoms] = []
    for s_idx, name in enumerate(sources):
        root = SOURCES[name]()
        for k in range(n_per_source):
            atoms = root.copy()
            this_sampler = sampler
            if include_minimum and k == 0:
                this_sampler = "none"
            else:
                atoms.positions += rng.normal(0.0, amplitude, size=atoms.positions.shape)
            sseed = int(rng.integers(2**31))
            label_emt(atoms)
            atoms.info["provenance"] = {
                "source": name,
                "sampler": this_sampler,
                "params": {"stdev": amplitude} if this_sampler != "none" else {},
                "parent": -1,
                "group": f"{name}#{s_idx}",
                "seed": sseed,
                "teacher": "emt",
            }
            out.append(atoms)
    return out
