"""Continuous quality monitoring during labelling, as the ``on_chunk`` hook of ``label_pool``.

``ChunkMonitor(config)`` is called once per finished chunk with the chunk's labelled
structures and its failures. It keeps running totals and, per chunk, computes

* the failure rate ``failed / (labelled + failed)``;
* the fraction of structures flagged by the cheap validation checks (everything except the
  energy-outlier fit, which needs the whole dataset), judged over at least
  ``monitor.min_structures`` structures: consecutive small chunks are pooled, so one flagged
  structure in a chunk of 8 does not raise an alert;
* the QUESTS entropy fraction ``H / ln(n)`` on ``n = min(subsample_atoms, atoms in chunk)``
  randomly drawn environments (comparable between chunks of different size).

An alert (a logged warning and an :class:`AlertEvent` appended to ``events``, and to the
JSON-lines file ``events_path`` when given) is raised when a chunk's failure rate or the pooled
flagged fraction exceeds its threshold, or when its entropy fraction drops below
``(1 - diversity_drop)`` times the median of the previous chunks of the same kind (after
``baseline_chunks`` of them) in ``drop_chunks`` consecutive chunks of that kind (one alert per
such run; a single low chunk is logged at INFO, i.e. in the log file). A chunk's kind is the
most common ``source kind/sampler`` of its structures' provenance (e.g. ``bulk/rattle``): pools
are written entry by entry, so a chunk of rattled water is compared with earlier chunks of
rattled water, not with a chunk of organic molecules whose environments are naturally more
varied.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from ..fields import source_kind
from ..logs import FILE_ONLY
from ._data import load_records
from .config import QualityConfig

log = logging.getLogger("mlff_distiller.quality")


@dataclass
class AlertEvent:
    chunk_id: int
    kind: str  # "failure_rate" | "flagged_fraction" | "diversity_drop"
    value: float
    threshold: float
    message: str
    time: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ChunkStats:
    chunk_id: int
    n_labelled: int
    n_failed: int
    failure_rate: float
    flagged_fraction: float
    entropy_fraction: float  # NaN when the chunk had fewer than two atoms in total
    kind: str = "unknown"  # most common "source kind/sampler" of the chunk's structures


def _chunk_kind(atoms: list) -> str:
    """The most common ``source kind/sampler`` among the structures' provenance records."""
    keys = Counter(
        f"{source_kind(a) or '?'}/{a.info['provenance'].get('sampler', '?')}"
        if isinstance(a.info.get("provenance"), dict) else "unknown"
        for a in atoms
    )
    return max(sorted(keys), key=keys.get) if keys else "unknown"


