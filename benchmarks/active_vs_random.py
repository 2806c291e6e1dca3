"""Active learning against random sampling of the same recipe, side by side (issue 15).

From one labelled training set of a recipe (e.g. ``PROJECT/data/train.h5``):

- **base**: a random fraction of its structures; the first student ``S0`` is trained on it from
  scratch with the recipe's ``training`` section (``--base-steps`` optimizer steps).
- **active**: the recipe's ``active:`` rounds, run by the pipeline's own code
  (``mlff_distiller.active.run_rounds``: committee, student MD, selection, teacher labels on the
  Dask labeling path, warm-start retraining) starting from ``S0`` and the base set.
- **random xK**: the same number of rounds and the same retraining settings from ``S0``, adding
  structures of the recipe drawn at random from the rest of the training set (already labelled
  by the same teacher: each one counts as one teacher call), K times as many per round as the
  active rounds' budget. Drawing single structures at random from a bigger run of the recipe
  covers more independent starting points than a smaller run of the recipe would, so this
  baseline is, if anything, favourable to random sampling.
- **final training**: with ``active.final_training: scratch`` (the default), every arm's last
  dataset also trains a student from random weights with the recipe's ``training`` section
  (``--final-steps`` to change its steps), as ``mlff-distill run`` does after its rounds. Those
  students carry the arm's name (``active``, ``random x1``); the last warm starts are ``... warm``.

Every final student is then scored on the recipe's held-out teacher MD (``bench.heldout``,
cached in ``--cache``) with ``benchmarks/compare_students.py``: absolute energy MAE (meV/atom),
force RMSE / teacher force RMS, bootstrap 95 % intervals, and paired differences to the active
student (positive = worse than active). Every step is resumable: a re-run skips finished
students and resumes an unfinished training or active round.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/active_vs_random.py RECIPE TRAIN_H5
--cache HELDOUT_CACHE -o OUT_DIR [--base-fraction 0.25] [--base-steps 2000] [--random-factors 1 2 3]``
Writes ``OUT_DIR/active_vs_random.md`` / ``.json``. Units: eV, eV/atom, eV/A.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _results import save  # noqa: E402  (benchmarks/_results.py)


def _subset(src: Path, dst: Path, indices) -> Path:
    """Write the structures ``indices`` of ``src`` to ``dst`` (once; atomically)."""
    from mlff_distiller.data.store import DatasetReader, DatasetWriter
    from mlff_distiller.fileio import replace_atomically

    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp.h5")
    with DatasetReader(src) as r:
        with DatasetWriter(tmp, label_fields=tuple(r.label_fields), attrs={**r.attrs, "subset_of": str(src)},
                           mode="w", positions_dtype=r.positions_dtype) as w:
            w.append([r.get_atoms(int(i)) for i in indices])
    replace_atomically(tmp, dst)
    return dst


def _train(dataset: Path, config, run_dir: Path, init_from=None) -> Path:
    """Train (or resume, or skip when finished) a student in ``run_dir``."""
    from mlff_distiller.training import DistillationTrainer

    done = run_dir / "done.json"
    if not done.exists():
        t0 = time.time()
        out = DistillationTrainer(dataset, config, run_dir, resume="auto", progress=False, init_from=init_from).fit()
        done.write_text(json.dumps({"seconds": round(time.time() - t0, 1), "steps": out.get("steps")}) + "\n")
    return run_dir


class _Stages:
    """The pipeline's stage bookkeeping for :func:`run_rounds` (resume a killed round)."""

    def __init__(self, root: Path, name: str):
        from mlff_distiller.pipeline.project import Project

        self.project = Project(root, name)

    def __call__(self, name: str, fp: str, fn) -> dict:
        if self.project.is_done(name, fp):
            return self.project.stage(name)["info"]
        self.project.mark(name, fp, status="running")
        info = fn()
        self.project.mark(name, fp, info=info)
        return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", help="recipe YAML with training, active and bench.heldout sections")
    ap.add_argument("train_h5", help="the recipe's labelled training set (e.g. PROJECT/data/train.h5)")
    ap.add_argument("--test-h5", help="labelled held-out split for the rounds' own reports (default: none)")
    ap.add_argument("--cache", required=True, help="folder of cached held-out teacher MD frames")
    ap.add_argument("-o", "--out", required=True, help="output directory")
    ap.add_argument("--base-fraction", type=float, default=0.25)
    ap.add_argument("--base-steps", type=int, default=2000, help="optimizer steps of the first student S0")
    ap.add_argument("--random-factors", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--final-steps", type=int, help="optimizer steps of the final from-scratch trainings "
                    "(default: the recipe's training.max_steps)")
    ap.add_argument("--only", choices=("active", "random"), help="run one arm (e.g. both at once in two processes; "
                    "the random arms then assume active.max_rounds rounds); a run without it compares them")
    args = ap.parse_args(argv)

    import torch

    from mlff_distiller.active import ActiveContext, run_rounds
    from mlff_distiller.active.rounds import _round_config
    from mlff_distiller.data.store import DatasetReader
    from mlff_distiller.recipe import Recipe
    from mlff_distiller.teachers import build_teacher

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = Recipe.load(args.recipe)
    acfg = recipe.active
    if acfg is None:
        raise SystemExit(f"{args.recipe} has no active: section")
    src = Path(args.train_h5)
    with DatasetReader(src) as r:
        n = len(r)
    order = np.random.default_rng(args.seed).permutation(n)
    n_base = max(8, int(round(args.base_fraction * n)))
    base = _subset(src, out / "base.h5", np.sort(order[:n_base]))
    rest = order[n_base:]
    train_cfg = recipe.training.replace(max_steps=args.base_steps)
    print(f"base: {n_base} of {n} structures; S0 ({args.base_steps} steps)", flush=True)
    s0 = _train(base, train_cfg, out / "s0")
    final = acfg.final_training == "scratch"
    final_cfg = _round_config(recipe.training.replace(**({"max_steps": args.final_steps} if args.final_steps else {})),
                              acfg)

    def final_student(name: str, dataset: Path, warm: Path, calls: int) -> None:
        """The arm's final student: from scratch on its last dataset, or its last warm start."""
        if final:
            print(f"{name}: final training from scratch ({final_cfg.max_steps} steps)", flush=True)
            arms[f"{name} warm"] = (warm, calls)
            arms[name] = (_train(dataset, final_cfg, out / "final" / name.replace(" ", "-")), calls)
        else:
            arms[name] = (warm, calls)

    # -- active arm: the pipeline's rounds ----------------------------------------------------
    arms = {"S0": (s0, n_base)}
    n_rounds = acfg.max_rounds
    if args.only != "random":
        test_h5 = Path(args.test_h5) if args.test_h5 else base  # the rounds' own report (not the comparison)
        # the final training is done below alike for every arm
        ctx = ActiveContext(cfg=dataclasses.replace(acfg, final_training="none"), teacher=build_teacher(recipe.teacher),
                            train_config=train_cfg,
                            quality=recipe.quality, labeling=recipe.labeling, train_h5=base, test_h5=test_h5,
                            root=out / "active", seed=recipe.seed, say=lambda t: print(t, flush=True))
        stages = _Stages(out / "active_project", f"{recipe.name}-active-vs-random")
        t0 = time.time()
        active_dir, _ = run_rounds(ctx, stages.project, stages, s0, "active-vs-random", initial_calls=n_base)
        rounds = json.loads((out / "active" / "rounds.json").read_text())["rounds"]
        active_calls = sum(int(rec.get("teacher_calls") or 0) for rec in rounds)
        n_rounds = len([rec for rec in rounds if rec.get("run_dir")])
        print(f"active: {n_rounds} rounds, {active_calls} teacher calls, {time.time() - t0:.0f} s", flush=True)
        last = [rec for rec in rounds if rec.get("run_dir")]
        final_student("active", Path(last[-1]["dataset"]) if last else base, active_dir, n_base + active_calls)
    if args.only == "active":
        return 0

    # -- random arms: same rounds and retraining, structures of the recipe at random ---------
    retrain_cfg = train_cfg.replace(**acfg.retrain)
    for k in args.random_factors:
        per_round = int(round(k * acfg.budget_per_round))
        if per_round * n_rounds > len(rest):
            print(f"random x{k:g}: needs {per_round * n_rounds} more structures, {len(rest)} left: skipped")
            continue
        prev, ds = s0, base
        for j in range(1, n_rounds + 1):
            ds = _subset(src, out / f"random-x{k:g}" / f"round-{j}.h5",
                         np.sort(np.concatenate([order[:n_base], rest[: per_round * j]])))
            print(f"random x{k:g} round {j}: {n_base + per_round * j} structures", flush=True)
            prev = _train(ds, retrain_cfg, out / f"random-x{k:g}" / f"train-{j}", init_from=prev)
        final_student(f"random x{k:g}", ds, prev, n_base + per_round * n_rounds)
    if args.only == "random":
        return 0

    # -- paired comparison on the held-out teacher MD ------------------------------------------
    specs = [f"active={arms['active'][0]}"] + [f"{name}={d}" for name, (d, _) in arms.items() if name != "active"]
    cmp_out = out / "heldout_comparison"
    subprocess.run([sys.executable, str(Path(__file__).with_name("compare_students.py")), args.recipe, *specs,
                    "--cache", args.cache, "--out", str(cmp_out)], check=True)
    cmp = json.loads(cmp_out.with_suffix(".json").read_text())
    cmp["on_active_frames"] = _on_active_frames(out, rounds, arms)
    _write(out, args, recipe, n, n_base, rounds, arms, cmp)
    return 0


