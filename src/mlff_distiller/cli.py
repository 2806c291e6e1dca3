"""``mlff-distill``: one thin command line over the Python API, a subcommand per stage.

Each stage package provides ``<stage>/cli.py`` with ``register(subparsers)``, which adds its
subcommands and sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and
returning an exit code). Stage CLI modules import their heavy dependencies inside the
handler so that ``mlff-distill --help`` stays fast.

Errors the user can fix (:class:`mlff_distiller.errors.UserError`) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import UserError

# Order = pipeline order, as shown in --help.
STAGE_CLIS = (
    "mlff_distiller.generation.cli",  # generate
    "mlff_distiller.teachers.cli",  # teachers list|compare
    "mlff_distiller.labeling.cli",  # label
    "mlff_distiller.data.cli",  # dataset info|import|export
    "mlff_distiller.quality.cli",  # validate, report
    "mlff_distiller.training.cli",  # train, export
    "mlff_distiller.bench.cli",  # bench
    "mlff_distiller.pipeline.cli",  # run
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlff-distill",
        description="Distil a large machine-learned force field (teacher) into a small, fast student. "
        "Units: eV, Angstrom, eV/A, eV/A^3, fs (ASE).",
    )
    parser.add_argument("--version", action="version", version=f"mlff-distiller {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for modname in STAGE_CLIS:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as err:
            if err.name == modname:  # stage not built yet
                continue
            raise
        mod.register(sub)
    return parser


def _end_progress_bars() -> None:
    """Close every live tqdm bar so that a message printed next starts on its own line."""
    tqdm_mod = sys.modules.get("tqdm")
    if tqdm_mod is None:
        return
    for bar in list(getattr(tqdm_mod.tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a broken bar must not hide the error being reported
            pass


def run_handler(args: argparse.Namespace) -> int:
    """Call ``args.func``; a :class:`UserError` prints one line and gives exit status 2.

    Log messages (stage lines, progress lines, metrics, warnings) go to stderr from here on
    (:func:`mlff_distiller.logs.setup_console`).
    """
    from .cliutil import check_required
    from .logs import setup_console

    check_required(args)
    setup_console()
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        _end_progress_bars()
        print(f"mlff-distill: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _end_progress_bars()
        print("mlff-distill: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_handler(args)


if __name__ == "__main__":
    sys.exit(main())
