"""One root of a mix entry, wherever it runs: build the root, run the sampler, check the samples.

:func:`run_root` is the unit of work of generation. It only computes: root ``r`` of mix entry
``e`` draws everything from its own generator (seed ``root_seed(recipe seed, e, r)``), so its
result does not depend on where or when it runs. The client runs it in-process
(:class:`InProcessRoots`) or Dask workers run it (:class:`mlff_distiller.generation.parallel.DaskRoots`);
what is kept (counts, provenance, file indices, when an entry is full) is decided by the
engine's one consumer loop, which takes the results strictly in root order. Hence the pool is
the same structure by structure whichever executor ran the roots. Units: A.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from ..errors import UserError
from .geometry import clean_copy, respects_min_distance
from .samplers import SAMPLER_FUNCTIONS
from .sources import SizeRange, SkipLog, Source


def root_seed(seed: int, entry: int, root: int) -> int:
    """The integer seed of root ``root`` of mix entry ``entry`` (recorded in the provenance)."""
    return int(np.random.SeedSequence([int(seed), int(entry), int(root)]).generate_state(1)[0])


@dataclass
class EntryJob:
    """What it takes to run the roots of mix entry ``index`` (sent once to each Dask worker)."""

    index: int
    seed: int  # the recipe's seed
    source: Source  # its candidate order already drawn (set_order)
    sampler: str
    params: dict
    size: SizeRange  # generation.size
    entry_size: SizeRange  # the mix entry's own size bounds
    factor: float  # min_distance_factor
    include_root: bool
    needs_teacher: bool
    want: int
    max_roots: int

    def portable(self) -> "EntryJob":
        """A copy safe to pickle: the source's skip log (which may echo to the console) left behind."""
        src = copy.copy(self.source)
        if hasattr(src, "skips"):
            src.skips = SkipLog()
        return dataclasses.replace(self, source=src)


@dataclass
class RootResult:
    """What root ``r`` gave. ``status``: ``ok``, ``no_root`` (the source built none), ``root_size``
    (outside the size bounds) or ``error`` (the sampler or teacher raised; ``error`` says how).
    ``samples`` holds ``(bare Atoms, params, parent, ok)`` where ``ok`` = inside ``generation.size``
    and passing the minimum-distance check; ``root`` is a bare copy of the root when the entry
    includes roots and it passes that check. ``skips``: items the source left out meanwhile."""

    status: str
    seed: int
    source: str = ""
    group: str = ""
    root: Atoms | None = None
    samples: list = field(default_factory=list)
    error: str = ""
    skips: list = field(default_factory=list)
    seconds: float = 0.0  # time run_root spent on this root (where it ran)

    @property
    def n_ok(self) -> int:
        """Structures this root can give (for the executor's estimate of how many roots to run)."""
        return int(self.root is not None) + sum(1 for *_, ok in self.samples if ok)


def run_root(job: EntryJob, r: int, calculator=None) -> RootResult:
    """Build root ``r`` of ``job``'s entry, run its sampler (``calculator``: the teacher's ASE
    calculator, or ``None`` for teacher-free samplers) and check every sample. A sampler that
    raises gives an ``error`` result; a :class:`UserError` (bad configuration) propagates.
    ``seconds`` of the result: the time this call took."""
    t0 = time.perf_counter()
    res = _run_root(job, r, calculator)
    res.seconds = time.perf_counter() - t0
    return res


def _run_root(job: EntryJob, r: int, calculator) -> RootResult:
    seed = root_seed(job.seed, job.index, r)
    rng = np.random.default_rng(seed)
    log = SkipLog()
    source = job.source
    if hasattr(source, "skips"):
        # collect what this root skips, to be replayed in root order by the consumer; a shallow
        # copy, so roots running at once in threads of one process do not share the log
        source = copy.copy(source)
        source.skips = log
    root = source.make_root(r, rng)
    if root is None:
        return RootResult("no_root", seed, skips=log.items)
    n = len(root.atoms)
    if not job.size.contains(n) or not job.entry_size.contains(n):
        return RootResult("root_size", seed, skips=log.items)
    try:
        samples = SAMPLER_FUNCTIONS[job.sampler](root.atoms, rng, job.params, calculator)
    except UserError:
        raise
    except Exception as err:  # a teacher that fails on one structure must not stop the run
        msg = f"{err.__class__.__name__}: {' '.join(str(err).split())[:200]}"
        return RootResult("error", seed, error=msg, skips=log.items)
    res = RootResult("ok", seed, root.source, root.group, skips=log.items)
    if job.include_root and respects_min_distance(root.atoms, job.factor):
        res.root = clean_copy(root.atoms)
    for s in samples:
        ok = job.size.contains(len(s.atoms)) and respects_min_distance(s.atoms, job.factor)
        res.samples.append((clean_copy(s.atoms), s.params, s.parent, ok))
    return res


@dataclass
class RootUsage:
    """Where the executors' time went: roots the consumer took (``taken``, their ``taken_s``
    seconds of run_root), roots that finished but were not needed (``discarded``, ``discarded_s``)
    and roots cancelled before they finished (``cancelled``; their time is not known)."""

    taken: int = 0
    taken_s: float = 0.0
    discarded: int = 0
    discarded_s: float = 0.0
    cancelled: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class InProcessRoots:
    """Runs each root when the consumer asks for it, in this process (``workers: 1``): no
    speculation, so exactly the roots the consumer takes are run."""

    workers = 1

    def __init__(self, calculator=None):
        self.calculator = calculator
        self.usage = RootUsage()

    def start(self, jobs: list[EntryJob]) -> None:
        pass

    def result(self, job: EntryJob, r: int) -> RootResult:
        res = run_root(job, r, self.calculator if job.needs_teacher else None)
        self.usage.taken += 1
        self.usage.taken_s += res.seconds
        return res

    def finish(self, job: EntryJob) -> None:
        pass

    def close(self) -> None:
        pass
