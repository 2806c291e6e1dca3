"""The ``labeling:`` recipe section as a typed config.

```yaml
labeling:
  workers: 2              # local Dask worker processes
  threads_per_worker: 1   # math (torch/OpenMP) threads per worker
  chunk_size: null        # structures per task; null = sized from a timing (~2 s per task)
  scheduler: null         # tcp://host:8786 to use an existing Dask cluster
  min_distance: 0.5       # A; structures with closer atom pairs go to the failures table
  hpc: null               # or a Slurm section, see HPCConfig / docs/labeling.md
```
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..errors import ConfigError
from ..settings import unknown_keys_error
from .cluster import HPCConfig
from .engine import DEFAULT_MIN_DISTANCE


@dataclass
class LabelingConfig:
    workers: int = 2
    threads_per_worker: int = 1
    chunk_size: int | None = None
    scheduler: str | None = None
    min_distance: float = DEFAULT_MIN_DISTANCE
    hpc: HPCConfig | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> "LabelingConfig":
        """Validate a ``labeling:`` mapping; :class:`ConfigError` names the bad field."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ConfigError(
                "labeling: must be a mapping (workers, threads_per_worker, chunk_size, scheduler, min_distance, hpc)"
            )
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise unknown_keys_error("labeling", unknown, allowed)
        cfg = cls(**{k: v for k, v in d.items() if k != "hpc"})
        for name in ("workers", "threads_per_worker"):
            v = getattr(cfg, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"labeling.{name}: must be an integer >= 1, got {v!r}")
        c = cfg.chunk_size
        if c is not None and (not isinstance(c, int) or isinstance(c, bool) or c < 1):
            raise ConfigError(f"labeling.chunk_size: must be an integer >= 1 or null, got {c!r}")
        if cfg.scheduler is not None and not isinstance(cfg.scheduler, str):
            raise ConfigError(f"labeling.scheduler: must be an address like tcp://host:8786, got {cfg.scheduler!r}")
        md = cfg.min_distance
        if not isinstance(md, (int, float)) or isinstance(md, bool) or md < 0:
            raise ConfigError(f"labeling.min_distance: must be a number >= 0 (A), got {md!r}")
        cfg.min_distance = float(md)
        if d.get("hpc") is not None:
            cfg.hpc = HPCConfig.from_dict(d["hpc"])
        if cfg.hpc is not None and cfg.scheduler:
            raise ConfigError("labeling.hpc: give either scheduler or hpc, not both")
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)
