"""Per-structure validation checks on a labelled dataset.

Each check computes one number per structure (``values[name]``, NaN where it does not
apply) and flags structures beyond its threshold (``flags[name]``). Thresholds and their
reasons live in :mod:`mlff_distiller.quality.config`. Units: A, eV, eV/A, eV/A^3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase.data import covalent_radii

from ..data.neighbors import closest_pair
from ..data.normalization import residual_energy_per_atom, robust_element_fit
from ._data import Records, load_records
from .config import CHECK_NAMES, QualityConfig

CHECK_DESCRIPTIONS = {
    "finite": "NaN or inf in positions, cell, energy, forces or stress",
    "labels_present": "a declared label (energy, forces, stress of 3-D periodic cells) is missing",
    "min_distance": "closest pair below {absolute} A or below {covalent_fraction} x sum of covalent radii",
    "max_force": "largest per-atom |F| above {max} eV/A",
    "energy_outlier": "robust z-score (scale >= {min_scale} eV/atom) of residual energy per atom after the "
    "per-element fit above {z_max}{exempt_text}",
    "sentinel_energy": "energy equals a sentinel {values} eV (+-{tol}) or |E|/atom above {max_abs_per_atom} eV",
    "volume_per_atom": "3-D periodic cell with volume per atom outside [{min}, {max}] A^3",
    "net_force": "|sum of forces| above {max} eV/A{per_atom_text} (conservative teacher)",
    "stress": "largest |stress component| above {max} eV/A^3",
}

# Unit of each check's per-structure value.
CHECK_UNITS = {
    "finite": "",
    "labels_present": "",
    "min_distance": "A",
    "max_force": "eV/A",
    "energy_outlier": "robust z",
    "sentinel_energy": "eV/atom",
    "volume_per_atom": "A^3/atom",
    "net_force": "eV/A",
    "stress": "eV/A^3",
}

def describe_check(name: str, params: dict) -> str:
    p = dict(params)
    p["per_atom_text"] = " per atom" if p.get("per_atom") else ""
    p["exempt_text"] = " (high-energy samplers: only too low)" if p.get("exempt_high_energy") else ""
    return CHECK_DESCRIPTIONS[name].format(**p)


@dataclass
class ValidationReport:
    """Result of :func:`validate`: per-structure flags and values, and counts per check."""

    n_structures: int
    flags: dict  # check -> (n,) bool
    values: dict  # check -> (n,) float, NaN where not applicable
    params: dict  # check -> parameters used (incl. enabled)
    notes: list = field(default_factory=list)  # one-line remarks (e.g. a check skipped)

    @property
    def counts(self) -> dict:
        return {name: int(np.sum(f)) for name, f in self.flags.items()}

    @property
    def flagged(self) -> np.ndarray:
        """(n,) bool: flagged by any enabled check."""
        out = np.zeros(self.n_structures, dtype=bool)
        for f in self.flags.values():
            out |= f
        return out

    @property
    def n_flagged(self) -> int:
        return int(self.flagged.sum())

    @property
    def flagged_fraction(self) -> float:
        return self.n_flagged / max(self.n_structures, 1)

    def flagged_indices(self, check: str | None = None) -> list[int]:
        mask = self.flagged if check is None else self.flags[check]
        return [int(i) for i in np.flatnonzero(mask)]

    def rows(self) -> list[dict]:
        """One row per check: name, enabled, flagged count, worst value, description."""
        out = []
        for name in CHECK_NAMES:
            params = self.params[name]
            row = {"check": name, "enabled": params["enabled"], "flagged": 0, "worst": None,
                   "unit": CHECK_UNITS[name], "description": describe_check(name, params)}
            if name in self.flags:
                row["flagged"] = int(self.flags[name].sum())
                vals = self.values[name]
                finite = vals[np.isfinite(vals)]
                if finite.size:
                    worst = finite.min() if name in ("min_distance",) else finite.max()
                    if name == "volume_per_atom":
                        worst = (
                            finite.min()
                            if abs(finite.min() - params["min"]) < abs(finite.max() - params["max"])
                            else finite.max()
                        )
                    row["worst"] = float(worst)
            out.append(row)
        return out

    def to_dict(self) -> dict:
        return {
            "n_structures": self.n_structures,
            "n_flagged": self.n_flagged,
            "flagged_fraction": self.flagged_fraction,
            "counts": self.counts,
            "flagged_indices": {name: self.flagged_indices(name) for name in self.flags},
            "checks": self.rows(),
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        lines = [f"{self.n_structures} structures, {self.n_flagged} flagged ({100 * self.flagged_fraction:.2f} %)"]
        for row in self.rows():
            state = "off" if not row["enabled"] else f"{row['flagged']:>6d} flagged"
            worst = "" if row["worst"] is None else f"  worst {row['worst']:.4g} {row['unit']}"
            lines.append(f"  {row['check']:<16s} {state:<16s}{worst}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _periodic3d(cell: np.ndarray, pbc: np.ndarray) -> bool:
    return bool(np.all(pbc)) and abs(float(np.linalg.det(cell))) > 1e-9


def _finite(rec: Records, i: int) -> bool:
    arrays = [rec.positions[i], rec.cells[i]]
    for v in (rec.energy[i], rec.forces[i], rec.stress[i]):
        if v is not None:
            arrays.append(np.asarray(v, dtype=np.float64))
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


def _min_distance(rec: Records, i: int, params: dict) -> tuple[float, float]:
    """(closest pair distance in A, closest pair distance / sum of covalent radii); inf if no pair."""
    pos, cell, pbc, z = rec.positions[i], rec.cells[i], rec.pbcs[i], rec.numbers[i]
    if not np.all(np.isfinite(pos)) or not np.all(np.isfinite(cell)):
        return np.nan, np.nan
    rc = covalent_radii[np.clip(z, 0, len(covalent_radii) - 1)]
    # 3 A reaches the nearest neighbour of nearly every structure, so the reported value is the
    # true closest distance and not just "above threshold".
    cutoff = max(3.0, params["absolute"], params["covalent_fraction"] * 2.0 * float(rc.max()) * 1.05)
    if np.any(pbc) and abs(float(np.linalg.det(cell))) < 1e-9:
        pbc = np.zeros(3, dtype=bool)  # a flat cell: treat as isolated (volume check reports it)
    pair = closest_pair(pos, cell, pbc, cutoff, z)
    return pair.distance, pair.ratio


def _residual_z(rec: Records, usable: np.ndarray, min_scale: float) -> np.ndarray:
    """Robust z-score of the residual energy per atom after the robust per-element fit."""
    z = np.full(len(rec), np.nan)
    idx = np.flatnonzero(usable)
    if idx.size < 3:
        return z
    nums = [rec.numbers[i] for i in idx]
    energies = np.array([rec.energy[i] for i in idx])
    resid = residual_energy_per_atom(nums, energies, robust_element_fit(nums, energies))
    med = np.median(resid)
    scale = max(1.4826 * float(np.median(np.abs(resid - med))), min_scale)
    z[idx] = (resid - med) / scale
    return z


def validate(atoms_or_path, config: QualityConfig | dict | None = None, *, progress: bool = False) -> ValidationReport:
    """Run every enabled check on a dataset path or a list of labelled ``ase.Atoms``.

    Returns per-structure flags and values (``progress`` shows a tqdm bar for the
    neighbour-list pass). Raises :class:`~mlff_distiller.errors.DatasetError`
    for an empty dataset or one without energy labels.
    """
    config = QualityConfig.from_dict(config) if not isinstance(config, QualityConfig) else config
    rec = load_records(atoms_or_path)
    checks = config.checks
    flags: dict[str, np.ndarray] = {}
    values: dict[str, np.ndarray] = {}
    notes: list[str] = []
    skipped: list[str] = []  # enabled checks that do not apply to this file

    def run(name: str, check) -> None:
        """``check(params) -> (flags, values)`` when the check is enabled."""
        if checks[name]["enabled"]:
            flags[name], values[name] = check(checks[name])

    run("finite", lambda p: _finite_check(rec))
    run("labels_present", lambda p: _labels_present_check(rec))
    run("min_distance", lambda p: _min_distance_check(rec, p, progress))
    run("max_force", lambda p: _max_force_check(rec, p))
    e = np.array([np.nan if x is None else x for x in rec.energy], dtype=np.float64)
    epa = e / np.maximum(rec.n_atoms.astype(np.float64), 1)
    sentinel = _sentinel_mask(e, epa, checks["sentinel_energy"])
    run("sentinel_energy", lambda p: (sentinel, epa))
    run("energy_outlier", lambda p: _energy_outlier_check(rec, e, sentinel, p, notes))
    run("volume_per_atom", lambda p: _volume_per_atom_check(rec, p))
    caps = (rec.attrs or {}).get("teacher_capabilities")
    if checks["net_force"]["enabled"] and isinstance(caps, dict) and caps.get("conservative_forces") is False:
        notes.append("net_force skipped: the file says the teacher's forces are not conservative "
                     "(teacher_capabilities.conservative_forces = false)")
        skipped.append("net_force")
    else:
        run("net_force", lambda p: _net_force_check(rec, p))
    run("stress", lambda p: _stress_check(rec, p))

    # A structure with non-finite numbers is reported by ``finite``; other checks on it
    # would only repeat that (NaN compares false), so nothing else to do here.
    params = {k: dict(v) for k, v in checks.items()}
    for name in skipped:
        params[name]["enabled"] = False
    return ValidationReport(n_structures=len(rec), flags=flags, values=values, params=params, notes=notes)


# Each ``_*_check`` returns ((n,) bool flags, (n,) float values, NaN where it does not apply).


def _finite_check(rec: Records) -> tuple[np.ndarray, np.ndarray]:
    finite = np.array([_finite(rec, i) for i in range(len(rec))])
    return ~finite, (~finite).astype(np.float64)


def _labels_present_check(rec: Records) -> tuple[np.ndarray, np.ndarray]:
    missing = np.zeros(len(rec), dtype=bool)
    for i in range(len(rec)):
        if "energy" in rec.label_fields and rec.energy[i] is None:
            missing[i] = True
        if "forces" in rec.label_fields and rec.forces[i] is None:
            missing[i] = True
        if "stress" in rec.label_fields and rec.stress[i] is None and _periodic3d(rec.cells[i], rec.pbcs[i]):
            missing[i] = True
    return missing, missing.astype(np.float64)


def _min_distance_check(rec: Records, p: dict, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    from ..logs import progress as progress_bar

    n = len(rec)
    # a bar on a terminal, a line every 30 s in a batch job
    bar = progress_bar(range(n), desc="closest contacts", unit="structure", enabled=progress, leave=False)
    md = np.array([_min_distance(rec, i, p) for i in bar]).reshape(n, 2)
    return (md[:, 0] < p["absolute"]) | (md[:, 1] < p["covalent_fraction"]), md[:, 0]


def _max_force_check(rec: Records, p: dict) -> tuple[np.ndarray, np.ndarray]:
    v = np.array([np.nan if f is None or len(f) == 0 else float(np.linalg.norm(f, axis=1).max()) for f in rec.forces])
    flags = np.nan_to_num(v, nan=0.0, posinf=np.inf) > p["max"]
    flags |= np.isinf(v)
    return flags, v


def _sentinel_mask(e: np.ndarray, epa: np.ndarray, p: dict) -> np.ndarray:
    """Energy (eV) equal to a sentinel value, or an absurd energy per atom (eV/atom)."""
    sentinel = np.zeros(len(e), dtype=bool)
    for s in p["values"]:
        sentinel |= np.abs(e - s) <= p["tol"]
    sentinel |= np.abs(epa) > p["max_abs_per_atom"]
    return sentinel


def _energy_outlier_check(rec: Records, e: np.ndarray, sentinel: np.ndarray, p: dict,
                          notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    usable = np.isfinite(e) & ~sentinel
    z = _residual_z(rec, usable, p["min_scale"])
    if usable.sum() < 3:
        notes.append("energy_outlier skipped: fewer than 3 usable energies")
    z0 = np.nan_to_num(z)
    flags = np.abs(z0) > p["z_max"]
    if p["exempt_high_energy"]:
        from .diversity_metrics import sampler_category

        high = np.array([sampler_category(rec.sampler(i)) == "high_energy" for i in range(len(rec))], dtype=bool)
        flags &= ~high | (z0 < -p["z_max"])
    return flags, np.abs(z)


def _volume_per_atom_check(rec: Records, p: dict) -> tuple[np.ndarray, np.ndarray]:
    v = np.full(len(rec), np.nan)
    for i in range(len(rec)):
        if np.all(rec.pbcs[i]):
            v[i] = abs(float(np.linalg.det(rec.cells[i]))) / max(len(rec.numbers[i]), 1)
    return np.isfinite(v) & ((v < p["min"]) | (v > p["max"])), v


def _net_force_check(rec: Records, p: dict) -> tuple[np.ndarray, np.ndarray]:
    v = np.full(len(rec), np.nan)
    for i, f in enumerate(rec.forces):
        if f is not None and len(f):
            v[i] = float(np.linalg.norm(np.sum(f, axis=0)))
            if p["per_atom"]:
                v[i] /= len(f)
    return np.isfinite(v) & (v > p["max"]), v


def _stress_check(rec: Records, p: dict) -> tuple[np.ndarray, np.ndarray]:
    v = np.array([np.nan if s is None else float(np.max(np.abs(s))) for s in rec.stress])
    flags = np.nan_to_num(v, nan=0.0) > p["max"]
    flags |= np.isinf(v)
    return flags, v
