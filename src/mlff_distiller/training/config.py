"""``TrainConfig``: the typed, validated ``training`` section of a recipe.

Every field has a default; :meth:`TrainConfig.from_dict` rejects unknown keys (naming
them) and bad values (naming the field and what is allowed) with a one-line
:class:`~mlff_distiller.errors.ConfigError`. The resolved config (defaults filled in) is
written to ``RUN/config.yaml`` by the trainer.

Units: losses are mean squared errors in ASE units -- energy per atom (eV/atom)^2,
forces (eV/A)^2, stress (eV/A^3)^2 -- multiplied by their weights; ``lr`` is the AdamW
learning rate for the model's raw parameters.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..settings import coerce_field, did_you_mean

SCHEDULES = ("cosine", "plateau", "constant")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Distillation training settings (see ``docs/training.md`` for each field)."""

    # The student: passed to ``StudentConfig.from_dict`` (preset, cutoff (A), elements, dtype...).
    # ``elements`` defaults to the elements present in the dataset.
    student: dict = field(default_factory=lambda: {"preset": "small", "cutoff": 5.0})
    # Loss weights: energy per atom (eV/atom)^2, forces (eV/A)^2, stress (eV/A^3)^2.
    # Energy 20 : forces 10 keeps the energy term alive to the end of a run; at 1 : 10 it fell
    # below 1 % of the loss and the student's absolute energies drifted by tens of meV/atom
    # (measured on the quickstart data: docs/training.md, "Defaults").
    energy_weight: float = 20.0
    forces_weight: float = 10.0
    # Stress is trained only on 3-D periodic structures that carry it (masked otherwise).
    # None (the default) = 1.0 when the dataset has stress labels, else 0 (molecules-only data
    # trains without error); an explicit number > 0 requires stress labels.
    stress_weight: float | None = None
    # Final stage (as MACE's second stage): from ``final_stage_start`` (a fraction of the planned
    # optimizer steps) on, the loss weights become ``final_energy_weight`` / ``final_forces_weight``
    # (None = unchanged), and best.pt is chosen among the epochs of this stage only, by the
    # validation loss under these weights. 1.0 turns the stage off.
    # Default: energy 100 : forces 10 over the last 30 % (MACE's second-stage ratio, 10 : 1); on the
    # quickstart data it took the held-out absolute energy error from 20.7 to 10.9 meV/atom and
    # the Si offset from +17 to +4 meV/atom (docs/training.md, "Defaults").
    final_stage_start: float = 0.7
    final_energy_weight: float | None = 100.0
    final_forces_weight: float | None = None
    # Optimiser: AdamW.
    lr: float = 1e-3
    weight_decay: float = 0.0
    # Schedule: linear warmup over ``warmup_steps`` optimizer steps, then
    # ``cosine`` decay to ``lr * min_lr_ratio`` at the last step, ``plateau`` (multiply by
    # ``plateau_factor`` once more than ``plateau_patience`` epochs in a row brought no
    # better validation loss, never below ``lr * min_lr_ratio``), or ``constant``.
    schedule: str = "cosine"
    warmup_steps: int = 50
    min_lr_ratio: float = 0.01
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    # Exponential moving average of the weights used for validation and best.pt; 0 = off.
    # 0.995 averages over ~200 steps: suited to runs of thousands of steps.
    ema_decay: float = 0.995
    # Clip the global gradient norm to this value; 0 = off.
    grad_clip: float = 10.0
    # Stop after this many epochs without a better validation loss; 0 = never. Off by default:
    # a cosine schedule does its best work in its last steps, which an early stop would cut.
    early_stopping_patience: int = 0
    # Global batch (structures per optimizer step, summed over DDP processes).
    batch_size: int = 8
    # The budget: whichever of ``max_epochs`` and ``max_steps`` comes first ends the run, and the
    # cosine schedule spans exactly that many steps. The default budget is in optimizer steps,
    # so that it does not shrink with a small dataset or grow with a large one.
    max_epochs: int = 1000
    # Stop after this many optimizer steps in total; 0 = only ``max_epochs`` limits.
    max_steps: int = 4000
    # Write checkpoints/last.pt every N optimizer steps (and at each epoch end).
    checkpoint_every: int = 100
    seed: int = 0
    # Fraction of the structures held out for validation, taken as whole provenance groups.
    val_fraction: float = 0.1
    # Keep every structure's graph (with its neighbour list) in RAM, built once: fastest.
    # False streams structures from the file and builds neighbour lists on the fly in
    # ``num_workers`` DataLoader processes, for datasets larger than memory.
    in_memory: bool = True
    num_workers: int = 0
    device: str = "auto"
    # Also log scalars to RUN/tensorboard (needs the optional ``tensorboard`` package).
    tensorboard: bool = False

    # -- construction --------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict | None) -> "TrainConfig":
        """Build from a plain dict (a recipe's ``training`` section); ``None`` = defaults."""
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ConfigError(f"training config must be a mapping of field: value, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"unknown training config key(s) {', '.join(map(repr, unknown))}"
                              f"{did_you_mean(unknown[0], known)}; allowed: {', '.join(known)}")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            kwargs[f.name] = _coerce(f.name, d[f.name], f.type)
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def stage_weights(self, final: bool) -> tuple[float, float, float]:
        """Loss weights (energy, forces, stress) of the main (``final=False``) or the final stage."""
        w_s = self.stress_weight or 0.0
        if not final:
            return (self.energy_weight, self.forces_weight, w_s)
        e = self.energy_weight if self.final_energy_weight is None else self.final_energy_weight
        f = self.forces_weight if self.final_forces_weight is None else self.final_forces_weight
        return (e, f, w_s)

    def final_stage_step(self, total_steps: int) -> int | None:
        """Number of optimizer steps done when the final stage starts; ``None`` when there is no
        final stage (``final_stage_start`` 1, or its weights equal the main ones)."""
        if self.final_stage_start >= 1 or self.stage_weights(True) == self.stage_weights(False):
            return None
        return int(math.floor(self.final_stage_start * total_steps))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["student"] = dict(self.student)
        return d

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (validated)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    # -- validation ----------------------------------------------------------------
    def validate(self) -> None:
        def need(ok: bool, name: str, allowed: str):
            if not ok:
                raise ConfigError(f"training.{name} = {getattr(self, name)!r} is invalid: must be {allowed}")

        if not isinstance(self.student, dict):
            raise ConfigError("training.student must be a mapping (preset, cutoff, ...), e.g. {preset: small}")
        for name in ("energy_weight", "forces_weight", "stress_weight"):
            value = self.__dict__[name]
            if name == "stress_weight" and value is None:
                continue
            need(
                value >= 0 and math.isfinite(value),
                name,
                "a finite number >= 0" + (" or null (auto)" if name == "stress_weight" else ""),
            )
        need(self.energy_weight + self.forces_weight + (self.stress_weight or 0.0) > 0, "energy_weight",
             "> 0 when forces_weight and stress_weight are 0 (some loss is needed)")
        for name in ("final_energy_weight", "final_forces_weight"):
            value = self.__dict__[name]
            need(
                value is None or (value >= 0 and math.isfinite(value)), name, "a finite number >= 0 or null (unchanged)"
            )
        need(0 < self.final_stage_start <= 1, "final_stage_start",
             "in (0, 1]: the fraction of the planned steps after which the final stage starts (1 = off)")
        need(self.lr > 0 and math.isfinite(self.lr), "lr", "a finite number > 0")
        need(self.weight_decay >= 0, "weight_decay", ">= 0")
        need(self.schedule in SCHEDULES, "schedule", "one of " + ", ".join(SCHEDULES))
        need(self.warmup_steps >= 0, "warmup_steps", ">= 0")
        need(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "in [0, 1]")
        need(0 < self.plateau_factor < 1, "plateau_factor", "in (0, 1)")
        need(self.plateau_patience >= 0, "plateau_patience", ">= 0")
        need(0 <= self.ema_decay < 1, "ema_decay", "in [0, 1) (0 turns EMA off)")
        need(self.grad_clip >= 0, "grad_clip", ">= 0 (0 turns clipping off)")
        need(self.early_stopping_patience >= 0, "early_stopping_patience", ">= 0 (0 turns it off)")
        need(self.batch_size >= 1, "batch_size", ">= 1")
        need(self.max_epochs >= 1, "max_epochs", ">= 1")
        need(self.max_steps >= 0, "max_steps", ">= 0 (0 = limited by max_epochs only)")
        need(self.checkpoint_every >= 1, "checkpoint_every", ">= 1")
        need(0 < self.val_fraction < 1, "val_fraction", "in (0, 1)")
        need(self.num_workers >= 0, "num_workers", ">= 0")
        need(self.device in DEVICES, "device", "one of " + ", ".join(DEVICES))


def _coerce(name: str, value, type_name) -> Any:
    """Check a YAML value against the field's annotated type (given as a string)."""
    return coerce_field(f"training.{name}", value, type_name, finite=False)
