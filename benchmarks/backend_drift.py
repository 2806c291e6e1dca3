"""NVE energy drift of one student on its two calculator backends (Numba kernel, torch).

The two backends compute the same function but round differently in float32, so their MD
trajectories separate after a few hundred steps and one 10 ps drift number per backend says
little. This runs several seeds per backend (VelocityVerlet, 0.5 fs, from 300 K) and reports
the linear drift of the total energy per atom (eV/atom/ps) and its peak-to-peak excursion.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/backend_drift.py [--student RUN] [--ps 4]``;
writes ``benchmarks/results/backend_drift.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from ase import units
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mlff_distiller.bench.systems import load_system
from mlff_distiller.student import StudentCalculator

HERE = os.path.dirname(os.path.abspath(__file__))


def drift(student, system: str, backend: str, seed: int, ps: float, dt_fs: float = 0.5):
    atoms = load_system(system).atoms
    atoms.calc = StudentCalculator(student, backend=backend)
    thermalize_momenta(atoms, temperature_K=300.0, rng=np.random.default_rng(seed))
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    every = 20
    energies = []
    dyn.attach(lambda: energies.append(atoms.get_total_energy() / len(atoms)), interval=every)
    dyn.run(int(round(ps * 1000 / dt_fs)))
    e = np.asarray(energies)
    t_ps = np.arange(len(e)) * every * dt_fs / 1000
    return float(np.polyfit(t_ps, e, 1)[0]), float(np.ptp(e))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", default=os.path.join(os.path.dirname(HERE), "projects", "quickstart", "train"))
    p.add_argument("--systems", nargs="+", default=["aspirin", "si-64"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--ps", type=float, default=4.0)
    p.add_argument("--out", default=os.path.join(HERE, "results", "backend_drift.md"))
    args = p.parse_args(argv)
    if not os.path.exists(args.student):
        print(f"student {args.student} does not exist: run `make demo` or pass --student", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    lines = [
        "# NVE drift of the quickstart student on both calculator backends",
        "",
        f"Machine: {platform.processor() or platform.machine()}, 1 thread, torch {torch.__version__}, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Student: `{args.student}`.",
        f"VelocityVerlet at 0.5 fs for {args.ps} ps from 300 K (Maxwell-Boltzmann, seeds 0..{args.seeds - 1}); "
        "drift = slope of a linear fit of the total energy per atom; ptp = its peak-to-peak range.",
        "",
        "| system | backend | seed | drift eV/atom/ps | ptp eV/atom |",
        "|---|---|---|---|---|",
    ]
    for system in args.systems:
        for backend in ("numba", "torch"):
            for seed in range(args.seeds):
                d, ptp = drift(args.student, system, backend, seed, args.ps)
                lines.append(f"| {system} | {backend} | {seed} | {d:.2e} | {ptp:.2e} |")
                print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as fh:
        fh.write(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
