"""End-to-end pipeline: ``mlff-distill run`` (generate -> label -> gate -> train -> bench -> report)."""

from .run import GateFailed, RunOptions, RunResult, run_project

__all__ = ["GateFailed", "RunOptions", "RunResult", "run_project"]
