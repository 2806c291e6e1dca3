"""Generation wall time on 1 and 2 workers: the same recipe, tier and seed, 1 math thread per worker.

``workers 1`` is generation in this process (no Dask, the default of ``mlff-distill generate``);
``workers N`` > 1 runs the roots on a local Dask cluster of N single-threaded worker processes
(``mlff-distill generate --workers N``). Reported per run: the wall time of the whole
``generate()`` call (cluster start-up and the workers' teacher builds included) and the sampling
time (the sum of the per-entry times, from the first root asked for to the entry being full).
The ratio is wall(1 worker) / wall(N workers) within a round; the median over ``--rounds`` is
printed. Every run's pool must be identical to the first one's (positions and provenance,
structure by structure): the benchmark fails otherwise. Machine, CPU count and load average
(before and after) are written with the results, since other processes on a shared machine
change the ratio. Writes ``benchmarks/results/<tag>.{md,json}`` (default tag
``generation_workers``).

    OMP_NUM_THREADS=1 python benchmarks/generation_workers.py                       # seed-m2, 1k, CHGNet
    OMP_NUM_THREADS=1 python benchmarks/generation_workers.py --recipe quickstart --tier 1k
    OMP_NUM_THREADS=1 python benchmarks/generation_workers.py --recipe tiny --tag generation_workers_tiny  # seconds

Units: seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _results import save  # noqa: E402  (benchmarks/_results.py)

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    from mlff_distiller.bench.report import cpu_model

    info = {"cpu": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "threads_per_worker": 1, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
    return info


def one_thread() -> None:
    """The in-process run gets the same single math thread as each worker."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def read_pool(path: Path) -> tuple[list, list]:
    from mlff_distiller.data.store import DatasetReader

    r = DatasetReader(path)
    try:
        return [r.get_atoms(i).positions for i in range(len(r))], [r.provenance(i) for i in range(len(r))]
    finally:
        r.close()


def same_pool(a: tuple[list, list], b: tuple[list, list]) -> bool:
    return a[1] == b[1] and len(a[0]) == len(b[0]) and all(np.array_equal(x, y) for x, y in zip(a[0], b[0]))


def run_once(recipe: dict, tier: str | None, workers: int, out: Path) -> dict:
    from mlff_distiller.generation import generate

    one_thread()
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    summary = generate(recipe, out, tier=tier, progress=False, overwrite=True, workers=workers, threads_per_worker=1)
    wall = time.perf_counter() - t0
    return {"workers": workers, "wall_s": wall, "sampling_s": sum(st["seconds"] for st in summary["entries"]),
            "n_structures": summary["n_structures"], "requested": summary["requested"], "load_before": load,
            "load_after": os.getloadavg()[0], "roots": summary["roots"]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="seed-m2", help="built-in recipe name or YAML path (default seed-m2)")
    p.add_argument("--tier", default=None, help="tier of the recipe (default: its default tier, 1k for seed-m2)")
    p.add_argument("--teacher", default=None, help="override the recipe's teacher spec (a name or JSON mapping)")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2; the first is "
                   "the baseline of the ratio)")
    p.add_argument("--rounds", type=int, default=1, help="rounds of all worker counts (default 1)")
    p.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    p.add_argument("--tag", default="generation_workers", help="results file name (default generation_workers)")
    return p.parse_args(argv)


def load(args) -> dict:
    from mlff_distiller.generation import load_recipe

    recipe = dict(load_recipe(args.recipe))
    if args.teacher:
        text = args.teacher.strip()
        recipe["teacher"] = json.loads(text) if text.startswith("{") else text
    if args.seed is not None:
        recipe["seed"] = int(args.seed)
    return recipe


