"""Normalization statistics for training (per-element reference energies, scale, shift).

* ``element_energies``: per-element reference energies (eV/atom) fitted by least squares
  on composition, ``E ~ sum_Z n_Z e_Z``.
* ``energy_mean`` / ``energy_std``: mean and standard deviation of the residual energy
  per atom (eV/atom) after subtracting the references.
* ``force_rms``: root mean square of force components (eV/A), the natural energy scale
  of the model output per atom.
* ``avg_num_neighbors``: mean neighbour count within ``cutoff`` (A), used to normalise
  message sums.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from ..errors import DatasetError

# Neighbour cutoffs (A) a student and the dataset statistics accept: below 0.5 A no bond is
# seen; above 20 A the neighbour lists grow beyond memory (and a student gains nothing).
CUTOFF_MIN, CUTOFF_MAX = 0.5, 20.0


@dataclass
class NormalizationStats:
    element_energies: dict[int, float] = field(default_factory=dict)  # eV per atom of element Z
    energy_mean: float = 0.0  # eV/atom, residual after references
    energy_std: float = 1.0  # eV/atom
    force_rms: float = 1.0  # eV/A
    avg_num_neighbors: float = 1.0
    cutoff: float = 5.0  # A
    n_structures: int = 0
    units: str = "energy eV, force eV/A, length A"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["element_energies"] = {str(k): float(v) for k, v in self.element_energies.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NormalizationStats":
        d = dict(d)
        d["element_energies"] = {int(k): float(v) for k, v in d.get("element_energies", {}).items()}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_json(self, path=None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            with open(path, "w") as fh:
                fh.write(text + "\n")
        return text

    @classmethod
    def from_json(cls, path_or_text) -> "NormalizationStats":
        s = str(path_or_text)
        text = s if s.lstrip().startswith("{") else open(s).read()
        return cls.from_dict(json.loads(text))


def fit_element_energies(numbers_per_structure: Sequence[np.ndarray], energies: np.ndarray) -> dict[int, float]:
    """Least-squares per-element reference energies (eV) from compositions and total energies."""
    if len(energies) == 0:
        raise DatasetError("cannot fit reference energies: the dataset has no labelled energies")
    elements = sorted({int(z) for nums in numbers_per_structure for z in np.unique(nums)})
    col = {z: k for k, z in enumerate(elements)}
    counts = np.zeros((len(energies), len(elements)))
    for r, nums in enumerate(numbers_per_structure):
        zs, cs = np.unique(nums, return_counts=True)
        for z, c in zip(zs, cs):
            counts[r, col[int(z)]] = c
    # Small ridge term keeps the fit defined when compositions are collinear
    # (e.g. a single element, or fixed stoichiometry) without biasing well-posed fits.
    lam = 1e-8 * max(1.0, float(np.mean(counts**2)))
    a = counts.T @ counts + lam * np.eye(len(elements))
    b = counts.T @ np.asarray(energies, dtype=np.float64)
    coef = np.linalg.solve(a, b)
    return {z: float(coef[col[z]]) for z in elements}


def compute_statistics(
    numbers_per_structure: Sequence[np.ndarray],
    energies: np.ndarray,
    forces: Sequence[np.ndarray] | None = None,
    neighbor_counts: Sequence[int] | None = None,
    cutoff: float = 5.0,
) -> NormalizationStats:
    """All normalization statistics from plain arrays (eV, eV/A)."""
    energies = np.asarray(energies, dtype=np.float64)
    refs = fit_element_energies(numbers_per_structure, energies)
    n = np.array([len(x) for x in numbers_per_structure], dtype=np.float64)
    ref_e = np.array([sum(refs[int(z)] for z in nums) for nums in numbers_per_structure])
    resid = (energies - ref_e) / n
    if forces is not None and len(forces):
        allf = np.concatenate([np.asarray(f, np.float64).ravel() for f in forces])
        force_rms = float(np.sqrt(np.mean(allf**2))) if allf.size else 1.0
    else:
        force_rms = 1.0
    avg_nb = float(np.sum(neighbor_counts) / n.sum()) if neighbor_counts is not None else 1.0
    std = float(np.std(resid))
    return NormalizationStats(
        element_energies=refs,
        energy_mean=float(np.mean(resid)),
        energy_std=std if std > 1e-12 else 1.0,
        force_rms=force_rms if force_rms > 1e-12 else 1.0,
        avg_num_neighbors=max(avg_nb, 1.0),
        cutoff=float(cutoff),
        n_structures=int(len(energies)),
    )
