"""Student speed: energy + forces per call against the vesin neighbour-list time (1 thread).

For each system (aspirin 21 atoms, Si diamond 64, water 192, Si diamond 512; cutoff 5 A)
and each model variant it times, interleaved in one run:

* ``NL``      -- the vesin full neighbour list (the floor any model call pays);
* ``student`` -- the student's energy + forces on a prepared batch (eager PyTorch);
* ``ts``      -- the same model as its TorchScript export;
* ``calc``    -- one ``StudentCalculator`` MD step (Verlet-skin list reuse + model) on the
  torch backend (autograd forces);
* ``numba``   -- the same step on the calculator's default CPU backend, the Numba kernel
  (``student/fast.py``: forward and hand-derived backward in one compiled call);
* ``spk``     -- schnetpack 2.1.1's PaiNN (Gaussian RBF, cosine cutoff, Atomwise, autograd
  forces) at the same width / depth / radial functions on the same neighbour list, when
  its module files can be imported (see ``--schnetpack-site``).

Variants (see ``VARIANTS``): each size preset with plain PaiNN layers (``tiny`` / ``small`` /
``base``, ``scalar_last_message: false``, the like-for-like comparison with schnetpack), the same
presets with the default scalar-only last message (``+sl``), and the quickstart recipe's student
(``small-2L+sl``: 64 features, 2 layers). The peer runs at each variant's width / depth.

It also measures training throughput (forward + force-loss backward + AdamW step,
structures per second) for each preset on batches of 8 structures.

Results: a table on stdout and ``benchmarks/results/student.md`` / ``student.json``.
Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/student.py [--quick]``.

schnetpack: 2.1.1's package metadata pins sympy <= 1.12, which conflicts with torch 2.13,
and its top-level ``__init__`` imports pytorch-lightning and hydra. Its model layers need
only torch, so this script imports ``schnetpack.representation`` / ``.atomistic`` / ``.nn``
from an unpacked wheel without running the top-level ``__init__``::

    .venv/bin/pip download --no-deps -d /tmp/spk schnetpack==2.1.1
    unzip -q /tmp/spk/schnetpack-2.1.1-py3-none-any.whl -d /tmp/spk/site
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/student.py --schnetpack-site /tmp/spk/site
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from _results import save  # noqa: E402  (benchmarks/_results.py)

from mlff_distiller.data.graph import atoms_to_batch
from mlff_distiller.data.neighbors import neighbor_list
from mlff_distiller.data.normalization import NormalizationStats
from mlff_distiller.student import (
    PRESETS,
    StudentCalculator,
    StudentConfig,
    build_student,
    export_torchscript,
    load_exported,
)

CUTOFF = 5.0
#: label -> StudentConfig keyword arguments
VARIANTS = {
    "tiny": {"preset": "tiny", "scalar_last_message": False},
    "small": {"preset": "small", "scalar_last_message": False},
    "base": {"preset": "base", "scalar_last_message": False},
    "tiny+sl": {"preset": "tiny"},
    "small+sl": {"preset": "small"},
    "base+sl": {"preset": "base"},
    "small-2L+sl": {"preset": "small", "num_layers": 2},
    "small-2L+sl+ang16": {"preset": "small", "num_layers": 2, "angular_channels": 16},
}
RESULTS = Path(__file__).resolve().parent / "results"


# -- systems -----------------------------------------------------------------------------------
def aspirin():
    """The bench's built-in aspirin (RDKit ETKDG + MMFF, seed 7), 21 atoms."""
    from mlff_distiller.bench.systems import load_system

    return load_system("aspirin").atoms


def si_diamond(reps):
    from ase.build import bulk

    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat(reps)
    atoms.rattle(0.03, seed=1)
    return atoms


def water_box(n_side=4):
    """64 rigid-geometry water molecules on a jittered grid at ~1 g/cm^3 (192 atoms)."""
    from ase import Atoms
    from ase.build import molecule

    rng = np.random.default_rng(3)
    n = n_side**3
    length = (n * 18.015 / 0.6022 / 1.0) ** (1 / 3)
    spacing = length / n_side
    atoms = Atoms(cell=[length] * 3, pbc=True)
    for ix in range(n_side):
        for iy in range(n_side):
            for iz in range(n_side):
                w = molecule("H2O")
                q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
                w.positions = w.positions @ q.T + (np.array([ix, iy, iz]) + 0.5) * spacing
                w.positions += rng.normal(scale=0.1, size=3)
                atoms += w
    return atoms


