"""Normalization statistics of a dataset file (for training), stored back into the file.

:func:`dataset_statistics` reads labels and compositions, counts neighbours within the
cutoff with vesin, and calls :func:`mlff_distiller.data.stats.compute_statistics`
(per-element reference energies by least squares, residual energy per atom mean/std in
eV/atom, force RMS in eV/A, mean neighbour count). :func:`store_statistics` writes the
result into the file attributes under ``"normalization"`` (crash-safe, like any append).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import fields as F
from ..errors import DatasetError
from .neighbors import neighbor_list
from .stats import CUTOFF_MAX, CUTOFF_MIN, NormalizationStats, compute_statistics
from .store import DatasetReader, DatasetWriter

ATTR_KEY = "normalization"


def dataset_statistics(reader_or_path, cutoff: float = 5.0, progress: bool = False) -> NormalizationStats:
    """Normalization statistics over every labelled structure of a dataset (eV, eV/A, A).

    Structures without an energy label are skipped; forces enter the RMS only where present.
    Raises DatasetError for an unlabelled pool.
    """
    if not (np.isfinite(cutoff) and CUTOFF_MIN <= cutoff <= CUTOFF_MAX):
        raise DatasetError(f"cutoff {cutoff} A is out of range; use {CUTOFF_MIN:g} to {CUTOFF_MAX:g} A (typical: 4-6 A), "
                           "the range a student accepts")
    own = not isinstance(reader_or_path, DatasetReader)
    r = DatasetReader(reader_or_path) if own else reader_or_path
    try:
        if F.ENERGY not in r.label_fields:
            raise DatasetError(f"{r.path} holds no energy labels (an unlabelled pool); label it before computing statistics")
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
                if fmask[i]:
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
    with DatasetReader(path) as r:
        label_fields = r.label_fields
    with DatasetWriter(path, label_fields=label_fields) as w:
        w.update_attrs({ATTR_KEY: stats.to_dict()})


def load_statistics(path) -> NormalizationStats:
    """Statistics stored in the file by :func:`store_statistics` (DatasetError if none)."""
    with DatasetReader(path) as r:
        d = r.attrs.get(ATTR_KEY)
    if not d:
        raise DatasetError(f"{Path(path)} has no stored normalization statistics; run `mlff-distill dataset stats {path}`")
    return NormalizationStats.from_dict(d)
