"""``mlff-distill train`` and ``mlff-distill export``.

``train DATASET --config C.yaml -o RUN [--resume]`` fits a student (see
:class:`~mlff_distiller.training.DistillationTrainer`); start it under
``torchrun --nproc_per_node P -m mlff_distiller.cli train ...`` for DDP.
``export RUN -o student.pt [--checkpoint best|last] [--format torchscript|metatomic]`` writes
the TorchScript file, or a metatomic model for LAMMPS / i-PI / ASE / torch-sim (docs/student.md).
"""

from __future__ import annotations

import argparse

from ..cliutil import add_output, add_progress, show_progress

# command-line overrides of TrainConfig fields: option -> (field, type, help)
OVERRIDES = {
    "--device": ("device", str, "cpu, cuda or auto (default: config, else auto)"),
    "--max-epochs": ("max_epochs", int, "stop after this many epochs"),
    "--max-steps": ("max_steps", int, "stop after this many optimizer steps (0: no step limit)"),
    "--batch-size": ("batch_size", int, "structures per optimizer step (the global batch under DDP)"),
    "--lr": ("lr", float, "peak learning rate"),
    "--seed": ("seed", int, "seed of the split, the initial weights and the data order"),
}


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
    p.add_argument("-c", "--config", help="YAML with the training settings (or a recipe with a training: section); "
                   "default: built-in defaults, or the run's saved config when resuming")
    add_output(p, "run directory to create (or to continue with --resume); its log: RUN/train.log")
    p.add_argument("--resume", action="store_true", help="continue the run in -o from checkpoints/last.pt")
    for opt, (name, typ, text) in OVERRIDES.items():
        p.add_argument(opt, dest=name, type=typ, default=None, help=f"override training.{name}: {text}")
    add_progress(p)
    p.set_defaults(func=_train)

    e = subparsers.add_parser(
        "export",
        help="export a trained student (TorchScript or metatomic)",
        description="Write RUN's student as a TorchScript file that runs without this package's model code, "
        "or (--format metatomic) as a metatomic atomistic model for LAMMPS (pair_style metatomic), i-PI, ASE "
        "and torch-sim. Units: eV, A.",
    )
    e.add_argument("run", help="run directory (from `mlff-distill train`) or a checkpoint .pt file")
    add_output(e, "TorchScript file to write, e.g. student.pt")
    e.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which checkpoint of the run directory (default: best, the EMA weights)")
    e.add_argument("--format", choices=("torchscript", "metatomic"), default="torchscript",
                   help="torchscript (default; StudentCalculator, torch.jit.load) or metatomic "
                   "(needs the [metatomic] extra)")
    e.set_defaults(func=_export)


def _train(args: argparse.Namespace) -> int:

    from ..data.io import require_dataset
    from ..fileio import check_output_path
    from .config import TrainConfig
    from .trainer import DistillationTrainer, load_train_config

    require_dataset(args.dataset)
    run = check_output_path(args.output, "-o", directory=True, create_parents=True)
    if args.config:
        cfg = load_train_config(args.config)
    elif args.resume and (run / "config.yaml").is_file():
        cfg = load_train_config(run / "config.yaml")
    else:
        cfg = TrainConfig()
    given = {name: getattr(args, name) for name, _, _ in OVERRIDES.values() if getattr(args, name) is not None}
    if given:
        cfg = cfg.replace(**given)
    trainer = DistillationTrainer(args.dataset, cfg, run, resume=args.resume, progress=show_progress(args))
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
            raise UserError(
                f"{ckpt} does not exist: train first (mlff-distill train ... -o {src}) or pick --checkpoint"
            )
    elif src.is_file():
        ckpt = src
    else:
        raise UserError(f"{src} does not exist: give a run directory or a checkpoint file")
    out = check_output_path(args.output, "-o", create_parents=True)
    if out.resolve() == ckpt.resolve():
        raise UserError(f"-o {out} would overwrite the checkpoint it exports: choose another output path")
    model = load_student(ckpt)
    model.eval()
    if args.format == "metatomic":
        from ..student.metatomic import export_metatomic

        export_metatomic(model, out)
        print(f"exported {ckpt} -> {out} (metatomic model: energy in eV, lengths in A)")
    else:
        export_torchscript(model, out)
        print(f"exported {ckpt} -> {out} (TorchScript)")
    return 0
