"""The active-learning rounds of ``mlff-distill run`` (recipe section ``active:``).

Round ``N`` (stage ``active:round-N`` of the project, directory ``active/round-N/``):

1. committee   ``committee/member-k/``  cheap students trained on the current dataset
2. explore     ``candidates.h5`` + ``explore.json``  student-driven MD, relaxations, hot MD;
               scored by the committee (force std) and by novelty
3. select      ``pool.h5`` + ``select.json``  physical, uncertain, diverse, within budget
4. label       ``labels.h5``  the teacher on the Dask labeling path (resumable, failures table)
5. dataset     ``dataset.h5`` + ``dataset.json``  previous dataset + the new frames
               (provenance source ``active/round-N``), checked with the quality checks
6. retrain     ``train/``  warm start from the previous round's student

Each step leaves a marker file written last; a re-run skips finished steps and redoes an
unfinished one after deleting what it and the later steps had written, so a round killed
at any moment (SIGKILL included) and resumed gives the same result as an uninterrupted one.
The rounds stop when the committee's force disagreement on fresh student MD falls below
``stop_force_std``, when the held-out force MAE reaches ``target_force_mae``, or at the
round or teacher-call budget. With ``final_training: scratch`` (the default) a last stage,
``active:final`` (directory ``active/final/``), trains a new student from random weights on the
grown dataset; that student, not the last warm start, goes on to export and bench.
``active/rounds.json``, ``rounds.md`` and ``error_vs_teacher_calls.png`` report every round and
the final training. Units: eV, A, eV/A.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..fileio import atomic_path, atomic_write_text, replace_atomically
from ..pipeline.project import fingerprint
from .config import ActiveConfig

STEPS = ("explore", "select", "label", "dataset", "train")
_OUTPUTS = {  # files each step writes (the marker last)
    "explore": ("candidates.h5", "candidates.h5.journal", "explore.json"),
    "select": ("pool.h5", "pool.h5.journal", "select.json"),
    "label": ("labels.h5", "labels.h5.journal", "labels.h5.parts"),
    "dataset": ("dataset.h5", "dataset.h5.journal", "dataset.tmp.h5", "dataset.tmp.h5.journal", "dataset.json"),
    "train": ("train",),
}


@dataclass
class ActiveContext:
    """What the rounds need from the pipeline (see :func:`run_rounds`)."""

    cfg: ActiveConfig
    teacher: object  # a built teacher (``.spec``, ``.fingerprint_id``)
    train_config: object  # TrainConfig of the first training
    quality: object  # QualityConfig of the recipe (or a quality: mapping)
    labeling: object  # LabelingConfig
    train_h5: Path  # the first training set (seed structures come from it)
    test_h5: Path  # held-out set
    root: Path  # PROJECT/active
    seed: int = 0
    workers: int | None = None
    progress: bool = False
    say: Callable = print


def run_rounds(ctx: ActiveContext, project, stage: Callable, run_dir: Path, fp: str,
               initial_calls: int = 0) -> tuple[Path, str]:
    """Run (or resume) the rounds through ``stage(name, fingerprint, fn)`` of the pipeline's
    ``project``; returns the final student's run directory and a fingerprint of the rounds
    (for the stages after them)."""
    ctx.root.mkdir(parents=True, exist_ok=True)
    records, dataset, used = [], ctx.train_h5, 0
    fp_round = fp
    # the rounds do not depend on what follows them: changing final_training redoes only active:final
    round_settings = {k: v for k, v in ctx.cfg.to_dict().items() if k != "final_training"}
    for n in range(1, ctx.cfg.max_rounds + 1):
        fp_round = fingerprint(fp_round, round_settings, ctx.teacher.fingerprint_id, n)
        name = f"active:round-{n}"
        prev = dict(project.stage(name) or {})
        # Resume only a round this stage started and did not finish (killed); a round that is
        # new, forgotten (--restart-from) or whose inputs changed starts from an empty directory.
        resumable = prev.get("status") == "running" and prev.get("fingerprint") == fp_round

        def fn(n=n, run_dir=run_dir, dataset=dataset, used=used, resumable=resumable):
            if not resumable and (ctx.root / f"round-{n}").exists():
                shutil.rmtree(ctx.root / f"round-{n}")
            return run_round(ctx, n, run_dir, dataset, used)

        rec = stage(name, fp_round, fn)
        records.append(rec)
        used = rec["teacher_calls_total"]
        if rec.get("run_dir"):
            run_dir, dataset = Path(rec["run_dir"]), Path(rec["dataset"])
        write_report(ctx.root, records, initial_calls)
        if rec.get("stop"):
            break
    fp_rounds = fingerprint(fp_round, len(records))
    if ctx.cfg.final_training != "scratch" or Path(dataset) == Path(ctx.train_h5):
        return run_dir, fp_rounds  # no final training, or no frame was added: the student stays
    fp_final = fingerprint(fp_rounds, "final", ctx.cfg.final_training)
    prev = dict(project.stage("active:final") or {})
    resumable = prev.get("status") == "running" and prev.get("fingerprint") == fp_final

    def final_fn(run_dir=run_dir, dataset=dataset, used=used, resumable=resumable):
        if not resumable and (ctx.root / "final").exists():
            shutil.rmtree(ctx.root / "final")
        return run_final(ctx, run_dir, dataset, used)

    final = stage("active:final", fp_final, final_fn)
    write_report(ctx.root, records, initial_calls, final=final)
    return Path(final["run_dir"]), fp_final


def run_final(ctx: ActiveContext, student_run: Path, dataset: Path, used: int) -> dict:
    """The final training (``final_training: scratch``): a student from random weights on
    ``dataset`` (the last round's) with the recipe's ``training`` section, the added frames on
    forces and stress only unless ``fit_active_energies``; resumes from ``active/final/train``'s
    ``last.pt``. Returns its record, with the held-out errors of the last round's student
    (``heldout_before``) and of the new one (``heldout_after``)."""
    from ..bench.accuracy import evaluate, load_labelled
    from ..student.calculator import StudentCalculator
    from ..training import DistillationTrainer

    t0 = time.time()
    rdir = ctx.root / "final"
    rdir.mkdir(parents=True, exist_ok=True)
    rec = {"round": "final", "training": "scratch", "student_in": str(student_run), "dataset": str(dataset),
           "teacher_calls": 0, "teacher_calls_total": used}
    test_frames = load_labelled(ctx.test_h5)
    rec["heldout_before"] = _heldout(evaluate(StudentCalculator(student_run, backend=ctx.cfg.backend),
                                              test_frames)[0])
    ctx.say("  final: train a new student from scratch on the grown dataset")
    out = DistillationTrainer(dataset, _round_config(ctx.train_config, ctx.cfg), rdir / "train", resume="auto",
                              progress=ctx.progress).fit()
    rec["train"] = {k: out.get(k) for k in ("best_epoch", "epochs", "steps", "stopped", "val")}
    rec["run_dir"] = str(rdir / "train")
    rec["heldout_after"] = _heldout(evaluate(StudentCalculator(rdir / "train", backend=ctx.cfg.backend),
                                             test_frames)[0])
    return _finish(rec, t0)


def _reset(rdir: Path, first: str) -> None:
    """Delete the outputs of step ``first`` and of every later step."""
    for step in STEPS[STEPS.index(first):]:
        for name in _OUTPUTS[step]:
            p = rdir / name
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)


def _done(rdir: Path, marker: str) -> dict | None:
    p = rdir / marker
    return json.loads(p.read_text()) if p.is_file() else None


def _write_marker(rdir: Path, marker: str, info: dict) -> dict:
    atomic_write_text(rdir / marker, json.dumps(info, indent=1, default=_jsonable) + "\n")
    return info


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def run_round(ctx: ActiveContext, n: int, student_run: Path, dataset: Path, used: int) -> dict:
    """One round; returns its record (see ``docs/active.md``)."""
    from ..bench.accuracy import evaluate, load_labelled
    from ..student.calculator import StudentCalculator
    from ..student.committee import CommitteeCalculator

    t0 = time.time()
    cfg, rdir = ctx.cfg, ctx.root / f"round-{n}"
    rdir.mkdir(parents=True, exist_ok=True)
    rec = {"round": n, "student_in": str(student_run), "dataset_in": str(dataset), "teacher_calls": 0,
           "teacher_calls_total": used, "stop": None}
    student = StudentCalculator(student_run, backend=cfg.backend)
    test_frames = load_labelled(ctx.test_h5)
    rec["heldout_before"] = _heldout(evaluate(student, test_frames)[0])
    if cfg.target_force_mae and rec["heldout_before"]["force_mae"] <= cfg.target_force_mae:
        rec["stop"] = "accuracy_gate"
        return _finish(rec, t0)
    budget = min(cfg.budget_per_round, cfg.teacher_call_budget - used)
    if budget <= 0:
        rec["stop"] = "teacher_budget"
        return _finish(rec, t0)

    ctx.say(f"  round {n}: committee of {cfg.committee_size}")
    from .uncertainty import calibration, train_committee

    members = train_committee(dataset, _round_config(ctx.train_config, cfg).to_dict(), cfg, rdir / "committee",
                              ctx.seed + n, progress=ctx.progress)
    committee = CommitteeCalculator(members, backend=cfg.backend)
    rec["calibration_heldout"] = calibration(test_frames, student, committee)

    ctx.say(f"  round {n}: explore with the student")
    ex = _done(rdir, "explore.json") or _explore_step(ctx, n, rdir, student, committee, dataset, student_run)
    rec["explore"] = ex["summary"]
    rec["disagreement"] = ex["disagreement"]
    if ex["disagreement"]["mean"] < cfg.stop_force_std:
        rec["stop"] = "converged"
        return _finish(rec, t0)

    sel = _done(rdir, "select.json") or _select_step(ctx, n, rdir, ex, budget)
    rec["selection"] = {k: sel[k] for k in ("n_physical", "flagged", "n_selected", "score_selected_mean",
                                            "score_all_mean", "novelty_selected_mean", "novelty_all_mean")}
    rec["selection"]["by_kind"] = sel.get("selected_by_kind", {})  # absent in markers of older versions
    if sel["n_selected"] == 0:
        rec["stop"] = "converged"  # nothing physical is uncertain enough to be worth a teacher call
        return _finish(rec, t0)

    ctx.say(f"  round {n}: label {sel['n_selected']} frames with the teacher")
    lab = _label_step(ctx, rdir)
    rec["teacher_calls"] = sel["n_selected"]
    rec["teacher_calls_total"] = used + sel["n_selected"]
    rec["label"] = lab
    ds = _done(rdir, "dataset.json") or _dataset_step(ctx, rdir, dataset)
    rec["dataset"] = str(rdir / "dataset.h5")
    rec["appended"], rec["dropped_after_label"], rec["n_dataset"] = ds["appended"], ds["dropped"], ds["n_dataset"]
    if ds["appended"]:  # else (every frame failed or was dropped) the student stays as it was
        rec["calibration_selected"] = calibration(load_labelled(rdir / "labels.h5"), student, committee)
        ctx.say(f"  round {n}: retrain (warm start)")
        rec["train"] = _train_step(ctx, rdir, student_run)
        rec["run_dir"] = str(rdir / "train")
        rec["heldout_after"] = _heldout(
            evaluate(StudentCalculator(rdir / "train", backend=cfg.backend), test_frames)[0]
        )
    else:
        rec["dataset"] = str(dataset)
    if (
        cfg.target_force_mae
        and (rec.get("heldout_after") or rec["heldout_before"])["force_mae"] <= cfg.target_force_mae
    ):
        rec["stop"] = "accuracy_gate"
    elif rec["teacher_calls_total"] >= cfg.teacher_call_budget:
        rec["stop"] = "teacher_budget"
    elif n >= cfg.max_rounds:
        rec["stop"] = "max_rounds"
    return _finish(rec, t0)


def _finish(rec: dict, t0: float) -> dict:
    rec["seconds"] = round(time.time() - t0, 2)
    return json.loads(json.dumps(rec, default=_jsonable))


def _heldout(m: dict) -> dict:
    keys = ("n_structures", "energy_mae_per_atom", "force_mae", "force_rmse", "force_rmse_relative")
    return {k: m.get(k) for k in keys}


def _seed_structures(ctx: ActiveContext, n: int):
    from ..data.store import DatasetReader

    with DatasetReader(ctx.train_h5) as r:
        rng = np.random.default_rng([ctx.seed, n, 7])
        idx = sorted(rng.choice(len(r), size=min(ctx.cfg.n_seeds, len(r)), replace=False).tolist())
        return [r.get_atoms(i) for i in idx], idx


def _training_frames(dataset: Path, limit: int = 2000):
    from ..data.store import DatasetReader

    with DatasetReader(dataset) as r:
        step = max(1, len(r) // limit)
        return [r.get_atoms(i) for i in range(0, len(r), step)]


def _explore_step(ctx, n, rdir, student, committee, dataset, student_run) -> dict:
    from ..data.store import DatasetWriter
    from .explore import explore
    from .uncertainty import committee_scores, make_novelty

    _reset(rdir, "explore")
    seeds, parents = _seed_structures(ctx, n)
    with _explore_client(ctx) as client:
        res = explore(seeds, parents, student, ctx.cfg, n, ctx.seed, client=client, student_run=student_run)
    sc = committee_scores(res.frames, committee)
    cutoff = float(student.cutoff)
    novelty = make_novelty(ctx.cfg.novelty, _training_frames(dataset), ctx.cfg.descriptor_k, cutoff)
    from ase.calculators.singlepoint import SinglePointCalculator

    labelled = []
    for atoms in res.frames:  # the committee mean, for the physical checks of the selection
        work = atoms.copy()
        work.calc = committee
        f, e = work.get_forces(), work.get_potential_energy()
        work.calc = SinglePointCalculator(work, energy=e, forces=f)
        labelled.append(work)
    with DatasetWriter(rdir / "candidates.h5", label_fields=("energy", "forces"), attrs={
            "active_round": n, "labels": "committee mean of the student committee, not the teacher"}, mode="w") as w:
        if labelled:
            w.append(labelled)
    s = sc["force_std_max"]
    info = {
        "summary": res.summary(),
        "trajectories": res.trajectories,
        "disagreement": {
            "mean": float(s.mean()) if s.size else 0.0,
            "median": float(np.median(s)) if s.size else 0.0,
            "max": float(s.max()) if s.size else 0.0,
            "energy_std_mean": float(sc["energy_std"].mean()) if s.size else 0.0,
        },
        "force_std_max": s,
        "novelty": np.array([novelty(a) for a in res.frames]),
        "cutoff": cutoff,
    }
    return _write_marker(rdir, "explore.json", info)


@contextlib.contextmanager
def _explore_client(ctx):
    """The labeling section's Dask cluster for the exploration (a scheduler, an hpc section, or
    more than one local worker); ``None`` (in process) for one local worker."""
    lc = ctx.labeling
    n_workers = ctx.workers or lc.workers
    if lc.scheduler is None and lc.hpc is None and n_workers <= 1:
        yield None
        return
    from ..labeling.cluster import connect

    with connect(lc.scheduler, n_workers=n_workers, threads_per_worker=lc.threads_per_worker, hpc=lc.hpc) as client:
        yield client


def _select_step(ctx, n, rdir, ex, budget) -> dict:
    from ..data.store import GENERATED_POSITIONS_DTYPE, DatasetReader, DatasetWriter
    from .explore import kind_of
    from .select import physical_mask, select_frames
    from .uncertainty import structure_features

    _reset(rdir, "select")
    cfg = ctx.cfg
    with DatasetReader(rdir / "candidates.h5") as r:
        frames = [r.get_atoms(i) for i in range(len(r))]
        kinds = [kind_of(r.provenance(i)) for i in range(len(r))]
    physical, flagged = physical_mask(frames, [a.calc.results["energy"] for a in frames],
                                      [a.calc.results["forces"] for a in frames], ctx.quality)
    nov = np.asarray(ex["novelty"], dtype=float)
    score = np.asarray(ex["force_std_max"], dtype=float) + cfg.novelty_weight * np.where(np.isfinite(nov), nov, 1e3)
    elements = sorted({int(z) for a in frames for z in a.numbers})
    feats = np.array([structure_features(a, cfg.descriptor_k, ex["cutoff"], elements) for a in frames])
    picked = select_frames(score, feats, physical, budget, cfg.candidate_factor, min_score=cfg.stop_force_std,
                           kinds=kinds, max_kind_share=cfg.max_kind_share)
    with DatasetWriter(rdir / "pool.h5", label_fields=(), attrs={"active_round": n}, mode="w",
                       positions_dtype=GENERATED_POSITIONS_DTYPE) as w:  # the teacher labels exactly these
        if picked:
            w.append([frames[i].copy() for i in picked])  # copy(): without the committee labels
    mean = lambda x: float(np.mean(x)) if len(x) else float("nan")  # noqa: E731
    info = {"picked": picked, "n_candidates": len(frames), "n_physical": int(physical.sum()), "flagged": flagged,
            "n_selected": len(picked), "score_selected_mean": mean(score[picked]), "score_all_mean": mean(score),
            "novelty_selected_mean": mean(nov[picked]), "novelty_all_mean": mean(nov),
            "selected_by_kind": {k: sum(kinds[i] == k for i in picked) for k in sorted(set(kinds))}}
    return _write_marker(rdir, "select.json", info)


def _label_step(ctx, rdir) -> dict:
    from ..labeling import label_pool

    lc = ctx.labeling
    s = label_pool(rdir / "pool.h5", ctx.teacher.spec, rdir / "labels.h5", n_workers=ctx.workers or lc.workers,
                   threads_per_worker=lc.threads_per_worker, chunk_size=lc.chunk_size, scheduler=lc.scheduler,
                   hpc=lc.hpc, min_distance=lc.min_distance, overwrite=False, progress=ctx.progress)
    return {"n_dataset": s.n_dataset, "n_failures": s.n_failures, "seconds": round(s.seconds, 2), "resumed": s.resumed}


def _dataset_step(ctx, rdir, dataset) -> dict:
    """``dataset.h5`` = the previous dataset + the labelled frames that pass the checks."""
    from ..data.store import DatasetReader, DatasetWriter
    from .select import PRE_LABEL_CHECKS, physical_mask

    _reset(rdir, "dataset")
    with DatasetReader(rdir / "labels.h5") as r:  # the teacher's failures stay in its failures table
        frames = [r.get_atoms(i) for i in range(len(r))]
    checks = PRE_LABEL_CHECKS + ("labels_present", "net_force", "stress")
    ok, dropped = physical_mask(rdir / "labels.h5", quality_config=ctx.quality, checks=checks) if frames else ([], {})
    keep = [a for a, good in zip(frames, ok) if good]
    tmp = rdir / "dataset.tmp.h5"
    shutil.copyfile(dataset, tmp)
    with DatasetReader(tmp) as r:
        fields = tuple(r.label_fields)
    with DatasetWriter(tmp, label_fields=fields, mode="a") as w:
        if keep:
            w.append(keep)
        total = len(w)
    replace_atomically(tmp, rdir / "dataset.h5")
    return _write_marker(rdir, "dataset.json", {"appended": len(keep), "dropped": dropped, "n_dataset": total})


def _round_config(train_config, cfg):
    """``train_config`` for a round's trainings: without ``fit_active_energies``, the frames the
    rounds added (source ``active/...``) train on forces and stress only."""
    if cfg.fit_active_energies or "active/" in train_config.energy_skip_sources:
        return train_config
    return train_config.replace(energy_skip_sources=[*train_config.energy_skip_sources, "active/"])


def _train_step(ctx, rdir, student_run) -> dict:
    from ..training import DistillationTrainer

    tc = _round_config(ctx.train_config.replace(**ctx.cfg.retrain), ctx.cfg)
    out = DistillationTrainer(rdir / "dataset.h5", tc, rdir / "train", resume="auto", progress=ctx.progress,
                              init_from=student_run).fit()
    info = {k: out.get(k) for k in ("best_epoch", "epochs", "steps", "stopped", "val")}
    if ctx.cfg.refit_reference:
        info["reference_refit"] = refit_reference(rdir / "train" / "checkpoints" / "best.pt", ctx.train_h5,
                                                  ctx.cfg.backend)
    return info


def refit_reference(checkpoint: Path, dataset: Path, backend: str = "auto") -> dict:
    """Shift the per-element reference energies of the student in ``checkpoint`` (in place,
    atomically) by the least-squares fit of its energy residuals on ``dataset`` (at most 2000
    structures of it), so that its absolute energies match the teacher's there again; forces
    and stress do not change. Done once per checkpoint (recorded in it); returns the shift
    (eV per atom of each element) and the mean residual before (meV/atom)."""
    from ..data.normalization import fit_element_energies
    from ..student.calculator import StudentCalculator
    from ..student.io import read_checkpoint, save_student, student_from_dict

    data = read_checkpoint(checkpoint)
    extra = dict(data.get("extra") or {})
    if "reference_refit" in extra:
        return extra["reference_refit"]
    model = student_from_dict(data, where=str(checkpoint))
    calc = StudentCalculator(model, backend=backend)
    numbers, residual, per_atom = [], [], []
    for atoms in _training_frames(dataset):
        if atoms.calc is None or "energy" not in atoms.calc.results:
            continue  # a structure labelled without an energy
        teacher = atoms.get_potential_energy()
        work = atoms.copy()
        work.calc = calc
        residual.append(work.get_potential_energy() - teacher)
        per_atom.append(residual[-1] / len(atoms))
        numbers.append(atoms.numbers)
    delta = {z: -v for z, v in fit_element_energies(numbers, np.asarray(residual)).items()}
    model.shift_reference_energies(delta)
    extra["reference_refit"] = {"dataset": str(dataset), "n_structures": len(numbers),
                                "shift_eV_per_atom": {str(z): d for z, d in delta.items()},
                                "mean_residual_before_meV_per_atom": 1e3 * float(np.mean(per_atom))}
    save_student(checkpoint, model, extra=extra)
    return extra["reference_refit"]


# -- report --------------------------------------------------------------------------------------
def write_report(root: Path, records: list[dict], initial_calls: int = 0, final: dict | None = None) -> None:
    """``rounds.json``, ``rounds.md`` and ``error_vs_teacher_calls.png`` in ``root`` (``final``:
    the record of the final training, if it ran)."""
    report = {"initial_teacher_calls": initial_calls, "rounds": records}
    if final is not None:
        report["final"] = final
    atomic_write_text(root / "rounds.json", json.dumps(report, indent=2, default=_jsonable) + "\n")
    lines = [
        "# Active learning rounds",
        "",
        "Teacher calls are cumulative over the rounds (plus the first dataset's "
        f"{initial_calls}); errors in eV/A on the held-out set; disagreement = mean over explored "
        "frames of the largest per-atom committee force std (eV/A); MD stability = fraction of "
        "student MD trajectories that stayed in the physical region.",
        "",
        "| round | teacher calls | total | selected | appended | disagreement | committee-error corr. (held-out, "
        "per atom) "
        "| held-out force MAE before | after | MD stability | stop |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        cal = (r.get("calibration_heldout") or {}).get("atom_spearman")
        lines.append("| " + " | ".join(str(x) for x in (
            r["round"], r["teacher_calls"], initial_calls + r["teacher_calls_total"],
            _selected(r.get("selection") or {}), r.get("appended", "-"),
            _f((r.get("disagreement") or {}).get("mean")), _f(cal),
            _f(r["heldout_before"]["force_mae"]), _f((r.get("heldout_after") or {}).get("force_mae")),
            _f((r.get("explore") or {}).get("md_stability")), r.get("stop") or "")) + " |")
    if final is not None:
        lines.append(f"| final (from scratch) | 0 | {initial_calls + final['teacher_calls_total']} | - | - | - | - "
                     f"| {_f(final['heldout_before']['force_mae'])} | {_f(final['heldout_after']['force_mae'])} "
                     "| - | |")
        lines += ["", "The final row is a student trained from random weights on the last round's dataset; it is "
                  "the one export and bench use."]
    atomic_write_text(root / "rounds.md", "\n".join(lines) + "\n")
    _plot(root / "error_vs_teacher_calls.png", records, initial_calls, final)


def _selected(sel: dict) -> str:
    """``36 (md 20, hot 12, relax 4)``: frames selected, by exploration kind."""
    by_kind = ", ".join(f"{k} {v}" for k, v in sorted((sel.get("by_kind") or {}).items(), key=lambda kv: -kv[1]) if v)
    n = sel.get("n_selected", "-")
    return f"{n} ({by_kind})" if by_kind else str(n)


def _f(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.4g}"


def _plot(path: Path, records: list[dict], initial_calls: int, final: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [r for r in records if r.get("heldout_after")]
    xs = [initial_calls] + [initial_calls + r["teacher_calls_total"] for r in trained]
    ys = [records[0]["heldout_before"]["force_mae"]] + [r["heldout_after"]["force_mae"] for r in trained]
    names = ["r0"] + [f"r{r['round']}" for r in trained]
    if final is not None:
        xs.append(initial_calls + final["teacher_calls_total"])
        ys.append(final["heldout_after"]["force_mae"])
        names.append("final")
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(xs, ys, "o-")
    for name, x, y in zip(names, xs, ys):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("teacher calls (cumulative)")
    ax.set_ylabel("held-out force MAE (eV/A)")
    ax.set_title("active learning: error vs teacher calls", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, keep_suffix=True) as tmp:  # matplotlib picks the format from the suffix
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
