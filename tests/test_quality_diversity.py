"""Diversity metrics: monotone in rattle amplitude and number of sources, stable across seeds."""

from __future__ import annotations

import math
import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from mlff_distiller.errors import DatasetError
from mlff_distiller.quality import diversity
from mlff_distiller.quality._data import load_records
from mlff_distiller.quality.diversity_metrics import _smoothness, formula, rmsd, sampler_category
from mlff_distiller.quality.synthetic import emt_dataset

SMALL = {"diversity": {"subsample_atoms": 200, "repeats": 2, "pca_structures": 40, "curve_sizes": [50, 100, 200]}}
# structurally distinct sources (QUESTS ignores elements: a second fcc lattice adds little)
SOURCES4 = ("bulk:Cu-fcc", "cluster:Ag-ico13", "bulk:Ni-bcc", "smiles:C2H6")


def _strictly_increasing(xs):
    return all(b > a for a, b in zip(xs, xs[1:]))


@pytest.fixture(scope="module")
def by_amplitude():
    amps = (0.01, 0.03, 0.1, 0.3)
    return amps, [diversity(emt_dataset(("bulk:Cu-fcc",), n_per_source=8, amplitude=a), SMALL) for a in amps]


@pytest.fixture(scope="module")
def by_sources():
    cfg = {"diversity": dict(SMALL["diversity"], repeats=3)}
    return [diversity(emt_dataset(SOURCES4[:k], n_per_source=6, amplitude=0.05), cfg) for k in range(1, 5)]


def test_metrics_rise_with_rattle_amplitude(by_amplitude):
    amps, reports = by_amplitude
    assert _strictly_increasing([r.entropy for r in reports])
    assert _strictly_increasing([r.diversity for r in reports])
    assert _strictly_increasing([r.score for r in reports])
    assert _strictly_increasing([r.structural["rmsd"]["mean"] for r in reports])
    assert _strictly_increasing([r.structural["pca"]["spread"] for r in reports])
    # a Gaussian rattle of sigma per coordinate gives RMSD ~ sigma * sqrt(2 * 3) between copies
    for a, r in zip(amps, reports):
        assert r.structural["rmsd"]["mean"] == pytest.approx(a * math.sqrt(6), rel=0.15)
    # H is bounded by ln n (every environment distinct)
    for r in reports:
        assert 0.0 <= r.entropy <= math.log(r.structural["subsample_atoms"]) + 1e-9


def test_metrics_rise_with_number_of_sources(by_sources):
    assert _strictly_increasing([r.entropy for r in by_sources])
    assert _strictly_increasing([r.diversity for r in by_sources])
    assert _strictly_increasing([r.score for r in by_sources])
    assert _strictly_increasing([r.chemical["n_elements"] for r in by_sources])
    assert _strictly_increasing([r.chemical["composition_entropy"] for r in by_sources])
    assert _strictly_increasing([r.components["chemical"] for r in by_sources])


def test_stable_across_seeds():
    ds = emt_dataset(SOURCES4[:3], n_per_source=6, amplitude=0.05)
    sub = [diversity(ds, {"diversity": dict(SMALL["diversity"], seed=s)}) for s in range(3)]
    data = [diversity(emt_dataset(SOURCES4[:3], n_per_source=6, amplitude=0.05, seed=10 + s), SMALL) for s in range(3)]
    for group in (sub, data):
        h = np.array([r.entropy for r in group])
        score = np.array([r.score for r in group])
        assert h.std() / h.mean() < 0.05
        assert score.max() - score.min() < 0.03
    # same seed, same numbers
    again = diversity(ds, {"diversity": dict(SMALL["diversity"], seed=0)})
    assert again.entropy == sub[0].entropy and again.score == sub[0].score


def test_fixed_size_subsamples_make_datasets_comparable():
    """Doubling a dataset with more of the same must not raise H (H is taken on n environments)."""
    small = emt_dataset(("bulk:Cu-fcc", "cluster:Ag-ico13"), n_per_source=8, amplitude=0.05, seed=1)
    big = emt_dataset(("bulk:Cu-fcc", "cluster:Ag-ico13"), n_per_source=24, amplitude=0.05, seed=2)
    rs, rb = diversity(small, SMALL), diversity(big, SMALL)
    assert rs.structural["subsample_atoms"] == rb.structural["subsample_atoms"] == 200
    assert abs(rs.entropy - rb.entropy) < 0.1 * rs.entropy


def test_entropy_of_identical_copies_is_zero_and_curve_is_monotone(by_amplitude):
    copies = emt_dataset(("bulk:Cu-fcc",), n_per_source=8, amplitude=0.0)
    r = diversity(copies, SMALL)
    # one environment, repeated (not exactly 0: ties among equidistant fcc neighbours are
    # ordered arbitrarily inside QUESTS)
    assert r.entropy < 0.01 * math.log(200)
    assert r.structural["rmsd"]["mean"] == pytest.approx(0.0, abs=1e-9)
    _, reports = by_amplitude
    curve = reports[-1].structural["curve"]
    assert curve["sizes"] == [50, 100, 200]
    assert _strictly_increasing(curve["entropy_mean"])


