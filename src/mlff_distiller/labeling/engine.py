"""``label_pool``: teacher labels for an unlabelled pool, on Dask, resumable.

The client (this process) reads the pool, cuts it into contiguous chunks, keeps a bounded
number of chunk tasks in flight on the workers (each worker builds its teacher once),
commits every finished chunk as a shard (:mod:`.checkpoint`), calls the ``on_chunk`` hook,
and at the end merges the shards, in pool order, into one dataset file written under a
temporary name and renamed. Units are ASE's: energy eV, forces eV/A, stress Voigt eV/A^3.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import fields as F
from ..errors import ConfigError, DatasetError, TeacherError, UserError
from ..fileio import replace_atomically, stale_temp_paths, temp_path
from ..logs import say
from ..teachers.registry import parse_teacher_spec
from .checkpoint import WorkDir
from .worker import TeacherLoadError, spec_key

log = logging.getLogger(__name__)

FORMAT = "mlff-distiller-labeling/1"
DEFAULT_MIN_DISTANCE = 0.5  # A; closer pairs are reported as overlapping atoms
TARGET_CHUNK_SECONDS = 2.0  # a task should run ~1 s or more so Dask overhead stays small
MAX_CHUNK = 2_000  # keeps a task message at a few MB (structures travel with the task)
PROBE_STRUCTURES = 4
MERGE_BATCH = 2048  # structures per DatasetWriter.append during the merge

ChunkHook = Callable[[int, list, list], None]


@dataclass
class LabelSummary:
    """What one ``label_pool`` call did.

    ``labelled``/``failed``: structures labelled / sent to the failures table in this run;
    ``skipped``: structures of chunks already committed by an earlier run (or all of them
    when the output was already complete); ``n_dataset``/``n_failures``: totals in the
    output file.
    """

    labelled: int = 0
    failed: int = 0
    skipped: int = 0
    n_pool: int = 0
    n_dataset: int = 0
    n_failures: int = 0
    n_chunks: int = 0
    chunk_size: int = 0
    seconds: float = 0.0
    structures_per_second: float = 0.0
    teacher: str = ""
    out_path: str = ""
    resumed: bool = False
    already_complete: bool = False
    workers: int = 0
    worker_utilisation: float = 0.0  # teacher time on workers / (labelling wall time x workers)

    def __str__(self) -> str:
        s = f"labelled {self.labelled}, failed {self.failed}, skipped {self.skipped}"
        s += f" of {self.n_pool} structures in {self.seconds:.1f} s"
        if self.labelled:
            s += f" ({self.structures_per_second:.2f} structures/s, {3600 * self.structures_per_second:,.0f}/h)"
        s += f"; {self.out_path}: {self.n_dataset} labelled, {self.n_failures} in the failures table"
        return s

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Chunk:
    chunk_id: int
    indices: list[int]
    atoms: list
    parts: dict = field(default_factory=dict)  # sub-results while split after a worker death


def _open_pool(pool_path):
    from ..data.store import DatasetReader

    p = Path(pool_path)
    if not p.exists():
        raise DatasetError(f"pool file {p} does not exist; create one with `mlff-distill generate` or check the path")
    from ..data.io import require_dataset

    require_dataset(p, "pool")
    return DatasetReader(p)


def _sha256(path) -> str:
    from ..teachers.base import sha256_file

    return sha256_file(path)


def _check_positive(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"labeling.{name}: must be an integer >= 1, got {value!r}")


def _auto_chunk_size(seconds_per_structure: float | None, n: int, n_workers: int, target: float) -> int:
    # At least ~target seconds per task, but keep >= 2 chunks per worker so the load balances.
    per = seconds_per_structure or 0.0
    by_time = math.ceil(target / per) if per > 0 else MAX_CHUNK
    by_balance = math.ceil(n / (2 * max(1, n_workers))) if n else 1
    return int(max(1, min(by_time, by_balance, MAX_CHUNK)))


def _labelled_atoms(pool_atoms, shard: dict, teacher_id: str, parent_map: dict | None = None) -> list:
    """Atoms carrying shard labels on a SinglePointCalculator, provenance teacher set."""
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    offsets = np.concatenate([[0], np.cumsum(shard["n_atoms"])])
    for k, atoms in enumerate(pool_atoms):
        a = atoms.copy()
        a.calc = None
        e = float(shard["energy"][k])
        results = {"energy": e, "free_energy": e, "forces": shard["forces"][offsets[k] : offsets[k + 1]].copy()}
        if bool(shard["stress_mask"][k]):
            results["stress"] = shard["stress"][k].copy()
        a.calc = SinglePointCalculator(a, **results)
        prov = dict(a.info.get("provenance") or {})
        prov["teacher"] = teacher_id
        if parent_map is not None and "parent" in prov:
            parent = int(prov["parent"])
            prov["parent"] = int(parent_map.get(parent, -1)) if parent >= 0 else -1
        a.info["provenance"] = prov
        out.append(a)
    return out


def _read_atoms(reader, indices: Sequence[int]) -> list:
    return [reader.get_atoms(int(i)) for i in indices]


def label_pool(
    pool_path,
    teacher_spec,
    out_path,
    *,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    chunk_size: int | None = None,
    scheduler=None,
    overwrite: bool = False,
    on_chunk: ChunkHook | None = None,
    progress: bool = True,
    hpc=None,
    min_distance: float = DEFAULT_MIN_DISTANCE,
    target_chunk_seconds: float = TARGET_CHUNK_SECONDS,
    max_in_flight: int | None = None,
    connect_timeout: float = 10.0,
    worker_timeout: float = 60.0,
) -> LabelSummary:
    """Label every structure of ``pool_path`` with the teacher and write ``out_path``.

    ``teacher_spec``: a name (``"emt"``, ``"chgnet"``), a spec dict or a JSON/YAML string.
    ``n_workers``/``threads_per_worker``: local cluster size (processes, math threads each);
    ignored with ``scheduler`` (address ``tcp://host:port`` or a ``distributed.Client``) or
    ``hpc`` (``labeling.hpc`` mapping -> Slurm). ``chunk_size``: structures per task;
    default: sized from a timing of the teacher on a few structures so a task runs about
    ``target_chunk_seconds``. ``min_distance`` (A): structures with two atoms closer than
    this go to the failures table without calling the teacher (0 disables).

    Resumable: re-running the same call skips committed chunks (``<out>.parts/``); a
    finished output for the same pool and teacher is left as is. ``overwrite`` allows
    replacing an output (or checkpoint) made from a different pool or teacher, and
    relabelling a finished one. ``on_chunk(chunk_id, atoms, failures)`` is called after
    each newly committed chunk with the labelled atoms (labels on ``atoms.calc``) and
    ``[(pool_index, reason)]``; an exception from it stops the run (committed chunks stay).

    Raises :class:`UserError` subclasses for bad input: missing/corrupt pool, unreachable
    scheduler, a teacher that fails to load on a worker, an output from another pool.
    """
    t_start = time.perf_counter()
    _check_run_options(n_workers, threads_per_worker, chunk_size, scheduler, hpc, min_distance)
    spec = _checked_spec(teacher_spec)
    out = Path(out_path)
    pool_p = Path(pool_path)
    if out.resolve() == pool_p.resolve():
        raise UserError(f"output {out} is the pool itself; choose another -o path")

    reader = _open_pool(pool_p)
    try:
        n = len(reader)
        pool_sha = _sha256(pool_p)
        out.parent.mkdir(parents=True, exist_ok=True)
        existing = _existing_output(out)
        if _output_done_for_spec(existing, out, pool_sha, spec, min_distance, overwrite):
            return _complete_summary(out, n, t_start)
        work = WorkDir.for_output(out)
        plan = _checkpoint_of_pool(work, pool_sha, overwrite)

        from .cluster import connect, n_workers_of
        from .worker import label_chunk

        with connect(scheduler, n_workers=n_workers, threads_per_worker=threads_per_worker, hpc=hpc,
                     connect_timeout=connect_timeout, worker_timeout=worker_timeout) as client:
            workers = n_workers_of(client)
            info = _announce_and_probe(client, reader, spec, threads_per_worker, n, workers, progress)
            teacher_id = info["fingerprint_id"]
            if _output_done_for_teacher(existing, out, pool_sha, teacher_id, min_distance, overwrite):
                return _complete_summary(out, n, t_start)
            plan = _checkpoint_of_teacher(work, plan, teacher_id, min_distance, n, overwrite)
            plan = _plan_of_run(work, plan, info, spec, pool_p, pool_sha, n, min_distance, chunk_size,
                                workers, target_chunk_seconds)
            size = int(plan["chunk_size"])
            n_chunks, done, skipped, todo = _chunks_left(work, n, size)
            stats = _dispatch(
                client, label_chunk, reader, work, spec, threads_per_worker, todo, size, n, min_distance,
                teacher_id, on_chunk, progress, max_in_flight or max(2, 2 * workers),
            )

        n_dataset, n_failures = _merge(reader, work, plan, out, n_chunks, size)
        work.remove()
        return _run_summary(
            stats, t_start, skipped=skipped, n_pool=n, n_dataset=n_dataset, n_failures=n_failures,
            n_chunks=n_chunks, chunk_size=size, teacher=teacher_id, out_path=str(out), resumed=bool(done),
            workers=workers,
        )
    finally:
        reader.close()


def _check_run_options(n_workers, threads_per_worker, chunk_size, scheduler, hpc, min_distance) -> None:
    """The numeric options of ``label_pool`` (and the local cluster's size) are sane."""
    _check_positive("n_workers", n_workers)
    _check_positive("threads_per_worker", threads_per_worker)
    _check_positive("chunk_size", chunk_size, allow_none=True)
    if scheduler is None and hpc is None:
        from .cluster import check_local_size

        check_local_size(n_workers, threads_per_worker)
    if not isinstance(min_distance, (int, float)) or min_distance < 0:
        raise ConfigError(f"labeling.min_distance: must be a number >= 0 (A), got {min_distance!r}")


def _checked_spec(teacher_spec) -> dict | str:
    """The parsed teacher spec; a bad name, option or import path fails here, before any
    cluster starts (a package installed only on the workers is left to them: they check
    before calling anything)."""
    from ..teachers.registry import check_teacher_spec

    spec = parse_teacher_spec(teacher_spec)
    check_teacher_spec(spec, missing_ok=True)
    return spec


def _output_done_for_spec(existing: dict | None, out: Path, pool_sha: str, spec, min_distance: float,
                          overwrite: bool) -> bool:
    """Before any cluster starts: True when ``out`` is already this pool labelled with this spec.

    An output labelled from another pool is refused unless ``overwrite``.
    """
    if existing is not None and existing.get("labeling_pool_sha256") != pool_sha and not overwrite:
        raise UserError(
            f"output {out} exists and was labelled from another pool "
            f"({existing.get('labeling_pool_path', 'unknown')}); pass --overwrite to replace it or choose "
            "another -o"
        )
    return (
        existing is not None
        and not overwrite
        and existing.get("labeling_teacher_spec") == spec_key(spec)
        and float(existing.get("labeling_min_distance", -1)) == float(min_distance)
    )


def _output_done_for_teacher(existing: dict | None, out: Path, pool_sha: str, teacher_id: str,
                             min_distance: float, overwrite: bool) -> bool:
    """After the probe: True when ``out`` is this pool labelled by this very teacher.

    An output of the same pool from another teacher (or min_distance) is refused unless
    ``overwrite``.
    """
    if existing is None or existing.get("labeling_pool_sha256") != pool_sha or overwrite:
        return False
    if existing.get("teacher_fingerprint_id") == teacher_id and float(
        existing.get("labeling_min_distance", -1)
    ) == float(min_distance):
        return True
    raise UserError(
        f"output {out} exists and was labelled by teacher {existing.get('teacher_fingerprint_id')} "
        f"(min_distance {existing.get('labeling_min_distance')}); pass --overwrite to relabel it with "
        f"{teacher_id} or choose another -o"
    )


def _checkpoint_of_pool(work: WorkDir, pool_sha: str, overwrite: bool) -> dict | None:
    """The checkpoint's plan when it was made from this pool; another pool's is refused
    (or, with ``overwrite``, discarded)."""
    plan = work.read_plan() if work.exists() else None
    if plan is not None and plan.get("pool_sha256") != pool_sha:
        if not overwrite:
            raise UserError(
                f"checkpoint {work.path} belongs to another pool ({plan.get('pool_path')}); "
                f"pass --overwrite to discard it or choose another -o"
            )
        work.remove()
        plan = None
    return plan


def _checkpoint_of_teacher(work: WorkDir, plan: dict | None, teacher_id: str, min_distance: float, n: int,
                           overwrite: bool) -> dict | None:
    """``plan`` when it matches the probed teacher, min_distance and pool size; a mismatching
    checkpoint is refused (or, with ``overwrite``, discarded)."""
    if plan is not None and (
        plan.get("teacher_fingerprint_id") != teacher_id
        or float(plan.get("min_distance", -1)) != float(min_distance)
        or plan.get("n_structures") != n
    ):
        if not overwrite:
            raise UserError(
                f"checkpoint {work.path} was made with teacher {plan.get('teacher_fingerprint_id')} "
                f"(min_distance {plan.get('min_distance')}); pass --overwrite to discard it or choose "
                "another -o"
            )
        work.remove()
        plan = None
    return plan


def _announce_and_probe(client, reader, spec, threads: int, n: int, workers: int, progress: bool) -> dict:
    """Say where the dashboard is, then load the teacher on the workers and time it."""
    from .worker import probe

    link = getattr(client, "dashboard_link", None)
    if link:
        msg = f"labelling {n} structures on {workers} Dask workers; dashboard: {link}"
        say(msg, log) if progress else log.info(msg)
    probe_atoms = _read_atoms(reader, range(min(PROBE_STRUCTURES, n)))
    return _run_probe(client, probe, spec, threads, probe_atoms)


def _plan_of_run(work: WorkDir, plan: dict | None, info: dict, spec, pool_p: Path, pool_sha: str, n: int,
                 min_distance: float, chunk_size: int | None, workers: int, target_chunk_seconds: float) -> dict:
    """The checkpoint's plan when resuming; else a fresh plan (chunk size from the probe's
    timing unless given), written to the checkpoint."""
    if plan is not None:
        if chunk_size and chunk_size != plan["chunk_size"]:
            log.warning("resuming with the checkpoint's chunk size %d (ignoring %d)", plan["chunk_size"], chunk_size)
        return plan
    size = chunk_size or _auto_chunk_size(info["seconds_per_structure"], n, workers, target_chunk_seconds)
    plan = {
        "format": FORMAT,
        "pool_path": str(pool_p.resolve()),
        "pool_sha256": pool_sha,
        "n_structures": n,
        "chunk_size": int(size),
        "min_distance": float(min_distance),
        "teacher_spec": info["spec"],
        "teacher_spec_key": spec_key(spec),
        "teacher_fingerprint": info["fingerprint"],
        "teacher_fingerprint_id": info["fingerprint_id"],
        "teacher_capabilities": info["capabilities"],
        "probe_seconds_per_structure": info["seconds_per_structure"],
    }
    work.write_plan(plan)
    return plan


def _chunks_left(work: WorkDir, n: int, size: int) -> tuple[int, dict, int, list[int]]:
    """(number of chunks, committed chunk ids, structures in them, chunk ids still to label)."""
    n_chunks = math.ceil(n / size) if n else 0
    done = work.committed(n_chunks)
    skipped = sum(min(size, n - c * size) for c in done)
    todo = [c for c in range(n_chunks) if c not in done]
    if done:
        log.info("resuming: %d of %d chunks already committed", len(done), n_chunks)
    return n_chunks, done, skipped, todo


def _run_summary(stats: dict, t_start: float, *, workers: int, **fields) -> LabelSummary:
    """The summary of a run that labelled (rates from the dispatch statistics)."""
    seconds = time.perf_counter() - t_start
    return LabelSummary(
        labelled=stats["labelled"],
        failed=stats["failed"],
        seconds=seconds,
        structures_per_second=(stats["labelled"] + stats["failed"]) / stats["seconds"]
        if stats["seconds"] > 0
        else 0.0,
        workers=workers,
        worker_utilisation=stats["busy"] / (stats["seconds"] * workers) if stats["seconds"] > 0 else 0.0,
        **fields,
    )


def _existing_output(out: Path) -> dict | None:
    """Attrs of an existing output file; a file we cannot read as a dataset is refused."""
    if not out.exists():
        return None
    from ..data.store import DatasetReader

    try:
        with DatasetReader(out) as r:
            return dict(r.attrs)
    except UserError:
        return {"labeling_pool_path": "an unreadable file"}


def _complete_summary(out: Path, n: int, t_start: float) -> LabelSummary:
    from ..data.store import DatasetReader

    with DatasetReader(out) as r:
        attrs = dict(r.attrs)
    # A run killed between the final rename and removing its checkpoint leaves the
    # checkpoint behind; when it is the checkpoint of this very output, it is done with.
    work = WorkDir.for_output(out)
    plan = work.read_plan() if work.exists() else None
    if plan is not None and all(
        plan.get(k) == attrs.get(a)
        for k, a in (("pool_sha256", "labeling_pool_sha256"), ("teacher_fingerprint_id", "teacher_fingerprint_id"))
    ):
        work.remove()

    with DatasetReader(out) as r:
        return LabelSummary(
            skipped=n,
            n_pool=n,
            n_dataset=len(r),
            n_failures=len(r.failures()),
            seconds=time.perf_counter() - t_start,
            teacher=str(r.attrs.get("teacher_fingerprint_id", "")),
            out_path=str(out),
            already_complete=True,
        )


def _run_probe(client, probe, spec, threads, atoms) -> dict:
    from distributed.scheduler import KilledWorker

    from .worker import warm_up

    try:
        # Build the teacher on every worker now, in parallel: a teacher that cannot load
        # fails here with the worker's own error instead of on the first chunk.
        client.run(warm_up, spec, threads)
        try:
            return client.submit(probe, spec, threads, atoms, pure=False).result()
        except KilledWorker:
            # A probe structure kills workers: get the identity without timing; the chunk
            # that holds the structure is isolated later, like any other.
            log.warning("a probe structure killed its worker; sizing chunks without a timing")
            return client.submit(probe, spec, threads, [], pure=False).result()
    except TeacherLoadError as err:
        raise TeacherError(str(err)) from None
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - e.g. KilledWorker while loading
        raise TeacherError(
            f"teacher probe failed on the cluster: {type(err).__name__}: {' '.join(str(err).split())}"
        ) from None


def _dispatch(client, label_chunk, reader, work, spec, threads, todo, size, n, min_distance, teacher_id,
              on_chunk, progress, window) -> dict:
    """Keep ``window`` chunk tasks in flight; commit each result as it arrives."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    from ..logs import progress as progress_bar

    total = sum(min(size, n - c * size) for c in todo)
    stats = {"labelled": 0, "failed": 0, "seconds": 0.0, "busy": 0.0}
    bar = progress_bar(total=total, unit="struct", desc="labelling", enabled=progress, smoothing=0.1)
    pending: dict = {}  # future -> (chunk, sub-index or None)
    chunks: dict[int, _Chunk] = {}
    queue = list(todo)
    ac = as_completed(loop=client.loop)
    t0 = time.perf_counter()

    def submit_chunk(cid: int) -> None:
        idx = list(range(cid * size, min(n, (cid + 1) * size)))
        ch = _Chunk(cid, idx, _read_atoms(reader, idx))
        chunks[cid] = ch
        fut = client.submit(label_chunk, spec, threads, cid, idx, ch.atoms, min_distance, pure=False)
        pending[fut] = (ch, None)
        ac.add(fut)

    def split(ch: _Chunk) -> None:
        # A worker died on this chunk repeatedly: label its structures one per task so
        # only the structure that kills workers is lost (as a failure), not the chunk.
        for k, (i, a) in enumerate(zip(ch.indices, ch.atoms)):
            fut = client.submit(label_chunk, spec, threads, ch.chunk_id, [i], [a], min_distance, pure=False)
            pending[fut] = (ch, k)
            ac.add(fut)

    def finish(ch: _Chunk, result: dict) -> None:
        work.commit(result)
        del chunks[ch.chunk_id]
        shard = {k: result[k] for k in ("energy", "n_atoms", "forces", "stress", "stress_mask")}
        pos = {i: k for k, i in enumerate(ch.indices)}
        labelled = _labelled_atoms([ch.atoms[pos[int(i)]] for i in result["indices"]], shard, teacher_id)
        stats["labelled"] += len(labelled)
        stats["failed"] += len(result["failures"])
        stats["busy"] += float(result.get("seconds", 0.0))
        bar.update(len(ch.indices))
        stats["seconds"] = time.perf_counter() - t0
        if stats["failed"]:
            bar.set_postfix(failed=stats["failed"], refresh=False)
        if on_chunk is not None:
            on_chunk(ch.chunk_id, labelled, list(result["failures"]))

    try:
        while queue and len(pending) < window:
            submit_chunk(queue.pop(0))
        while pending:
            fut = next(ac)
            ch, sub = pending.pop(fut)
            try:
                result = fut.result()
            except KilledWorker as err:
                if sub is None and len(ch.indices) > 1:
                    log.warning("chunk %d killed its workers; retrying its structures one by one", ch.chunk_id)
                    split(ch)
                    continue
                result = {
                    "chunk_id": ch.chunk_id, "indices": [], "energy": [], "n_atoms": [],
                    "forces": np.zeros((0, 3)), "stress": np.zeros((0, 6)), "stress_mask": [],
                    "failures": [(ch.indices[sub or 0], f"worker process died while labelling this structure ({err})")],
                }
            except TeacherLoadError as err:
                raise TeacherError(str(err)) from None
            if sub is not None:
                ch.parts[sub] = result
                if len(ch.parts) < len(ch.indices):
                    continue
                result = _combine(ch)
            finish(ch, result)
            while queue and len(pending) < window:
                submit_chunk(queue.pop(0))
    except BaseException:
        for fut in list(pending):
            fut.cancel()
        raise
    finally:
        bar.close()
    stats["seconds"] = time.perf_counter() - t0
    return stats


def _combine(ch: _Chunk) -> dict:
    parts = [ch.parts[k] for k in range(len(ch.indices))]
    return {
        "chunk_id": ch.chunk_id,
        "indices": np.concatenate([np.asarray(p["indices"], dtype=np.int64) for p in parts]),
        "energy": np.concatenate([np.asarray(p["energy"], dtype=np.float64) for p in parts]),
        "n_atoms": np.concatenate([np.asarray(p["n_atoms"], dtype=np.int64) for p in parts]),
        "forces": np.concatenate([np.asarray(p["forces"], dtype=np.float64).reshape(-1, 3) for p in parts]),
        "stress": np.concatenate([np.asarray(p["stress"], dtype=np.float64).reshape(-1, 6) for p in parts]),
        "stress_mask": np.concatenate([np.asarray(p["stress_mask"], dtype=bool) for p in parts]),
        "failures": sorted(f for p in parts for f in p["failures"]),
        "seconds": sum(float(p.get("seconds", 0.0)) for p in parts),
    }


def _merge(reader, work: WorkDir, plan: dict, out: Path, n_chunks: int, size: int) -> tuple[int, int]:
    """Shards -> one dataset file, in pool order; written to a temporary name, then renamed."""
    from ..data.store import DatasetWriter

    # Pass 1, indices only: pool index -> dataset index, so provenance "parent" keeps
    # pointing at the right row after failed structures are left out.
    ok_parts, failures = [], []
    for c in range(n_chunks):
        idx, fails = work.load_index(c)
        ok_parts.append(idx)
        failures += fails
    ok = np.concatenate(ok_parts) if ok_parts else np.zeros(0, dtype=np.int64)
    parent_map = {int(p): k for k, p in enumerate(ok)}
    failures.sort()
    caps = plan.get("teacher_capabilities") or {}
    label_fields = (F.ENERGY, F.FORCES, F.STRESS) if caps.get("stress", True) else (F.ENERGY, F.FORCES)
    pool_attrs = {}
    try:
        pool_attrs = dict(reader.attrs)
    except Exception:  # noqa: BLE001 - provenance is best effort
        pass
    attrs = {
        "units": F.UNIT_SYSTEM,
        "teacher_fingerprint_id": plan["teacher_fingerprint_id"],
        "teacher_fingerprint": plan["teacher_fingerprint"],
        "teacher_spec": plan["teacher_spec"],
        # quality's net-force check reads conservative_forces from here (skipped for direct-force teachers)
        "teacher_capabilities": json.loads(json.dumps(caps, default=str)),
        "labeling_teacher_spec": plan["teacher_spec_key"],
        "labeling_pool_path": plan["pool_path"],
        "labeling_pool_sha256": plan["pool_sha256"],
        "labeling_min_distance": float(plan["min_distance"]),
        "labeling_chunk_size": int(size),
        "pool_attrs": json.loads(json.dumps(pool_attrs, default=str)),
    }
    for stale in stale_temp_paths(out):  # a merge killed earlier (file + journal)
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    tmp = temp_path(out)
    try:
        with DatasetWriter(tmp, label_fields=label_fields, attrs=attrs, positions_dtype=reader.positions_dtype) as w:
            batch: list = []
            for c in range(n_chunks):  # pass 2: one shard in memory at a time
                s = work.load(c)
                if len(s["indices"]):
                    batch += _labelled_atoms(
                        _read_atoms(reader, s["indices"]), s, plan["teacher_fingerprint_id"], parent_map
                    )
                if len(batch) >= MERGE_BATCH:
                    w.append(batch)
                    batch = []
            if batch:
                w.append(batch)
            if failures:
                w.record_failures(failures)
        replace_atomically(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
        shutil.rmtree(tmp.with_name(tmp.name + ".journal"), ignore_errors=True)
    return len(ok), len(failures)
