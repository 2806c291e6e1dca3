"""MD fidelity: NVE energy drift, stability at a temperature, and radial distribution functions.

Every run is watched by a :class:`Monitor` after each step; it stops the run (never hangs)
when

* the energy or forces stop being finite,
* the instantaneous temperature exceeds ``explode_T`` (kinetic energy has exploded),
* two atoms come closer than ``min_pair`` (0.5 A by default),
* or the wall-clock budget ``max_wall_s`` is spent (status ``time_limit``: the run is
  reported as shorter than asked, not as a failure).

An exception from the calculator itself (e.g. a model that refuses a geometry) also ends
the run, recorded as status ``error`` with its one-line message. A single force call
that never returns cannot be interrupted from Python; the budget is checked between steps.

Units: time in fs (input) and ps (reports), energies in eV, temperatures in K, lengths in A.
"""

from __future__ import annotations

import time

import numpy as np
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet

from ..data.neighbors import closest_pair, neighbor_list, pairs_within

#: NVE drift above this (eV/atom/ps, absolute) is flagged.
DRIFT_LIMIT = 1e-3
#: NVE total-energy excursion above this (eV/atom) is flagged.
EXCURSION_LIMIT = 1e-2


class _Stop(Exception):
    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def min_pair_distance(atoms, within: float = 3.0) -> float | None:
    """Shortest interatomic distance (A) if below ``within``, else ``None`` (periodic images included)."""
    if len(atoms) < 2 and not atoms.pbc.any():
        return None
    pair = closest_pair(atoms.positions, atoms.cell.array, atoms.pbc, within)
    return pair.distance if pair.found else None


def temperature(atoms) -> float:
    """Instantaneous temperature (K) from the kinetic energy, 3N degrees of freedom."""
    return 2.0 * atoms.get_kinetic_energy() / (3.0 * len(atoms) * units.kB)


class Monitor:
    """Observer that records a trace and stops unphysical or over-budget runs (see module doc)."""

    def __init__(self, atoms, timestep_fs, explode_T, min_pair=0.5, max_wall_s=600.0, record_every=1, check_every=5):
        self.atoms = atoms
        self.dt_ps = timestep_fs / 1000.0
        self.explode_T = explode_T
        self.min_pair = min_pair
        self.max_wall_s = max_wall_s
        self.record_every = max(1, int(record_every))
        self.check_every = max(1, int(check_every))
        self.dyn = None  # set by _drive; the step count is the integrator's
        self.step = 0
        self.t0 = time.perf_counter()
        self.t_ps, self.epot, self.ekin = [], [], []
        self.max_T = 0.0
        self.closest = None
        self.pairs = _PairWatch(min_pair)
        self.record()

    def record(self):
        epot = float(self.atoms.get_potential_energy())
        ekin = float(self.atoms.get_kinetic_energy())
        self.t_ps.append(self.step * self.dt_ps)
        self.epot.append(epot)
        self.ekin.append(ekin)

    def __call__(self):
        if self.dyn.nsteps == 0:  # ASE also calls observers before the first step
            return
        self.step = self.dyn.nsteps
        epot = float(self.atoms.get_potential_energy())
        forces = self.atoms.get_forces()
        if not np.isfinite(epot) or not np.all(np.isfinite(forces)):
            raise _Stop("exploded", f"non-finite energy or forces at step {self.step}")
        T = temperature(self.atoms)
        self.max_T = max(self.max_T, T)
        if not np.isfinite(T) or T > self.explode_T:
            raise _Stop("exploded", f"temperature {T:.3g} K above {self.explode_T:.0f} K at step {self.step}")
        if self.step % self.record_every == 0:
            self.record()
        if self.step % self.check_every == 0 or not self.pairs.valid(self.atoms):
            d = self.pairs.full_check(self.atoms)
            if d is not None:
                self.closest = d if self.closest is None else min(self.closest, d)
        else:  # between full checks only the pairs that could have come within min_pair
            d = self.pairs.closest_watched(self.atoms.positions)
        if d is not None and d < self.min_pair:
            self.closest = d if self.closest is None else min(self.closest, d)
            raise _Stop("exploded", f"atoms {d:.2f} A apart (< {self.min_pair} A) at step {self.step}")
        if time.perf_counter() - self.t0 > self.max_wall_s:
            raise _Stop("time_limit", f"wall-clock budget {self.max_wall_s:.0f} s spent at step {self.step}")