def test_chemical_and_energetic_sections():
    ds = emt_dataset(("bulk:Cu-fcc", "smiles:CH4"), n_per_source=4, amplitude=0.03, include_minimum=True)
    r = diversity(ds, SMALL)
    c = r.chemical
    assert c["elements"] == ["H", "C", "Cu"]
    assert c["n_organic"] == 4 and c["n_inorganic"] == 4 and c["organic_and_inorganic"]
    assert c["n_compositions"] == 2 and c["composition_entropy"] == pytest.approx(math.log(2))
    assert c["atom_counts"] == {"H": 16, "C": 4, "Cu": 128}
    cats = r.energetic["category_counts"]
    assert cats["minima"] == 2 and cats["perturbed"] == 6
    p = np.array([2, 6]) / 8
    assert r.energetic["balance"] == pytest.approx(-(p * np.log(p)).sum() / math.log(3))
    assert len(r.energetic["energy_per_atom"]) == 8
    assert r.to_dict()["score"] == pytest.approx(r.score)


def test_helpers():
    assert formula([6, 1, 1, 1, 1]) == "CH4" and formula([29, 79, 29]) == "AuCu2"
    assert sampler_category("rattle") == "perturbed" and sampler_category("none") == "minima"
    assert sampler_category("high_energy") == "high_energy" and sampler_category("weird") == "other"
    assert _smoothness(np.array([0, 10, 0, 0.0])) == pytest.approx(0.0)
    flat = _smoothness(np.ones(10))
    assert flat == pytest.approx(0.9) and flat > _smoothness(np.array([1, 5, 1, 5, 1, 5, 1, 5, 1, 5.0]))


def test_rmsd_invariant_to_rotation_translation_and_periodic_images():
    mol = molecule("C6H6")
    rng = np.random.default_rng(0)
    moved = mol.copy()
    moved.rotate(37, (1, 2, 3), center="COM")
    moved.translate([3.0, -1.0, 2.0])
    bumped = mol.copy()
    disp = rng.normal(0, 0.1, size=(len(mol), 3))
    disp -= disp.mean(axis=0)
    bumped.positions += disp
    for a in (mol, moved, bumped):
        a.calc = SinglePointCalculator(a, energy=0.0, forces=np.zeros((len(a), 3)))
    rec = load_records([mol, moved, bumped])
    assert rmsd(rec, 0, 1) == pytest.approx(0.0, abs=1e-9)
    expected = np.sqrt((disp**2).sum(axis=1).mean())
    assert rmsd(rec, 0, 2) <= expected + 1e-12 and rmsd(rec, 0, 2) == pytest.approx(expected, rel=0.2)

    crystal = emt_dataset(("bulk:Cu-fcc",), n_per_source=2, amplitude=0.05)
    wrapped = crystal[0].copy()
    wrapped.positions[3] += wrapped.cell[0]  # the same structure, one atom in the next image
    wrapped.translate([0.2, 0.0, 0.0])  # and rigidly shifted
    wrapped.calc = crystal[0].calc
    rec = load_records([crystal[0], wrapped, crystal[1]])
    assert rmsd(rec, 0, 1) == pytest.approx(0.0, abs=1e-9)
    assert rmsd(rec, 0, 2) > 0.05


def test_single_element_warns_and_single_atom_errors():
    r = diversity(emt_dataset(("bulk:Cu-fcc",), n_per_source=3, amplitude=0.05), SMALL)
    assert r.chemical["n_elements"] == 1 and r.chemical["composition_entropy"] == 0.0
    assert any(w.startswith("single element (Cu)") for w in r.warnings)
    assert all("\n" not in w for w in r.warnings)
    atom = emt_dataset(("bulk:Cu-fcc",), n_per_source=1)[0][:1]
    atom.pbc = False
    atom.calc = SinglePointCalculator(atom, energy=0.1, forces=np.zeros((1, 3)))
    with pytest.raises(DatasetError, match="single atom"):
        diversity([atom], SMALL)
    with pytest.raises(DatasetError, match="empty"):
        diversity([], SMALL)


def test_nan_positions_and_flat_cells_do_not_break_descriptors():
    ds = emt_dataset(("bulk:Cu-fcc", "cluster:Ag-ico13"), n_per_source=3, amplitude=0.05)
    ds[0].positions[0] = np.nan
    ds[1].cell[2] = [0.0, 0.0, 0.0]  # periodic but flat
    r = diversity(ds, SMALL)
    assert np.isfinite(r.entropy) and np.isfinite(r.score)
    assert np.isfinite(r.structural["rmsd"]["mean"])


def test_quests_runs_without_the_openblas_openmp_warning():
    """QUESTS's numba-parallel loops call BLAS: with two BLAS threads (as on any multi-core
    machine without OMP_NUM_THREADS=1) OpenBLAS used to print 'Detect OpenMP Loop and this
    application may hang' once per call (every labelling chunk of the quickstart)."""
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from mlff_distiller.quality.diversity_metrics import quests_metrics\n"
        "x = np.random.default_rng(0).normal(size=(300, 40))\n"
        "h, d = quests_metrics(x, 0.015)\n"
        "assert h > 0\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env["OPENBLAS_NUM_THREADS"] = "2"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Detect OpenMP Loop" not in proc.stderr
