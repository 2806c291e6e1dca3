"""Held-out accuracy on the teacher's own molecular dynamics.

A recipe's test split holds structures its own samplers made. The configurations a student
meets in production MD are the *teacher's* thermal ensemble, at and above the trained
temperatures, in cells and on surfaces the recipe may never have built. This module makes
such a held-out set and scores the student on it:

1. :func:`teacher_md_frames`: Langevin MD driven by the teacher from a named system
   (:mod:`~mlff_distiller.bench.systems`), frames taken every ``interval`` steps after
   ``equil_steps``, each labelled by the teacher (energy in eV, forces in eV/A);
2. :func:`score_frames`: the student's energy and forces on the same frames;
3. :func:`heldout_metrics`: per run and pooled, the **absolute** energy error per atom
   (mean |E_s - E_t| / N, eV/atom), the mean signed error per atom (the *offset*: a constant
   that a centered comparison would hide), the centered energy MAE (offset removed), and the
   force RMSE relative to the teacher's force RMS; each with a bootstrap 95 % interval. With
   one trajectory per (system, temperature) the draws resample frames within each run, which
   understates the uncertainty: MD frames of one run are correlated, and hot MD amplifies
   last-digit differences, so a second trajectory of the same settings samples other frames.
   With ``replicas`` > 1 independent trajectories (seeds ``seed``, ``seed + 1``, ...) the
   draws resample whole trajectories within each (system, temperature), then frames within
   each drawn trajectory: the interval then covers trajectory-to-trajectory spread.
4. :func:`paired_difference`: two students scored on the same frames -> the difference of a
   metric with a paired bootstrap interval (for learning curves and A/B comparisons).

Units: eV, eV/atom, eV/A, K, fs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from dataclasses import field
from pathlib import Path
from typing import Annotated

import numpy as np
from ase.io import read, write
from pydantic import BeforeValidator, Field

from ..fileio import atomic_write_text
from ..settings import Float, Int, as_list, build, invalid, limits, section

N_BOOT = 1000


_SYSTEMS = "a list of at least one system (e.g. [si-64, si-slab]) or a mapping {system: [temperatures in K]}"
_TEMPERATURES = "a list of positive temperatures in K"


def _systems(value):
    """One system name stands for a list of one; a tuple is a list."""
    return as_list(value) if isinstance(value, (str, tuple)) else value


@section("bench.heldout")
class HeldoutConfig:
    """The ``bench.heldout`` section: which teacher MD runs make the held-out set.

    ``systems``: bench system names or structure files, each run at every temperature of
    ``temperatures_K`` (K); or a mapping ``{system: [temperatures]}`` when systems need their
    own temperatures (a molecule and a crystal rarely share them). ``frames`` per run, every
    ``interval`` MD steps of ``timestep_fs`` after ``equil_steps``; ``friction_per_fs`` of the
    thermostat. ``replicas`` independent trajectories per (system, temperature), replica ``r``
    with seed ``seed + r`` (run name ``system@TK#r`` for ``r`` >= 1): the bootstrap intervals
    then resample trajectories, not only frames of one trajectory. ``relax_steps`` > 0 first
    relaxes the start structure with the teacher (FIRE, positions only, at most that many steps,
    to 0.05 eV/A): a built liquid box is far from its minimum, and the energy it releases heats
    the run well above its thermostat (the water box's "300 K" run averaged ~600 K without it).
    """

    systems: Annotated[list | dict, BeforeValidator(_systems), limits(allowed=_SYSTEMS)] = field(default_factory=list)
    temperatures_K: Annotated[list[Annotated[Float, Field(gt=0)]], limits(min_length=1, allowed=_TEMPERATURES)] = field(
        default_factory=lambda: [300.0])
    frames: Annotated[Int, limits(ge=1)] = 20
    interval: Annotated[Int, limits(ge=1)] = 10
    equil_steps: Annotated[Int, limits(ge=0)] = 100
    timestep_fs: Annotated[Float, limits(gt=0, unit="fs")] = 1.0
    friction_per_fs: Annotated[Float, limits(gt=0, unit="1/fs")] = 0.02
    seed: Int = 0
    relax_steps: Annotated[Int, limits(ge=0, note="0 = off")] = 0
    replicas: Annotated[Int, limits(ge=1)] = 1

    @classmethod
    def from_dict(cls, d: dict | None) -> "HeldoutConfig | None":
        if d is None:
            return None
        return build(cls, d)

    def runs(self) -> list[tuple[str, float]]:
        """``(system, temperature_K)`` of every teacher MD run, in order."""
        if isinstance(self.systems, dict):
            return [(str(name), float(t)) for name, temps in self.systems.items() for t in temps]
        return [(str(name), float(t)) for name in self.systems for t in self.temperatures_K]

    def __post_init__(self) -> None:
        """At least one system; each system of a mapping with its own list of temperatures."""
        if not self.systems:
            raise invalid("bench.heldout.systems", self.systems, _SYSTEMS)
        for name, temps in (self.systems.items() if isinstance(self.systems, dict) else []):
            if not isinstance(temps, (list, tuple)) or not temps or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in temps
            ):
                raise invalid(f"bench.heldout.systems.{name}", temps, _TEMPERATURES)


def teacher_md_frames(teacher_calc, atoms, temperature_K: float, cfg: HeldoutConfig, seed: int = 0,
                      max_wall_s: float = 3600.0) -> tuple[list, dict]:
    """Teacher-driven Langevin MD from ``atoms`` at ``temperature_K``; returns ``(frames, report)``.

    Each frame is a copy of the atoms with ``info["energy_ref"]`` (eV) and
    ``arrays["forces_ref"]`` (eV/A) from the teacher at exactly those positions. The report
    is :func:`~mlff_distiller.bench.md.langevin_run`'s (status, temperatures, closest pair).
    """
    from .md import langevin_run

    if cfg.relax_steps:
        atoms = relaxed_start(teacher_calc, atoms, cfg.relax_steps)
    n_steps = cfg.equil_steps + cfg.frames * cfg.interval
    report, snaps = langevin_run(
        teacher_calc, atoms, float(temperature_K), timestep_fs=cfg.timestep_fs, n_steps=n_steps,
        friction_per_fs=cfg.friction_per_fs, seed=seed, max_wall_s=max_wall_s,
        sample_every=cfg.interval, equilibrate_fraction=cfg.equil_steps / n_steps,
    )
    frames = []
    for snap in snaps[: cfg.frames]:
        work = snap.copy()
        work.calc = teacher_calc
        forces = np.asarray(work.get_forces(), dtype=np.float64)
        energy = float(work.get_potential_energy())
        work.calc = None
        work.info["energy_ref"] = energy
        work.arrays["forces_ref"] = forces
        frames.append(work)
    return frames, report


def relaxed_start(calc, atoms, max_steps: int, fmax: float = 0.05):
    """A copy of ``atoms`` relaxed with ``calc`` (FIRE, positions only, at most ``max_steps``
    steps or until the largest force is below ``fmax`` eV/A), without a calculator attached."""
    from ase.optimize import FIRE

    work = atoms.copy()
    work.calc = calc
    FIRE(work, logfile=None).run(fmax=fmax, steps=int(max_steps))
    work.calc = None
    return work


def score_frames(student_calc, frames) -> list[dict]:
    """Per-frame records (``n``, energies in eV, forces in eV/A) of a student on labelled frames."""
    records = []
    for frame in frames:
        work = frame.copy()
        work.calc = student_calc
        records.append({
            "n": len(work),
            "e_ref": float(frame.info["energy_ref"]),
            "e_pred": float(work.get_potential_energy()),
            "f_ref": np.asarray(frame.arrays["forces_ref"], dtype=np.float64),
            "f_pred": np.asarray(work.get_forces(), dtype=np.float64),
        })
    return records


def _per_frame(records: list[dict]) -> dict:
    """Per-frame sums the metrics are made of: energy error per atom (eV/atom), squared force
    error and squared teacher force (eV/A)^2."""
    return {
        "de": np.array([(r["e_pred"] - r["e_ref"]) / r["n"] for r in records]),
        "se": np.array([float(np.sum((r["f_pred"] - r["f_ref"]) ** 2)) for r in records]),
        "sr": np.array([float(np.sum(r["f_ref"] ** 2)) for r in records]),
    }


def _point(pf: dict, runs: list[np.ndarray]) -> dict:
    """Pooled metrics of the frames listed in ``runs`` (one index array per run)."""
    d = [pf["de"][idx] for idx in runs]
    d_all = np.concatenate(d)
    centered = np.concatenate([x - x.mean() for x in d])  # the offset removed per run
    idx_all = np.concatenate(runs)
    sr = pf["sr"][idx_all].sum()
    return {
        "energy_mae_per_atom": float(np.mean(np.abs(d_all))),
        "energy_offset_per_atom": float(np.mean(d_all)),
        "energy_mae_centered_per_atom": float(np.mean(np.abs(centered))),
        "force_rel_rmse": float(np.sqrt(pf["se"][idx_all].sum() / sr)) if sr > 0 else float("nan"),
    }


def condition_of(run_id) -> str:
    """The (system, temperature) a run belongs to: its name without the replica suffix ``#r``."""
    return str(run_id).split("#", 1)[0]


def _groups(run_ids: list) -> list[list[np.ndarray]]:
    """Frame indices per trajectory, trajectories grouped by (system, temperature)."""
    keys = sorted(set(run_ids), key=str)
    conds = sorted({condition_of(k) for k in keys})
    return [[np.array([i for i, r in enumerate(run_ids) if r == key]) for key in keys if condition_of(key) == c]
            for c in conds]


def _flat(groups: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [idx for trajectories in groups for idx in trajectories]


def _draws(groups: list[list[np.ndarray]], n_boot: int, seed: int):
    """Bootstrap draws: with several trajectories of one (system, temperature), trajectories
    with replacement, then frames with replacement within each drawn one; with one, its frames."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        draw = []
        for trajectories in groups:
            chosen = rng.integers(len(trajectories), size=len(trajectories)) if len(trajectories) > 1 else [0]
            draw += [rng.choice(trajectories[c], size=len(trajectories[c]), replace=True) for c in chosen]
        yield draw


def heldout_metrics(records: list[dict], run_ids: list, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Pooled metrics over the frames of all runs, each with a bootstrap 95 % interval.

    ``run_ids[k]`` names the run frame ``k`` belongs to (``system@TK``, or ``system@TK#r`` for
    replica ``r``); resampling draws frames with replacement within each run, so every
    (system, temperature) keeps its weight, and draws the replicas of a (system, temperature)
    with replacement first when it has several.
    """
    pf, groups = _per_frame(records), _groups(run_ids)
    point = _point(pf, _flat(groups))
    boots = [_point(pf, draw) for draw in _draws(groups, n_boot, seed)]
    out = {"n_frames": len(records), "n_runs": len(_flat(groups)), "n_conditions": len(groups)}
    for name, value in point.items():
        samples = np.array([b[name] for b in boots])
        out[name] = value
        out[name + "_ci95"] = [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]
    return out


def paired_difference(records_a: list[dict], records_b: list[dict], run_ids: list, metric: str,
                      n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """``metric(b) - metric(a)`` on the same frames with a paired bootstrap 95 % interval.

    Both students' records must come from the same frames in the same order; each bootstrap
    draw uses one set of frame indices for both, so frame-to-frame difficulty cancels.
    """
    if len(records_a) != len(records_b):
        raise ValueError("paired_difference: the two record lists must come from the same frames")
    pa, pb, groups = _per_frame(records_a), _per_frame(records_b), _groups(run_ids)
    diff = _point(pb, _flat(groups))[metric] - _point(pa, _flat(groups))[metric]
    samples = np.array([_point(pb, d)[metric] - _point(pa, d)[metric] for d in _draws(groups, n_boot, seed)])
    return {"metric": metric, "difference": float(diff),
            "ci95": [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]}


def _cache_key(teacher_label: str, atoms, temperature_K: float, cfg: HeldoutConfig, replica: int = 0) -> dict:
    """What decides a teacher MD run's frames: the teacher, the start structure, T, the MD
    settings and the replica (its seed)."""
    h = hashlib.sha256()
    for arr in (atoms.numbers.astype(np.int64), atoms.positions.astype(np.float64),
                np.asarray(atoms.cell, dtype=np.float64), atoms.pbc.astype(np.int8)):
        h.update(np.ascontiguousarray(arr).tobytes())
    md = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("systems", "temperatures_K", "replicas")}
    if not md["relax_steps"]:  # caches made before the option existed stay valid
        del md["relax_steps"]
    if replica:  # replica 0 is the single run of earlier caches
        md["replica"], md["seed"] = int(replica), cfg.seed + int(replica)
    return {"teacher": teacher_label, "structure_sha256": h.hexdigest(), "temperature_K": float(temperature_K), **md}


def read_frames(path) -> list:
    """All frames of one cached run's ``.extxyz`` file (labels in ``info["energy_ref"]`` eV and
    ``arrays["forces_ref"]`` eV/A), read through a handle: ASE reads '@' in a file name as an index."""
    with open(path) as fh:
        return read(fh, index=":", format="extxyz")


def _cached_frames(cache_dir, name: str, key: dict):
    """``(frames, report)`` stored for exactly ``key`` in ``cache_dir``, else None."""
    if cache_dir is None:
        return None
    meta_path = Path(cache_dir) / f"{name}.json"
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != key:
            return None
        frames = read_frames(Path(cache_dir) / f"{name}.extxyz")
    except (OSError, ValueError, KeyError):
        return None
    if len(frames) != meta.get("n_frames"):
        return None
    for f in frames:  # extxyz reads the labels back under their own names
        f.calc = None
    return frames, meta["report"]


def _store_frames(cache_dir, name: str, key: dict, frames, report) -> None:
    if cache_dir is None:
        return
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    if frames:
        write(buf, frames, format="extxyz")
    atomic_write_text(cache_dir / f"{name}.extxyz", buf.getvalue())
    # the metadata last: it is what makes the frames count as cached
    atomic_write_text(cache_dir / f"{name}.json",
                      json.dumps({"key": key, "n_frames": len(frames), "report": report}, default=float) + "\n")


def _teacher_md_task(spec, threads: int | None, atoms, temperature_K: float, cfg: HeldoutConfig, seed: int,
                     max_wall_s: float):
    """One held-out run on a Dask worker (the teacher built once per process from ``spec``)."""
    from ..labeling.worker import get_teacher

    return teacher_md_frames(get_teacher(spec, threads).calculator(), atoms, temperature_K, cfg, seed=seed,
                             max_wall_s=max_wall_s)


def heldout_frames(t_handle, cfg: HeldoutConfig, max_wall_s: float = 3600.0, progress=None, cache_dir=None,
                   cluster: dict | None = None, meanwhile=None):
    """``[(run_key, n_atoms, T, frames, teacher_md_report)]`` for every (system, temperature) of
    ``cfg``: the teacher's labelled MD frames, from ``cache_dir`` when they are there for exactly
    this teacher (fingerprint: version + weights), start structure, temperature and MD settings.

    ``cluster``: keyword arguments of :func:`mlff_distiller.labeling.cluster.connect` (e.g.
    ``{"n_workers": 2}``). With it, and more than one run to make, the runs are tasks on that
    Dask cluster (one run per worker at a time), each stored in the cache once it and the runs
    before it are done. Each run keeps its own seed, so the frames are those of the runs made one
    after another here, up to the last digits of a teacher whose results depend on its thread count.
    A teacher given as a bare ASE calculator (no spec to rebuild it from) runs here.

    ``meanwhile``: a function of no arguments called once in this process while the runs go on
    the cluster (the bench's student MD: the workers then use the cores it leaves free); without
    a cluster it is called after the runs. Its exception, or the first run's, is raised after both
    have stopped; each run finished before then is in the cache.
    """
    from .systems import load_system

    loaded, done, todo = {}, {}, []
    teacher_id = (t_handle.info or {}).get("fingerprint_id") or t_handle.label
    for i, (name, T, replica) in enumerate((n, T, r) for n, T in cfg.runs() for r in range(cfg.replicas)):
        sys_ = loaded.setdefault(name, load_system(name))
        key = f"{sys_.name}@{T:g}K" + (f"#{replica}" if replica else "")
        cache_key = _cache_key(teacher_id, sys_.atoms, T, cfg, replica)
        cached = _cached_frames(cache_dir, key, cache_key)
        if cached is not None:
            if progress:
                progress(f"held-out teacher MD {key}: {len(cached[0])} frames from {cache_dir}")
            done[i] = (key, len(sys_.atoms), T, *cached)
        else:
            todo.append((i, key, cache_key, sys_, T, cfg.seed + replica))

    def finish(item, frames, report):
        i, key, cache_key, sys_, T, _ = item
        _store_frames(cache_dir, key, cache_key, frames, report)
        done[i] = (key, len(sys_.atoms), T, frames, report)

    rebuild = getattr(t_handle, "rebuild", None)  # an ASE calculator as teacher has none: runs here
    spec = rebuild[1] if rebuild and rebuild[0] == "teacher" else None
    remote = bool(cluster) and (cluster.get("scheduler") or cluster.get("hpc") or cluster.get("n_workers", 1) > 1)
    if remote and len(todo) > 1 and spec is not None:
        from ..labeling.cluster import connect

        if progress:
            progress(f"held-out teacher MD: {len(todo)} runs ({', '.join(t[1] for t in todo)}) on a Dask cluster")
        with connect(**cluster) as client:
            threads = cluster.get("threads_per_worker", 1)
            futures = [client.submit(_teacher_md_task, spec, threads, item[3].atoms, item[4], cfg, item[5],
                                     max_wall_s, pure=False) for item in todo]

            def collect():
                for fut, item in zip(futures, todo):  # each stored once it and those before it are done
                    frames, report = fut.result()
                    finish(item, frames, report)
                    if progress:
                        progress(f"held-out teacher MD {item[1]}: {len(frames)} frames")

            _alongside(collect, meanwhile, stop=lambda: client.cancel(futures))
    else:
        for item in todo:
            if progress:
                progress(f"held-out teacher MD {item[1]}")
            finish(item, *teacher_md_frames(t_handle.make_calculator(), item[3].atoms, item[4], cfg, seed=item[5],
                                            max_wall_s=max_wall_s))
        if meanwhile is not None:
            meanwhile()
    return [done[i] for i in sorted(done)]


def _alongside(background, foreground, stop) -> None:
    """Run ``background`` in a thread while ``foreground`` (when given) runs in this one. When
    ``foreground`` fails, ``stop()`` ends the background work and its error is raised; else the
    background's error, once it has stopped."""
    import threading

    errors = []

    def target():
        try:
            background()
        except BaseException as err:  # handed to the caller below
            errors.append(err)

    thread = threading.Thread(target=target, name="heldout-teacher-md", daemon=True)
    thread.start()
    try:
        if foreground is not None:
            foreground()
    except BaseException:
        stop()  # no held-out run keeps a worker busy for a bench that has failed
        thread.join()
        raise
    thread.join()
    if errors:
        raise errors[0]


def run_heldout(s_handle, t_handle, cfg: HeldoutConfig, max_wall_s: float = 3600.0, progress=None,
                cache_dir=None, runs=None) -> dict:
    """Teacher MD on every (system, temperature) of ``cfg``, scored by the student.

    Returns ``{"config", "runs": {name: {metrics, md report}}, "pooled": metrics}``; a run
    whose teacher MD blew up keeps the frames sampled before it (and says so). With
    ``cache_dir``, each run's labelled frames are kept there (extxyz + the settings that made
    them) and reused while teacher, start structure, temperature and MD settings are the same:
    a retrained student is scored on the same frames without running the teacher again.
    ``runs``: the output of :func:`heldout_frames` when the caller made it already.
    """
    records, run_ids, per_run = [], [], {}
    student = s_handle.make_calculator()
    if runs is None:
        runs = heldout_frames(t_handle, cfg, max_wall_s, progress, cache_dir)
    for key, n_atoms, T, frames, report in runs:
        recs = score_frames(student, frames)
        entry = {"n_atoms": n_atoms, "temperature_K": T, "teacher_md": report, "n_frames": len(recs)}
        if recs:
            entry.update(heldout_metrics(recs, [key] * len(recs), n_boot=200, seed=cfg.seed))
        per_run[key] = entry
        records += recs
        run_ids += [key] * len(recs)
    pooled = heldout_metrics(records, run_ids, seed=cfg.seed) if records else {"n_frames": 0}
    return {"config": dataclasses.asdict(cfg), "runs": per_run, "pooled": pooled}