class _PairWatch:
    """The monitor's closest-pair checks without a neighbour list at every step.

    A full check lists the pairs within ``within`` A (the closest one is reported) and keeps
    those within ``min_pair + skin`` with their periodic shifts. Until the next full check only
    those are measured: a pair outside the list was at least ``min_pair + skin`` apart, so while
    no atom has moved more than ``skin / 2`` since, it is still farther than ``min_pair``. When
    one has (or before the first full check), :meth:`valid` is false and the monitor makes a
    full check instead, so no pair closer than ``min_pair`` is missed. Units: A.
    """

    def __init__(self, min_pair: float, skin: float = 1.0, within: float = 3.0):
        self.min_pair, self.skin, self.within = float(min_pair), float(skin), float(within)
        self.ref = self.cell = None  # positions and cell at the last full check
        self.edges, self.offsets = np.zeros((2, 0), np.int64), np.zeros((0, 3))  # the pairs kept then

    def valid(self, atoms) -> bool:
        positions = atoms.positions
        if self.ref is None or self.ref.shape != positions.shape or not np.array_equal(self.cell, atoms.cell.array):
            return False  # no full check yet, or another structure or cell
        moved = float(np.max(np.einsum("ij,ij->i", positions - self.ref, positions - self.ref), initial=0.0))
        return 2.0 * np.sqrt(moved) < self.skin

    def full_check(self, atoms) -> float | None:
        """The closest distance within ``within`` (None if no pair is), as :func:`min_pair_distance`."""
        self.ref, self.cell = np.array(atoms.positions, dtype=np.float64), np.array(atoms.cell.array)
        if len(atoms) < 2 and not atoms.pbc.any():
            self.edges, self.offsets = np.zeros((2, 0), np.int64), np.zeros((0, 3))
            return None
        edge_index, edge_shift, box, d = pairs_within(atoms.positions, atoms.cell.array, atoms.pbc,
                                                      max(self.within, self.min_pair + self.skin))
        keep = d < self.min_pair + self.skin
        self.edges, self.offsets = edge_index[:, keep], edge_shift[keep] @ box
        near = d[d < self.within]
        return float(near.min()) if near.size else None

    def closest_watched(self, positions) -> float | None:
        """The closest distance among the kept pairs (None if there are none)."""
        if self.edges.shape[1] == 0:
            return None
        i, j = self.edges
        r = positions[j] - positions[i] + self.offsets
        return float(np.sqrt(np.einsum("ij,ij->i", r, r).min()))


