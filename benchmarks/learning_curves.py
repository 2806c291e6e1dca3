"""Learning curves: held-out error vs training structures and vs optimizer steps.

For a finished project (``mlff-distill run RECIPE -o PROJECT``), with the project's own
training settings (recipe ``training:``) and 1 thread:

* **vs data**: students trained on nested subsets of ``PROJECT/data/train.h5`` (whole
  provenance groups drawn in one seeded order, so each subset contains the smaller ones),
  each for the same number of optimizer steps;
* **vs compute**: students trained on the whole training split for increasing step budgets
  (the cosine schedule spans each budget, as in a real run).

Every student is scored on the same two held-out sets, never seen in training:

1. the teacher's own Langevin MD (``bench.heldout`` of the recipe: systems, temperatures),
   with enough frames for >= ``--min-frames`` (default 300), made once and cached as
   ``PROJECT/learning_curves/heldout_md.extxyz``;
2. the project's test split (``data/test.h5``: the recipe's own distribution, grouped split).

Reported per student: absolute energy MAE (meV/atom), energy offset, force RMSE / teacher RMS,
with bootstrap 95 % intervals, and for each curve the paired difference of every point to the
previous one (same frames, paired bootstrap): a step that does not exclude 0 bought nothing
measurable. Writes ``benchmarks/results/learning_curves_<name>.md`` and ``.json``.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/learning_curves.py PROJECT
[--fractions 0.125 0.25 0.5 1] [--data-steps 2000] [--steps 500 1000 2000 4000]``.
Units: eV, eV/atom, eV/A.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from _results import save  # noqa: E402  (benchmarks/_results.py)

RESULTS = Path(__file__).resolve().parent / "results"


def _heldout_md(project: Path, recipe: dict, min_frames: int) -> list:
    """Teacher MD frames for the recipe's held-out systems and temperatures (cached)."""
    from ase.io import read, write

    from mlff_distiller.bench.heldout import HeldoutConfig, heldout_frames
    from mlff_distiller.bench.models import resolve_teacher

    cache = project / "learning_curves" / "heldout_md.extxyz"
    if cache.is_file():
        frames = read(cache, index=":")
        for f in frames:
            f.info["run"] = str(f.info["run"])
        return frames
    hcfg = HeldoutConfig.from_dict((recipe.get("bench") or {}).get("heldout"))
    if hcfg is None:
        raise SystemExit("the recipe has no bench.heldout section: name held-out systems and temperatures there")
    hcfg.frames = max(hcfg.frames, -(-min_frames // len(hcfg.runs())))
    teacher = resolve_teacher(recipe["teacher"])
    frames = []
    for key, _, _, got, rep in heldout_frames(teacher, hcfg, progress=lambda t: print(t, flush=True),
                                              cache_dir=cache.parent / "heldout_frames"):
        for f in got:
            f.info["run"] = key
        frames += got
        print(f"held-out teacher MD {key}: {len(got)} frames, {rep['status']}", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    write(cache, frames, format="extxyz")
    return frames


def _test_split_frames(project: Path) -> list:
    from mlff_distiller.data.store import DatasetReader

    frames = []
    with DatasetReader(project / "data" / "test.h5") as r:
        for i in range(len(r)):
            a = r.get_atoms(i)
            res = a.calc.results
            if "energy" not in res or "forces" not in res:
                continue
            a.info["energy_ref"] = float(res["energy"])
            a.arrays["forces_ref"] = np.asarray(res["forces"], float)
            a.info["run"] = "test split"
            a.calc = None
            frames.append(a)
    return frames


def _subset(train_h5: Path, fraction: float, seed: int, out: Path) -> int:
    """Whole provenance groups in one seeded order until ``fraction`` of the structures."""
    from mlff_distiller.data.store import DatasetReader, DatasetWriter

    with DatasetReader(train_h5) as r:
        groups = [str((r.provenance(i) or {}).get("group", i)) for i in range(len(r))]
        order = sorted(set(groups))
        order = [order[k] for k in np.random.default_rng(seed).permutation(len(order))]
        want = int(round(fraction * len(r)))
        chosen, count = set(), 0
        for g in order:
            if count >= want:
                break
            chosen.add(g)
            count += groups.count(g)
        keep = [i for i in range(len(r)) if groups[i] in chosen]
        out.unlink(missing_ok=True)
        with DatasetWriter(out, label_fields=tuple(r.label_fields), attrs=dict(r.attrs)) as w:
            for start in range(0, len(keep), 256):
                w.append([r.get_atoms(i) for i in keep[start:start + 256]])
    return len(keep)


def _train(data: Path, tcfg: dict, steps: int, run_dir: Path) -> tuple[Path, float]:
    from mlff_distiller.training import DistillationTrainer, TrainConfig

    cfg = TrainConfig.from_dict({**tcfg, "max_steps": steps, "max_epochs": 100000})
    done = run_dir / "checkpoints" / "best.pt"
    if done.is_file() and (run_dir / "done").is_file():
        return done, float((run_dir / "done").read_text())
    t0 = time.perf_counter()
    DistillationTrainer(data, cfg, run_dir, resume="auto", progress=False).fit()
    wall = time.perf_counter() - t0
    (run_dir / "done").write_text(f"{wall:.1f}\n")
    return done, wall


def _score(ckpt: Path, sets: dict) -> dict:
    from mlff_distiller.bench.heldout import heldout_metrics, score_frames
    from mlff_distiller.student import StudentCalculator

    calc = StudentCalculator(str(ckpt))
    out = {}
    for name, frames in sets.items():
        recs = score_frames(calc, frames)
        out[name] = {"records": recs, "run_ids": [f.info["run"] for f in frames],
                     "metrics": heldout_metrics(recs, [f.info["run"] for f in frames], n_boot=500)}
    return out


def _curve(points: list, sets: dict) -> list:
    """Metrics per point, plus the paired difference to the previous point."""
    from mlff_distiller.bench.heldout import paired_difference

    rows = []
    for k, p in enumerate(points):
        row = {key: p[key] for key in p if key != "scores"}
        for name in sets:
            row[name] = p["scores"][name]["metrics"]
            if k:
                prev = points[k - 1]["scores"][name]
                cur = p["scores"][name]
                row[name + "_vs_previous"] = {
                    m: paired_difference(prev["records"], cur["records"], cur["run_ids"], m, n_boot=500)
                    for m in ("force_rel_rmse", "energy_mae_per_atom")
                }
        rows.append(row)
    return rows


def _fmt_ci(m: dict, key: str, scale: float = 1.0) -> str:
    lo, hi = m[key + "_ci95"]
    return f"{scale * m[key]:.3g} [{scale * lo:.3g}, {scale * hi:.3g}]"


def _markdown(result: dict) -> str:
    lines = [
        f"# Learning curves: {result['recipe']}",
        "",
        f"Machine: {result['machine']}, 1 thread, {result['date_utc']}. Held-out sets: "
        + ", ".join(f"{k} ({v} frames)" for k, v in result["heldout_sizes"].items())
        + ". Training settings: the recipe's, with the step budget below. Intervals: bootstrap 95 %; "
        "\"vs previous\" is the paired difference to the row above on the same frames (negative = better).",
        "",
    ]
    for title, key, col in (("Error vs training structures", "vs_data", "structures"),
                            ("Error vs optimizer steps", "vs_steps", "steps")):
        rows = result[key]
        if not rows:
            continue
        lines += [f"## {title}", ""]
        for name in result["heldout_sizes"]:
            lines += [
                f"### on {name}",
                "",
                f"| {col} | train s | energy MAE meV/atom | offset meV/atom | force RMSE / RMS | "
                "d(force) vs previous | d(energy meV/atom) vs previous |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in rows:
                m = r[name]
                d = r.get(name + "_vs_previous")
                df = (f"{d['force_rel_rmse']['difference']:+.3f} [{d['force_rel_rmse']['ci95'][0]:+.3f}, "
                      f"{d['force_rel_rmse']['ci95'][1]:+.3f}]") if d else "-"
                de = (
                    (
                        f"{1000 * d['energy_mae_per_atom']['difference']:+.2f} "
                        f"[{1000 * d['energy_mae_per_atom']['ci95'][0]:+.2f}, "
                        f"{1000 * d['energy_mae_per_atom']['ci95'][1]:+.2f}]"
                    )
                    if d
                    else "-"
                )
                lines.append(
                    f"| {r[col]} | {r['train_s']:.0f} | {_fmt_ci(m, 'energy_mae_per_atom', 1000)} "
                    f"| {1000 * m['energy_offset_per_atom']:+.2f} | {_fmt_ci(m, 'force_rel_rmse')} | {df} | {de} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("project", nargs="?", default="projects/silicon",
                    help="a finished project directory (mlff-distill run ... -o PROJECT); default projects/silicon")
    ap.add_argument("--fractions", type=float, nargs="*", default=[0.125, 0.25, 0.5, 1.0])
    ap.add_argument("--data-steps", type=int, default=2000, help="optimizer steps of every point of the data curve")
    ap.add_argument("--steps", type=int, nargs="*", default=[500, 1000, 2000, 4000])
    ap.add_argument("--min-frames", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    project = Path(args.project)
    if not (project / "data" / "train.h5").is_file():
        print(f"learning_curves: {project} holds no finished project; run `mlff-distill run silicon -o {project}` "
              "first (this benchmark needs its data). Nothing measured.")
        return 0
    recipe = yaml.safe_load((project / "recipe.yaml").read_text())
    name = recipe.get("name", project.name)
    tcfg = dict(recipe.get("training") or {})
    sets = {"teacher MD": _heldout_md(project, recipe, args.min_frames), "test split": _test_split_frames(project)}
    work = project / "learning_curves"
    train_h5 = project / "data" / "train.h5"

    vs_data = []
    for frac in args.fractions:
        data = train_h5 if frac >= 1.0 else work / f"train_{frac:g}.h5"
        n = _subset(train_h5, frac, args.seed, data) if frac < 1.0 else None
        if n is None:
            from mlff_distiller.data.store import DatasetReader

            with DatasetReader(train_h5) as r:
                n = len(r)
        # the whole split at the data curve's budget is also a point of the steps curve: train it once
        run_dir = work / (f"steps_{args.data_steps}" if frac >= 1.0 else f"data_{frac:g}")
        ckpt, wall = _train(data, tcfg, args.data_steps, run_dir)
        vs_data.append({"structures": n, "fraction": frac, "steps": args.data_steps, "train_s": wall,
                        "scores": _score(ckpt, sets)})
        print(f"data {frac:g} ({n} structures): {vs_data[-1]['scores']['teacher MD']['metrics']['force_rel_rmse']:.3f}",
              flush=True)
    vs_steps = []
    for steps in args.steps:
        ckpt, wall = _train(train_h5, tcfg, steps, work / f"steps_{steps}")
        vs_steps.append({"steps": steps, "train_s": wall, "scores": _score(ckpt, sets)})
        print(f"steps {steps}: {vs_steps[-1]['scores']['teacher MD']['metrics']['force_rel_rmse']:.3f}", flush=True)

    from mlff_distiller.bench.report import cpu_model

    result = {
        "recipe": name,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "heldout_sizes": {k: len(v) for k, v in sets.items()},
        "vs_data": _curve(vs_data, sets),
        "vs_steps": _curve(vs_steps, sets),
        "training": tcfg,
    }
    stem = RESULTS / f"learning_curves_{name}"
    save(stem, result, _markdown(result), indent=2, default=float)
    print(f"wrote {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
