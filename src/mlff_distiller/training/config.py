"""``TrainConfig``: the typed, validated ``training`` section of a recipe.

Every field has a default and states its type and limits; building the section
(:meth:`TrainConfig.from_dict`, the constructor, ``dataclasses.replace``) rejects unknown
keys (naming them and the closest field) and bad values (naming the field and what is
allowed) with a one-line :class:`~mlff_distiller.errors.ConfigError`
(:func:`mlff_distiller.settings.section`). The resolved config (defaults filled in) is
written to ``RUN/config.yaml`` by the trainer.

Units: losses are mean squared errors in ASE units -- energy per atom (eV/atom)^2,
forces (eV/A)^2, stress (eV/A^3)^2 -- multiplied by their weights; ``lr`` is the AdamW
learning rate for the model's raw parameters.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field
from typing import Annotated, Literal, get_args

from ..settings import Bool, Float, Int, Str, build, invalid, limits, section

Schedule = Literal["cosine", "plateau", "constant"]
Device = Literal["auto", "cpu", "cuda"]
SCHEDULES = get_args(Schedule)
DEVICES = get_args(Device)

#: a loss weight: a finite number >= 0
_Weight = Annotated[Float, limits(ge=0, allow_inf_nan=False)]


@section("training")
class TrainConfig:
    """Distillation training settings (see ``docs/training.md`` for each field)."""

    # The student: passed to ``StudentConfig.from_dict`` (preset, cutoff (A), elements, dtype...).
    # ``elements`` defaults to the elements present in the dataset.
    student: Annotated[dict, limits(allowed="a mapping (preset, cutoff, ...), e.g. {preset: small}")] = field(
        default_factory=lambda: {"preset": "small", "cutoff": 5.0})
    # Loss weights: energy per atom (eV/atom)^2, forces (eV/A)^2, stress (eV/A^3)^2.
    # Energy 20 : forces 10 keeps the energy term alive to the end of a run; at 1 : 10 it fell
    # below 1 % of the loss and the student's absolute energies drifted by tens of meV/atom
    # (measured on the quickstart data: docs/training.md, "Defaults").
    energy_weight: _Weight = 20.0
    forces_weight: _Weight = 10.0
    # Stress is trained only on 3-D periodic structures that carry it (masked otherwise).
    # None (the default) = 1.0 when the dataset has stress labels, else 0 (molecules-only data
    # trains without error); an explicit number > 0 requires stress labels.
    stress_weight: Annotated[Float | None, limits(ge=0, allow_inf_nan=False, note="null = auto")] = None
    # Final stage (as MACE's second stage): from ``final_stage_start`` (a fraction of the planned
    # optimizer steps) on, the loss weights become ``final_energy_weight`` / ``final_forces_weight``
    # (None = unchanged), and best.pt is chosen among the epochs of this stage only, by the
    # validation loss under these weights. 1.0 turns the stage off.
    # Default: energy 100 : forces 10 over the last 30 % (MACE's second-stage ratio, 10 : 1); on the
    # quickstart data it took the held-out absolute energy error from 20.7 to 10.9 meV/atom and
    # the Si offset from +17 to +4 meV/atom (docs/training.md, "Defaults").
    final_stage_start: Annotated[Float, limits(
        gt=0, le=1, note="the fraction of the planned steps after which the final stage starts; 1 = off")] = 0.7
    final_energy_weight: Annotated[Float | None, limits(ge=0, allow_inf_nan=False, note="null = unchanged")] = 100.0
    final_forces_weight: Annotated[Float | None, limits(ge=0, allow_inf_nan=False, note="null = unchanged")] = None
    # Optimiser: AdamW.
    lr: Annotated[Float, limits(gt=0, allow_inf_nan=False)] = 1e-3
    weight_decay: Annotated[Float, limits(ge=0)] = 0.0
    # Schedule: linear warmup over ``warmup_steps`` optimizer steps, then
    # ``cosine`` decay to ``lr * min_lr_ratio`` at the last step, ``plateau`` (multiply by
    # ``plateau_factor`` once more than ``plateau_patience`` epochs in a row brought no
    # better validation loss, never below ``lr * min_lr_ratio``), or ``constant``.
    schedule: Schedule = "cosine"
    warmup_steps: Annotated[Int, limits(ge=0)] = 50
    min_lr_ratio: Annotated[Float, limits(ge=0, le=1)] = 0.01
    plateau_factor: Annotated[Float, limits(gt=0, lt=1)] = 0.5
    plateau_patience: Annotated[Int, limits(ge=0)] = 5
    # Exponential moving average of the weights used for validation and best.pt; 0 = off.
    # 0.995 averages over ~200 steps: suited to runs of thousands of steps.
    ema_decay: Annotated[Float, limits(ge=0, lt=1, note="0 turns EMA off")] = 0.995
    # Clip the global gradient norm to this value; 0 = off.
    grad_clip: Annotated[Float, limits(ge=0, note="0 turns clipping off")] = 10.0
    # Stop after this many epochs without a better validation loss; 0 = never. Off by default:
    # a cosine schedule does its best work in its last steps, which an early stop would cut.
    early_stopping_patience: Annotated[Int, limits(ge=0, note="0 turns it off")] = 0
    # Global batch (structures per optimizer step, summed over DDP processes).
    batch_size: Annotated[Int, limits(ge=1)] = 8
    # The budget: whichever of ``max_epochs`` and ``max_steps`` comes first ends the run, and the
    # cosine schedule spans exactly that many steps. The default budget is in optimizer steps,
    # so that it does not shrink with a small dataset or grow with a large one.
    max_epochs: Annotated[Int, limits(ge=1)] = 1000
    # Stop after this many optimizer steps in total; 0 = only ``max_epochs`` limits.
    max_steps: Annotated[Int, limits(ge=0, note="0 = limited by max_epochs only")] = 4000
    # Write checkpoints/last.pt every N optimizer steps (and at each epoch end).
    checkpoint_every: Annotated[Int, limits(ge=1)] = 100
    seed: Int = 0
    # Fraction of the structures held out for validation, taken as whole provenance groups.
    val_fraction: Annotated[Float, limits(gt=0, lt=1)] = 0.1
    # Structures whose provenance ``source`` starts with one of these prefixes are trained on
    # forces and stress only: their energy label stays in the file but not in the loss (nor in
    # the fitted reference energies). The active rounds set ``["active/"]`` (``active.fit_active_energies``).
    energy_skip_sources: list[Str] = field(default_factory=list)
    # Keep every structure's graph (with its neighbour list) in RAM, built once: fastest.
    # False streams structures from the file and builds neighbour lists on the fly in
    # ``num_workers`` DataLoader processes, for datasets larger than memory.
    in_memory: Bool = True
    num_workers: Annotated[Int, limits(ge=0)] = 0
    device: Device = "auto"
    # Also log scalars to RUN/tensorboard (needs the optional ``tensorboard`` package).
    tensorboard: Bool = False

    # -- construction --------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict | None) -> "TrainConfig":
        """Build from a plain dict (a recipe's ``training`` section); ``None`` = defaults."""
        return build(cls, d)

    def __post_init__(self) -> None:
        """The rule that ties the weights together (each field's own limits are on its type)."""
        if self.energy_weight + self.forces_weight + (self.stress_weight or 0.0) <= 0:
            raise invalid("training.energy_weight", self.energy_weight,
                          "> 0 when forces_weight and stress_weight are 0 (some loss is needed)")
        from ..student.config import StudentConfig

        # a typo in the student section fails when the recipe loads, not after labelling
        build(StudentConfig, dict(self.student), "training.student")

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
