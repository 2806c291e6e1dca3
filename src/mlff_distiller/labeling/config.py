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

from dataclasses import asdict
from typing import Annotated

from ..errors import ConfigError
from ..settings import Float, Int, Str, build, limits, section
from .cluster import HPCConfig
from .engine import DEFAULT_MIN_DISTANCE


@section("labeling")
class LabelingConfig:
    """The ``labeling`` section (see the module doc); each field states its type and limits,
    and building it validates (a one-line :class:`ConfigError` names a bad field)."""

    workers: Annotated[Int, limits(ge=1)] = 2
    threads_per_worker: Annotated[Int, limits(ge=1)] = 1
    chunk_size: Annotated[Int | None, limits(ge=1, note="null = sized from a timing")] = None
    scheduler: Str | None = None  # an address like tcp://host:8786
    min_distance: Annotated[Float, limits(ge=0, unit="A")] = DEFAULT_MIN_DISTANCE
    hpc: HPCConfig | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> "LabelingConfig":
        """Validate a ``labeling:`` mapping; :class:`ConfigError` names the bad field."""
        return build(cls, d)

    def __post_init__(self) -> None:
        if self.hpc is not None and self.scheduler:
            raise ConfigError("labeling.hpc: give either scheduler or hpc, not both")

    def to_dict(self) -> dict:
        return asdict(self)
