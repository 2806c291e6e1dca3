"""Neighbour lists from :mod:`vesin` (full lists, any cell shape, cells smaller than the cutoff).

Convention (see :mod:`mlff_distiller.fields`): for each pair ``(i, j)`` with integer shift
``S``, ``r_ij = positions[j] - positions[i] + S @ cell`` and ``|r_ij| < cutoff``. Every
unordered pair appears twice, as ``(i, j, S)`` and ``(j, i, -S)``. Self-pairs ``i == j``
appear only with ``S != 0`` (periodic images).

:func:`closest_pair` is the one owner of "how close are the closest atoms" (generation's
minimum-distance criterion, the labelling pre-check, the quality check, MD monitors).
vesin is imported on first use: it imports torch, which a labelling worker for an analytic
teacher must not pay for (it uses ``engine="ase"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ase.data import covalent_radii

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
    periodic: bool | list[bool] = False
    if cell is None or not pbc.any():
        box = np.zeros((3, 3))
    else:
        box = np.ascontiguousarray(cell, dtype=np.float64)
        if abs(np.linalg.det(box)) < 1e-10:
            raise UserError(
                "periodic structure has a singular cell (zero volume): give all three cell vectors "
                "or set pbc=False along the directions without one"
            )
        axes = [bool(p) for p in pbc]
        periodic = True if all(axes) else axes
    if len(positions) == 0:
        return np.zeros((2, 0), np.int64), np.zeros((0, 3), np.int64)
    import vesin

    calc = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, s = calc.compute(points=positions, box=box, periodic=periodic, quantities="ijS")
    edge_index = np.stack([i.astype(np.int64), j.astype(np.int64)])
    return edge_index, s.astype(np.int64).reshape(-1, 3)


def edge_vectors(positions: np.ndarray, cell: np.ndarray, edge_index: np.ndarray, edge_shift: np.ndarray) -> np.ndarray:
    """Pair vectors ``r_ij`` (n_edges, 3) in A for one structure (numpy)."""
    i, j = edge_index
    return positions[j] - positions[i] + edge_shift @ np.asarray(cell)


@dataclass(frozen=True)
class ClosestPair:
    """The closest pair of atoms within a cutoff (periodic images included).

    ``distance`` (A) and the pair ``(i, j)`` closest in distance; ``ratio`` the smallest
    ``d_ij / (r_cov_i + r_cov_j)`` (``ase.data.covalent_radii``; may belong to another pair),
    computed only when atomic numbers were given. ``inf`` and ``-1`` when no pair is within
    the cutoff.
    """

    distance: float = math.inf
    i: int = -1
    j: int = -1
    ratio: float = math.inf

    @property
    def found(self) -> bool:
        return self.i >= 0


def _ase_pairs(positions, cell, pbc, cutoff) -> tuple[np.ndarray, np.ndarray]:
    """The same full list as :func:`neighbor_list`, from ASE (numpy only, no torch)."""
    from ase.neighborlist import primitive_neighbor_list

    i, j, s = primitive_neighbor_list("ijS", pbc, np.asarray(cell, dtype=np.float64), positions, float(cutoff),
                                      self_interaction=False)
    return np.stack([i.astype(np.int64), j.astype(np.int64)]), np.asarray(s, np.int64).reshape(-1, 3)


def pairs_within(positions, cell, pbc, cutoff: float, *, engine: str = "vesin"):
    """``(edge_index, edge_shift, box, distances)``: every pair closer than ``cutoff`` (A), as in
    :func:`neighbor_list`, with ``box`` the cell the shifts refer to (zeros when not periodic) and
    the distances in A. ``engine`` ``"vesin"`` (fast) or ``"ase"`` (numpy only)."""
    positions = np.asarray(positions, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    box = np.zeros((3, 3)) if cell is None or not pbc.any() else np.asarray(cell, dtype=np.float64)
    if engine == "ase":
        edge_index, edge_shift = _ase_pairs(positions, box, pbc, cutoff)
    else:
        edge_index, edge_shift = neighbor_list(positions, box, pbc, cutoff)
    d = np.linalg.norm(edge_vectors(positions, box, edge_index, edge_shift), axis=1)
    return edge_index, edge_shift, box, d


def closest_pair(positions, cell, pbc, cutoff: float, numbers=None, *, engine: str = "vesin") -> ClosestPair:
    """Closest pair of atoms closer than ``cutoff`` (A), periodic images included.

    ``cell`` (3, 3) A or ``None``; ``pbc`` (3,) bool; ``numbers`` (optional atomic numbers)
    adds the covalent-radius ratio. ``engine`` ``"vesin"`` (fast) or ``"ase"`` (numpy only).
    A periodic cell of zero volume raises :class:`UserError` (vesin engine).
    """
    edge_index, _, _, d = pairs_within(positions, cell, pbc, cutoff, engine=engine)
    if edge_index.shape[1] == 0:
        return ClosestPair()
    k = int(np.argmin(d))
    ratio = math.inf
    if numbers is not None:
        radii = covalent_radii[np.clip(np.asarray(numbers), 0, len(covalent_radii) - 1)]
        ratio = float((d / (radii[edge_index[0]] + radii[edge_index[1]])).min())
    return ClosestPair(float(d[k]), int(edge_index[0, k]), int(edge_index[1, k]), ratio)
