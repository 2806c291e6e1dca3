"""The stages of ``mlff-distill run`` as a table (see :func:`stage_table`).

Each :class:`Stage` names the earlier stages it depends on (``inputs``), a fingerprint
function of the recipe and those stages' results, and a run function that returns a
:class:`StageResult`. The driver (:mod:`.run`) walks the table in order, skips a stage whose
fingerprint ``project.json`` records as done, and hands each result on to the stages after
it. The fingerprints are those of project format 1: a project started before the table
existed resumes without redoing anything. Units are ASE's throughout.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import UserError
from .project import fingerprint
from .summary import bench_summary, fmt

if TYPE_CHECKING:
    from ..active import ActiveConfig
    from ..recipe import Recipe

# The stage lines and gate summaries in logs/run.log keep the logger name they always had.
log = logging.getLogger("mlff_distiller.pipeline.run")


class GateFailed(UserError):
    """A go/no-go checkpoint failed; the message says which and where the report is."""


class AccuracyGateFailed(GateFailed):
    """The student missed the recipe's ``bench.targets``; the summary holds the numbers."""


@dataclass(frozen=True)
class Plan:
    """What the stages read and fingerprint: the recipe (typed, built once), its name and tiers."""

    recipe: Recipe
    name: str
    tiers: list  # tier names in order; [None] for an untiered recipe
    teacher_fp: str = ""  # the built teacher's fingerprint_id

    @property
    def active(self) -> ActiveConfig | None:
        """The active-learning rounds (``None`` without an ``active:`` section)."""
        return self.recipe.active


@dataclass
class StageResult:
    """What a stage hands on. ``info`` is its record in ``project.json`` (read back from there
    when the stage is skipped); ``fingerprint`` is what the stages after it depend on."""

    info: dict = field(default_factory=dict)
    fingerprint: str = ""  # filled in by the driver; a group stage sets its own
    ran: bool = False  # False: skipped, finished by an earlier run


@dataclass(frozen=True)
class StageCall:
    """One run of a stage: its name, fingerprint and its ``project.json`` record before this run."""

    name: str
    fingerprint: str
    previous: dict


@dataclass(frozen=True)
class Stage:
    """One entry of the table.

    ``fingerprint(plan, *results of inputs)``: a short hash of everything the stage depends on
    (a skipped optional input is passed as None). ``run(ctx, call)``: do the work, return a
    :class:`StageResult`. A ``group`` stage (the active rounds) records its own sub-stages,
    named ``records``, through :meth:`RunContext.execute` and is never skipped as a whole.
    An ``optional`` stage is left out by ``--skip NAME``.
    """

    name: str
    inputs: tuple[str, ...]
    fingerprint: Callable[..., str]
    run: Callable[["RunContext", StageCall], StageResult]
    records: tuple[str, ...] = ()
    group: bool = False
    optional: bool = False

    @property
    def record_names(self) -> tuple[str, ...]:
        """Its names in ``project.json`` (what ``--restart-from`` forgets)."""
        return self.records or (self.name,)


@dataclass
class RunContext:
    """A run in progress: the plan, the options, the project and the results so far."""

    plan: Plan
    opts: object  # RunOptions
    project: object  # Project
    teacher: object  # a built teacher (``.spec``, ``.name``, ``.fingerprint_id``)
    execute: Callable[[str, str, Callable[[StageCall], StageResult]], StageResult]  # the driver's
    results: dict = field(default_factory=dict)  # StageResult by stage name

    @property
    def out(self) -> Path:
        return self.project.root

    def tier_dir(self, tier: str | None) -> Path:
        return self.out / "tiers" / (tier or "all")

    def dataset(self) -> Path:
        """The labelled dataset of the last tier (the one the student trains on)."""
        return self.tier_dir(self.plan.tiers[-1]) / "dataset.h5"

    def split_paths(self) -> tuple[Path, Path]:
        return self.out / "data" / "train.h5", self.out / "data" / "test.h5"

    def student_dir(self) -> Path:
        """The student's run directory: ``train/``, or the last active round's."""
        active = self.results.get("active")
        return Path(active.info["run_dir"]) if active is not None else self.out / "train"


