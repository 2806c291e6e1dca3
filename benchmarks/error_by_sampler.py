"""A student's force error on labelled datasets, grouped by how each structure was made.

For each student and each dataset file (e.g. the training file it was fit on, or an extra
labelled set), the structures are grouped by their provenance: sampler and, for MD samples,
temperature. Per group: structures and force RMSE / teacher force RMS. On training data this
tells underfitting (the student cannot represent what it was shown) from missing data.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/error_by_sampler.py --data A.h5 B.h5
--out benchmarks/results/NAME NAME1=RUN1 NAME2=RUN2 ...`` (writes NAME.md and NAME.json).
Units: eV/A.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
from collections import defaultdict
from pathlib import Path

import numpy as np
from _results import save  # noqa: E402  (benchmarks/_results.py)


def group_of(provenance: dict) -> str:
    """``sampler`` or ``sampler T K`` (MD samples carry their temperature ``T`` in params)."""
    temperature = (provenance.get("params") or {}).get("T")
    return provenance["sampler"] + (f" {temperature:.0f} K" if temperature else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("students", nargs="+", help="NAME=CHECKPOINT_OR_RUN_DIR")
    ap.add_argument("--data", nargs="+", required=True, help="labelled dataset files (.h5)")
    ap.add_argument("--out", required=True, help="output path without suffix (.md and .json are written)")
    args = ap.parse_args(argv)
    missing = [p for p in args.data if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"no dataset file {missing[0]}: give labelled .h5 files to --data")

    import torch

    from mlff_distiller.bench.models import resolve_student
    from mlff_distiller.data.store import DatasetReader

    torch.set_num_threads(1)
    data = {}
    for path in args.data:
        reader = DatasetReader(path)
        try:
            data[Path(path).name] = [(reader.get_atoms(i), group_of(reader.provenance(i))) for i in range(len(reader))]
        finally:
            reader.close()
    result = {"data": list(data), "students": {},
              "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    for spec in args.students:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"student {spec!r}: write NAME=CHECKPOINT")
        calc = resolve_student(path).make_calculator()
        groups: dict = {}
        for file, items in data.items():
            acc: dict = defaultdict(lambda: [0, 0.0, 0.0])
            for atoms, group in items:
                f_ref = atoms.get_forces()
                work = atoms.copy()
                work.calc = calc
                a = acc[group]
                a[0] += 1
                a[1] += float(((work.get_forces() - f_ref) ** 2).sum())
                a[2] += float((f_ref ** 2).sum())
            groups[file] = {g: {"n": n, "force_rel_rmse": float(np.sqrt(se / sr))}
                            for g, (n, se, sr) in sorted(acc.items())}
        result["students"][name] = {"checkpoint": path, "groups": groups}
    save(args.out, result, _markdown(result), echo=True)
    return 0


def _markdown(r: dict) -> str:
    names = list(r["students"])
    lines = ["# Force error by how the structures were made", "",
             f"Force RMSE / teacher force RMS per group of structures (sampler, MD temperature). "
             f"{r['machine']}, 1 thread, {r['date_utc']} UTC.", "",
             "| data | group | structures | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    first = r["students"][names[0]]["groups"]
    for file, groups in first.items():
        for g, v in groups.items():
            cells = [f"{r['students'][n]['groups'][file][g]['force_rel_rmse']:.3f}" for n in names]
            lines.append(f"| {file} | {g} | {v['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