SYSTEMS = {
    "aspirin (21)": aspirin,
    "Si diamond (64)": lambda: si_diamond((2, 2, 2)),
    "water (192)": water_box,
    "Si diamond (512)": lambda: si_diamond((4, 4, 4)),
}


# -- the peer: schnetpack PaiNN ------------------------------------------------------------------
def import_schnetpack(site: str | None):
    """schnetpack's model modules, or (None, reason)."""
    try:
        import schnetpack  # noqa: F401  (a full install)
    except Exception:
        if not site:
            return None, "schnetpack is not importable and --schnetpack-site was not given"
        root = Path(site) / "schnetpack"
        if not (root / "representation" / "painn.py").is_file():
            return None, f"no schnetpack sources under {site}"
        pkg = types.ModuleType("schnetpack")  # package shell: skip the top-level __init__
        pkg.__path__ = [str(root)]
        sys.modules["schnetpack"] = pkg
    try:
        import schnetpack.atomistic as atomistic
        import schnetpack.nn as snn
        import schnetpack.representation as representation
    except Exception as err:
        return None, f"schnetpack model modules failed to import: {type(err).__name__}: {err}"
    version = "2.1.1 (unpacked wheel)" if site else getattr(sys.modules["schnetpack"], "__version__", "?")
    return (representation, atomistic, snn, version), ""


class SpkPaiNNPotential(torch.nn.Module):
    """schnetpack's PaiNN + Atomwise + Forces wired on our batch dict (same neighbour list)."""

    def __init__(self, spk, num_features, num_layers, num_rbf, cutoff):
        super().__init__()
        representation, atomistic, snn, _ = spk
        self.distances = atomistic.PairwiseDistances()
        self.painn = representation.PaiNN(
            n_atom_basis=num_features,
            n_interactions=num_layers,
            radial_basis=snn.GaussianRBF(n_rbf=num_rbf, cutoff=cutoff),
            cutoff_fn=snn.CosineCutoff(cutoff),
        )
        self.readout = atomistic.Atomwise(n_in=num_features, output_key="energy")
        self.forces = atomistic.Forces(energy_key="energy", force_key="forces")

    def forward(self, batch):
        positions = batch["positions"].detach().requires_grad_(True)
        cell = batch["cell"]
        shift = batch["edge_shift"]
        edge_batch = batch["batch"][batch["edge_index"][0]]
        inputs = {
            "_atomic_numbers": batch["numbers"],
            "_positions": positions,
            "_idx_i": batch["edge_index"][0],
            "_idx_j": batch["edge_index"][1],
            "_offsets": torch.bmm(shift.unsqueeze(1), cell[edge_batch]).squeeze(1),
            "_n_atoms": batch["n_atoms"],
            "_idx_m": batch["batch"],
            "_cell": cell,
        }
        for module in (self.distances, self.painn, self.readout, self.forces):
            inputs = module(inputs)
        return {"energy": inputs["energy"], "forces": inputs["forces"]}


# -- timing helpers --------------------------------------------------------------------------
def machine():
    from mlff_distiller.bench.report import cpu_model

    cpu = cpu_model()
    return {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def timed(fn, clock=time.thread_time):
    """Milliseconds of ``fn()``. The default clock is this thread's CPU time: with torch on one
    thread all the work runs in the calling thread, and CPU time does not count the time the
    thread waits while other jobs hold the (shared) cores; wall time would."""
    t0 = clock()
    fn()
    return (clock() - t0) * 1e3


def stats_for(atoms):
    ei, _ = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, CUTOFF)
    zs = sorted(set(int(z) for z in atoms.numbers))
    return NormalizationStats(
        element_energies={z: -1.0 for z in zs}, force_rms=1.0, avg_num_neighbors=ei.shape[1] / len(atoms), cutoff=CUTOFF
    )


