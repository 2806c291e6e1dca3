"""Active learning: the student explores, a committee scores, the teacher labels, the student retrains.

See ``docs/active.md``. Entry point for the pipeline: :func:`run_rounds`.
"""

from .config import ActiveConfig
from .rounds import ActiveContext, run_round, run_rounds, write_report

__all__ = ["ActiveConfig", "ActiveContext", "run_round", "run_rounds", "write_report"]
