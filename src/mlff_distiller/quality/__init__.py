"""Dataset quality: validation checks, diversity metrics, go/no-go gates, monitoring, report.

Public API (units: eV, A, eV/A, eV/A^3)::

    cfg = QualityConfig.from_dict(recipe["quality"])
    validate(path_or_atoms, cfg) -> ValidationReport      # per-structure flags and counts
    diversity(path_or_atoms, cfg) -> DiversityReport      # chemical, size, energetic, structural, score
    evaluate_gates(path, "1k" | "10k" | "full", cfg) -> GateReport(passed, verdicts)
    ChunkMonitor(cfg)                                     # labeling hook on_chunk(chunk_id, atoms, failures)
    write_report(path, out_dir, cfg) -> (html_path, card_path)

quests/numba and matplotlib are imported only when a function needs them.
"""

from __future__ import annotations

from .checks import ValidationReport, validate
from .config import CHECK_NAMES, CHECKPOINTS, QualityConfig
from .diversity_metrics import DiversityReport, diversity
from .gates import GateReport, evaluate_gates
from .monitor import ChunkMonitor
from .report import write_report

__all__ = [
    "CHECK_NAMES",
    "CHECKPOINTS",
    "QualityConfig",
    "validate",
    "ValidationReport",
    "diversity",
    "DiversityReport",
    "evaluate_gates",
    "GateReport",
    "ChunkMonitor",
    "write_report",
]
