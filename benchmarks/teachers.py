"""Teacher cost: ms per structure, 1 thread, one-at-a-time vs batched.

Systems: aspirin (21 atoms, built from SMILES with RDKit), a 64-atom crystal (Si diamond
2x2x2; Cu fcc for EMT, which has no Si) and a 216/256-atom crystal (Si 3x3x3; Cu 256 for
EMT). Teachers: EMT, CHGNet 0.3.0 (shipped weights), the Orb-v2 architecture (15
message-passing steps, random weights: the cost is the architecture's), a small FeNNol
PaiNN model built here, and GFN2-xTB (tblite) for the molecule only.

Each (teacher, system) cell is timed with the teachers interleaved round by round (the
machine is shared, so absolute times drift; the ratios in a row are taken in one run).
"one" = ``label([atoms])`` per structure; "batched" = ``label([atoms] * B)`` divided by B,
for teachers whose backend batches. The first call (model warm-up, JAX compilation) is
excluded and reported separately for FeNNol, along with the number of JAX compilations
for ten molecules of ten different sizes with and without atom padding.

Writes ``benchmarks/results/teachers.md`` and ``.json``.
Run: ``.venv/bin/python benchmarks/teachers.py [--repeats 3] [--batch 4]``.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import OrderedDict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _results import save  # noqa: E402  (benchmarks/_results.py)

RESULTS = Path(__file__).resolve().parent / "results"


def aspirin():
    """The bench's built-in aspirin (RDKit ETKDG + MMFF, seed 7), 21 atoms."""
    from mlff_distiller.bench.systems import load_system

    return load_system("aspirin").atoms


def systems():
    from ase.build import bulk

    si64 = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    si216 = bulk("Si", "diamond", a=5.43, cubic=True).repeat(3)
    cu64 = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 4))
    cu256 = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(4)
    asp = aspirin()
    for k, a in enumerate((si64, si216, cu64, cu256, asp)):
        a.rattle(0.03, seed=k)
    return {
        "aspirin (21)": {"default": asp},
        "crystal (64)": {"default": si64, "emt": cu64},
        "crystal (216-256)": {"default": si216, "emt": cu256},
    }


def build_teachers(tmp: Path):
    import jax
    import torch
    from fennol import FENNIX
    from orb_models.forcefield import pretrained

    from mlff_distiller.teachers import build_teacher

    torch.set_num_threads(1)
    teachers = OrderedDict()
    teachers["emt"] = build_teacher("emt")
    teachers["chgnet"] = build_teacher("chgnet")
    torch.manual_seed(0)
    orb_path = tmp / "orb-v2-random.ckpt"
    torch.save(pretrained.orb_v2_architecture(device="cpu").state_dict(), orb_path)
    teachers["orb-v2 arch"] = build_teacher({"name": "orb", "model": "orb-v2", "weights_path": str(orb_path)})
    fnx = tmp / "painn64.fnx"
    FENNIX(**FENNOL_CONFIG, rng_key=jax.random.PRNGKey(0)).save(str(fnx))
    teachers["fennol small"] = build_teacher({"name": "fennol", "weights_path": str(fnx)})
    try:
        teachers["gfn2-xtb"] = build_teacher("xtb")
    except Exception as err:  # noqa: BLE001 - optional
        print(f"skipping xtb: {err}")
    return teachers, fnx


FENNOL_CONFIG = dict(
    cutoff=5.0,
    energy_unit="eV",
    energy_terms=["energy"],
    modules=OrderedDict(
        embedding={"module_name": "PAINN", "dim": 64, "nlayers": 3, "nchannels": 16,
                   "message_hidden": [64], "update_hidden": [64]},
        energy={"module_name": "NEURAL_NET", "neurons": [64, 1], "input_key": "embedding", "squeeze": True},
    ),
)


def time_call(fn) -> float:
    t0 = time.perf_counter()
    res = fn()
    dt_ = time.perf_counter() - t0
    assert all(r.ok for r in res), [r.error for r in res if not r.ok]
    return dt_


def fennol_recompilations(fnx: Path) -> dict:
    """JAX compilations and wall time for ten molecules of ten sizes, with and without padding."""
    from ase.build import molecule
    from fennol import FENNIX

    names = ["H2", "H2O", "NH3", "CH4", "CH3OH", "CH3CHO", "C2H6", "CH3CH2OH", "C3H8", "C6H6"]
    mols = [molecule(n) for n in names]
    out = {}
    for padding in (True, False):
        model = FENNIX.load(str(fnx), use_atom_padding=padding)
        t0 = time.perf_counter()
        for m in mols:
            inputs = {"species": m.numbers.astype(np.int32), "coordinates": m.positions.astype(np.float32),
                      "natoms": np.array([len(m)], np.int32), "batch_index": np.zeros(len(m), np.int32)}
            model.energy_and_forces(**inputs)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for m in mols:
            inputs = {"species": m.numbers.astype(np.int32), "coordinates": m.positions.astype(np.float32),
                      "natoms": np.array([len(m)], np.int32), "batch_index": np.zeros(len(m), np.int32)}
            model.energy_and_forces(**inputs)
        second = time.perf_counter() - t0
        out["padding" if padding else "no padding"] = {
            "compilations": int(model._energy_and_forces._cache_size()),
            "first_pass_s": round(first, 3),
            "second_pass_s": round(second, 3),
        }
    return out


