"""CHGNet labels from one backward pass against chgnet's own ``predict_graph``, side by side.

The CHGNet teacher (``mlff_distiller.teachers.chgnet_teacher``) takes energy, forces and
stress from one ``autograd.grad`` call without a graph of the gradients; chgnet's
``predict_graph`` makes two (forces, then stress), each with ``create_graph=True``. For every
bench system this script converts the structure to a CHGNet graph once, then times both calls
on it, interleaved (``--rounds`` rounds of ``--calls`` calls each, after one warm-up call of
each), and reports the median ms per call, their ratio and the largest difference of the
results (forces eV/A, stress GPa, energy eV/atom). Graph conversion is not timed: it is the
same for both.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/chgnet_one_backward.py`` (writes
``benchmarks/results/chgnet_one_backward.md`` and ``.json``). Units: ms, eV, eV/A, GPa.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
import warnings

import numpy as np
from _results import save  # noqa: E402  (benchmarks/_results.py)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", nargs="+", default=["aspirin", "si-64", "water-96", "water-slab", "si-512"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "chgnet_one_backward"))
    args = ap.parse_args(argv)

    import torch

    from mlff_distiller.bench.systems import load_system
    from mlff_distiller.teachers import build_teacher
    from mlff_distiller.teachers.base import package_version
    from mlff_distiller.teachers.chgnet_teacher import _energy_forces_stress

    teacher = build_teacher("chgnet")
    model = teacher._model

    def two_passes(graph):
        return model.predict_graph(graph, task="efs")

    def one_pass(graph):
        return _energy_forces_stress(model, [graph])[0]

    rows = []
    warnings.simplefilter("ignore", UserWarning)  # chgnet's "tensor with requires_grad to scalar"
    for name in args.systems:
        atoms = load_system(name).atoms.copy()
        atoms.rattle(0.03, seed=1)
        graph = teacher._graph(atoms)
        ref, new = two_passes(graph), one_pass(graph)
        times = {"predict_graph": [], "one_backward": []}
        for _ in range(args.rounds):
            for label, fn in (("predict_graph", two_passes), ("one_backward", one_pass)):
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    fn(graph)
                times[label].append(1000.0 * (time.perf_counter() - t0) / args.calls)
        med = {k: float(np.median(v)) for k, v in times.items()}
        rows.append({
            "system": name, "n_atoms": len(atoms), "ms": med, "rounds_ms": times,
            "ratio": med["predict_graph"] / med["one_backward"],
            "max_abs_diff": {"energy_eV_per_atom": float(abs(float(ref["e"]) - float(new["e"]))),
                             "forces_eV_per_A": float(np.abs(ref["f"] - new["f"]).max()),
                             "stress_GPa": float(np.abs(ref["s"] - new["s"]).max())},
            "max_abs_force_eV_per_A": float(np.abs(ref["f"]).max()),
        })
        print(f"{name}: {med['predict_graph']:.0f} ms -> {med['one_backward']:.0f} ms ({rows[-1]['ratio']:.2f}x)",
              flush=True)

    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "chgnet": package_version("chgnet"),
            "threads": torch.get_num_threads(), "when": when, "load_average_at_end": load}
    lines = [
        "# CHGNet labels: one backward pass against `predict_graph`",
        "",
        f"Machine: {meta['machine']}, {meta['cpus']} CPUs, {meta['threads']} torch thread(s), Python {meta['python']}, "
        f"torch {meta['torch']}, chgnet {meta['chgnet']} (model 0.3.0); {when}, load average {load:.2f} at the end. "
        f"Median ms per call over {args.rounds} interleaved rounds of {args.calls} calls, graph conversion not "
        "timed. Produced by `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/chgnet_one_backward.py`.",
        "",
        "| system | atoms | predict_graph ms | one backward ms | ratio | max diff forces eV/A (largest force) "
        "| max diff stress GPa | diff energy eV/atom |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["max_abs_diff"]
        ms = r["ms"]
        lines.append(f"| {r['system']} | {r['n_atoms']} | {ms['predict_graph']:.1f} | {ms['one_backward']:.1f} "
                     f"| **{r['ratio']:.2f}x** | {d['forces_eV_per_A']:.1e} ({r['max_abs_force_eV_per_A']:.2f}) "
                     f"| {d['stress_GPa']:.1e} | {d['energy_eV_per_atom']:.1e} |")
    save(args.out, {"meta": meta, "rows": rows}, "\n".join(lines), echo=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
