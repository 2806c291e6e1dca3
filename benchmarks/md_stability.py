"""Do students survive their own MD? Langevin runs of each student, side by side.

For every student, bench system, temperature and seed: a Langevin (NVT) run driven by the
student alone (Numba backend), stopped when two atoms come closer than 0.5 A, the
temperature runs away or the energy is not finite (the bench's own monitor,
``mlff_distiller.bench.md.langevin_run``). Reported: simulated ps before the stop (or the
full length), the stop reason, the closest pair seen, and the mean temperature of the run's
second half. The same seeds are used for every student, so the runs are paired.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/md_stability.py --systems water-96
--temperatures 300 600 --seeds 3 --ps 5 --out benchmarks/results/NAME NAME1=CKPT1 NAME2=CKPT2``
(writes NAME.md and NAME.json). Units: K, fs, ps, A.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform

from _results import save  # noqa: E402  (benchmarks/_results.py)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("students", nargs="+", help="NAME=CHECKPOINT_OR_RUN_DIR")
    ap.add_argument("--systems", nargs="+", required=True, help="bench system names (e.g. water-96)")
    ap.add_argument("--temperatures", nargs="+", type=float, required=True, help="K")
    ap.add_argument("--seeds", type=int, default=3, help="runs per student, system and temperature")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seed of the first run (the runs use first-seed, first-seed + 1, ...)")
    ap.add_argument("--ps", type=float, default=5.0, help="length of each run in ps")
    ap.add_argument("--timestep", type=float, default=0.5, help="fs")
    ap.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    ap.add_argument("--max-wall", type=float, default=1800.0, help="wall-clock cap per run, s")
    ap.add_argument("--out", required=True, help="output path without suffix (.md and .json are written)")
    args = ap.parse_args(argv)

    import torch

    from mlff_distiller.bench.md import langevin_run
    from mlff_distiller.bench.systems import load_system
    from mlff_distiller.student import StudentCalculator

    torch.set_num_threads(1)
    n_steps = int(round(args.ps * 1000.0 / args.timestep))
    result = {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 thread",
        "timestep_fs": args.timestep, "friction_per_fs": args.friction, "requested_ps": args.ps,
        "students": {}, "runs": [],
    }
    for spec in args.students:
        name, _, path = spec.partition("=")
        result["students"][name] = path
        calc = StudentCalculator(path, backend="numba")
        for sys_name in args.systems:
            atoms = load_system(sys_name).atoms
            for temp in args.temperatures:
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    report, _ = langevin_run(
                        calc, atoms, temp, timestep_fs=args.timestep, n_steps=n_steps,
                        friction_per_fs=args.friction, seed=seed, max_wall_s=args.max_wall,
                    )
                    row = {"student": name, "system": sys_name, "temperature_K": temp, "seed": seed, **report}
                    result["runs"].append(row)
                    print(f"{name} {sys_name} {temp:.0f} K seed {seed}: {report['status']} after "
                          f"{report['simulated_ps']:.2f} ps ({report['reason'] or 'full length'}), "
                          f"closest {report['closest_pair_A']}", flush=True)
    save(args.out, result, markdown(result), echo=True, default=float)
    return 0


def markdown(result: dict) -> str:
    lines = [
        "# Student MD stability (Langevin, student alone)",
        "",
        f"{result['machine']}, {result['date_utc']} UTC; timestep {result['timestep_fs']} fs, friction "
        f"{result['friction_per_fs']} /fs, {result['requested_ps']} ps requested per run; a run stops when two "
        "atoms come within 0.5 A, the temperature runs away or the energy is not finite. Same seeds for every "
        "student (paired).",
        "",
        "| student | system | T (K) | runs stable | simulated ps (each run) | closest pair A "
        "| mean T second half (K) |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict = {}
    for row in result["runs"]:
        groups.setdefault((row["student"], row["system"], row["temperature_K"]), []).append(row)
    for (student, system, temp), rows in groups.items():
        stable = sum(r["stable"] for r in rows)
        ps = ", ".join(f"{r['simulated_ps']:.2f}" for r in rows)
        closest = min((r["closest_pair_A"] for r in rows if r["closest_pair_A"] is not None), default=None)
        temps = ", ".join(f"{r['mean_temperature_K']:.0f}" for r in rows)
        closest_s = f"{closest:.2f}" if closest is not None else "-"
        lines.append(f"| {student} | {system} | {temp:.0f} | {stable}/{len(rows)} | {ps} | {closest_s} | {temps} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
