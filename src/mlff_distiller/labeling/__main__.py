"""``python -m mlff_distiller.labeling POOL -o OUT ...``: the same as ``mlff-distill label``,
without importing the other stages (a lighter start-up for batch jobs and tests)."""

from __future__ import annotations

import argparse
import sys

from ..cli import run_handler
from . import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlff_distiller.labeling")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    args = parser.parse_args(["label", *(sys.argv[1:] if argv is None else argv)])
    return run_handler(args)


if __name__ == "__main__":
    sys.exit(main())
