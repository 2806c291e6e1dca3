"""``run_bench``: speed, accuracy and MD fidelity of a student against its teacher, one call.

Everything runs in this process with the same thread count for both models (1 by
default), so the ratios compare like with like.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BeforeValidator, Field

from ..errors import UserError
from ..settings import Bool, Float, Int, as_list, build, limits, section
from . import accuracy as acc_mod
from .heldout import HeldoutConfig, condition_of, heldout_frames, run_heldout
from .md import langevin_run, nve_drift, pair_distance_histogram, rdf_overlap
from .models import check_coverage, resolve_student, resolve_teacher
from .report import machine_info, write_outputs
from .speed import profile_speed, set_threads, speed_ratios
from .systems import DEFAULT_SYSTEMS, load_system, symbols
from .targets import check_targets, evaluate_targets

#: a positive number
_Positive = Annotated[Float, limits(gt=0)]
#: a positive integer
_Count = Annotated[Int, limits(ge=1)]


@section("bench")
class BenchConfig:
    """Bench settings (the ``bench`` section of a recipe). Units: fs, ps, K, A, s.

    Speed: ``n_rounds`` interleaved rounds of ``n_calls`` force calls and ``n_md_steps``
    VelocityVerlet steps per model, after ``warmup`` untimed calls. MD fidelity runs on the
    systems with at most ``md_max_atoms`` atoms (or those named in ``md_systems``):
    NVE over ``drift_ps`` from ``drift_temperature_K``; Langevin stability at each of
    ``stability_temperatures_K`` over ``stability_ps``; student and teacher Langevin at
    ``rdf_temperature_K`` over ``rdf_ps`` for the RDF overlap. ``max_wall_s`` bounds each
    MD run; ``stability_max_wall_s`` (default: ``max_wall_s``) bounds each stability run, so
    a long ``stability_ps`` can be given the time it needs. ``student_backend``: the student
    calculator's backend (``auto``, ``numba`` or ``torch``; see
    :class:`~mlff_distiller.student.StudentCalculator`).
    """

    timestep_fs: _Positive = 0.5
    n_rounds: _Count = 3
    n_calls: _Count = 5
    n_md_steps: _Count = 5
    warmup: Annotated[Int, limits(ge=0)] = 2
    memory: Bool = True
    md: Bool = True
    md_systems: list | None = None
    md_max_atoms: _Count = 200
    drift_ps: _Positive = 10.0
    drift_temperature_K: _Positive = 300.0
    teacher_nve: Bool = False
    stability_temperatures_K: Annotated[
        list[Annotated[Float, Field(gt=0)]], BeforeValidator(as_list),
        limits(allowed="a list of positive temperatures in K"),
    ] = field(default_factory=lambda: [300.0, 1000.0])
    stability_ps: _Positive = 1.0
    rdf: Bool = True
    rdf_temperature_K: _Positive = 300.0
    rdf_ps: _Positive = 1.0
    rdf_every: _Count = 10
    rdf_r_max: _Positive = 6.0
    max_wall_s: _Positive = 600.0
    stability_max_wall_s: Annotated[Float | None, limits(gt=0, note="null = max_wall_s")] = None
    max_structures: Annotated[Int | None, limits(ge=1, note="null = all")] = None
    seed: Int = 0
    plots: Bool = True
    student_backend: Literal["auto", "numba", "torch"] = "auto"
    # Held-out teacher MD (see bench/heldout.py) and the accuracy gate (bench/targets.py).
    heldout: dict | None = None
    targets: dict | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> "BenchConfig":
        """Validated config; :class:`ConfigError` names a bad field and what is allowed."""
        return build(cls, d)

    def __post_init__(self) -> None:
        """The held-out and target sub-sections, checked by their own owners."""
        HeldoutConfig.from_dict(self.heldout)
        self.targets = check_targets(self.targets)


def _progress(total, desc):
    from ..logs import progress as progress_bar

    return progress_bar(total=total, desc=desc, unit="step", leave=False)


def run_bench(
    student,
    teacher_spec,
    systems=None,
    dataset=None,
    out_dir: str | None = "bench",
    threads: int = 1,
    config: BenchConfig | dict | None = None,
    student_elements=None,
    teacher_elements=None,
    progress: bool = True,
    cluster: dict | None = None,
    **overrides,
) -> dict:
    """Bench ``student`` against the teacher ``teacher_spec`` and write the report.

    ``student``: training run directory, model file, or an ASE calculator.
    ``teacher_spec``: a teacher name / spec dict (see :func:`mlff_distiller.teachers.build_teacher`),
    a built teacher, or an ASE calculator. ``systems``: built-in names, structure files or
    ``ase.Atoms`` (default :data:`DEFAULT_SYSTEMS`, skipping those the models cannot run,
    with a report entry). ``dataset``: held-out labelled dataset (``.h5`` or extxyz) for the
    accuracy table. ``out_dir``: where ``bench.json``, ``bench.md`` and plots go (``None``
    writes nothing). ``cluster``: keyword arguments of
    :func:`mlff_distiller.labeling.cluster.connect` (e.g. ``{"n_workers": 2}``) to run the
    held-out teacher MD runs side by side on a Dask cluster (None: one after another, here).
    Keyword ``overrides`` are :class:`BenchConfig` fields.

    Returns the result dict (the content of ``bench.json``). Raises :class:`UserError` on
    element-coverage problems and bad input; MD that explodes is reported, not raised.
    """
    if isinstance(config, BenchConfig):
        cfg = dataclasses.replace(config, **overrides)  # validated
    else:
        cfg = BenchConfig.from_dict({**(config or {}), **overrides})
    if not isinstance(threads, int) or threads < 1:
        raise UserError(f"threads = {threads!r}: give a positive integer number of threads")

    import torch

    previous_threads = torch.get_num_threads()
    thread_info = set_threads(threads)
    try:
        return _run(student, teacher_spec, systems, dataset, out_dir, cfg, thread_info,
                    student_elements, teacher_elements, progress, cluster)
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    student, teacher_spec, systems, dataset, out_dir, cfg, thread_info, student_elements, teacher_elements, progress,
    cluster=None,
):
    s_handle = resolve_student(student, elements=student_elements, backend=cfg.student_backend)
    t_handle = resolve_teacher(teacher_spec, elements=teacher_elements)
    if s_handle.label == t_handle.label:
        t_handle.label = f"teacher {t_handle.label}"
    # fail fast on an unreadable dataset, before any timing
    frames = acc_mod.load_labelled(dataset, cfg.max_structures) if dataset is not None else None

    loaded, skipped, notes, md_targets = _preflight(systems, s_handle, t_handle, frames, cfg)
    if cluster and cluster.get("scheduler") and cfg.heldout:  # an unreachable scheduler fails now, not after the timing
        from ..labeling.cluster import connect

        with connect(cluster["scheduler"]):
            pass

    s_lab, t_lab = s_handle.label, t_handle.label
    result = {
        "meta": machine_info(thread_info),
        "config": dataclasses.asdict(cfg),
        "student": {"label": s_lab, "elements": s_handle.elements, **s_handle.info},
        "teacher": {"label": t_lab, "elements": t_handle.elements, **t_handle.info},
        "notes": notes,
        "skipped": skipped,
        "systems": {},
        "accuracy": None,
        "units": {
            "time": "ms (calls, steps), ps (MD)",
            "energy": "eV",
            "forces": "eV/A",
            "temperature": "K",
            "length": "A",
        },
    }
    models = {t_lab: t_handle, s_lab: s_handle}

    def checkpoint():
        # partial results reach the disk after every stage: a crash or Ctrl-C keeps what was measured
        if out_dir is not None:
            result["complete"] = False
            write_outputs(result, out_dir, plots=False)

    # 1. speed
    for sys_ in loaded:
        bar = _progress(2 * cfg.n_rounds * 2, f"speed {sys_.name}") if progress else None
        speed = profile_speed(
            models, sys_.atoms, timestep_fs=cfg.timestep_fs, n_rounds=cfg.n_rounds, n_calls=cfg.n_calls,
            n_md_steps=cfg.n_md_steps, warmup=cfg.warmup, memory=cfg.memory, seed=cfg.seed,
            progress=(bar.update if bar else None), threads=thread_info["torch_threads"],
        )
        if bar:
            bar.close()
        speed["ratio"] = speed_ratios(speed, t_lab, s_lab)
        result["systems"][sys_.name] = {
            "n_atoms": len(sys_.atoms), "formula": sys_.formula, "source": sys_.source, "speed": speed,
        }
        checkpoint()

    # 2. accuracy
    parity = None
    if frames is not None:
        bar = _progress(len(frames), "accuracy") if progress else None
        metrics, parity = acc_mod.evaluate(s_handle.make_calculator(), frames, progress=(bar.update if bar else None))
        if bar:
            bar.close()
        result["accuracy"] = metrics
        checkpoint()

    # 3. MD fidelity: the student's NVE and stability runs, here, while 4. the held-out teacher
    # MD (structures the recipe did not produce) runs on the cluster's workers when there is one;
    # then the RDF, whose teacher side comes from the held-out runs
    if cfg.md:
        for s in loaded:
            if not any(s is t for t in md_targets):
                result["systems"][s.name]["md_skipped"] = (
                    "not in md_systems" if cfg.md_systems is not None
                    else f"{len(s.atoms)} atoms > md_max_atoms {cfg.md_max_atoms}"
                )

    student_rdf = {}  # system name -> (report, frames) of the student's RDF run

    def student_md():
        for sys_ in md_targets if cfg.md else ():
            result["systems"][sys_.name]["md"] = _md_dynamics(sys_, s_handle, t_handle, cfg, progress)
            checkpoint()
        for sys_ in md_targets if cfg.md and cfg.rdf else ():  # its teacher side needs the held-out runs
            student_rdf[sys_.name] = _rdf_run(sys_, s_handle, cfg, progress)

    hcfg = HeldoutConfig.from_dict(cfg.heldout)
    if hcfg is not None:
        from ..logs import say  # a stage line (stderr and the run's log file), not a result on stdout

        cache = None if out_dir is None else Path(out_dir) / "heldout_frames"
        heldout_runs = heldout_frames(t_handle, hcfg, cfg.max_wall_s, say if progress else None, cache, cluster=cluster,
                                      meanwhile=student_md)
        result["heldout"] = run_heldout(s_handle, t_handle, hcfg, runs=heldout_runs)
        checkpoint()
    else:
        heldout_runs = []
        student_md()
    if cfg.md and cfg.rdf:
        for sys_ in md_targets:
            result["systems"][sys_.name]["md"]["rdf"] = _md_rdf(sys_, s_handle, t_handle, cfg, progress,
                                                                student_rdf[sys_.name], heldout_runs)
            checkpoint()

    result["verdict"] = evaluate_targets(result, cfg.targets)
    result["complete"] = True
    if out_dir is not None:
        result["outputs"] = write_outputs(result, out_dir, parity, plots=cfg.plots)
    return result


def _preflight(systems, s_handle, t_handle, frames, cfg):
    """Everything checked before any timing: the systems (given, or the defaults both models
    support), element coverage of systems, dataset and held-out systems, and the MD targets.
    Returns ``(loaded systems, skipped {name: why}, coverage notes, MD target systems)``."""
    skipped = {}
    if systems is None or (isinstance(systems, (list, tuple)) and len(systems) == 0):
        loaded = []
        for name in DEFAULT_SYSTEMS:
            sys_ = load_system(name)
            lack = s_handle.missing(sys_.elements) | t_handle.missing(sys_.elements)
            if lack:
                skipped[name] = f"contains {symbols(lack)}, not supported by both models"
            else:
                loaded.append(sys_)
        if not loaded:
            raise UserError(
                f"none of the default systems ({', '.join(DEFAULT_SYSTEMS)}) is supported by both models; "
                "name systems made of the student's elements (a built-in name such as cu-64 or a structure "
                "file): --systems for `bench`, bench: {systems: [...]} in a recipe"
            )
    else:
        if isinstance(systems, str):
            systems = [systems]
        loaded = [load_system(s) for s in systems]
        names = [s.name for s in loaded]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise UserError(f"system name(s) {', '.join(dupes)} given twice; give each system once")
    notes = check_coverage(s_handle, t_handle, loaded)
    if frames is not None:
        dataset_elems = frozenset(int(z) for a in frames for z in a.numbers)
        lack = s_handle.missing(dataset_elems)
        if lack:
            raise UserError(
                f"the held-out dataset contains {symbols(lack)}, which the student does not support; "
                "evaluate on a dataset of the student's elements"
            )

    if cfg.heldout:  # held-out systems: loadable and supported by both models, before any timing
        for sys_ in (load_system(s) for s in dict.fromkeys(n for n, _ in HeldoutConfig.from_dict(cfg.heldout).runs())):
            lack = s_handle.missing(sys_.elements) | t_handle.missing(sys_.elements)
            if lack:
                raise UserError(
                    f"bench.heldout system {sys_.name} contains {symbols(lack)}, not supported by both models; "
                    "name held-out systems made of the student's elements"
                )

    md_targets = []
    if cfg.md:  # checked before anything runs
        if cfg.md_systems is not None:
            wanted = set(cfg.md_systems)
            unknown = wanted - {s.name for s in loaded}
            if unknown:
                raise UserError(
                    f"md_systems names {', '.join(sorted(unknown))} not among the benched systems "
                    f"({', '.join(s.name for s in loaded)}); name benched systems"
                )
            md_targets = [s for s in loaded if s.name in wanted]
        else:
            md_targets = [s for s in loaded if len(s.atoms) <= cfg.md_max_atoms]

    return loaded, skipped, notes, md_targets


def _same_structure(frame, atoms) -> bool:
    """Whether a held-out MD frame belongs to the system ``atoms`` (same atoms, same cell): a
    structure file named like a built-in system is another system."""
    return (len(frame) == len(atoms) and sorted(frame.numbers) == sorted(atoms.numbers)
            and np.allclose(frame.cell.array, atoms.cell.array) and bool((frame.pbc == atoms.pbc).all()))


def _md_dynamics(sys_, s_handle, t_handle, cfg, progress) -> dict:
    """NVE drift and Langevin stability of one system (the MD fidelity without the RDF)."""
    s_lab, t_lab = s_handle.label, t_handle.label
    dt = cfg.timestep_fs
    md = {"nve": {}, "stability": {s_lab: []}}
    nve_models = [(s_lab, s_handle)] + ([(t_lab, t_handle)] if cfg.teacher_nve else [])
    for label, h in nve_models:
        md["nve"][label] = nve_drift(
            h.make_calculator(), sys_.atoms, timestep_fs=dt, duration_ps=cfg.drift_ps,
            temperature_K=cfg.drift_temperature_K, seed=cfg.seed, max_wall_s=cfg.max_wall_s,
            progress=f"NVE {sys_.name} {label}" if progress else None,
        )
    n_stab = max(1, int(round(cfg.stability_ps * 1000.0 / dt)))
    for T in cfg.stability_temperatures_K:
        rep, _ = langevin_run(
            s_handle.make_calculator(), sys_.atoms, float(T), timestep_fs=dt, n_steps=n_stab,
            seed=cfg.seed, max_wall_s=cfg.stability_max_wall_s or cfg.max_wall_s,
            progress=f"stability {sys_.name} {T:g} K" if progress else None,
        )
        md["stability"][s_lab].append(rep)
    return md


def _rdf_run(sys_, handle, cfg, progress) -> tuple[dict, list]:
    """One model's Langevin run at ``rdf_temperature_K`` for the RDF: ``(report, frames)``."""
    n_rdf = max(1, int(round(cfg.rdf_ps * 1000.0 / cfg.timestep_fs)))
    return langevin_run(
        handle.make_calculator(), sys_.atoms, cfg.rdf_temperature_K, timestep_fs=cfg.timestep_fs, n_steps=n_rdf,
        seed=cfg.seed, max_wall_s=cfg.max_wall_s, sample_every=cfg.rdf_every,
        progress=f"RDF {sys_.name} {handle.label}" if progress else None,
    )


