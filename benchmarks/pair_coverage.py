"""Where a student's worst force errors sit, and whether its training data covers those distances.

For held-out frames (a ``bench.heldout`` cache folder of ``<run>.extxyz`` files with the
teacher's ``forces_ref``) and one or more students:

* **per-atom force errors**: for each student, the atoms whose error |F_student - F_teacher|
  exceeds ``--threshold`` eV/A, counted per run, with the distances to their neighbours;
* **pair coverage**: the share of interatomic distances (all pairs within ``--rmax`` A, periodic
  images included) in each ``--bin`` A bin, in the training set and in each held-out run, and
  the same for the neighbours of the large-error atoms.

A student whose radial functions are unconstrained in a distance range the training data
leaves empty shows it here: its large-error atoms have neighbours in bins where the training
share is small and the held-out share is not.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pair_coverage.py TRAIN_H5 CACHE_DIR
NAME=CKPT [NAME=CKPT ...] --out benchmarks/results/NAME`` (writes NAME.md and NAME.json).
Units: A, eV/A.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
from pathlib import Path

import numpy as np
from _results import save  # noqa: E402  (benchmarks/_results.py)


def _pairs(atoms, rmax: float) -> np.ndarray:
    from ase.neighborlist import neighbor_list

    return neighbor_list("d", atoms, rmax)


def _frames(cache: Path) -> dict:
    from mlff_distiller.bench.heldout import read_frames

    return {path.stem: read_frames(path) for path in sorted(cache.glob("*.extxyz"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train_h5")
    ap.add_argument("cache", help="folder of held-out <run>.extxyz frames with forces_ref")
    ap.add_argument("students", nargs="+", help="NAME=CHECKPOINT")
    ap.add_argument("--threshold", type=float, default=3.0, help="per-atom force error counted as large, eV/A")
    ap.add_argument("--rmax", type=float, default=5.0)
    ap.add_argument("--bin", type=float, default=0.2)
    ap.add_argument("--added", help="a dataset added to the training set of some student (its pairs get a column)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch

    from mlff_distiller.data.store import DatasetReader
    from mlff_distiller.student import StudentCalculator

    torch.set_num_threads(1)
    edges = np.arange(0.0, args.rmax + 1e-9, args.bin)

    def share(d):
        h = np.histogram(d, bins=edges)[0].astype(float)
        return (h / max(h.sum(), 1.0)).tolist()

    by_sampler: dict = {}  # training pairs per sampler (and MD temperature) of the provenance
    with DatasetReader(args.train_h5) as r:
        for i in range(len(r)):
            prov = r.provenance(i) or {}
            temp = (prov.get("params") or {}).get("T")
            key = f"{prov.get('sampler', '?')}" + (f" {temp:g} K" if isinstance(temp, (int, float)) else "")
            by_sampler.setdefault(key, []).append(_pairs(r.get_atoms(i), args.rmax))
    train = np.concatenate([d for v in by_sampler.values() for d in v])
    runs = _frames(Path(args.cache))
    added = None
    if args.added:
        with DatasetReader(args.added) as r:
            added = np.concatenate([_pairs(r.get_atoms(i), args.rmax) for i in range(len(r))])
    result = {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 thread",
        "train_h5": args.train_h5, "cache": args.cache, "threshold_eV_per_A": args.threshold,
        "bin_edges_A": edges.tolist(), "train_share": share(train),
        "heldout_share": {k: share(np.concatenate([_pairs(a, args.rmax) for a in v])) for k, v in runs.items()},
        "added": args.added, "added_share": share(added) if added is not None else None,
        "train_share_by_sampler": {k: {"structures": len(v), "share": share(np.concatenate(v))}
                                   for k, v in sorted(by_sampler.items())},
        "students": {},
    }
    for spec in args.students:
        name, _, path = spec.partition("=")
        calc = StudentCalculator(path)
        per_run, neighbours, worst = {}, [], 0.0
        for run, frames in runs.items():
            n_big = 0
            for a in frames:
                b = a.copy()
                b.calc = calc
                err = np.linalg.norm(b.get_forces() - a.arrays["forces_ref"], axis=1)
                worst = max(worst, float(err.max()))
                big = np.flatnonzero(err > args.threshold)
                n_big += len(big)
                for j in big:
                    d = a.get_distances(j, range(len(a)), mic=True)
                    neighbours.append(d[(d > 0) & (d < args.rmax)])
            per_run[run] = n_big
        result["students"][name] = {
            "checkpoint": path, "large_error_atoms": per_run, "max_atom_error_eV_per_A": worst,
            "large_error_neighbour_share": share(np.concatenate(neighbours)) if neighbours else None,
        }
        print(f"{name}: {sum(per_run.values())} atoms above {args.threshold} eV/A; worst {worst:.2f}", flush=True)
    save(args.out, result, markdown(result), echo=True)
    return 0


def markdown(res: dict) -> str:
    th = res["threshold_eV_per_A"]
    lines = [
        "# Large per-atom force errors and the training set's pair coverage",
        "",
        f"{res['machine']}, {res['date_utc']} UTC. Training set `{res['train_h5']}`; held-out frames "
        f"`{res['cache']}`. Large error: |F_student - F_teacher| > {th} eV/A on one atom.",
        "",
        "| student | worst atom error eV/A | " + " | ".join(f"atoms > {th} eV/A, {k}" for k in
                                                          next(iter(res["students"].values()))["large_error_atoms"])
        + " |",
        "|---|---|" + "---|" * len(next(iter(res["students"].values()))["large_error_atoms"]),
    ]
    for name, s in res["students"].items():
        lines.append(f"| {name} | {s['max_atom_error_eV_per_A']:.2f} | "
                     + " | ".join(str(v) for v in s["large_error_atoms"].values()) + " |")
    edges = res["bin_edges_A"]
    extra = [res["added_share"]] if res.get("added_share") else []
    cols = ["training set"] + ["added set"] * len(extra) + list(res["heldout_share"]) + [
        f"neighbours of large-error atoms ({n})" for n, s in res["students"].items()
        if s["large_error_neighbour_share"]]
    lines += ["", "Share of pairs per distance bin, per mil (pairs within the last edge, periodic images included):",
              "", "| r (A) | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    series = [res["train_share"]] + extra + list(res["heldout_share"].values()) + [
        s["large_error_neighbour_share"] for s in res["students"].values() if s["large_error_neighbour_share"]]
    for k in range(len(edges) - 1):
        if edges[k] < 1.8:
            continue
        lines.append(f"| {edges[k]:.1f}-{edges[k + 1]:.1f} | " + " | ".join(f"{1e3 * v[k]:.1f}" for v in series) + " |")
    samplers = res["train_share_by_sampler"]
    lines += ["", "Training pairs per distance bin by sampler, per mil:", "",
              "| r (A) | " + " | ".join(f"{k} ({v['structures']})" for k, v in samplers.items()) + " |",
              "|---|" + "---|" * len(samplers)]
    for k in range(len(edges) - 1):
        if 2.4 <= edges[k] < 3.4:
            lines.append(f"| {edges[k]:.1f}-{edges[k + 1]:.1f} | "
                         + " | ".join(f"{1e3 * v['share'][k]:.1f}" for v in samplers.values()) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
