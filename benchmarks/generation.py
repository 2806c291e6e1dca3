"""Generation benchmark: structures per second per source x sampler, teacher work per recipe,
and the element and size coverage of the ``seed-m2`` 1K tier.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/generation.py                       # everything, recipe teacher
    OMP_NUM_THREADS=1 python benchmarks/generation.py --coverage-teacher lj \
        --crosscheck seed-m2-chgnet.h5                                      # fast coverage + cross-check
    OMP_NUM_THREADS=1 python benchmarks/generation.py --sections throughput # one section, others kept

Throughput: each (source, sampler) pair produces ``--n`` structures through the real engine
(:func:`mlff_distiller.generation.iter_structures`, min-distance checks included). Teacher-free
samplers need no calculator; teacher-driven ones run with EMT on Cu cells (analytic, cheap: the
numbers measure the sampler's own cost and its number of teacher calls, not a teacher's speed)
and, with ``--chgnet``, with CHGNet as well. Wall time and process CPU time are both reported:
on a shared machine CPU time is the steadier figure.

Quickstart: the real ``quickstart`` generation with its teacher (CHGNet), timed.

Teacher work: the number of teacher calls (and atoms per call) that generating ``quickstart``
and the ``seed-m2`` 1K tier takes, and the CHGNet time that implies at the speed-note costs.

Coverage: ``generate("seed-m2", tier="1k")``, then the elements present, the size histogram
and the mix actually written. With ``--coverage-teacher lj`` the teacher-driven samplers use a
Lennard-Jones stand-in (sizes and elements are properties of the root structures, not of the
teacher); ``--crosscheck POOL`` compares, structure by structure, with a pool made with the
recipe's real teacher.

Writes ``benchmarks/results/generation.md`` and ``generation.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _results import save  # noqa: E402  (benchmarks/_results.py)
from ase.calculators.calculator import all_changes  # noqa: E402
from ase.calculators.lj import LennardJones  # noqa: E402

from mlff_distiller.generation import generate, iter_structures, load_recipe, validate_recipe  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    from mlff_distiller.bench.report import cpu_model

    cpu = cpu_model()
    return {"cpu": cpu, "threads": int(os.environ.get("OMP_NUM_THREADS", "1")), "torch": torch.__version__,
            "python": platform.python_version(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "load_average": os.getloadavg()[0]}


def one_entry_recipe(source: dict, sampler: str, params: dict, n: int, size=(10, 120), elements="any") -> dict:
    return {"name": "bench", "seed": 11, "generation": {
        "size": {"min": size[0], "max": size[1]}, "elements": elements, "count": n,
        "sources": {"src": source}, "mix": [{"source": "src", "sampler": sampler, "fraction": 1.0, "params": params}]}}


def time_entry(recipe: dict, calculator=None) -> dict:
    from mlff_distiller.generation.sources import MoleculeSource

    MoleculeSource._cache.clear()  # every case pays for its own conformer embedding
    cfg = validate_recipe(recipe)
    MoleculeSource._cache.clear()
    stats: list = []
    w0, c0 = time.perf_counter(), time.process_time()
    atoms = list(iter_structures(cfg, None, calculator, stats=stats))
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    n = len(atoms)
    return {"n": n, "wall_s": wall, "cpu_s": cpu, "per_s_wall": n / wall if wall else float("inf"),
            "cpu_ms_per_structure": 1000 * cpu / max(n, 1), "mean_atoms": float(np.mean([len(a) for a in atoms])),
            "rejected": stats[0]["rejected"], "roots": stats[0]["roots"]}


def throughput(n: int, chgnet: bool, tmp: Path) -> list[dict]:
    import ase.io
    from ase.build import bulk
    from ase.calculators.emt import EMT

    ase.io.write(tmp / "gaas.cif", bulk("GaAs", "zincblende", a=5.65, cubic=True))
    mols = {"kind": "molecules", "smiles": "builtin", "conformers": 2}
    cases = [
        ("molecules", mols, "none", {}),
        ("molecules", mols, "rattle", {}),
        ("molecules", mols, "high_energy", {"methods": ["stretch", "compress"]}),
        ("bulk", {"kind": "bulk", "crystals": "all"}, "none", {}),
        ("bulk", {"kind": "bulk", "crystals": "all"}, "rattle", {}),
        ("alloy", {"kind": "alloy", "elements": ["Cu", "Ni", "Au"]}, "rattle", {}),
        ("surface", {"kind": "surface", "crystals": ["Cu-fcc", "MgO-rocksalt", "Si-diamond"]}, "rattle", {}),
        ("cluster", {"kind": "cluster", "elements": ["Cu", "Pt"]}, "rattle", {}),
        ("liquid (water)", {"kind": "liquid", "solvent": "O"}, "rattle", {}),
        ("liquid (solvated)", {"kind": "liquid", "solvent": "O", "solutes": ["CCO", "c1ccccc1O"]}, "rattle", {}),
        ("file (CIF)", {"kind": "file", "paths": [str(tmp / "gaas.cif")]}, "rattle", {}),
    ]
    rows = []
    for label, src, sampler, params in cases:
        res = time_entry(one_entry_recipe(src, sampler, params, n))
        rows.append({"source": label, "sampler": sampler, "teacher": "-", **res})
        print_row(rows[-1])
    teachers = [("EMT", EMT())]
    if chgnet:
        from mlff_distiller.teachers import build_teacher

        teachers.append(("CHGNet", build_teacher("chgnet").calculator()))
    cu = {"kind": "bulk", "crystals": ["Cu-fcc"]}
    driven = [
        ("normal_modes", {"per_root": 10, "relax_steps": 20}, (20, 40)),
        ("md", {"per_root": 10, "equil_steps": 20, "interval": 10, "timestep": 2.0}, (20, 40)),
        ("rattle_relax", {"per_root": 6, "relax_steps": 4}, (20, 40)),
        ("high_energy", {"methods": ["compress_md"], "md_steps": 20, "per_root": 2}, (20, 40)),
    ]
    for tname, calc in teachers:
        for sampler, params, size in driven:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = time_entry(one_entry_recipe(cu, sampler, params, n, size=size), calc)
            rows.append({"source": "bulk Cu (20-40 atoms)", "sampler": sampler, "teacher": tname, **res})
            print_row(rows[-1])
    return rows


def print_row(r: dict) -> None:
    print(f"{r['source']:<24} {r['sampler']:<13} {r['teacher']:<7} {r['n']:>5} {r['mean_atoms']:>7.1f} "
          f"{r['per_s_wall']:>9.2f} {r['cpu_ms_per_structure']:>10.1f}", flush=True)


class CountingLJ(LennardJones):
    """Stand-in teacher that counts calls: ASE Lennard-Jones (any element) + a log of system sizes."""

    def __init__(self):
        super().__init__(sigma=2.0, epsilon=0.01, rc=5.0, smooth=True)
        self.sizes: list[int] = []

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        self.sizes.append(len(atoms))
        super().calculate(atoms, properties, system_changes)


# CHGNet 0.3.0 cost per call (ms, 1 thread) vs atoms, measured on this machine in 2026-11 with all
# models interleaved (40 ms aspirin-21, 95 ms Si-64, 1347 ms water-192, 1031 ms Si-512); water's
# dense neighbourhood makes it the expensive row, so interpolating through it is an upper bound.
CHGNET_ANCHORS = ([1, 21, 64, 192, 512], [25, 40, 95, 1347, 1031])


def teacher_calls(recipe: str, tier) -> dict:
    """How many teacher calls a recipe's generation makes, and what CHGNet would need for them.

    The samplers run with a Lennard-Jones stand-in; MD steps and Hessian calls are fixed by the
    recipe, relaxations can stop at a different step than with the real teacher."""
    cfg = validate_recipe(load_recipe(recipe))
    calc = CountingLJ()
    stats: list = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = sum(1 for _ in iter_structures(cfg, tier, calc, stats=stats))
    sizes = np.array(calc.sizes, dtype=float)
    est = float(np.interp(sizes, *CHGNET_ANCHORS).sum() / 1000) if len(sizes) else 0.0
    return {"recipe": recipe, "tier": tier, "structures": n, "teacher_calls": int(len(sizes)),
            "mean_atoms_per_call": float(sizes.mean()) if len(sizes) else 0.0, "chgnet_seconds_estimate": est,
            "teacher_free_fraction": sum(st["written"] for st in stats if st["sampler"] in ("none", "rattle") or
                                         (st["sampler"] == "high_energy")) / max(n, 1)}


def quickstart_run(progress: bool, tmp: Path) -> dict:
    """Generate the real quickstart pool with its own teacher (CHGNet) and time it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w0, c0 = time.perf_counter(), time.process_time()
        summary = generate("quickstart", tmp / "quickstart.h5", progress=progress, overwrite=True)
        summary["wall_with_teacher_load_s"] = time.perf_counter() - w0
        summary["cpu_seconds"] = time.process_time() - c0
    summary["load_average_after"] = os.getloadavg()[0]
    return summary


