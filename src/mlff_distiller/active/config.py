"""``ActiveConfig``: the typed, validated ``active`` section of a recipe.

Every field has a default; :meth:`ActiveConfig.from_dict` rejects unknown keys and bad
values with a one-line :class:`~mlff_distiller.errors.ConfigError` naming the field.
Units are ASE's: temperatures in K, time step in fs, friction in 1/fs, distances in A,
energies in eV, forces and force disagreements in eV/A.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..settings import check_fields, coerce_field

BACKENDS = ("auto", "torch", "numba")


@dataclass
class ActiveConfig:
    """Active-learning rounds (see ``docs/active.md`` for each field)."""

    # -- budget and stopping ---------------------------------------------------------------
    max_rounds: int = 3  # rounds after the first training
    budget_per_round: int = 50  # teacher calls (selected frames) per round
    max_teacher_calls: int = 0  # over all rounds; 0 = max_rounds * budget_per_round
    # Stop when the mean (over fresh student-MD frames) of the largest per-atom committee
    # force standard deviation is below this (eV/A).
    stop_force_std: float = 0.05
    # Stop when the student's held-out force MAE is at or below this (eV/A); 0 = off.
    target_force_mae: float = 0.0
    # -- committee -------------------------------------------------------------------------
    committee_size: int = 3
    committee_steps: int = 200  # optimizer steps per member (different seeds and data order)
    committee_student: dict = field(default_factory=lambda: {"preset": "tiny"})
    # -- exploration (student-driven) ------------------------------------------------------
    n_seeds: int = 8  # seed structures drawn from the training set each round
    temperatures: list = field(default_factory=lambda: [300.0, 600.0])  # K, NVT Langevin
    replicas: int = 2  # trajectories per seed structure and temperature
    md_steps: int = 100  # steps per trajectory segment
    sample_interval: int = 10  # a candidate frame every N steps
    timestep: float = 1.0  # fs
    friction: float = 0.01  # 1/fs
    relax_steps: int = 20  # student BFGS steps from a rattled seed; 0 = off
    hot_compress: float = 0.9  # cell / cluster scale factor of the hot compressed MD; 0 = off
    hot_temperature: float = 1500.0  # K
    # A trajectory stops when it leaves the physical region: a pair closer than
    # ``min_contact`` x the covalent-radius sum, or |E/atom - E0/atom| above ``max_energy_jump``.
    min_contact: float = 0.5
    max_energy_jump: float = 2.0  # eV/atom
    # -- selection -------------------------------------------------------------------------
    candidate_factor: int = 4  # the most uncertain budget x factor frames go to farthest-point sampling
    novelty_weight: float = 0.0  # score = force std (eV/A) + weight x novelty
    # novelty of a frame: ``descriptor`` (largest distance, 1/A, of an atom's sorted inverse
    # neighbour distances to the closest training environment of its element) or ``quests``
    # (largest QUESTS differential entropy dH, nats, against the training environments)
    novelty: str = "descriptor"
    descriptor_k: int = 8  # neighbours in the per-atom environment descriptor
    # -- retraining ------------------------------------------------------------------------
    retrain: dict = field(default_factory=dict)  # TrainConfig overrides for the warm-started retraining
    # After each retraining, shift the per-element reference energies so that the student's
    # mean energy residual on the first training set (the recipe's own structures) is zero:
    # frames of the student's own MD sit above its prediction, and a short warm start answers
    # with a global energy shift (docs/active.md, "Measured").
    refit_reference: bool = True
    backend: str = "auto"  # StudentCalculator backend for exploration and scoring

    @classmethod
    def from_dict(cls, d: dict | None) -> "ActiveConfig":
        if d is None or d is True:
            d = {}
        check_fields(cls, d, "active")
        kwargs = {f.name: _coerce(f.name, d[f.name], str(f.type)) for f in dataclasses.fields(cls) if f.name in d}
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def teacher_call_budget(self) -> int:
        return self.max_teacher_calls or self.max_rounds * self.budget_per_round

    def stage_names(self) -> list[str]:
        """The pipeline's stage names of the rounds, in order."""
        return [f"active:round-{k}" for k in range(1, self.max_rounds + 1)]

    def validate(self) -> None:
        def need(ok: bool, name: str, allowed: str):
            if not ok:
                raise ConfigError(f"active.{name} = {getattr(self, name)!r} is invalid: must be {allowed}")

        need(self.max_rounds >= 1, "max_rounds", ">= 1")
        need(self.budget_per_round >= 1, "budget_per_round", ">= 1")
        need(self.max_teacher_calls >= 0, "max_teacher_calls", ">= 0 (0 = max_rounds x budget_per_round)")
        need(self.stop_force_std >= 0, "stop_force_std", ">= 0 eV/A")
        need(self.target_force_mae >= 0, "target_force_mae", ">= 0 eV/A (0 = off)")
        need(self.committee_size >= 2, "committee_size", ">= 2 (a disagreement needs two members)")
        need(self.committee_steps >= 1, "committee_steps", ">= 1")
        need(self.n_seeds >= 1, "n_seeds", ">= 1")
        need(bool(self.temperatures) and all(t > 0 for t in self.temperatures), "temperatures",
             "a non-empty list of temperatures > 0 K")
        need(self.replicas >= 1, "replicas", ">= 1")
        need(self.md_steps >= 1, "md_steps", ">= 1")
        need(1 <= self.sample_interval <= self.md_steps, "sample_interval", "in [1, md_steps]")
        need(self.timestep > 0, "timestep", "> 0 fs")
        need(self.friction >= 0, "friction", ">= 0 (1/fs)")
        need(self.relax_steps >= 0, "relax_steps", ">= 0 (0 = off)")
        need(self.hot_compress == 0 or 0.5 <= self.hot_compress < 1, "hot_compress", "0 (off) or in [0.5, 1)")
        need(self.hot_temperature > 0, "hot_temperature", "> 0 K")
        need(0 <= self.min_contact < 1, "min_contact", "in [0, 1) (fraction of the covalent-radius sum)")
        need(self.max_energy_jump > 0, "max_energy_jump", "> 0 eV/atom")
        need(self.candidate_factor >= 1, "candidate_factor", ">= 1")
        need(self.novelty_weight >= 0, "novelty_weight", ">= 0")
        need(self.novelty in ("descriptor", "quests"), "novelty", "one of descriptor, quests")
        need(self.descriptor_k >= 1, "descriptor_k", ">= 1")
        need(self.backend in BACKENDS, "backend", "one of " + ", ".join(BACKENDS))
        from ..training import TrainConfig

        TrainConfig.from_dict({"student": dict(self.committee_student)})  # a bad student section fails here
        bad = [k for k in self.retrain if k == "student"]
        if bad:
            raise ConfigError("active.retrain.student: the retrained student keeps its architecture; remove the key")
        TrainConfig.from_dict(dict(self.retrain))


def _coerce(name: str, value, type_name) -> Any:
    """Check a YAML value against the field's annotated type (given as a string)."""
    return coerce_field(f"active.{name}", value, type_name, finite=True)
