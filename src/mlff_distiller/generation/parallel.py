"""Generation on a Dask cluster: the roots of the mix entries run as tasks on the workers.

The cluster is the labelling stage's (:func:`mlff_distiller.labeling.cluster.connect`: a local
cluster, an existing scheduler or Slurm). Each worker builds the recipe's teacher once, from
its spec (:func:`mlff_distiller.labeling.worker.get_teacher`), for the entries whose sampler
needs one; teacher-free entries never build it.

:class:`DaskRoots` keeps a window of root tasks in flight (:data:`WINDOW_PER_WORKER` per
worker), ahead of the engine's consumer, which takes results strictly in root order with the
same acceptance logic as in-process generation: roots run speculatively, and those of an entry
that is already full are cancelled and their results discarded. A root of a later entry is
started once the roots in flight for the earlier ones are expected to fill them (from the
structures per root seen so far); Dask priorities run earlier entries' roots first.
"""

from __future__ import annotations

import math

from ..errors import TeacherError
from .roots import EntryJob, RootResult, run_root

#: root tasks in flight per worker
WINDOW_PER_WORKER = 3


def root_task(spec, threads: int | None, job: EntryJob, r: int) -> RootResult:
    """Run root ``r`` of ``job`` on a worker (the teacher built once per process from ``spec``)."""
    calculator = None
    if job.needs_teacher:
        from ..labeling.worker import get_teacher

        calculator = get_teacher(spec, threads).calculator()
    return run_root(job, r, calculator)


class DaskRoots:
    """Runs the roots on the workers of ``client`` (see the module docstring)."""

    def __init__(self, client, spec=None, threads: int | None = 1, window: int | None = None):
        from ..labeling.cluster import n_workers_of

        self.client, self.spec, self.threads = client, spec, threads
        self.workers = n_workers_of(client)
        self.window = int(window or WINDOW_PER_WORKER * self.workers)
        self.futures: dict = {}  # (entry, root) -> future

    def start(self, jobs: list[EntryJob]) -> None:
        self.jobs = {j.index: j for j in jobs if j.want > 0}
        if self.spec is not None and any(j.needs_teacher for j in self.jobs.values()):
            self._warm_up()
        self.refs = {e: self.client.scatter(j.portable(), hash=False) for e, j in self.jobs.items()}
        self.next_r = {e: 0 for e in self.jobs}
        self.seen = {e: [0, 0] for e in self.jobs}  # roots returned, structures they can give
        self.closed: set = set()
        self._fill()

    def _warm_up(self) -> None:
        # Build the teacher on every worker now: one that cannot load fails here, on one line,
        # with the worker's own error (the labelling stage's probe, reused as is).
        from ..labeling.engine import _run_probe
        from ..labeling.worker import probe

        _run_probe(self.client, probe, self.spec, self.threads, [])

    def result(self, job: EntryJob, r: int) -> RootResult:
        from distributed.scheduler import KilledWorker

        from ..labeling.worker import TeacherLoadError

        e = job.index
        while self.next_r[e] <= r:  # the estimate fell short: run the roots the consumer needs now
            self._submit(e)
        self._fill()
        fut = self.futures.pop((e, r))
        try:
            res = fut.result()
        except TeacherLoadError as err:
            raise TeacherError(str(err)) from None
        except KilledWorker as err:  # the root kills its worker (e.g. out of memory): a failed root
            res = RootResult("error", 0, error=f"KilledWorker: worker process died running this root ({err})")
        self.seen[e][0] += 1
        self.seen[e][1] += res.n_ok
        self._fill()
        return res

    def finish(self, job: EntryJob) -> None:
        """The entry is full (or out of roots): cancel its roots still queued or running."""
        self.closed.add(job.index)
        stale = [k for k in self.futures if k[0] == job.index]
        if stale:
            self.client.cancel([self.futures.pop(k) for k in stale])
        self.refs.pop(job.index, None)
        self._fill()

    def close(self) -> None:
        if self.futures:
            self.client.cancel(list(self.futures.values()))
        self.futures.clear()
        getattr(self, "refs", {}).clear()

    # -- speculation ---------------------------------------------------------------------------
    def _expected_roots(self, e: int) -> float:
        """Roots entry ``e`` probably needs in all: from the structures its returned roots gave;
        before any returned, from the sampler's nominal ``per_root`` when it has one (otherwise
        infinite). Without that prior the window filled with roots of the first entry, and the
        ones that started after the entry was full ran to the end for nothing: two workers took
        longer than one on a recipe of few long MD roots
        (``benchmarks/results/generation_workers_silicon_liquid.md``)."""
        job = self.jobs[e]
        n, got = self.seen[e]
        if got == 0:
            per_root = job.params.get("per_root") if n == 0 else None
            if isinstance(per_root, int) and per_root > 0:
                return math.ceil(job.want / (per_root + int(job.include_root)))
            return math.inf
        return n + math.ceil(max(0, job.want - got) * n / got)

    def _fill(self) -> None:
        while len(self.futures) < self.window:
            for e in sorted(self.jobs):
                if e in self.closed or self.next_r[e] >= self.jobs[e].max_roots:
                    continue
                if self.next_r[e] < self._expected_roots(e):
                    self._submit(e)
                    break
            else:
                return

    def _submit(self, e: int) -> None:
        r = self.next_r[e]
        self.next_r[e] += 1
        self.futures[(e, r)] = self.client.submit(
            root_task, self.spec, self.threads, self.refs[e], r, pure=False, priority=-(e * 2**32 + r))
