"""Normalization statistics for training: what they are, how they are fitted, where they are stored.

One owner of the per-element reference-energy fits (least squares for training, least
absolute deviation for the quality checks) and of the statistics stored in a dataset file.

* ``element_energies``: per-element reference energies (eV/atom) fitted by least squares
  on composition, ``E ~ sum_Z n_Z e_Z``.
* ``energy_mean`` / ``energy_std``: mean and standard deviation of the residual energy
  per atom (eV/atom) after subtracting the references.
* ``force_rms``: root mean square of force components (eV/A), the natural energy scale
  of the model output per atom.
* ``avg_num_neighbors``: mean neighbour count within ``cutoff`` (A), used to normalise
  message sums.

:func:`dataset_statistics` computes them over a dataset file (neighbours counted with
vesin); :func:`store_statistics` writes them into the file attributes under
``"normalization"`` (crash-safe, like any append) and :func:`load_statistics` reads them back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import fields as F
from ..errors import DatasetError

# Neighbour cutoffs (A) a student and the dataset statistics accept: below 0.5 A no bond is
# seen; above 20 A the neighbour lists grow beyond memory (and a student gains nothing).
CUTOFF_MIN, CUTOFF_MAX = 0.5, 20.0

# The file functions import the store (h5py) and vesin (torch) when called: a student that
# only needs NormalizationStats loads without them.

#: key of the statistics in a dataset file's attributes
ATTR_KEY = "normalization"


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


def composition_matrix(numbers_per_structure: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Atom counts ``(n_structures, n_elements)`` and the sorted atomic numbers of its columns."""
    elements = sorted({int(z) for nums in numbers_per_structure for z in np.unique(nums)})
    col = {z: k for k, z in enumerate(elements)}
    counts = np.zeros((len(numbers_per_structure), len(elements)))
    for r, nums in enumerate(numbers_per_structure):
        zs, cs = np.unique(nums, return_counts=True)
        counts[r, [col[int(z)] for z in zs]] = cs
    return counts, elements


def fit_element_energies(numbers_per_structure: Sequence[np.ndarray], energies: np.ndarray) -> dict[int, float]:
    """Least-squares per-element reference energies (eV) from compositions and total energies."""
    if len(energies) == 0:
        raise DatasetError("cannot fit reference energies: the dataset has no labelled energies")
    counts, elements = composition_matrix(numbers_per_structure)
    # Small ridge term keeps the fit defined when compositions are collinear
    # (e.g. a single element, or fixed stoichiometry) without biasing well-posed fits.
    lam = 1e-8 * max(1.0, float(np.mean(counts**2)))
    a = counts.T @ counts + lam * np.eye(len(elements))
    b = counts.T @ np.asarray(energies, dtype=np.float64)
    coef = np.linalg.solve(a, b)
    return {z: float(coef[k]) for k, z in enumerate(elements)}


def robust_element_fit(numbers_per_structure, energies, iterations: int = 60) -> dict[int, float]:
    """Per-element reference energies (eV) minimising the summed |residual energy per atom|.

    A least-absolute-deviation fit by iteratively reweighted least squares, started from the
    ordinary least-squares fit (:func:`fit_element_energies`). Unlike least squares, one wild
    energy cannot drag the reference of an element that occurs in few structures (and so
    hide itself while making its neighbours look wrong). The quality checks use it.
    """
    refs = fit_element_energies(numbers_per_structure, energies)
    counts, elements = composition_matrix(numbers_per_structure)
    n = counts.sum(axis=1)
    a = counts / n[:, None]  # per-atom composition
    b = np.asarray(energies, dtype=np.float64) / n  # energy per atom
    coef = np.array([refs[z] for z in elements])
    lam = 1e-10 * max(1.0, float(np.mean(a**2)))
    for _ in range(iterations):
        w = 1.0 / np.maximum(np.abs(b - a @ coef), 1e-6)
        aw = a * w[:, None]
        new = np.linalg.solve(a.T @ aw + lam * np.eye(len(elements)), aw.T @ b)
        if np.max(np.abs(new - coef)) < 1e-9:
            coef = new
            break
        coef = new
    return {z: float(coef[k]) for k, z in enumerate(elements)}


