"""``mlff-distill validate`` and ``mlff-distill report``."""

from __future__ import annotations

import argparse

from ..cliutil import add_config, add_json, add_output, add_progress, check_json_out, show_progress, write_json_out


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "validate",
        help="run validation checks, diversity metrics and a go/no-go gate on a labelled dataset",
        description="Validation checks (NaN/inf, close contacts, large forces, energy outliers, sentinel energies, "
        "cell volume, net force, stress), diversity metrics and the gate of one checkpoint. "
        "Exit status 1 when the gate fails, 2 on bad input. Units: eV, A, eV/A, eV/A^3.",
    )
    p.add_argument("file", help="labelled dataset (.h5)")
    add_config(p, "YAML with a quality: section (or a whole recipe)", metavar="Q.yaml")
    p.add_argument("--checkpoint", default="full", choices=["1k", "10k", "full"],
                   help="gate thresholds to apply (default: full)")
    add_json(p, "all results (validation, diversity, gate)", old_file_form=True)
    add_progress(p)
    p.set_defaults(func=_validate)

    r = subparsers.add_parser(
        "report",
        help="write a self-contained HTML quality report and a markdown dataset card",
        description="Writes DIR/report.html (plots embedded), DIR/dataset_card.md and DIR/quality.json.",
    )
    r.add_argument("file", help="labelled dataset (.h5)")
    add_output(r, "output directory", metavar="DIR")
    add_config(r, "YAML with a quality: section (or a whole recipe)", metavar="Q.yaml")
    add_progress(r)
    r.set_defaults(func=_report)


def _config(args):
    from ..data.io import require_dataset
    from .config import QualityConfig

    require_dataset(args.file)

    return QualityConfig.from_yaml(args.config) if args.config else QualityConfig()


def _validate(args: argparse.Namespace) -> int:
    import json

    from .gates import evaluate_gates

    check_json_out(args)
    config = _config(args)
    gate = evaluate_gates(args.file, args.checkpoint, config, progress=show_progress(args))
    payload = {"validation": gate.validation.to_dict(), "diversity": gate.diversity.to_dict(),
               "gate": gate.to_dict()}
    if args.json:
        print(json.dumps(payload, indent=1, default=str))
    else:
        print(gate.validation.summary())
        print(gate.diversity.summary())
        print(gate.summary())
    write_json_out(args, payload)
    return 0 if gate.passed else 1


def _report(args: argparse.Namespace) -> int:
    from ..fileio import check_output_path
    from .report import write_report

    check_output_path(args.output, "-o", directory=True, create_parents=True)
    html_path, card_path = write_report(args.file, args.output, _config(args), progress=show_progress(args))
    print(f"report: {html_path}")
    print(f"dataset card: {card_path}")
    return 0
