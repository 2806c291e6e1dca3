"""Go/no-go gates at the 1k, 10k and full checkpoints of dataset generation.

A gate compares measured metrics against the thresholds of one checkpoint
(``quality.gates.<checkpoint>`` in the recipe; defaults in :mod:`.config`). A threshold set
to ``null`` is skipped. Metrics:

* ``min_structures`` -- labelled structures in the file;
* ``max_flagged_fraction`` -- fraction flagged by any enabled validation check;
* ``max_failure_rate`` -- failed labelling attempts / (labelled + failed), from the file's
  failures table;
* ``min_diversity_score`` -- the single 0..1 diversity score;
* ``min_entropy_fraction`` -- QUESTS H / ln(number of environments sampled), 0..1;
* ``min_elements`` / ``min_compositions`` -- distinct elements / compositions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from ._data import load_records
from .checks import ValidationReport, validate
from .config import CHECKPOINTS, QualityConfig
from .diversity_metrics import DiversityReport, diversity


@dataclass
class Verdict:
    metric: str
    threshold: float
    value: float
    passed: bool

    @property
    def name(self) -> str:
        """Alias of ``metric``."""
        return self.metric

    def __str__(self) -> str:
        return self.message

    @property
    def message(self) -> str:
        name = self.metric[4:].replace("_", " ")
        op = ">=" if self.metric.startswith("min_") else "<="
        state = "pass" if self.passed else "FAIL"
        return f"{state}: {name} = {_fmt(self.value)} (needs {op} {_fmt(self.threshold)})"

    def to_dict(self) -> dict:
        return {"metric": self.metric, "threshold": self.threshold, "value": self.value,
                "passed": self.passed, "message": self.message}


def _fmt(x) -> str:
    return f"{x:d}" if isinstance(x, int) else f"{x:.4g}"


@dataclass
class GateReport:
    """Outcome of one checkpoint's gate: ``passed`` is true when every verdict passed."""

    checkpoint: str
    passed: bool
    verdicts: list
    validation: ValidationReport | None = field(default=None, repr=False)
    diversity: DiversityReport | None = field(default=None, repr=False)

    @property
    def failed(self) -> list:
        return [v for v in self.verdicts if not v.passed]

    def summary(self) -> str:
        head = f"gate {self.checkpoint}: {'PASSED' if self.passed else 'FAILED'}"
        return "\n".join([head] + [f"  {v.message}" for v in self.verdicts])

    def to_dict(self) -> dict:
        out = {"checkpoint": self.checkpoint, "passed": self.passed,
               "verdicts": [v.to_dict() for v in self.verdicts]}
        if self.validation is not None:
            out["validation"] = {"n_structures": self.validation.n_structures,
                                 "n_flagged": self.validation.n_flagged, "counts": self.validation.counts}
        if self.diversity is not None:
            d = self.diversity
            out["diversity"] = {"score": d.score, "components": d.components, "entropy": d.entropy,
                                "diversity": d.diversity, "entropy_fraction": d.structural["entropy_fraction"],
                                "warnings": list(d.warnings)}
        return out


def gate_metrics(rec, validation: ValidationReport, div: DiversityReport) -> dict:
    """The measured value of every gate metric (see module docstring)."""
    n = len(rec)
    n_failed = len(rec.failures)
    return {
        "min_structures": n,
        "max_flagged_fraction": float(validation.flagged_fraction),
        "max_failure_rate": n_failed / max(n + n_failed, 1),
        "min_diversity_score": float(div.score),
        "min_entropy_fraction": float(div.structural["entropy_fraction"]),
        "min_elements": int(div.chemical["n_elements"]),
        "min_compositions": int(div.chemical["n_compositions"]),
    }


def judge(metrics: dict, thresholds: dict) -> list[Verdict]:
    out = []
    for metric, threshold in thresholds.items():
        if threshold is None:
            continue
        value = metrics[metric]
        passed = value >= threshold if metric.startswith("min_") else value <= threshold
        out.append(Verdict(metric, threshold, value, bool(passed)))
    return out


def evaluate_gates(path, checkpoint: str = "full", config: QualityConfig | dict | None = None, *,
                   validation: ValidationReport | None = None,
                   diversity_report: DiversityReport | None = None, progress: bool = False) -> GateReport:
    """Evaluate the gate of ``checkpoint`` (``"1k"``, ``"10k"`` or ``"full"``) on a dataset.

    ``path`` is a dataset file or a list of labelled ``ase.Atoms``. Precomputed
    ``validation`` / ``diversity_report`` of the same data are reused when given.
    """
    checkpoint = str(checkpoint)
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"unknown gate checkpoint {checkpoint!r}; allowed: {', '.join(CHECKPOINTS)}")
    config = QualityConfig.from_dict(config) if not isinstance(config, QualityConfig) else config
    rec = load_records(path)
    validation = validation if validation is not None else validate(rec, config, progress=progress)
    div = diversity_report if diversity_report is not None else diversity(rec, config, progress=progress)
    verdicts = judge(gate_metrics(rec, validation, div), config.gates[checkpoint])
    return GateReport(checkpoint=checkpoint, passed=all(v.passed for v in verdicts), verdicts=verdicts,
                      validation=validation, diversity=div)
