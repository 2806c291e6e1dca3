"""``mlff-distill run``: the whole pipeline (see :mod:`mlff_distiller.pipeline.run`)."""

from __future__ import annotations

from ..cliutil import add_output, add_progress, show_progress


def register(sub) -> None:
    from ..generation.recipe import builtin_recipes

    p = sub.add_parser(
        "run",
        help="run every stage end to end: generate, label, gate, train, export, bench, report",
        description=f"Run (or resume) the pipeline for a recipe (built-in: {', '.join(builtin_recipes())}; or a YAML "
        "file). Re-running the same command resumes.",
    )
    p.add_argument("recipe", help="built-in recipe name or path to a recipe YAML")
    add_output(p, "project directory (its log: logs/run.log)")
    p.add_argument("--until-tier", help="for tiered recipes: stop adding tiers after this one (e.g. 1k)")
    p.add_argument(
        "--restart-from",
        help="redo this stage and all after it (generate, label, gate, split, train, active, export, bench, report)",
    )
    p.add_argument("--workers", type=int, help="Dask workers for generation and labeling "
                   "(default: labeling.workers of the recipe, else 2)")
    p.add_argument("--skip", action="append", default=[], choices=["bench", "report"], help="skip an optional stage")
    p.add_argument("--overwrite", action="store_true", help="reuse an output directory that holds another project")
    add_progress(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..fileio import check_output_path
    from ..labeling.config import LabelingConfig
    from .run import GateFailed, RunOptions, run_project

    if args.workers is not None:  # the same rules as `label --workers`
        from ..labeling.cluster import check_local_size

        LabelingConfig.from_dict({"workers": args.workers})
        check_local_size(args.workers)
    check_output_path(args.output, "-o", directory=True, create_parents=True)

    opts = RunOptions(
        until_tier=args.until_tier,
        restart_from=args.restart_from,
        overwrite=args.overwrite,
        workers=args.workers,
        progress=show_progress(args),
        skip=tuple(args.skip),
    )
    try:
        res = run_project(args.recipe, args.output, opts)
    except GateFailed as err:
        print(f"mlff-distill: NO-GO: {err}")
        return 3
    print(f"done: summary {res.summary_path}")
    if res.report_path:
        print(f"report: {res.report_path}")
    return 0
