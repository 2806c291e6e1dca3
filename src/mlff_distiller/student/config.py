"""Typed configuration of the student network (size presets, cutoff, elements, dtype).

Lengths are in Angstrom. A preset fills ``num_features``, ``num_layers`` and ``num_rbf``
unless they are given explicitly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ase.data import chemical_symbols

from ..data.normalization import CUTOFF_MAX, CUTOFF_MIN
from ..errors import ConfigError
from ..settings import check_fields
from .repulsion import REPULSIONS

#: Size presets: width (scalar and vector features), interaction layers, radial functions.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"num_features": 32, "num_layers": 2, "num_rbf": 16},
    "small": {"num_features": 64, "num_layers": 3, "num_rbf": 20},
    "base": {"num_features": 128, "num_layers": 4, "num_rbf": 20},
}
DTYPES = ("float32", "float64")
ENERGY_SCALES = ("force_rms", "energy_std")


@dataclass
class StudentConfig:
    """Student architecture.

    * ``preset``: ``tiny`` | ``small`` | ``base`` (sizes in :data:`PRESETS`).
    * ``cutoff``: neighbour cutoff radius in A (default 5.0).
    * ``elements``: atomic numbers (or symbols) the student handles; empty means "take them from the
      normalization statistics" in :func:`~mlff_distiller.student.build_student`.
    * ``num_features`` / ``num_layers`` / ``num_rbf``: override the preset.
    * ``energy_scale``: which statistic scales the per-atom network output (``force_rms``,
      eV/A, or ``energy_std``, eV/atom).
    * ``dtype``: ``float32`` (default) or ``float64``.
    * ``scalar_last_message`` (default true): the last interaction layer passes scalar messages
      only (its update still reads the vector features of the layer before), which saves the
      per-edge vector work of one layer; ``false`` gives the plain PaiNN layer stack (see
      docs/student.md for the measured speed and accuracy).
    * ``repulsion``: ``none`` (default) or ``zbl``, a fixed short-range nuclear repulsion
      (ZBL universal potential, switched off at the sum of covalent radii) added to the
      network's energy so that the student's own MD cannot collapse atoms onto each other
      (:mod:`~mlff_distiller.student.repulsion`).
    """

    preset: str = "small"
    cutoff: float = 5.0
    elements: list[int] = field(default_factory=list)
    num_features: int | None = None
    num_layers: int | None = None
    num_rbf: int | None = None
    energy_scale: str = "force_rms"
    dtype: str = "float32"
    scalar_last_message: bool = True
    repulsion: str = "none"

    def __post_init__(self):
        self.validate()

    # -- validation -------------------------------------------------------------------
    def validate(self) -> "StudentConfig":
        if self.preset not in PRESETS:
            raise ConfigError(f"student.preset: unknown preset {self.preset!r}; allowed: {', '.join(PRESETS)}")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        for key in ("num_features", "num_layers", "num_rbf"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"student.{key}: must be a positive integer, got {value!r}")
        try:
            self.cutoff = float(self.cutoff)
        except (TypeError, ValueError):
            raise ConfigError(f"student.cutoff: must be a number of Angstrom, got {self.cutoff!r}") from None
        if not (CUTOFF_MIN <= self.cutoff <= CUTOFF_MAX):
            raise ConfigError(
                f"student.cutoff: {self.cutoff} A is out of range; use {CUTOFF_MIN:g} to {CUTOFF_MAX:g} A "
                "(typical: 4-6 A)"
            )
        if not isinstance(self.scalar_last_message, bool):
            raise ConfigError(f"student.scalar_last_message: must be true or false, got {self.scalar_last_message!r}")
        if self.repulsion not in REPULSIONS:
            raise ConfigError(
                f"student.repulsion: unknown value {self.repulsion!r}; allowed: {', '.join(REPULSIONS)}"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(f"student.dtype: unknown dtype {self.dtype!r}; allowed: {', '.join(DTYPES)}")
        if self.energy_scale not in ENERGY_SCALES:
            raise ConfigError(
                f"student.energy_scale: unknown value {self.energy_scale!r}; allowed: {', '.join(ENERGY_SCALES)}"
            )
        elements = []
        for z in self.elements or []:
            if isinstance(z, str) and z in chemical_symbols[1:]:
                z = chemical_symbols.index(z)
            if isinstance(z, bool) or not isinstance(z, int) or not 1 <= z <= 118:
                raise ConfigError(
                    f"student.elements: {z!r} is not an atomic number (use integers 1..118 or symbols like 'Si')"
                )
            elements.append(int(z))
        self.elements = sorted(set(elements))
        return self

    # -- dict round trip --------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict | None) -> "StudentConfig":
        """Build from a plain dict (a recipe's ``student`` section); unknown keys -> ConfigError."""
        d = dict(d or {})
        check_fields(cls, d, "student")
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["elements"] = [int(z) for z in self.elements]
        return d
