"""The generation engine: recipe -> unlabelled pool (HDF5 dataset store, ``label_fields=()``).

For each mix entry the engine asks its source for root structures (root ``r`` of entry ``e``
uses the seed ``SeedSequence([recipe seed, e, r])``), runs the entry's sampler on each root and
appends the samples until the entry's count is reached. Every structure gets
``atoms.info["provenance"]`` (source, sampler, params, parent, group, seed, teacher="") and
must pass the size bounds and the minimum-distance check (covalent-radius based) or it is
rejected and counted. The same recipe, tier and seed give an identical pool.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import ConfigError, TeacherError, UserError
from .recipe import GenerationConfig
from .roots import EntryJob, InProcessRoots, root_seed  # noqa: F401 - root_seed is part of this module's API
from .sources import SkipLog

log = logging.getLogger(__name__)

#: structures buffered before each durable append to the pool
FLUSH_EVERY = 256
#: a mix entry whose first this-many roots all fail (sampler or teacher error) stops the run
MAX_LEADING_FAILURES = 5


def teacher_spec(recipe):
    """The teacher spec of ``recipe`` (a :class:`~mlff_distiller.recipe.Recipe` or its dict);
    :class:`ConfigError` when it has none (needed by teacher-driven samplers)."""
    spec = recipe.get("teacher") if isinstance(recipe, dict) else recipe.teacher
    if spec is None:
        raise ConfigError("teacher: missing; this recipe uses samplers that need energies/forces (normal_modes, "
                          "md, rattle_relax, high_energy compress_md); add a teacher section")
    return spec


def teacher_calculator(recipe):
    """ASE calculator of the recipe's teacher (``teachers.build_teacher(recipe['teacher']).calculator()``)."""
    from ..teachers import build_teacher

    return build_teacher(teacher_spec(recipe)).calculator()


def make_provenance(source: str, sampler: str, params: dict, parent: int, group: str, seed: int) -> dict:
    """Provenance dict exactly as in docs/architecture.md (``teacher`` is empty in a pool)."""
    return {"source": source, "sampler": sampler, "params": dict(params), "parent": int(parent),
            "group": group, "seed": int(seed), "teacher": ""}


def entry_jobs(cfg: GenerationConfig, tier: str | None = None, skips: SkipLog | None = None) -> list[EntryJob]:
    """One :class:`EntryJob` per mix entry: its source (candidate order drawn from the seed) and settings."""
    jobs = []
    sources = cfg.build_sources(skips if skips is not None else SkipLog())
    for e, (entry, source, want) in enumerate(zip(cfg.mix, sources, cfg.counts(tier))):
        if want:
            order_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, e, 2**32 - 1]))
            source.set_order(order_rng, source.n_candidates)
        jobs.append(EntryJob(
            index=e, seed=cfg.seed, source=source, sampler=entry.sampler, params=entry.params, size=cfg.size,
            entry_size=entry.size, factor=entry.params.get("min_distance_factor", cfg.min_distance_factor),
            include_root=bool(entry.params.get("include_root", False)) and entry.sampler != "none",
            needs_teacher=entry.needs_calculator, want=want, max_roots=100 + 20 * want))
    return jobs


def iter_structures(cfg: GenerationConfig, tier: str | None = None, calculator=None, skips: SkipLog | None = None,
                    stats: list | None = None, on_structure=None, roots=None):
    """Yield the pool's structures in order (each with provenance; parents refer to earlier indices).

    ``stats`` (a list) receives one dict per mix entry: requested, written, roots, rejected, failed.
    ``roots`` runs the roots: :class:`~.roots.InProcessRoots` (default, with ``calculator``) or
    :class:`~.parallel.DaskRoots`; the structures are the same either way.
    """
    skips = skips if skips is not None else SkipLog()
    roots = roots if roots is not None else InProcessRoots(calculator)
    jobs = entry_jobs(cfg, tier, skips)
    counter = [0]  # the next file index
    roots.start(jobs)
    try:
        for job in jobs:
            entry = cfg.mix[job.index]
            st = {"source": entry.source, "kind": job.source.kind, "sampler": entry.sampler, "requested": job.want,
                  "written": 0, "roots": 0, "rejected": 0, "failed": 0, "seconds": 0.0}
            if stats is not None:
                stats.append(st)
            if job.want:
                yield from _consume_entry(job, roots, st, skips, counter)
    finally:
        roots.close()


