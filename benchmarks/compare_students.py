"""Paired comparison of students on one recipe's held-out teacher MD.

Every student is scored on the same frames: the teacher's own Langevin MD of the recipe's
``bench.heldout`` systems and temperatures (made once and cached in ``--cache``, the same
cache a project's bench keeps in ``PROJECT/bench/heldout_frames``). Reported per student:
absolute energy MAE and offset (meV/atom), force RMSE / teacher RMS, with bootstrap 95 %
intervals; and for every student after the first, the paired difference to the first
(same frames, paired bootstrap; negative = better than the first).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compare_students.py RECIPE
--cache PROJECT/bench/heldout_frames --out benchmarks/results/NAME NAME1=CKPT1 NAME2=CKPT2 ...``
(writes NAME.md and NAME.json; ``--workers 2`` makes missing held-out runs on two Dask workers).
Units: eV, eV/atom, eV/A.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform

from _results import save  # noqa: E402  (benchmarks/_results.py)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", help="recipe YAML (or built-in name) with a bench.heldout section")
    ap.add_argument("students", nargs="+", help="NAME=CHECKPOINT_OR_RUN_DIR, the first is the reference")
    ap.add_argument("--cache", required=True, help="folder of cached held-out frames (made when missing)")
    ap.add_argument("--out", required=True, help="output path without suffix (.md and .json are written)")
    ap.add_argument("--workers", type=int, default=1,
                    help="make missing held-out runs on a local Dask cluster of this many 1-thread workers")
    args = ap.parse_args(argv)

    import torch

    from mlff_distiller.bench.heldout import (
        HeldoutConfig,
        heldout_frames,
        heldout_metrics,
        paired_difference,
        score_frames,
    )
    from mlff_distiller.bench.models import resolve_student, resolve_teacher
    from mlff_distiller.generation.recipe import load_recipe

    torch.set_num_threads(1)
    recipe = load_recipe(args.recipe)
    hcfg = HeldoutConfig.from_dict((recipe.get("bench") or {}).get("heldout"))
    if hcfg is None:
        raise SystemExit(f"{args.recipe} has no bench.heldout section: name held-out systems and temperatures there")
    teacher = resolve_teacher(recipe["teacher"])
    runs = heldout_frames(teacher, hcfg, progress=lambda t: print(t, flush=True), cache_dir=args.cache,
                          cluster={"n_workers": args.workers, "threads_per_worker": 1} if args.workers > 1 else None)
    frames = [f for _, _, _, fr, _ in runs for f in fr]
    run_ids = [key for key, _, _, fr, _ in runs for _ in fr]

    result = {"recipe": str(args.recipe), "teacher": teacher.info.get("fingerprint_id", teacher.label),
              "n_frames": len(frames), "runs": [key for key, *_ in runs], "students": {},
              "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    records = {}
    for spec in args.students:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"student {spec!r}: write NAME=CHECKPOINT")
        recs = score_frames(resolve_student(path).make_calculator(), frames)
        records[name] = recs
        entry = {"checkpoint": path, "pooled": heldout_metrics(recs, run_ids), "per_run": {}}
        for key in result["runs"]:
            sub = [r for r, k in zip(recs, run_ids) if k == key]
            entry["per_run"][key] = heldout_metrics(sub, [key] * len(sub), n_boot=200)
        first = next(iter(records))
        if name != first:
            entry["vs_" + first] = {m: paired_difference(records[first], recs, run_ids, m)
                                    for m in ("force_rel_rmse", "energy_mae_per_atom")}
        result["students"][name] = entry
        p = entry["pooled"]
        print(f"{name}: energy {1e3 * p['energy_mae_per_atom']:.1f} meV/atom, force {p['force_rel_rmse']:.3f}",
              flush=True)
    save(args.out, result, _markdown(result), default=float)
    return 0


def _ci(m: dict, key: str, scale: float = 1.0, digits: str = ".3g") -> str:
    lo, hi = m[key + "_ci95"]
    return f"{scale * m[key]:{digits}} [{scale * lo:{digits}}, {scale * hi:{digits}}]"


def paired_cells(d: dict | None) -> tuple[str, str]:
    """Table cells of a paired difference: force RMSE / RMS and energy MAE (meV/atom), with
    their 95 % intervals; empty for the reference student."""
    if not d:
        return "", ""
    f, en = d["force_rel_rmse"], d["energy_mae_per_atom"]
    return (f"{f['difference']:+.3f} [{f['ci95'][0]:+.3f}, {f['ci95'][1]:+.3f}]",
            f"{1e3 * en['difference']:+.1f} [{1e3 * en['ci95'][0]:+.1f}, {1e3 * en['ci95'][1]:+.1f}]")


def _resampling(runs) -> str:
    """How the bootstrap drew: whole trajectories first when a system and temperature has replicas."""
    from mlff_distiller.bench.heldout import condition_of

    if len({condition_of(k) for k in runs}) < len(runs):
        return "trajectories resampled within each system and temperature, then frames within each"
    return ("frames resampled within runs: one trajectory per run, so the interval leaves out "
            "trajectory-to-trajectory spread")


def _markdown(r: dict) -> str:
    names = list(r["students"])
    lines = [f"# Students compared on the held-out teacher MD of `{r['recipe']}`", "",
             f"Teacher {r['teacher']}; {r['n_frames']} frames from {len(r['runs'])} runs "
             f"({', '.join(r['runs'])}); {r['machine']}, 1 thread, {r['date_utc']} UTC. Intervals: bootstrap 95 % "
             f"({_resampling(r['runs'])}); differences are paired, relative to `{names[0]}` (negative = better).",
             "",
             "| student | energy MAE meV/atom | offset meV/atom | force RMSE / RMS | d(force) | d(energy) meV/atom |",
             "|---|---|---|---|---|---|"]
    for name, e in r["students"].items():
        p = e["pooled"]
        df, de = paired_cells(e.get("vs_" + names[0]))
        lines.append(f"| {name} | {_ci(p, 'energy_mae_per_atom', 1e3)} | {1e3 * p['energy_offset_per_atom']:+.1f} | "
                     f"{_ci(p, 'force_rel_rmse')} | {df} | {de} |")
    lines += ["", "Per run (energy MAE meV/atom / offset / force RMSE / RMS):", "",
              "| run | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in r["runs"]:
        cells = []
        for name in names:
            m = r["students"][name]["per_run"][key]
            cells.append(f"{1e3 * m['energy_mae_per_atom']:.1f} / {1e3 * m['energy_offset_per_atom']:+.1f} / "
                         f"{m['force_rel_rmse']:.3f}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
