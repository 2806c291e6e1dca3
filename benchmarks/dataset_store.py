"""Benchmark of the HDF5 dataset store on >= 20,000 EMT-labelled structures (5-200 atoms).

Measures, side by side in one run:
* file size of the compact store vs the same data as float64/int64 numpy arrays (``.npz``,
  uncompressed) and vs extxyz (ASE writer);
* float32 storage error of forces (and of positions in the float32-positions variant);
* random single-structure reads per second (lazy h5py reads, and preloaded);
* DataLoader batches per second with 0 and 2 workers (5 A cutoff, batch 32).

The structures (rattled and strained fcc/bcc Cu/Ag/Au/Ni/Pd/Pt/Al supercells with random
substitutions and vacancies, plus rattled small H/C/N/O molecules) are generated and
labelled with ASE's EMT once, and cached under ``/tmp/mlffd_bench`` (not in git).

Writes ``benchmarks/results/dataset_store.md`` and ``.json``.
Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dataset_store.py [--n 20000]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from _results import save  # noqa: E402  (benchmarks/_results.py)

CACHE = Path(os.environ.get("MLFFD_BENCH_CACHE", "/tmp/mlffd_bench"))
RESULTS = Path(__file__).resolve().parent / "results"
COMPACT_FORCE_BITS = 16  # float32 mantissa bits kept for forces in the compact variant
METALS = ["Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al"]


def molecules() -> list[str]:
    """Molecules of ASE's g2 collection made of H C N O (EMT elements) with 5 atoms or more."""
    from ase.collections import g2

    return sorted(n for n in g2.names if set(g2[n].get_chemical_symbols()) <= set("HCNO") and len(g2[n]) >= 5)


def _lattice(sym: str, kind: str) -> float:
    from ase.data import atomic_numbers, reference_states

    ref = reference_states[atomic_numbers[sym]]
    a_fcc = ref["a"]
    return a_fcc if kind == "fcc" else a_fcc * (0.5 ** (1 / 3))  # same volume per atom


def make_root(rng: np.random.Generator, k: int):
    """One root structure (crystal supercell or molecule) with its provenance source."""
    from ase.build import bulk, molecule

    if rng.random() < 0.3:
        names = molecules()
        name = names[rng.integers(len(names))]
        atoms = molecule(name)
        atoms.pbc = False
        return atoms, f"molecule:{name}"
    sym = METALS[rng.integers(len(METALS))]
    kind = "fcc" if rng.random() < 0.7 else "bcc"
    unit = bulk(sym, kind, a=_lattice(sym, kind), cubic=True)
    target = int(np.exp(rng.uniform(np.log(5), np.log(200))))  # log-uniform: many small, some large cells
    best = None
    for reps in ((1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2), (3, 2, 2), (3, 3, 2), (3, 3, 3), (4, 3, 3), (4, 4, 3),
                 (4, 4, 4), (5, 4, 4), (5, 5, 4)):
        n = len(unit) * int(np.prod(reps))
        if 5 <= n <= 200 and (best is None or abs(n - target) < abs(len(unit) * np.prod(best) - target)):
            best = reps
    atoms = unit * best
    n_vac = int(rng.integers(0, min(3, len(atoms) - 5) + 1)) if len(atoms) > 6 else 0
    if n_vac:
        del atoms[list(rng.choice(len(atoms), n_vac, replace=False))]
    if rng.random() < 0.4:  # random alloy
        other = METALS[rng.integers(len(METALS))]
        sub = rng.random(len(atoms)) < rng.uniform(0.05, 0.5)
        syms = atoms.get_chemical_symbols()
        atoms.set_chemical_symbols([other if s else x for s, x in zip(sub, syms)])
    return atoms, f"bulk:{sym}-{kind}"