def report(args, recipe: dict, runs: list[dict], ratios: list[float], info: dict) -> list[str]:
    counts = [int(w) for w in args.workers.split(",")]
    lines = [f"# Generation on workers: recipe {recipe.get('name', args.recipe)}, tier {args.tier or 'default'}, "
             f"teacher {json.dumps(recipe.get('teacher'))}", "",
             f"Machine: {info['cpu']}, {info['cpus']} CPUs, python {info['python']}"
             + (f", torch {info['torch']}" if "torch" in info else "") + f"; {info['date']}; 1 math thread per worker.",
             "Workers 1 = in this process (no Dask); more = a local Dask cluster (start-up included in wall).",
             "Every run wrote the same pool (positions and provenance, structure by structure).", "",
             "Root s: the time run_root took on the roots the pool kept (taken) and on roots that finished",
             "but were not needed (discarded); cancelled roots (queued or running when their entry was full)",
             "are counted, their time is not known. Busy: taken root s / (wall s x workers).", "",
             "| round | workers | structures | wall s | sampling s | root s taken | discarded (roots, s) | cancelled "
             "| busy on taken roots | load avg before | after |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        use = run["roots"]
        busy = use["taken_s"] / (run["wall_s"] * run["workers"])
        lines.append(f"| {run['round']} | {run['workers']} | {run['n_structures']}/{run['requested']} | "
                     f"{run['wall_s']:.1f} | {run['sampling_s']:.1f} | {use['taken_s']:.1f} | "
                     f"{use['discarded']}, {use['discarded_s']:.1f} | {use['cancelled']} | {100 * busy:.1f} % | "
                     f"{run['load_before']:.2f} | {run['load_after']:.2f} |")
    by_rw = {(r["round"], r["workers"]): r for r in runs}
    for rnd in sorted({r["round"] for r in runs}):
        base, top = by_rw.get((rnd, counts[0])), by_rw.get((rnd, counts[-1]))
        if base and top and top is not base and base["roots"]["taken_s"] > 0:
            slow = top["roots"]["taken_s"] / base["roots"]["taken_s"]
            busy = top["roots"]["taken_s"] / (top["wall_s"] * top["workers"])
            busy1 = base["roots"]["taken_s"] / base["wall_s"]
            lines += ["", f"Round {rnd}: the same roots took {slow:.3f}x as long each on {counts[-1]} workers as on "
                      f"{counts[0]} (the cores slow each other); the workers spent {100 * busy:.1f} % of the wall "
                      f"time on roots the pool kept. Speed-up = {counts[-1]} x busy({counts[-1]}) / slow-down / "
                      f"busy({counts[0]}) = {counts[-1] * busy / slow / busy1:.2f}x."]
    if ratios:
        each = ", ".join(f"{r:.2f}" for r in ratios)
        lines += ["", f"Speed-up wall({counts[0]} worker) / wall({counts[-1]} workers): median "
                  f"{statistics.median(ratios):.2f}x over {len(ratios)} round(s) ({each})."]
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    tier = args.tier
    recipe = load(args)
    runs, ratios, first = [], [], None
    with tempfile.TemporaryDirectory(prefix="genworkers-") as tmp:
        for rnd in range(args.rounds):
            walls = {}
            for n in counts:
                out = Path(tmp) / f"pool_{n}.h5"
                run = {"round": rnd, **run_once(recipe, tier, n, out)}
                pool = read_pool(out)
                first = first or pool
                if not same_pool(first, pool):
                    print(f"error: the pool of {n} workers (round {rnd}) differs from the first run's", file=sys.stderr)
                    return 1
                runs.append(run)
                walls[n] = run["wall_s"]
                print(f"round {rnd}: {n} worker(s): {run['n_structures']} structures in {run['wall_s']:.1f} s "
                      f"(sampling {run['sampling_s']:.1f} s, load {run['load_before']:.2f})", flush=True)
            if len(counts) > 1:
                ratios.append(walls[counts[0]] / walls[counts[-1]])
                print(f"round {rnd}: speed-up {counts[0]} -> {counts[-1]} workers: {ratios[-1]:.2f}x", flush=True)
    info = machine()
    lines = report(args, recipe, runs, ratios, info)
    results = {"recipe": recipe.get("name", args.recipe), "tier": args.tier, "teacher": recipe.get("teacher"),
               "machine": info, "runs": runs, "ratios": ratios,
               "median_ratio": statistics.median(ratios) if ratios else None, "identical_pools": True}
    save(RESULTS / args.tag, results, "\n".join(lines), echo=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
