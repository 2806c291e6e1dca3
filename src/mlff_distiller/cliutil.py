"""Shared command-line options, so every subcommand spells them the same way.

* ``-o/--output`` names what a command writes (``--out`` still works, hidden);
* ``--no-progress`` turns progress bars and progress lines off (``--quiet`` still works,
  hidden); results, per-epoch metrics and warnings are printed either way.
"""

from __future__ import annotations

import argparse


def add_output(parser: argparse.ArgumentParser, help: str, required: bool = True, metavar: str | None = None) -> None:
    """``-o/--output`` (and the hidden old spelling ``--out``), stored as ``args.output``."""
    parser.add_argument(
        "-o", "--output", default=None, metavar=metavar, help=help + ("" if required else " (optional)")
    )
    parser.add_argument("--out", dest="output", default=None, help=argparse.SUPPRESS)
    if required:
        parser.set_defaults(_require_output=parser)


def add_progress(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` (and the hidden old spelling ``--quiet``), stored as ``args.no_progress``."""
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars or progress lines (results, metrics and warnings still print)")
    parser.add_argument("--quiet", dest="no_progress", action="store_true", help=argparse.SUPPRESS)


def show_progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False)


def check_required(args: argparse.Namespace) -> None:
    """argparse's "required" for options that have a hidden alias (called by the main parser)."""
    parser = getattr(args, "_require_output", None)
    if parser is not None and getattr(args, "output", None) is None:
        parser.error("the following arguments are required: -o/--output")
