"""``mlff-distill dataset info|import|export|stats|repack``: the dataset store on the command line."""

from __future__ import annotations

import json
from collections import Counter

from ..cliutil import add_json, add_output, add_progress, check_json_out, show_progress, write_json_out


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dataset",
        help="inspect, import, export and repack dataset files (HDF5)",
        description="Dataset files (HDF5, see docs/dataset-format.md). Units: eV, A, eV/A, eV/A^3.",
    )
    sub = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    sub.required = True
    _add_info(sub)
    _add_import(sub)
    _add_export(sub)
    _add_stats(sub)
    _add_repack(sub)


def _add_info(sub) -> None:
    """The `dataset info` subcommand."""
    q = sub.add_parser(
        "info",
        help="counts, elements, sizes, fields, units, provenance summary",
        description="Summarise a dataset file: structures, atoms, elements, labels, units, "
        "precision, provenance, failures and file attributes.",
    )
    q.add_argument("file", help="dataset or pool file (.h5)")
    add_json(q, "the summary")
    q.set_defaults(func=_info)


def _add_import(sub) -> None:
    """The `dataset import` subcommand."""
    q = sub.add_parser(
        "import",
        help="read structures with ASE (extxyz, traj, ...) or other dataset files into a dataset file",
        description="Read structures with ASE into a dataset file; dataset files (.h5) are read with their "
        "labels and provenance, so `import a.h5 b.h5 -o both.h5` (or --append) merges datasets labelled by one "
        "teacher (datasets of two teachers are refused). Labels come from the calculator "
        "fields ASE reads (energy, forces, stress) or from other tools' keys: MACE's REF_energy / "
        "REF_forces / REF_stress, DFT_* and dft_* are recognised, and virials (REF_virials, virials, virial; "
        "virial = -stress * volume) become stress when no stress key is present; name others with "
        "--energy-key, --forces-key, --stress-key, --virials-key. Units must be eV, A, eV/A, eV/A^3 "
        "(virials eV).",
    )
    q.add_argument("inputs", nargs="+", help="structure files ASE can read, or dataset files (.h5)")
    add_output(q, "dataset file to write (.h5)")
    q.add_argument("--format", default=None, help="ASE format name (default: from the file name)")
    q.add_argument("--index", default=":", help="ASE frame selection, e.g. ':' or '::10' (default ':')")
    q.add_argument(
        "--labels",
        default=None,
        help="comma-separated label fields to store (energy,forces,stress); default: what the input carries; "
        "'none' strips the labels and stores an unlabelled pool (e.g. to relabel it with a teacher)",
    )
    q.add_argument(
        "--energy-key", default=None, metavar="KEY", help="atoms.info key holding the energy (eV), e.g. REF_energy"
    )
    q.add_argument(
        "--forces-key", default=None, metavar="KEY", help="per-atom array holding the forces (eV/A), e.g. REF_forces"
    )
    q.add_argument(
        "--stress-key",
        default=None,
        metavar="KEY",
        help="atoms.info key holding the stress (eV/A^3, 6 Voigt or 9 values), e.g. REF_stress",
    )
    q.add_argument(
        "--virials-key",
        default=None,
        metavar="KEY",
        help="atoms.info key holding the virial (eV, 3x3/9 or 6 Voigt values; MACE's convention "
        "virial = -stress * volume), stored as stress = -virial / volume; 3-D periodic cells only; "
        "e.g. REF_virials",
    )
    q.add_argument("--append", action="store_true", help="append to an existing dataset instead of writing a new one")
    q.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    q.add_argument(
        "--positions-dtype",
        choices=("float64", "float32"),
        default="float64",
        help="precision of stored positions (float32: ~5e-7 A error, smaller file)",
    )
    q.add_argument(
        "--forces-mantissa-bits",
        type=int,
        default=None,
        help="keep this many float32 mantissa bits of forces (4-23; 16: relative error <= 7.6e-6, smaller file)",
    )
    add_progress(q)
    q.set_defaults(func=_import)


def _add_export(sub) -> None:
    """The `dataset export` subcommand."""
    q = sub.add_parser(
        "export",
        help="write a dataset file as extxyz, ASE db, traj or another format ASE writes",
        description="Write the structures of a dataset file with ASE, labels on a calculator (energy eV, "
        "forces eV/A, stress eV/A^3). The format follows the output name (.xyz/.extxyz, .db for "
        "`ase db`, .traj for `ase gui`, ...) unless --format is given.",
    )
    q.add_argument("file", help="dataset or pool file (.h5)")
    add_output(q, "structure file to write, e.g. out.extxyz, out.db, out.traj")
    q.add_argument(
        "--format",
        default=None,
        help="ASE format name (default: from the output name, else extxyz, which keeps every field)",
    )
    add_progress(q)
    q.set_defaults(func=_export)


