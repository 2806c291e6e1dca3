"""``CommitteeCalculator``: an ASE calculator averaging several students, with their disagreement.

Results (ASE units):

* ``energy`` / ``free_energy`` (eV), ``forces`` (eV/A), ``stress`` (eV/A^3, when asked for and
  the cell is periodic in 3-D): the committee mean;
* ``forces_committee_std`` (eV/A, shape ``(n_atoms,)``): per atom, the root-mean-square
  deviation of the members' force vectors from the mean force,
  ``sqrt(mean_m |F_m,i - <F_i>|^2)``;
* ``energy_committee_std`` (eV): standard deviation of the members' energies;
* ``forces_committee_std_max`` (eV/A): the largest per-atom value, a per-structure score.

The per-atom force disagreement is a cheap uncertainty estimate for uncertainty-aware MD:
members trained with different seeds and data orders agree where the training data cover
the configuration and disagree where they do not. Each member is a
:class:`~mlff_distiller.student.StudentCalculator` (its own Verlet neighbour list).
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ..errors import UserError


class CommitteeCalculator(Calculator):
    """Mean and spread of ``members``: run directories, student files, models or calculators.

    ``device``, ``skin`` and ``backend`` are passed to each member's ``StudentCalculator``.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "forces_committee_std",
                              "energy_committee_std", "forces_committee_std_max"]

    def __init__(self, members, device: str = "cpu", skin: float = 0.5, backend: str = "auto", **kwargs):
        super().__init__(**kwargs)
        from .calculator import StudentCalculator

        members = list(members) if isinstance(members, (list, tuple)) else [members]
        if not members:
            raise UserError("CommitteeCalculator: give at least one member (run directory, student file or model)")
        self.members = [
            m if isinstance(m, StudentCalculator) else StudentCalculator(m, device=device, skin=skin, backend=backend)
            for m in members
        ]

    def __len__(self) -> int:
        return len(self.members)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        want = ["energy", "forces"] + (["stress"] if "stress" in properties else [])
        energies, forces, stresses = [], [], []
        for calc in self.members:
            calc.calculate(self.atoms, want, system_changes)
            energies.append(float(calc.results["energy"]))
            forces.append(np.asarray(calc.results["forces"], dtype=np.float64))
            if "stress" in want:
                stresses.append(np.asarray(calc.results["stress"], dtype=np.float64))
        e = np.asarray(energies)
        f = np.stack(forces)  # (M, N, 3)
        f_mean = f.mean(axis=0)
        f_std = np.sqrt(np.mean(np.sum((f - f_mean) ** 2, axis=2), axis=0))  # (N,)
        self.results["energy"] = float(e.mean())
        self.results["free_energy"] = float(e.mean())
        self.results["forces"] = f_mean
        self.results["energy_committee_std"] = float(e.std())
        self.results["forces_committee_std"] = f_std
        self.results["forces_committee_std_max"] = float(f_std.max()) if len(f_std) else 0.0
        if stresses:
            self.results["stress"] = np.mean(stresses, axis=0)
