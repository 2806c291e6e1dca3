"""Speed harness: teacher and student timed side by side in one process, same threads.

Two quantities per model and system, both in milliseconds:

* ``force_call_ms``: one energy + forces evaluation after a tiny displacement of the
  atoms (so no calculator can serve a cached result);
* ``md_step_ms``: one ASE ``VelocityVerlet`` step (one force call plus the integrator).

Models are **interleaved**: each round times every model in turn, for ``n_rounds``
rounds, and the reported value is the median over all calls of all rounds. This keeps
slow drifts of a shared, throttling CPU from favouring whoever ran first. The
speed-up ``ratio`` is exactly ``teacher median / student median``.

``ns_per_day`` is simulated time per wall-clock day at the stated timestep:
``timestep_fs * 1e-6 * 86400 / (md_step_ms / 1000)``.

Memory (a separate pass after timing, so tracing does not slow the timed calls), measured
for each model in a **fresh spawned process** when the model can be rebuilt there (a
student path, a teacher spec): ``rss_model_mb`` is the RSS that building the model adds,
``rss_peak_increase_mb`` the highest resident set size seen by a 1 ms sampler during its
first force calls and MD steps minus the RSS just before, ``rss_peak_mb`` that peak
(absolute, with the Python + torch runtime), ``python_peak_mb`` the ``tracemalloc`` peak of
Python-level allocations over the same calls (torch's CPU tensors are invisible to
``tracemalloc``, hence both). Calculator objects cannot be sent to another process: they
are measured in this one (``isolated: false``), where memory freed by one model and reused
by the other can make the numbers low.
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
import tracemalloc

import numpy as np
from ase import units
from ase.md.verlet import VelocityVerlet

from .md import thermalize


def set_threads(n: int) -> dict:
    """Use ``n`` threads in torch (and in BLAS through threadpoolctl when installed).

    Returns what is in effect, for the report.
    """
    import torch

    torch.set_num_threads(int(n))
    out = {"torch_threads": torch.get_num_threads()}
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(n))
        out["blas_threads"] = int(n)
    except ImportError:
        pass
    return out


def ns_per_day(md_step_ms: float, timestep_fs: float) -> float:
    """Simulated nanoseconds per wall-clock day for one step of ``md_step_ms`` ms at ``timestep_fs`` fs."""
    if md_step_ms <= 0:
        return float("inf")
    return timestep_fs * 1e-6 * 86400.0 / (md_step_ms / 1000.0)


class _Runner:
    """Per-model state: its own copy of the atoms for force calls and for MD."""

    def __init__(self, handle, atoms, timestep_fs: float, seed: int):
        self.handle = handle
        self.calc = handle.make_calculator()
        self.base = atoms.copy()
        self.call_atoms = atoms.copy()
        self.call_atoms.calc = self.calc
        self.rng = np.random.default_rng(seed)
        self.md_atoms = atoms.copy()
        thermalize(self.md_atoms, 300.0, seed)
        self.md_atoms.calc = self.calc
        self.dyn = VelocityVerlet(self.md_atoms, timestep=timestep_fs * units.fs)
        self.call_s: list[float] = []
        self.step_s: list[float] = []

    def _nudge(self):
        # 1e-4 A displacements: a new geometry for every call, physically the same structure
        self.call_atoms.positions = self.base.positions + self.rng.normal(scale=1e-4, size=self.base.positions.shape)

    def force_call(self) -> float:
        self._nudge()
        t0 = time.perf_counter()
        self.call_atoms.get_forces()
        self.call_atoms.get_potential_energy()
        return time.perf_counter() - t0

    def md_steps(self, n: int) -> float:
        # the first dyn.run call evaluates forces at the start geometry; do that untimed
        self.md_atoms.get_forces()
        t0 = time.perf_counter()
        self.dyn.run(n)
        return (time.perf_counter() - t0) / n


def _summary(times_s: list[float]) -> dict:
    ms = [t * 1000.0 for t in times_s]
    return {
        "median": statistics.median(ms),
        "min": min(ms),
        "mean": statistics.fmean(ms),
        "n": len(ms),
    }


class _RSSSampler:
    """Highest RSS (bytes) seen by a background thread sampling every ``interval`` s."""

    def __init__(self, interval: float = 0.001):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self.start = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def measure_memory(runner: _Runner, n_calls: int = 2, n_steps: int = 2) -> dict:
    """Peak memory of a few force calls and MD steps of one model (see module docstring)."""
    gc.collect()
    with _RSSSampler() as rss:
        tracemalloc.start()
        try:
            for _ in range(n_calls):
                runner.force_call()
            runner.md_steps(n_steps)
            _, py_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return {
        "rss_peak_mb": rss.peak / 2**20,
        "rss_peak_increase_mb": max(0, rss.peak - rss.start) / 2**20,
        "python_peak_mb": py_peak / 2**20,
    }


def _memory_child(conn, kind, spec, atoms, threads, timestep_fs, seed):
    """Runs in a fresh process: build one model, then measure its calls (see memory_isolated)."""
    try:
        import psutil

        set_threads(threads)
        proc = psutil.Process()
        gc.collect()
        before = proc.memory_info().rss
        from .models import resolve_student, resolve_teacher

        handle = resolve_student(spec[0], backend=spec[1]) if kind == "student" else resolve_teacher(spec)
        runner = _Runner(handle, atoms, timestep_fs, seed)
        gc.collect()
        loaded = proc.memory_info().rss
        mem = measure_memory(runner)
        mem["rss_model_mb"] = max(0, loaded - before) / 2**20
        mem["isolated"] = True
        conn.send(("ok", mem))
    except BaseException as err:  # report, never leave the parent waiting
        conn.send(("error", " ".join(f"{type(err).__name__}: {err}".split())[:300]))
    finally:
        conn.close()


def memory_isolated(handle, atoms, threads: int = 1, timestep_fs: float = 0.5, seed: int = 0,
                    timeout_s: float = 900.0) -> dict:
    """Memory of one model measured in a fresh (spawned) process, so that the other model's
    allocations cannot hide or inflate it.

    ``rss_model_mb``: RSS added by building the model and its calculator; ``rss_peak_increase_mb``:
    highest RSS during the first force calls and MD steps minus the RSS before them;
    ``rss_peak_mb``: that peak, absolute (includes the Python + torch runtime); ``python_peak_mb``:
    the ``tracemalloc`` peak of those calls. Falls back to an ``error`` entry after ``timeout_s``.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    kind, spec = handle.rebuild
    proc = ctx.Process(target=_memory_child, args=(child, kind, spec, atoms, threads, timestep_fs, seed), daemon=True)
    proc.start()
    child.close()
    try:
        if parent.poll(timeout_s):
            status, payload = parent.recv()
        else:
            status, payload = "error", f"memory measurement timed out after {timeout_s:.0f} s"
    except EOFError:
        status, payload = "error", "the memory-measuring process died"
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join(10)
    if status == "ok":
        return payload
    return {"error": payload, "isolated": True}


