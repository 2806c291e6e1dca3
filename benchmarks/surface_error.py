"""Where the held-out force error sits: surface atoms or the interior of slabs, or atoms out of
their crystal coordination (a melting or defective cell) against the rest.

Reads the cached held-out teacher-MD frames (``NAME.extxyz`` files of a ``bench.heldout``
cache whose name contains ``--match``, e.g. ``si-slab@600K``) and scores each student on them.
Two ways to split the atoms of each frame:

- ``--split surface`` (default; runs matching ``slab``): atoms within ``--depth`` A of the
  slab's top or bottom atom (along z, the slab normal of the bench's slabs) against the interior.
- ``--split coordination`` (all runs): atoms with other than ``--fold`` neighbours within
  ``--bond`` A (default 4 within 2.75 A, the diamond-silicon shell) against the ``--fold``-fold
  ones. Each run also gets its phase at a glance: the ``--fold``-fold fraction in its first and
  last frame and the mean-square displacement of the last frame from the first (A^2; growing
  with time in a liquid, flat in a solid).

Per run and student: force RMSE / teacher force RMS of each part, the part's share of the
squared force error and of the teacher's squared forces.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/surface_error.py --cache CACHE_DIR
--out benchmarks/results/NAME [--split coordination] NAME1=RUN1 NAME2=RUN2 ...`` (writes
NAME.md and NAME.json). Units: A, eV/A.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
from pathlib import Path

import numpy as np
from _results import save  # noqa: E402  (benchmarks/_results.py)

SURFACE = ("surface", "interior")  # the two classes of --split surface: (the masked atoms, the rest)


def class_names(split: str, fold: int) -> tuple[str, str]:
    """The two classes of atoms of a split: (the masked atoms, the rest)."""
    return SURFACE if split == "surface" else (f"not_{fold}fold", f"{fold}fold")


def split_error(f_ref: np.ndarray, f_pred: np.ndarray, mask: np.ndarray,
                names: tuple[str, str] = SURFACE) -> dict:
    """Squared force error (``se_``) and squared teacher force (``sr_``) summed over the masked
    atoms (``names[0]``) and the rest (``names[1]``)."""
    d2 = ((f_pred - f_ref) ** 2).sum(1)
    r2 = (f_ref ** 2).sum(1)
    a, b = names
    return {f"se_{a}": float(d2[mask].sum()), f"sr_{a}": float(r2[mask].sum()),
            f"se_{b}": float(d2[~mask].sum()), f"sr_{b}": float(r2[~mask].sum())}


def coordination(atoms, bond: float) -> np.ndarray:
    """Neighbours of each atom within ``bond`` A (periodic images included)."""
    from ase.neighborlist import neighbor_list

    return np.bincount(neighbor_list("i", atoms, bond), minlength=len(atoms))


def phase(frames, bond: float, fold: int) -> dict:
    """The ``fold``-fold fraction of the first and last frame, and the last frame's mean-square
    displacement from the first (unwrapped MD positions, A^2)."""
    first, last = frames[0], frames[-1]
    return {"fold_fraction_first": float(np.mean(coordination(first, bond) == fold)),
            "fold_fraction_last": float(np.mean(coordination(last, bond) == fold)),
            "msd_last_A2": float(((last.positions - first.positions) ** 2).sum(1).mean())}


def surface_mask(positions: np.ndarray, depth: float) -> np.ndarray:
    """Atoms within ``depth`` A of the highest or lowest atom along z."""
    z = positions[:, 2]
    return (z > z.max() - depth) | (z < z.min() + depth)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("students", nargs="+", help="NAME=CHECKPOINT_OR_RUN_DIR")
    ap.add_argument("--cache", required=True, help="folder of cached held-out frames (bench.heldout cache)")
    ap.add_argument("--split", choices=("coordination", "surface"), default="surface", help="how to split the atoms")
    ap.add_argument("--match", default=None,
                    help="score the runs whose name contains this (default: slab for --split surface, else all)")
    ap.add_argument("--depth", type=float, default=2.5, help="surface depth in A (default 2.5)")
    ap.add_argument("--bond", type=float, default=2.75, help="neighbour distance in A for --split coordination")
    ap.add_argument("--fold", type=int, default=4, help="the crystal's coordination for --split coordination")
    ap.add_argument("--out", required=True, help="output path without suffix (.md and .json are written)")
    args = ap.parse_args(argv)
    if args.depth <= 0:
        raise SystemExit(f"--depth {args.depth}: give a positive depth in A, e.g. 2.5")
    if args.bond <= 0 or args.fold < 1:
        raise SystemExit(f"--bond {args.bond} --fold {args.fold}: give a positive distance in A and a "
                         "coordination >= 1, e.g. --bond 2.75 --fold 4")
    if args.match is None:
        args.match = "slab" if args.split == "surface" else ""
    files = sorted(p for p in Path(args.cache).glob("*.extxyz") if args.match in p.stem)
    if not files:
        raise SystemExit(f"no cached runs matching {args.match!r} in {args.cache}: check --cache and --match")

    import torch

    from mlff_distiller.bench.heldout import read_frames
    from mlff_distiller.bench.models import resolve_student

    torch.set_num_threads(1)
    runs = {}
    for p in files:
        runs[p.stem] = read_frames(p)
    names = class_names(args.split, args.fold)

    def mask_of(f):
        if args.split == "surface":
            return surface_mask(f.positions, args.depth)
        return coordination(f, args.bond) != args.fold

    a, b = names
    result = {"cache": str(args.cache), "split": args.split, "classes": list(names), "depth_A": args.depth,
              "bond_A": args.bond, "fold": args.fold, "runs": list(runs), "students": {},
              "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    if args.split == "coordination":
        result["phase"] = {key: phase(frames, args.bond, args.fold) for key, frames in runs.items()}
    masks = {key: [mask_of(f) for f in frames] for key, frames in runs.items()}
    for spec in args.students:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"student {spec!r}: write NAME=CHECKPOINT")
        calc = resolve_student(path).make_calculator()
        per_run = {}
        for key, frames in runs.items():
            tot = dict.fromkeys((f"se_{a}", f"sr_{a}", f"se_{b}", f"sr_{b}"), 0.0)
            n_a = 0
            for f, mask in zip(frames, masks[key]):
                work = f.copy()
                work.calc = calc
                n_a += int(mask.sum())
                for k, v in split_error(np.asarray(f.arrays["forces_ref"]), work.get_forces(), mask, names).items():
                    tot[k] += v
            se, sr = tot[f"se_{a}"] + tot[f"se_{b}"], tot[f"sr_{a}"] + tot[f"sr_{b}"]
            per_run[key] = {
                "n_frames": len(frames), f"{a}_atoms_per_frame": n_a / len(frames),
                f"force_rel_rmse_{a}": float(np.sqrt(tot[f"se_{a}"] / tot[f"sr_{a}"])) if tot[f"sr_{a}"] else None,
                f"force_rel_rmse_{b}": float(np.sqrt(tot[f"se_{b}"] / tot[f"sr_{b}"])) if tot[f"sr_{b}"] else None,
                "force_rel_rmse": float(np.sqrt(se / sr)),
                f"{a}_share_of_squared_error": tot[f"se_{a}"] / se,
                f"{a}_share_of_squared_force": tot[f"sr_{a}"] / sr,
            }
        result["students"][name] = {"checkpoint": path, "per_run": per_run}
    save(args.out, result, _markdown(result), echo=True)
    return 0


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _markdown(r: dict) -> str:
    a, b = r.get("classes", SURFACE)
    if r.get("split", "surface") == "surface":
        title = "Slab force error: surface atoms against the interior"
        rule = f"Surface: atoms within {r['depth_A']:g} A of the top or bottom atom along z."
    else:
        title = f"Force error of atoms out of {r['fold']}-fold coordination against the {r['fold']}-fold ones"
        rule = (f"Coordination: neighbours within {r['bond_A']:g} A; `{a}` = atoms with other than "
                f"{r['fold']}, `{b}` = atoms with exactly {r['fold']}.")
    lines = [f"# {title} (`{r['cache']}`)", "",
             f"{rule} Force RMSE / teacher force RMS of each part; shares are of the squared force error "
             f"and of the teacher's squared forces. {r['machine']}, 1 thread, {r['date_utc']} UTC.", ""]
    if "phase" in r:
        lines += ["| run | " + f"{r['fold']}-fold fraction, first frame | last frame | MSD last vs first, A^2 |",
                  "|---|---|---|---|"]
        lines += [f"| {key} | {p['fold_fraction_first']:.2f} | {p['fold_fraction_last']:.2f} | {p['msd_last_A2']:.2f} |"
                  for key, p in r["phase"].items()]
        lines.append("")
    lines += [f"| student | run | frames | {a} atoms | {a} | {b} | all | {a} share of error "
              f"| {a} share of force^2 |", "|---|---|---|---|---|---|---|---|---|"]
    for name, s in r["students"].items():
        for key, m in s["per_run"].items():
            lines.append(f"| {name} | {key} | {m['n_frames']} | {m[f'{a}_atoms_per_frame']:.1f} "
                         f"| {_fmt(m[f'force_rel_rmse_{a}'])} | {_fmt(m[f'force_rel_rmse_{b}'])} "
                         f"| {m['force_rel_rmse']:.3f} | {m[f'{a}_share_of_squared_error']:.2f} "
                         f"| {m[f'{a}_share_of_squared_force']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
