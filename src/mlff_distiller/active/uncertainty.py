"""Uncertainty of the student: a committee of cheap students, novelty, and its calibration.

* :func:`train_committee`: ``committee_size`` small students (``committee_student``), each
  trained for ``committee_steps`` optimizer steps with its own seed (initial weights, data
  order and validation split) on the current dataset; each run directory resumes after a kill.
* :func:`committee_scores`: per frame, the largest per-atom committee force standard
  deviation (eV/A) and the energy standard deviation (eV) from a
  :class:`~mlff_distiller.student.committee.CommitteeCalculator`.
* :func:`environment_descriptors` / :func:`novelty`: a per-atom environment descriptor (the
  inverse distances, 1/A, to the ``k`` nearest neighbours within the cutoff, sorted) and the
  novelty of a frame: the largest over its atoms of the distance to the nearest training
  environment of the same element; or (``novelty: quests``) :class:`QuestsNovelty`, the
  largest QUESTS differential entropy dH of a frame's environments against the training set.
* :func:`calibration`: correlation between committee disagreement and the true
  student-teacher force error on labelled frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.neighbors import edge_vectors, neighbor_list
from .config import ActiveConfig


def train_committee(dataset: Path, base_train: dict, cfg: ActiveConfig, out_dir: Path, seed: int,
                    progress: bool = False) -> list[Path]:
    """Train (or resume) the committee members on ``dataset``; returns their run directories."""
    from ..training import DistillationTrainer, TrainConfig

    runs = []
    for k in range(cfg.committee_size):
        run = Path(out_dir) / f"member-{k}"
        tc = TrainConfig.from_dict({
            **{key: v for key, v in base_train.items() if key not in ("student", "max_epochs", "max_steps",
                                                                      "early_stopping_patience", "tensorboard")},
            "student": dict(cfg.committee_student), "max_steps": cfg.committee_steps, "max_epochs": 10**6,
            "early_stopping_patience": 0, "seed": int(seed) * 1000 + k,
            "checkpoint_every": max(1, min(int(base_train.get("checkpoint_every", 100)), cfg.committee_steps)),
        })
        DistillationTrainer(dataset, tc, run, resume="auto", progress=progress).fit()
        runs.append(run)
    return runs


def committee_scores(frames, committee) -> dict:
    """Per frame: ``force_std_max`` (eV/A), ``force_std_mean`` (eV/A), ``energy_std`` (eV);
    and ``per_atom``: the per-atom force standard deviations of each frame."""
    fmax, fmean, estd, per_atom = [], [], [], []
    for atoms in frames:
        work = atoms.copy()
        work.calc = committee
        work.get_forces()
        s = np.asarray(committee.results["forces_committee_std"], dtype=np.float64)
        per_atom.append(s)
        fmax.append(float(s.max()) if s.size else 0.0)
        fmean.append(float(s.mean()) if s.size else 0.0)
        estd.append(float(committee.results["energy_committee_std"]))
    return {"force_std_max": np.asarray(fmax), "force_std_mean": np.asarray(fmean), "energy_std": np.asarray(estd),
            "per_atom": per_atom}


def environment_descriptors(atoms, k: int = 8, cutoff: float = 5.0) -> np.ndarray:
    """(n_atoms, k): sorted inverse distances (1/A) to the ``k`` nearest neighbours within
    ``cutoff`` (A), periodic images included; zero-padded where fewer neighbours exist."""
    n = len(atoms)
    out = np.zeros((n, k))
    cell = atoms.cell.array if atoms.pbc.any() else None
    ei, es = neighbor_list(atoms.positions, cell, atoms.pbc, cutoff)
    if ei.shape[1] == 0:
        return out
    d = np.linalg.norm(edge_vectors(atoms.positions, cell if cell is not None else np.zeros((3, 3)), ei, es), axis=1)
    order = np.lexsort((d, ei[0]))
    i_sorted, d_sorted = ei[0][order], d[order]
    starts = np.searchsorted(i_sorted, np.arange(n))
    ends = np.searchsorted(i_sorted, np.arange(n), side="right")
    for a in range(n):
        row = 1.0 / np.maximum(d_sorted[starts[a]:ends[a]][:k], 1e-6)
        out[a, : len(row)] = row
    return out


class NoveltyIndex:
    """Nearest-neighbour index of the training environments, one per element."""

    def __init__(self, frames, k: int, cutoff: float):
        from scipy.spatial import cKDTree

        self.k, self.cutoff = k, cutoff
        by_z: dict[int, list] = {}
        for atoms in frames:
            x = environment_descriptors(atoms, k, cutoff)
            for z in np.unique(atoms.numbers):
                by_z.setdefault(int(z), []).append(x[atoms.numbers == z])
        self.trees = {z: cKDTree(np.concatenate(rows)) for z, rows in by_z.items()}

    def __call__(self, atoms) -> float:
        """Largest over atoms of the distance (1/A) to the closest training environment of the
        same element; ``inf`` for an element the training set lacks."""
        x = environment_descriptors(atoms, self.k, self.cutoff)
        worst = 0.0
        for z in np.unique(atoms.numbers):
            tree = self.trees.get(int(z))
            if tree is None:
                return float("inf")
            d, _ = tree.query(x[atoms.numbers == z], k=1)
            worst = max(worst, float(np.max(d)))
        return worst


class QuestsNovelty:
    """Novelty as QUESTS measures it: the differential entropy dH of each atomic environment
    against the training environments (a Gaussian kernel density on QUESTS descriptors).
    dH > 0 marks an environment outside the training data's support; a frame's novelty is
    the largest dH over its atoms. Element-agnostic, as QUESTS descriptors are.
    ``max_reference`` environments (drawn at random) bound the cost of each query."""

    def __init__(self, frames, k: int, cutoff: float, bandwidth: float = 0.015, max_reference: int = 20000,
                 seed: int = 0):
        from ..quality.diversity_metrics import quests_descriptors

        self.k, self.cutoff, self.bandwidth = k, cutoff, bandwidth
        self._describe = quests_descriptors
        rows = [quests_descriptors(atoms, k, cutoff) for atoms in frames]
        x = np.concatenate(rows) if rows else np.zeros((0, 2 * k - 1))
        if len(x) > max_reference:
            x = x[np.random.default_rng(seed).choice(len(x), max_reference, replace=False)]
        self.reference = np.ascontiguousarray(x)

    def __call__(self, atoms) -> float:
        """Largest dH (nats) over the atoms of ``atoms``; ``inf`` with no training environments."""
        from quests.entropy import delta_entropy

        if len(self.reference) == 0:
            return float("inf")
        y = self._describe(atoms, self.k, self.cutoff)
        return float(np.max(delta_entropy(y, self.reference, h=self.bandwidth)))


def make_novelty(kind: str, frames, k: int, cutoff: float):
    """The novelty measure named by ``active.novelty``: ``descriptor`` or ``quests``."""
    if kind == "quests":
        return QuestsNovelty(frames, k, cutoff)
    return NoveltyIndex(frames, k, cutoff)


def structure_features(atoms, k: int, cutoff: float, elements: list[int]) -> np.ndarray:
    """A fixed-length vector of a frame for farthest-point sampling: per element of
    ``elements``, the mean and the largest value of each descriptor column, and the
    element's fraction of the atoms."""
    x = environment_descriptors(atoms, k, cutoff)
    parts = []
    for z in elements:
        m = atoms.numbers == z
        if m.any():
            parts += [x[m].mean(axis=0), x[m].max(axis=0), [m.mean()]]
        else:
            parts += [np.zeros(k), np.zeros(k), [0.0]]
    return np.concatenate(parts)


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    return r


