"""Labeling stage: teacher labels for a pool of structures, on Dask, resumable.

``label_pool(pool, teacher_spec, out)`` -> :class:`LabelSummary`; CLI ``mlff-distill label``.
See ``docs/labeling.md``.
"""

from ..teachers.registry import parse_teacher_spec
from .cluster import HPCConfig
from .config import LabelingConfig
from .engine import LabelSummary, label_pool

__all__ = ["HPCConfig", "LabelSummary", "LabelingConfig", "label_pool", "parse_teacher_spec"]
