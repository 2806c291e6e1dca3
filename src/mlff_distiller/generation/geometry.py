"""Geometry helpers shared by the structure sources and samplers.

Distances are in Angstrom. The minimum-distance criterion used throughout the generation
stage is relative to covalent radii: a pair ``(i, j)`` is "too close" when
``d_ij < factor * (r_cov[Z_i] + r_cov[Z_j])`` (``ase.data.covalent_radii``), which adapts
to H-H (0.62 A bond) as well as to I-I (2.66 A bond). Periodic images count.
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii

from ..data.neighbors import closest_pair
from ..errors import ConfigError

#: Default ratio of the closest allowed pair distance to the sum of covalent radii.
DEFAULT_MIN_DISTANCE_FACTOR = 0.6


def check_symbol(symbol: str, where: str) -> int:
    """Atomic number of an element symbol; ``ConfigError`` naming ``where`` if unknown."""
    z = atomic_numbers.get(str(symbol))
    if z is None or z == 0:
        raise ConfigError(
            f"{where}: unknown element '{symbol}'; use a chemical symbol such as H, C, Cu (case matters)"
        )
    return z


def closest_contact_ratio(atoms: Atoms, factor: float = DEFAULT_MIN_DISTANCE_FACTOR) -> float:
    """Smallest ``d_ij / (r_cov_i + r_cov_j)`` over pairs closer than ``factor`` times the sum.

    Returns ``inf`` when no pair is that close (the structure passes), ``0`` when a position or
    the cell is not finite (a teacher that blew up during MD or relaxation). Images count.
    """
    if not (np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all()):
        return 0.0
    if factor <= 0 or (len(atoms) < 2 and not atoms.pbc.any()):
        return math.inf
    cutoff = float(factor * 2.0 * covalent_radii[atoms.numbers].max()) + 1e-6
    ratio = closest_pair(atoms.positions, atoms.cell.array, atoms.pbc, cutoff, atoms.numbers).ratio
    return ratio if ratio < factor else math.inf


def respects_min_distance(atoms: Atoms, factor: float = DEFAULT_MIN_DISTANCE_FACTOR) -> bool:
    """True when every pair (with periodic images) is at least ``factor`` x covalent sum apart
    (and every coordinate is finite)."""
    return closest_contact_ratio(atoms, factor) >= max(factor, 1e-12)


def min_pair_distance(atoms: Atoms, cutoff: float = 6.0) -> float:
    """Smallest interatomic distance in A (images included) up to ``cutoff``; ``inf`` if none."""
    return closest_pair(atoms.positions, atoms.cell.array, atoms.pbc, cutoff).distance


def supercell_repeats(atoms: Atoms, target: int, n_min: int, n_max: int) -> tuple[int, int, int] | None:
    """Repeats ``(n1, n2, n3)`` along the periodic axes whose atom count is closest to ``target``.

    Stays within ``[n_min, n_max]`` atoms and prefers near-isotropic supercells (the
    perpendicular widths differ least). Non-periodic axes are never repeated. ``None`` if
    no repeat fits the bounds.
    """
    n0 = len(atoms)
    cell = atoms.cell.array
    volume = abs(np.linalg.det(cell)) if atoms.pbc.all() else None
    widths = []
    for k in range(3):
        if volume:
            other = np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])
            widths.append(volume / np.linalg.norm(other))
        else:
            widths.append(np.linalg.norm(cell[k]) or 1.0)
    max_rep = max(1, n_max // n0)
    periodic = [bool(atoms.pbc[k]) for k in range(3)]
    r1 = range(1, max_rep + 1) if periodic[0] else range(1, 2)
    best, best_cost = None, math.inf
    for n1 in r1:
        r2 = range(1, max_rep // n1 + 1) if periodic[1] else range(1, 2)
        for n2 in r2:
            if periodic[2]:
                # only the n3 next to the target (and its neighbours, for shape) can win
                t = target / (n0 * n1 * n2)
                lo = max(1, math.floor(t) - 1)
                n3s = range(lo, min(max_rep // (n1 * n2), math.ceil(t) + 1) + 1)
            else:
                n3s = range(1, 2)
            for n3 in n3s:
                reps = (n1, n2, n3)
                n = n0 * n1 * n2 * n3
                if n < n_min or n > n_max:
                    continue
                lengths = [widths[k] * reps[k] for k in range(3) if periodic[k]]
                aniso = math.log(max(lengths) / min(lengths)) if lengths else 0.0
                cost = abs(math.log(n / target)) + 0.25 * aniso
                if cost < best_cost - 1e-12:
                    best, best_cost = reps, cost
    return best


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (det +1)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniformly random rotation matrices (n, 3, 3) from normalised Gaussian quaternions."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)


def clean_copy(atoms: Atoms) -> Atoms:
    """A bare copy: numbers, positions, cell, pbc and info only (no calculator, no momenta)."""
    out = Atoms(numbers=atoms.numbers.copy(), positions=atoms.positions.copy(), cell=atoms.cell.array.copy(),
                pbc=atoms.pbc.copy())
    out.info = {k: v for k, v in atoms.info.items() if k in ("charge", "spin_multiplicity")}
    return out
