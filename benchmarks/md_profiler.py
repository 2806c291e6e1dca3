"""MD profiler: a distilled student against CHGNet and against the Orb-v2 architecture.

Runs ``mlff_distiller.bench.run_bench`` twice in this process, 1 thread, teacher and
student interleaved:

1. student vs **CHGNet** (weights ship in the wheel): speed, accuracy on the held-out set
   (when given) and MD fidelity (NVE drift, stability, RDF overlap) on the small systems;
2. student vs the **Orb-v2 architecture with random weights** (25.2M parameters, 15
   message-passing steps; no pretrained checkpoint can be downloaded here). Random weights
   cost exactly what the trained network costs per call, so the speed ratio is the real
   one; accuracy and MD against a random network mean nothing and are skipped.

Writes ``benchmarks/results/bench_chgnet/``, ``bench_orb_v2_random/`` (``bench.json``,
``bench.md``, plots) and ``bench_summary.md`` (ratios against the product goals: >= 100x
the Orb-v2 architecture and >= 20x CHGNet per MD step), with the machine noted.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/md_profiler.py --student RUN_DIR_OR_PT \\
        [--dataset held_out.h5] [--systems aspirin si-64 si-512] [--quick]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
GOALS = {"chgnet": 20.0, "orb_v2_random": 100.0}


def random_orb_v2_checkpoint(path: str, seed: int = 0) -> str:
    """Write (once) a state dict of the Orb-v2 architecture with seeded random weights."""
    if os.path.exists(path):
        return path
    import torch
    from orb_models.forcefield import pretrained

    torch.manual_seed(seed)
    dtype = torch.get_default_dtype()
    model = pretrained.orb_v2_architecture(device="cpu")
    torch.set_default_dtype(dtype)  # orb may change the global default
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return path


def find_student() -> str | None:
    """The quickstart student if the demo has been run (projects/quickstart/...)."""
    root = os.path.dirname(HERE)
    for pattern in ("projects/quickstart/**/checkpoints/best.pt", "projects/*/**/checkpoints/best.pt"):
        hits = sorted(glob.glob(os.path.join(root, pattern), recursive=True), key=os.path.getmtime)
        if hits:
            return os.path.dirname(os.path.dirname(hits[-1]))
    return None


def summary_markdown(results: dict, out_dir: str = RESULTS) -> str:
    first = next(iter(results.values()))
    m = first["meta"]
    lines = [
        "# MD profiler: student vs CHGNet and vs the Orb-v2 architecture",
        "",
        f"Machine: {m['cpu']} ({m['logical_cpus']} logical CPUs, shared with other jobs), "
        f"{m.get('torch_threads')} thread, torch {m['torch']}, ASE {m['ase']}, Python {m['python']}, {m['date_utc']}.",
        f"Student: `{first['student'].get('path', first['student']['label'])}`"
        + (f" ({first['student']['n_parameters']:,} parameters)." if first["student"].get("n_parameters") else ".")
        + (f" Calculator backend: {first['student']['backend']}." if first["student"].get("backend") else ""),
        *(["How this student was made: `bench_student/README.md`."]
          if os.path.exists(os.path.join(out_dir, "bench_student", "README.md")) else []),
        "The Orb-v2 row uses the exact Orb-v2 architecture (25.2M parameters) with **random weights**: "
        "no pretrained checkpoint is reachable here; random weights cost the same per call, so only "
        "its speed is reported.",
        "Times are medians of interleaved calls in one process; ratio = teacher / student.",
        "",
        "| teacher | system | atoms | teacher ms/step | student ms/step | speed-up per MD step | goal | met |"
        " student ns/day |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, res in results.items():
        t, s = res["teacher"]["label"], res["student"]["label"]
        for name, sysres in res["systems"].items():
            sp = sysres["speed"]
            r = sp["ratio"]["md_step"]
            goal = GOALS[key]
            lines.append(
                f"| {key} | {name} | {sysres['n_atoms']} | {sp[t]['md_step_ms']['median']:.1f} | "
                f"{sp[s]['md_step_ms']['median']:.2f} | {r:.1f}x | {goal:.0f}x | {'yes' if r >= goal else 'no'} | "
                f"{sp[s]['ns_per_day']:.3g} |"
            )
    acc = results.get("chgnet", {}).get("accuracy")
    if acc:
        lines += [
            "",
            f"Accuracy against CHGNet on the held-out set ({acc['n_structures']} structures): energy MAE "
            f"{1000 * acc['energy_mae_per_atom']:.1f} meV/atom, force MAE {1000 * acc['force_mae']:.0f} meV/A, "
            f"force RMSE / teacher RMS {acc['force_rmse_relative']:.3f}, mean force angle "
            f"{acc['force_angle_mean_deg']:.1f} deg (details in bench_chgnet/bench.md).",
        ]
    lines += ["", "Full tables: `bench_chgnet/bench.md`, `bench_orb_v2_random/bench.md`."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", default=None, help="run directory or student file (default: the quickstart run)")
    p.add_argument("--dataset", default=None, help="held-out labelled dataset for the accuracy table")
    p.add_argument("--systems", nargs="+", default=None, help="systems (default aspirin si-64 si-512)")
    p.add_argument("--out", default=RESULTS)
    p.add_argument("--orb-checkpoint", default=os.path.expanduser("~/.cache/mlff-distiller/orb-v2-random-seed0.ckpt"))
    p.add_argument("--quick", action="store_true", help="short MD (drift 1 ps, no RDF): a smoke run")
    p.add_argument("--skip-orb", action="store_true")
    p.add_argument("--skip-chgnet", action="store_true")
    p.add_argument("--orb-systems", nargs="+", default=None, help="systems for the Orb run (default: --systems)")
    p.add_argument("--config", default=None,
                   help="BenchConfig overrides for the CHGNet run: inline JSON or a JSON file")
    p.add_argument("--student-backend", default="auto", choices=["auto", "numba", "torch"],
                   help="student calculator backend (default auto: the numba kernel on the CPU)")
    p.add_argument("--rerender", action="store_true",
                   help="only rewrite bench.md files and the summary from the existing bench.json files")
    args = p.parse_args(argv)
    if args.rerender:
        from mlff_distiller.bench.report import markdown

        for sub in ("bench_chgnet", "bench_orb_v2_random"):
            path = os.path.join(args.out, sub, "bench.json")
            if os.path.exists(path):
                with open(path) as fh:
                    data = json.load(fh)
                with open(os.path.join(args.out, sub, "bench.md"), "w") as fh:
                    fh.write(markdown(data))
        args.skip_chgnet = args.skip_orb = True

    from mlff_distiller.bench import run_bench

    student = args.student or find_student()
    if student is None and not (args.skip_chgnet and args.skip_orb):
        print("no student given and no quickstart run found: run `make demo` or pass --student", file=sys.stderr)
        return 2
    cfg = {
        "drift_ps": 10.0,
        "stability_ps": 1.0,
        "rdf_ps": 1.0,
        "timestep_fs": 0.5,
        "student_backend": args.student_backend,
    }
    if args.quick:
        cfg.update(drift_ps=1.0, stability_ps=0.25, rdf=False)
    if args.config:  # inline JSON or a JSON file
        if args.config.lstrip().startswith("{"):
            cfg.update(json.loads(args.config))
        elif not os.path.isfile(args.config):
            p.error(f"--config {args.config!r} is neither inline JSON nor a file; give e.g. '{{\"md\": false}}'")
        else:
            with open(args.config) as fh:
                cfg.update(json.load(fh))
    results = {}
    if not args.skip_chgnet:
        results["chgnet"] = run_bench(
            student, "chgnet", systems=args.systems, dataset=args.dataset,
            out_dir=os.path.join(args.out, "bench_chgnet"), threads=1, config=cfg,
        )
    if not args.skip_orb:
        ckpt = random_orb_v2_checkpoint(args.orb_checkpoint)
        results["orb_v2_random"] = run_bench(
            student,
            {"name": "orb", "model": "orb-v2", "weights_path": ckpt},
            systems=args.orb_systems or args.systems,
            out_dir=os.path.join(args.out, "bench_orb_v2_random"),
            threads=1,
            config={
                "md": False,
                **{
                    k: cfg[k]
                    for k in ("timestep_fs", "n_rounds", "n_calls", "n_md_steps", "student_backend")
                    if k in cfg
                },
            },
        )
    # the two runs may come from separate processes (run concurrently with --skip-*): read both back
    for key, sub in (("chgnet", "bench_chgnet"), ("orb_v2_random", "bench_orb_v2_random")):
        path = os.path.join(args.out, sub, "bench.json")
        if key not in results and os.path.exists(path):
            with open(path) as fh:
                results[key] = json.load(fh)
    results = {k: results[k] for k in ("chgnet", "orb_v2_random") if k in results}
    if not results:
        print("nothing to summarise", file=sys.stderr)
        return 2
    text = summary_markdown(results, args.out)
    with open(os.path.join(args.out, "bench_summary.md"), "w") as fh:
        fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