def machine() -> dict:
    from mlff_distiller.bench.report import cpu_model

    cpu = cpu_model()
    import torch

    import mlff_distiller

    vers = {}
    for dist in ("torch", "ase", "chgnet", "orb-models", "fennol", "jax", "tblite"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            vers[dist] = version(dist)
        except PackageNotFoundError:
            vers[dist] = None
    return {
        "cpu": cpu,
        "threads": 1,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": vers,
        "mlff_distiller": mlff_distiller.__version__,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": os.getloadavg(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per cell (median reported)")
    ap.add_argument("--batch", type=int, default=4, help="structures per batched call")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mlffd_bench_teachers_"))
    teachers, fnx = build_teachers(tmp)
    sys_table = systems()
    rows = []
    for sys_name, variants in sys_table.items():
        cells = []
        for tname, teacher in teachers.items():
            if tname == "gfn2-xtb" and not sys_name.startswith("aspirin"):
                continue  # ~7 s per Si64 call: molecules only in practice
            atoms = variants.get(tname.split()[0], variants["default"])
            batched = bool(teacher.capabilities["batched"])  # the backend can batch
            t_first = time_call(lambda teacher=teacher, atoms=atoms: teacher.label([atoms]))  # warm-up / compile
            if batched:
                time_call(lambda teacher=teacher, atoms=atoms: teacher.label([atoms] * args.batch,
                                                                        batch_size=args.batch))
            cells.append({"teacher": tname, "t": teacher, "atoms": atoms, "batched": batched, "first": t_first,
                          "one": [], "batch": []})
        for _ in range(args.repeats):  # interleaved rounds
            for c in cells:
                t, a = c["t"], c["atoms"]
                c["one"].append(time_call(lambda t=t, a=a: t.label([a])) * 1000)
                if c["batched"]:
                    batch_s = time_call(lambda t=t, a=a: t.label([a] * args.batch, batch_size=args.batch))
                    c["batch"].append(batch_s * 1000 / args.batch)
        for c in cells:
            one = statistics.median(c["one"])
            bat = statistics.median(c["batch"]) if c["batch"] else None
            rows.append(
                {
                    "system": sys_name,
                    "teacher": c["teacher"],
                    "structure": c["atoms"].get_chemical_formula(),
                    "n_atoms": len(c["atoms"]),
                    "ms_one": round(one, 2),
                    "ms_batched": None if bat is None else round(bat, 2),
                    "batch_speedup": None if bat is None else round(one / bat, 2),
                    "first_call_ms": round(c["first"] * 1000, 1),
                }
            )
            r = rows[-1]
            print(
                f"{sys_name:<18} {c['teacher']:<13} {r['structure']:<10} one {r['ms_one']:>9.2f} ms"
                + (f"  batched {r['ms_batched']:>9.2f} ms/struct  (x{r['batch_speedup']})" if bat else ""),
                flush=True,
            )
    recompile = fennol_recompilations(fnx)
    info = machine()

    # ratios vs CHGNet in each row
    for sys_name in sys_table:
        ref = next((r for r in rows if r["system"] == sys_name and r["teacher"] == "chgnet"), None)
        for r in rows:
            if r["system"] == sys_name and ref:
                r["vs_chgnet"] = round(r["ms_one"] / ref["ms_one"], 3)

    lines = [
        "# Teacher cost (ms per structure, energy + forces (+ stress for crystals), 1 thread)",
        "",
        f"Machine: {info['cpu']}; 1 thread; torch {info['versions']['torch']}, chgnet {info['versions']['chgnet']}, "
        f"orb-models {info['versions']['orb-models']}, fennol {info['versions']['fennol']} (jax "
        f"{info['versions']['jax']}), "
        f"tblite {info['versions']['tblite']}; {info['date']}; load average at the end "
        f"{tuple(round(x, 1) for x in info['load_average'])} "
        "(shared machine: compare ratios within a row block, not absolute times across runs).",
        "",
        f"Median of {args.repeats} interleaved rounds. 'one' = one structure per `label` call; 'batched' = "
        f"{args.batch} structures per call, time divided by {args.batch}. Orb-v2 = full architecture (15 steps), "
        "random weights. FeNNol = PaiNN dim 64, 3 layers, 5 A cutoff, random weights, atom padding on. "
        "EMT runs Cu crystals (it has no Si parameters); xtb runs the molecule only.",
        "",
        "| system | teacher | structure | ms one | ms batched | batch speed-up | x CHGNet (one) | first call ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['teacher']} | {r['structure']} | {r['ms_one']} | {r['ms_batched'] or '-'} | "
            f"{r['batch_speedup'] or '-'} | {r.get('vs_chgnet', '-')} | {r['first_call_ms']} |"
        )
    lines += ["", "## FeNNol: ten molecules of ten sizes (2-12 atoms), one at a time", "",
              "| mode | JAX compilations | first pass s | second pass s |", "|---|---|---|---|"]
    for mode, v in recompile.items():
        lines.append(f"| {mode} | {v['compilations']} | {v['first_pass_s']} | {v['second_pass_s']} |")
    save(RESULTS / "teachers", {"machine": info, "repeats": args.repeats, "batch": args.batch,
                                "fennol_config": FENNOL_CONFIG, "rows": rows,
                                "fennol_recompilations_10_sizes": recompile}, "\n".join(lines), echo=True, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
