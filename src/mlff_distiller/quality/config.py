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

Unknown names (a check, a parameter, a gate metric, a section) raise
:class:`~mlff_distiller.errors.ConfigError` naming the field and listing the allowed values.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..settings import unknown_keys_error

# -- validation checks -----------------------------------------------------------------------
# name -> default parameters. ``enabled`` is accepted by every check.
CHECK_DEFAULTS: dict[str, dict] = {
    # NaN or inf in positions, cell, energy, forces or stress: never usable.
    "finite": {},
    # Every structure carries the label fields the dataset declares (energy, forces, ...).
    "labels_present": {},
    # Closest pair below 0.5 A, or below half the sum of covalent radii (H-H: 0.31 A):
    # no physical structure, almost certainly a sampler or import error.
    "min_distance": {"absolute": 0.5, "covalent_fraction": 0.5},
    # |F| of any atom above 50 eV/A: far beyond anything MD visits; such labels dominate
    # a force loss and are usually a teacher failing outside its domain.
    "max_force": {"max": 50.0},
    # Residual energy per atom after the per-element least-squares reference fit, robust
    # z-score (median, 1.4826 MAD) above 10: a labelling glitch, wrong units or wrong charge.
    # The MAD scale is floored at ``min_scale`` eV/atom so that a narrow dataset (one crystal,
    # small rattles) does not flag ordinary members; with the defaults a structure must sit
    # at least 0.5 eV/atom off the baseline. (A rattled CH4 next to metals sits ~0.1 off.)
    # Structures whose provenance sampler is a high-energy one are high on purpose; with
    # ``exempt_high_energy`` they are flagged only when too *low*.
    "energy_outlier": {"z_max": 10.0, "min_scale": 0.05, "exempt_high_energy": True},
    # Energy exactly a sentinel value (0 eV is what failed codes often write) or an absurd
    # magnitude per atom (above 1e3 eV/atom no teacher in eV is right).
    "sentinel_energy": {"values": [0.0], "tol": 1e-10, "max_abs_per_atom": 1000.0},
    # Volume per atom of 3-D periodic cells in A^3: below 2 is denser than any material at
    # ambient-to-moderate pressure (diamond 5.7); above 2000 is an unintended vacuum (or a
    # molecule in a box so big a periodic teacher is wasted on it). Catches bohr/A mix-ups.
    "volume_per_atom": {"min": 2.0, "max": 2000.0},
    # |sum of forces| in eV/A; a conservative teacher gives ~0 (translation invariance).
    # ``per_atom`` divides by the number of atoms. Disable for direct-force teachers.
    "net_force": {"max": 0.05, "per_atom": False},
    # Largest |stress component| in eV/A^3 (1 eV/A^3 = 160 GPa): beyond that the structure
    # is crushed or exploded.
    "stress": {"max": 1.0},
}

CHECK_NAMES = tuple(CHECK_DEFAULTS)

# -- diversity ----------------------------------------------------------------------------------
DIVERSITY_DEFAULTS: dict = {
    # QUESTS on a fixed number of atomic environments so H and D compare across datasets.
    "subsample_atoms": 2000,
    "repeats": 3,  # independent subsamples; mean and std are reported
    "env_per_structure": 8,  # at most this many environments of one structure per subsample
    "seed": 0,
    "bandwidth": 0.015,  # QUESTS default kernel bandwidth (1/A descriptor units)
    "k": 32,  # QUESTS nearest neighbours
    "cutoff": 5.0,  # A, QUESTS descriptor cutoff
    "curve_sizes": [125, 250, 500, 1000, 2000],  # entropy vs sample size (report)
    "pca_structures": 1000,  # structures projected on the PCA map
    "rmsd_max_per_composition": 40,  # structures per composition in the RMSD matrix
    "rmsd_max_compositions": 20,
    "size_bins": [10, 20, 35, 50, 75, 100, 150, 200, 300, 500],  # bin edges, atoms
    "elements_target": 10,  # element count that gives full chemical-coverage credit
    "compositions_target": 50,  # distinct compositions that give full credit
    # weights of the components of the single diversity score (normalised to sum 1)
    "weights": {"structural": 0.4, "chemical": 0.2, "size": 0.2, "energetic": 0.2},
}

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

