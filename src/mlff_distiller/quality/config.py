"""The recipe's ``quality:`` section as a typed, validated configuration.

Every threshold below has a default chosen for teacher-labelled training data (reasons in
the comments and in ``docs/quality.md``). Units are ASE's: A, eV, eV/A, eV/A^3.

Example recipe section::

    quality:
      checks:
        min_distance: {absolute: 0.5, covalent_fraction: 0.5}
        max_force: {max: 50.0}
        net_force: {enabled: false}      # e.g. for a direct-force teacher
      diversity: {subsample_atoms: 2000, repeats: 3, seed: 0}
      gates:
        1k: {min_diversity_score: 0.2}
      monitor: {max_failure_rate: 0.1}

Each check's parameters (:data:`CHECKS`), each checkpoint's gate thresholds (:data:`GATES`),
``diversity`` and ``monitor`` are typed sections (:func:`mlff_distiller.settings.section`):
their fields state type, default and limits, and the config keeps their values as plain
dicts (``cfg.checks["max_force"]["max"]``). Unknown names (a check, a parameter, a gate
checkpoint or metric, a section) and bad values raise a one-line
:class:`~mlff_distiller.errors.ConfigError` naming the field and what is allowed.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from ..errors import ConfigError
from ..fileio import read_settings_file
from ..settings import Bool, Float, Int, as_list, build, invalid, limits, section, unknown_keys_error

#: a threshold: a number >= 0 (``.inf`` allowed)
_Limit = Annotated[Float, limits(ge=0)]
#: a count >= 1
_Count = Annotated[Int, limits(ge=1)]


# -- validation checks -----------------------------------------------------------------------
# One section per check: its parameters with their defaults; ``enabled`` is accepted by every check.
@section("quality.checks.finite")
class FiniteCheck:
    """NaN or inf in positions, cell, energy, forces or stress: never usable."""

    enabled: Bool = True


@section("quality.checks.labels_present")
class LabelsPresentCheck:
    """Every structure carries the label fields the dataset declares (energy, forces, ...)."""

    enabled: Bool = True


@section("quality.checks.min_distance")
class MinDistanceCheck:
    """Closest pair below 0.5 A, or below half the sum of covalent radii (H-H: 0.31 A): no
    physical structure, almost certainly a sampler or import error."""

    enabled: Bool = True
    absolute: Annotated[Float, limits(ge=0, unit="A")] = 0.5
    covalent_fraction: _Limit = 0.5


@section("quality.checks.max_force")
class MaxForceCheck:
    """|F| of any atom above 50 eV/A: far beyond anything MD visits; such labels dominate a
    force loss and are usually a teacher failing outside its domain."""

    enabled: Bool = True
    max: Annotated[Float, limits(ge=0, unit="eV/A")] = 50.0


@section("quality.checks.energy_outlier")
class EnergyOutlierCheck:
    """Residual energy per atom after the per-element least-squares reference fit, robust
    z-score (median, 1.4826 MAD) above 10: a labelling glitch, wrong units or wrong charge.
    The MAD scale is floored at ``min_scale`` eV/atom so that a narrow dataset (one crystal,
    small rattles) does not flag ordinary members; with the defaults a structure must sit at
    least 0.5 eV/atom off the baseline. (A rattled CH4 next to metals sits ~0.1 off.)
    Structures whose provenance sampler is a high-energy one are high on purpose; with
    ``exempt_high_energy`` they are flagged only when too *low*."""

    enabled: Bool = True
    z_max: _Limit = 10.0
    min_scale: Annotated[Float, limits(ge=0, unit="eV/atom")] = 0.05
    exempt_high_energy: Bool = True


@section("quality.checks.sentinel_energy")
class SentinelEnergyCheck:
    """Energy exactly a sentinel value (0 eV is what failed codes often write) or an absurd
    magnitude per atom (above 1e3 eV/atom no teacher in eV is right)."""

    enabled: Bool = True
    values: Annotated[list[Float], BeforeValidator(as_list)] = field(default_factory=lambda: [0.0])  # eV
    tol: Annotated[Float, limits(ge=0, unit="eV")] = 1e-10
    max_abs_per_atom: Annotated[Float, limits(ge=0, unit="eV/atom")] = 1000.0


@section("quality.checks.volume_per_atom")
class VolumePerAtomCheck:
    """Volume per atom of 3-D periodic cells in A^3: below 2 is denser than any material at
    ambient-to-moderate pressure (diamond 5.7); above 2000 is an unintended vacuum (or a
    molecule in a box so big a periodic teacher is wasted on it). Catches bohr/A mix-ups."""

    enabled: Bool = True
    min: Annotated[Float, limits(ge=0, unit="A^3")] = 2.0
    max: Annotated[Float, limits(ge=0, unit="A^3")] = 2000.0

    def __post_init__(self) -> None:
        if self.min >= self.max:
            raise ConfigError("quality.checks.volume_per_atom: min must be below max")


@section("quality.checks.net_force")
class NetForceCheck:
    """|sum of forces| in eV/A; a conservative teacher gives ~0 (translation invariance).
    ``per_atom`` divides by the number of atoms. Disable for direct-force teachers."""

    enabled: Bool = True
    max: Annotated[Float, limits(ge=0, unit="eV/A")] = 0.05
    per_atom: Bool = False


@section("quality.checks.stress")
class StressCheck:
    """Largest |stress component| in eV/A^3 (1 eV/A^3 = 160 GPa): beyond that the structure is
    crushed or exploded."""

    enabled: Bool = True
    max: Annotated[Float, limits(ge=0, unit="eV/A^3")] = 1.0


#: check name -> its section
CHECKS: dict[str, Any] = {
    "finite": FiniteCheck,
    "labels_present": LabelsPresentCheck,
    "min_distance": MinDistanceCheck,
    "max_force": MaxForceCheck,
    "energy_outlier": EnergyOutlierCheck,
    "sentinel_energy": SentinelEnergyCheck,
    "volume_per_atom": VolumePerAtomCheck,
    "net_force": NetForceCheck,
    "stress": StressCheck,
}
#: check name -> default parameters (without ``enabled``)
CHECK_DEFAULTS: dict[str, dict] = {
    name: {k: v for k, v in asdict(cls()).items() if k != "enabled"} for name, cls in CHECKS.items()
}
CHECK_NAMES = tuple(CHECKS)


# -- diversity ----------------------------------------------------------------------------------
@section("quality.diversity.weights")
class DiversityWeights:
    """Weights of the components of the single diversity score (normalised to sum 1)."""

    structural: _Limit = 0.4
    chemical: _Limit = 0.2
    size: _Limit = 0.2
    energetic: _Limit = 0.2

    def __post_init__(self) -> None:
        if self.structural + self.chemical + self.size + self.energetic <= 0:
            raise ConfigError("quality.diversity.weights must not all be zero")


_SIZES = "a strictly increasing list of at least two integers >= 1"


@section("quality.diversity")
class DiversitySettings:
    """The ``quality.diversity`` section."""

    # QUESTS on a fixed number of atomic environments so H and D compare across datasets.
    subsample_atoms: Annotated[Int, limits(ge=10, note="atomic environments")] = 2000
    repeats: _Count = 3  # independent subsamples; mean and std are reported
    env_per_structure: _Count = 8  # at most this many environments of one structure per subsample
    seed: Annotated[Int, limits(ge=0)] = 0
    bandwidth: Annotated[Float, limits(gt=0)] = 0.015  # QUESTS default kernel bandwidth (1/A descriptor units)
    k: _Count = 32  # QUESTS nearest neighbours
    cutoff: Annotated[Float, limits(gt=0, unit="A")] = 5.0  # QUESTS descriptor cutoff
    # entropy vs sample size (report)
    curve_sizes: Annotated[list[Annotated[Int, Field(ge=1)]], BeforeValidator(as_list),
                           limits(min_length=2, allowed=_SIZES)] = field(
        default_factory=lambda: [125, 250, 500, 1000, 2000])
    pca_structures: _Count = 1000  # structures projected on the PCA map
    rmsd_max_per_composition: _Count = 40  # structures per composition in the RMSD matrix
    rmsd_max_compositions: _Count = 20
    # bin edges, atoms
    size_bins: Annotated[list[Annotated[Int, Field(ge=1)]], BeforeValidator(as_list),
                         limits(min_length=2, allowed=_SIZES)] = field(
        default_factory=lambda: [10, 20, 35, 50, 75, 100, 150, 200, 300, 500])
    elements_target: _Count = 10  # element count that gives full chemical-coverage credit
    compositions_target: _Count = 50  # distinct compositions that give full credit
    weights: DiversityWeights = field(default_factory=DiversityWeights)

    def __post_init__(self) -> None:
        for name in ("curve_sizes", "size_bins"):
            value = getattr(self, name)
            if sorted(set(value)) != value:
                raise invalid(f"quality.diversity.{name}", value, _SIZES)


DIVERSITY_DEFAULTS: dict = asdict(DiversitySettings())


# -- gates --------------------------------------------------------------------------------------
GATE_METRICS = (
    "min_structures",  # labelled structures in the file
    "max_flagged_fraction",  # structures flagged by any validation check
    "max_failure_rate",  # failed labelling attempts / (labelled + failed)
    "min_diversity_score",  # the single 0..1 score
    "min_entropy_fraction",  # QUESTS H / ln(subsample size), 0..1
    "min_elements",
    "min_compositions",
)
CHECKPOINTS = ("1k", "10k", "full")
# Later checkpoints are stricter: a 1k sample may still lack some sources.
GATE_DEFAULTS: dict[str, dict] = {
    "1k": {
        "min_structures": 1,
        "max_flagged_fraction": 0.05,
        "max_failure_rate": 0.2,
        "min_diversity_score": 0.25,
        "min_entropy_fraction": 0.3,
        "min_elements": 1,
        "min_compositions": 2,
    },
    "10k": {
        "min_structures": 1,
        "max_flagged_fraction": 0.03,
        "max_failure_rate": 0.1,
        "min_diversity_score": 0.3,
        "min_entropy_fraction": 0.35,
        "min_elements": 1,
        "min_compositions": 2,
    },
    "full": {
        "min_structures": 1,
        "max_flagged_fraction": 0.02,
        "max_failure_rate": 0.05,
        "min_diversity_score": 0.3,
        "min_entropy_fraction": 0.35,
        "min_elements": 1,
        "min_compositions": 2,
    },
}
_COUNT_METRICS = ("min_structures", "min_elements", "min_compositions")


def _gate_type(metric: str) -> Any:
    """A gate threshold: a number >= 0 (an integer for a count), or null (no gate on that metric)."""
    kind: Any = Int if metric in _COUNT_METRICS else Float
    return Annotated[kind | None, limits(ge=0, note="null = no gate")]


_GATE_TYPES = {m: _gate_type(m) for m in GATE_METRICS}
#: checkpoint -> the section of its thresholds (the defaults above)
GATES: dict[str, Any] = {
    cp: section(f"quality.gates.{cp}")(type(f"Gate_{cp}", (), {"__annotations__": dict(_GATE_TYPES), **defaults}))
    for cp, defaults in GATE_DEFAULTS.items()
}


# -- continuous monitoring ------------------------------------------------------------------------
@section("quality.monitor")
class MonitorSettings:
    """The ``quality.monitor`` section."""

    max_failure_rate: _Limit = 0.1  # per chunk, failed / (labelled + failed)
    max_flagged_fraction: _Limit = 0.05  # structures flagged by the cheap checks, judged over >= min_structures
    # the flagged fraction is judged over at least this many structures (small consecutive
    # chunks are pooled): one flagged structure in a chunk of 8 is 12 %, which is noise
    min_structures: _Count = 50
    # alert when a chunk's QUESTS entropy fraction falls below (1 - diversity_drop) x the
    # median of the previous chunks
    diversity_drop: _Limit = 0.3
    baseline_chunks: _Count = 2  # chunks needed before diversity alerts start
    # consecutive chunks of one kind below that floor before the alert: a single narrow chunk
    # (one prototype's rattles) is noise, a run of them is a sampler gone narrow
    drop_chunks: _Count = 2
    subsample_atoms: _Count = 500  # environments per chunk for the entropy estimate
    seed: Annotated[Int, limits(ge=0)] = 0


MONITOR_DEFAULTS: dict = asdict(MonitorSettings())


def _known(where: str, names, allowed) -> None:
    """The did-you-mean :func:`~mlff_distiller.settings.unknown_keys_error` for ``names`` not in ``allowed``."""
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise unknown_keys_error(where, unknown, allowed)


def _checks_section(given) -> dict:
    """``quality.checks``: a list of the checks to run, or check name -> parameters
    (``true``/``null`` = defaults, ``false`` = disabled); each check's section validates them."""
    if isinstance(given, (list, tuple)):  # a plain list of checks to run
        _known("quality.checks", given, CHECK_NAMES)
        return {name: asdict(cls(enabled=name in given)) for name, cls in CHECKS.items()}
    if not isinstance(given, dict):
        raise ConfigError("quality.checks must be a mapping of check name -> parameters, or a list of names")
    _known("quality.checks", given, CHECK_NAMES)
    out = {}
    for name, cls in CHECKS.items():
        params = given.get(name)
        params = {"enabled": False} if params is False else None if params is True else params
        out[name] = asdict(build(cls, params))
    return out


