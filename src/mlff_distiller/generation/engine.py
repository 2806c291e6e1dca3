"""The generation engine: recipe -> unlabelled pool (HDF5 dataset store, ``label_fields=()``).

For each mix entry the engine asks its source for root structures (root ``r`` of entry ``e``
uses the seed ``SeedSequence([recipe seed, e, r])``), runs the entry's sampler on each root and
appends the samples until the entry's count is reached. Every structure gets
``atoms.info["provenance"]`` (source, sampler, params, parent, group, seed, teacher="") and
must pass the size bounds and the minimum-distance check (covalent-radius based) or it is
rejected and counted. The same recipe, tier and seed give an identical pool.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from ase import Atoms

from ..errors import ConfigError, TeacherError, UserError
from .geometry import respects_min_distance
from .recipe import GenerationConfig, load_recipe, validate_recipe
from .samplers import SAMPLER_FUNCTIONS
from .sources import SkipLog

#: structures buffered before each durable append to the pool
FLUSH_EVERY = 256
#: a mix entry whose first this-many roots all fail (sampler or teacher error) stops the run
MAX_LEADING_FAILURES = 5


def root_seed(seed: int, entry: int, root: int) -> int:
    """The integer seed of root ``root`` of mix entry ``entry`` (recorded in the provenance)."""
    return int(np.random.SeedSequence([int(seed), int(entry), int(root)]).generate_state(1)[0])


def teacher_calculator(recipe: dict):
    """ASE calculator of the recipe's teacher (``teachers.build_teacher(recipe['teacher']).calculator()``)."""
    spec = recipe.get("teacher")
    if spec is None:
        raise ConfigError("teacher: missing; this recipe uses samplers that need energies/forces (normal_modes, "
                          "md, rattle_relax, high_energy compress_md); add a teacher section")
    from ..teachers import build_teacher

    return build_teacher(spec).calculator()


def make_provenance(source: str, sampler: str, params: dict, parent: int, group: str, seed: int) -> dict:
    """Provenance dict exactly as in docs/architecture.md (``teacher`` is empty in a pool)."""
    return {"source": source, "sampler": sampler, "params": dict(params), "parent": int(parent),
            "group": group, "seed": int(seed), "teacher": ""}


def iter_structures(cfg: GenerationConfig, tier: str | None = None, calculator=None, skips: SkipLog | None = None,
                    stats: list | None = None, on_structure=None):
    """Yield the pool's structures in order (each with provenance; parents refer to earlier indices).

    ``stats`` (a list) receives one dict per mix entry: requested, written, roots, rejected, failed.
    """
    skips = skips if skips is not None else SkipLog()
    counts = cfg.counts(tier)
    sources = cfg.build_sources(skips)
    index = 0
    for e, (entry, source, want) in enumerate(zip(cfg.mix, sources, counts)):
        st = {"source": entry.source, "kind": source.kind, "sampler": entry.sampler, "requested": want,
              "written": 0, "roots": 0, "rejected": 0, "failed": 0, "seconds": 0.0}
        if stats is not None:
            stats.append(st)
        if want == 0:
            continue
        t0 = time.perf_counter()
        source.set_order(np.random.default_rng(np.random.SeedSequence([cfg.seed, e, 2**32 - 1])), source.n_candidates)
        sampler = SAMPLER_FUNCTIONS[entry.sampler]
        factor = entry.params.get("min_distance_factor", cfg.min_distance_factor)
        include_root = entry.params.get("include_root", False) and entry.sampler != "none"
        max_roots = 100 + 20 * want
        r = 0
        last_error = None
        sampler_errors = 0  # roots the sampler (teacher) failed on; unbuildable roots count apart
        while st["written"] < want and r < max_roots:
            seed = root_seed(cfg.seed, e, r)
            rng = np.random.default_rng(seed)
            r += 1
            root = source.make_root(r - 1, rng)
            if root is None:
                st["failed"] += 1
                continue
            if not cfg.size.contains(len(root.atoms)) or not entry.size.contains(len(root.atoms)):
                st["rejected"] += 1
                continue
            try:
                samples = sampler(root.atoms, rng, entry.params, calculator)
            except UserError:
                raise
            except Exception as err:  # a teacher that fails on one structure must not stop the run
                st["failed"] += 1
                sampler_errors += 1
                last_error = f"{err.__class__.__name__}: {' '.join(str(err).split())[:200]}"
                if sampler_errors >= MAX_LEADING_FAILURES and st["written"] == 0:
                    raise TeacherError(f"generation.mix[{e}] ({entry.source} x {entry.sampler}): the first "
                                       f"{sampler_errors} roots failed, last with {last_error}; check that the teacher "
                                       "supports these elements or change the sampler") from None
                continue
            st["roots"] += 1
            root_index = -1
            if include_root and respects_min_distance(root.atoms, factor):
                atoms = Atoms(numbers=root.atoms.numbers, positions=root.atoms.positions, cell=root.atoms.cell,
                              pbc=root.atoms.pbc)
                atoms.info.update({k: v for k, v in root.atoms.info.items() if k in ("charge", "spin_multiplicity")})
                atoms.info["provenance"] = make_provenance(root.source, "none", {}, -1, root.group, seed)
                root_index = index
                index += 1
                st["written"] += 1
                yield atoms
            local_to_file: list[int] = []
            for s in samples:
                parent = root_index if s.parent < 0 else local_to_file[s.parent]
                atoms = s.atoms
                if st["written"] >= want:
                    break
                if not cfg.size.contains(len(atoms)) or not respects_min_distance(atoms, factor):
                    st["rejected"] += 1
                    local_to_file.append(parent)  # children of a rejected sample point to its parent
                    continue
                info = {k: v for k, v in atoms.info.items() if k in ("charge", "spin_multiplicity")}
                clean = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
                clean.info.update(info)
                clean.info["provenance"] = make_provenance(root.source, entry.sampler, s.params, parent, root.group,
                                                           seed)
                local_to_file.append(index)
                index += 1
                st["written"] += 1
                yield clean
        st["seconds"] = time.perf_counter() - t0
        if st["written"] < want:
            msg = (f"mix[{e}] ({entry.source} x {entry.sampler}) wrote {st['written']} of {want} structures "
                   f"after {r} roots ({st['failed']} failed, {st['rejected']} rejected)")
            if last_error:
                msg += f"; last error {last_error}"
            skips.skip(f"mix[{e}]", msg)