# -- continuous monitoring ------------------------------------------------------------------------
MONITOR_DEFAULTS: dict = {
    "max_failure_rate": 0.1,  # per chunk, failed / (labelled + failed)
    "max_flagged_fraction": 0.05,  # structures flagged by the cheap checks, judged over >= min_structures
    # the flagged fraction is judged over at least this many structures (small consecutive
    # chunks are pooled): one flagged structure in a chunk of 8 is 12 %, which is noise
    "min_structures": 50,
    # alert when a chunk's QUESTS entropy fraction falls below (1 - diversity_drop) x the
    # median of the previous chunks
    "diversity_drop": 0.3,
    "baseline_chunks": 2,  # chunks needed before diversity alerts start
    # consecutive chunks of one kind below that floor before the alert: a single narrow chunk
    # (one prototype's rattles) is noise, a run of them is a sampler gone narrow
    "drop_chunks": 2,
    "subsample_atoms": 500,  # environments per chunk for the entropy estimate
    "seed": 0,
}


def _merge_section(name: str, given, defaults: dict, nested: bool = False) -> dict:
    if given is None:
        return copy.deepcopy(defaults)
    if not isinstance(given, dict):
        raise ConfigError(f"quality.{name} must be a mapping, got {type(given).__name__}")
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        if key not in defaults:
            raise unknown_keys_error(f"quality.{name}", [key], defaults)
        if nested and isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"quality.{name}.{key} must be a mapping, got {type(value).__name__}")
            for sub in value:
                if sub not in defaults[key]:
                    raise unknown_keys_error(f"quality.{name}.{key}", [sub], defaults[key])
            out[key].update(value)
        else:
            out[key] = value
    return out


