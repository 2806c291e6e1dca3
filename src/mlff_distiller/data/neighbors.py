"""Neighbour lists from :mod:`vesin` (full lists, any cell shape, cells smaller than the cutoff).

Convention (see :mod:`mlff_distiller.fields`): for each pair ``(i, j)`` with integer shift
``S``, ``r_ij = positions[j] - positions[i] + S @ cell`` and ``|r_ij| < cutoff``. Every
unordered pair appears twice, as ``(i, j, S)`` and ``(j, i, -S)``. Self-pairs ``i == j``
appear only with ``S != 0`` (periodic images).
"""

from __future__ import annotations

import numpy as np
import vesin

from ..errors import UserError


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray | None, pbc, cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    """Full neighbour list within ``cutoff`` (A).

    Returns ``edge_index`` (2, n_edges) int64 and ``edge_shift`` (n_edges, 3) int64.
    A structure without a cell (or with ``pbc`` all false) is treated as isolated.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if cell is None or not pbc.any():
        box = np.zeros((3, 3))
        periodic = False
    else:
        box = np.ascontiguousarray(cell, dtype=np.float64)
        if abs(np.linalg.det(box)) < 1e-10:
            raise UserError(
                "periodic structure has a singular cell (zero volume): give all three cell vectors "
                "or set pbc=False along the directions without one"
            )
        periodic = [bool(p) for p in pbc]
        if all(periodic):
            periodic = True
    if len(positions) == 0:
        return np.zeros((2, 0), np.int64), np.zeros((0, 3), np.int64)
    calc = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, s = calc.compute(points=positions, box=box, periodic=periodic, quantities="ijS")
    edge_index = np.stack([i.astype(np.int64), j.astype(np.int64)])
    return edge_index, s.astype(np.int64).reshape(-1, 3)


def edge_vectors(positions: np.ndarray, cell: np.ndarray, edge_index: np.ndarray, edge_shift: np.ndarray) -> np.ndarray:
    """Pair vectors ``r_ij`` (n_edges, 3) in A for one structure (numpy)."""
    i, j = edge_index
    return positions[j] - positions[i] + edge_shift @ np.asarray(cell)
