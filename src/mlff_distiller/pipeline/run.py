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
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, UserError
from ..logs import log_to_file, say
from .project import Project, fingerprint

log = logging.getLogger(__name__)

# Bytes per atom and per structure in the labelled HDF5 store before compression
# (positions f64 + forces f32 + Z, and energy/cell/pbc/stress/provenance), times 2 for the
# shards that labeling keeps until the merge. A deliberately generous upper bound.
_BYTES_PER_ATOM = 2 * (24 + 12 + 1)
_BYTES_PER_STRUCTURE = 2 * 512


class GateFailed(UserError):
    """A go/no-go checkpoint failed; the message says which and where the report is."""


class AccuracyGateFailed(GateFailed):
    """The student missed the recipe's ``bench.targets``; the summary holds the numbers."""


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


def _tiers(recipe: dict, until: str | None) -> list[str | None]:
    tiers = (recipe.get("generation") or {}).get("tiers")
    if not tiers:
        if until not in (None, "full"):
            raise ConfigError(f"--until-tier {until}: recipe '{recipe.get('name')}' has no tiers; drop --until-tier")
        return [None]
    names = list(tiers)
    if until is None:
        return names
    if until not in names:
        raise ConfigError(f"--until-tier {until!r} is not a tier of this recipe; allowed: {', '.join(names)}")
    return names[: names.index(until) + 1]


def _tier_size(recipe: dict, tier: str | None) -> int:
    gen = recipe.get("generation") or {}
    if tier is None:
        return int(gen.get("n_structures") or gen.get("count") or 1000)
    return int(gen["tiers"][tier])


def estimate_disk_bytes(recipe: dict, tiers: list, mean_atoms: float | None = None) -> int:
    """Upper estimate of the bytes the planned datasets need (pool + shards + merged)."""
    gen = recipe.get("generation") or {}
    bounds = gen.get("size") or gen.get("size_bounds") or {}
    if mean_atoms is None:
        lo = float(bounds.get("min", 10)) if isinstance(bounds, dict) else 10.0
        hi = float(bounds.get("max", 500)) if isinstance(bounds, dict) else 500.0
        mean_atoms = 0.5 * (lo + hi)
    total = 0
    for t in tiers:
        n = _tier_size(recipe, t)
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


def run_project(recipe_ref, out_dir, options: RunOptions | None = None) -> RunResult:
    """Run (or resume) the whole pipeline for ``recipe_ref`` (built-in name or YAML path).

    Everything logged while it runs (stages, progress lines, per-epoch metrics, gate results,
    warnings) is appended to ``PROJECT/logs/run.log``.
    """
    with contextlib.ExitStack() as stack:  # holds the log file once the project directory is known
        return _run_project(recipe_ref, out_dir, options, stack)