def stage_table(plan: Plan) -> list[Stage]:
    """The stages of ``plan`` in the order they run (and ``--restart-from`` counts)."""
    table = []
    for tier in plan.tiers:
        t = tier or "all"
        table += [
            Stage(f"generate:{t}", (), partial(_fp_generate, tier=tier), partial(_generate, tier=tier)),
            Stage(f"label:{t}", (f"generate:{t}",), _fp_label, partial(_label, tier=tier)),
            Stage(f"gate:{t}", (f"label:{t}",), _fp_gate, partial(_gate, tier=tier)),
        ]
    last_gate = f"gate:{plan.tiers[-1] or 'all'}"
    table += [
        Stage("split", (last_gate,), _fp_split, _split),
        Stage("train", ("split",), _fp_train, _train),
    ]
    if plan.active is not None:  # active-learning rounds (docs/active.md); the final round's student goes on
        table.append(Stage("active", ("train",), _fp_active, _active, records=tuple(plan.active.stage_names()),
                           group=True))
    table += [
        Stage("export", ("active" if plan.active is not None else "train",), _fp_export, _export),
        Stage("bench", ("export",), _fp_bench, _bench, optional=True),
        # The project report reads training and bench results too: redo it when they change.
        Stage("report", (last_gate, "export", "bench"), _fp_report, _report, optional=True),
    ]
    return table


# -- fingerprints (project format 1: changing one re-runs that stage in existing projects) ---
# They hash the recipe's sections as given (Recipe.section), not their resolved form: a project
# keeps its fingerprints whatever defaults a later version fills in.
def _fp_generate(plan: Plan, tier: str | None) -> str:
    r = plan.recipe
    return fingerprint(r.seed, r.section("generation"), r.section("teacher"), tier)


def _fp_label(plan: Plan, generated: StageResult) -> str:
    return fingerprint(generated.fingerprint, plan.teacher_fp, plan.recipe.section("labeling"))


def _fp_gate(plan: Plan, labelled: StageResult) -> str:
    return fingerprint(labelled.fingerprint, plan.recipe.section("quality"))


def _fp_split(plan: Plan, gate: StageResult) -> str:
    return fingerprint(gate.fingerprint, plan.recipe.bench.test_fraction, plan.recipe.seed)


def _fp_train(plan: Plan, split: StageResult) -> str:
    first = _first_training(plan)
    # without active.first_training the fingerprint is the one projects made before it existed
    return fingerprint(split.fingerprint, plan.recipe.section("training"), *([first] if first else []))


def _first_training(plan: Plan) -> dict:
    """``active.first_training`` overrides of the first training, when the rounds follow it."""
    return dict(plan.active.first_training) if plan.active is not None else {}


def _fp_active(plan: Plan, train: StageResult) -> str:
    return train.fingerprint  # each round chains on it (active.run_rounds)


def _fp_export(plan: Plan, student: StageResult) -> str:
    return fingerprint(student.fingerprint)


def _fp_bench(plan: Plan, export: StageResult) -> str:
    from ..recipe import BenchSection

    settings = {k: v for k, v in (plan.recipe.section("bench") or {}).items() if k not in BenchSection.PIPELINE_KEYS}
    return fingerprint(export.fingerprint, settings, plan.recipe.bench.systems, plan.teacher_fp)


def _fp_report(plan: Plan, gate: StageResult, export: StageResult, bench: StageResult | None) -> str:
    bench_info = bench.info if bench is not None else {}
    return fingerprint(gate.fingerprint, export.fingerprint, bench_info, plan.recipe.section("quality"),
                       "project-report")


# -- run functions -------------------------------------------------------------------------
def _generate(ctx: RunContext, call: StageCall, tier: str | None) -> StageResult:
    from ..generation import generate

    pool = ctx.tier_dir(tier) / "pool.h5"
    pool.parent.mkdir(parents=True, exist_ok=True)
    # the labelling cluster settings run the roots too; the pool (and so the fingerprint) does not depend on them
    lcfg = ctx.plan.recipe.labeling
    summary = generate(ctx.plan.recipe, pool, tier=tier, progress=ctx.opts.progress, overwrite=True,
                       workers=lcfg.workers if ctx.opts.workers is None else ctx.opts.workers,
                       threads_per_worker=lcfg.threads_per_worker, scheduler=lcfg.scheduler, hpc=lcfg.hpc)
    return StageResult(summary)


