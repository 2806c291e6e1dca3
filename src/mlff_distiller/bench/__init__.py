"""bench stage: speed, accuracy and MD fidelity of a student against its teacher.

``run_bench(student, teacher_spec, systems, dataset=None, out_dir=..., threads=1)`` ->
result dict, also written as ``bench.json`` + ``bench.md`` + plots. See ``docs/bench.md``.
"""

from .runner import BenchConfig, run_bench
from .systems import BUILTIN_SYSTEMS, DEFAULT_SYSTEMS, load_system

__all__ = ["BenchConfig", "run_bench", "load_system", "BUILTIN_SYSTEMS", "DEFAULT_SYSTEMS"]
