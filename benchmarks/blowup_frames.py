"""What a student did before its MD blew up: its last frames, scored by the teacher.

Replays one Langevin run of ``benchmarks/md_stability.py`` (same system, temperature, seed,
time step and friction: the run is deterministic) with a snapshot every ``--every`` steps, and
for the last ``--last`` snapshots before the run ended compares the student with the teacher:
energy per atom (student - teacher), the largest force of each, the largest per-atom force
error, the closest pair, and the distances from the worst atom to its nearest neighbours. A
student that slides into a basin its teacher does not have shows a growing negative energy
difference before the forces go wrong.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/blowup_frames.py STUDENT --system si-64
--temperature 1800 --seed 0 --teacher chgnet --out benchmarks/results/NAME`` (writes NAME.md and
NAME.json). Units: eV, eV/atom, eV/A, A, K, fs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform

from _results import save  # noqa: E402  (benchmarks/_results.py)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("student", help="checkpoint or run directory")
    ap.add_argument("--system", required=True, help="bench system name (e.g. si-64)")
    ap.add_argument("--temperature", type=float, required=True, help="K")
    ap.add_argument("--seed", type=int, default=0, help="the md_stability seed of the run")
    ap.add_argument("--timestep", type=float, default=1.0, help="fs")
    ap.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    ap.add_argument("--ps", type=float, default=100.0, help="longest run, ps")
    ap.add_argument("--max-wall", type=float, default=3600.0, help="wall-clock cap, s")
    ap.add_argument("--every", type=int, default=10, help="steps between snapshots")
    ap.add_argument("--last", type=int, default=20, help="snapshots scored at the end of the run")
    ap.add_argument("--teacher", default="chgnet", help="teacher name or spec")
    ap.add_argument("--out", required=True, help="output path without suffix (.md and .json are written)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from ase.neighborlist import neighbor_list

    from mlff_distiller.bench.md import langevin_run
    from mlff_distiller.bench.systems import load_system
    from mlff_distiller.student import StudentCalculator
    from mlff_distiller.teachers import build_teacher

    torch.set_num_threads(1)
    student = StudentCalculator(args.student)
    atoms = load_system(args.system).atoms
    n_steps = int(round(args.ps * 1000.0 / args.timestep))
    report, frames = langevin_run(student, atoms, args.temperature, timestep_fs=args.timestep, n_steps=n_steps,
                                  friction_per_fs=args.friction, seed=args.seed, max_wall_s=args.max_wall,
                                  sample_every=args.every, equilibrate_fraction=0.0)
    teacher = build_teacher(args.teacher).calculator()
    rows = []
    first = max(0, len(frames) - args.last)
    for k in range(first, len(frames)):
        frame = frames[k]
        n = len(frame)
        a = frame.copy()
        a.calc = student
        f_s, e_s = a.get_forces().copy(), a.get_potential_energy()
        b = frame.copy()
        b.calc = teacher
        f_t, e_t = b.get_forces().copy(), b.get_potential_energy()
        err = np.linalg.norm(f_s - f_t, axis=1)
        worst = int(np.argmax(err))
        i, d = neighbor_list("id", frame, 3.5)
        rows.append({
            "step": (k + 1) * args.every,
            "energy_diff_mev_per_atom": 1000.0 * (e_s - e_t) / n,
            "max_force_student": float(np.linalg.norm(f_s, axis=1).max()),
            "max_force_teacher": float(np.linalg.norm(f_t, axis=1).max()),
            "max_force_error": float(err[worst]),
            "closest_pair_A": float(d.min()) if len(d) else float("nan"),
            "worst_atom_neighbours_A": [round(float(x), 3) for x in np.sort(d[i == worst])[:6]],
        })
    result = {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, 1 thread",
        "student": str(args.student), "teacher": args.teacher, "system": args.system,
        "temperature_K": args.temperature, "seed": args.seed, "timestep_fs": args.timestep,
        "friction_per_fs": args.friction, "every": args.every, "run": report, "frames": rows,
    }
    save(args.out, result, markdown(result), echo=True)
    return 0


def markdown(res: dict) -> str:
    run = res["run"]
    lines = [
        "# The last frames of a student's MD, scored by the teacher",
        "",
        f"{res['machine']}, {res['date_utc']} UTC. Student `{res['student']}`, teacher `{res['teacher']}`; "
        f"Langevin {res['system']} at {res['temperature_K']:g} K, seed {res['seed']}, "
        f"{res['timestep_fs']:g} fs, friction {res['friction_per_fs']:g} /fs, a snapshot every {res['every']} steps.",
        "",
        f"Run: {run['status']} after {run['n_steps']} steps ({run['simulated_ps']:.2f} ps)"
        + (f"; {run['reason']}" if run["reason"] else "") + ".",
        "",
        "| step | E student - teacher (meV/atom) | max force student (eV/A) | max force teacher | "
        "max force error | closest pair (A) | worst atom's nearest neighbours (A) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["frames"]:
        nb = ", ".join(f"{x:.2f}" for x in r["worst_atom_neighbours_A"])
        lines.append(f"| {r['step']} | {r['energy_diff_mev_per_atom']:+.1f} | {r['max_force_student']:.2f} | "
                     f"{r['max_force_teacher']:.2f} | {r['max_force_error']:.2f} | {r['closest_pair_A']:.2f} | {nb} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