def generate(n_target: int, seed: int = 0) -> Path:
    """EMT-labelled structures (5-200 atoms), cached as plain numpy arrays (npz)."""
    out = CACHE / f"emt_structures_{n_target}_{seed}.npz"
    if out.exists():
        d = dict(np.load(out))
        small = d["n_atoms"] < 5
        if not small.any():
            return out
        # A cache from an earlier generator version held a few 4-atom cells: drop them
        # (whole groups: rattled copies share their root's size) and label replacements.
        keep = ~small
        remap = np.cumsum(keep) - 1
        atom_keep = np.repeat(keep, d["n_atoms"])
        kept = {k: (v[atom_keep] if k in ("numbers", "positions", "forces") else v[keep]) for k, v in d.items()}
        kept["parent"] = np.where(kept["parent"] >= 0, remap[np.maximum(kept["parent"], 0)], -1)
        roots = max(int(g[4:]) for g in kept["group"]) + 1
        extra = _label(int(small.sum()), np.random.default_rng(seed + 1), roots)
        extra["parent"] = np.where(extra["parent"] >= 0, extra["parent"] + len(kept["energy"]), -1)
        arrays = {k: np.concatenate([kept[k], extra[k]]) for k in kept}
    else:
        CACHE.mkdir(parents=True, exist_ok=True)
        arrays = _label(n_target, np.random.default_rng(seed), 0)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out)
    return out


def _label(n_target: int, rng: np.random.Generator, root_id: int) -> dict:
    from ase.calculators.emt import EMT
    from tqdm import tqdm

    cols = {
        k: []
        for k in (
            "numbers",
            "positions",
            "forces",
            "n_atoms",
            "energy",
            "stress",
            "stress_mask",
            "cell",
            "pbc",
            "source",
            "params",
            "group",
            "parent",
            "seed",
        )
    }
    calc = EMT()
    bar = tqdm(total=n_target, desc="EMT labels", unit="struct")
    while len(cols["energy"]) < n_target:
        root, source = make_root(rng, root_id)
        first = len(cols["energy"])
        for d in range(int(rng.integers(4, 13))):
            if len(cols["energy"]) >= n_target:
                break
            atoms = root.copy()
            stdev = float(rng.uniform(0.02, 0.15))
            strain = float(rng.uniform(-0.03, 0.03)) if atoms.pbc.all() else 0.0
            if atoms.pbc.all():
                atoms.set_cell(atoms.cell.array * (1 + strain), scale_atoms=True)
            s = int(rng.integers(2**31))
            atoms.rattle(stdev=stdev, seed=s)
            atoms.calc = calc
            e = atoms.get_potential_energy()
            f = atoms.get_forces()
            periodic = bool(atoms.pbc.all())
            cols["stress"].append(atoms.get_stress() if periodic else np.zeros(6))
            cols["stress_mask"].append(periodic)
            cols["numbers"].append(atoms.numbers.copy())
            cols["positions"].append(atoms.positions.copy())
            cols["forces"].append(f)
            cols["n_atoms"].append(len(atoms))
            cols["energy"].append(e)
            cols["cell"].append(atoms.cell.array.copy())
            cols["pbc"].append(atoms.pbc.copy())
            cols["source"].append(source)
            cols["params"].append(json.dumps({"stdev": round(stdev, 4), "strain": round(strain, 4)}))
            cols["group"].append(f"root{root_id}")
            cols["parent"].append(-1 if d == 0 else first)
            cols["seed"].append(s)
            bar.update(1)
        root_id += 1
    bar.close()
    arrays = {
        "numbers": np.concatenate(cols["numbers"]).astype(np.int64),
        "positions": np.concatenate(cols["positions"]),
        "forces": np.concatenate(cols["forces"]),
        "n_atoms": np.array(cols["n_atoms"], np.int64),
        "energy": np.array(cols["energy"]),
        "stress": np.array(cols["stress"]),
        "stress_mask": np.array(cols["stress_mask"]),
        "cell": np.array(cols["cell"]),
        "pbc": np.array(cols["pbc"]),
        "source": np.array(cols["source"]),
        "params": np.array(cols["params"]),
        "group": np.array(cols["group"]),
        "parent": np.array(cols["parent"], np.int64),
        "seed": np.array(cols["seed"], np.int64),
    }
    return arrays