def thermalize(atoms, temperature_K: float, seed: int) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K`` (K), seeded; no centre-of-mass motion,
    and no net rotation for an isolated, non-linear structure."""
    rng = np.random.default_rng(seed)
    try:  # ASE >= 3.29
        from ase.md.velocitydistribution import thermalize_momenta

        thermalize_momenta(atoms, temperature_K, rng=rng)
    except ImportError:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    if not atoms.pbc.any() and len(atoms) > 2:
        moments = atoms.get_moments_of_inertia()
        if moments.min() > 1e-6 * moments.max():  # ZeroRotation divides by them
            ZeroRotation(atoms)


def _prepare(atoms, calc, temperature_K, seed):
    work = atoms.copy()
    work.calc = calc
    thermalize(work, temperature_K, seed)
    return work


def _drive(dyn, monitor, n_steps, progress: str | None = None) -> tuple[str, str]:
    """Run ``n_steps``; ``progress`` (a label) shows a tqdm bar with rate and ETA."""
    monitor.dyn = dyn
    bar = None
    if progress:
        from ..logs import progress as progress_bar

        bar = progress_bar(total=n_steps, desc=progress, unit="step", leave=False, mininterval=0.5)
        dyn.attach(lambda: bar.update(1) if dyn.nsteps > 0 else None, interval=1)
    try:
        dyn.run(n_steps)
    except _Stop as stop:
        return stop.status, stop.reason
    except Exception as err:  # the model itself gave up on a geometry
        msg = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        return "error", f"calculator failed at step {monitor.step}: {msg}"
    finally:
        if bar is not None:
            bar.close()
    return "ok", ""


def nve_drift(
    calc,
    atoms,
    timestep_fs: float = 0.5,
    duration_ps: float = 10.0,
    temperature_K: float = 300.0,
    seed: int = 0,
    max_wall_s: float = 600.0,
    drift_limit: float = DRIFT_LIMIT,
    excursion_limit: float = EXCURSION_LIMIT,
    explode_T: float | None = None,
    n_trace: int = 2000,
    progress: str | None = None,
) -> dict:
    """NVE (VelocityVerlet) from Maxwell-Boltzmann velocities at ``temperature_K``.

    ``drift_ev_per_atom_per_ps`` is the slope of a least-squares line through the total
    energy per atom against time; ``excursion_ev_per_atom`` is the largest ``|E(t) - E(0)|``
    per atom. ``flagged`` is true when the run did not finish (``status`` not ``ok`` /
    ``time_limit``), or either number exceeds its limit; ``flags`` says why.
    """
    n_steps = max(1, int(round(duration_ps * 1000.0 / timestep_fs)))
    work = _prepare(atoms, calc, temperature_K, seed)
    explode_T = explode_T or max(10.0 * temperature_K, 5000.0)
    mon = Monitor(work, timestep_fs, explode_T, max_wall_s=max_wall_s, record_every=max(1, n_steps // n_trace))
    dyn = VelocityVerlet(work, timestep=timestep_fs * units.fs)
    dyn.attach(mon, interval=1)
    t0 = time.perf_counter()
    status, reason = _drive(dyn, mon, n_steps, progress)
    wall = time.perf_counter() - t0
    n = len(work)
    t = np.asarray(mon.t_ps)
    etot = (np.asarray(mon.epot) + np.asarray(mon.ekin)) / n
    if len(t) >= 2 and t[-1] > 0:
        slope = float(np.polyfit(t, etot, 1)[0])
    else:
        slope = float("nan")
    excursion = float(np.max(np.abs(etot - etot[0]))) if len(etot) else float("nan")
    flags = []
    if status not in ("ok", "time_limit"):
        flags.append(reason)
    if np.isfinite(slope) and abs(slope) > drift_limit:
        flags.append(f"drift {slope:.2e} eV/atom/ps above {drift_limit:.0e}")
    if np.isfinite(excursion) and excursion > excursion_limit:
        flags.append(f"energy excursion {excursion:.2e} eV/atom above {excursion_limit:.0e}")
    return {
        "status": status,
        "reason": reason,
        "timestep_fs": timestep_fs,
        "requested_ps": duration_ps,
        "simulated_ps": mon.step * timestep_fs / 1000.0,
        "n_steps": mon.step,
        "wall_s": wall,
        "drift_ev_per_atom_per_ps": slope,
        "excursion_ev_per_atom": excursion,
        "max_temperature_K": float(mon.max_T),
        "flagged": bool(flags),
        "flags": flags,
        "trace": {"t_ps": t.tolist(), "etot_ev_per_atom": etot.tolist()},
    }


def langevin_run(
    calc,
    atoms,
    temperature_K: float,
    timestep_fs: float = 0.5,
    n_steps: int = 1000,
    friction_per_fs: float = 0.01,
    seed: int = 0,
    max_wall_s: float = 600.0,
    explode_T: float | None = None,
    sample_every: int = 0,
    equilibrate_fraction: float = 0.2,
    progress: str | None = None,
) -> tuple[dict, list]:
    """Langevin (NVT) run; returns ``(report, frames)``.

    ``report["stable"]`` is true when the run ended without explosion or error (a
    ``time_limit`` stop still counts as stable over the time simulated). ``frames`` are
    position snapshots (copies of the atoms) every ``sample_every`` steps after the first
    ``equilibrate_fraction`` of the run, for RDFs (none when ``sample_every`` is 0).
    """
    work = _prepare(atoms, calc, temperature_K, seed)
    explode_T = explode_T or max(5.0 * temperature_K, 3000.0)
    mon = Monitor(work, timestep_fs, explode_T, max_wall_s=max_wall_s, record_every=max(1, n_steps // 1000))
    dyn = Langevin(
        work,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=friction_per_fs / units.fs,
        rng=np.random.default_rng(seed + 1),
        fixcm=False,  # fixcm=True is deprecated in ASE; a drifting centre of mass is harmless here
    )
    dyn.attach(mon, interval=1)
    frames = []
    if sample_every:
        start = int(equilibrate_fraction * n_steps)

        def grab():
            if dyn.nsteps >= start and dyn.nsteps > 0:
                frames.append(work.copy())

        dyn.attach(grab, interval=int(sample_every))
    t0 = time.perf_counter()
    status, reason = _drive(dyn, mon, n_steps, progress)
    wall = time.perf_counter() - t0
    temps = 2.0 * np.asarray(mon.ekin) / (3.0 * len(work) * units.kB)
    tail = temps[len(temps) // 2 :]
    return (
        {
            "temperature_K": temperature_K,
            "status": status,
            "reason": reason,
            "stable": status in ("ok", "time_limit"),
            "requested_steps": n_steps,
            "requested_ps": n_steps * timestep_fs / 1000.0,
            "n_steps": mon.step,
            "simulated_ps": mon.step * timestep_fs / 1000.0,
            "wall_s": wall,
            "mean_temperature_K": float(tail.mean()) if len(tail) else float("nan"),
            "max_temperature_K": float(mon.max_T),
            "closest_pair_A": mon.closest,
        },
        frames,
    )


def pair_distance_histogram(frames, r_max: float = 6.0, n_bins: int = 120) -> dict:
    """Radial distribution over ``frames`` (all element pairs together).

    For 3-D periodic frames ``g`` is the usual g(r) (ideal-gas normalised: tends to 1);
    for isolated or partly periodic ones it is the pair-distance density normalised to unit
    area (no ideal-gas reference exists). ``counts`` are the raw pair counts per bin,
    used for the overlap score.
    """
    edges = np.linspace(0.0, r_max, n_bins + 1)
    counts = np.zeros(n_bins)
    periodic = bool(len(frames) and frames[0].pbc.all())
    n_atoms = len(frames[0]) if frames else 0
    for a in frames:
        ei, sh = neighbor_list(a.positions, a.cell.array, a.pbc, r_max)
        d = a.positions[ei[1]] - a.positions[ei[0]] + sh @ a.cell.array
        counts += np.histogram(np.sqrt((d**2).sum(axis=1)), bins=edges)[0]
    r = 0.5 * (edges[1:] + edges[:-1])
    width = edges[1] - edges[0]
    if periodic and frames:
        rho = n_atoms / frames[0].get_volume()
        shell = 4.0 * np.pi * r**2 * width
        g = counts / (len(frames) * n_atoms * rho * shell)
    else:
        total = counts.sum()
        g = counts / (total * width) if total else counts
    return {"r": r.tolist(), "g": g.tolist(), "counts": counts.tolist(), "periodic": periodic, "n_frames": len(frames)}


def rdf_overlap(a: dict, b: dict) -> float:
    """Overlap of two pair-distance histograms: ``sum(min(p, q))`` with ``p, q`` the counts
    normalised to unit sum. 1 means identical distributions, 0 means disjoint."""
    p = np.asarray(a["counts"], float)
    q = np.asarray(b["counts"], float)
    if p.sum() == 0 or q.sum() == 0:
        return float("nan")
    return float(np.minimum(p / p.sum(), q / q.sum()).sum())