def _add_stats(sub) -> None:
    """The `dataset stats` subcommand."""
    q = sub.add_parser(
        "stats",
        help="normalization statistics (reference energies, scales, neighbours); stored in the file",
        description="Fit per-element reference energies and compute energy/force scales and mean "
        "neighbour counts (eV, eV/A, A); store them in the file and print them as JSON.",
    )
    q.add_argument("file", help="labelled dataset file (.h5)")
    q.add_argument("--cutoff", type=float, default=5.0, help="neighbour cutoff in A (default 5.0)")
    add_output(q, "also write the statistics as JSON here", required=False)
    q.add_argument("--no-store", action="store_true", help="do not write the statistics into the dataset file")
    add_progress(q)
    q.set_defaults(func=_stats)


def _add_repack(sub) -> None:
    """The `dataset repack` subcommand."""
    q = sub.add_parser(
        "repack",
        help="merge the append journal into the compact read-optimised layout",
        description="Rewrite a dataset file in the compact layout (merging its append journal), "
        "optionally with smaller float32 positions or rounded forces.",
    )
    q.add_argument("file", help="dataset or pool file (.h5)")
    add_output(q, "write here instead of in place", required=False)
    q.add_argument(
        "--positions-dtype",
        choices=("float64", "float32", "int32"),
        default=None,
        help="store positions in this precision (float32: ~5e-7 A error; int32: the 2^-16 A grid of "
        "generated pools, cell and stress float32, ~7.6e-6 A error for data not already on it)",
    )
    q.add_argument(
        "--forces-mantissa-bits",
        type=int,
        default=None,
        help="keep this many float32 mantissa bits of forces (4-23; 16: relative error <= 7.6e-6)",
    )
    q.set_defaults(func=_repack)


def summarize(path, verify: bool = True) -> dict:
    """Summary of a dataset file as a plain dict (what ``dataset info`` prints).

    ``verify`` first reads every stored chunk once (checksums, decompression), so a damaged
    file is refused with the damaged structures named instead of summarised."""
    import os

    import numpy as np
    from ase.data import chemical_symbols

    from .. import fields as F
    from .store import DatasetReader

    with DatasetReader(path) as r:
        if verify:
            r.verify()
        counts: Counter = Counter()
        for _, nums in r.iter_atom_blocks(F.NUMBERS):
            zs, cs = np.unique(nums, return_counts=True)
            counts.update({chemical_symbols[int(z)]: int(c) for z, c in zip(zs, cs)})
        n_atoms = r.n_atoms
        pbc = r.column(F.PBC)
        labels = {name: int(r.column(name + "_mask").sum()) for name in r.label_fields}
        out = {
            "file": str(path),
            "file_size_bytes": os.path.getsize(path),
            "format_version": r.format_version,
            "structures": len(r),
            "atoms": int(n_atoms.sum()),
            "atoms_per_structure": (
                {"min": int(n_atoms.min()), "median": float(np.median(n_atoms)), "max": int(n_atoms.max())}
                if len(r)
                else {}
            ),
            "periodic_3d": int(pbc.all(axis=1).sum()) if len(r) else 0,
            "non_periodic": int((~pbc.any(axis=1)).sum()) if len(r) else 0,
            "elements": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
            "label_fields": list(r.label_fields),
            "labelled_structures": labels,
            "units": r.units,
            "positions_dtype": r.positions_dtype.name,
            "forces_mantissa_bits": r.forces_mantissa_bits,
            "provenance": {
                "sources": dict(Counter(r.column("source").tolist()).most_common(10)),
                "n_sources": len(set(r.column("source").tolist())),
                "samplers": dict(Counter(r.column("sampler").tolist())),
                "teachers": dict(Counter(r.column("teacher").tolist())),
                "groups": len(set(r.column("group").tolist()) - {""}),
            },
            "failures": len(r.failures()),
            "unmerged_journal_segments": r.n_segments,
            "attrs": r.attrs,
        }
    return out