def _number(section: str, key: str, value, lo=None, integer=False, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"quality.{section}.{key} must be a number, got {value!r}")
    if integer and int(value) != value:
        raise ConfigError(f"quality.{section}.{key} must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise ConfigError(f"quality.{section}.{key} must be >= {lo}, got {value!r}")
    return int(value) if integer else float(value)


def _checks_section(given) -> dict:
    """``quality.checks``: a list of the checks to run, or check name -> parameters
    (``true``/``null`` = defaults, ``false`` = disabled); validated, over the defaults."""
    checks = {n: {"enabled": True, **copy.deepcopy(p)} for n, p in CHECK_DEFAULTS.items()}
    if isinstance(given, (list, tuple)):  # a plain list of checks to run
        for name in given:
            if name not in CHECK_DEFAULTS:
                raise ConfigError(f"quality.checks: unknown check {name!r}; allowed: {', '.join(CHECK_NAMES)}")
        for name in checks:
            checks[name]["enabled"] = name in given
    elif isinstance(given, dict):
        for name, params in given.items():
            if name not in CHECK_DEFAULTS:
                raise ConfigError(f"quality.checks: unknown check {name!r}; allowed: {', '.join(CHECK_NAMES)}")
            if params is None or params is True:
                params = {}
            elif params is False:
                params = {"enabled": False}
            if not isinstance(params, dict):
                raise ConfigError(f"quality.checks.{name} must be a mapping of parameters, got {params!r}")
            for key, value in params.items():
                if key != "enabled" and key not in CHECK_DEFAULTS[name]:
                    allowed_keys = ", ".join(["enabled", *CHECK_DEFAULTS[name]])
                    raise ConfigError(f"quality.checks.{name}: unknown parameter {key!r}; allowed: {allowed_keys}")
                checks[name][key] = value
    else:
        raise ConfigError("quality.checks must be a mapping of check name -> parameters, or a list of names")
    _check_check_params(checks)
    return checks


def _check_check_params(checks: dict) -> None:
    """Type and range of every check parameter (numbers converted in place)."""
    for name, params in checks.items():
        if not isinstance(params["enabled"], bool):
            raise ConfigError(f"quality.checks.{name}.enabled must be true or false, got {params['enabled']!r}")
        for key, value in params.items():
            if key in ("enabled", "per_atom", "exempt_high_energy"):
                if not isinstance(value, bool):
                    raise ConfigError(f"quality.checks.{name}.{key} must be true or false, got {value!r}")
            elif key == "values":
                if not isinstance(value, (list, tuple)):
                    raise ConfigError(f"quality.checks.{name}.values must be a list of energies (eV)")
                params[key] = [_number(f"checks.{name}", key, v) for v in value]
            else:
                params[key] = _number(f"checks.{name}", key, value, lo=0)
    vpa = checks["volume_per_atom"]
    if vpa["min"] >= vpa["max"]:
        raise ConfigError("quality.checks.volume_per_atom: min must be below max")


def _diversity_section(given) -> dict:
    """``quality.diversity`` over its defaults, with every number checked."""
    div = _merge_section("diversity", given, DIVERSITY_DEFAULTS, nested=True)
    for key in (
        "subsample_atoms",
        "repeats",
        "env_per_structure",
        "k",
        "pca_structures",
        "rmsd_max_per_composition",
        "rmsd_max_compositions",
        "elements_target",
        "compositions_target",
    ):
        div[key] = _number("diversity", key, div[key], lo=1, integer=True)
    div["seed"] = _number("diversity", "seed", div["seed"], lo=0, integer=True)
    if div["subsample_atoms"] < 10:
        raise ConfigError("quality.diversity.subsample_atoms must be >= 10 atomic environments")
    for key in ("bandwidth", "cutoff"):
        div[key] = _number("diversity", key, div[key], lo=1e-9)
    for key in ("curve_sizes", "size_bins"):
        v = div[key]
        if not isinstance(v, (list, tuple)) or len(v) < 2:
            raise ConfigError(f"quality.diversity.{key} must be a list of at least two integers")
        v = [_number("diversity", key, x, lo=1, integer=True) for x in v]
        if sorted(set(v)) != v:
            raise ConfigError(f"quality.diversity.{key} must be strictly increasing, got {v}")
        div[key] = v
    w = {k: _number("diversity.weights", k, v, lo=0) for k, v in div["weights"].items()}
    if sum(w.values()) <= 0:
        raise ConfigError("quality.diversity.weights must not all be zero")
    div["weights"] = w
    return div


def _gates_section(given_gates) -> dict:
    """``quality.gates``: checkpoint (1k, 10k, full) -> metric thresholds, over the defaults."""
    gates = copy.deepcopy(GATE_DEFAULTS)
    if not isinstance(given_gates, dict):
        raise ConfigError("quality.gates must be a mapping of checkpoint (1k, 10k, full) -> thresholds")
    for cp, thresholds in given_gates.items():
        cp = str(cp)
        if cp not in CHECKPOINTS:
            raise ConfigError(f"quality.gates: unknown checkpoint {cp!r}; allowed: {', '.join(CHECKPOINTS)}")
        if not isinstance(thresholds, dict):
            raise ConfigError(f"quality.gates.{cp} must be a mapping of metric -> threshold")
        for metric, value in thresholds.items():
            if metric not in GATE_METRICS:
                raise ConfigError(
                    f"quality.gates.{cp}: unknown metric {metric!r}; allowed: {', '.join(GATE_METRICS)}"
                )
            integer = metric in ("min_structures", "min_elements", "min_compositions")
            gates[cp][metric] = _number(f"gates.{cp}", metric, value, lo=0, integer=integer, allow_none=True)
    return gates


def _monitor_section(given) -> dict:
    """``quality.monitor`` over its defaults, with every number checked."""
    mon = _merge_section("monitor", given, MONITOR_DEFAULTS)
    for key in ("max_failure_rate", "max_flagged_fraction", "diversity_drop"):
        mon[key] = _number("monitor", key, mon[key], lo=0)
    for key in ("baseline_chunks", "drop_chunks", "subsample_atoms", "min_structures"):
        mon[key] = _number("monitor", key, mon[key], lo=1, integer=True)
    mon["seed"] = _number("monitor", "seed", mon["seed"], lo=0, integer=True)
    return mon


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
            diversity=_diversity_section(d.get("diversity")),
            gates=_gates_section(d.get("gates") or {}),
            monitor=_monitor_section(d.get("monitor")),
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
        import yaml

        try:
            with open(path) as fh:
                d = yaml.safe_load(fh)
        except FileNotFoundError:
            raise ConfigError(f"quality config {path} not found: give an existing YAML file") from None
        except yaml.YAMLError as err:
            first = str(err).splitlines()[0] if str(err) else "syntax error"
            raise ConfigError(f"quality config {path} is not valid YAML ({first}): fix the file") from None
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ConfigError(f"quality config {path} holds a {type(d).__name__}, not a mapping (a quality: section "
                              "or a recipe)")
        if "quality" in d:
            d = d["quality"]
        return cls.from_dict(d)

    def enabled(self, name: str) -> bool:
        return bool(self.checks[name]["enabled"])
