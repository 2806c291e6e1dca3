"""Typed configuration of the student network (size presets, cutoff, elements, dtype).

Lengths are in Angstrom. A preset fills ``num_features``, ``num_layers`` and ``num_rbf``
unless they are given explicitly. Each field states its type and limits; building a
:class:`StudentConfig` validates it and a bad field is a one-line
:class:`~mlff_distiller.errors.ConfigError` (:func:`mlff_distiller.settings.section`).
"""

from __future__ import annotations

from dataclasses import asdict, field
from typing import Annotated, Literal, get_args

from ase.data import chemical_symbols
from pydantic import BeforeValidator, Field

from ..data.normalization import CUTOFF_MAX, CUTOFF_MIN
from ..settings import Bool, Float, Int, as_list, build, limits, section
from .repulsion import REPULSIONS

#: Size presets: width (scalar and vector features), interaction layers, radial functions.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"num_features": 32, "num_layers": 2, "num_rbf": 16},
    "small": {"num_features": 64, "num_layers": 3, "num_rbf": 20},
    "base": {"num_features": 128, "num_layers": 4, "num_rbf": 20},
}
Preset = Literal["tiny", "small", "base"]
DType = Literal["float32", "float64"]
EnergyScale = Literal["force_rms", "energy_std"]
Repulsion = Literal["none", "zbl"]
DTYPES = get_args(DType)
ENERGY_SCALES = get_args(EnergyScale)
assert get_args(Preset) == tuple(PRESETS) and get_args(Repulsion) == tuple(REPULSIONS)


def _atomic_numbers(value):
    """Element symbols (``'Si'``) as atomic numbers; ``None`` = none."""
    items = [] if value is None else as_list(value)
    return [chemical_symbols.index(z) if isinstance(z, str) and z in chemical_symbols[1:] else z for z in items]


#: a size that the preset fills in when it is not given
_Size = Annotated[Int | None, limits(ge=1)]


@section("student")
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
    * ``angular_channels`` (default 0 = off): channels of three-body angular invariants of
      degree 2 and 3 added to the atoms' scalar features before the first message
      (``cos^2`` / ``cos^3`` terms of the bond angles, which PaiNN's vector features do not
      give a 2-layer student); torch backend only (the Numba kernel does not implement them).
    """

    preset: Preset = "small"
    cutoff: Annotated[Float, limits(ge=CUTOFF_MIN, le=CUTOFF_MAX, unit="A", note="typical: 4-6 A")] = 5.0
    elements: Annotated[
        list[Annotated[Int, Field(ge=1, le=118)]], BeforeValidator(_atomic_numbers),
        limits(allowed="a list of atomic numbers (integers 1..118) or symbols like 'Si'"),
    ] = field(default_factory=list)
    num_features: _Size = None
    num_layers: _Size = None
    num_rbf: _Size = None
    energy_scale: EnergyScale = "force_rms"
    dtype: DType = "float32"
    scalar_last_message: Bool = True
    repulsion: Repulsion = "none"
    angular_channels: Annotated[Int, limits(ge=0, le=256, note="0 = off")] = 0

    def __post_init__(self) -> None:
        """The preset fills the sizes not given; the elements are sorted, each once."""
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.elements = sorted(set(self.elements))

    # -- dict round trip --------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict | None) -> "StudentConfig":
        """Build from a plain dict (a recipe's ``student`` section); unknown keys -> ConfigError."""
        return build(cls, d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["elements"] = [int(z) for z in self.elements]
        return d