def load_atoms(npz: Path):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    d = dict(np.load(npz))  # NpzFile re-reads an array on every access: load once
    offsets = np.concatenate([[0], np.cumsum(d["n_atoms"])])
    out = []
    for i in range(len(d["energy"])):
        a, b = offsets[i], offsets[i + 1]
        atoms = Atoms(numbers=d["numbers"][a:b], positions=d["positions"][a:b], cell=d["cell"][i], pbc=d["pbc"][i])
        res = {"energy": float(d["energy"][i]), "forces": d["forces"][a:b]}
        if d["stress_mask"][i]:
            res["stress"] = d["stress"][i]
        atoms.calc = SinglePointCalculator(atoms, **res)
        atoms.info["provenance"] = {
            "source": str(d["source"][i]),
            "sampler": "rattle",
            "params": json.loads(str(d["params"][i])),
            "parent": int(d["parent"][i]),
            "group": str(d["group"][i]),
            "seed": int(d["seed"][i]),
            "teacher": "emt",
        }
        out.append(atoms)
    return out, d


def numpy_baseline(d, path: Path) -> int:
    """The same data as float64/int64 numpy arrays (uncompressed .npz; provenance as JSON text)."""
    n = len(d["energy"])
    prov = [json.dumps({"source": str(d["source"][i]), "sampler": "rattle", "params": json.loads(str(d["params"][i])),
                        "parent": int(d["parent"][i]), "group": str(d["group"][i]), "seed": int(d["seed"][i]),
                        "teacher": "emt"}) for i in range(n)]
    prov_bytes = np.frombuffer("\n".join(prov).encode(), dtype=np.uint8)
    np.savez(
        path,
        numbers=d["numbers"].astype(np.int64),
        positions=d["positions"].astype(np.float64),
        forces=d["forces"].astype(np.float64),
        offsets=np.concatenate([[0], np.cumsum(d["n_atoms"])]).astype(np.int64),
        n_atoms=d["n_atoms"].astype(np.int64),
        energy=d["energy"].astype(np.float64),
        stress=d["stress"].astype(np.float64),
        stress_mask=d["stress_mask"].astype(np.int64),
        cell=d["cell"].astype(np.float64),
        pbc=d["pbc"].astype(np.int64),
        provenance_json=prov_bytes,
    )
    return path.stat().st_size