def _md_rdf(sys_, s_handle, t_handle, cfg, progress, student_run, heldout_runs=()) -> dict:
    """The RDF overlap of one system from the student's run ``student_run`` (``(report, frames)``
    of :func:`_rdf_run`, made beside the held-out runs). The teacher's RDF comes from the held-out
    teacher MD of this system at ``rdf_temperature_K`` when the bench made one (equilibrated, and
    already paid for); otherwise from a teacher Langevin run of its own."""
    s_lab, t_lab = s_handle.label, t_handle.label
    rdf = {"runs": {}}  # label -> histogram (r, g, counts), plus the runs' reports
    condition = f"{sys_.name}@{float(cfg.rdf_temperature_K):g}K"
    held = [(key, frames, rep) for key, _, _, frames, rep in heldout_runs
            if condition_of(key) == condition and frames and rep.get("stable", True)
            and _same_structure(frames[0], sys_.atoms)]
    if held:
        ref = [f for _, frames, _ in held for f in frames]
        rdf[t_lab] = pair_distance_histogram(ref, r_max=cfg.rdf_r_max)
        status = ", ".join(sorted({rep.get("status", "ok") for _, _, rep in held}))
        rdf["teacher_source"] = (f"held-out teacher MD {', '.join(k for k, _, _ in held)} "
                                 f"({len(ref)} frames, {status})")
    runs = [(s_lab, student_run)] + ([] if held else [(t_lab, _rdf_run(sys_, t_handle, cfg, progress))])
    for label, (rep, frames) in runs:
        rdf[label] = pair_distance_histogram(frames, r_max=cfg.rdf_r_max) if frames else None
        rdf["runs"][label] = rep
    rdf["overlap"] = rdf_overlap(rdf[s_lab], rdf[t_lab]) if rdf[s_lab] and rdf[t_lab] else None
    return rdf
