"""``ActiveConfig``: the typed, validated ``active`` section of a recipe.

Every field has a default and states its type and limits; building the section
(:meth:`ActiveConfig.from_dict`, the constructor, ``dataclasses.replace``) rejects unknown
keys and bad values with a one-line :class:`~mlff_distiller.errors.ConfigError` naming the
field (:func:`mlff_distiller.settings.section`). Numbers must be finite.
Units are ASE's: temperatures in K, time step in fs, friction in 1/fs, distances in A,
energies in eV, forces and force disagreements in eV/A.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Annotated, Literal, get_args

from pydantic import BeforeValidator, Field

from ..errors import ConfigError
from ..settings import Bool, Float, Int, as_list, build, invalid, limits, section

Backend = Literal["auto", "torch", "numba"]
BACKENDS = get_args(Backend)


@section("active", allow_inf_nan=False)
class ActiveConfig:
    """Active-learning rounds (see ``docs/active.md`` for each field)."""

    # -- budget and stopping ---------------------------------------------------------------
    max_rounds: Annotated[Int, limits(ge=1)] = 3  # rounds after the first training
    budget_per_round: Annotated[Int, limits(ge=1)] = 50  # teacher calls (selected frames) per round
    # teacher calls over all rounds; 0 = max_rounds * budget_per_round
    max_teacher_calls: Annotated[Int, limits(ge=0, note="0 = max_rounds x budget_per_round")] = 0
    # Stop when the mean (over fresh student-MD frames) of the largest per-atom committee
    # force standard deviation is below this (eV/A).
    stop_force_std: Annotated[Float, limits(ge=0, unit="eV/A")] = 0.05
    # Stop when the student's held-out force MAE is at or below this (eV/A); 0 = off.
    target_force_mae: Annotated[Float, limits(ge=0, unit="eV/A", note="0 = off")] = 0.0
    # -- committee -------------------------------------------------------------------------
    committee_size: Annotated[Int, limits(ge=2, note="a disagreement needs two members")] = 3
    committee_steps: Annotated[Int, limits(ge=1)] = 200  # optimizer steps per member (different seeds and data order)
    committee_student: dict = field(default_factory=lambda: {"preset": "tiny"})
    # -- exploration (student-driven) ------------------------------------------------------
    n_seeds: Annotated[Int, limits(ge=1)] = 8  # seed structures drawn from the training set each round
    temperatures: Annotated[
        list[Annotated[Float, Field(gt=0)]], BeforeValidator(as_list),
        limits(min_length=1, allowed="a non-empty list of temperatures > 0 K"),
    ] = field(default_factory=lambda: [300.0, 600.0])  # K, NVT Langevin
    replicas: Annotated[Int, limits(ge=1)] = 2  # trajectories per seed structure and temperature
    md_steps: Annotated[Int, limits(ge=1)] = 100  # steps per trajectory segment
    sample_interval: Annotated[Int, limits(ge=1)] = 10  # a candidate frame every N steps
    timestep: Annotated[Float, limits(gt=0, unit="fs")] = 1.0  # fs
    friction: Annotated[Float, limits(ge=0, unit="1/fs")] = 0.01  # 1/fs
    relax_steps: Annotated[Int, limits(ge=0, note="0 = off")] = 20  # student BFGS steps from a rattled seed; 0 = off
    # cell / cluster scale factor of the hot compressed MD: 0 (off) or in [0.5, 1) (checked below)
    hot_compress: Float = 0.9
    hot_temperature: Annotated[Float, limits(gt=0, unit="K")] = 1500.0  # K
    # A trajectory stops when it leaves the physical region: a pair closer than
    # ``min_contact`` x the covalent-radius sum, or |E/atom - E0/atom| above ``max_energy_jump``.
    min_contact: Annotated[Float, limits(ge=0, lt=1, note="fraction of the covalent-radius sum")] = 0.5
    max_energy_jump: Annotated[Float, limits(gt=0, unit="eV/atom")] = 2.0  # eV/atom
    # -- selection -------------------------------------------------------------------------
    # the most uncertain budget x factor frames go to farthest-point sampling
    candidate_factor: Annotated[Int, limits(ge=1)] = 4
    novelty_weight: Annotated[Float, limits(ge=0)] = 0.0  # score = force std (eV/A) + weight x novelty
    # novelty of a frame: ``descriptor`` (largest distance, 1/A, of an atom's sorted inverse
    # neighbour distances to the closest training environment of its element) or ``quests``
    # (largest QUESTS differential entropy dH, nats, against the training environments)
    novelty: Literal["descriptor", "quests"] = "descriptor"
    descriptor_k: Annotated[Int, limits(ge=1)] = 8  # neighbours in the per-atom environment descriptor
    # Largest share of a round's budget one exploration kind (md, relax, hot) may take while
    # frames of another kind remain; 1 = no cap (docs/active.md, "Selection").
    max_kind_share: Annotated[Float, limits(gt=0, le=1, note="1 = no cap")] = 1.0
    # -- retraining ------------------------------------------------------------------------
    retrain: dict = field(default_factory=dict)  # TrainConfig overrides for the warm-started retraining
    # TrainConfig overrides for the first training (stage ``train``), whose student only starts
    # the rounds when ``final_training`` is ``scratch`` (e.g. ``{max_steps: 2000}``): the student
    # the later stages use is the final one, trained with the ``training`` section as given.
    first_training: dict = field(default_factory=dict)
    # Train the energies of the frames the rounds add (True), or only their forces and stress
    # (False: ``training.energy_skip_sources`` gets ``active/`` in the retraining and the
    # committee). Frames of the student's own MD sit far above its energy surface; fitting their
    # energies shifted the held-out absolute energies (water: 14.0 meV/atom against 4.8 without
    # them, and bulk against surface), while their forces alone kept the force gain
    # (docs/active.md, "Measured").
    fit_active_energies: Bool = False
    # After each retraining, shift the per-element reference energies so that the student's
    # mean energy residual on the first training set (the recipe's own structures) is zero:
    # frames of the student's own MD sit above its prediction, and a short warm start answers
    # with a global energy shift (docs/active.md, "Measured").
    refit_reference: Bool = True
    # After the last round: ``scratch`` trains a new student from random weights on the grown
    # dataset (the recipe's ``training`` section, stage ``active:final``), which is the student the
    # later stages use; ``none`` keeps the last round's warm-started student. On water the
    # from-scratch student of the same data was at 0.080 against 0.116 (docs/active.md).
    final_training: Literal["scratch", "none"] = "scratch"
    backend: Backend = "auto"  # StudentCalculator backend for exploration and scoring

    @classmethod
    def from_dict(cls, d: dict | None) -> "ActiveConfig":
        """The section from a recipe mapping (``None`` or ``true`` = the defaults)."""
        return build(cls, None if d is True else d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def teacher_call_budget(self) -> int:
        return self.max_teacher_calls or self.max_rounds * self.budget_per_round

    def stage_names(self) -> list[str]:
        """The pipeline's stage names of the rounds, in order."""
        rounds = [f"active:round-{k}" for k in range(1, self.max_rounds + 1)]
        return rounds + (["active:final"] if self.final_training == "scratch" else [])

    def __post_init__(self) -> None:
        """The rules that tie fields together (each field's own limits are on its type)."""
        if self.sample_interval > self.md_steps:
            raise invalid("active.sample_interval", self.sample_interval, "in [1, md_steps]")
        if not (self.hot_compress == 0 or 0.5 <= self.hot_compress < 1):
            raise invalid("active.hot_compress", self.hot_compress, "0 (off) or in [0.5, 1)")
        from ..student.config import StudentConfig
        from ..training import TrainConfig

        build(StudentConfig, dict(self.committee_student), "active.committee_student")
        for key, whose in (("retrain", "the retrained student keeps its architecture"),
                           ("first_training", "the first student has the recipe's architecture (training.student)")):
            overrides = getattr(self, key)
            if "student" in overrides:
                raise ConfigError(f"active.{key}.student: {whose}; remove the key")
            build(TrainConfig, dict(overrides), f"active.{key}")