def _run_project(recipe_ref, out_dir, options, stack) -> RunResult:
    from ..generation.recipe import load_recipe

    opts = options or RunOptions()
    if opts.workers is not None and (
        isinstance(opts.workers, bool) or not isinstance(opts.workers, int) or opts.workers < 1
    ):
        raise ConfigError(f"workers = {opts.workers!r}: give at least 1 labeling worker (or None for the recipe's)")
    recipe = load_recipe(recipe_ref)
    name = recipe.get("name") or Path(str(recipe_ref)).stem
    seed = int(recipe.get("seed", 0))
    out = Path(out_dir)
    tiers = _tiers(recipe, opts.until_tier)

    # -- validate every section and load the teacher before any work is done ------------
    from ..bench.runner import BenchConfig
    from ..quality import QualityConfig
    from ..teachers import build_teacher
    from ..training import TrainConfig

    qcfg = QualityConfig.from_dict(recipe.get("quality") or {})
    tcfg = TrainConfig.from_dict(recipe.get("training") or {})
    from ..labeling.config import LabelingConfig

    lcfg = LabelingConfig.from_dict(recipe.get("labeling"))
    from ..active import ActiveConfig

    acfg = ActiveConfig.from_dict(recipe["active"]) if recipe.get("active") is not None else None
    bench_section = dict(recipe.get("bench") or {})
    test_fraction = float(bench_section.pop("test_fraction", 0.1))
    bench_systems = bench_section.pop("systems", None)
    bcfg = BenchConfig.from_dict(bench_section)
    if not 0.0 < test_fraction < 0.5:
        raise ConfigError(f"bench.test_fraction = {test_fraction}: must be between 0 and 0.5")
    if "teacher" not in recipe:
        raise ConfigError(f"recipe '{name}' has no 'teacher' section; add e.g. 'teacher: chgnet'")
    teacher = build_teacher(recipe["teacher"])
    elements = (recipe.get("generation") or {}).get("elements")
    if isinstance(elements, (list, tuple)) and teacher.elements is not None:
        from ase.data import atomic_numbers, chemical_symbols

        zs = [atomic_numbers[e] if isinstance(e, str) else int(e) for e in elements]
        missing = sorted(z for z in zs if z not in teacher.elements)
        if missing:
            raise UserError(
                f"teacher '{teacher.name}' does not support elements {', '.join(chemical_symbols[z] for z in missing)} "
                "listed in the recipe: remove them from generation.elements or choose another teacher"
            )

    project = Project(out, name, overwrite=opts.overwrite)
    stack.enter_context(log_to_file(out / "logs" / "run.log"))
    log.info("mlff-distill run %s -> %s (tiers %s)", recipe_ref, out, ", ".join(t or "all" for t in tiers))
    check_disk(out, estimate_disk_bytes(recipe, tiers))
    (out / "recipe.yaml").write_text(_dump_yaml(recipe))

    order = [f"{s}:{t or 'all'}" for t in tiers for s in ("generate", "label", "gate")]
    order += ["split", "train", *(acfg.stage_names() if acfg else []), "export", "bench", "report"]
    if opts.restart_from:
        known = sorted({n.split(":")[0] for n in order})
        if opts.restart_from not in known and opts.restart_from not in order:
            raise ConfigError(f"--restart-from {opts.restart_from!r} is not a stage; allowed: {', '.join(known)}")
        project.forget_from(order, opts.restart_from)

    result = RunResult(project_dir=out)
    teacher_fp = teacher.fingerprint_id

    def stage(name_: str, fp: str, fn):
        if project.is_done(name_, fp):
            result.stages_skipped.append(name_)
            _say(opts, f"[skip] {name_} (done)")
            return project.stage(name_).get("info", {})
        _say(opts, f"[run ] {name_}")
        project.mark(name_, fp, status="running")
        t0 = time.time()
        info = fn() or {}
        project.mark(name_, fp, status="done", info=info, seconds=round(time.time() - t0, 2))
        result.stages_run.append(name_)
        return info

    # -- tiers: generate -> label -> gate ---------------------------------------------------
    from ..generation import generate
    from ..labeling import label_pool
    from ..quality import ChunkMonitor, evaluate_gates, write_report

    dataset_path = None
    upstream = fingerprint(seed)
    for tier in tiers:
        tname = tier or "all"
        tdir = out / "tiers" / tname
        tdir.mkdir(parents=True, exist_ok=True)
        pool = tdir / "pool.h5"
        data = tdir / "dataset.h5"
        fp_gen = fingerprint(seed, recipe.get("generation"), recipe.get("teacher"), tier)
        stage(
            f"generate:{tname}",
            fp_gen,
            lambda: _as_dict(generate(recipe, pool, tier=tier, progress=opts.progress, overwrite=True)),
        )
        fp_lab = fingerprint(fp_gen, teacher_fp, recipe.get("labeling"))
        monitor = ChunkMonitor(qcfg, events_path=tdir / "monitor_events.jsonl")

        def _label():
            summary = label_pool(
                pool,
                teacher.spec,
                data,
                n_workers=lcfg.workers if opts.workers is None else opts.workers,
                threads_per_worker=lcfg.threads_per_worker,
                chunk_size=lcfg.chunk_size,
                scheduler=lcfg.scheduler,
                hpc=lcfg.hpc,
                min_distance=lcfg.min_distance,
                overwrite=True,
                on_chunk=monitor,
                progress=opts.progress,
            )
            info = _as_dict(summary)
            alerts = getattr(monitor, "alerts", None) or getattr(monitor, "events", None) or []
            info["monitor_alerts"] = [str(a) for a in alerts]
            return info

        stage(f"label:{tname}", fp_lab, _label)
        fp_gate = fingerprint(fp_lab, recipe.get("quality"))

        def _gate():
            rep = evaluate_gates(data, checkpoint=tier or "full", config=qcfg)
            log.info("%s", rep.summary())  # "gate <checkpoint>: PASSED|FAILED" and one line per metric
            info = _as_dict(rep)
            (tdir / "gate.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
            if not rep.passed:
                rdir = out / "report" / f"no-go-{tname}"
                html, card = write_report(data, rdir, qcfg)
                project.mark(f"gate:{tname}", fp_gate, status="failed", info=info)
                raise GateFailed(
                    f"go/no-go gate '{tier or 'full'}' FAILED ({_failed_names(rep)}); report: {html}; "
                    "fix the recipe (more sources/samplers, wider sizes) and re-run"
                )
            return info

        stage(f"gate:{tname}", fp_gate, _gate)
        dataset_path = data
        upstream = fp_gate

    # -- split -> train -> export ----------------------------------------------------------
    train_h5, test_h5 = out / "data" / "train.h5", out / "data" / "test.h5"
    train_h5.parent.mkdir(exist_ok=True)
    fp_split = fingerprint(upstream, test_fraction, seed)

    def _split():
        # Structures flagged by validation (overlaps, extreme forces, energy outliers) are
        # kept in the dataset file and the report, but neither trained on nor tested on.
        from ..quality import validate

        flagged = validate(dataset_path, qcfg).flagged_indices()
        return split_dataset(dataset_path, train_h5, test_h5, test_fraction, seed, exclude=flagged)

    stage("split", fp_split, _split)

    from ..training import DistillationTrainer

    run_dir = out / "train"
    fp_train = fingerprint(fp_split, recipe.get("training"))

    prev_train = dict(project.stage("train") or {})

    def _train():
        # Resume only a training run this stage started and did not finish (killed); a stage
        # that is new, forgotten (--restart-from) or whose inputs changed starts afresh.
        resumable = prev_train.get("status") == "running" and prev_train.get("fingerprint") == fp_train
        if not resumable and run_dir.exists():
            shutil.rmtree(run_dir)
        return _as_dict(DistillationTrainer(train_h5, tcfg, run_dir, resume="auto", progress=opts.progress).fit())

    stage("train", fp_train, _train)
    if acfg is not None:  # active-learning rounds (docs/active.md); the final round's student goes on
        run_dir, fp_train = _active_rounds(acfg, recipe, project, stage, teacher, tcfg, lcfg, train_h5, test_h5,
                                           run_dir, fp_train, opts)

    from ..student import export_torchscript, load_student

    student_pt = out / "student.pt"
    fp_export = fingerprint(fp_train)
    stage(
        "export",
        fp_export,
        lambda: (export_torchscript(load_student(run_dir), student_pt), {"path": str(student_pt)})[1],
    )

    # -- bench -> report -> summary ---------------------------------------------------------
    bench_info = {}
    if "bench" not in opts.skip:
        from ..bench import run_bench

        fp_bench = fingerprint(fp_export, bench_section, bench_systems, teacher_fp)
        bench_info = stage(
            "bench",
            fp_bench,
            lambda: _bench_summary(
                run_bench(
                    student=run_dir,
                    teacher_spec=teacher.spec,
                    systems=bench_systems,
                    dataset=test_h5,
                    out_dir=str(out / "bench"),
                    config=bcfg,
                    progress=opts.progress,
                )
            ),
        )
    report_info = {}
    if "report" not in opts.skip:
        # The project report reads training and bench results too: redo it when they change.
        fp_rep = fingerprint(upstream, fp_export, bench_info, recipe.get("quality"), "project-report")

        def _report():
            from ..quality.project_report import write_project_report

            html = write_project_report(out, out / "report", qcfg, dataset=dataset_path)
            return {"html": str(html), "card": str(out / "report" / "dataset_card.md")}

        report_info = stage("report", fp_rep, _report)

    summary = _write_summary(project, recipe, teacher, tiers, bench_info, report_info, run_dir)
    result.summary_path = summary
    result.report_path = Path(report_info["html"]) if report_info.get("html") else None
    verdict = (bench_info or {}).get("verdict")
    if verdict and not verdict.get("passed"):
        from ..bench.targets import verdict_line

        raise AccuracyGateFailed(f"accuracy gate {verdict_line(verdict)}; summary: {summary}")
    return result


def _active_rounds(acfg, recipe, project, stage, teacher, tcfg, lcfg, train_h5, test_h5, run_dir, fp, opts):
    from ..active import ActiveContext, run_rounds

    initial = sum(int((rec.get("info") or {}).get("n_pool") or 0) for name, rec in project.data["stages"].items()
                  if name.startswith("label:"))
    ctx = ActiveContext(
        cfg=acfg,
        teacher=teacher,
        train_config=tcfg,
        quality=recipe.get("quality"),
        labeling=lcfg,
        train_h5=train_h5,
        test_h5=test_h5,
        root=project.root / "active",
        seed=int(recipe.get("seed", 0)),
        workers=opts.workers,
        progress=opts.progress,
        say=lambda text: _say(opts, text),
    )
    return run_rounds(ctx, project, stage, run_dir, fp, initial_calls=initial)


def _bench_summary(res: dict) -> dict:
    """Headline numbers of a bench result (the full result is ``bench/bench.json``)."""
    res = json.loads(json.dumps(res, default=str))
    acc = res.get("accuracy") or {}
    pooled = (res.get("heldout") or {}).get("pooled") or {}
    out = {
        "accuracy": {
            k: acc.get(k)
            for k in ("n_structures", "energy_mae_per_atom", "force_mae", "force_rmse_relative", "force_angle_mean_deg")
        },
        "heldout": {k: v for k, v in pooled.items()} if pooled else None,
        "verdict": res.get("verdict"),
        "flags": _bench_flags(res),
        "systems": {},
    }
    for name, sysres in (res.get("systems") or {}).items():
        speed = sysres.get("speed") or {}
        entry = {"n_atoms": sysres.get("n_atoms"), "ratio": speed.get("ratio")}
        student = speed.get("student") or {}
        entry["student_md_step_ms"] = (student.get("md_step_ms") or {}).get("median")
        nve = ((sysres.get("md") or {}).get("nve") or {}).get("student") or {}
        if nve:
            entry["nve_drift_ev_per_atom_per_ps"] = nve.get("drift_ev_per_atom_per_ps")
            entry["nve_status"] = nve.get("status") + (", FLAGGED" if nve.get("flagged") else "")
        out["systems"][name] = entry
    return out


def _bench_flags(res: dict) -> list[str]:
    """Every warning the bench raised, one line each: flagged NVE runs, unstable Langevin
    runs, held-out teacher MD that did not finish. The summary repeats all of them."""
    flags = []
    for name, sysres in (res.get("systems") or {}).items():
        md = sysres.get("md") or {}
        for label, nve in (md.get("nve") or {}).items():
            if nve.get("flagged"):
                flags.append(f"{name} NVE ({label}): " + "; ".join(nve.get("flags") or ["flagged"]))
        for label, reps in (md.get("stability") or {}).items():
            for rep in reps:
                if not rep.get("stable"):
                    flags.append(
                        f"{name} Langevin {rep.get('temperature_K', '?'):g} K ({label}): UNSTABLE, {rep.get('reason')}"
                    )
    for key, run in ((res.get("heldout") or {}).get("runs") or {}).items():
        md = run.get("teacher_md") or {}
        if md and not md.get("stable", True):
            flags.append(f"held-out teacher MD {key}: {md.get('status')}, {md.get('reason')}")
    return flags


def _failed_names(rep) -> str:
    verdicts = getattr(rep, "verdicts", None) or []
    items = verdicts.values() if isinstance(verdicts, dict) else verdicts
    bad = []
    for v in items:
        passed = v.get("passed") if isinstance(v, dict) else getattr(v, "passed", True)
        if not passed:
            metric = v.get("metric") if isinstance(v, dict) else getattr(v, "metric", str(v))
            value = v.get("value") if isinstance(v, dict) else getattr(v, "value", None)
            thr = v.get("threshold") if isinstance(v, dict) else getattr(v, "threshold", None)
            bad.append(f"{metric} = {_fmt(value)} vs threshold {_fmt(thr)}")
    return "; ".join(bad) if bad else "see report"


def _as_dict(obj) -> dict:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    for attr in ("to_dict", "as_dict"):
        if hasattr(obj, attr):
            return getattr(obj, attr)()
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        try:
            return asdict(obj)
        except TypeError:
            pass
    return {"value": str(obj)}


def _dump_yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)


