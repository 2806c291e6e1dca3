"""Diversity metrics of a dataset: chemical, size, energetic and structural, plus one score.

* Chemical: elements (atom and structure counts), organic (C and H present) and inorganic
  structures, Shannon entropy (nats) of element fractions and of the distribution of
  compositions.
* Size: histogram of atoms per structure over fixed bins (default 10-500 atoms), bin
  coverage and a smoothness measure ``1 - 0.5 * sum |p[k+1] - p[k]|`` (zero-padded), which
  is 0 for a single spike and approaches 1 for a flat histogram.
* Energetic: energy per atom (eV/atom) and per-atom |F| (eV/A) distributions; the balance of
  minima / perturbed / high-energy structures from provenance ``sampler`` (normalised
  entropy over the three categories); the spread of |F| over fixed 0.25 eV/A bins.
* Structural: QUESTS entropy H and diversity D (nats; Schwalbe-Koda et al., package
  ``quests``) on fixed-size random subsamples of atomic environments, so numbers compare
  across datasets; H versus subsample size; a PCA map of per-structure mean QUESTS
  descriptors; RMSD (A) among structures of one composition.

The single score is a weighted mean of four components, each in [0, 1]:
``structural = H / ln(n)`` (n environments sampled), ``chemical`` (element coverage and
composition entropy against targets), ``size`` (coverage and smoothness), ``energetic``
(sampler balance and force spread). Weights are in the config.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from ase.data import chemical_symbols

from ..errors import DatasetError
from ._data import Records, load_records
from .config import QualityConfig

SAMPLER_CATEGORIES = {
    "minima": ("none", "relax", "relaxed", "rattle_relax", "minimum", "opt", "optimized", "optimised"),
    "perturbed": ("rattle", "normal_modes", "md", "strain", "deform", "perturb", "displace"),
    "high_energy": ("high_energy", "high_t_md", "compress", "dimer", "scan"),
}
FORCE_BINS = np.linspace(0.0, 10.0, 41)  # eV/A, |F| spread; last bin takes everything above
ENERGY_BINS = 40


def sampler_category(sampler: str) -> str:
    s = (sampler or "").lower()
    for cat, names in SAMPLER_CATEGORIES.items():
        if s in names:
            return cat
    if "high" in s:
        return "high_energy"
    return "other"


def _entropy(counts) -> float:
    c = np.asarray(list(counts), dtype=np.float64)
    c = c[c > 0]
    if c.size == 0:
        return 0.0
    p = c / c.sum()
    return max(0.0, float(-(p * np.log(p)).sum()))


def formula(numbers) -> str:
    """Hill-ordered chemical formula of a structure (not reduced), e.g. ``C2H6O``."""
    counts = Counter(int(z) for z in numbers)
    syms = {chemical_symbols[z]: c for z, c in counts.items()}
    order = (["C", "H"] if "C" in syms else []) + sorted(s for s in syms if not ("C" in syms and s in ("C", "H")))
    return "".join(f"{s}{syms[s] if syms[s] > 1 else ''}" for s in order if s in syms)


def _smoothness(counts: np.ndarray) -> float:
    if counts.sum() == 0:
        return 0.0
    p = np.concatenate([[0.0], counts / counts.sum(), [0.0]])
    return float(1.0 - 0.5 * np.abs(np.diff(p)).sum()) if len(counts) > 1 else 0.0


@dataclass
class DiversityReport:
    """Result of :func:`diversity` (all metrics JSON-able via :meth:`to_dict`)."""

    n_structures: int
    n_atoms: int
    chemical: dict
    size: dict
    energetic: dict
    structural: dict
    components: dict
    score: float
    warnings: list = field(default_factory=list)

    @property
    def entropy(self) -> float:
        """QUESTS entropy H (nats), mean over subsamples."""
        return self.structural["entropy"]

    @property
    def diversity(self) -> float:
        """QUESTS diversity D (nats), mean over subsamples."""
        return self.structural["diversity"]

    def to_dict(self) -> dict:
        def clean(x):
            if isinstance(x, dict):
                return {str(k): clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            if isinstance(x, np.ndarray):
                return clean(x.tolist())
            if isinstance(x, (np.floating, float)):
                return None if not math.isfinite(float(x)) else float(x)
            if isinstance(x, np.integer):
                return int(x)
            return x

        return clean({
            "n_structures": self.n_structures,
            "n_atoms": self.n_atoms,
            "score": self.score,
            "components": self.components,
            "chemical": self.chemical,
            "size": self.size,
            "energetic": self.energetic,
            "structural": self.structural,
            "warnings": self.warnings,
        })

    def summary(self) -> str:
        s = self.structural
        c = self.chemical
        return "\n".join(
            [
                f"diversity score {self.score:.3f}  ("
                + ", ".join(f"{k} {v:.2f}" for k, v in self.components.items())
                + ")",
                f"  QUESTS H {s['entropy']:.3f} +- {s['entropy_std']:.3f} nats, D {s['diversity']:.3f} nats "
                f"on {s['subsample_atoms']} environments x {s['repeats']} (H/ln n = {s['entropy_fraction']:.3f})",
                f"  {c['n_elements']} elements ({', '.join(c['elements'])}), {c['n_compositions']} compositions, "
                f"composition entropy {c['composition_entropy']:.3f} nats",
                f"  sizes {self.size['min']}-{self.size['max']} atoms, smoothness {self.size['smoothness']:.2f}; "
                f"samplers {dict(self.energetic['category_counts'])}",
            ]
            + [f"  warning: {w}" for w in self.warnings]
        )


# -- QUESTS ----------------------------------------------------------------------------------


_BLAS_CONTROLLER = None


def one_blas_thread():
    """A context in which numpy's and scipy's OpenBLAS use one thread.

    QUESTS runs numba-parallel (OpenMP) loops that call BLAS; a multi-threaded OpenBLAS inside
    them prints "Detect OpenMP Loop and this application may hang". The library scan is done
    once per process (scipy's own OpenBLAS is loaded first, so that the limit reaches it), so
    entering the context is cheap enough to wrap every descriptor call.
    """
    global _BLAS_CONTROLLER
    try:
        import scipy.linalg  # noqa: F401
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    if _BLAS_CONTROLLER is None:
        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


class _Descriptors:
    """QUESTS per-atom descriptors, computed once per structure and cached."""

    def __init__(self, rec: Records, k: int, cutoff: float):
        self.rec, self.k, self.cutoff = rec, k, cutoff
        self.cache: dict[int, np.ndarray] = {}

    def __call__(self, i: int) -> np.ndarray:
        if i not in self.cache:
            self.cache[i] = quests_descriptors(self.rec.atoms(i), self.k, self.cutoff)
        return self.cache[i]


def quests_descriptors(atoms, k: int, cutoff: float) -> np.ndarray:
    """(n_atoms, 2k - 1) QUESTS descriptors of one structure (``cutoff`` in A); zeros where an
    atom has no environment (a single atom) or the coordinates are not finite."""
    from quests.descriptor import get_descriptors

    atoms = atoms.copy()
    if atoms.pbc.all() and abs(atoms.cell.volume) < 1e-9:
        atoms.pbc = False  # a flat cell (the volume check reports it): describe as isolated
    finite = np.all(np.isfinite(atoms.positions)) and np.all(np.isfinite(atoms.cell[:]))
    if len(atoms) < 2 or not finite:
        # an isolated atom has no neighbours; NaN coordinates (flagged by the finite check)
        # must not reach the numba kernels
        return np.zeros((len(atoms), 2 * k - 1))
    with one_blas_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba type-safety chatter inside quests
        x = get_descriptors([atoms], k=k, cutoff=cutoff)
    return np.ascontiguousarray(x, dtype=np.float64)


def sample_environments(desc: _Descriptors, n_target: int, rng: np.random.Generator,
                        per_structure: int = 8) -> np.ndarray:
    """``n_target`` atomic environments drawn at random (all of them if the dataset is smaller).

    Structures are visited in random order and at most ``per_structure`` random atoms are
    taken from each, so a subsample spans at least ``n_target / per_structure`` structures:
    environments of one structure are strongly correlated, and drawing all atoms of a few
    structures would make H depend on which structures were drawn. Descriptors are computed
    only for the visited structures. When the cap cannot supply ``n_target`` environments
    (a small dataset), whole structures are gathered and the atoms subsampled uniformly.
    """
    n_atoms = desc.rec.n_atoms
    order = rng.permutation(len(n_atoms))
    capped = np.cumsum(np.minimum(n_atoms[order], per_structure))
    if capped[-1] >= n_target:
        k = int(np.searchsorted(capped, n_target)) + 1
        rows = []
        for i in order[:k]:
            x = desc(int(i))
            rows.append(x[rng.choice(len(x), size=min(per_structure, len(x)), replace=False)])
        x = np.concatenate(rows)
    else:
        full = np.cumsum(n_atoms[order])
        k = int(np.searchsorted(full, n_target)) + 1
        x = np.concatenate([desc(int(i)) for i in order[:k]])
    if len(x) > n_target:
        x = x[rng.choice(len(x), size=n_target, replace=False)]
    return x


def quests_metrics(x: np.ndarray, bandwidth: float) -> tuple[float, float]:
    """QUESTS (entropy H, diversity D) in nats of descriptor rows ``x``."""
    from quests.entropy import get_all_metrics

    with one_blas_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h, d, _ = get_all_metrics(np.ascontiguousarray(x), h=bandwidth)
    return float(h), float(d)


def _pca(features: np.ndarray) -> tuple[np.ndarray, list]:
    x = features - features.mean(axis=0)
    if len(x) < 2 or not np.any(x):
        return np.zeros((len(x), 2)), [0.0, 0.0]
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2]
    coords = x @ comps.T
    if coords.shape[1] < 2:
        coords = np.hstack([coords, np.zeros((len(coords), 2 - coords.shape[1]))])
    var = s**2
    explained = (var[:2] / var.sum()).tolist() if var.sum() > 0 else [0.0, 0.0]
    return coords, explained + [0.0] * (2 - len(explained))


def rmsd(rec: Records, i: int, j: int) -> float:
    """RMSD (A) between structures ``i`` and ``j`` of one composition, atoms matched by index.

    Isolated structures: optimal rotation and translation (Kabsch). Periodic structures:
    minimum-image displacements in the cell of ``i``, mean displacement removed (no rotation,
    the cell fixes the orientation).
    """
    a, b = rec.positions[i], rec.positions[j]
    if np.any(rec.pbcs[i]) and abs(np.linalg.det(rec.cells[i])) > 1e-9:
        cell = rec.cells[i]
        frac = (b - a) @ np.linalg.inv(cell)
        pbc = rec.pbcs[i]
        frac[:, pbc] -= np.round(frac[:, pbc])
        d = frac @ cell
        d -= d.mean(axis=0)
        return float(np.sqrt((d**2).sum(axis=1).mean()))
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    u, _, vt = np.linalg.svd(b.T @ a)
    sign = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ np.diag([1.0, 1.0, sign]) @ vt
    d = b @ rot - a
    return float(np.sqrt((d**2).sum(axis=1).mean()))


def _rmsd_section(rec: Records, cfg: dict, rng: np.random.Generator) -> dict:
    groups: dict[tuple, list[int]] = {}
    for i, z in enumerate(rec.numbers):
        groups.setdefault(tuple(int(a) for a in z), []).append(i)  # same atoms in the same order
    multi = sorted((g for g in groups.values() if len(g) > 1), key=len, reverse=True)
    out = {"compositions": [], "median": float("nan"), "mean": float("nan")}
    all_vals = []
    for members in multi[: cfg["rmsd_max_compositions"]]:
        if len(members) > cfg["rmsd_max_per_composition"]:
            members = sorted(rng.choice(members, size=cfg["rmsd_max_per_composition"], replace=False).tolist())
        m = len(members)
        mat = np.zeros((m, m))
        for a in range(m):
            for b in range(a + 1, m):
                mat[a, b] = mat[b, a] = rmsd(rec, members[a], members[b])
        vals = mat[np.triu_indices(m, 1)]
        vals = vals[np.isfinite(vals)]  # NaN coordinates are the finite check's business
        if vals.size == 0:
            continue
        all_vals.append(vals)
        out["compositions"].append({
            "formula": formula(rec.numbers[members[0]]),
            "n_structures": len(groups[tuple(int(a) for a in rec.numbers[members[0]])]),
            "n_compared": m,
            "mean": float(vals.mean()),
            "median": float(np.median(vals)),
            "max": float(vals.max()),
            "matrix": mat if not out["compositions"] else None,  # keep the largest group's matrix
        })
    if all_vals:
        v = np.concatenate(all_vals)
        out["median"], out["mean"] = float(np.median(v)), float(v.mean())
    return out


# -- main entry --------------------------------------------------------------------------------


def diversity(atoms_or_path, config: QualityConfig | dict | None = None, *, progress: bool = False) -> DiversityReport:
    """All diversity metrics and the single score of a dataset path or a list of ``ase.Atoms``.

    ``progress`` shows a tqdm bar while descriptors for the PCA map are computed.
    Needs energy labels for the energetic part (forces if present). Raises
    :class:`~mlff_distiller.errors.DatasetError` for an empty or unlabelled dataset.
    """
    config = QualityConfig.from_dict(config) if not isinstance(config, QualityConfig) else config
    cfg = config.diversity
    rec = load_records(atoms_or_path)
    warns: list[str] = []
    if rec.n_atoms.sum() < 2:
        raise DatasetError("the dataset holds a single atom: diversity needs at least two atoms")
    chemical = _chemical_section(rec, warns)
    size = _size_section(rec.n_atoms, cfg)
    energetic = _energetic_section(rec, warns)
    structural = _structural_section(rec, cfg, warns, progress)
    components = _components(chemical, size, energetic, structural, cfg)
    weights = cfg["weights"]
    wsum = sum(weights.get(k, 0.0) for k in components)
    score = sum(weights.get(k, 0.0) * v for k, v in components.items()) / wsum
    return DiversityReport(
        n_structures=len(rec),
        n_atoms=int(rec.n_atoms.sum()),
        chemical=chemical,
        size=size,
        energetic=energetic,
        structural=structural,
        components={k: float(v) for k, v in components.items()},
        score=float(score),
        warnings=warns,
    )


def _chemical_section(rec, warns: list[str]) -> dict:
    """Elements (atom and structure counts), compositions, organic/inorganic split, entropies."""
    n = len(rec)
    atom_counts = Counter()
    struct_counts = Counter()
    for z in rec.numbers:
        zs, cs = np.unique(z, return_counts=True)
        for a, c in zip(zs, cs):
            atom_counts[chemical_symbols[int(a)]] += int(c)
            struct_counts[chemical_symbols[int(a)]] += 1
    compositions = Counter(formula(z) for z in rec.numbers)
    organic = sum(1 for z in rec.numbers if 6 in z and 1 in z)
    elements = sorted(atom_counts, key=lambda s: chemical_symbols.index(s))
    if len(elements) == 1:
        warns.append(f"single element ({elements[0]}): chemical diversity is zero; add sources with other elements")
    return {
        "elements": elements,
        "n_elements": len(elements),
        "atom_counts": {s: atom_counts[s] for s in elements},
        "structure_counts": {s: struct_counts[s] for s in elements},
        "n_organic": organic,
        "n_inorganic": n - organic,
        "organic_and_inorganic": bool(organic and n - organic),
        "element_entropy": _entropy(atom_counts.values()),
        "n_compositions": len(compositions),
        "composition_entropy": _entropy(compositions.values()),
        "top_compositions": compositions.most_common(10),
    }


def _size_section(n_atoms: np.ndarray, cfg: dict) -> dict:
    """Histogram of atoms per structure over ``size_bins``: coverage, smoothness, range."""
    edges = np.asarray(cfg["size_bins"], dtype=np.float64)
    counts, _ = np.histogram(np.clip(n_atoms, edges[0], edges[-1]), bins=edges)
    return {
        "bin_edges": edges.tolist(),
        "counts": counts.tolist(),
        "below_range": int((n_atoms < edges[0]).sum()),
        "above_range": int((n_atoms > edges[-1]).sum()),
        "coverage": float((counts > 0).mean()),
        "smoothness": _smoothness(counts.astype(np.float64)),
        "min": int(n_atoms.min()),
        "max": int(n_atoms.max()),
        "mean": float(n_atoms.mean()),
        "n_atoms": n_atoms.tolist(),
    }


def _energetic_section(rec, warns: list[str]) -> dict:
    """Energy per atom (eV/atom) and force magnitude (eV/A) spreads, sampler balance."""
    e = np.array([np.nan if x is None else x for x in rec.energy], dtype=np.float64)
    epa = e / rec.n_atoms
    fmag = np.concatenate([np.linalg.norm(f, axis=1) for f in rec.forces if f is not None] or [np.zeros(0)])
    fmag = fmag[np.isfinite(fmag)]
    samplers = Counter(rec.sampler(i) for i in range(len(rec)))
    cats = Counter()
    for s, c in samplers.items():
        cats[sampler_category(s)] += c
    known = [cats.get(k, 0) for k in ("minima", "perturbed", "high_energy")]
    balance = _entropy(known) / math.log(3) if sum(known) else 0.0
    if not sum(known):
        warns.append("no known sampler in provenance: the minima/perturbed/high-energy balance is unknown (scored 0)")
    fhist, _ = np.histogram(np.clip(fmag, 0, FORCE_BINS[-1] - 1e-9), bins=FORCE_BINS)
    force_spread = _entropy(fhist) / math.log(len(fhist)) if fmag.size else 0.0
    finite_epa = epa[np.isfinite(epa)]
    return {
        "energy_per_atom": finite_epa.tolist(),
        "energy_per_atom_stats": _stats(finite_epa),
        "force_magnitude_stats": _stats(fmag),
        "force_hist": {"bin_edges": FORCE_BINS.tolist(), "counts": fhist.tolist()},
        "sampler_counts": dict(samplers),
        "category_counts": {k: int(cats.get(k, 0)) for k in ("minima", "perturbed", "high_energy", "other")},
        "balance": float(balance),
        "force_spread": float(force_spread),
    }


def _structural_section(rec, cfg: dict, warns: list[str], progress: bool) -> dict:
    """QUESTS entropy and diversity on fixed-size subsamples, the entropy-vs-size curve,
    the PCA map and the RMSD section."""
    desc = _Descriptors(rec, cfg["k"], cfg["cutoff"])
    total_atoms = int(rec.n_atoms.sum())
    n_env = min(cfg["subsample_atoms"], total_atoms)
    if n_env < cfg["subsample_atoms"]:
        warns.append(
            f"only {total_atoms} atomic environments (< subsample_atoms={cfg['subsample_atoms']}): "
            "H and D are computed on all of them and compare only with datasets of the same size"
        )
    hs, ds, samples = [], [], []
    for r in range(cfg["repeats"]):
        rng = np.random.default_rng([cfg["seed"], r])
        x = sample_environments(desc, n_env, rng, cfg["env_per_structure"])
        h, d = quests_metrics(x, cfg["bandwidth"])
        hs.append(h)
        ds.append(d)
        samples.append(x)
    curve_sizes = [s for s in cfg["curve_sizes"] if s <= len(samples[0])]
    if not curve_sizes or curve_sizes[-1] != len(samples[0]):
        curve_sizes.append(len(samples[0]))
    curve_h = np.array([[quests_metrics(x[:s], cfg["bandwidth"])[0] for s in curve_sizes] for x in samples])
    return {
        "entropy": float(np.mean(hs)),
        "entropy_std": float(np.std(hs)),
        "entropy_values": hs,
        "diversity": float(np.mean(ds)),
        "diversity_std": float(np.std(ds)),
        "diversity_values": ds,
        "subsample_atoms": int(n_env),
        "repeats": int(cfg["repeats"]),
        "bandwidth": cfg["bandwidth"],
        "entropy_fraction": float(np.mean(hs) / math.log(n_env)) if n_env > 1 else 0.0,
        "curve": {"sizes": curve_sizes, "entropy_mean": curve_h.mean(axis=0).tolist(),
                  "entropy_std": curve_h.std(axis=0).tolist()},
        "pca": _pca_map(rec, desc, cfg, progress),
        "rmsd": _rmsd_section(rec, cfg, np.random.default_rng([cfg["seed"], 2000])),
    }


def _pca_map(rec, desc: _Descriptors, cfg: dict, progress: bool) -> dict:
    """PCA of per-structure mean descriptors on up to ``pca_structures`` structures."""
    rng = np.random.default_rng([cfg["seed"], 1000])
    # structures already described for the QUESTS subsamples (a random draw themselves) come
    # first, then random others: the map stays a random sample at less descriptor cost
    cached = [i for i in desc.cache]
    rest = [int(i) for i in rng.permutation(len(rec)) if int(i) not in desc.cache]
    pca_idx = np.sort(np.array((cached + rest)[: cfg["pca_structures"]], dtype=np.int64))
    from ..logs import progress as progress_bar

    bar = progress_bar(pca_idx, desc="QUESTS descriptors", unit="structure", enabled=progress, leave=False)
    feats = np.stack([desc(int(i)).mean(axis=0) for i in bar])
    coords, explained = _pca(feats)
    spread = float(np.sqrt(np.mean(np.sum((coords - coords.mean(axis=0)) ** 2, axis=1))))
    return {"index": pca_idx.tolist(), "coords": coords.tolist(), "explained": explained,
            "sources": [rec.source(int(i)) for i in pca_idx], "spread": spread}


def _components(chemical: dict, size: dict, energetic: dict, structural: dict, cfg: dict) -> dict:
    """The four score components, each in [0, 1]."""
    chem_cov = min(1.0, chemical["n_elements"] / cfg["elements_target"])
    comp_h = (
        min(1.0, chemical["composition_entropy"] / math.log(cfg["compositions_target"]))
        if cfg["compositions_target"] > 1
        else 1.0
    )
    return {
        "structural": float(np.clip(structural["entropy_fraction"], 0.0, 1.0)),
        "chemical": 0.5 * chem_cov + 0.5 * comp_h,
        "size": 0.5 * size["coverage"] + 0.5 * size["smoothness"],
        "energetic": 0.5 * energetic["balance"] + 0.5 * energetic["force_spread"],
    }


def _stats(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return {"n": 0}
    q = np.percentile(x, [5, 25, 50, 75, 95])
    return {
        "n": int(x.size),
        "min": float(x.min()),
        "p5": float(q[0]),
        "p25": float(q[1]),
        "median": float(q[2]),
        "p75": float(q[3]),
        "p95": float(q[4]),
        "max": float(x.max()),
        "mean": float(x.mean()),
        "std": float(x.std()),
    }