def _corr(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def calibration(frames, student_calc, committee) -> dict:
    """Committee disagreement against the true error of the student on labelled ``frames``.

    Per frame: the largest per-atom committee force std vs the largest per-atom
    |F_student - F_teacher| (eV/A); per atom: the same two quantities for every atom.
    Returns Pearson and Spearman correlations and the means of both.
    """
    sc = committee_scores(frames, committee)
    err_frame, err_atom = [], []
    for atoms in frames:
        ref = np.asarray(atoms.calc.results["forces"], float)
        work = atoms.copy()
        work.calc = student_calc
        e = np.linalg.norm(np.asarray(work.get_forces(), float) - ref, axis=1)
        err_atom.append(e)
        err_frame.append(float(e.max()))
    ea, sa = np.concatenate(err_atom), np.concatenate(sc["per_atom"])
    ef, sf = np.asarray(err_frame), sc["force_std_max"]
    return {
        "n_frames": len(frames),
        "frame_pearson": _corr(sf, ef), "frame_spearman": _corr(_rank(sf), _rank(ef)),
        "atom_pearson": _corr(sa, ea), "atom_spearman": _corr(_rank(sa), _rank(ea)),
        "committee_force_std_max_mean": float(sf.mean()), "true_force_error_max_mean": float(ef.mean()),
    }
