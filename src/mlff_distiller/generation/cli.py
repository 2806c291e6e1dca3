"""``mlff-distill generate RECIPE -o pool.h5 [--tier 1k]``: write an unlabelled structure pool."""

from __future__ import annotations

from ..cliutil import add_output, add_progress, show_progress


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate an unlabelled structure pool from a recipe",
        description="Generate the unlabelled structure pool of a recipe (built-in name: tiny, quickstart, "
        "seed-m2; or a YAML file) into an HDF5 dataset. Positions in Angstrom.",
    )
    p.add_argument("recipe", help="built-in recipe name or path to a recipe YAML file")
    add_output(p, "output pool file (.h5); must not exist unless --overwrite")
    p.add_argument("--tier", default=None, help="tier of the recipe (e.g. 1k, 10k, full); default: its default tier")
    p.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_progress(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from .engine import format_summary, generate

    if args.seed is not None and args.seed < 0:
        from ..errors import UserError

        raise UserError(f"--seed must be a non-negative integer, got {args.seed}")
    from ..fileio import check_output_path

    check_output_path(args.output, "-o")
    summary = generate(args.recipe, args.output, tier=args.tier, progress=show_progress(args),
                       overwrite=args.overwrite, seed=args.seed)
    print(format_summary(summary))
    return 0