def _on_active_frames(out: Path, rounds: list, arms: dict) -> dict:
    """Each student's signed energy error (meV/atom, student - teacher) and force RMSE / RMS on
    the frames the active rounds had the teacher label (the students' own MD), per round."""
    from mlff_distiller.bench.accuracy import evaluate, load_labelled
    from mlff_distiller.student import StudentCalculator

    res: dict = {}
    for rec in rounds:
        labels = out / "active" / f"round-{rec['round']}" / "labels.h5"
        if not labels.exists():
            continue
        frames = load_labelled(labels)
        for name, (run_dir, _) in arms.items():
            metrics, parity = evaluate(StudentCalculator(run_dir, backend="numba"), frames)
            signed = 1e3 * (parity["energy_pred"] - parity["energy_ref"])  # per atom
            res.setdefault(f"round-{rec['round']}", {})[name] = {
                "n_frames": len(frames), "energy_signed_mev": float(np.mean(signed)),
                "energy_mae_mev": float(np.mean(np.abs(signed))), "force_rel_rmse": metrics.get("force_rmse_relative")}
    return res


def _write(out: Path, args, recipe, n, n_base, rounds, arms, cmp) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from compare_students import _ci, paired_cells
    teacher_calls = {name: calls for name, (_, calls) in arms.items()}
    res = {"recipe": str(args.recipe), "train_h5": str(args.train_h5), "n_train": n, "n_base": n_base,
           "base_steps": args.base_steps, "active": recipe.active.to_dict(), "teacher_calls": teacher_calls,
           "rounds": rounds, "heldout": cmp}
    lines = [f"# Active learning vs random sampling: {recipe.name}", "",
             f"Recipe `{args.recipe}`; training set `{args.train_h5}` ({n} structures); base {n_base} "
             f"structures, S0 {args.base_steps} steps; active and random arms: {len(rounds)} rounds of "
             f"warm-start retraining with `active.retrain` = {recipe.active.retrain}"
             + (", then a final training from scratch on each arm's last dataset "
                f"({args.final_steps or recipe.training.max_steps} steps; the last warm starts are the `warm` rows)"
                if recipe.active.final_training == "scratch" else "")
             + ". Held-out: "
             f"{cmp['n_frames']} frames of the teacher's own MD ({', '.join(cmp['runs'])}), {cmp['date_utc']} UTC, "
             f"{cmp['machine']}, 1 thread. Intervals: bootstrap 95 % (frames resampled within runs); "
             "differences are paired, student minus active (positive = worse than active).", "",
             "| student | teacher calls | force RMSE / RMS | energy MAE meV/atom | offset meV/atom "
             "| d(force) vs active | d(energy) vs active, meV/atom |", "|---|---:|---|---|---:|---|---|"]
    for name, calls in teacher_calls.items():
        e = cmp["students"].get(name)
        if e is None:
            continue
        p = e["pooled"]
        df, de = paired_cells(e.get("vs_active"))
        lines.append(f"| {name} | {calls} | {_ci(p, 'force_rel_rmse')} | {_ci(p, 'energy_mae_per_atom', 1e3)} | "
                     f"{1e3 * p['energy_offset_per_atom']:+.1f} | {df} | {de} |")
    frames = cmp.get("on_active_frames") or {}
    if frames:
        names = list(teacher_calls)
        lines += ["", "On the frames each active round had the teacher label (the students' own MD; not held out "
                  "for the active students after that round): signed energy error meV/atom (student - teacher) / "
                  "force RMSE / RMS.", "", "| frames | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for key, per in frames.items():
            cells = [f"{per[m]['energy_signed_mev']:+.1f} / {per[m]['force_rel_rmse']:.3f}" if m in per else "-"
                     for m in names]
            lines.append(f"| {key} ({next(iter(per.values()))['n_frames']}) | " + " | ".join(cells) + " |")
    lines += ["", "Rounds of the active arm (teacher calls, selected, committee disagreement, stop):", ""]
    for rec in rounds:
        lines.append(f"- round {rec['round']}: {rec.get('teacher_calls')} teacher calls, disagreement "
                     f"{(rec.get('disagreement') or {}).get('mean', float('nan')):.3f} eV/A, MD stability "
                     f"{(rec.get('explore') or {}).get('md_stability')}, stop {rec.get('stop')}, "
                     f"{rec.get('seconds')} s")
    save(out / "active_vs_random", res, "\n".join(lines), echo=True)



if __name__ == "__main__":
    sys.exit(main())
