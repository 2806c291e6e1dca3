"""``mlff-distill run RECIPE -o PROJECT_DIR``: every stage end to end, resumable, gated.

Stages, each persisted in the project directory with its fingerprint (see :mod:`.project`):

1. ``generate:<tier>``  unlabelled pool            ``tiers/<tier>/pool.h5``
2. ``label:<tier>``     teacher labels (Dask)      ``tiers/<tier>/dataset.h5``
3. ``gate:<tier>``      validation + diversity     ``tiers/<tier>/gate.json``  (stop on no-go)
   -- repeated for each tier of a tiered recipe (1k, 10k, full), up to ``--until-tier``
4. ``split``            grouped train/test split   ``data/train.h5``, ``data/test.h5``
5. ``train``            DistillationTrainer        ``train/`` (checkpoints, metrics.csv, parity.png)
6. ``export``           TorchScript student        ``student.pt``
7. ``bench``            student vs teacher         ``bench/`` (JSON, markdown, plots)
8. ``report``           HTML report + dataset card ``report/``
9. summary              ``summary.md`` / ``summary.json``

Re-running the same command resumes: finished stages are skipped, labeling and training
continue from their own checkpoints. Units are ASE's throughout.

The stages are a table (:func:`.stages.stage_table`): each names its inputs, its fingerprint
and its run function. This module loads the recipe once (a typed
:class:`~mlff_distiller.recipe.Recipe`, every section validated before any work), plans it
(:class:`.stages.Plan`), walks the table (:func:`_walk`) and writes the summary.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import ConfigError, UserError
from ..logs import log_to_file, say
from .project import Project
from .stages import (
    AccuracyGateFailed,
    GateFailed,
    Plan,
    RunContext,
    Stage,
    StageCall,
    StageResult,
    split_dataset,
    stage_table,
)
from .summary import write_summary

log = logging.getLogger(__name__)

# Bytes per atom and per structure in the labelled HDF5 store before compression
# (positions f64 + forces f32 + Z, and energy/cell/pbc/stress/provenance), times 2 for the
# shards that labeling keeps until the merge. A deliberately generous upper bound.
_BYTES_PER_ATOM = 2 * (24 + 12 + 1)
_BYTES_PER_STRUCTURE = 2 * 512


@dataclass
class RunOptions:
    until_tier: str | None = None  # stop tiers after this one (e.g. "1k")
    restart_from: str | None = None  # forget this stage and all after it
    overwrite: bool = False
    workers: int | None = None  # labeling workers (default: recipe / 2)
    progress: bool = True
    skip: tuple = ()  # optional stages to skip: "bench", "report"


@dataclass
class RunResult:
    project_dir: Path
    summary_path: Path | None = None
    report_path: Path | None = None
    stages_run: list = field(default_factory=list)
    stages_skipped: list = field(default_factory=list)


def _generation(recipe) -> tuple[str | None, dict, tuple[float, float], int]:
    """Name, tiers, size bounds (atoms) and untiered total of ``recipe``: a
    :class:`~mlff_distiller.recipe.Recipe`, or a mapping with (some of) its ``generation`` keys."""
    from ..recipe import Recipe

    if isinstance(recipe, Recipe):
        gen = recipe.generation
        untiered = gen.total() if gen.mix else gen.count or 1000  # no mix: a plan-only section
        return recipe.name, gen.tiers, (gen.size.min, gen.size.max), untiered
    gen = recipe.get("generation") or {}
    size = gen.get("size") or {}
    return recipe.get("name"), gen.get("tiers") or {}, (size.get("min", 10), size.get("max", 500)), \
        gen.get("count") or 1000


def _tiers(recipe, until: str | None) -> list[str | None]:
    name, tiers, _, _ = _generation(recipe)
    if not tiers:
        if until not in (None, "full"):
            raise ConfigError(f"--until-tier {until}: recipe '{name}' has no tiers; drop --until-tier")
        return [None]
    names = list(tiers)
    if until is None:
        return names
    if until not in names:
        raise ConfigError(f"--until-tier {until!r} is not a tier of this recipe; allowed: {', '.join(names)}")
    return names[: names.index(until) + 1]


def estimate_disk_bytes(recipe, tiers: list, mean_atoms: float | None = None) -> int:
    """Upper estimate of the bytes the planned datasets need (pool + shards + merged)."""
    _, sizes, (lo, hi), untiered = _generation(recipe)
    if mean_atoms is None:
        mean_atoms = 0.5 * (float(lo) + float(hi))
    total = 0
    for t in tiers:
        n = int(sizes[t]) if t is not None else untiered
        total += int(n * (mean_atoms * _BYTES_PER_ATOM + _BYTES_PER_STRUCTURE)) * 2  # pool + dataset
    return total + 200 * 2**20  # model, reports, plots


def check_disk(path: Path, needed: int) -> None:
    probe = path if path.exists() else path.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise UserError(
            f"not enough disk for the planned dataset: about {needed / 2**30:.1f} GiB needed, "
            f"{free / 2**30:.1f} GiB free at {probe}; free space or choose a smaller tier (--until-tier)"
        )


def run_project(recipe_ref, out_dir, options: RunOptions | None = None) -> RunResult:
    """Run (or resume) the whole pipeline for ``recipe_ref`` (built-in name or YAML path).

    Everything logged while it runs (stages, progress lines, per-epoch metrics, gate results,
    warnings) is appended to ``PROJECT/logs/run.log``.
    """
    with contextlib.ExitStack() as stack:  # holds the log file once the project directory is known
        return _run_project(recipe_ref, out_dir, options, stack)



def _run_project(recipe_ref, out_dir, options, stack) -> RunResult:
    from ..recipe import Recipe

    opts = options or RunOptions()
    if opts.workers is not None and (
        isinstance(opts.workers, bool) or not isinstance(opts.workers, int) or opts.workers < 1
    ):
        raise ConfigError(f"workers = {opts.workers!r}: give at least 1 labeling worker (or None for the recipe's)")
    recipe = Recipe.load(recipe_ref)  # every section validated, once, before any work
    plan = plan_recipe(recipe, opts.until_tier, default_name=Path(str(recipe_ref)).stem)
    teacher = _build_teacher(plan)  # before any work is done: a teacher that cannot load fails here
    plan = replace(plan, teacher_fp=teacher.fingerprint_id)

    out = Path(out_dir)
    project = Project(out, plan.name, overwrite=opts.overwrite)
    stack.enter_context(log_to_file(out / "logs" / "run.log"))
    log.info("mlff-distill run %s -> %s (tiers %s)", recipe_ref, out, ", ".join(t or "all" for t in plan.tiers))
    check_disk(out, estimate_disk_bytes(recipe, plan.tiers))
    (out / "recipe.yaml").write_text(_dump_yaml(recipe.to_dict()))

    table = stage_table(plan)
    if opts.restart_from:
        _forget_from(project, table, opts.restart_from)
    result = RunResult(project_dir=out)
    ctx = RunContext(plan, opts, project, teacher, execute=lambda name, fp, fn: _execute(ctx, result, name, fp, fn))
    _walk(ctx, table)
    return _finish(ctx, result)


def plan_recipe(recipe, until_tier: str | None = None, default_name: str = "") -> Plan:
    """The plan of a recipe: its tiers up to ``until_tier``; checked before any work.

    ``recipe``: a :class:`~mlff_distiller.recipe.Recipe`, or a mapping from ``load_recipe``
    (its sections are built here; its generation sources, checked by ``load_recipe``, are not
    built again)."""
    from ..recipe import Recipe

    recipe = Recipe.build(recipe, sources=False) if isinstance(recipe, dict) else recipe
    name = recipe.name or default_name
    tiers = _tiers(recipe, until_tier)
    if recipe.teacher is None:
        raise ConfigError(f"recipe '{name}' has no 'teacher' section; add e.g. 'teacher: chgnet'")
    return Plan(recipe=recipe, name=name, tiers=tiers)


def _build_teacher(plan: Plan):
    """The recipe's teacher, checked against the recipe's elements."""
    from ..teachers import build_teacher

    teacher = build_teacher(plan.recipe.teacher)
    elements = plan.recipe.generation.elements
    if elements is not None and teacher.elements is not None:
        from ase.data import atomic_numbers, chemical_symbols

        zs = [atomic_numbers[e] if isinstance(e, str) else int(e) for e in elements]
        missing = sorted(z for z in zs if z not in teacher.elements)
        if missing:
            raise UserError(
                f"teacher '{teacher.name}' does not support elements {', '.join(chemical_symbols[z] for z in missing)} "
                "listed in the recipe: remove them from generation.elements or choose another teacher"
            )
    return teacher


def _forget_from(project: Project, table: list[Stage], first: str) -> None:
    """``--restart-from``: drop the records of ``first`` (a stage or a prefix) and of every later stage."""
    order = [name for st in table for name in st.record_names]
    known = sorted({n.split(":")[0] for n in order})
    if first not in known and first not in order:
        raise ConfigError(f"--restart-from {first!r} is not a stage; allowed: {', '.join(known)}")
    project.forget_from(order, first)


def _walk(ctx: RunContext, table: list[Stage]) -> None:
    """Run the table in order; each stage's fingerprint is computed from its inputs' results."""
    for st in table:
        if st.optional and st.name in ctx.opts.skip:
            continue
        fp = st.fingerprint(ctx.plan, *(ctx.results.get(n) for n in st.inputs))
        if st.group:  # records its own sub-stages through ctx.execute
            res = st.run(ctx, StageCall(st.name, fp, {}))
            ctx.results[st.name] = replace(res, fingerprint=res.fingerprint or fp)
        else:
            ctx.results[st.name] = ctx.execute(st.name, fp, lambda call, st=st: st.run(ctx, call))


def _execute(ctx: RunContext, result: RunResult, name: str, fp: str, fn) -> StageResult:
    """Run one recorded stage, or skip it when ``project.json`` has it done with fingerprint ``fp``."""
    project = ctx.project
    if project.is_done(name, fp):
        result.stages_skipped.append(name)
        _say(f"[skip] {name} (done)")
        return StageResult(project.stage(name).get("info", {}), fp)
    call = StageCall(name, fp, dict(project.stage(name) or {}))
    _say(f"[run ] {name}")
    project.mark(name, fp, status="running")
    t0 = time.time()
    res = fn(call)
    project.mark(name, fp, status="done", info=res.info, seconds=round(time.time() - t0, 2))
    result.stages_run.append(name)
    return replace(res, fingerprint=fp, ran=True)


def _finish(ctx: RunContext, result: RunResult) -> RunResult:
    """Write the summary; raise :class:`AccuracyGateFailed` on a NO-GO of ``bench.targets``."""
    bench_info = ctx.results["bench"].info if "bench" in ctx.results else {}
    report_info = ctx.results["report"].info if "report" in ctx.results else {}
    summary = write_summary(ctx.project, ctx.plan.recipe, ctx.teacher, ctx.plan.tiers, bench_info, report_info,
                            ctx.student_dir())
    result.summary_path = summary
    result.report_path = Path(report_info["html"]) if report_info.get("html") else None
    verdict = bench_info.get("verdict")
    if verdict and not verdict.get("passed"):
        from ..bench.targets import verdict_line

        raise AccuracyGateFailed(f"accuracy gate {verdict_line(verdict)}; summary: {summary}")
    return result


def _dump_yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)


def _say(text: str) -> None:
    say(text, log)  # stage lines print with or without progress output, and go to logs/run.log


__all__ = ["AccuracyGateFailed", "GateFailed", "RunOptions", "RunResult", "plan_recipe", "run_project",
           "split_dataset"]
