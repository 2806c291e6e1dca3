"""``mlff-distill bench``: speed, accuracy and MD fidelity of a student against a teacher."""

from __future__ import annotations

import argparse

from ..cliutil import add_config, add_output, add_progress, show_progress
from ..fileio import read_settings_file


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time and validate a student against its teacher (speed ratio, accuracy, MD drift/stability/RDF)",
        description="Bench a student against a teacher in one process with the same thread count: ms per force "
        "call and per MD step, speed-up ratio, ns/day, peak memory; accuracy on a held-out labelled dataset; NVE "
        "drift, stability and RDF overlap. Writes bench.json, bench.md and plots to -o DIR. Units: eV, A, fs, ps, K.",
    )
    p.add_argument("--student", required=True, help="training run directory, student .pt file or TorchScript export")
    p.add_argument(
        "--teacher",
        default="chgnet",
        help="teacher name (chgnet, orb-v2, emt, ...), a JSON spec '{\"name\": ...}' or a .json/.yaml spec file "
        "(default: chgnet)",
    )
    p.add_argument("--systems", nargs="+", default=None, metavar="SYSTEM",
                   help="built-in names (aspirin, si-64, si-512, water-192, water-576, cu-64, cu-500) or structure "
                   "files; default: aspirin si-64 si-512 (those both models support)")
    p.add_argument("--dataset", default=None, help="held-out labelled dataset (.h5 from mlff-distill label, or extxyz)")
    add_output(p, "output directory for bench.json, bench.md and plots")
    p.add_argument("--threads", type=int, default=1, help="threads for both models (default 1)")
    p.add_argument("--timestep", type=float, default=None, help="MD timestep in fs (default 0.5)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 3)")
    p.add_argument("--drift-ps", type=float, default=None, help="NVE length in ps for the drift (default 10)")
    p.add_argument("--stability-temps", type=float, nargs="+", default=None, metavar="K",
                   help="Langevin stability temperatures in K (default 300 1000)")
    p.add_argument("--max-structures", type=int, default=None, help="evaluate at most this many held-out structures")
    p.add_argument("--max-wall", type=float, default=None, help="wall-clock budget per MD run in s (default 600)")
    p.add_argument("--no-md", action="store_true", help="skip MD fidelity (speed and accuracy only)")
    p.add_argument("--no-rdf", action="store_true", help="skip the teacher-vs-student RDF runs")
    p.add_argument("--workers", type=int, default=1,
                   help="local Dask worker processes, one math thread each, for the held-out teacher MD runs "
                   "(default 1: in this process); each run keeps its own seed")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler for the held-out runs")
    p.add_argument("--student-backend", default=None, choices=["auto", "numba", "torch"],
                   help="student calculator backend (default auto: the numba kernel on the CPU)")
    add_config(p, "YAML/JSON file with bench settings (the recipe's bench section)")
    add_progress(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from .runner import run_bench

    cfg = read_settings_file(args.config, "bench") if args.config else {}
    for key, value in (
        ("timestep_fs", args.timestep),
        ("n_rounds", args.rounds),
        ("drift_ps", args.drift_ps),
        ("stability_temperatures_K", args.stability_temps),
        ("max_structures", args.max_structures),
        ("max_wall_s", args.max_wall),
        ("student_backend", args.student_backend),
    ):
        if value is not None:
            cfg[key] = value
    if args.no_md:
        cfg["md"] = False
    if args.no_rdf:
        cfg["rdf"] = False
    if args.threads < 1:
        raise UserError(f"--threads {args.threads}: give a positive number of threads")
    if args.workers < 1:
        raise UserError(f"--workers must be an integer >= 1 (1 = in this process), got {args.workers}")
    cluster = None
    if args.scheduler or args.workers > 1:
        from ..labeling.cluster import check_local_size

        if not args.scheduler:
            check_local_size(args.workers)
        cluster = {"scheduler": args.scheduler, "n_workers": args.workers}
    from ..fileio import check_output_path
    from ..teachers.registry import parse_teacher_spec

    check_output_path(args.output, "-o", directory=True, create_parents=True)
    result = run_bench(
        args.student, parse_teacher_spec(args.teacher, "--teacher"), systems=args.systems, dataset=args.dataset,
        out_dir=args.output, threads=args.threads, config=cfg, progress=show_progress(args), cluster=cluster,
    )
    with open(result["outputs"]["markdown"]) as fh:
        print(fh.read())
    print(f"wrote {result['outputs']['json']} and {result['outputs']['markdown']}")
    return 0
