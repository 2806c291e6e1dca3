"""Atoms <-> tensors: the one adapter between ASE structures and the model's batch dict.

A *graph* is a dict of numpy arrays for one structure; :func:`collate` stacks graphs into
a batch dict of torch tensors with the keys of :mod:`mlff_distiller.fields`:

``numbers`` (N,) int64, ``positions`` (N,3), ``cell`` (B,3,3), ``pbc`` (B,3) bool,
``batch`` (N,) int64, ``ptr`` (B+1,) int64, ``n_atoms`` (B,) int64,
``edge_index`` (2,E) int64 (already offset into the batch), ``edge_shift`` (E,3) float
(same dtype as positions), and when labelled: ``energy`` (B,) float64, ``forces`` (N,3),
``stress`` (B,6), with masks ``energy_mask`` (B,), ``forces_mask`` (B,), ``stress_mask`` (B,)
(bool: which structures carry that label).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from .. import fields as F
from .neighbors import neighbor_list


def atoms_to_graph(atoms, cutoff: float, with_labels: bool = True) -> dict[str, np.ndarray]:
    """One ``ase.Atoms`` -> dict of numpy arrays including its neighbour list.

    Labels are read from ``atoms.calc.results`` (e.g. a SinglePointCalculator) when present.
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    positions = atoms.get_positions()
    edge_index, edge_shift = neighbor_list(positions, cell, pbc, cutoff)
    g = {
        F.NUMBERS: atoms.numbers.astype(np.int64),
        F.POSITIONS: positions,
        F.CELL: cell,
        F.PBC: pbc,
        F.EDGE_INDEX: edge_index,
        F.EDGE_SHIFT: edge_shift,
    }
    if with_labels and atoms.calc is not None:
        res = atoms.calc.results
        if "energy" in res:
            g[F.ENERGY] = np.float64(res["energy"])
        if "forces" in res:
            g[F.FORCES] = np.asarray(res["forces"], dtype=np.float64)
        if "stress" in res and pbc.all():
            s = np.asarray(res["stress"], dtype=np.float64)
            g[F.STRESS] = F.matrix_to_voigt(s) if s.shape == (3, 3) else s
    return g


def collate(graphs: Sequence[dict], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Stack per-structure graphs into one batch dict of tensors (see module docstring)."""
    n_atoms = np.array([len(g[F.NUMBERS]) for g in graphs], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(n_atoms)])
    edge_index = np.concatenate([g[F.EDGE_INDEX] + ptr[k] for k, g in enumerate(graphs)], axis=1)
    out = {
        F.NUMBERS: torch.from_numpy(np.concatenate([g[F.NUMBERS] for g in graphs]).astype(np.int64)),
        F.POSITIONS: torch.from_numpy(np.concatenate([g[F.POSITIONS] for g in graphs])).to(dtype),
        F.CELL: torch.from_numpy(np.stack([g[F.CELL] for g in graphs])).to(dtype),
        F.PBC: torch.from_numpy(np.stack([g[F.PBC] for g in graphs])),
        F.BATCH: torch.from_numpy(np.repeat(np.arange(len(graphs)), n_atoms)),
        F.PTR: torch.from_numpy(ptr),
        F.N_ATOMS: torch.from_numpy(n_atoms),
        F.EDGE_INDEX: torch.from_numpy(edge_index.astype(np.int64)),
        F.EDGE_SHIFT: torch.from_numpy(np.concatenate([g[F.EDGE_SHIFT] for g in graphs])).to(dtype),
    }
    for key, shape in ((F.ENERGY, ()), (F.STRESS, (6,))):
        mask = np.array([key in g for g in graphs])
        if mask.any():
            vals = np.stack([np.asarray(g[key], np.float64) if key in g else np.zeros(shape) for g in graphs])
            out[key] = torch.from_numpy(vals).to(torch.float64 if key == F.ENERGY else dtype)
            out[key + "_mask"] = torch.from_numpy(mask)
    fmask = np.array([F.FORCES in g for g in graphs])
    if fmask.any():
        out[F.FORCES] = torch.from_numpy(
            np.concatenate([g[F.FORCES] if F.FORCES in g else np.zeros((len(g[F.NUMBERS]), 3)) for g in graphs])
        ).to(dtype)
        out[F.FORCES + "_mask"] = torch.from_numpy(fmask)
    return out


def atoms_to_batch(atoms_list: Iterable, cutoff: float, dtype: torch.dtype = torch.float32, with_labels: bool = False):
    """Convenience: list of ``ase.Atoms`` -> batch dict (used by calculator and bench)."""
    return collate([atoms_to_graph(a, cutoff, with_labels=with_labels) for a in atoms_list], dtype=dtype)