def _label(ctx: RunContext, call: StageCall, tier: str | None) -> StageResult:
    from ..labeling import label_pool
    from ..quality import ChunkMonitor

    tdir, lcfg = ctx.tier_dir(tier), ctx.plan.recipe.labeling
    tdir.mkdir(parents=True, exist_ok=True)
    monitor = ChunkMonitor(ctx.plan.recipe.quality, events_path=tdir / "monitor_events.jsonl")
    summary = label_pool(
        tdir / "pool.h5",
        ctx.teacher.spec,
        tdir / "dataset.h5",
        n_workers=lcfg.workers if ctx.opts.workers is None else ctx.opts.workers,
        threads_per_worker=lcfg.threads_per_worker,
        chunk_size=lcfg.chunk_size,
        scheduler=lcfg.scheduler,
        hpc=lcfg.hpc,
        min_distance=lcfg.min_distance,
        overwrite=True,
        on_chunk=monitor,
        progress=ctx.opts.progress,
    )
    info = summary.as_dict()
    info["monitor_alerts"] = [str(a) for a in monitor.events]
    return StageResult(info)


def _gate(ctx: RunContext, call: StageCall, tier: str | None) -> StageResult:
    from ..quality import evaluate_gates, write_report

    tdir = ctx.tier_dir(tier)
    data = tdir / "dataset.h5"
    rep = evaluate_gates(data, checkpoint=tier or "full", config=ctx.plan.recipe.quality)
    log.info("%s", rep.summary())  # "gate <checkpoint>: PASSED|FAILED" and one line per metric
    info = rep.to_dict()
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / "gate.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    if not rep.passed:
        html, _card = write_report(data, ctx.out / "report" / f"no-go-{tier or 'all'}", ctx.plan.recipe.quality)
        ctx.project.mark(call.name, call.fingerprint, status="failed", info=info)
        failed = "; ".join(f"{v.metric} = {fmt(v.value)} vs threshold {fmt(v.threshold)}" for v in rep.failed)
        raise GateFailed(
            f"go/no-go gate '{tier or 'full'}' FAILED ({failed or 'see report'}); report: {html}; "
            "fix the recipe (more sources/samplers, wider sizes) and re-run"
        )
    return StageResult(info)


def _split(ctx: RunContext, call: StageCall) -> StageResult:
    # Structures flagged by validation (overlaps, extreme forces, energy outliers) are kept in
    # the dataset file and the report, but neither trained on nor tested on.
    from ..quality import validate

    train_h5, test_h5 = ctx.split_paths()
    train_h5.parent.mkdir(exist_ok=True)
    flagged = validate(ctx.dataset(), ctx.plan.recipe.quality).flagged_indices()
    recipe = ctx.plan.recipe
    return StageResult(split_dataset(ctx.dataset(), train_h5, test_h5, recipe.bench.test_fraction, recipe.seed,
                                     exclude=flagged))


def _train(ctx: RunContext, call: StageCall) -> StageResult:
    from ..training import DistillationTrainer

    # Resume only a training run this stage started and did not finish (killed); a stage that
    # is new, forgotten (--restart-from) or whose inputs changed starts afresh.
    run_dir = ctx.out / "train"
    prev = call.previous
    resumable = prev.get("status") == "running" and prev.get("fingerprint") == call.fingerprint
    if not resumable and run_dir.exists():
        shutil.rmtree(run_dir)
    config = ctx.plan.recipe.training.replace(**_first_training(ctx.plan))
    trainer = DistillationTrainer(ctx.split_paths()[0], config, run_dir, resume="auto", progress=ctx.opts.progress)
    return StageResult(trainer.fit())


def _active(ctx: RunContext, call: StageCall) -> StageResult:
    from ..active import ActiveContext, run_rounds
    from ..logs import say

    recipe, project = ctx.plan.recipe, ctx.project
    initial = sum(int((rec.get("info") or {}).get("n_pool") or 0) for name, rec in project.data["stages"].items()
                  if name.startswith("label:"))
    train_h5, test_h5 = ctx.split_paths()
    actx = ActiveContext(
        cfg=recipe.active,
        teacher=ctx.teacher,
        train_config=recipe.training,
        quality=recipe.quality,
        labeling=recipe.labeling,
        train_h5=train_h5,
        test_h5=test_h5,
        root=project.root / "active",
        seed=recipe.seed,
        workers=ctx.opts.workers,
        progress=ctx.opts.progress,
        say=lambda text: say(text, log),
    )

    def round_stage(name: str, fp: str, fn: Callable[[], dict]) -> dict:
        return ctx.execute(name, fp, lambda _call: StageResult(fn())).info

    run_dir, fp = run_rounds(actx, project, round_stage, ctx.out / "train", call.fingerprint, initial_calls=initial)
    return StageResult({"run_dir": str(run_dir)}, fingerprint=fp)