def _read_pool(path: Path):
    from mlff_distiller.data.store import DatasetReader

    r = DatasetReader(path)
    try:
        return [(r.get_atoms(i), r.provenance(i)) for i in range(len(r))]
    finally:
        r.close()


def coverage(tier: str, progress: bool, out: Path, teacher: str = "recipe", crosscheck: Path | None = None) -> dict:
    """Generate the seed-m2 tier into ``out`` and measure what it covers.

    ``teacher="recipe"`` runs the teacher-driven samplers with the recipe's teacher (CHGNet);
    ``"lj"`` with a Lennard-Jones stand-in (sizes and elements are properties of the roots, which
    do not depend on the teacher; positions of MD / normal-mode / relaxed samples do).
    ``crosscheck``: a pool of the same recipe and tier made with the real teacher (possibly
    interrupted); its structures are compared one by one with this run's (atom count and species).
    """
    calc = CountingLJ() if teacher == "lj" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c0 = time.process_time()
        summary = generate("seed-m2", out, tier=tier, progress=progress, overwrite=True, calculator=calc)
        summary["cpu_seconds"] = time.process_time() - c0
    summary["teacher"] = "Lennard-Jones stand-in" if teacher == "lj" else "CHGNet (the recipe's)"
    pool = _read_pool(out)
    sizes, structures_with, atoms_of, samplers, kinds = [], Counter(), Counter(), Counter(), Counter()
    for a, p in pool:
        sizes.append(len(a))
        syms = a.get_chemical_symbols()
        atoms_of.update(syms)
        structures_with.update(set(syms))
        samplers[p["sampler"]] += 1
        kinds[p["source"].split(":")[0]] += 1
    edges = [10, 20, 35, 50, 75, 100, 150, 200, 300, 400, 501]
    hist, _ = np.histogram(sizes, bins=edges)
    res = {"summary": summary, "n": len(sizes), "elements_structures": dict(structures_with.most_common()),
           "elements_atoms": dict(atoms_of.most_common()), "size_edges": edges, "size_hist": hist.tolist(),
           "size_min": int(min(sizes)), "size_max": int(max(sizes)), "size_median": float(np.median(sizes)),
           "samplers": dict(samplers.most_common()), "source_kinds": dict(kinds.most_common())}
    if crosscheck is not None and Path(crosscheck).exists():
        real = _read_pool(Path(crosscheck))
        k = min(len(real), len(pool))
        same = sum(np.array_equal(real[i][0].numbers, pool[i][0].numbers) and
                   real[i][1]["source"] == pool[i][1]["source"] and real[i][1]["group"] == pool[i][1]["group"]
                   for i in range(k))
        entries = Counter(f"{p['source'].split(':')[0]} x {p['sampler']}" for _, p in real[:k])
        res["crosscheck"] = {"pool": str(crosscheck), "compared": k, "identical": int(same),
                             "entries": dict(entries)}
    return res


