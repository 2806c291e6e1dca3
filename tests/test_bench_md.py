"""MD fidelity measures validated on EMT itself: drift, explosion flags, budgets, RDF."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from mlff_distiller.bench.md import (
    langevin_run,
    min_pair_distance,
    nve_drift,
    pair_distance_histogram,
    rdf_overlap,
)


def cu32():
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))


class Collapse(Calculator):
    """Every atom pulled to the centroid by a stiff spring: atoms must pass through each other."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, k):
        super().__init__()
        self.k = k  # eV/A^2

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        d = self.atoms.positions - self.atoms.positions.mean(axis=0)
        k = self.k
        self.results = {"energy": 0.5 * k * (d**2).sum(), "forces": -k * d}


class Slow(EMT):
    def calculate(self, *args, **kwargs):
        time.sleep(0.02)
        super().calculate(*args, **kwargs)


class Broken(EMT):
    def __init__(self, fail_after):
        super().__init__()
        self.calls = 0
        self.fail_after = fail_after

    def calculate(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.fail_after:
            raise RuntimeError("model refuses this geometry")
        super().calculate(*args, **kwargs)


# Stated bound: VelocityVerlet at 2 fs on EMT Cu conserves the total energy to better than
# 1e-4 eV/atom/ps of drift and 5e-4 eV/atom of excursion over 0.4 ps (200 steps).
def test_small_timestep_conserves_energy_on_emt():
    r = nve_drift(EMT(), cu32(), timestep_fs=2.0, duration_ps=0.4, temperature_K=300)
    assert r["status"] == "ok" and not r["flagged"], r["flags"]
    assert r["n_steps"] == 200
    assert r["simulated_ps"] == pytest.approx(0.4)
    assert abs(r["drift_ev_per_atom_per_ps"]) < 1e-4
    assert r["excursion_ev_per_atom"] < 5e-4
    assert len(r["trace"]["t_ps"]) == len(r["trace"]["etot_ev_per_atom"]) == 201
    assert 100 < r["max_temperature_K"] < 700


def test_drift_grows_with_timestep():
    small = nve_drift(EMT(), cu32(), timestep_fs=1.0, duration_ps=0.1)
    large = nve_drift(EMT(), cu32(), timestep_fs=8.0, duration_ps=0.4)
    assert large["excursion_ev_per_atom"] > 10 * small["excursion_ev_per_atom"]


def test_huge_timestep_is_flagged_and_stops_quickly():
    t0 = time.perf_counter()
    r = nve_drift(EMT(), cu32(), timestep_fs=60.0, duration_ps=30.0)  # 500 steps asked
    assert time.perf_counter() - t0 < 30
    assert r["status"] == "exploded"
    assert r["flagged"]
    assert r["n_steps"] < 100
    assert r["reason"] in r["flags"]


def test_close_approach_is_caught():
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]])
    # soft spring (peak kinetic energy ~1800 K, below the explosion threshold), cold start
    r, _ = langevin_run(Collapse(0.3), atoms, 1.0, timestep_fs=1.0, n_steps=2000, friction_per_fs=1e-6)
    assert r["status"] == "exploded" and not r["stable"]
    assert "apart" in r["reason"]
    assert r["closest_pair_A"] < 0.5


def test_wall_clock_budget_ends_the_run():
    t0 = time.perf_counter()
    r = nve_drift(Slow(), cu32(), timestep_fs=1.0, duration_ps=10.0, max_wall_s=0.5)
    assert time.perf_counter() - t0 < 10
    assert r["status"] == "time_limit" and not r["flagged"]
    assert 0 < r["n_steps"] < 10000
    assert r["simulated_ps"] < 10.0


def test_calculator_error_is_reported_not_raised():
    r = nve_drift(Broken(fail_after=5), cu32(), timestep_fs=1.0, duration_ps=0.1)
    assert r["status"] == "error"
    assert "model refuses this geometry" in r["reason"]
    assert r["flagged"]


def test_stability_of_emt_copper_at_300_and_1500_K():
    for T in (300.0, 1500.0):
        r, _ = langevin_run(EMT(), cu32(), T, timestep_fs=2.0, n_steps=150, friction_per_fs=0.05)
        assert r["stable"], r["reason"]
        assert 1.8 < r["closest_pair_A"] < 2.6  # closest Cu-Cu stays physical
        assert 0.3 * T < r["mean_temperature_K"] < 2.0 * T


def test_rdf_of_fcc_crystal_and_overlap():
    a = cu32()
    h = pair_distance_histogram([a], r_max=3.0, n_bins=60)
    r = np.asarray(h["r"])
    g = np.asarray(h["g"])
    assert h["periodic"]
    assert abs(r[np.argmax(g)] - 3.61 / np.sqrt(2)) < 0.05  # nearest-neighbour shell
    # coordination number: integral of rho g(r) 4 pi r^2 dr over the first shell is 12
    rho = len(a) / a.get_volume()
    width = r[1] - r[0]
    assert np.sum(rho * g * 4 * np.pi * r**2 * width) == pytest.approx(12.0, rel=1e-9)
    assert rdf_overlap(h, h) == pytest.approx(1.0)
    b = a.copy()
    b.set_cell(b.cell * 1.1, scale_atoms=True)  # shells move by 0.26 A: overlap drops
    hb = pair_distance_histogram([b], r_max=3.0, n_bins=60)
    assert rdf_overlap(h, hb) == pytest.approx(0.0, abs=1e-12)
    # molecule: unit-area pair-distance density
    m = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    hm = pair_distance_histogram([m], r_max=3.0, n_bins=30)
    assert not hm["periodic"]
    assert np.sum(hm["g"]) * 0.1 == pytest.approx(1.0)


def test_min_pair_distance_sees_periodic_images():
    a = Atoms("Cu", positions=[[0, 0, 0]], cell=[1.5, 10, 10], pbc=True)
    assert min_pair_distance(a) == pytest.approx(1.5)
    assert min_pair_distance(Atoms("Cu2", positions=[[0, 0, 0], [3.0, 0, 0]])) is None


@pytest.mark.parametrize("pbc", [True, False])
def test_pair_watch_between_full_checks_misses_no_close_pair(pbc):
    """The monitor measures only the pairs kept at its last full check between two full
    checks; on random moves of up to 0.25 A per step (periodic images included) it sees every
    pair closer than min_pair exactly as a full neighbour list does, and never reports less."""
    from mlff_distiller.bench.md import _PairWatch

    rng = np.random.default_rng(3)
    atoms = Atoms("Cu40", positions=rng.uniform(0, 7.0, (40, 3)), cell=[7.0, 7.0, 7.0], pbc=pbc)
    watch, min_pair = _PairWatch(min_pair=1.2, skin=1.0), 1.2
    full = seen = 0
    for step in range(400):
        atoms.positions += rng.uniform(-0.25, 0.25, (40, 3))
        truth = min_pair_distance(atoms)
        if step % 5 == 0 or not watch.valid(atoms):
            full += 1
            assert watch.full_check(atoms) == truth
            continue
        d = watch.closest_watched(atoms.positions)
        if truth is not None and truth < min_pair:
            seen += 1
            assert d == pytest.approx(truth, abs=1e-12)
        assert d is None or truth is not None and d >= truth - 1e-12
    assert seen > 20 and 80 < full < 400  # close pairs met between full checks, and the skin ran out too
    atoms.set_cell([7.5, 7.0, 7.0], scale_atoms=False)
    assert not watch.valid(atoms)  # another cell: a full check again
