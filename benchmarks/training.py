"""Training throughput of ``DistillationTrainer`` against the bare optimisation step.

For each student preset, side by side in one run (1 thread):

* ``bare step``: one optimizer step on a pre-collated batch -- forward with autograd forces
  (and stress), weighted loss, backward, AdamW -- with nothing else around it;
* ``trainer step``: the wall time between consecutive optimizer steps inside
  ``DistillationTrainer.fit()`` (DataLoader + collate, label counts, gradient clipping,
  EMA update, progress bookkeeping, periodic checkpoints);
* the ratio of the two (timed in alternating rounds, so load drift on a shared machine
  leaks into it), and the in-situ share of each trainer step spent outside forward /
  backward / AdamW (measured inside the same step, so immune to drift);
* the one-off set-up cost per structure (read from HDF5 + vesin neighbour list).

Data: rattled, strained Cu fcc 2x2x2 cubic supercells (32 atoms, periodic) labelled with
ASE EMT (energy, forces, stress), cached under ``/tmp/mlffd_bench`` (not in git).
Writes ``benchmarks/results/training.md`` and ``.json``.
Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/training.py [--presets tiny small] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import save  # noqa: E402  (benchmarks/_results.py)

CACHE = Path(os.environ.get("MLFFD_BENCH_CACHE", "/tmp/mlffd_bench"))
RESULTS = Path(__file__).resolve().parent / "results"
N_STRUCTURES = 48
BATCH = 8
CUTOFF = 5.0


def make_dataset(path: Path, n: int, seed: int = 0) -> Path:
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlff_distiller.data.store import DatasetWriter

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    atoms_list = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        a.set_cell(a.cell * (1 + rng.normal(0, 0.015)), scale_atoms=True)
        a.positions += rng.normal(0, 0.1, a.positions.shape)
        a.calc = EMT()
        res = {"energy": a.get_potential_energy(), "forces": a.get_forces(), "stress": a.get_stress()}
        a.calc = SinglePointCalculator(a, **res)
        a.info["provenance"] = {"source": "bulk:Cu-fcc", "sampler": "rattle", "params": {"stdev": 0.1},
                                "parent": -1, "group": f"g{k // 4}", "seed": seed, "teacher": "emt"}
        atoms_list.append(a)
    tmp = path.with_name(path.name + ".partial.h5")
    with DatasetWriter(tmp, label_fields=("energy", "forces", "stress"), mode="w") as w:
        w.append(atoms_list)
    os.replace(tmp, path)
    return path


def bare_steps(dataset: Path, preset: str, n_steps: int) -> list[float]:
    """Seconds per optimizer step on pre-collated batches, nothing else in the loop."""
    import torch

    from mlff_distiller.data.graph import atoms_to_graph, collate
    from mlff_distiller.data.store import DatasetReader
    from mlff_distiller.student import StudentConfig, build_student
    from mlff_distiller.training.data import training_statistics
    from mlff_distiller.training.loss import distillation_loss, label_counts

    with DatasetReader(dataset) as r:
        graphs = [atoms_to_graph(r.get_atoms(i), CUTOFF) for i in range(len(r))]
    scfg = StudentConfig(preset=preset, cutoff=CUTOFF, elements=[29])
    stats = training_statistics(graphs, CUTOFF, [29])
    torch.manual_seed(0)
    model = build_student(scfg, stats).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = [collate(graphs[k : k + BATCH]) for k in range(0, len(graphs) - BATCH + 1, BATCH)]
    weights = (1.0, 10.0, 0.1)
    times = []
    for s in range(n_steps + 1):
        batch = batches[s % len(batches)]
        t0 = time.perf_counter()
        out = model(batch, compute_forces=True, compute_stress=True)
        loss = distillation_loss(out, batch, weights, label_counts(batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if s:  # the first step warms up allocators
            times.append(time.perf_counter() - t0)
    return times


def trainer_steps(dataset: Path, preset: str, n_steps: int) -> tuple[list[float], list[float], float]:
    """Seconds between consecutive optimizer steps inside fit(), the share of each spent
    outside the model's forward/backward/AdamW, and set-up seconds per structure."""
    from mlff_distiller.training import DistillationTrainer, TrainConfig

    stamps: list[float] = []
    compute: list[float] = []

    def on_event(trainer, event, info):
        if event == "step":
            stamps.append(time.perf_counter())
            compute.append(info["compute_s"])

    cfg = TrainConfig.from_dict({
        "student": {"preset": preset, "cutoff": CUTOFF}, "batch_size": BATCH, "max_steps": n_steps + 1,
        "max_epochs": 1000, "stress_weight": 0.1, "forces_weight": 10.0, "val_fraction": 0.1,
        "checkpoint_every": 1000, "ema_decay": 0.99, "grad_clip": 10.0, "device": "cpu",
    })
    run = Path(tempfile.mkdtemp(prefix="mlffd-train-bench-")) / "run"
    try:
        t0 = time.perf_counter()
        trainer = DistillationTrainer(dataset, cfg, run, progress=False, callbacks=[on_event])
        trainer.fit()
        n_struct = len(trainer.train_set) + len(trainer.val_set)
        # set-up: everything before the first step minus that step (~ one trainer step)
        first = stamps[0] - t0
        intervals = [b - a for a, b in zip(stamps, stamps[1:])]
        # an interval that spans an epoch end also holds a validation pass: drop those
        steps_per_epoch = -(-len(trainer.train_set) // BATCH)
        keep = [k for k in range(1, len(stamps)) if k % steps_per_epoch]
        intervals = [intervals[k - 1] for k in keep]
        outside = [1.0 - compute[k] / intervals[n] for n, k in enumerate(keep)]
        setup = max(first - statistics.median(intervals), 0.0) / n_struct
        return intervals, outside, setup
    finally:
        shutil.rmtree(run.parent, ignore_errors=True)


def machine() -> dict:
    import torch

    from mlff_distiller.bench.report import cpu_model

    cpu = cpu_model()
    return {
        "cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_1min": round(os.getloadavg()[0], 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per preset")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps timed per round")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    dataset = make_dataset(CACHE / f"train_bench_cu32_{N_STRUCTURES}.h5", N_STRUCTURES)
    results = {"machine": machine(), "batch": BATCH, "atoms_per_structure": 32, "cutoff": CUTOFF, "presets": {}}
    for preset in args.presets:
        bare, trained, outside, setup = [], [], [], []
        for _ in range(args.rounds):  # interleave so that load changes hit both alike
            bare += bare_steps(dataset, preset, args.steps)
            t, o, s = trainer_steps(dataset, preset, args.steps)
            trained += t
            outside += o
            setup.append(s)
        b, t = statistics.median(bare), statistics.median(trained)
        results["presets"][preset] = {
            "bare_step_ms": 1e3 * b, "trainer_step_ms": 1e3 * t, "trainer_over_bare": t / b,
            "loop_overhead_share": statistics.median(outside),
            "structures_per_s": BATCH / t, "atoms_per_s": BATCH * 32 / t,
            "setup_ms_per_structure": 1e3 * statistics.median(setup),
            "n_bare": len(bare), "n_trainer": len(trained),
        }
        r = results["presets"][preset]
        print(f"{preset:6s} bare {r['bare_step_ms']:8.1f} ms  trainer {r['trainer_step_ms']:8.1f} ms  "
              f"ratio {r['trainer_over_bare']:5.2f}  outside model {100 * r['loop_overhead_share']:4.1f}%  "
              f"{r['structures_per_s']:6.1f} struct/s  "
              f"setup {r['setup_ms_per_structure']:.1f} ms/struct", flush=True)

    m = results["machine"]
    lines = [
        "# Training throughput: DistillationTrainer vs the bare optimisation step",
        "",
        f"Machine: {m['cpu']}, {m['threads']} thread, torch {m['torch']}, Python {m['python']}, {m['date']}; "
        f"load average at start {m['load_average_1min']} on {os.cpu_count()} cores (shared).",
        f"Data: {N_STRUCTURES} rattled/strained Cu fcc supercells, 32 atoms, periodic, EMT energy+forces+stress; "
        f"batch {BATCH}; cutoff {CUTOFF} A; float32; loss weights energy 1, forces 10, stress 0.1 "
        "(forces and stress by autograd, so each step is a double backward).",
        "Both columns of a row were timed in alternating rounds in the same run; the machine is shared by "
        "several jobs, so read the ratio, not the absolute times.",
        "",
        "`bare step` = forward + loss + backward + AdamW on pre-collated batches; `trainer step` = time between "
        "optimizer steps inside `fit()` (DataLoader/collate, DDP-ready label counts, gradient clipping, EMA, "
        "bookkeeping), epoch-end intervals (validation) excluded; `outside model` = share of each trainer step spent "
        "outside forward/backward/clipping/AdamW, timed inside that same step; `set-up` = reading + neighbour "
        "list per structure, paid once per run.",
        "",
        "| preset | bare step ms | trainer step ms | trainer / bare | outside model | structures / s | atoms / s "
        "| set-up ms / structure |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for preset, r in results["presets"].items():
        lines.append(
            f"| {preset} | {r['bare_step_ms']:.1f} | {r['trainer_step_ms']:.1f} | {r['trainer_over_bare']:.2f} | "
            f"{100 * r['loop_overhead_share']:.1f}% | "
            f"{r['structures_per_s']:.1f} | {r['atoms_per_s']:.0f} | {r['setup_ms_per_structure']:.1f} |"
        )
    lines += ["", f"Medians over {args.rounds} rounds x {args.steps} steps per preset.", ""]
    save(RESULTS / "training", results, "\n".join(lines), echo=True, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
