"""Exploration: the student drives short MD segments, relaxations and hot compressed MD.

Every trajectory starts from a seed structure of the training set and is checked after
each step; when it leaves the physical region (two atoms closer than ``min_contact`` x the
sum of their covalent radii, a non-finite coordinate or energy, or an energy per atom more
than ``max_energy_jump`` eV away from the start) it stops, and the last frame that was
still physical is kept as a candidate (the frames just before a failure are the most
useful ones to label). Units: K, fs, 1/fs, A, eV.

Frames carry ``info["provenance"]`` (source ``active/round-N``) and ``info["active"]``
(trajectory id, kind, step, temperature).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from ..generation.geometry import clean_copy, closest_contact_ratio
from ..generation.samplers import _langevin, compress
from .config import ActiveConfig


class _LeftPhysicalRegion(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class ExploreResult:
    frames: list = field(default_factory=list)  # candidate frames (ase.Atoms, no calculator)
    trajectories: list = field(default_factory=list)  # one dict per trajectory

    @property
    def stability(self) -> float:
        """Fraction of MD trajectories that ran all their steps inside the physical region."""
        md = [t for t in self.trajectories if t["kind"] != "relax"]
        return float(np.mean([t["stopped"] is None for t in md])) if md else float("nan")

    def summary(self) -> dict:
        stopped = {}
        for t in self.trajectories:
            if t["stopped"]:
                stopped[t["stopped"].split(":")[0]] = stopped.get(t["stopped"].split(":")[0], 0) + 1
        return {"n_frames": len(self.frames), "n_trajectories": len(self.trajectories),
                "md_stability": self.stability, "stopped": stopped,
                "steps": int(sum(t["steps"] for t in self.trajectories))}


class _Guard:
    """Per-step check of one trajectory; keeps the last physical frame."""

    def __init__(self, atoms: Atoms, cfg: ActiveConfig, dyn):
        self.atoms, self.cfg, self.dyn = atoms, cfg, dyn
        self.e0 = self._epa()
        self.last_good, self.last_good_step = clean_copy(atoms), 0

    @property
    def step(self) -> int:
        return int(self.dyn.nsteps)

    def _epa(self) -> float:
        return float(self.atoms.get_potential_energy()) / len(self.atoms)

    def __call__(self):
        a = self.atoms
        if self.cfg.min_contact > 0 and closest_contact_ratio(a, self.cfg.min_contact) < self.cfg.min_contact:
            raise _LeftPhysicalRegion("min_distance")
        epa = self._epa()
        if not np.isfinite(epa) or abs(epa - self.e0) > self.cfg.max_energy_jump:
            raise _LeftPhysicalRegion("energy")
        self.last_good, self.last_good_step = clean_copy(a), self.step


def kind_of(provenance: dict | None) -> str:
    """The exploration kind (``md``, ``relax``, ``hot``) of a candidate from its provenance
    (``sampler: active-<kind>``, written by :func:`_frame`)."""
    return str((provenance or {}).get("sampler", "")).removeprefix("active-")


def _frame(atoms: Atoms, round_no: int, kind: str, traj: int, step: int, parent: int, group: str,
           seed: int, **params) -> Atoms:
    out = clean_copy(atoms)
    out.info["provenance"] = {"source": f"active/round-{round_no}", "sampler": f"active-{kind}",
                              "params": {"step": step, **params}, "parent": int(parent),
                              "group": f"active/round-{round_no}/{group}", "seed": int(seed)}
    out.info["active"] = {"trajectory": traj, "kind": kind, "step": step, **params}
    return out


def _run_md(atoms, calc, T, cfg, rng, n_steps, emit) -> tuple[int, str | None]:
    """Langevin MD with the student; ``emit(atoms, step)`` every ``sample_interval`` steps."""
    dyn = _langevin(atoms, calc, T, cfg.timestep, cfg.friction, rng)

    def drive(guard):
        for k in range(cfg.sample_interval, n_steps + 1, cfg.sample_interval):
            dyn.run(cfg.sample_interval)
            emit(atoms, k)

    return _guarded(atoms, dyn, cfg, drive, emit)


def _guarded(atoms, dynamics, cfg, drive, emit) -> tuple[int, str | None]:
    """Run ``drive(guard)`` with the physical-region guard attached to ``dynamics``; a run that
    leaves the region emits its last good frame. Returns (steps, why it stopped or None)."""
    guard = _Guard(atoms, cfg, dynamics)
    dynamics.attach(guard, interval=1)
    try:
        drive(guard)
    except _LeftPhysicalRegion as err:
        emit(guard.last_good, guard.last_good_step)
        return guard.step, f"{err.reason}:step {guard.step}"
    finally:
        atoms.calc = None
    return guard.step, None


@dataclass(frozen=True)
class TrajectoryJob:
    """One exploration trajectory: which seed structure, what kind, and its own RNG seed."""

    trajectory: int  # id within the round (the order of the sequential loop)
    seed_position: int  # index into the round's seed structures
    parent: int  # the seed structure's index in the training set
    kind: str  # md | relax | hot
    T: float  # K (0 for relax)
    replica: int
    rng_seed: int


def trajectory_jobs(parents: list[int], cfg: ActiveConfig, round_no: int, seed: int) -> list[TrajectoryJob]:
    """Every trajectory of a round, in order: per seed structure ``replicas`` NVT trajectories
    at each temperature, one relaxation of a rattled copy (``relax_steps``) and one hot
    compressed MD (``hot_compress``). Each has its own seed, so the order they run in does not
    change what they give."""
    out: list[TrajectoryJob] = []
    for i, parent in enumerate(parents):
        kinds = [("md", float(T), r) for T in cfg.temperatures for r in range(cfg.replicas)]
        if cfg.relax_steps:
            kinds.append(("relax", 0.0, 0))
        if cfg.hot_compress:
            kinds.append(("hot", float(cfg.hot_temperature), 0))
        for kind, T, rep in kinds:
            traj = len(out)
            tseed = int(np.random.SeedSequence([seed, round_no, i, traj]).generate_state(1)[0])
            out.append(TrajectoryJob(traj, i, int(parent), kind, T, rep, tseed))
    return out


def run_trajectory(job: TrajectoryJob, root: Atoms, calc, cfg: ActiveConfig, round_no: int) -> tuple[list, dict]:
    """Run one trajectory with the student ``calc``; returns its candidate frames and record."""
    frames: list = []
    rng = np.random.default_rng(job.rng_seed)

    def emit(a, step):
        frames.append(_frame(a, round_no, job.kind, job.trajectory, int(step), job.parent, f"seed-{job.parent}",
                             job.rng_seed, T=job.T, replica=job.replica))

    atoms = clean_copy(root)
    if job.kind == "relax":
        steps, stopped = _relax(atoms, calc, cfg, rng, emit)
    else:
        if job.kind == "hot":
            atoms, _ = compress(atoms, rng, (cfg.hot_compress, cfg.hot_compress))
            atoms = clean_copy(atoms)
        steps, stopped = _run_md(atoms, calc, job.T, cfg, rng, cfg.md_steps, emit)
    return frames, {"trajectory": job.trajectory, "seed_index": job.parent, "kind": job.kind, "T": job.T,
                    "replica": job.replica, "steps": int(steps), "stopped": stopped}


def explore(seeds: list[Atoms], parents: list[int], calc, cfg: ActiveConfig, round_no: int, seed: int,
            client=None, student_run=None) -> ExploreResult:
    """Student-driven exploration from ``seeds`` (training-set structures, indices ``parents``);
    the trajectories are :func:`trajectory_jobs`. With a Dask ``client`` they run as tasks on its
    workers, each building the student once from ``student_run`` (its run directory or
    checkpoint) with ``cfg.backend``; the result is the same as in process (every trajectory
    has its own seed, and the frames are gathered in trajectory order). Deterministic for a
    given ``seed`` and student.
    """
    jobs = trajectory_jobs(parents, cfg, round_no, seed)
    if client is None:
        outs = [run_trajectory(j, seeds[j.seed_position], calc, cfg, round_no) for j in jobs]
    else:
        if student_run is None:
            raise ValueError("explore on Dask workers needs student_run (the student's run directory)")
        futures = [client.submit(_trajectory_task, str(student_run), cfg, round_no, j, seeds[j.seed_position],
                                 pure=False, key=f"explore-r{round_no}-t{j.trajectory}-{j.rng_seed}")
                   for j in jobs]
        outs = client.gather(futures)
    res = ExploreResult()
    for frames, record in outs:
        res.frames.extend(frames)
        res.trajectories.append(record)
    return res


@functools.lru_cache(maxsize=2)
def _worker_student(student_run: str, backend: str):
    """The student calculator of a worker process, built once per (run, backend)."""
    from ..student.calculator import StudentCalculator

    return StudentCalculator(student_run, backend=backend)


def _trajectory_task(student_run: str, cfg: ActiveConfig, round_no: int, job: TrajectoryJob, root: Atoms):
    return run_trajectory(job, root, _worker_student(student_run, cfg.backend), cfg, round_no)


def _relax(atoms, calc, cfg, rng, emit) -> tuple[int, str | None]:
    """BFGS with the student from a rattled copy (0.05 A); the end point is a candidate."""
    from ase.optimize import BFGS

    atoms.positions = atoms.positions + rng.normal(0.0, 0.05, atoms.positions.shape)
    atoms.calc = calc
    opt = BFGS(atoms, logfile=None)

    def drive(guard):
        opt.run(fmax=0.05, steps=cfg.relax_steps)
        emit(atoms, guard.step)

    return _guarded(atoms, opt, cfg, drive, emit)
