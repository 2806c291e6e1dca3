"""``mlff-distill label POOL --teacher SPEC -o dataset.h5``."""

from __future__ import annotations

import argparse
import os

from ..cliutil import add_config, add_output, add_progress, show_progress
from ..fileio import read_mapping_file


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "label",
        help="label a pool with a teacher on Dask (resumable)",
        description="Label every structure of an unlabelled pool with a teacher (energy eV, forces eV/A, "
        "stress eV/A^3) on a Dask cluster. Finished chunks are checkpointed next to the output "
        "(<out>.parts/); re-running the same command resumes. Structures the teacher cannot label go "
        "to the dataset's failures table.",
    )
    p.add_argument("pool", help="unlabelled pool: HDF5 from `mlff-distill generate` / `dataset import`, or any "
                   "structure file ASE reads (extxyz, traj, ...), imported without its labels next to the output")
    add_output(p, "labelled dataset file to write (HDF5)")
    p.add_argument(
        "--teacher",
        default=None,
        help="teacher name (chgnet, emt, orb-v2, ...) or a JSON/YAML mapping like "
        "'{\"name\": \"orb\", \"weights_path\": \"orb.ckpt\"}' or a .yaml/.json file (default: the "
        "config's teacher, else chgnet)",
    )
    add_config(p, "recipe YAML; its labeling: (and teacher:) sections are used")
    p.add_argument("--workers", type=int, default=None, help="local Dask worker processes (default 2)")
    p.add_argument("--threads-per-worker", type=int, default=None, help="math threads per worker (default 1)")
    p.add_argument("--chunk-size", type=int, default=None, help="structures per task (default: ~2 s of teacher time)")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    p.add_argument(
        "--min-distance", type=float, default=None,
        help="A; structures with two atoms closer than this are failures (default 0.5, 0 disables)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an output made from another pool or teacher")
    add_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..fileio import check_output_path
    from .config import LabelingConfig
    from .engine import label_pool

    check_output_path(args.output, "-o", create_parents=True)
    recipe: dict = {}
    if args.config:
        recipe = read_mapping_file(args.config, "--config", "labeling")
    cfg = LabelingConfig.from_dict(recipe.get("labeling"))
    teacher = args.teacher or recipe.get("teacher")
    if teacher is None:
        from ..teachers import DEFAULT_TEACHER

        teacher = DEFAULT_TEACHER
    overrides = {
        "workers": args.workers,
        "threads_per_worker": args.threads_per_worker,
        "chunk_size": args.chunk_size,
        "scheduler": args.scheduler,
        "min_distance": args.min_distance,
    }
    merged = {**cfg.to_dict(), **{k: v for k, v in overrides.items() if v is not None}}  # hpc: its typed form
    if args.scheduler:
        merged["hpc"] = None
    cfg = LabelingConfig.from_dict(merged)
    pool = args.pool
    from ..data.io import is_hdf5, pool_from_structures

    if os.path.isfile(pool) and not is_hdf5(pool):  # extxyz & co.: import on the fly, next to the output
        pool = pool_from_structures(pool, f"{args.output}.pool.h5", progress=show_progress(args))
    summary = label_pool(
        pool,
        teacher,
        args.output,
        n_workers=cfg.workers,
        threads_per_worker=cfg.threads_per_worker,
        chunk_size=cfg.chunk_size,
        scheduler=cfg.scheduler,
        hpc=cfg.hpc,
        min_distance=cfg.min_distance,
        overwrite=args.overwrite,
        progress=show_progress(args),
    )
    if summary.n_pool == 0:
        import logging

        logging.getLogger(__name__).warning("pool %s holds no structures: the output %s is an empty dataset; "
                                            "check the pool (mlff-distill dataset info %s)", pool, args.output, pool)
    print(summary)
    return 0
