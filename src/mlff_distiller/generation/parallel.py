"""Generation on a Dask cluster: the roots of the mix entries run as tasks on the workers.

The cluster is the labelling stage's (:func:`mlff_distiller.labeling.cluster.connect`: a local
cluster, an existing scheduler or Slurm). Each worker builds the recipe's teacher once, from
its spec (:func:`mlff_distiller.labeling.worker.get_teacher`), for the entries whose sampler
needs one; teacher-free entries never build it.

:class:`DaskRoots` keeps a window of root tasks running (:data:`WINDOW_PER_WORKER` per worker),
ahead of the engine's consumer, which takes results strictly in root order with the same
acceptance logic as in-process generation: roots run speculatively, and those of an entry that
is already full are cancelled and their results discarded. A root that finishes is collected at
once and held until the consumer reaches it, and its place in the window goes to the next root:
a long root at the head of the order (a teacher MD) no longer leaves the other workers idle once
they have finished the short roots behind it. A root of a later entry is started once the roots
already started for the earlier ones are expected to fill them (from the structures per root
seen so far, finished roots included); Dask priorities run earlier entries' roots first.
"""

from __future__ import annotations

import math

from ..errors import TeacherError
from .roots import EntryJob, RootResult, RootUsage, run_root

#: root tasks running or queued per worker
WINDOW_PER_WORKER = 3
#: finished roots held for the consumer per worker, at most
READY_PER_WORKER = 64


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
        #: finished roots held for the consumer, at most (bounds the memory they take)
        self.max_ready = READY_PER_WORKER * max(self.workers, 1)
        self.futures: dict = {}  # (entry, root) -> future, started and not yet collected
        self.ready: dict = {}  # (entry, root) -> RootResult or the exception its task raised
        self.usage = RootUsage()

    def start(self, jobs: list[EntryJob]) -> None:
        self.jobs = {j.index: j for j in jobs if j.want > 0}
        if self.spec is not None and any(j.needs_teacher for j in self.jobs.values()):
            self._warm_up()
        self.refs = {e: self.client.scatter(j.portable(), hash=False) for e, j in self.jobs.items()}
        self.next_r = {e: 0 for e in self.jobs}
        self.seen = {e: [0, 0] for e in self.jobs}  # roots finished, structures they can give
        self.closed: set = set()
        self._fill()

    def _warm_up(self) -> None:
        # Build the teacher on every worker now: one that cannot load fails here, on one line,
        # with the worker's own error (the labelling stage's probe, reused as is).
        from ..labeling.engine import _run_probe
        from ..labeling.worker import probe

        _run_probe(self.client, probe, self.spec, self.threads, [])

    def result(self, job: EntryJob, r: int) -> RootResult:
        from ..labeling.worker import TeacherLoadError

        e = job.index
        while self.next_r[e] <= r:  # the estimate fell short: run the roots the consumer needs now
            self._submit(e)
        while True:
            self._collect()
            self._fill()
            if (e, r) in self.ready:
                break
            if not self.futures:  # cannot happen: root r was started and not yet taken
                raise RuntimeError(f"generation: root {r} of mix[{e}] was lost by the executor")
            self._wait_any()
        res = self.ready.pop((e, r))
        self._fill()
        if isinstance(res, RootResult):
            self.usage.taken += 1
            self.usage.taken_s += res.seconds
        if isinstance(res, TeacherLoadError):
            raise TeacherError(str(res)) from None
        if isinstance(res, BaseException):
            raise res
        return res

    def finish(self, job: EntryJob) -> None:
        """The entry is full (or out of roots): cancel its roots still queued or running."""
        self._collect()  # roots that finished meanwhile count as not needed, not as cancelled
        self.closed.add(job.index)
        stale = [k for k in self.futures if k[0] == job.index]
        if stale:
            self.client.cancel([self.futures.pop(k) for k in stale])
            self.usage.cancelled += len(stale)
        for k in [k for k in self.ready if k[0] == job.index]:
            self._discard(self.ready.pop(k))
        self.refs.pop(job.index, None)
        self._fill()

    def close(self) -> None:
        self._collect()
        if self.futures:
            self.client.cancel(list(self.futures.values()))
            self.usage.cancelled += len(self.futures)
        self.futures.clear()
        for res in self.ready.values():
            self._discard(res)
        self.ready.clear()
        getattr(self, "refs", {}).clear()

    def _discard(self, res) -> None:
        self.usage.discarded += 1
        self.usage.discarded_s += getattr(res, "seconds", 0.0)

    # -- collection ----------------------------------------------------------------------------
    def _wait_any(self) -> None:
        """Block until one of the started roots finishes."""
        from concurrent.futures import CancelledError

        from distributed import wait

        with self.client.as_current():  # distributed.wait uses the current client; ours may not be the default
            try:
                wait(list(self.futures.values()), return_when="FIRST_COMPLETED")
            except CancelledError:  # one of them was cancelled (e.g. the scheduler went away): _collect
                pass  # keeps it, and it is raised when the consumer reaches that root

    def _collect(self) -> None:
        """Move the finished roots from ``futures`` to ``ready`` (counted for the estimate)."""
        from distributed.scheduler import KilledWorker

        for key in [k for k, f in self.futures.items() if f.done()]:
            fut = self.futures.pop(key)
            try:
                res = fut.result()
            except KilledWorker as err:  # the root kills its worker (e.g. out of memory): a failed root
                res = RootResult("error", 0, error=f"KilledWorker: worker process died running this root ({err})")
            except Exception as err:  # raised where the consumer reaches this root, as before
                self.ready[key] = err
                continue
            self.ready[key] = res
            self.seen[key[0]][0] += 1
            self.seen[key[0]][1] += res.n_ok

    # -- speculation ---------------------------------------------------------------------------
    def _expected_roots(self, e: int) -> float:
        """Roots entry ``e`` probably needs in all: from the structures its finished roots gave;
        before any finished, from the sampler's nominal ``per_root`` when it has one (otherwise
        infinite). Without that prior the window filled with roots of the first entry, and the
        ones that started after the entry was full ran to the end for nothing: two workers took
        longer than one on a recipe of few long MD roots
        (``benchmarks/results/generation_workers_silicon_liquid.md``)."""
        job = self.jobs[e]
        n, got = self.seen[e]
        if got == 0:  # roots that gave nothing (they finish first: failures are quick) do not count
            per_root = job.params.get("per_root")
            if isinstance(per_root, int) and per_root > 0:
                return n + math.ceil(job.want / (per_root + int(job.include_root)))
            return math.inf
        return n + math.ceil(max(0, job.want - got) * n / got)

    def _fill(self) -> None:
        while len(self.futures) < self.window and len(self.ready) < self.max_ready:
            for e in sorted(self.jobs):
                if e in self.closed or self.next_r[e] >= self.jobs[e].max_roots:
                    continue
                limit = self._expected_roots(e)
                if limit == math.inf:  # no estimate: at most a window of its roots started and not yet taken
                    room = sum(k[0] == e for k in (*self.futures, *self.ready)) < self.window
                else:
                    room = self.next_r[e] < limit
                if room:
                    self._submit(e)
                    break
            else:
                return

    def _submit(self, e: int) -> None:
        r = self.next_r[e]
        self.next_r[e] += 1
        self.futures[(e, r)] = self.client.submit(
            root_task, self.spec, self.threads, self.refs[e], r, pure=False, priority=-(e * 2**32 + r))