def _print_summary(s: dict) -> None:
    def line(k, v):
        print(f"{k:<22} {v}")

    line("file", f"{s['file']} ({s['file_size_bytes'] / 2**20:.2f} MiB, format version {s['format_version']})")
    line("structures", f"{s['structures']} ({s['periodic_3d']} periodic 3-D, {s['non_periodic']} non-periodic)")
    a = s["atoms_per_structure"]
    line("atoms", f"{s['atoms']}" + (f" ({a['min']}-{a['max']} per structure, median {a['median']:g})" if a else ""))
    line("elements", " ".join(f"{el}:{c}" for el, c in s["elements"].items()) or "-")
    lab = s["labelled_structures"]
    line("labels", ", ".join(f"{k} ({v})" for k, v in lab.items()) if lab else "none (unlabelled pool)")
    units = s["units"]
    line(
        "units",
        ", ".join(f"{k} {units[k]}" for k in ("positions", "energy", "forces", "stress") if k in units)
        + f"; stress {units.get('stress_order', 'voigt')}",
    )
    pos = s["positions_dtype"]
    if pos == "int32":
        pos = "on a 2^-16 A grid (int32), cell and stress float32"
    line("precision", f"positions {pos}, forces float32 with {s['forces_mantissa_bits']} mantissa bits")
    prov = s["provenance"]
    line("sources", f"{prov['n_sources']}: " + ", ".join(f"{k or '-'} ({v})" for k, v in prov["sources"].items()))
    line("samplers", ", ".join(f"{k or '-'} ({v})" for k, v in prov["samplers"].items()))
    line("teachers", ", ".join(f"{k or '-'} ({v})" for k, v in prov["teachers"].items()))
    line("groups", prov["groups"])
    line("failures", s["failures"])
    if s["unmerged_journal_segments"]:
        line("journal", f"{s['unmerged_journal_segments']} unmerged segments (run `mlff-distill dataset repack`)")
    for k, v in s["attrs"].items():
        text = json.dumps(v, sort_keys=True) if not isinstance(v, str) else v
        line(f"attr {k}", text if len(text) <= 100 else text[:97] + "...")


def _info(args) -> int:
    from .io import require_dataset

    require_dataset(args.file)
    check_json_out(args)
    s = summarize(args.file)
    write_json_out(args, s)
    if args.json:
        print(json.dumps(s, indent=2, default=str))
    else:
        _print_summary(s)
    return 0


def _parse_labels(text):
    from ..errors import DatasetError
    from .store import LABEL_FIELDS

    if text is None:
        return None
    if text.strip().lower() in ("none", ""):
        return ()
    fields = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [f for f in fields if f not in LABEL_FIELDS]
    if bad:
        raise DatasetError(
            f"--labels has unknown field {bad[0]!r}; use a comma-separated subset of {','.join(LABEL_FIELDS)} or 'none'"
        )
    return fields


def _import(args) -> int:
    from ..errors import DatasetError
    from .io import import_structures

    if args.append and args.overwrite:
        raise DatasetError("--append and --overwrite exclude each other; give one")
    keys = {
        "energy": args.energy_key,
        "forces": args.forces_key,
        "stress": args.stress_key,
        "virials": args.virials_key,
    }
    n = import_structures(
        args.inputs,
        args.output,
        format=args.format,
        index=args.index,
        label_fields=_parse_labels(args.labels),
        mode="a" if args.append else "w",
        positions_dtype=args.positions_dtype,
        forces_mantissa_bits=args.forces_mantissa_bits,
        progress=show_progress(args),
        label_keys={k: v for k, v in keys.items() if v},
        overwrite=args.overwrite,
    )
    from .store import DatasetReader

    with DatasetReader(args.output) as r:
        labels = ", ".join(r.label_fields) or (
            "none (an unlabelled pool: label it with `mlff-distill label`; labels "
            "stored under other keys: name them with --energy-key/--forces-key)"
        )
    print(f"imported {n} structures into {args.output}; labels: {labels}")
    return 0


def _export(args) -> int:
    from ..fileio import check_output_path
    from .io import export_structures, require_dataset

    require_dataset(args.file)
    check_output_path(args.output, "-o")

    n = export_structures(args.file, args.output, format=args.format, progress=show_progress(args))
    print(f"exported {n} structures to {args.output}")
    return 0


def _stats(args) -> int:
    from ..fileio import check_output_path
    from .io import require_dataset
    from .normalization import dataset_statistics, store_statistics

    require_dataset(args.file)
    if args.output:
        check_output_path(args.output, "-o")

    stats = dataset_statistics(args.file, cutoff=args.cutoff, progress=show_progress(args))
    text = stats.to_json(args.output)
    if not args.no_store:
        store_statistics(args.file, stats)
    print(text)
    return 0


def _repack(args) -> int:
    from ..fileio import check_output_path
    from .io import require_dataset

    require_dataset(args.file)
    from .store import repack

    if args.output:
        check_output_path(args.output, "-o")

    out = repack(
        args.file, args.output, positions_dtype=args.positions_dtype, forces_mantissa_bits=args.forces_mantissa_bits
    )
    print(f"repacked into {out}")
    return 0