def write_report(m: dict, rows: list[dict], cov: dict | None, n: int, calls: list | None = None,
                 qs: dict | None = None) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = ["# Generation benchmark", "",
             f"Machine: {m['cpu']}; {m['threads']} thread(s); torch {m['torch']}; Python {m['python']}; "
             f"{m['date']}; load average at start {m['load_average']:.1f} (shared machine: wall times are noisy, "
             "CPU ms per structure is the steadier figure).", "",
             f"## Throughput per source x sampler ({n} structures each, through the full engine)", "",
             "| source | sampler | teacher | structures | mean atoms | structures/s (wall) | CPU ms / structure |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['source']} | {r['sampler']} | {r['teacher']} | {r['n']} | {r['mean_atoms']:.1f} | "
                     f"{r['per_s_wall']:.2f} | {r['cpu_ms_per_structure']:.1f} |")
    lines += ["", "Teacher-free samplers cost milliseconds; teacher-driven ones cost teacher calls: normal modes "
              "6N+relaxation calls per root (shared by `per_root` samples), MD `equil_steps + per_root*interval` "
              "calls per root, rattle-relax `relax_steps`+1 per structure.", ""]
    if calls:
        lines += ["## Teacher work per recipe", "",
                  "Teacher calls made by generation (counted with a Lennard-Jones stand-in; MD steps and Hessian "
                  "calls are fixed by the recipe, relaxations may stop earlier or later with a real teacher) and the "
                  "CHGNet time they imply at the single-thread per-call costs in the shared speed notes.", "",
                  "| recipe | tier | structures | teacher calls | mean atoms / call | CHGNet estimate (s, 1 thread) |",
                  "|---|---|---|---|---|---|"]
        for c in calls:
            lines.append(f"| {c['recipe']} | {c['tier'] or '-'} | {c['structures']} | {c['teacher_calls']} | "
                         f"{c['mean_atoms_per_call']:.1f} | {c['chgnet_seconds_estimate']:.0f} |")
        lines.append("")
    if qs:
        lines += ["## quickstart generation with CHGNet (measured)", "",
                  f"{qs['n_structures']} structures in {qs['seconds']:.0f} s wall (generation loop), "
                  f"{qs['wall_with_teacher_load_s']:.0f} s including loading CHGNet, {qs['cpu_seconds']:.0f} s CPU, "
                  f"1 thread; load average afterwards {qs['load_average_after']:.1f}.", "",
                  "| source | sampler | written | roots | s |", "|---|---|---|---|---|"]
        for st in qs["entries"]:
            lines.append(
                f"| {st['source']} | {st['sampler']} | {st['written']} | {st['roots']} | {st['seconds']:.1f} |"
            )
        lines.append("")
    if cov:
        s = cov["summary"]
        lines += [f"## Coverage of the seed-m2 {s['tier']} tier", "",
                  f"{cov['n']} of {s['requested']} structures in {s['seconds']:.0f} s wall / {s['cpu_seconds']:.0f} s "
                  f"CPU; teacher-driven samplers ran with: {s['teacher']}. Sizes {cov['size_min']}-"
                  f"{cov['size_max']} atoms, median {cov['size_median']:.0f}.", ""]
        if "Lennard-Jones" in s["teacher"]:
            lines += ["The Lennard-Jones stand-in is not a model of these materials: rejections in the teacher-driven "
                      "entries below (e.g. water MD) come from its dynamics, not from the recipe.", ""]
        if cov.get("crosscheck"):
            c = cov["crosscheck"]
            lines += [f"Cross-check against a run with the recipe's real teacher (CHGNet, interrupted on this "
                      f"shared machine after {c['compared']} structures): {c['identical']} of {c['compared']} "
                      "structures have the same source, group, atom count and species order as here "
                      "(entries compared: " + ", ".join(f"{k} {v}" for k, v in c["entries"].items()) + ").", ""]
        lines += [
                  f"Elements present ({len(cov['elements_structures'])}): structures containing each element "
                  "(atoms in parentheses):", "",
                  ", ".join(f"{el} {k} ({cov['elements_atoms'][el]})" for el, k in cov["elements_structures"].items()),
                  "", "Size histogram (atoms per structure):", "", "| atoms | structures |", "|---|---|"]
        e = cov["size_edges"]
        for k, c in enumerate(cov["size_hist"]):
            lines.append(f"| {e[k]}-{e[k + 1] - 1} | {c} |")
        lines += ["", "Written per sampler: " + ", ".join(f"{k} {v}" for k, v in cov["samplers"].items()),
                  "", "Written per source kind: " + ", ".join(f"{k} {v}" for k, v in cov["source_kinds"].items()),
                  "", "Per mix entry:", "", "| source | sampler | written/requested | roots | rejected | failed | s |",
                  "|---|---|---|---|---|---|---|"]
        for st in s["entries"]:
            lines.append(f"| {st['source']} | {st['sampler']} | {st['written']}/{st['requested']} | {st['roots']} | "
                         f"{st['rejected']} | {st['failed']} | {st['seconds']:.1f} |")
        if s["skipped"]:
            lines += ["", "Warnings: " + "; ".join(x["reason"] for x in s["skipped"])]
    save(RESULTS / "generation", {"machine": m, "throughput": rows, "coverage": cov, "teacher_calls": calls,
                                  "quickstart": qs}, "\n".join(lines))
    print(f"wrote {RESULTS / 'generation.md'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20, help="structures per source x sampler")
    ap.add_argument("--quick", action="store_true", help="skip the seed-m2 coverage run")
    ap.add_argument("--chgnet", action="store_true", help="also time teacher-driven samplers with CHGNet")
    ap.add_argument("--tier", default="1k", help="seed-m2 tier for the coverage run")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--pool", default=None, help="where to write the seed-m2 pool (default: a temporary file)")
    ap.add_argument("--coverage-teacher", choices=("recipe", "lj"), default="recipe",
                    help="teacher for the teacher-driven samplers of the coverage run: the recipe's (CHGNet) or a "
                    "Lennard-Jones stand-in (fast; sizes and elements do not depend on it)")
    ap.add_argument("--crosscheck", default=None, metavar="POOL",
                    help="a seed-m2 pool made with the real teacher (may be partial) to compare structure by structure")
    ap.add_argument("--sections", default="throughput,calls,quickstart,coverage",
                    help="comma-separated subset of throughput,calls,quickstart,coverage; the others are kept from the "
                    "previous results/generation.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    m = machine()
    sections = {x for x in args.sections.split(",") if x}
    if args.quick:
        sections.discard("coverage")
    prev = json.loads((RESULTS / "generation.json").read_text()) if (RESULTS / "generation.json").exists() else {}
    rows, cov, calls, qs = (prev.get("throughput") or [], prev.get("coverage"), prev.get("teacher_calls"),
                            prev.get("quickstart"))
    with tempfile.TemporaryDirectory() as d:
        if "throughput" in sections:
            print(
                f"{'source':<24} {'sampler':<13} {'teacher':<7} {'n':>5} {'atoms':>7} {'struct/s':>9} {'CPU ms/st':>10}"
            )
            rows = throughput(args.n, args.chgnet, Path(d))
        if "calls" in sections:
            calls = [teacher_calls("quickstart", None), teacher_calls("seed-m2", args.tier)]
            for c in calls:
                print(
                    f"{c['recipe']} {c['tier'] or ''}: {c['structures']} structures, {c['teacher_calls']} teacher "
                    "calls "
                    f"of {c['mean_atoms_per_call']:.1f} atoms, CHGNet ~{c['chgnet_seconds_estimate']:.0f} s"
                )
        if "quickstart" in sections:
            qs = quickstart_run(args.progress, Path(d))
            print(
                f"quickstart: {qs['n_structures']} structures in {qs['seconds']:.0f} s ({qs['cpu_seconds']:.0f} s CPU)"
            )
        if "coverage" in sections:
            pool = Path(args.pool) if args.pool else Path(d) / "seed-m2.h5"
            cov = coverage(args.tier, args.progress, pool, args.coverage_teacher,
                           Path(args.crosscheck) if args.crosscheck else None)
    if cov:
        print(f"seed-m2 {args.tier}: {cov['n']} structures, {len(cov['elements_structures'])} elements, sizes "
              f"{cov['size_min']}-{cov['size_max']}, histogram {cov['size_hist']}")
    if not sections and prev.get("machine"):
        m = prev["machine"]  # only re-rendering the report: keep when and where it was measured
    write_report(m, rows, cov, args.n, calls, qs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