def _export(ctx: RunContext, call: StageCall) -> StageResult:
    from ..student import export_torchscript, load_student

    student_pt = ctx.out / "student.pt"
    export_torchscript(load_student(ctx.student_dir()), student_pt)
    return StageResult({"path": str(student_pt)})


def _bench(ctx: RunContext, call: StageCall) -> StageResult:
    from ..bench import run_bench

    lcfg = ctx.plan.recipe.labeling
    res = run_bench(
        student=ctx.student_dir(),
        teacher_spec=ctx.teacher.spec,
        systems=ctx.plan.recipe.bench.systems,
        dataset=ctx.split_paths()[1],
        out_dir=str(ctx.out / "bench"),
        config=ctx.plan.recipe.bench.config,
        progress=ctx.opts.progress,
        # the held-out teacher MD runs side by side on the labelling cluster (the frames do not depend on it)
        cluster={"scheduler": lcfg.scheduler, "hpc": lcfg.hpc, "threads_per_worker": lcfg.threads_per_worker,
                 "n_workers": lcfg.workers if ctx.opts.workers is None else ctx.opts.workers},
    )
    return StageResult(bench_summary(res))


def _report(ctx: RunContext, call: StageCall) -> StageResult:
    from ..quality.project_report import write_project_report

    html = write_project_report(ctx.out, ctx.out / "report", ctx.plan.recipe.quality, dataset=ctx.dataset())
    return StageResult({"html": str(html), "card": str(ctx.out / "report" / "dataset_card.md")})


def split_dataset(
    src: Path, train_path: Path, test_path: Path, test_fraction: float, seed: int, exclude=()
) -> dict:
    """Grouped split of a labelled dataset file into train/test files (by provenance group).

    ``exclude``: indices left out of both files (structures flagged by validation).
    """
    from ..data.split import chemistry_keys, grouped_split, provenance_groups
    from ..data.store import DatasetReader, DatasetWriter
    from ..fileio import replace_atomically, temp_path

    excluded = {int(i) for i in exclude}
    with DatasetReader(src) as r:
        n = len(r)
        # The trainer's validation split, with the same groups: whole provenance groups, and a
        # group is held out only if its element set stays represented in training.
        groups = provenance_groups(r)
        keep = [i for i in range(n) if i not in excluded]
        sub_groups = [groups[i] for i in keep]
        chem = chemistry_keys(r)
        if len(set(sub_groups)) > 1:
            _, test_local, _ = grouped_split(sub_groups, test_fraction, seed, [chem[i] for i in keep])
            test_idx = {keep[k] for k in test_local}
        else:
            test_idx = set()
        uniq = sorted(set(sub_groups))
        test_groups = {groups[i] for i in test_idx}
        counts = {"train": 0, "test": 0}
        attrs = dict(r.attrs)
        for path, want_test in ((train_path, False), (test_path, True)):
            tmp = temp_path(path)
            split_attrs = {**attrs, "split": "test" if want_test else "train", "split_source": str(src)}
            with DatasetWriter(tmp, label_fields=tuple(r.label_fields), attrs=split_attrs,
                               positions_dtype=r.positions_dtype) as w:
                batch = []
                for i in range(n):
                    if i not in excluded and (i in test_idx) == want_test:
                        batch.append(r.get_atoms(i))
                        if len(batch) >= 256:
                            w.append(batch)
                            batch = []
                if batch:
                    w.append(batch)
                counts["test" if want_test else "train"] = len(w) if hasattr(w, "__len__") else None
            replace_atomically(tmp, path)
    return {"n_total": n, "n_excluded": len(excluded), "n_groups": len(uniq), "n_test_groups": len(test_groups),
            **counts}