def _say(opts: RunOptions, text: str) -> None:
    say(text, log)  # stage lines print with or without progress output, and go to logs/run.log


def _write_summary(project, recipe, teacher, tiers, bench_info, report_info, run_dir) -> Path:
    out = project.root
    stages = project.data["stages"]
    if bench_info and "meta" in bench_info:  # a full bench result: keep the headline numbers
        bench_info = _bench_summary(bench_info)
    from ..bench.targets import verdict_line

    lines = [f"# mlff-distill project: {recipe.get('name')}", ""]
    verdict = verdict_line((bench_info or {}).get("verdict"))
    if verdict:
        lines += [f"**Accuracy gate {verdict}**", ""]
    elif bench_info:
        lines += ["**Accuracy gate: none set** (add `bench: {targets: ...}` to the recipe to get a GO/NO-GO)", ""]
    lines.append(f"- teacher: `{teacher.name}` ({teacher.fingerprint_id})")
    for t in tiers:
        tname = t or "all"
        lab = stages.get(f"label:{tname}", {}).get("info", {})
        gate = stages.get(f"gate:{tname}", {})
        lines.append(
            # n_dataset / n_failures are the file's totals; labelled / failed count only the
            # last (possibly resumed) labelling call
            f"- tier `{tname}`: labelled {lab.get('n_dataset', lab.get('labelled', '?'))}, "
            f"failed {lab.get('n_failures', lab.get('failed', '?'))}; "
            f"gate: {'GO' if gate.get('status') == 'done' else gate.get('status', '?')}"
        )
    train = stages.get("train", {}).get("info", {})
    val = train.get("val") or {}
    if val:
        lines.append(
            f"- student validation (best epoch {train.get('best_epoch')} of {train.get('epochs')}): "
            + ", ".join(
                f"{k} = {_fmt(val[k])}"
                for k in ("energy_mae_per_atom", "force_mae", "force_rmse", "force_rel_rmse")
                if k in val
            )
            + " (eV/atom, eV/A)"
        )
    rounds_json = out / "active" / "rounds.json"
    if rounds_json.is_file():
        rounds = json.loads(rounds_json.read_text())
        recs = rounds.get("rounds") or []
        if recs:
            last = recs[-1]
            lines.append(
                f"- active learning: {len(recs)} round(s), {last.get('teacher_calls_total')} teacher calls "
                f"(after {rounds.get('initial_teacher_calls')} in the initial dataset), stopped: "
                f"{last.get('stop') or 'not yet'}; rounds table `active/rounds.md`"
            )
    if bench_info:
        acc = bench_info.get("accuracy") or {}
        if acc.get("n_structures"):
            lines.append(
                f"- student vs teacher on {acc['n_structures']} held-out structures: energy MAE "
                f"{1000 * acc['energy_mae_per_atom']:.1f} meV/atom, force MAE {1000 * acc['force_mae']:.0f} meV/A, "
                f"force RMSE / teacher RMS {acc['force_rmse_relative']:.3f}, mean force angle "
                f"{acc['force_angle_mean_deg']:.1f} deg"
            )
        ho = bench_info.get("heldout") or {}
        if ho.get("n_frames"):
            lines.append(
                f"- student vs teacher on {ho['n_frames']} frames of the teacher's own MD ({ho['n_runs']} runs, "
                f"held out): energy MAE {1000 * ho['energy_mae_per_atom']:.1f} meV/atom (absolute; offset "
                f"{1000 * ho['energy_offset_per_atom']:+.1f}, centered "
                f"{1000 * ho['energy_mae_centered_per_atom']:.1f}), "
                f"force RMSE / teacher RMS {ho['force_rel_rmse']:.3f} "
                f"[{ho['force_rel_rmse_ci95'][0]:.3f}, {ho['force_rel_rmse_ci95'][1]:.3f}]"
            )
        for name, e in (bench_info.get("systems") or {}).items():
            r = e.get("ratio") or {}
            drift = e.get("nve_drift_ev_per_atom_per_ps")
            lines.append(
                f"- {name} ({e.get('n_atoms')} atoms): student {_fmt(e.get('student_md_step_ms'))} ms per MD step, "
                f"speed-up vs teacher {_fmt(r.get('md_step'))}x per MD step, {_fmt(r.get('force_call'))}x per "
                "force call"
                + (f"; NVE drift {drift:.2e} eV/atom/ps ({e.get('nve_status')})" if drift is not None else "")
            )
        for flag in bench_info.get("flags") or []:
            lines.append(f"- FLAG: {flag}")
        lines.append("- full bench tables and plots: `bench/bench.md`")
    if report_info:
        lines.append(f"- report: `{report_info.get('html')}`; dataset card: `{report_info.get('card')}`")
    lines.append(f"- student run directory: `{run_dir}`; TorchScript: `{out / 'student.pt'}`")
    text = "\n".join(lines) + "\n"
    path = out / "summary.md"
    path.write_text(text)
    (out / "summary.json").write_text(
        json.dumps({"stages": stages, "bench": bench_info, "report": report_info}, indent=2, default=str)
    )
    return path


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)