def profile_speed(
    models: dict,
    atoms,
    timestep_fs: float = 0.5,
    n_rounds: int = 3,
    n_calls: int = 5,
    n_md_steps: int = 5,
    warmup: int = 2,
    memory: bool = True,
    seed: int = 0,
    progress=None,
    isolate_memory: bool = True,
    threads: int = 1,
) -> dict:
    """Time every model in ``models`` (label -> :class:`ModelHandle`) on ``atoms``, interleaved.

    Returns ``{label: {"force_call_ms": {...}, "md_step_ms": {...}, "ns_per_day": x,
    "memory": {...}}}``; each ``*_ms`` dict holds median/min/mean/n in milliseconds.
    ``progress`` (optional) is called with no argument after each timed block.
    """
    runners = {label: _Runner(h, atoms, timestep_fs, seed) for label, h in models.items()}
    for r in runners.values():  # warm-up: first calls pay for lazy setup / compilation
        for _ in range(warmup):
            r.force_call()
        r.md_steps(1)
    for _ in range(n_rounds):
        for r in runners.values():
            r.call_s.extend(r.force_call() for _ in range(n_calls))
            if progress:
                progress()
        for r in runners.values():
            r.step_s.append(r.md_steps(n_md_steps))
            if progress:
                progress()
    out = {}
    for label, r in runners.items():
        calls = _summary(r.call_s)
        steps = _summary(r.step_s)
        out[label] = {
            "force_call_ms": calls,
            "md_step_ms": steps,
            "ns_per_day": ns_per_day(steps["median"], timestep_fs),
        }
    if memory:
        for label, r in runners.items():
            if isolate_memory and r.handle.rebuild is not None:
                out[label]["memory"] = memory_isolated(r.handle, atoms, threads, timestep_fs, seed)
            else:
                out[label]["memory"] = {**measure_memory(r), "isolated": False}
    return out


def speed_ratios(speed: dict, teacher: str, student: str) -> dict:
    """``teacher median / student median`` for force calls and MD steps."""
    t, s = speed[teacher], speed[student]
    return {
        "force_call": t["force_call_ms"]["median"] / s["force_call_ms"]["median"],
        "md_step": t["md_step_ms"]["median"] / s["md_step_ms"]["median"],
    }