def _consume_entry(job: EntryJob, roots, st: dict, skips: SkipLog, counter: list):
    """Take the roots of one entry in order until it holds ``want`` structures: the one acceptance logic."""
    e, want, t0 = job.index, job.want, time.perf_counter()
    r, last_error, sampler_errors = 0, None, 0  # roots the sampler (teacher) failed on; unbuildable roots count apart
    while st["written"] < want and r < job.max_roots:
        res = roots.result(job, r)
        r += 1
        for item, reason in res.skips:
            skips.skip(item, reason)
        if res.status == "no_root":
            st["failed"] += 1
            continue
        if res.status == "root_size":
            st["rejected"] += 1
            continue
        if res.status == "error":
            st["failed"] += 1
            sampler_errors += 1
            last_error = res.error
            if sampler_errors >= MAX_LEADING_FAILURES and st["written"] == 0:
                raise TeacherError(f"generation.mix[{e}] ({job.source.name} x {job.sampler}): the first "
                                   f"{sampler_errors} roots failed, last with {last_error}; check that the teacher "
                                   "supports these elements or change the sampler") from None
            continue
        st["roots"] += 1
        root_index = -1
        if res.root is not None:
            res.root.info["provenance"] = make_provenance(res.source, "none", {}, -1, res.group, res.seed)
            root_index = counter[0]
            counter[0] += 1
            st["written"] += 1
            yield res.root
        local_to_file: list[int] = []
        for atoms, params, s_parent, ok in res.samples:
            parent = root_index if s_parent < 0 else local_to_file[s_parent]
            if st["written"] >= want:
                break
            if not ok:
                st["rejected"] += 1
                local_to_file.append(parent)  # children of a rejected sample point to its parent
                continue
            atoms.info["provenance"] = make_provenance(res.source, job.sampler, params, parent, res.group, res.seed)
            local_to_file.append(counter[0])
            counter[0] += 1
            st["written"] += 1
            yield atoms
    roots.finish(job)
    st["seconds"] = time.perf_counter() - t0
    if st["written"] < want:
        msg = (f"mix[{e}] ({job.source.name} x {job.sampler}) wrote {st['written']} of {want} structures "
               f"after {r} roots ({st['failed']} failed, {st['rejected']} rejected)")
        if last_error:
            msg += f"; last error {last_error}"
        skips.skip(f"mix[{e}]", msg)


