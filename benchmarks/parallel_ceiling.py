"""The machine's own 1 -> 2 process ceiling for teacher work: no Dask, no scheduling, no pool.

A control for ``generation_workers.py`` (issue: generation should scale >= 1.6x from 1 to 2
Dask workers). Each process builds the teacher once (single math thread) and then makes
``--calls`` energy + forces calls on the same structure (rattled diamond Si, ``--atoms``
atoms, a fresh rattle per call so that no result is cached). One round runs the calls in:

* ``1 process``: one process makes ``2 x calls`` calls;
* ``2 processes``: two processes started together make ``calls`` calls each.

The ratio is time(1 process) / time(2 processes) over the calls only (teacher build and start-up
excluded: each process reports the span of its own call loop, and the 2-process span runs from
the earlier start to the later end). With perfect scaling it is 2.0; what two independent
single-thread loops reach here bounds what any 2-worker scheduler can reach for the same work.
Writes ``benchmarks/results/parallel_ceiling.{md,json}``; machine, CPU count and load average
(before and after) are recorded, since other processes on a shared machine change the ratio.

    OMP_NUM_THREADS=1 python benchmarks/parallel_ceiling.py                 # CHGNet, Si-64
    OMP_NUM_THREADS=1 python benchmarks/parallel_ceiling.py --atoms 216 --rounds 3

Units: seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from _results import save  # noqa: E402  (benchmarks/_results.py)

RESULTS = Path(__file__).resolve().parent / "results"


def _loop(teacher: str, atoms_n: int, calls: int, seed: int) -> dict:
    """One process's call loop: build the teacher, then time ``calls`` energy + force calls."""
    import numpy as np
    import torch
    from ase.build import bulk

    from mlff_distiller.bench.models import resolve_teacher

    torch.set_num_threads(1)
    reps = round((atoms_n / 8) ** (1 / 3))
    base = bulk("Si", "diamond", a=5.43, cubic=True).repeat(reps)
    calc = resolve_teacher(teacher).make_calculator()
    rng = np.random.default_rng(seed)
    atoms = base.copy()
    atoms.calc = calc
    atoms.positions = base.positions + rng.normal(0, 0.05, base.positions.shape)
    atoms.get_forces()  # warm-up, outside the timed span
    t0 = time.time()
    for _ in range(calls):
        atoms.positions = base.positions + rng.normal(0, 0.05, base.positions.shape)
        atoms.get_potential_energy()
        atoms.get_forces()
    t1 = time.time()
    return {"start": t0, "end": t1, "calls": calls, "n_atoms": len(atoms)}


def _spawn(args, calls: int, seed: int) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--child", "--teacher", args.teacher, "--atoms", str(args.atoms),
           "--calls", str(calls), "--seed", str(seed)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def _collect(procs) -> list[dict]:
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a child process failed (exit {p.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="chgnet", help="teacher name (default chgnet)")
    ap.add_argument("--atoms", type=int, default=64, help="atoms of the diamond Si cell (8 n^3; default 64)")
    ap.add_argument("--calls", type=int, default=100, help="calls per process in the 2-process run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tag", default="parallel_ceiling")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_loop(args.teacher, args.atoms, args.calls, args.seed)), flush=True)
        return 0

    if args.rounds < 1 or args.calls < 1 or args.atoms < 8:
        ap.error("--rounds and --calls must be >= 1 and --atoms >= 8 (one diamond cell)")
    load0 = os.getloadavg()
    rounds = []
    for r in range(args.rounds):
        (one,) = _collect([_spawn(args, 2 * args.calls, 100 + r)])
        two = _collect([_spawn(args, args.calls, 200 + r), _spawn(args, args.calls, 300 + r)])
        t1 = one["end"] - one["start"]
        t2 = max(c["end"] for c in two) - min(c["start"] for c in two)
        overlap = min(c["end"] for c in two) - max(c["start"] for c in two)
        rounds.append({"one_process_s": round(t1, 2), "two_processes_s": round(t2, 2),
                       "overlap_s": round(overlap, 2), "ratio": round(t1 / t2, 3),
                       "per_call_ms_one": round(1000 * t1 / (2 * args.calls), 1),
                       "per_call_ms_two": [round(1000 * (c["end"] - c["start"]) / c["calls"], 1) for c in two]})
        print(f"round {r + 1}: 1 process {t1:.1f} s, 2 processes {t2:.1f} s -> {t1 / t2:.3f}x", flush=True)
    load1 = os.getloadavg()
    median = statistics.median(r["ratio"] for r in rounds)
    result = {
        "teacher": args.teacher, "n_atoms": one["n_atoms"], "calls_total": 2 * args.calls,
        "rounds": rounds, "median_ratio": median,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(), "load_before": [round(x, 2) for x in load0],
        "load_after": [round(x, 2) for x in load1],
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
    }
    lines = [
        "# The machine's 1 -> 2 process ceiling for teacher calls",
        "",
        f"Machine: {result['machine']}, Python {result['python']}, 1 math thread per process, "
        f"{result['date_utc']} UTC; "
        f"load average before {result['load_before'][0]}, after {result['load_after'][0]}. "
        f"Teacher `{args.teacher}`, rattled diamond Si of {result['n_atoms']} atoms, {2 * args.calls} energy + force "
        "calls per run: one process makes all of them, or two processes started together make half each. "
        "Times exclude start-up and the teacher build. Produced by `OMP_NUM_THREADS=1 python "
        "benchmarks/parallel_ceiling.py`.",
        "",
        "| round | 1 process s | 2 processes s | overlap s | ratio | ms/call, 1 process | ms/call, each of 2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rounds, 1):
        lines.append(f"| {i} | {r['one_process_s']} | {r['two_processes_s']} | {r['overlap_s']} | {r['ratio']} | "
                     f"{r['per_call_ms_one']} | {', '.join(map(str, r['per_call_ms_two']))} |")
    lines += ["", f"**Median ratio: {median:.3f}x** (2.0 = perfect). Two independent single-thread loops of the "
              "same teacher calls reach this here; a 2-worker generation or labeling run does the same calls plus "
              "scheduling, so it cannot exceed it on this machine."]
    save(RESULTS / args.tag, result, "\n".join(lines), echo=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