def _gates_section(given_gates) -> dict:
    """``quality.gates``: checkpoint (1k, 10k, full) -> metric thresholds, over the defaults."""
    if not isinstance(given_gates, dict):
        raise ConfigError("quality.gates must be a mapping of checkpoint (1k, 10k, full) -> thresholds")
    _known("quality.gates", [str(cp) for cp in given_gates], CHECKPOINTS)
    given = {str(cp): thresholds for cp, thresholds in given_gates.items()}
    return {cp: asdict(build(GATES[cp], given.get(cp))) for cp in CHECKPOINTS}


@dataclass
class QualityConfig:
    """Validated ``quality:`` section. ``checks[name]`` holds ``enabled`` plus the parameters."""

    checks: dict = field(default_factory=dict)
    diversity: dict = field(default_factory=lambda: copy.deepcopy(DIVERSITY_DEFAULTS))
    gates: dict = field(default_factory=lambda: copy.deepcopy(GATE_DEFAULTS))
    monitor: dict = field(default_factory=lambda: copy.deepcopy(MONITOR_DEFAULTS))

    def __post_init__(self):
        if not self.checks:
            self.checks = {n: {"enabled": True, **copy.deepcopy(p)} for n, p in CHECK_DEFAULTS.items()}

    @classmethod
    def from_dict(cls, d: dict | None) -> "QualityConfig":
        """Build from the recipe's ``quality:`` mapping (``None`` or ``{}`` = all defaults)."""
        d = {} if d is None else d
        if isinstance(d, QualityConfig):
            return d
        if not isinstance(d, dict):
            raise ConfigError(f"quality must be a mapping, got {type(d).__name__}")
        allowed = ("checks", "diversity", "gates", "monitor")
        for key in d:
            if key not in allowed:
                raise unknown_keys_error("quality", [key], allowed)
        return cls(
            checks=_checks_section(d.get("checks") or {}),
            diversity=asdict(build(DiversitySettings, d.get("diversity"))),
            gates=_gates_section(d.get("gates") or {}),
            monitor=asdict(build(MonitorSettings, d.get("monitor"))),
        )

    def to_dict(self) -> dict:
        return {
            "checks": copy.deepcopy(self.checks),
            "diversity": copy.deepcopy(self.diversity),
            "gates": copy.deepcopy(self.gates),
            "monitor": copy.deepcopy(self.monitor),
        }

    @classmethod
    def from_yaml(cls, path) -> "QualityConfig":
        """Read a YAML file holding either a ``quality:`` section or a whole recipe."""
        d = read_settings_file(path, "quality", "quality config")
        return cls.from_dict(d)

    def enabled(self, name: str) -> bool:
        return bool(self.checks[name]["enabled"])
