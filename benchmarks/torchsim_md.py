"""MD throughput of the student in torch-sim (many replicas, one call per step) against a Python
loop of ASE calculators (one call per replica per step).

Systems: R = 1, 8, 64 replicas of Si-64 (the bench's ``si-64``), NVE velocity Verlet at 1 fs
from 300 K. Engines:

* ``torch-sim, torch`` - :class:`StudentTorchSimModel` with the torch backend: all replicas in
  one batched network call per step;
* ``torch-sim, numba`` - the same model with the numba backend (one kernel call per replica
  inside the torch-sim call);
* ``ASE loop, torch`` / ``ASE loop, numba`` - one ``StudentCalculator`` + ``VelocityVerlet``
  per replica, stepped in turn.

Throughput is atom-steps per second (R x 64 atoms x steps / time). Time is this thread's CPU
time (``time.thread_time``: torch runs on one thread here, and CPU time leaves out the time
the thread waits for a core on a shared machine); wall time is recorded too. The student is a
random-weight network with the quickstart's shape (64 features, 2 layers, scalar-only last
message, cutoff 5 A, float32) unless ``--student RUN`` names a trained one; speed does not
depend on the weights.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/torchsim_md.py [--student RUN] [--steps 200]``
(needs the ``[torchsim]`` extra); writes ``benchmarks/results/torchsim_md.md`` and ``.json``.
``--device cuda`` runs the torch-sim torch backend on a GPU as well.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from _results import save  # noqa: E402  (benchmarks/_results.py)

RESULTS = Path(__file__).resolve().parent / "results"
REPLICAS = (1, 8, 64)


def make_student(path):
    from mlff_distiller.data.normalization import NormalizationStats
    from mlff_distiller.student import StudentConfig, build_student, load_student

    if path:
        return load_student(path).eval()
    torch.manual_seed(0)
    stats = NormalizationStats(element_energies={14: -5.4}, force_rms=0.5, avg_num_neighbors=30.0, cutoff=5.0)
    return build_student(StudentConfig(preset="small", num_layers=2, cutoff=5.0, dtype="float32"), stats).eval()


def si64(seed):
    from mlff_distiller.bench.systems import load_system

    atoms = load_system("si-64").atoms
    atoms.rattle(0.02, seed=seed)
    return atoms


def steps_for(replicas: int, steps: int) -> int:
    """Fewer steps for more replicas (each configuration takes a few to tens of seconds)."""
    return max(20, int(round(steps / math.sqrt(replicas))))


def run_torchsim(student, replicas, steps, backend, device="cpu"):
    import torch_sim as ts

    from mlff_distiller.student.torchsim import StudentTorchSimModel

    dev = torch.device(device)
    model = StudentTorchSimModel(student, device=dev, backend=backend)
    state = ts.io.atoms_to_state([si64(k) for k in range(replicas)], dev, torch.float64)
    dt = torch.tensor(1.0 * ts.units.MetalUnits.time / 1000, device=dev)
    kT = torch.tensor(300.0 * ts.units.MetalUnits.temperature, device=dev)
    init, update = ts.nve(model, dt=dt, kT=kT)
    md = init(state, seed=1)
    for _ in range(3):  # warm-up: kernel compilation, first neighbour list
        md = update(md)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    sync()
    t_cpu, t_wall = time.thread_time(), time.perf_counter()
    for _ in range(steps):
        md = update(md)
    sync()
    return time.thread_time() - t_cpu, time.perf_counter() - t_wall, model.neighbors.builds


def run_ase_loop(student, replicas, steps, backend):
    from ase import units
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from mlff_distiller.student import StudentCalculator

    dyns, calcs = [], []
    for k in range(replicas):
        atoms = si64(k)
        atoms.calc = StudentCalculator(student, backend=backend)
        thermalize_momenta(atoms, temperature_K=300.0, rng=np.random.default_rng(k))
        dyns.append(VelocityVerlet(atoms, timestep=1.0 * units.fs))
        calcs.append(atoms.calc)
    for _ in range(3):
        for dyn in dyns:
            dyn.step()
    t_cpu, t_wall = time.thread_time(), time.perf_counter()
    for _ in range(steps):
        for dyn in dyns:
            dyn.step()
    return time.thread_time() - t_cpu, time.perf_counter() - t_wall, sum(c.neighbor_list_builds for c in calcs)


ENGINES = {
    "torch-sim, torch": lambda s, r, n, dev: run_torchsim(s, r, n, "torch", dev),
    "torch-sim, numba": lambda s, r, n, dev: run_torchsim(s, r, n, "numba"),
    "ASE loop, torch": lambda s, r, n, dev: run_ase_loop(s, r, n, "torch"),
    "ASE loop, numba": lambda s, r, n, dev: run_ase_loop(s, r, n, "numba"),
}


def machine():
    from mlff_distiller.bench.report import cpu_model

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_start": open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def render(res) -> str:
    m = res["machine"]
    lines = [
        "# torch-sim MD throughput of the student (Si-64 replicas)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores shared with other jobs (load average {m['loadavg_start']} at the "
        f"start), torch {m['torch']} on {m['threads']} thread, Python {m['python']}, {m['date']}. "
        f"Student: {res['student']}. NVE velocity Verlet, 1 fs, from 300 K; state float64, network "
        f"{res['dtype']}. Throughput = atom-steps per second of this thread's CPU time (wall-clock in brackets: "
        "the machine was shared, so wall time includes waiting for a core).",
        "",
        "| replicas | atoms | steps | engine | atom-steps/s (CPU) "
        "| [wall] | vs ASE loop, torch | neighbour-list builds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in res["rows"]:
        ref = next(r for r in res["rows"] if r["replicas"] == row["replicas"] and r["engine"] == "ASE loop, torch")
        ratio = row["atom_steps_per_s"] / ref["atom_steps_per_s"]
        lines.append(
            f"| {row['replicas']} | {row['atoms']} | {row['steps']} | {row['engine']} | "
            f"{row['atom_steps_per_s']:.0f} | "
            f"[{row['atom_steps_per_s_wall']:.0f}] | {ratio:.2f}x | {row['nl_builds']} |"
        )
    lines += ["", *summary(res)]
    return "\n".join(lines) + "\n"


def summary(res) -> list[str]:
    """What the rows say about the target (batched torch-sim >= 3x a loop of torch-backend ASE
    calculators at 64 replicas) and why."""
    rate = {(r["replicas"], r["engine"]): r["atom_steps_per_s"] for r in res["rows"]}
    big = max(r["replicas"] for r in res["rows"])
    ref = rate[(big, "ASE loop, torch")]
    torch_ratio = rate[(big, "torch-sim, torch")] / ref
    numba_ratio = rate[(big, "torch-sim, numba")] / ref
    loop_numba = rate[(big, "ASE loop, numba")] / ref
    met = "met" if torch_ratio >= 3 else "**not met** on this CPU"
    return [
        f"At {big} replicas: torch-sim with the torch backend (one batched network call per step) runs at "
        f"{torch_ratio:.2f}x the atom-steps/s of the loop of torch-backend ASE calculators (target 3x: {met}); "
        f"torch-sim with the numba backend at {numba_ratio:.2f}x; the loop of numba-backend ASE calculators at "
        f"{loop_numba:.2f}x.",
        "",
        "Why batching gains little here: on one CPU thread the network's time goes into arithmetic and memory "
        "traffic on per-edge tensors, not into per-operator overhead (a profile of one 8-replica call: "
        "elementwise products over (edges, 3F) tensors ~35 % of the time at ~1.6 ms per operator, matrix "
        "products ~20 %, gathers and scatters ~20 %), so 64 cells in one call cost nearly 64 times one cell; "
        "the rows above show the gain of batching levelling off after 8 replicas. Batching pays where "
        "per-operator (kernel-launch) overhead dominates, as on a GPU for 64-atom cells; not measured here "
        "(no GPU was available). On the CPU the numba kernel is the fast path, and torch-sim's numba "
        "backend gives torch-sim runs that speed; torch-sim's own value on the CPU is its batched "
        "integrators, optimisers and autobatching. Neighbour-list builds: torch-sim keeps one list for the "
        "whole batch (a rebuild redoes all replicas), the ASE loop one per replica.",
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--student", default=None, help="run directory or checkpoint (default: random-weight quickstart shape)"
    )
    p.add_argument("--steps", type=int, default=200, help="steps for 1 replica (fewer for more replicas, at least 20)")
    p.add_argument("--device", default="cpu", help="device of the torch-sim torch backend (cpu or cuda)")
    p.add_argument("--quick", action="store_true", help="20 steps, 1 and 8 replicas, write no result files")
    p.add_argument("--render-only", action="store_true", help="rewrite torchsim_md.md from torchsim_md.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.render_only:
        res = json.loads((RESULTS / "torchsim_md.json").read_text())
        (RESULTS / "torchsim_md.md").write_text(render(res))
        return 0
    try:
        import torch_sim  # noqa: F401
    except ImportError:
        print("torch-sim-atomistic is not installed: pip install 'mlff-distiller[torchsim]'", file=sys.stderr)
        return 2
    student = make_student(args.student)
    res = {
        "machine": machine(),
        "student": args.student or "random weights, 64 features, 2 layers, scalar-last, cutoff 5 A",
        "dtype": student.config.dtype,
        "device": args.device,
        "rows": [],
    }
    for replicas in REPLICAS[:2] if args.quick else REPLICAS:
        steps = 20 if args.quick else steps_for(replicas, args.steps)
        for engine, run in ENGINES.items():
            t_cpu, t_wall, builds = run(student, replicas, steps, args.device)
            atom_steps = replicas * 64 * steps
            row = {"replicas": replicas, "atoms": replicas * 64, "steps": steps, "engine": engine,
                   "cpu_s": t_cpu, "wall_s": t_wall, "atom_steps_per_s": atom_steps / max(t_cpu, 1e-9),
                   "atom_steps_per_s_wall": atom_steps / max(t_wall, 1e-9), "nl_builds": builds}
            res["rows"].append(row)
            print(f"{replicas:3d} x Si-64, {steps} steps, {engine:18s}: {row['atom_steps_per_s']:8.0f} atom-steps/s "
                  f"(wall {row['atom_steps_per_s_wall']:.0f})", flush=True)
    res["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"
    text = render(res)
    print(text)
    if args.quick:
        return 0
    save(RESULTS / "torchsim_md", res, text, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
