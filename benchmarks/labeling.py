"""Labeling throughput: the Dask pipeline against a bare loop over the same teacher.

Measures, with a single-threaded teacher (CHGNet by default, offline):

* pipeline (1 worker) / bare loop  -- overhead of chunking, transport, shard commits (goal >= 0.90)
* pipeline 2 workers / 1 worker    -- parallel scaling (goal >= 1.8x on 2 free cores)
* samples per hour (2 workers)     -- against the seed's > 1,000/h

The three are interleaved over ``--rounds`` rounds; ratios are taken within a round (its
runs are seconds apart and share the machine's load) and the median over rounds is
reported. Throughput counts the labelling phase (first chunk submitted to last chunk
committed); cluster start-up and teacher loading are reported separately, as is the
workers' utilisation (time inside labelling tasks / labelling wall time), which isolates the
pipeline's own idle time from how fast the teacher runs. Writes
``benchmarks/results/labeling.{md,json}``.

    OMP_NUM_THREADS=1 python benchmarks/labeling.py [--cases chgnet:si64:24:4,emt:cu108:40:4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

RESULTS = Path(__file__).resolve().parent / "results"

from _results import save  # noqa: E402  (benchmarks/_results.py)

from mlff_distiller.bench.report import cpu_model  # noqa: E402  (one definition, shared)


def make_pool(path: Path, n: int, system: str):
    import numpy as np
    from ase.build import bulk

    from mlff_distiller.data.store import DatasetWriter

    atoms = []
    for k in range(n):
        if system == "si64":
            a = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 2))
        elif system == "cu108":
            a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
        else:  # cu32
            a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
        a.rattle(0.04, seed=k)
        a.info["provenance"] = {"source": f"bulk:{system}", "sampler": "rattle", "params": {"stdev": 0.04},
                                "parent": -1, "group": "g0", "seed": k, "teacher": ""}
        atoms.append(a)
    with DatasetWriter(path, label_fields=()) as w:
        w.append(atoms)
    return atoms, np


def bare_loop(teacher, atoms, chunk: int) -> float:
    """Structures per second of ``teacher.label`` called chunk by chunk in this process."""
    t0 = time.perf_counter()
    for s in range(0, len(atoms), chunk):
        res = teacher.label(atoms[s : s + chunk])
        assert all(r.ok for r in res)
    return len(atoms) / (time.perf_counter() - t0)


def pipeline(pool: Path, spec, client, chunk: int, workdir: Path, tag: str) -> tuple[float, float, float]:
    from mlff_distiller.labeling import label_pool

    out = workdir / f"{tag}.h5"
    if out.exists():
        out.unlink()
    s = label_pool(pool, spec, out, scheduler=client, chunk_size=chunk, progress=False)
    assert s.labelled == s.n_pool, s
    return s.structures_per_second, s.seconds, s.worker_utilisation


def run_one(args) -> tuple[dict, list[str]]:

    import torch
    from distributed import Client

    from mlff_distiller.labeling.cluster import local_cluster
    from mlff_distiller.teachers import build_teacher

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-labeling-"))
    try:
        pool = tmp / "pool.h5"
        atoms, _ = make_pool(pool, args.n, args.system)
        warm_pool = tmp / "warm.h5"
        make_pool(warm_pool, 2 * args.chunk, args.system)
        spec = args.teacher
        t0 = time.perf_counter()
        teacher = build_teacher(spec)
        load_s = time.perf_counter() - t0
        teacher.label(atoms[:2])  # warm-up

        clusters = {}
        startup = {}
        for nw in (1, 2):
            t0 = time.perf_counter()
            cl = local_cluster(nw, 1)  # the cluster label_pool starts by default
            c = Client(cl, set_as_default=False)
            c.wait_for_workers(nw)
            startup[nw] = time.perf_counter() - t0
            clusters[nw] = (cl, c)
            # first run builds the teacher on the workers (not timed as throughput)
            pipeline(warm_pool, spec, c, args.chunk, tmp, f"warm{nw}")

        rates = {"bare": [], "pipe1": [], "pipe2": []}
        walls = {"pipe1": [], "pipe2": []}
        util = {"pipe1": [], "pipe2": []}
        load_before = os.getloadavg()
        for r in range(args.rounds):
            rates["bare"].append(bare_loop(teacher, atoms, args.chunk))
            for nw in (1, 2):
                rate, wall, busy = pipeline(pool, spec, clusters[nw][1], args.chunk, tmp, f"p{nw}-{r}")
                rates[f"pipe{nw}"].append(rate)
                walls[f"pipe{nw}"].append(wall)
                util[f"pipe{nw}"].append(busy)
            print(f"round {r + 1}: bare {rates['bare'][-1]:.2f}/s, 1 worker {rates['pipe1'][-1]:.2f}/s, "
                  f"2 workers {rates['pipe2'][-1]:.2f}/s", flush=True)
        load_after = os.getloadavg()
        for cl, c in clusters.values():
            c.close()
            cl.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    best = {k: max(v) for k, v in rates.items()}
    med = {k: statistics.median(v) for k, v in rates.items()}
    # Ratios within each round (the runs of one round are seconds apart, so they share the
    # machine's load), then the median over rounds.
    eff = statistics.median(p / b for p, b in zip(rates["pipe1"], rates["bare"]))
    scale = statistics.median(p2 / p1 for p2, p1 in zip(rates["pipe2"], rates["pipe1"]))
    per_hour = med["pipe2"] * 3600
    rows = [
        ("pipeline (1 worker) / bare loop", f"{eff:.2f}", ">= 0.90", eff >= 0.90),
        ("2 workers / 1 worker", f"{scale:.2f}x", ">= 1.8x", scale >= 1.8),
        ("samples per hour, 2 workers (median)", f"{per_hour:,.0f}", "> 1,000", per_hour > 1000),
    ]
    machine = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads_per_teacher": 1,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
    }
    result = {
        "teacher": teacher.fingerprint_id,
        "system": args.system,
        "n_structures": args.n,
        "chunk_size": args.chunk,
        "rounds": args.rounds,
        "rates_structures_per_s": rates,
        "best": best,
        "median": med,
        "pipeline_over_bare": eff,
        "two_over_one_worker": scale,
        "samples_per_hour_2_workers": per_hour,
        "teacher_load_s_in_process": load_s,
        "cluster_startup_s": startup,
        "pipeline_wall_s_incl_probe_and_merge": walls,
        "worker_utilisation": util,
        "machine": machine,
    }
    lines = [
        f"## {args.teacher} on {args.system}",
        "",
        f"Teacher `{teacher.fingerprint_id}`, {args.n} structures ({args.system}), chunk {args.chunk}, "
        f"1 math thread per teacher, {args.rounds} interleaved rounds; ratios are taken within each round, "
        "then the median over rounds.",
        "",
        "| measure | value | goal | met |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {'yes' if d else 'no'} |" for a, b, c, d in rows],
        "",
        "| run | best structures/s | median structures/s |",
        "|---|---|---|",
        f"| bare loop (in process) | {best['bare']:.2f} | {med['bare']:.2f} |",
        f"| pipeline, 1 worker | {best['pipe1']:.2f} | {med['pipe1']:.2f} |",
        f"| pipeline, 2 workers | {best['pipe2']:.2f} | {med['pipe2']:.2f} |",
        "",
        "Worker utilisation (time a worker spent inside a labelling task / labelling wall time, "
        f"per worker; 1.0 = never idle): 1 worker {statistics.median(util['pipe1']):.2f}, 2 workers "
        f"{statistics.median(util['pipe2']):.2f} (median).",
        "",
        f"Cluster start-up: 1 worker {startup[1]:.1f} s, 2 workers {startup[2]:.1f} s; teacher load in "
        f"process {load_s:.1f} s (neither is in the throughput).",
        "",
        f"Machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs shared with other jobs "
        f"(load average {machine['loadavg_before'][0]} before, {machine['loadavg_after'][0]} after), "
        f"torch {machine['torch']}, Python {machine['python']}, {machine['date_utc']}.",
        "",
    ]
    print("\n".join(lines), flush=True)
    return result, lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="chgnet:si64:24:4,emt:cu108:40:4",
                    help="comma-separated TEACHER:SYSTEM:N:CHUNK (systems: si64, cu32, cu108)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tag", default="labeling", help="result file stem under benchmarks/results/")
    args = ap.parse_args(argv)
    results, lines = [], ["# Labeling throughput (`benchmarks/labeling.py`)", ""]
    for case in args.cases.split(","):
        teacher, system, n, chunk = case.split(":")
        one = argparse.Namespace(teacher=teacher, system=system, n=int(n), chunk=int(chunk), rounds=args.rounds)
        res, ls = run_one(one)
        results.append(res)
        lines += ls
    save(RESULTS / args.tag, results, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