def generate(recipe, out_path, tier: str | None = None, progress: bool = True, calculator=None,
             overwrite: bool = False, seed: int | None = None, workers: int = 1, scheduler=None,
             threads_per_worker: int = 1, hpc=None) -> dict:
    """Generate the unlabelled pool of ``recipe`` (a :class:`~mlff_distiller.recipe.Recipe`, a dict, a built-in
    name or a YAML path) at ``out_path``.

    ``tier`` picks a size from ``generation.tiers`` (default: ``default_tier``, else ``count``).
    ``calculator`` overrides the recipe's teacher for samplers that need energies/forces (runs in
    this process). ``seed`` overrides the recipe's seed. ``workers`` > 1 (local Dask worker
    processes with ``threads_per_worker`` math threads each), ``scheduler`` (an existing Dask
    scheduler's address or a ``distributed.Client``) or ``hpc`` (a ``labeling.hpc`` mapping) run
    the roots on a Dask cluster, each worker building the recipe's teacher; the pool is the same
    as with ``workers=1`` (in this process). An existing ``out_path`` is never touched unless
    ``overwrite``. Returns a summary dict (counts per mix entry, skipped items, element and size
    coverage, timing). Units: A; see docs/generation.md.
    """
    from ..recipe import Recipe

    recipe = Recipe.load(recipe)  # built once; a Recipe passed in is used as it is
    if seed is not None:
        recipe = recipe.with_seed(seed)
    cfg = recipe.generation
    distributed = _check_workers(workers, threads_per_worker, scheduler, hpc, calculator)
    if recipe.teacher is not None:  # the pool is labelled by it next: refuse a bad one before writing
        from ..teachers.registry import check_teacher_spec

        # a package installed only on the Dask workers is left to them (they fail on one line)
        check_teacher_spec(recipe.teacher, missing_ok=distributed)
    tier = cfg.resolve_tier(tier)
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise UserError(f"output '{out_path}' already exists; choose another path or pass --overwrite")
    if not out_path.parent.is_dir():
        raise UserError(f"directory '{out_path.parent}' does not exist; create it first")
    t0 = time.perf_counter()
    with _roots_runner(recipe, cfg, calculator, distributed, workers, scheduler, threads_per_worker, hpc) as roots:
        summary = _write_pool(recipe, cfg, tier, out_path, roots, progress)
    summary["workers"] = roots.workers
    summary["seconds"] = time.perf_counter() - t0
    # where the executors' time went (roots taken, finished but not needed, cancelled)
    summary["roots"] = roots.usage.as_dict()
    return summary