def bench_system(name, atoms, presets, spk, repeats, tmpdir):
    torch.manual_seed(0)
    stats = stats_for(atoms)
    batch = atoms_to_batch([atoms], CUTOFF)
    n_edges = int(batch["edge_index"].shape[1])
    runners = {"NL": lambda: neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, CUTOFF)}
    for preset in presets:
        config = StudentConfig(cutoff=CUTOFF, **VARIANTS[preset])
        model = build_student(config, stats).eval()
        ts_path = export_torchscript(model, Path(tmpdir) / f"{preset}.pt")
        exported = load_exported(ts_path)
        md_atoms = atoms.copy()
        md_atoms.calc = StudentCalculator(model, skin=0.5, backend="torch")
        nb_atoms = atoms.copy()
        nb_atoms.calc = StudentCalculator(model, skin=0.5, backend="numba")
        rng = np.random.default_rng(0)
        rng_nb = np.random.default_rng(0)

        def calc_step(a=md_atoms, r=rng):  # a tiny MD-like move, then forces
            a.positions += r.normal(scale=0.002, size=a.positions.shape)
            a.get_forces()

        def numba_step(a=nb_atoms, r=rng_nb):
            a.positions += r.normal(scale=0.002, size=a.positions.shape)
            a.get_forces()

        runners[f"{preset}/student"] = lambda m=model: m(batch, compute_forces=True)
        runners[f"{preset}/ts"] = lambda e=exported: e(batch, compute_forces=True)
        runners[f"{preset}/calc"] = calc_step
        runners[f"{preset}/numba"] = numba_step
        if spk is not None:
            peer = SpkPaiNNPotential(spk, config.num_features, config.num_layers, config.num_rbf, CUTOFF).eval()
            runners[f"{preset}/spk"] = lambda m=peer: m(batch)
    for fn in runners.values():  # warm-up (TorchScript profiling runs, allocator)
        for _ in range(3):
            fn()
    times = {key: [] for key in runners}
    wall = {key: [] for key in runners}
    for _ in range(repeats):  # interleaved: every model sees the same machine state
        for key, fn in runners.items():
            t0 = time.perf_counter()
            times[key].append(timed(fn))
            wall[key].append((time.perf_counter() - t0) * 1e3)
    # Contention only ever adds time: report the median CPU time (thread clock) and keep the
    # best and the wall-clock medians in the JSON.
    return {"atoms": len(atoms), "edges": n_edges, "repeats": repeats,
            "ms": {k: statistics.median(v) for k, v in times.items()},
            "ms_cpu_min": {k: min(v) for k, v in times.items()},
            "ms_wall_median": {k: statistics.median(v) for k, v in wall.items()}}