def machine() -> dict:
    from mlff_distiller.bench.report import cpu_model

    cpu = cpu_model()
    import h5py
    import torch

    return {"cpu": cpu, "cores_visible": os.cpu_count(), "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
            "torch": torch.__version__, "h5py": h5py.version.version, "hdf5": h5py.version.hdf5_version,
            "python": platform.python_version(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def reads_per_second(fn, n_items: int, seconds: float, rng) -> float:
    idx = rng.integers(0, n_items, size=200000)
    t0 = time.perf_counter()
    k = 0
    while True:
        for _ in range(200):
            fn(int(idx[k % len(idx)]))
            k += 1
        if time.perf_counter() - t0 > seconds:
            break
    return k / (time.perf_counter() - t0)


def batches_per_second(ds, workers: int, seconds: float, batch_size: int = 32) -> float:
    loader = ds.loader(batch_size=batch_size, shuffle=True, num_workers=workers,
                       generator=__import__("torch").Generator().manual_seed(0))
    it = iter(loader)
    next(it)  # worker start-up is not part of the rate
    t0 = time.perf_counter()
    k = 0
    for _ in it:
        k += 1
        if time.perf_counter() - t0 > seconds:
            break
    rate = k / (time.perf_counter() - t0)
    del it, loader
    return rate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="number of structures (default 20000)")
    ap.add_argument("--seconds", type=float, default=4.0, help="time per rate measurement")
    ap.add_argument("--generate-only", action="store_true")
    args = ap.parse_args(argv)
    npz = generate(args.n)
    if args.generate_only:
        print(npz)
        return 0
    import torch

    torch.set_num_threads(1)
    from mlff_distiller.data import MolecularDataset
    from mlff_distiller.data.store import DatasetReader, DatasetWriter, repack

    work = CACHE / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    atoms_list, d = load_atoms(npz)
    n = len(atoms_list)
    n_atoms_total = int(d["n_atoms"].sum())
    res: dict = {"machine": machine(), "n_structures": n, "n_atoms": n_atoms_total,
                 "atoms_per_structure": {"min": int(d["n_atoms"].min()), "median": float(np.median(d["n_atoms"])),
                                         "max": int(d["n_atoms"].max())},
                 "periodic_fraction": float(d["pbc"].all(1).mean())}

    # -- write (appends of 100, as labeling does) ------------------------------------------
    h5 = work / "store.h5"
    t0 = time.perf_counter()
    with DatasetWriter(h5, label_fields=("energy", "forces", "stress"), attrs={"teacher": {"name": "emt"}}) as w:
        for k in range(0, n, 100):
            w.append(atoms_list[k:k + 100])
        t_append = time.perf_counter() - t0
        t1 = time.perf_counter()
    t_finalize = time.perf_counter() - t1
    res["write"] = {"append_structures_per_s": n / t_append, "append_batch": 100, "finalize_s": t_finalize}
    h5_32 = work / "store_f32pos.h5"
    repack(h5, h5_32, positions_dtype="float32")
    h5_c = work / "store_compact.h5"
    repack(h5, h5_c, positions_dtype="float32", forces_mantissa_bits=COMPACT_FORCE_BITS)

    # -- sizes ------------------------------------------------------------------------------
    size_h5 = h5.stat().st_size
    size_h5_32 = h5_32.stat().st_size
    size_h5_c = h5_c.stat().st_size
    size_np = numpy_baseline(d, work / "baseline.npz")
    from ase.io import write

    xyz = work / "data.extxyz"
    write(xyz, atoms_list, format="extxyz")
    size_xyz = xyz.stat().st_size
    res["size_bytes"] = {"store_f64_positions": size_h5, "store_f32_positions": size_h5_32,
                         "store_compact": size_h5_c, "numpy_f64_i64": size_np, "extxyz": size_xyz}
    res["size_ratio"] = {
        "numpy_over_store": size_np / size_h5,
        "extxyz_over_store": size_xyz / size_h5,
        "numpy_over_store_f32pos": size_np / size_h5_32,
        "extxyz_over_store_f32pos": size_xyz / size_h5_32,
        "numpy_over_store_compact": size_np / size_h5_c,
        "extxyz_over_store_compact": size_xyz / size_h5_c,
    }
    with DatasetReader(h5) as r:  # where the bytes go in the default layout
        import h5py

        with h5py.File(h5, "r") as f:
            res["bytes_per_atom_default"] = {name: f[name].id.get_storage_size() / n_atoms_total
                                             for name in ("numbers", "positions", "forces")}

    # -- float32 storage error ----------------------------------------------------------------
    with DatasetReader(h5) as r, DatasetReader(h5_32) as r32, DatasetReader(h5_c) as rc:
        f_stored = np.concatenate([v for _, v in r.iter_atom_blocks("forces")]).astype(np.float64)
        f_compact = np.concatenate([v for _, v in rc.iter_atom_blocks("forces")]).astype(np.float64)
        p_stored = np.concatenate([v for _, v in r.iter_atom_blocks("positions")])
        p32 = np.concatenate([v for _, v in r32.iter_atom_blocks("positions")]).astype(np.float64)
    ferr = np.abs(f_stored - d["forces"])
    fcerr = np.abs(f_compact - d["forces"])
    perr = np.abs(p32 - d["positions"])
    big = np.abs(d["forces"]) > 1e-3
    res["float32_error"] = {
        "forces_max_abs_eV_per_A": float(ferr.max()), "forces_rms_abs_eV_per_A": float(np.sqrt(np.mean(ferr**2))),
        "forces_max_rel": float((ferr[big] / np.abs(d["forces"][big])).max()),
        "forces_compact_max_abs_eV_per_A": float(fcerr.max()),
        "forces_compact_rms_abs_eV_per_A": float(np.sqrt(np.mean(fcerr**2))),
        "forces_compact_max_rel": float((fcerr[big] / np.abs(d["forces"][big])).max()),
        "forces_max_abs_eV_per_A_in_data": float(np.abs(d["forces"]).max()),
        "positions_f64_max_abs_A": float(np.abs(p_stored - d["positions"]).max()),
        "positions_f32_max_abs_A": float(perr.max()), "positions_f32_rms_abs_A": float(np.sqrt(np.mean(perr**2))),
        "positions_max_abs_coordinate_A": float(np.abs(d["positions"]).max()),
    }

    # -- random reads ---------------------------------------------------------------------------
    rng = np.random.default_rng(0)
    with DatasetReader(h5) as r:
        reads_lazy_cold = reads_per_second(r.get_arrays, n, args.seconds, rng)  # h5py chunk cache fills up
        reads_lazy = reads_per_second(r.get_arrays, n, args.seconds, rng)
        reads_atoms = reads_per_second(r.get_atoms, n, args.seconds, rng)
    with DatasetReader(h5, preload=True) as r:
        reads_pre = reads_per_second(r.get_arrays, n, args.seconds, rng)
    ds = MolecularDataset(h5, cutoff=5.0)
    items = reads_per_second(ds.__getitem__, n, args.seconds, rng)
    res["random_reads_per_s"] = {"get_arrays_lazy_first_pass": reads_lazy_cold, "get_arrays_lazy_warm": reads_lazy,
                                 "get_arrays_preloaded": reads_pre, "get_atoms_lazy_warm": reads_atoms,
                                 "dataset_item_with_5A_neighbour_list": items}
    # -- DataLoader -----------------------------------------------------------------------------
    bps = {}
    for workers in (0, 2):
        bps[f"workers_{workers}"] = batches_per_second(MolecularDataset(h5, cutoff=5.0), workers, args.seconds * 2)
    res["dataloader_batches_per_s"] = {**bps, "batch_size": 32, "cutoff_A": 5.0}
    ds.close()

    save(RESULTS / "dataset_store", res, render(res), echo=True, indent=2)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def render(res: dict) -> str:
    m = res["machine"]
    sb, sr = res["size_bytes"], res["size_ratio"]
    rr, dl, fe, wr = res["random_reads_per_s"], res["dataloader_batches_per_s"], res["float32_error"], res["write"]
    mb = 1 / 2**20
    lines = [
        "# Dataset store benchmark",
        "",
        f"Machine: {m['cpu']}, {m['cores_visible']} cores visible (shared with other jobs), "
        f"OMP_NUM_THREADS={m['threads']}, "
        f"torch {m['torch']}, h5py {m['h5py']} / HDF5 {m['hdf5']}, Python {m['python']}, {m['date']}.",
        "",
        f"Data: {res['n_structures']} EMT-labelled structures, {res['n_atoms']} atoms "
        f"({res['atoms_per_structure']['min']}-{res['atoms_per_structure']['max']} per structure, median "
        f"{res['atoms_per_structure']['median']:.0f}); {100 * res['periodic_fraction']:.0f}% periodic crystals "
        "(rattled/strained fcc/bcc Cu Ag Au Ni Pd Pt Al, alloys, vacancies), the rest rattled H/C/N/O molecules.",
        "",
        "## File size",
        "",
        "| layout | MiB | numpy f64/i64 / this | extxyz / this |",
        "|---|---:|---:|---:|",
        f"| store, positions float64 (imported data; `DatasetWriter` default) | {sb['store_f64_positions'] * mb:.1f} "
        f"| {sr['numpy_over_store']:.2f}x | "
        f"{sr['extxyz_over_store']:.2f}x |",
        "| store, positions float32 (format 2 default of generated pools; here via `repack --positions-dtype "
        f"float32`) | {sb['store_f32_positions'] * mb:.1f} | "
        f"{sr['numpy_over_store_f32pos']:.2f}x | {sr['extxyz_over_store_f32pos']:.2f}x |",
        f"| store, compact: positions float32, forces {COMPACT_FORCE_BITS}-bit mantissa (`repack --positions-dtype "
        "float32 "
        f"--forces-mantissa-bits {COMPACT_FORCE_BITS}`) | {sb['store_compact'] * mb:.1f} | "
        f"{sr['numpy_over_store_compact']:.2f}x | "
        f"{sr['extxyz_over_store_compact']:.2f}x |",
        f"| numpy arrays float64/int64 (.npz, uncompressed) | {sb['numpy_f64_i64'] * mb:.1f} | 1.00x | |",
        f"| extxyz (ASE writer) | {sb['extxyz'] * mb:.1f} | | 1.00x |",
        "",
        "Bytes per atom in the default layout (gzip+shuffle): "
        + ", ".join(f"{k} {v:.2f}" for k, v in res["bytes_per_atom_default"].items())
        + ".",
        "",
        "## Storage error (against the float64 labels)",
        "",
        f"- forces, float32 (default): max |error| {fe['forces_max_abs_eV_per_A']:.2e} eV/A, RMS "
        f"{fe['forces_rms_abs_eV_per_A']:.2e} eV/A, "
        f"max relative {fe['forces_max_rel']:.1e} (|F| up to {fe['forces_max_abs_eV_per_A_in_data']:.1f} eV/A)",
        f"- forces, {COMPACT_FORCE_BITS}-bit mantissa (compact): max |error| "
        f"{fe['forces_compact_max_abs_eV_per_A']:.2e} eV/A, "
        f"RMS {fe['forces_compact_rms_abs_eV_per_A']:.2e} eV/A, max relative {fe['forces_compact_max_rel']:.1e}",
        f"- positions float64 (default): max |error| {fe['positions_f64_max_abs_A']:.1e} A (lossless)",
        f"- positions float32: max |error| {fe['positions_f32_max_abs_A']:.2e} A, RMS "
        f"{fe['positions_f32_rms_abs_A']:.2e} A "
        f"(|x| up to {fe['positions_max_abs_coordinate_A']:.1f} A)",
        "",
        "## Speed (1 thread)",
        "",
        "| operation | rate |",
        "|---|---:|",
        f"| append (batches of {wr['append_batch']}, fsync on) | {wr['append_structures_per_s']:.0f} structures/s |",
        f"| finalize (merge journal into compact file) | {wr['finalize_s']:.1f} s |",
        f"| random `get_arrays`, lazy, first pass (cold chunk cache) | {rr['get_arrays_lazy_first_pass']:.0f} /s |",
        f"| random `get_arrays`, lazy, warm chunk cache | {rr['get_arrays_lazy_warm']:.0f} /s |",
        f"| random `get_arrays`, preloaded | {rr['get_arrays_preloaded']:.0f} /s |",
        f"| random `get_atoms` (ase.Atoms + calculator), lazy | {rr['get_atoms_lazy_warm']:.0f} /s |",
        "| random `MolecularDataset[i]` incl. 5 A vesin neighbour list | "
        f"{rr['dataset_item_with_5A_neighbour_list']:.0f} /s |",
        f"| DataLoader, batch {dl['batch_size']}, 0 workers | {dl['workers_0']:.1f} batches/s |",
        f"| DataLoader, batch {dl['batch_size']}, 2 workers | {dl['workers_2']:.1f} batches/s |",
        "",
        "Rates are wall-clock on a machine shared with other jobs; compare rows of one run, not runs.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