def _check_workers(workers, threads_per_worker, scheduler, hpc, calculator) -> bool:
    """Validate the executor settings; True when the roots run on a Dask cluster."""
    for name, v in (("workers", workers), ("threads_per_worker", threads_per_worker)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{name}: must be an integer >= 1 (workers 1 = in this process), got {v!r}")
    distributed = workers > 1 or scheduler is not None or hpc is not None
    if distributed and calculator is not None:
        raise ConfigError("calculator= runs in this process: pass workers=1 without scheduler, or leave calculator "
                          "out so that each Dask worker builds the recipe's teacher")
    if distributed and scheduler is None and hpc is None:
        from ..labeling.cluster import check_local_size

        check_local_size(workers, threads_per_worker)
    return distributed


@contextlib.contextmanager
def _roots_runner(recipe, cfg, calculator, distributed, workers, scheduler, threads, hpc):
    """In-process roots, or roots on a Dask cluster (the labelling stage's, see labeling/cluster.py).
    A recipe whose samplers need no teacher runs in this process even when workers are asked for
    on the local machine: starting a cluster would cost more than its cheap samplers."""
    if distributed and not cfg.needs_calculator and scheduler is None and hpc is None:
        log.info("generate: no sampler of this recipe needs the teacher; running in this process (no Dask workers)")
        distributed = False
    if not distributed:
        if calculator is None and cfg.needs_calculator:
            calculator = teacher_calculator(recipe)
        yield InProcessRoots(calculator)
        return
    from ..labeling.cluster import connect
    from .parallel import DaskRoots

    spec = teacher_spec(recipe) if cfg.needs_calculator else recipe.teacher
    with connect(scheduler, n_workers=workers, threads_per_worker=threads, hpc=hpc) as client:
        yield DaskRoots(client, spec, threads)


def _write_pool(recipe, cfg: GenerationConfig, tier, out_path: Path, roots, progress: bool) -> dict:
    """Write the structures of ``roots`` to the pool at ``out_path``; the summary (no timing).
    The pool's attributes hold the recipe as given (``recipe``) and with every default filled
    in (``recipe_resolved``), for reproducibility."""
    from ..data.store import GENERATED_POSITIONS_DTYPE, DatasetWriter
    from ..logs import progress as progress_bar
    from ..logs import say

    total = sum(cfg.counts(tier))
    echo = (lambda m: say(f"generate: {m}")) if progress else None
    skips = SkipLog(echo=echo)
    stats: list = []
    attrs = {"kind": "pool", "recipe_name": str(recipe.name or ""), "tier": tier or "", "seed": cfg.seed,
             "units": "positions and cell in Angstrom", "generation_complete": False,
             "recipe": json.loads(json.dumps(recipe.to_dict(), default=str)), "recipe_resolved": recipe.resolved()}
    n_atoms, elements = [], Counter()
    try:
        with DatasetWriter(out_path, label_fields=(), attrs=attrs, mode="w",
                           positions_dtype=GENERATED_POSITIONS_DTYPE) as writer:
            buf = []
            bar = progress_bar(total=total, enabled=progress, unit="struct", desc="generate")
            for atoms in iter_structures(cfg, tier, skips=skips, stats=stats, roots=roots):
                buf.append(atoms)
                n_atoms.append(len(atoms))
                elements.update(set(atoms.get_chemical_symbols()))
                bar.update(1)
                if len(buf) >= FLUSH_EVERY:
                    writer.append(buf)
                    buf = []
            if buf:
                writer.append(buf)
            bar.close()
            writer.update_attrs({"generation_complete": True})
    except UserError:
        # a configuration or teacher problem (found before or while sampling): leave no half pool behind
        _remove_pool(out_path)
        raise
    sizes = np.array(n_atoms) if n_atoms else np.zeros(1, int)
    return {
        "path": str(out_path),
        "recipe": str(recipe.name or ""),
        "tier": tier,
        "seed": cfg.seed,
        "requested": total,
        "n_structures": len(n_atoms),
        "entries": stats,
        "skipped": [{"item": it, "reason": why} for it, why in skips.items],
        "n_skipped_smiles": sum(1 for it, _ in skips.items if it.startswith("SMILES")),
        "elements": dict(sorted(elements.items())),
        "size_min": int(sizes.min()),
        "size_median": float(np.median(sizes)),
        "size_max": int(sizes.max()),
    }


def _remove_pool(path: Path) -> None:
    import shutil

    from ..data.store import journal_dir

    path.unlink(missing_ok=True)
    shutil.rmtree(journal_dir(path), ignore_errors=True)


def _on_workers(summary: dict) -> str:
    n = summary.get("workers", 1)
    return f" on {n} Dask workers" if n > 1 else ""


def format_summary(summary: dict) -> str:
    """Human-readable multi-line summary (printed by the CLI)."""
    lines = [f"wrote {summary['n_structures']} of {summary['requested']} structures to {summary['path']} "
             f"in {summary['seconds']:.1f} s{_on_workers(summary)} (recipe {summary['recipe'] or '-'}, "
             f"tier {summary['tier'] or '-'}, seed {summary['seed']})"]
    lines.append(f"  {'source':<16} {'sampler':<13} {'written':>8} {'roots':>6} {'rejected':>8} {'failed':>6} {'s':>7}")
    for st in summary["entries"]:
        lines.append(f"  {st['source']:<16} {st['sampler']:<13} {st['written']:>5}/{st['requested']:<3}"
                     f"{st['roots']:>6} {st['rejected']:>8} {st['failed']:>6} {st['seconds']:>7.1f}")
    use = summary.get("roots")
    if use and summary.get("workers", 1) > 1:
        busy = use["taken_s"] / max(summary["seconds"] * summary["workers"], 1e-9)
        lines.append(f"  workers: {use['taken_s']:.1f} s on the {use['taken']} roots taken ({100 * busy:.0f} % of the "
                     f"workers' time), {use['discarded_s']:.1f} s on {use['discarded']} not needed; "
                     f"{use['cancelled']} cancelled")
    lines.append(f"  sizes {summary['size_min']}-{summary['size_max']} atoms (median {summary['size_median']:.0f}); "
                 f"elements {' '.join(summary['elements'])}")
    n_bad = summary["n_skipped_smiles"]
    if n_bad:
        lines.append(f"  skipped {n_bad} SMILES (invalid or not embeddable): "
                     + ", ".join(s["item"] for s in summary["skipped"] if s["item"].startswith("SMILES")))
    for s in summary["skipped"]:
        if not s["item"].startswith("SMILES"):
            lines.append(f"  warning: {s['reason']}")
    return "\n".join(lines)
