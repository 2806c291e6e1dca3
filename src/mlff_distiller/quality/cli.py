"""``mlff-distill validate`` and ``mlff-distill report``."""

from __future__ import annotations

import argparse

from ..cliutil import add_output, add_progress, show_progress


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "validate",
        help="run validation checks, diversity metrics and a go/no-go gate on a labelled dataset",
        description="Validation checks (NaN/inf, close contacts, large forces, energy outliers, sentinel energies, "
        "cell volume, net force, stress), diversity metrics and the gate of one checkpoint. "
        "Exit status 1 when the gate fails, 2 on bad input. Units: eV, A, eV/A, eV/A^3.",
    )
    p.add_argument("file", help="labelled dataset (.h5)")
    p.add_argument("--config", metavar="Q.yaml", help="YAML with a quality: section (or a whole recipe)")
    p.add_argument("--checkpoint", default="full", choices=["1k", "10k", "full"],
                   help="gate thresholds to apply (default: full)")
    p.add_argument("--json", metavar="OUT.json", help="also write all results as JSON")
    add_progress(p)
    p.set_defaults(func=_validate)

    r = subparsers.add_parser(
        "report",
        help="write a self-contained HTML quality report and a markdown dataset card",
        description="Writes DIR/report.html (plots embedded), DIR/dataset_card.md and DIR/quality.json.",
    )
    r.add_argument("file", help="labelled dataset (.h5)")
    add_output(r, "output directory", metavar="DIR")
    r.add_argument("--config", metavar="Q.yaml", help="YAML with a quality: section (or a whole recipe)")
    add_progress(r)
    r.set_defaults(func=_report)


def _config(args):
    from ..data.io import require_dataset
    from .config import QualityConfig

    require_dataset(args.file)

    return QualityConfig.from_yaml(args.config) if args.config else QualityConfig()


def _validate(args: argparse.Namespace) -> int:
    import json

    from ..fileio import atomic_write_text, check_output_path
    from .gates import evaluate_gates

    if args.json:
        check_output_path(args.json, "--json")
    config = _config(args)
    gate = evaluate_gates(args.file, args.checkpoint, config, progress=show_progress(args))
    print(gate.validation.summary())
    print(gate.diversity.summary())
    print(gate.summary())
    if args.json:
        payload = {"validation": gate.validation.to_dict(), "diversity": gate.diversity.to_dict(),
                   "gate": gate.to_dict()}
        atomic_write_text(args.json, json.dumps(payload, indent=1, default=str))
    return 0 if gate.passed else 1


def _report(args: argparse.Namespace) -> int:
    from ..fileio import check_output_path
    from .report import write_report

    check_output_path(args.output, "-o", directory=True, create_parents=True)
    html_path, card_path = write_report(args.file, args.output, _config(args), progress=show_progress(args))
    print(f"report: {html_path}")
    print(f"dataset card: {card_path}")
    return 0