class ChunkMonitor:
    """Running dataset-quality metrics over labelling chunks; use as ``on_chunk=monitor``."""

    def __init__(self, config: QualityConfig | dict | None = None, events_path: str | os.PathLike | None = None):
        self.config = QualityConfig.from_dict(config) if not isinstance(config, QualityConfig) else config
        self.events_path = None if events_path is None else os.fspath(events_path)
        self.events: list[AlertEvent] = []
        self.chunks: list[ChunkStats] = []
        self.n_labelled = 0
        self.n_failed = 0
        self.n_flagged = 0
        self.element_atoms: dict[str, int] = {}  # running atoms per element
        self.compositions: set[str] = set()
        self._pool = [0, 0, None]  # structures, flagged, first chunk id of the flagged-fraction window
        self._low_run: dict[str, int] = {}  # kind -> consecutive chunks below the diversity floor

    # the hook signature of labeling.label_pool
    def on_chunk(self, chunk_id: int, atoms: list, failures: list) -> list[AlertEvent]:
        """Update running metrics with one finished chunk; return the alerts it raised."""
        mon = self.config.monitor
        atoms = list(atoms)
        n_ok, n_bad = len(atoms), len(failures)
        self.n_labelled += n_ok
        self.n_failed += n_bad
        failure_rate = n_bad / max(n_ok + n_bad, 1)
        flagged_fraction = 0.0
        entropy_fraction = float("nan")
        if n_ok:
            from .diversity_metrics import formula

            for a in atoms:
                for sym in a.get_chemical_symbols():
                    self.element_atoms[sym] = self.element_atoms.get(sym, 0) + 1
                self.compositions.add(formula(a.numbers))
            flagged_fraction = self._flagged_fraction(atoms)
            entropy_fraction = self._entropy_fraction(chunk_id, atoms)
        kind = _chunk_kind(atoms)
        stats = ChunkStats(int(chunk_id), n_ok, n_bad, failure_rate, flagged_fraction, entropy_fraction, kind)

        new: list[AlertEvent] = []
        if failure_rate > mon["max_failure_rate"]:
            new.append(self._event(chunk_id, "failure_rate", failure_rate, mon["max_failure_rate"],
                                   f"chunk {chunk_id}: {n_bad} of {n_ok + n_bad} structures failed to label "
                                   f"({100 * failure_rate:.1f} % > {100 * mon['max_failure_rate']:.1f} %)"))
        pooled = self._pool_flagged(chunk_id, n_ok, flagged_fraction)
        if pooled is not None and pooled[0] > mon["max_flagged_fraction"]:
            frac, n_flag, n_pool, first = pooled
            where = f"chunk {chunk_id}" if first == chunk_id else f"chunks {first}-{chunk_id}"
            new.append(self._event(chunk_id, "flagged_fraction", frac, mon["max_flagged_fraction"],
                                   f"{where}: {n_flag} of {n_pool} structures ({100 * frac:.1f} %) flagged by "
                                   f"validation checks (> {100 * mon['max_flagged_fraction']:.1f} %)"))
        drop = self._diversity_drop(chunk_id, kind, entropy_fraction)
        if drop is not None:
            new.append(drop)
        self.chunks.append(stats)
        for ev in new:
            log.warning(ev.message)
            self.events.append(ev)
            if self.events_path:
                with open(self.events_path, "a") as fh:
                    fh.write(json.dumps(ev.to_dict()) + "\n")
        return new

    def __call__(self, chunk_id: int, atoms: list, failures: list) -> list[AlertEvent]:
        from .diversity_metrics import one_blas_thread

        with one_blas_thread():  # numba-parallel QUESTS loops call BLAS (OpenBLAS "Detect OpenMP Loop")
            return self.on_chunk(chunk_id, atoms, failures)

    @property
    def failure_rate(self) -> float:
        """Running failure rate over all chunks so far."""
        return self.n_failed / max(self.n_labelled + self.n_failed, 1)

    @property
    def flagged_fraction(self) -> float:
        return self.n_flagged / max(self.n_labelled, 1)

    def summary(self) -> dict:
        ent = [c.entropy_fraction for c in self.chunks if math.isfinite(c.entropy_fraction)]
        return {
            "chunks": len(self.chunks),
            "labelled": self.n_labelled,
            "failed": self.n_failed,
            "failure_rate": self.failure_rate,
            "flagged_fraction": self.flagged_fraction,
            "entropy_fraction_median": float(np.median(ent)) if ent else None,
            "elements": dict(sorted(self.element_atoms.items())),
            "n_compositions": len(self.compositions),
            "alerts": [e.to_dict() for e in self.events],
        }

    # -- internals -----------------------------------------------------------------------------
    def _diversity_drop(self, chunk_id, kind: str, entropy_fraction: float) -> AlertEvent | None:
        """An alert when ``drop_chunks`` consecutive chunks of ``kind`` fell below the floor."""
        mon = self.config.monitor
        past = [c.entropy_fraction for c in self.chunks if c.kind == kind and math.isfinite(c.entropy_fraction)]
        if not (math.isfinite(entropy_fraction) and len(past) >= mon["baseline_chunks"]):
            return None
        baseline = float(np.median(past))
        floor = (1.0 - mon["diversity_drop"]) * baseline
        if entropy_fraction >= floor:
            self._low_run[kind] = 0
            return None
        run = self._low_run[kind] = self._low_run.get(kind, 0) + 1
        detail = (f"QUESTS H/ln n {entropy_fraction:.3f} < {floor:.3f} = {1 - mon['diversity_drop']:.2f} x "
                  f"median of {len(past)} earlier {kind} chunks {baseline:.3f}")
        if run != mon["drop_chunks"]:  # one alert per run of low chunks; single ones go to the log
            log.info(f"chunk {chunk_id} ({kind}): low structural diversity ({detail})", extra=FILE_ONLY)
            return None
        what = f"chunk {chunk_id}" if run == 1 else f"{run} consecutive chunks up to {chunk_id}"
        return self._event(chunk_id, "diversity_drop", entropy_fraction, floor,
                           f"{what} ({kind}): structural diversity dropped ({detail})")

    def _pool_flagged(self, chunk_id, n_ok: int, fraction: float):
        """Add a chunk to the flagged-fraction window; ``(fraction, flagged, n, first chunk)`` once it is full."""
        pool = self._pool
        if n_ok:
            pool[0] += n_ok
            pool[1] += int(round(fraction * n_ok))
            pool[2] = chunk_id if pool[2] is None else pool[2]
        if pool[0] < self.config.monitor["min_structures"] or not pool[0]:
            return None
        out = (pool[1] / pool[0], pool[1], pool[0], pool[2])
        self._pool = [0, 0, None]
        return out

    def _event(self, chunk_id, kind, value, threshold, message) -> AlertEvent:
        return AlertEvent(int(chunk_id), kind, float(value), float(threshold), message, time.time())

    def _flagged_fraction(self, atoms: list) -> float:
        from .checks import validate

        cfg = self.config.to_dict()
        # the outlier fit needs the whole dataset; per chunk it would flag against a tiny sample
        cfg["checks"]["energy_outlier"]["enabled"] = False
        rec = load_records(atoms, require_labels=False)
        if all(e is None for e in rec.energy):
            return 1.0
        report = validate(rec, QualityConfig(**cfg))
        self.n_flagged += report.n_flagged
        return report.flagged_fraction

    def _entropy_fraction(self, chunk_id: int, atoms: list) -> float:
        from .diversity_metrics import _Descriptors, quests_metrics, sample_environments

        div = self.config.diversity
        rec = load_records(atoms, require_labels=False)
        total = int(rec.n_atoms.sum())
        n_env = min(self.config.monitor["subsample_atoms"], total)
        if n_env < 2:
            return float("nan")
        rng = np.random.default_rng([self.config.monitor["seed"], int(chunk_id)])
        x = sample_environments(_Descriptors(rec, div["k"], div["cutoff"]), n_env, rng)
        h, _ = quests_metrics(x, div["bandwidth"])
        return h / math.log(n_env)
