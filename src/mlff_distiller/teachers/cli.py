"""``mlff-distill teachers list`` and ``mlff-distill teachers compare A B STRUCTURES``."""

from __future__ import annotations

from ..cliutil import add_json, add_progress, check_json_out, show_progress, write_json_out

SPEC_HELP = (
    "a teacher: a name (chgnet, emt, lj, xtb, orb, orb-v2, fennol), an ASE calculator import path "
    "(ase.calculators.emt:EMT), name,key=value,... (orb,model=orb-v2,weights_path=/w.ckpt), "
    "a JSON spec, or a YAML/JSON file holding one"
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "teachers",
        help="list teachers and whether they load here; compare two teachers",
        description="Teachers label structures with energy (eV), forces (eV/A) and stress (eV/A^3, 3-D periodic only).",
    )
    sub = p.add_subparsers(dest="teachers_command", metavar="SUBCOMMAND")
    pl = sub.add_parser("list", help="show each teacher and whether it can load on this machine (and why not)")
    pl.add_argument("--probe", action="store_true",
                    help="build each teacher that needs no file and label a test structure")
    add_json(pl, "the teacher table")
    pl.set_defaults(func=_list)
    pc = sub.add_parser(
        "compare",
        help="label the same structures with two teachers and report their disagreement",
        description="Energy-per-atom (meV/atom, raw and offset-removed) and force (eV/A) MAE / RMSE / max, "
        "overall, by element and by structure type.",
    )
    pc.add_argument("teacher_a", metavar="A", help=SPEC_HELP)
    pc.add_argument("teacher_b", metavar="B", help="the second teacher, same forms as A")
    pc.add_argument("structures", metavar="STRUCTURES", help="extxyz / ASE-readable file, or a pool/dataset .h5")
    pc.add_argument("--limit", type=int, default=None, help="use only the first N structures")
    add_json(pc, "the full report", old_file_form=True)
    add_progress(pc)
    pc.set_defaults(func=_compare)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _list(args) -> int:
    import json

    from .registry import list_teachers

    check_json_out(args)
    rows = list_teachers(probe=args.probe)
    write_json_out(args, rows)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'teacher':<8} {'loads':<6} {'package':<22} notes")
    for r in rows:
        pkg = f"{r['package']} {r['version'] or '(missing)'}"
        print(f"{r['name']:<8} {'yes' if r['available'] else 'no':<6} {pkg:<22} {r['description']}"
              + (f" -- {r['reason']}" if r["reason"] else ""))
    return 0


def _compare(args) -> int:
    import json

    from ..errors import UserError
    from .compare import compare_teachers, format_report, read_structures
    from .registry import build_teacher, parse_teacher_spec

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be a positive integer, got {args.limit}")
    check_json_out(args)
    atoms = read_structures(args.structures, limit=args.limit)
    ta = build_teacher(parse_teacher_spec(args.teacher_a, "teacher A"))
    tb = build_teacher(parse_teacher_spec(args.teacher_b, "teacher B"))
    rep = compare_teachers(ta, tb, atoms, progress=show_progress(args))
    print(json.dumps(rep, indent=2, default=str) if args.json else format_report(rep))
    write_json_out(args, rep)
    return 0
