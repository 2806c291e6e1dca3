"""Where a dataset sits on the teacher's energy surface, group by group, next to held-out MD.

For labelled dataset files, the structures are grouped by provenance (sampler and, for MD
samples, temperature; the source's formula first). For a held-out cache (the folder of teacher
MD frames that ``bench`` and ``benchmarks/compare_students.py`` keep), each run is a group. Per
group: structures, the teacher's energy per atom (mean and standard deviation, eV/atom) and
the RMS of its force components (eV/A). Training frames whose energy per atom is far above
held-out MD at the same temperature were not taken from the state the held-out MD samples
(e.g. a packed liquid box that had not relaxed): no student trained on them is tested on
what it saw.

Run: ``.venv/bin/python benchmarks/teacher_energy_by_group.py --data A.h5 B.h5 --heldout-cache
DIR --out benchmarks/results/NAME`` (writes NAME.md and NAME.json). Units: eV/atom, eV/A.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from _results import save  # noqa: E402  (benchmarks/_results.py)


def group_of(provenance: dict) -> str:
    """``source-tail sampler [T K]``: the last part of the source, the sampler, MD temperature."""
    temperature = (provenance.get("params") or {}).get("T")
    source = str(provenance.get("source", "")).split(":")[-1]
    return f"{source} {provenance['sampler']}" + (f" {temperature:.0f} K" if temperature else "")


def _row(energies: list, forces: list) -> dict:
    e = np.asarray(energies, dtype=float)
    return {"n": int(e.size), "energy_per_atom_mean": float(e.mean()), "energy_per_atom_std": float(e.std()),
            "force_rms": float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="*", default=[], help="labelled dataset files (.h5)")
    ap.add_argument("--heldout-cache", default=None, help="folder of cached held-out teacher MD frames")
    ap.add_argument("--out", required=True, help="output path without suffix (.md and .json are written)")
    args = ap.parse_args(argv)
    missing = [p for p in args.data if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"no dataset file {missing[0]}: give labelled .h5 files to --data")
    if args.heldout_cache and not sorted(Path(args.heldout_cache).glob("*.json")):
        raise SystemExit(f"no cached held-out runs in {args.heldout_cache}: give the folder that holds RUN.json files")

    from mlff_distiller.bench.heldout import read_frames
    from mlff_distiller.data.store import DatasetReader

    result: dict = {"groups": {}, "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")}
    for path in args.data:
        acc: dict = defaultdict(lambda: ([], []))
        with DatasetReader(path) as reader:
            for i in range(len(reader)):
                atoms = reader.get_atoms(i)
                e, f = acc[group_of(reader.provenance(i))]
                e.append(atoms.get_potential_energy() / len(atoms))
                f.append(atoms.get_forces().ravel())
        result["groups"][Path(path).name] = {g: _row(*v) for g, v in sorted(acc.items())}
    if args.heldout_cache:
        runs = {}
        for meta in sorted(Path(args.heldout_cache).glob("*.json")):
            json.loads(meta.read_text())  # a run counts once its metadata is written
            frames = read_frames(meta.with_suffix(".extxyz"))
            runs[meta.stem] = _row([f.info["energy_ref"] / len(f) for f in frames],
                                   [f.arrays["forces_ref"].ravel() for f in frames])
        result["groups"]["held-out teacher MD"] = runs
    save(args.out, result, _markdown(result), echo=True)
    return 0


def _markdown(r: dict) -> str:
    lines = ["# The teacher's energy per atom, group by group", "",
             f"Teacher labels as stored (eV/atom, eV/A); {r['date_utc']} UTC.", "",
             "| data | group | structures | energy eV/atom (mean +- std) | force RMS eV/A |",
             "|---|---|---|---|---|"]
    for file, groups in r["groups"].items():
        for g, v in groups.items():
            lines.append(f"| {file} | {g} | {v['n']} | {v['energy_per_atom_mean']:.4f} +- "
                         f"{v['energy_per_atom_std']:.4f} | {v['force_rms']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
