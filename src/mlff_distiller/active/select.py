"""Selection of the frames to label: physical, uncertain, diverse, within the budget.

1. Unphysical frames are dropped with the dataset's own checks
   (:func:`mlff_distiller.quality.validate`) run on the committee's mean prediction:
   non-finite values, atoms too close, forces above ``max_force``, sentinel energies,
   impossible volumes. Statistical checks (energy outliers) and checks that need a teacher
   (net force, stress) are left to the labelled frames.
2. Frames whose score (largest per-atom committee force std in eV/A, plus
   ``novelty_weight`` x novelty) is below ``min_score`` are not worth a teacher call.
3. The ``budget x candidate_factor`` highest-scoring frames go to farthest-point sampling in
   a descriptor space (standardised columns), started from the highest-scoring frame,
   until ``budget`` frames are picked.
4. With ``max_kind_share`` < 1, no exploration kind (``md``, ``relax``, ``hot``) takes more
   than ``cap = ceil(max_kind_share x budget)`` picks while a kind below its cap has frames
   left: each kind brings its own ``cap x candidate_factor`` best frames to step 3, and the
   farthest-point walk skips kinds that are full. When every kind with frames left is full,
   the kinds with the fewest picks go first, so the budget is still spent, evenly. (Silicon:
   without a cap 66 of 72 picks came from the hot compressed MD, where the committee
   disagrees most.)
"""

from __future__ import annotations

import copy
import os

import numpy as np

# Checks that judge one structure by itself from the (committee's) energy, forces, geometry.
PRE_LABEL_CHECKS = ("finite", "min_distance", "max_force", "sentinel_energy", "volume_per_atom")


def physical_mask(frames, energies=None, forces=None, quality_config=None, checks=PRE_LABEL_CHECKS
                  ) -> tuple[np.ndarray, dict]:
    """(n,) bool: frames passing the enabled ``checks`` of ``quality_config`` with the given
    energies (eV) and forces (eV/A), or with the labels on their calculators when
    ``energies`` is None (``frames`` may then be a labelled dataset path); and counts of frames flagged per check."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from ..quality import QualityConfig, validate

    cfg = copy.deepcopy(QualityConfig.from_dict(quality_config))
    for name, params in cfg.checks.items():
        if name not in checks:
            params["enabled"] = False
    if energies is None and isinstance(frames, (str, os.PathLike)):
        # a labelled dataset file: its attributes tell the checks what the teacher provides
        rep = validate(frames, cfg)
        return ~rep.flagged, {k: v for k, v in rep.counts.items() if v}
    if not len(frames):
        return np.zeros(0, dtype=bool), {}
    if energies is None:
        rep = validate(list(frames), cfg)
        return ~rep.flagged, {k: v for k, v in rep.counts.items() if v}
    labelled = []
    for atoms, e, f in zip(frames, energies, forces):
        a = atoms.copy()
        a.calc = SinglePointCalculator(a, energy=float(e), forces=np.asarray(f, float))
        labelled.append(a)
    rep = validate(labelled, cfg)
    return ~rep.flagged, {k: v for k, v in rep.counts.items() if v}


def farthest_point(features: np.ndarray, first: int, n: int, groups=None, cap: int | None = None) -> list[int]:
    """``n`` row indices of ``features``, greedily each farthest (Euclidean, standardised
    columns) from those already picked, starting at row ``first``. With ``groups`` (one label
    per row) and ``cap``, a group with ``cap`` picks is skipped while a group below its cap has
    rows left (then the groups with the fewest picks go first)."""
    x = np.asarray(features, dtype=np.float64)
    if len(x) == 0 or n <= 0:
        return []
    scale = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    labels = None if groups is None or cap is None else np.asarray(groups)
    picked = [int(first)]
    dist = np.linalg.norm(x - x[first], axis=1)
    while len(picked) < min(n, len(x)):
        dist[picked] = -1.0
        d = dist
        if labels is not None:
            d = np.where(_open_groups(labels, picked, dist >= 0, cap), dist, -1.0)
        nxt = int(np.argmax(d))
        if d[nxt] < 0:
            break
        picked.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(x - x[nxt], axis=1))
    return picked


def _open_groups(labels: np.ndarray, picked: list, left: np.ndarray, cap: int) -> np.ndarray:
    """(n,) bool: rows whose group may take the next pick. Groups below ``cap`` picks with rows
    ``left`` go first; when every group with rows left is at its cap, those with the fewest
    picks (level filling, so the budget is still spent and spread)."""
    names = np.unique(labels[left])
    counts = np.array([np.sum(labels[picked] == g) for g in names])
    allowed = names[counts < cap] if (counts < cap).any() else names[counts == counts.min()]
    return np.isin(labels, allowed)


def select_frames(
    scores, features, physical, budget: int, candidate_factor: int = 4, min_score: float = 0.0,
    kinds=None, max_kind_share: float = 1.0,
) -> list[int]:
    """Indices (into the candidates) of at most ``budget`` frames to label, in pick order;
    ``kinds`` (one label per candidate) and ``max_kind_share`` cap each kind's picks (step 4
    of the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    ok = np.flatnonzero(np.asarray(physical, bool) & np.isfinite(scores) & (scores >= min_score))
    if budget <= 0 or ok.size == 0:
        return []
    ranked = ok[np.argsort(-scores[ok], kind="stable")]
    if kinds is None or max_kind_share >= 1.0:
        top = ranked[: budget * candidate_factor]
        local = farthest_point(np.asarray(features)[top], 0, budget)
        return [int(top[k]) for k in local]
    labels = np.asarray(kinds)
    cap = max(1, int(np.ceil(max_kind_share * budget)))
    keep = np.concatenate([ranked[labels[ranked] == k][: cap * candidate_factor] for k in np.unique(labels[ranked])])
    top = ranked[np.isin(ranked, keep)]  # still in score order: the walk starts at the best frame
    local = farthest_point(np.asarray(features)[top], 0, budget, groups=labels[top], cap=cap)
    return [int(top[k]) for k in local]
