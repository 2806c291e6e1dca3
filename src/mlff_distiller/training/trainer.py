"""``DistillationTrainer``: fit a student to a teacher-labelled dataset.

Run directory written by :meth:`DistillationTrainer.fit` (process 0 only under DDP)::

    RUN/config.yaml              resolved TrainConfig (student section resolved too)
    RUN/normalization.json       NormalizationStats of the training split (eV, eV/A, A)
    RUN/split.json               train / validation structure indices and how they were split
    RUN/metrics.csv              one row per epoch: losses, validation errors, lr, time
    RUN/checkpoints/best.pt      EMA weights with the lowest validation loss (save_student format)
    RUN/checkpoints/last.pt      the newest weights + the whole training state (for resume)
    RUN/parity.png               student vs teacher on the validation split (best weights)
    RUN/train.log                the run's log: set-up, per-epoch metrics, warnings (appended on resume)

Checkpoints, config, statistics, split and plot are written under a temporary name and
renamed, so a kill at any moment leaves either the previous or the new version; metrics
rows are appended and flushed to disk one by one. ``last.pt`` holds the raw weights, the AdamW
state, the learning-rate schedule, the EMA, torch's RNG states and the position in the
data order (epoch, batch), which is enough to continue bit for bit: a run interrupted
and resumed reaches the same weights as one that was never interrupted.

Multi-process training: start the same command under ``torchrun --nproc_per_node P``;
the trainer joins the process group (gloo on CPU, nccl on CUDA), wraps the model in
``DistributedDataParallel`` and deals each global batch across the processes.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from .. import fields as F
from ..data.graph import collate
from ..data.split import chemistry_keys, provenance_groups, split_keeping_in_training
from ..errors import ConfigError, DatasetError, UserError
from ..fileio import atomic_path, atomic_write_text, is_temp_path, read_settings_file
from ..logs import log_to_file, say
from .config import TrainConfig
from .data import BatchOrder, GraphListDataset, to_device, training_statistics
from .loss import MetricSums, distillation_loss, label_counts
from .schedule import EMA, LRSchedule

log = logging.getLogger(__name__)
CHECKPOINT_KIND = "mlff-distiller-train-state"
CHECKPOINT_VERSION = 1
METRIC_COLUMNS = (
    "epoch", "step", "lr", "train_loss", "val_loss", "val_energy_mae_per_atom", "val_energy_rmse_per_atom",
    "val_force_mae", "val_force_rmse", "val_force_rel_rmse", "val_stress_mae", "best", "elapsed_s",
)
# Fields that may differ between the saved config and the one given on resume.
RESUME_MUTABLE = ("max_epochs", "max_steps", "early_stopping_patience", "checkpoint_every", "num_workers", "device",
                  "in_memory", "tensorboard")


@dataclasses.dataclass
class TrainState:
    """The training loop's position and bookkeeping, saved in ``last.pt`` for a bitwise resume.

    ``step``/``epoch``/``batch_in_epoch``: where the loop is; ``best_*``: the best validation
    loss (under the current stage's weights) and its epoch and metrics; ``bad_epochs``: epochs
    without a better one (early stopping); ``stage``: ``main`` or ``final``; ``rows``: metrics.csv
    rows written; ``train_loss_sum``/``_n``: the running epoch's mean; ``elapsed_s``: wall seconds.
    """

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    done: bool = False
    stopped: str = ""
    elapsed_s: float = 0.0
    train_loss_sum: float = 0.0
    train_loss_n: int = 0
    rows: int = 0
    best_metrics: dict = dataclasses.field(default_factory=dict)
    stage: str = "main"

    def state_dict(self) -> dict:
        """Plain Python values (``torch.load(weights_only=True)`` reads them back)."""
        return {k: (float(v) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_state_dict(cls, d: dict) -> "TrainState":
        """From :meth:`state_dict`; keys a checkpoint lacks (older code) keep their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclasses.dataclass
class _Loop:
    """What the training loop's pieces share during one ``fit``."""

    model: torch.nn.Module
    train_model: torch.nn.Module  # ``model``, or its DDP wrapper with several processes
    params: list
    optimizer: torch.optim.Optimizer
    order: BatchOrder
    schedule: LRSchedule
    ema: EMA | None
    state: TrainState
    want_stress: bool
    t_start: float  # perf_counter at the run's start, earlier runs' wall time included
    bar: object = None


class TrainingDivergedError(UserError):
    """The loss became NaN or infinite."""


# -- distributed helpers ------------------------------------------------------------------
class _Dist:
    """The process group (or a single process)."""

    def __init__(self, device_kind: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.owns_group = False
        if device_kind == "auto":
            device_kind = "cuda" if torch.cuda.is_available() else "cpu"
        if device_kind == "cuda" and not torch.cuda.is_available():
            raise ConfigError("training.device = 'cuda' but torch sees no CUDA device: use device: cpu or auto")
        self.device = torch.device(f"cuda:{self.local_rank}" if device_kind == "cuda" else "cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
                self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return t
        import torch.distributed as dist

        t = t.to(self.device)
        dist.all_reduce(t)
        return t.cpu()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's decision, for everyone (stops and errors must be collective)."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], device=self.device)
        dist.broadcast(t, 0)
        return bool(t.item())

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _worker_context(num_workers: int):
    """DataLoader workers start from a fork server, not a plain fork: a fork of a process
    that has already started threads (JAX, a Dask client, OpenMP pools) can deadlock."""
    return "forkserver" if num_workers > 0 else None


# -- file helpers ----------------------------------------------------------------------------
_atomic_write = atomic_write_text  # one implementation: mlff_distiller.fileio


def _dump_yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False, default_flow_style=None)


def load_train_config(path) -> TrainConfig:
    """A ``TrainConfig`` from a YAML file holding either the section itself or a recipe
    with a ``training:`` section."""
    return TrainConfig.from_dict(read_settings_file(path, "training", "config file"))


class DistillationTrainer:
    """Train a student on a teacher-labelled dataset file.

    Parameters
    ----------
    dataset_path:
        HDF5 dataset written by :class:`mlff_distiller.data.store.DatasetWriter` with
        ``energy`` (and ``forces`` when ``forces_weight > 0``, ``stress`` when
        ``stress_weight > 0``) labels, in eV, eV/A, eV/A^3.
    config:
        :class:`TrainConfig` (or a plain dict for :meth:`TrainConfig.from_dict`).
    run_dir:
        Output directory. It must not hold a previous run unless ``resume=True``.
    resume:
        ``True``: continue the run in ``run_dir`` from ``checkpoints/last.pt``. ``"auto"``:
        continue it if ``last.pt`` exists, otherwise start afresh, first removing what a run
        killed before its first checkpoint left (for drivers that re-run a command).
    progress:
        Show progress (process 0 only): a tqdm bar on a terminal, at most a line every 30 s otherwise.
        The per-epoch metric lines are logged (and printed) either way; see :mod:`mlff_distiller.logs`.
    callbacks:
        Functions ``cb(trainer, event, info)`` called on ``"step"`` (after each optimizer
        step, ``info = {"step", "loss", "compute_s"}``, the last being the seconds spent in
        forward, backward, clipping and the AdamW step) and ``"epoch"`` (after validation, ``info`` = the
        metrics row). A callback may raise ``KeyboardInterrupt`` to stop the run the way
        Ctrl-C does (the state after the last finished step is saved).
    init_from:
        Warm start: a student checkpoint or run directory whose weights *and normalization
        statistics* the new run starts from (instead of fresh weights and statistics of this
        dataset); its architecture must equal ``config.student`` (elements default to its
        elements). Pass it again when resuming such a run, so that the statistics agree.
    """

    def __init__(self, dataset_path, config: TrainConfig | dict, run_dir, *, resume: bool | str = False,
                 progress: bool = True, callbacks: list[Callable] | None = None, init_from=None):
        self.dataset_path = Path(dataset_path)
        self.init_from = init_from
        self.config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)  # validated
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.progress = progress
        self.callbacks = list(callbacks or [])
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.last_path = self.ckpt_dir / "last.pt"
        self.best_path = self.ckpt_dir / "best.pt"
        self._energy_skips: list[int] = []  # structures trained without their energy
        self._check_run_dir()

    # -- set-up ------------------------------------------------------------------------
    def _check_run_dir(self) -> None:
        rd = self.run_dir
        if rd.exists() and not rd.is_dir():
            raise UserError(f"run directory {rd} exists and is not a directory: choose another -o")
        if self.resume == "auto":
            self.resume = self.last_path.is_file()
            if not self.resume and rd.is_dir() and os.environ.get("RANK", "0") == "0":
                self._clear_unstarted_run()
        if self.resume:
            if not self.last_path.is_file():
                raise UserError(f"cannot resume: {self.last_path} does not exist; start a new run without --resume")
            saved = load_train_config(rd / "config.yaml") if (rd / "config.yaml").is_file() else None
            if saved is not None:
                self._check_resume_config(saved)
        elif rd.is_dir() and any(rd.iterdir()) and os.environ.get("RANK", "0") == "0":
            # Under torchrun only process 0 checks: it may already be writing here when a
            # slower process gets to this line (if the check fails there, torchrun stops all).
            raise UserError(f"run directory {rd} is not empty: pass --resume to continue it or choose another -o")

    def _clear_unstarted_run(self) -> None:
        """Remove the files of a run killed before its first checkpoint (``resume="auto"``).

        Only files this trainer writes are removed; anything else in the directory means it
        is not a run directory, and it is left alone with an error.
        """
        rd = self.run_dir
        ours = {"config.yaml", "normalization.json", "split.json", "metrics.csv", "parity.png", "checkpoints",
                "train.log"}
        names = {p.name for p in rd.iterdir()}
        foreign = sorted(n for n in names if n not in ours and not is_temp_path(n))
        ckpts = sorted(p.name for p in self.ckpt_dir.iterdir()) if self.ckpt_dir.is_dir() else []
        foreign += [f"checkpoints/{n}" for n in ckpts if n != "best.pt" and not n.startswith(".")]
        if foreign:
            raise UserError(
                f"run directory {rd} holds files that are not from an unstarted run ({', '.join(foreign[:3])}): "
                "choose another -o"
            )
        for n in ckpts:
            (self.ckpt_dir / n).unlink()
        for n in names:
            if (rd / n).is_dir():
                (rd / n).rmdir()
            else:
                (rd / n).unlink()

    def _check_resume_config(self, saved: TrainConfig) -> None:
        mine, theirs = self.config.to_dict(), saved.to_dict()
        # The saved student section is resolved (elements, preset sizes); compare what the user set.
        s_mine = mine.pop("student")
        s_saved = theirs.pop("student")
        if mine.get("stress_weight") is None:  # auto: the saved run holds the value it resolved to
            mine["stress_weight"] = theirs.get("stress_weight")
        diff = [k for k in mine if k not in RESUME_MUTABLE and mine[k] != theirs.get(k)]
        from ..student import StudentConfig

        s_mine_resolved = StudentConfig.from_dict(s_mine).to_dict()
        diff += [f"student.{k}" for k in s_mine if s_saved.get(k) != s_mine_resolved[k]
                 and not (k == "elements" and not s_mine[k])]
        if diff:
            raise ConfigError(
                f"resume config differs from {self.run_dir / 'config.yaml'} in {', '.join(diff)}; "
                "resume with the saved config (omit --config) or start a new run"
            )

    def _open_data(self, scfg):
        """Check labels and elements, split, and build the train / validation datasets.

        Fills ``scfg.elements`` from the dataset when it is empty. Returns
        ``(train_set, val_set, train_idx, val_idx, split_kind)``; with ``in_memory`` the sets
        hold ready graphs, otherwise they read the file and build neighbour lists per item.
        """
        from ..data.dataset import MolecularDataset
        from ..data.store import DatasetReader

        reader = DatasetReader(self.dataset_path)
        try:
            self.label_fields = self._check_dataset(reader, scfg)
            groups = provenance_groups(reader)
            chemistry = chemistry_keys(reader)
            no_energy = self._energy_skipped(reader)
        finally:
            reader.close()
        # structures trained without their energy are never held out (split_keeping_in_training)
        train_idx, val_idx, split_kind = split_keeping_in_training(groups, no_energy, self.config.val_fraction,
                                                                   self.config.seed, chemistry)
        full = MolecularDataset(self.dataset_path, scfg.cutoff, preload=self.config.in_memory, no_energy=no_energy)
        if self.config.in_memory:
            graphs = list(self._iter_items(full, "neighbour lists"))
            train_set = GraphListDataset([graphs[i] for i in train_idx])
            val_set = GraphListDataset([graphs[i] for i in val_idx])
        else:
            train_set = MolecularDataset(self.dataset_path, scfg.cutoff, indices=train_idx, no_energy=no_energy)
            val_set = MolecularDataset(self.dataset_path, scfg.cutoff, indices=val_idx, no_energy=no_energy)
        return train_set, val_set, train_idx, val_idx, split_kind

    def _energy_skipped(self, reader) -> list[int]:
        """Indices of the structures trained without their energy (``energy_skip_sources``)."""
        prefixes = tuple(self.config.energy_skip_sources)
        sources = reader.column("source") if prefixes else []
        self._energy_skips = [i for i, src in enumerate(sources) if str(src).startswith(prefixes)]
        return self._energy_skips

    def _iter_items(self, dataset, desc: str):
        """Items of ``dataset`` in order, built by ``num_workers`` processes, with a progress bar."""
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, collate_fn=_identity,
                                             num_workers=self.config.num_workers,
                                             multiprocessing_context=_worker_context(self.config.num_workers))
        bar = self._bar(total=len(dataset), desc=desc, unit="struct")
        try:
            for item in loader:
                if bar is not None:
                    bar.update(1)
                yield item
        finally:
            if bar is not None:
                bar.close()

    def _check_dataset(self, reader, scfg) -> tuple:
        label_fields = tuple(reader.label_fields)
        if self.config.stress_weight is None:  # auto: train stress when the data has it
            self.config = dataclasses.replace(self.config, stress_weight=1.0 if F.STRESS in label_fields else 0.0)
        cfg = self.config
        if F.ENERGY not in label_fields and cfg.energy_weight > 0:
            raise DatasetError(
                f"{self.dataset_path} has no energy labels (labels: {', '.join(label_fields) or 'none'}): "
                "label it with a teacher, or set training.energy_weight: 0"
            )
        if F.FORCES not in label_fields and cfg.forces_weight > 0:
            raise DatasetError(
                f"{self.dataset_path} has no force labels but training.forces_weight = {cfg.forces_weight}: "
                "label forces with the teacher, or set training.forces_weight: 0"
            )
        if F.STRESS not in label_fields and cfg.stress_weight > 0:
            raise DatasetError(
                f"{self.dataset_path} has no stress labels but training.stress_weight = {cfg.stress_weight}: "
                "label stress with the teacher, or set training.stress_weight: 0"
            )
        elements = reader.elements()
        missing = sorted(set(elements) - set(scfg.elements)) if scfg.elements else []
        if missing:
            from ase.data import chemical_symbols

            names = ", ".join(chemical_symbols[z] for z in missing)
            raise ConfigError(
                f"the dataset holds element(s) {names} missing from training.student.elements: add them or leave "
                "elements empty to take them from the dataset"
            )
        if not scfg.elements:
            scfg.elements = list(elements)
        self._check_finite_labels(reader, label_fields)
        return label_fields

    def _check_finite_labels(self, reader, label_fields) -> None:
        """Refuse NaN/inf labels by name (they would only show up later as a diverged loss)."""
        bad: dict[str, np.ndarray] = {}
        for name in (F.ENERGY, F.STRESS):
            if name in label_fields:
                vals = reader.column(name).reshape(len(reader), -1)
                bad[name] = reader.column(name + "_mask") & ~np.isfinite(vals).all(axis=1)
        if F.FORCES in label_fields:
            rows = []
            for offsets, forces in reader.iter_atom_blocks(F.FORCES):
                ok = np.isfinite(forces).all(axis=1)
                per = np.add.reduceat(~ok, offsets[:-1]) if len(offsets) > 1 and len(ok) else np.zeros(len(offsets) - 1)
                rows.append(np.asarray(per, dtype=bool) & (np.diff(offsets) > 0))
            bad[F.FORCES] = reader.column(F.FORCES + "_mask") & (np.concatenate(rows) if rows else np.zeros(0, bool))
        parts = []
        for name, mask in bad.items():
            idx = np.flatnonzero(mask)
            if len(idx):
                shown = ", ".join(str(i) for i in idx[:5]) + (", ..." if len(idx) > 5 else "")
                parts.append(f"{name} of {len(idx)} structure(s) ({shown})")
        if parts:
            raise DatasetError(
                f"{self.dataset_path} has NaN/inf labels: {'; '.join(parts)}; `mlff-distill validate` flags them: "
                "drop those structures (or relabel them) before training"
            )

    def _bar(self, **kw):
        if not (self.progress and self._dist.main):
            return None
        from ..logs import progress

        return progress(leave=False, **kw)

    def _emit(self, event: str, info: dict) -> None:
        for cb in self.callbacks:
            cb(self, event, info)

    # -- main entry ------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train until ``max_epochs`` / ``max_steps`` / early stopping; return a summary dict.

        The summary holds ``best_val_loss``, ``best_epoch``, ``epochs``, ``steps``,
        ``stopped`` (why training ended) and ``val`` (the best epoch's metrics).
        """
        cfg = self.config
        self._dist = _Dist(cfg.device)
        try:
            with contextlib.ExitStack() as self._exit_stack:  # holds the log file once the run directory exists
                return self._fit()
        finally:
            self._dist.close()

    def _fit(self) -> dict:
        loop = self._start_run()
        dist = self._dist
        try:
            while not loop.state.done:
                self._run_epoch(loop)
        except KeyboardInterrupt:
            # Between steps the state is consistent: keep it so that --resume loses nothing.
            if not self._mutating:
                self._save_last_of(loop)
            raise
        finally:
            if loop.bar is not None:
                loop.bar.close()
            if self._tb is not None:
                self._tb.close()
        dist.barrier()
        if dist.main:
            self._parity_plot(loop.ema)
        return self._summary(loop.state)

    def _start_run(self) -> _Loop:
        """Student config and dtype, the built (or restored) run, the run files and log, the
        DDP wrapper, TensorBoard and the progress bar: everything the loop needs."""
        from ..student import StudentConfig

        cfg, dist = self.config, self._dist
        scfg = StudentConfig.from_dict(cfg.student)
        SummaryWriter = _summary_writer_class() if cfg.tensorboard else None
        if cfg.batch_size % dist.world:
            BatchOrder(1, cfg.batch_size, dist.world, dist.rank, cfg.seed)  # raises the ConfigError
        self.dtype = torch.float64 if scfg.dtype == "float64" else torch.float32

        model, params, optimizer, order, schedule, ema, split = self._build(scfg)
        cfg = self.config  # stress_weight resolved against the dataset's labels
        total_steps = planned_steps(cfg, order.steps_per_epoch)
        state = self._open_run(model, optimizer, schedule, ema, split, order.steps_per_epoch, total_steps)
        train_model = self._ddp_wrap(model)

        want_stress = cfg.stress_weight > 0 and F.STRESS in self.label_fields
        self._mutating = False
        t_start = time.perf_counter() - state.elapsed_s
        self._tb = None
        if cfg.tensorboard and dist.main:
            # purge_step drops events a killed run logged after the checkpoint we resume from
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"),
                                     purge_step=state.step + 1 if state.step else None)
        bar = self._bar(total=total_steps, initial=min(state.step, total_steps), desc="training", unit="step")
        return _Loop(model, train_model, params, optimizer, order, schedule, ema, state, want_stress, t_start, bar)

    def _open_run(self, model, optimizer, schedule, ema, split, steps_per_epoch: int,
                  total_steps: int) -> TrainState:
        """The resumed state (or a fresh one, with the run files written); opens train.log and
        says what is trained; all processes wait for each other at the end."""
        dist = self._dist
        train_idx, val_idx, split_kind = split
        state = TrainState()
        if self.resume:
            state = self._restore(model, optimizer, schedule, ema, state)
        else:
            self._write_run_files(train_idx, val_idx, split_kind)
        if dist.main:
            self._exit_stack.enter_context(log_to_file(self.run_dir / "train.log"))
            say(f"training {self.run_dir}: {len(self.train_set)} training and {len(self.val_set)} validation "
                f"structures ({split_kind} split), {steps_per_epoch} steps per epoch, up to {total_steps} steps, "
                f"device {dist.device}" + (f", {dist.world} processes" if dist.world > 1 else "")
                + (f"; {len(self._energy_skips)} structures without their energy (energy_skip_sources)"
                   if self._energy_skips else "")
                + (" (resuming)" if self.resume else ""), log)
        dist.barrier()
        return state

    def _run_epoch(self, loop: _Loop) -> None:
        """The rest of the current epoch's steps (up to ``max_steps``), then validation, the
        metrics row, the stopping decision and the epoch line."""
        cfg, state = self.config, loop.state
        epoch = state.epoch
        batches = loop.order.epoch(epoch)
        loader = self._loader(self.train_set, batches[state.batch_in_epoch:])
        loop.model.train()
        for batch in loader:
            self._train_step(loop, batch, epoch)
            if state.step % cfg.checkpoint_every == 0:
                self._save_last_of(loop)
            if cfg.max_steps and state.step >= cfg.max_steps:
                break
        finished_epoch = state.batch_in_epoch >= len(batches)
        hit_max_steps = bool(cfg.max_steps) and state.step >= cfg.max_steps
        row = self._end_epoch(state, loop.schedule, loop.ema, loop.t_start)
        if finished_epoch:
            state.epoch += 1
            state.batch_in_epoch = 0
        self._check_done(state, hit_max_steps)
        if state.done:
            self._save_last_of(loop)
        # Otherwise the periodic checkpoints suffice: a resume from one mid-epoch (or
        # before an epoch's validation) repeats the same steps and rewrites the same rows.
        if self._dist.main:
            say(_epoch_line(row), log)
        self._emit("epoch", row)

    def _train_step(self, loop: _Loop, batch, epoch: int) -> None:
        """One optimizer step on ``batch`` (EMA update, bookkeeping, bar, TensorBoard, ``step`` event)."""
        state = loop.state
        batch = to_device(batch, self._dist.device)
        lr = loop.schedule.apply(state.step)
        loss_value, t_compute = self._forward_backward(loop.train_model, batch, loop.optimizer, loop.params,
                                                       state.step, loop.want_stress)
        self._mutating = True
        t_step = time.perf_counter()
        loop.optimizer.step()
        t_compute += time.perf_counter() - t_step
        if loop.ema is not None:
            loop.ema.update(loop.model)
        state.step += 1
        state.batch_in_epoch += 1
        state.train_loss_sum += loss_value
        state.train_loss_n += 1
        self._mutating = False
        if loop.bar is not None:
            loop.bar.update(1)
            loop.bar.set_postfix(epoch=epoch, loss=f"{loss_value:.4g}", lr=f"{lr:.2e}")
        if self._tb is not None:
            self._tb.add_scalar("train/loss", loss_value, state.step)
            self._tb.add_scalar("train/lr", lr, state.step)
        self._emit("step", {"step": state.step, "loss": loss_value, "compute_s": t_compute})

    def _save_last_of(self, loop: _Loop) -> None:
        """``last.pt`` of the loop's current state (wall time so far included)."""
        loop.state.elapsed_s = time.perf_counter() - loop.t_start
        if self._dist.main:
            self._save_last(loop.model, loop.optimizer, loop.schedule, loop.ema, loop.state)

    def _ddp_wrap(self, model):
        """``model`` for the training steps: itself, or wrapped in DDP with several processes."""
        dist = self._dist
        if dist.world == 1:
            return model
        import warnings

        from torch.nn.parallel import DistributedDataParallel as DDP

        # A (1, F) readout weight's gradient has strides (1, 1) instead of (F, 1): same memory
        # order, harmless, but DDP warns on every step.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return DDP(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)

    def _check_done(self, state: TrainState, hit_max_steps: bool) -> None:
        """Set ``state.done`` / ``state.stopped`` when a budget or early stopping ends the run."""
        cfg = self.config
        if hit_max_steps:
            state.done, state.stopped = True, "max_steps"
        elif state.epoch >= cfg.max_epochs:
            state.done, state.stopped = True, "max_epochs"
        elif cfg.early_stopping_patience and state.bad_epochs >= cfg.early_stopping_patience:
            state.done, state.stopped = True, "early_stopping"

    def _forward_backward(self, train_model, batch, optimizer, params, step: int, want_stress: bool):
        """Loss and gradients of one global batch (weights of the stage at ``step``), gradient
        clipping; returns the global batch's loss (the same number on every process) and the
        seconds spent. Raises :class:`TrainingDivergedError` on a non-finite loss."""
        cfg, dist = self.config, self._dist
        weights = cfg.stage_weights(self._in_final_stage(step))
        counts = dist.all_sum(label_counts(batch))
        t0 = time.perf_counter()
        out = train_model(batch, compute_forces=cfg.forces_weight > 0, compute_stress=want_stress)
        loss = distillation_loss(out, batch, weights, counts, dist.world)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        loss_value = float(dist.all_sum(loss.detach().double().reshape(1).cpu() / dist.world))
        if not math.isfinite(loss_value):
            raise TrainingDivergedError(
                f"training diverged at step {step + 1} (loss {loss_value}); the last "
                f"checkpoint is untouched: lower training.lr (now {cfg.lr:g}) or set grad_clip, "
                "then start a new run"
            )
        return loss_value, time.perf_counter() - t0

    def _build(self, scfg):
        """Data, statistics, student, optimizer, batch order, schedule and EMA of a new (or
        resumed) run; sets ``self.train_set``, ``val_set``, ``stats``, ``model``, ``eval_model``."""
        from ..student import build_student

        init = self._warm_start_model(scfg)
        self.train_set, self.val_set, train_idx, val_idx, split_kind = self._open_data(scfg)
        cfg = self.config  # stress_weight resolved against the dataset's labels
        device, dist = self._dist.device, self._dist
        if init is not None:
            stats = init.stats
        else:
            train_items = (self.train_set.graphs if isinstance(self.train_set, GraphListDataset)
                           else self._iter_items(self.train_set, "statistics"))
            stats = training_statistics(train_items, scfg.cutoff, scfg.elements)
        self.stats = stats
        self.student_config = scfg

        # Same initial weights on every process and in every (resumed) run.
        torch.manual_seed(cfg.seed)
        model = build_student(scfg, stats)
        if init is not None:
            model.load_state_dict(init.state_dict())
        model = model.to(device)
        self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        order = BatchOrder(len(self.train_set), cfg.batch_size, dist.world, dist.rank, cfg.seed)
        steps_per_epoch = order.steps_per_epoch
        total_steps = planned_steps(cfg, steps_per_epoch)
        self._final_step = cfg.final_stage_step(total_steps)
        schedule = LRSchedule(optimizer, cfg.lr, cfg.schedule, cfg.warmup_steps, total_steps,
                              cfg.min_lr_ratio, cfg.plateau_factor, cfg.plateau_patience)
        ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        eval_model = copy.deepcopy(model)
        self.eval_model = eval_model
        return model, params, optimizer, order, schedule, ema, (train_idx, val_idx, split_kind)

    def _warm_start_model(self, scfg):
        """The student of ``init_from`` (or None); fills empty ``scfg.elements`` from it and
        checks that its architecture is the configured one."""
        if self.init_from is None:
            return None
        from ..student import StudentConfig, load_student

        init = load_student(self.init_from)
        if not scfg.elements:
            scfg.elements = list(init.elements)
        mine = StudentConfig.from_dict(scfg.to_dict()).to_dict()
        theirs = init.config.to_dict()
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        if diff:
            raise ConfigError(
                f"warm start from {self.init_from}: its student differs from training.student in {', '.join(diff)}; "
                "use the same student section or start without a warm start"
            )
        return init

    # -- pieces of the loop ------------------------------------------------------------------
    def _loader(self, dataset, batches):
        from functools import partial

        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batches,
            collate_fn=partial(collate, dtype=self.dtype),
            num_workers=self.config.num_workers,
            multiprocessing_context=_worker_context(self.config.num_workers),
        )

    def _in_final_stage(self, steps_done: int) -> bool:
        return self._final_step is not None and steps_done >= self._final_step

    def _weights_for_eval(self, ema) -> torch.nn.Module:
        src = ema.shadow if ema is not None else self.model.state_dict()
        self.eval_model.load_state_dict(src)
        self.eval_model.eval()
        return self.eval_model

    def evaluate(self, model: torch.nn.Module, dataset, shard: bool = True, collect: bool = False,
                 final: bool = False):
        """Validation metrics of ``model`` on ``dataset`` (all processes take a share); the
        ``loss`` entry uses the loss weights of the main stage, or of the final one."""
        dist, cfg = self._dist, self.config
        n = len(dataset)
        idx = list(range(dist.rank, n, dist.world)) if shard else list(range(n))
        bs = max(cfg.batch_size // dist.world, 1)
        batches = [idx[k : k + bs] for k in range(0, len(idx), bs)]
        sums = MetricSums()
        pairs = {"e_pred": [], "e_ref": [], "f_pred": [], "f_ref": []}
        want_stress = F.STRESS in self.label_fields and cfg.stress_weight > 0
        for batch in self._loader(dataset, batches):
            batch = to_device(batch, dist.device)
            out = model(batch, compute_forces=F.FORCES in self.label_fields, compute_stress=want_stress)
            out = {k: v.detach() for k, v in out.items()}
            sums.add(out, batch)
            if collect:
                n_at = batch[F.N_ATOMS].double().cpu()
                if F.ENERGY + "_mask" in batch:
                    m = batch[F.ENERGY + "_mask"].cpu()
                    pairs["e_pred"].append((out[F.ENERGY].double().cpu() / n_at)[m])
                    pairs["e_ref"].append((batch[F.ENERGY].double().cpu() / n_at)[m])
                if F.FORCES + "_mask" in batch and F.FORCES in out:
                    m = batch[F.FORCES + "_mask"][batch[F.BATCH]].cpu()
                    pairs["f_pred"].append(out[F.FORCES].double().cpu()[m].ravel())
                    pairs["f_ref"].append(batch[F.FORCES].double().cpu()[m].ravel())
        if shard:
            sums.v = dist.all_sum(sums.v)
        metrics = sums.metrics(cfg.stage_weights(final))
        if collect:
            return metrics, {k: (torch.cat(v).numpy() if v else np.zeros(0)) for k, v in pairs.items()}
        return metrics

    def _end_epoch(self, state, schedule, ema, t_start) -> dict:
        final = self._in_final_stage(state.step)
        if final and state.stage != "final":
            # The final stage's loss is another quantity: best.pt is chosen among its epochs only.
            state.stage, state.best_val_loss, state.bad_epochs = "final", math.inf, 0
            if self._dist.main:
                e, f, _ = self.config.stage_weights(True)
                say(f"final stage from step {state.step}: loss weights energy {e:g}, forces {f:g}; "
                    "best.pt is chosen from here on", log)
        metrics = self.evaluate(self._weights_for_eval(ema), self.val_set, final=final)
        val_loss = metrics["loss"]
        improved = val_loss < state.best_val_loss
        if improved:
            state.best_val_loss = val_loss
            state.best_epoch = state.epoch
            state.best_metrics = {k: float(v) for k, v in metrics.items()}
            state.bad_epochs = 0
            if self._dist.main:
                self._save_best(state, metrics)
        else:
            state.bad_epochs += 1
        schedule.epoch_end(val_loss)
        train_loss = state.train_loss_sum / max(state.train_loss_n, 1)
        state.train_loss_sum, state.train_loss_n = 0.0, 0
        row = {
            "epoch": state.epoch, "step": state.step, "lr": schedule.optimizer.param_groups[0]["lr"],
            "train_loss": train_loss, "val_loss": val_loss,
            "val_energy_mae_per_atom": metrics["energy_mae_per_atom"],
            "val_energy_rmse_per_atom": metrics["energy_rmse_per_atom"],
            "val_force_mae": metrics["force_mae"], "val_force_rmse": metrics["force_rmse"],
            "val_force_rel_rmse": metrics["force_rel_rmse"], "val_stress_mae": metrics["stress_mae"],
            "best": int(improved), "elapsed_s": round(time.perf_counter() - t_start, 3),
        }
        if self._dist.main:
            self._append_metrics(row)
            if getattr(self, "_tb", None) is not None:
                for key in METRIC_COLUMNS[4:11]:
                    if math.isfinite(row[key]):
                        self._tb.add_scalar(key.replace("val_", "val/", 1), row[key], state.step)
        state.rows += 1
        return row

    # -- files ------------------------------------------------------------------------------
    def _write_run_files(self, train_idx, val_idx, split_kind) -> None:
        if not self._dist.main:
            return
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        resolved = self.config.to_dict()
        resolved["student"] = self.student_config.to_dict()
        _atomic_write(self.run_dir / "config.yaml", _dump_yaml(resolved))
        _atomic_write(self.run_dir / "normalization.json", self.stats.to_json() + "\n")
        split = {
            "dataset": str(self.dataset_path.resolve()), "kind": split_kind,
            "train": [int(i) for i in train_idx], "val": [int(i) for i in val_idx],
        }
        _atomic_write(self.run_dir / "split.json", json.dumps(split) + "\n")
        _atomic_write(self.run_dir / "metrics.csv", ",".join(METRIC_COLUMNS) + "\n")

    def _append_metrics(self, row: dict) -> None:
        with open(self.run_dir / "metrics.csv", "a", newline="") as fh:
            csv.writer(fh).writerow([_fmt(row[c]) for c in METRIC_COLUMNS])
            fh.flush()
            os.fsync(fh.fileno())

    def _save_best(self, state: dict, metrics: dict) -> None:
        from ..student import save_student

        save_student(self.best_path, self.eval_model, extra={  # atomic: temporary name + rename
            "epoch": int(state.epoch), "step": int(state.step),
            "val_metrics": {k: float(v) for k, v in metrics.items()},
        })

    def _save_last(self, model, optimizer, schedule, ema, state) -> None:
        from ..student import save_student

        train_state = {
            "kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "code_version": __version__,
            "state": state.state_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "config": self.config.to_dict(),
        }
        save_student(self.last_path, model, extra={"train_state": train_state})  # atomic

    def _restore(self, model, optimizer, schedule, ema, state) -> dict:
        try:
            ckpt = torch.load(self.last_path, map_location=self._dist.device, weights_only=True)
        except Exception as err:  # corrupt / foreign file
            raise UserError(f"cannot resume: {self.last_path} is unreadable ({type(err).__name__}); "
                            "start a new run in another directory") from None
        ts = None
        if isinstance(ckpt, dict):
            ts = ckpt.get("train_state") or (ckpt.get("extra") or {}).get("train_state")
        if not isinstance(ts, dict) or ts.get("kind") != CHECKPOINT_KIND:
            raise UserError(f"cannot resume: {self.last_path} holds no training state; start a new run")
        if ts.get("version") != CHECKPOINT_VERSION:
            raise UserError(
                f"cannot resume: {self.last_path} has training-state version {ts.get('version')}, this code "
                f"reads version {CHECKPOINT_VERSION}; start a new run"
            )
        model.load_state_dict(ts["model"])
        optimizer.load_state_dict(ts["optimizer"])
        schedule.load_state_dict(ts["schedule"])
        if ema is not None and ts["ema"] is not None:
            ema.load_state_dict(ts["ema"])
        torch.set_rng_state(ts["torch_rng"].cpu())
        if ts["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ts["cuda_rng"]])
        restored = TrainState.from_state_dict(ts["state"])
        if self._dist.main:
            self._truncate_metrics(restored.rows)
        if restored.done and restored.stopped in ("max_steps", "max_epochs"):
            # A longer run was asked for: carry on from where the finished one stopped.
            cfg = self.config
            more_steps = not cfg.max_steps or restored.step < cfg.max_steps
            more_epochs = restored.epoch < cfg.max_epochs
            if more_steps and more_epochs:
                restored.done, restored.stopped = False, ""
        return restored

    def _truncate_metrics(self, n_rows: int) -> None:
        """Keep the metrics rows written before the checkpoint: a resumed run writes the later ones again."""
        path = self.run_dir / "metrics.csv"
        if not path.is_file():
            _atomic_write(path, ",".join(METRIC_COLUMNS) + "\n")
            return
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        keep = [rows[0]] if rows else [list(METRIC_COLUMNS)]
        keep += [r for r in rows[1:] if r][:n_rows]
        _atomic_write(path, "".join(",".join(r) + "\n" for r in keep))

    def _parity_plot(self, ema) -> None:
        if not self.best_path.is_file():
            return
        from ..student import load_student

        best = load_student(self.best_path).to(self._dist.device)
        best.eval()
        metrics, pairs = self.evaluate(best, self.val_set, shard=False, collect=True)
        write_parity_plot(self.run_dir / "parity.png", pairs, metrics)

    def _summary(self, state) -> dict:
        return {
            "best_val_loss": state.best_val_loss, "best_epoch": state.best_epoch,
            "epochs": state.epoch, "steps": state.step, "stopped": state.stopped,
            "val": dict(state.best_metrics or {}), "run_dir": str(self.run_dir),
        }


def planned_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Optimizer steps the run will take: the first of ``max_epochs`` and ``max_steps`` to be
    reached (the cosine schedule decays over exactly this many)."""
    by_epochs = cfg.max_epochs * steps_per_epoch
    return min(cfg.max_steps, by_epochs) if cfg.max_steps else by_epochs


def _summary_writer_class():
    """TensorBoard's ``SummaryWriter``, or a one-line error naming the missing package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "training.tensorboard: true needs the tensorboard package: pip install tensorboard, "
            "or set tensorboard: false (metrics.csv is always written)"
        ) from None
    return SummaryWriter


def _epoch_line(row: dict) -> str:
    """The one-line summary of an epoch's metrics row (energies meV/atom, forces meV/A)."""
    return (
        f"epoch {row['epoch']} step {row['step']}: train loss {row['train_loss']:.4g}, val loss "
        f"{row['val_loss']:.4g}, energy MAE {1e3 * row['val_energy_mae_per_atom']:.3g} meV/atom, "
        f"force MAE {1e3 * row['val_force_mae']:.3g} meV/A (RMSE/RMS {row['val_force_rel_rmse']:.3g}), "
        f"lr {row['lr']:.3g}" + (" *best*" if row["best"] else "")
    )


def _identity(item):
    return item


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.8g}"
    return str(v)


def write_parity_plot(path: Path, pairs: dict, metrics: dict) -> None:
    """Two panels: energy per atom (eV/atom) and force components (eV/A), student vs teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    panels = [
        (axes[0], pairs["e_ref"], pairs["e_pred"], "energy (eV/atom)",
         f"MAE {metrics['energy_mae_per_atom'] * 1000:.3g} meV/atom"),
        (axes[1], pairs["f_ref"], pairs["f_pred"], "force component (eV/A)",
         f"MAE {metrics['force_mae'] * 1000:.3g} meV/A, RMSE/RMS {metrics['force_rel_rmse']:.3g}"),
    ]
    for ax, ref, pred, label, title in panels:
        if len(ref):
            ax.scatter(ref, pred, s=4, alpha=0.5, edgecolors="none")
            lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        else:
            ax.text(0.5, 0.5, "no labels", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(f"teacher {label}")
        ax.set_ylabel(f"student {label}")
        ax.set_title(title, fontsize=9)
    fig.suptitle("validation split, best checkpoint (EMA weights)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, keep_suffix=True) as tmp:  # matplotlib picks the format from the suffix
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