def bench_training(presets, repeats):
    """Training structures/s: forward (create_graph) + energy/force loss backward + AdamW step."""
    structures = [si_diamond((2, 2, 2)) for _ in range(8)]
    for k, a in enumerate(structures):
        a.rattle(0.05, seed=10 + k)
    batch = atoms_to_batch(structures, CUTOFF)
    stats = stats_for(structures[0])
    out = {}
    for preset in presets:
        torch.manual_seed(0)
        model = build_student(StudentConfig(cutoff=CUTOFF, **VARIANTS[preset]), stats).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, opt=opt):
            opt.zero_grad()
            pred = model(batch, compute_forces=True)
            loss = pred["energy"].float().pow(2).mean() * 1e-4 + pred["forces"].pow(2).mean()
            loss.backward()
            opt.step()

        step()
        t = statistics.median(timed(step) for _ in range(repeats))
        out[preset] = {"batch": len(structures), "atoms_per_structure": 64, "ms_per_step": t,
                       "structures_per_s": len(structures) / (t / 1e3)}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats, skip the 512-atom system, write no result files"
    )
    parser.add_argument("--schnetpack-site", default=os.environ.get("SCHNETPACK_SITE", "/tmp/spk/site"),
                        help="folder holding an unpacked schnetpack wheel (see module docstring)")
    parser.add_argument("--presets", default=",".join(VARIANTS), help="comma-separated labels of VARIANTS")
    parser.add_argument("--render-only", action="store_true", help="rewrite student.md from student.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    presets = [p for p in args.presets.split(",") if p]
    unknown = [p for p in presets if p not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.render_only:
        results = json.loads((RESULTS / "student.json").read_text())
        presets = list(results["training"])
        (RESULTS / "student.md").write_text(render(results, presets, "not run" not in results["schnetpack"]))
        return 0
    spk, why_not = import_schnetpack(args.schnetpack_site)
    import tempfile

    results = {
        "machine": machine(),
        "cutoff_A": CUTOFF,
        "schnetpack": spk[3] if spk else f"not run: {why_not}",
        "systems": {},
        "loadavg": open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?",
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in SYSTEMS.items():
            if args.quick and "512" in name:
                continue
            atoms = build()
            repeats = 5 if len(atoms) > 300 else (9 if len(atoms) > 100 else 21)
            if args.quick:
                repeats = max(3, repeats // 3)
            res = bench_system(name, atoms, presets, spk, repeats, tmp)
            results["systems"][name] = res
            print(
                f"{name}: {res['edges']} edges, " + ", ".join(f"{k} {v:.2f} ms" for k, v in res["ms"].items()),
                flush=True,
            )
    results["training"] = bench_training(presets, 3 if args.quick else 7)
    text = render(results, presets, spk is not None)
    print(text)
    if args.quick:  # a smoke run: do not overwrite the committed results
        return 0
    save(RESULTS / "student", results, text, indent=2)
    return 0


def render(results, presets, with_spk):
    m = results["machine"]
    lines = [
        "# Student speed (energy + forces, CPU ms per call, median of interleaved repeats; 1 thread)",
        "",
        f"Machine: {m['cpu']}, {m['threads']} thread, torch {m['torch']}, Python {m['python']}, {m['date']}.",
        f"Cutoff {results['cutoff_A']} A, float32, random weights (cost is the architecture's). "
        "All columns of a row were timed interleaved in the same run. Times are the calling thread's "
        "CPU time (`time.thread_time`; torch runs on that one thread), which leaves out the time the "
        "thread waited for a core on this shared, overloaded machine; wall-clock medians are in "
        "student.json. Cache and memory-bandwidth contention still inflate them: read the ratios.",
        f"schnetpack PaiNN: {results['schnetpack']}. schnetpack 2.1.1's metadata pins sympy <= 1.12 (torch 2.13 "
        "needs newer) and its top-level `__init__` imports pytorch-lightning and hydra, so its model modules "
        "(`representation.PaiNN`, `atomistic.Atomwise/Forces`, `nn`), which need only torch, are imported from "
        "the unpacked wheel without that `__init__`; the peer gets the same neighbour list and autograd forces.",
        f"Machine load average at the start: {results.get('loadavg', '?')} (2 cores shared with other jobs).",
        "",
        "`student` = eager model on a prepared batch; `TS` = its TorchScript export; `calc` = one "
        "StudentCalculator step (Verlet-skin neighbour list + model) on the torch backend; `numba` = the same "
        "step on the default CPU backend (the Numba kernel), `numba/NL` its time over the neighbour-list time; "
        "`spk` = schnetpack PaiNN at the same "
        "width/depth/radial functions on the same neighbour list; `/NL` = student time over the vesin "
        "neighbour-list time. Variants without `+sl` are plain PaiNN layer stacks "
        "(`scalar_last_message: false`, like for like with `spk`); `+sl` is the default scalar-only last "
        "message, which does less work than the peer by design.",
        "",
    ]
    header = "| system | edges | NL ms | variant | student ms | /NL | TS ms | calc ms | numba ms | numba/NL |"
    sep = "|---|---|---|---|---|---|---|---|---|---|"
    if with_spk:
        header += " spk ms | spk / student |"
        sep += "---|---|"
    lines += [header, sep]
    for name, res in results["systems"].items():
        ms = res["ms"]
        for preset in presets:
            st = ms[f"{preset}/student"]
            row = (f"| {name} | {res['edges']} | {ms['NL']:.2f} | {preset} | {st:.2f} | {st / ms['NL']:.0f}x | "
                   f"{ms[f'{preset}/ts']:.2f} | {ms[f'{preset}/calc']:.2f} | {ms[f'{preset}/numba']:.2f} | "
                   f"{ms[f'{preset}/numba'] / ms['NL']:.0f}x |")
            if with_spk:
                sp = ms[f"{preset}/spk"]
                row += f" {sp:.2f} | {sp / st:.2f}x |"
            lines.append(row)
    lines += ["", "## Training throughput (batch of 8 Si-64 structures, forward + force loss backward + AdamW)", "",
              "| variant | ms / step | structures / s |", "|---|---|---|"]
    for preset, r in results["training"].items():
        lines.append(f"| {preset} | {r['ms_per_step']:.1f} | {r['structures_per_s']:.1f} |")
    p = PRESETS
    lines += ["", "Presets: " + "; ".join(f"{k}: {v['num_features']} features, {v['num_layers']} layers, "
                                          f"{v['num_rbf']} radial functions" for k, v in p.items()) + ".",
              "Variants: " + "; ".join(f"`{k}` = {v}" for k, v in VARIANTS.items() if k in presets) + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
