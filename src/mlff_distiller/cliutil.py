"""Shared command-line options, so every subcommand spells them the same way.

* ``-o/--output`` names what a command writes (``--out`` still works, hidden);
* ``--no-progress`` turns progress bars and progress lines off (``--quiet`` still works,
  hidden); results, per-epoch metrics and warnings are printed either way;
* ``--json`` prints a command's result as JSON on stdout instead of text, and
  ``--json-out FILE`` also writes it to FILE (``--json FILE``, the old spelling of
  ``validate`` and ``teachers compare``, still works there);
* ``-c/--config`` names a settings file (YAML).
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


class _JsonAction(argparse.Action):
    """``--json`` as a flag; ``--json FILE`` (old spelling) stores FILE as ``args.json_out``."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values is None:
            namespace.json = True
        else:
            namespace.json_out = values


def add_json(parser: argparse.ArgumentParser, what: str, old_file_form: bool = False) -> None:
    """``--json`` (print ``what`` as JSON on stdout instead of text) and ``--json-out FILE``.

    ``old_file_form``: ``--json FILE`` also works, as ``--json-out FILE`` (commands where
    ``--json`` used to take a file name)."""
    help_ = f"print {what} as JSON on stdout instead of text"
    if old_file_form:
        parser.add_argument("--json", nargs="?", const=None, default=False, action=_JsonAction, metavar="FILE",
                            help=help_ + " (--json FILE, the old spelling, means --json-out FILE)")
    else:
        parser.add_argument("--json", action="store_true", help=help_)
    parser.add_argument("--json-out", default=None, metavar="FILE", help=f"also write {what} as JSON to FILE")


def write_json_out(args: argparse.Namespace, payload) -> None:
    """Write ``payload`` to ``args.json_out`` (atomically) when it was given."""
    if getattr(args, "json_out", None):
        import json

        from .fileio import atomic_write_text

        atomic_write_text(args.json_out, json.dumps(payload, indent=1, default=str) + "\n")


def check_json_out(args: argparse.Namespace) -> None:
    """Refuse an unusable ``--json-out`` path before any work is done."""
    if getattr(args, "json_out", None):
        from .fileio import check_output_path

        check_output_path(args.json_out, "--json-out")


def add_config(parser: argparse.ArgumentParser, help: str, metavar: str = "FILE") -> None:
    """``-c/--config FILE``."""
    parser.add_argument("-c", "--config", default=None, metavar=metavar, help=help)
