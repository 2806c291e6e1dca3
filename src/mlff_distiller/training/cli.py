"""``mlff-distill train`` and ``mlff-distill export``.

``train DATASET --config C.yaml -o RUN [--resume]`` fits a student (see
:class:`~mlff_distiller.training.DistillationTrainer`); start it under
``torchrun --nproc_per_node P -m mlff_distiller.cli train ...`` for DDP.
``export RUN -o student.pt [--checkpoint best|last]`` writes the TorchScript file.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a student on a labelled dataset",
        description="Distil the teacher labels in DATASET (HDF5) into a student; writes checkpoints, "
        "metrics.csv, normalization.json, config.yaml and parity.png to RUN. Units: eV, A, eV/A, eV/A^3.",
        epilog="Several processes (DDP): torchrun --nproc_per_node P -m mlff_distiller.cli train DATASET ... "
        "(batch_size is the global batch and must be divisible by P). Settings: docs/training.md.",
    )
    p.add_argument("dataset", help="labelled dataset file (HDF5, from `mlff-distill label`)")
    p.add_argument("--config", "-c", help="YAML with the training settings (or a recipe with a training: section); "
                   "default: built-in defaults, or the run's saved config when resuming")
    p.add_argument("-o", "--output", required=True, help="run directory to create (or to continue with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in -o from checkpoints/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    e = subparsers.add_parser(
        "export",
        help="export a trained student to TorchScript",
        description="Write RUN's student as a TorchScript file that runs without this package's model code.",
    )
    e.add_argument("run", help="run directory (from `mlff-distill train`) or a checkpoint .pt file")
    e.add_argument("-o", "--output", required=True, help="TorchScript file to write, e.g. student.pt")
    e.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which checkpoint of the run directory (default: best, the EMA weights)")
    e.set_defaults(func=_export)


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..fileio import check_output_path
    from .config import TrainConfig
    from .trainer import DistillationTrainer, load_train_config

    run = check_output_path(args.output, "-o", directory=True, create_parents=True)
    if args.config:
        cfg = load_train_config(args.config)
    elif args.resume and (run / "config.yaml").is_file():
        cfg = load_train_config(run / "config.yaml")
    else:
        cfg = TrainConfig()
    trainer = DistillationTrainer(args.dataset, cfg, run, resume=args.resume, progress=not args.no_progress)
    summary = trainer.fit()
    if trainer._dist.main:
        print(
            f"trained {summary['steps']} steps / {summary['epochs']} epochs ({summary['stopped']}); "
            f"best validation loss {summary['best_val_loss']:.4g} at epoch {summary['best_epoch']}; "
            f"run directory {run}"
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import UserError
    from ..fileio import check_output_path
    from ..student import export_torchscript, load_student

    src = Path(args.run)
    if src.is_dir():
        ckpt = src / "checkpoints" / f"{args.checkpoint}.pt"
        if not ckpt.is_file():
            raise UserError(f"{ckpt} does not exist: train first (mlff-distill train ... -o {src}) or pick --checkpoint")
    elif src.is_file():
        ckpt = src
    else:
        raise UserError(f"{src} does not exist: give a run directory or a checkpoint file")
    out = check_output_path(args.output, "-o", create_parents=True)
    if out.resolve() == ckpt.resolve():
        raise UserError(f"-o {out} would overwrite the checkpoint it exports: choose another output path")
    model = load_student(ckpt)
    model.eval()
    export_torchscript(model, out)
    print(f"exported {ckpt} -> {out} (TorchScript)")
    return 0