def generate(recipe, out_path, tier: str | None = None, progress: bool = True, calculator=None,
             overwrite: bool = False, seed: int | None = None) -> dict:
    """Generate the unlabelled pool of ``recipe`` (a dict, a built-in name or a YAML path) at ``out_path``.

    ``tier`` picks a size from ``generation.tiers`` (default: ``default_tier``, else ``count``).
    ``calculator`` overrides the recipe's teacher for samplers that need energies/forces.
    ``seed`` overrides the recipe's seed. An existing ``out_path`` is never touched unless
    ``overwrite``. Returns a summary dict (counts per mix entry, skipped items, element and size
    coverage, timing). Units: A; see docs/generation.md.
    """
    from ..data.store import GENERATED_POSITIONS_DTYPE, DatasetWriter
    from ..logs import progress as progress_bar
    from ..logs import say

    recipe = load_recipe(recipe) if not isinstance(recipe, dict) else recipe
    if seed is not None:
        recipe = {**recipe, "seed": int(seed)}
    cfg = validate_recipe(recipe)
    if recipe.get("teacher") is not None:  # the pool is labelled by it next: refuse a bad one before writing
        from ..teachers.registry import check_teacher_spec

        check_teacher_spec(recipe["teacher"])
    tier = cfg.resolve_tier(tier)
    total = sum(cfg.counts(tier))
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise UserError(f"output '{out_path}' already exists; choose another path or pass --overwrite")
    if not out_path.parent.is_dir():
        raise UserError(f"directory '{out_path.parent}' does not exist; create it first")
    if calculator is None and cfg.needs_calculator:
        calculator = teacher_calculator(recipe)
    echo = (lambda m: say(f"generate: {m}")) if progress else None
    skips = SkipLog(echo=echo)
    stats: list = []
    t0 = time.perf_counter()
    attrs = {"kind": "pool", "recipe_name": str(recipe.get("name", "")), "tier": tier or "", "seed": cfg.seed,
             "units": "positions and cell in Angstrom", "generation_complete": False,
             "recipe": json.loads(json.dumps(recipe, default=str))}  # the resolved recipe, for reproducibility
    n_atoms, elements = [], Counter()
    try:
        with DatasetWriter(out_path, label_fields=(), attrs=attrs, mode="w",
                           positions_dtype=GENERATED_POSITIONS_DTYPE) as writer:
            buf = []
            bar = progress_bar(total=total, enabled=progress, unit="struct", desc="generate")
            for atoms in iter_structures(cfg, tier, calculator, skips, stats):
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
    summary = {
        "path": str(out_path),
        "recipe": str(recipe.get("name", "")),
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
        "seconds": time.perf_counter() - t0,
    }
    return summary


def _remove_pool(path: Path) -> None:
    import shutil

    from ..data.store import journal_dir

    path.unlink(missing_ok=True)
    shutil.rmtree(journal_dir(path), ignore_errors=True)


def format_summary(summary: dict) -> str:
    """Human-readable multi-line summary (printed by the CLI)."""
    lines = [f"wrote {summary['n_structures']} of {summary['requested']} structures to {summary['path']} "
             f"in {summary['seconds']:.1f} s (recipe {summary['recipe'] or '-'}, tier {summary['tier'] or '-'}, "
             f"seed {summary['seed']})"]
    lines.append(f"  {'source':<16} {'sampler':<13} {'written':>8} {'roots':>6} {'rejected':>8} {'failed':>6} {'s':>7}")
    for st in summary["entries"]:
        lines.append(f"  {st['source']:<16} {st['sampler']:<13} {st['written']:>5}/{st['requested']:<3}"
                     f"{st['roots']:>6} {st['rejected']:>8} {st['failed']:>6} {st['seconds']:>7.1f}")
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
