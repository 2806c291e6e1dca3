"""``mlff-distill generate RECIPE -o pool.h5 [--tier 1k]``: write an unlabelled structure pool."""

from __future__ import annotations

from ..cliutil import add_output, add_progress, show_progress


def register(subparsers) -> None:
    from .recipe import builtin_recipes

    p = subparsers.add_parser(
        "generate",
        help="generate an unlabelled structure pool from a recipe",
        description="Generate the unlabelled structure pool of a recipe (built-in name: "
        f"{', '.join(builtin_recipes())}; or a YAML file) into an HDF5 dataset. Positions in Angstrom.",
    )
    p.add_argument("recipe", help="built-in recipe name or path to a recipe YAML file")
    add_output(p, "output pool file (.h5); must not exist unless --overwrite")
    p.add_argument("--tier", default=None, help="tier of the recipe (e.g. 1k, 10k, full); default: its default tier")
    p.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--workers", type=int, default=1,
                   help="local Dask worker processes, one math thread each, that run the roots (default 1: in this "
                   "process); the pool is the same for any number")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    add_progress(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..errors import UserError
    from .engine import format_summary, generate

    if args.seed is not None and args.seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.workers < 1:
        raise UserError(f"--workers must be an integer >= 1 (1 = in this process), got {args.workers}")
    from ..fileio import check_output_path

    check_output_path(args.output, "-o")
    summary = generate(args.recipe, args.output, tier=args.tier, progress=show_progress(args),
                       overwrite=args.overwrite, seed=args.seed,
                       workers=args.workers, scheduler=args.scheduler)
    print(format_summary(summary))
    return 0