def residual_energy_per_atom(
    numbers_per_structure: Sequence[np.ndarray], energies, refs: dict[int, float]
) -> np.ndarray:
    """``(E - sum_Z n_Z e_Z) / n_atoms`` per structure (eV/atom) for reference energies ``refs``."""
    n = np.array([len(x) for x in numbers_per_structure], dtype=np.float64)
    ref_e = np.array([sum(refs[int(z)] for z in nums) for nums in numbers_per_structure])
    return (np.asarray(energies, dtype=np.float64) - ref_e) / n


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
    resid = residual_energy_per_atom(numbers_per_structure, energies, refs)
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


def dataset_statistics(reader_or_path, cutoff: float = 5.0, progress: bool = False) -> NormalizationStats:
    """Normalization statistics over every labelled structure of a dataset (eV, eV/A, A).

    Structures without an energy label are skipped; forces enter the RMS only where present.
    Raises DatasetError for an unlabelled pool.
    """
    if not (np.isfinite(cutoff) and CUTOFF_MIN <= cutoff <= CUTOFF_MAX):
        raise DatasetError(
            f"cutoff {cutoff} A is out of range; use {CUTOFF_MIN:g} to {CUTOFF_MAX:g} A (typical: 4-6 A), "
            "the range a student accepts"
        )
    from .neighbors import neighbor_list
    from .store import DatasetReader

    own = not isinstance(reader_or_path, DatasetReader)
    r = DatasetReader(reader_or_path) if own else reader_or_path
    try:
        if F.ENERGY not in r.label_fields:
            raise DatasetError(
                f"{r.path} holds no energy labels (an unlabelled pool); label it before computing statistics"
            )
        emask = r.column(F.ENERGY + "_mask")
        fmask = r.column(F.FORCES + "_mask") if F.FORCES in r.label_fields else np.zeros(len(r), bool)
        energies_all = r.column(F.ENERGY)
        cells, pbcs = r.column(F.CELL), r.column(F.PBC)
        numbers_list, forces_list, energies, nb_counts = [], [], [], []
        bar = None
        if progress:
            from ..logs import progress as progress_bar

            bar = progress_bar(total=len(r), desc="statistics", unit="struct")
        forces_blocks = r.iter_atom_blocks(F.FORCES) if F.FORCES in r.label_fields else None
        it_num = r.iter_atom_blocks(F.NUMBERS)
        it_pos = r.iter_atom_blocks(F.POSITIONS)
        gi = 0
        for offsets, nums in it_num:
            _, pos = next(it_pos)
            frc = next(forces_blocks)[1] if forces_blocks is not None else None
            for j in range(len(offsets) - 1):
                if bar is not None:
                    bar.update(1)
                i = gi + j
                if not emask[i]:
                    continue
                a, b = offsets[j], offsets[j + 1]
                numbers_list.append(nums[a:b].astype(np.int64))
                energies.append(energies_all[i])
                if fmask[i] and frc is not None:
                    forces_list.append(frc[a:b])
                ei, _ = neighbor_list(pos[a:b].astype(np.float64), cells[i], pbcs[i], cutoff)
                nb_counts.append(ei.shape[1])
            gi += len(offsets) - 1
        if bar is not None:
            bar.close()
        if not energies:
            raise DatasetError(f"{r.path} has no structure with an energy label; nothing to compute statistics from")
        return compute_statistics(numbers_list, np.asarray(energies), forces_list or None, nb_counts, cutoff=cutoff)
    finally:
        if own:
            r.close()


def store_statistics(path, stats: NormalizationStats) -> None:
    """Write ``stats`` into the dataset's attributes (key ``"normalization"``) and finalize the file."""
    from .store import DatasetReader, DatasetWriter

    with DatasetReader(path) as r:
        label_fields = r.label_fields
    with DatasetWriter(path, label_fields=label_fields) as w:
        w.update_attrs({ATTR_KEY: stats.to_dict()})


def load_statistics(path) -> NormalizationStats:
    """Statistics stored in the file by :func:`store_statistics` (DatasetError if none)."""
    from .store import DatasetReader

    with DatasetReader(path) as r:
        d = r.attrs.get(ATTR_KEY)
    if not d:
        raise DatasetError(
            f"{Path(path)} has no stored normalization statistics; run `mlff-distill dataset stats {path}`"
        )
    return NormalizationStats.from_dict(d)
