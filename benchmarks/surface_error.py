"""Where a slab's held-out force error sits: surface atoms or the interior.

Reads the cached held-out teacher-MD frames of slab runs (``NAME.extxyz`` files of a
``bench.heldout`` cache whose name contains ``--match``, e.g. ``si-slab@600K``) and scores
each student on them. Atoms within ``--depth`` A of the slab's top or bottom atom (along z,
the slab normal of the bench's slabs) count as surface, the rest as interior. Per run and
student: force RMSE / teacher force RMS of each part, the part's share of the squared force
error and of the teacher's squared forces.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/surface_error.py --cache CACHE_DIR
--out benchmarks/results/NAME NAME1=RUN1 NAME2=RUN2 ...`` (writes NAME.md and NAME.json).
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


def split_error(f_ref: np.ndarray, f_pred: np.ndarray, surface: np.ndarray) -> dict:
    """Squared force error and squared teacher force summed over the surface atoms and the rest."""
    d2 = ((f_pred - f_ref) ** 2).sum(1)
    r2 = (f_ref ** 2).sum(1)
    return {"se_surface": float(d2[surface].sum()), "sr_surface": float(r2[surface].sum()),
            "se_interior": float(d2[~surface].sum()), "sr_interior": float(r2[~surface].sum())}


def surface_mask(positions: np.ndarray, depth: float) -> np.ndarray:
    """Atoms within ``depth`` A of the highest or lowest atom along z."""
    z = positions[:, 2]
    return (z > z.max() - depth) | (z < z.min() + depth)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("students", nargs="+", help="NAME=CHECKPOINT_OR_RUN_DIR")
    ap.add_argument("--cache", required=True, help="folder of cached held-out frames (bench.heldout cache)")
    ap.add_argument("--match", default="slab", help="score the runs whose name contains this (default: slab)")
    ap.add_argument("--depth", type=float, default=2.5, help="surface depth in A (default 2.5)")
    ap.add_argument("--out", required=True, help="output path without suffix (.md and .json are written)")
    args = ap.parse_args(argv)
    if args.depth <= 0:
        raise SystemExit(f"--depth {args.depth}: give a positive depth in A, e.g. 2.5")
    files = sorted(p for p in Path(args.cache).glob("*.extxyz") if args.match in p.stem)
    if not files:
        raise SystemExit(f"no cached runs matching {args.match!r} in {args.cache}: check --cache and --match")

    import torch
    from ase.io import read

    from mlff_distiller.bench.models import resolve_student

    torch.set_num_threads(1)
    runs = {}
    for p in files:
        with open(p) as fh:  # a handle: ASE reads '@' in a file name as an index
            runs[p.stem] = read(fh, index=":", format="extxyz")
    result = {"cache": str(args.cache), "depth_A": args.depth, "runs": list(runs), "students": {},
              "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    for spec in args.students:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"student {spec!r}: write NAME=CHECKPOINT")
        calc = resolve_student(path).make_calculator()
        per_run = {}
        for key, frames in runs.items():
            tot = dict.fromkeys(("se_surface", "sr_surface", "se_interior", "sr_interior"), 0.0)
            n_surface = 0
            for f in frames:
                work = f.copy()
                work.calc = calc
                mask = surface_mask(f.positions, args.depth)
                n_surface += int(mask.sum())
                for k, v in split_error(np.asarray(f.arrays["forces_ref"]), work.get_forces(), mask).items():
                    tot[k] += v
            se, sr = tot["se_surface"] + tot["se_interior"], tot["sr_surface"] + tot["sr_interior"]
            per_run[key] = {
                "n_frames": len(frames), "surface_atoms_per_frame": n_surface / len(frames),
                "force_rel_rmse_surface": float(np.sqrt(tot["se_surface"] / tot["sr_surface"])),
                "force_rel_rmse_interior": float(np.sqrt(tot["se_interior"] / tot["sr_interior"])),
                "force_rel_rmse": float(np.sqrt(se / sr)),
                "surface_share_of_squared_error": tot["se_surface"] / se,
                "surface_share_of_squared_force": tot["sr_surface"] / sr,
            }
        result["students"][name] = {"checkpoint": path, "per_run": per_run}
    save(args.out, result, _markdown(result), echo=True)
    return 0


def _markdown(r: dict) -> str:
    lines = [f"# Slab force error: surface atoms against the interior (`{r['cache']}`)", "",
             f"Surface: atoms within {r['depth_A']:g} A of the top or bottom atom along z. Force RMSE / teacher "
             f"force RMS of each part; shares are of the squared force error and of the teacher's squared "
             f"forces. {r['machine']}, 1 thread, {r['date_utc']} UTC.", "",
             "| student | run | frames | surface atoms | surface | interior | all | surface share of error "
             "| surface share of force^2 |", "|---|---|---|---|---|---|---|---|---|"]
    for name, s in r["students"].items():
        for key, m in s["per_run"].items():
            lines.append(f"| {name} | {key} | {m['n_frames']} | {m['surface_atoms_per_frame']:.1f} "
                         f"| {m['force_rel_rmse_surface']:.3f} | {m['force_rel_rmse_interior']:.3f} "
                         f"| {m['force_rel_rmse']:.3f} | {m['surface_share_of_squared_error']:.2f} "
                         f"| {m['surface_share_of_squared_force']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
