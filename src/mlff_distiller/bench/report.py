"""Bench output: ``bench.json`` (everything), ``bench.md`` (tables), plots (PNG).

Plots: ``parity.png`` (energy per atom and force components, student against teacher
labels), ``drift_<system>.png`` (NVE total energy per atom against time),
``rdf_<system>.png`` (student MD against teacher MD).
"""

from __future__ import annotations

import json
import math
import os
import platform
from datetime import datetime, timezone

import numpy as np

from ..fileio import atomic_write_text


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(threads: dict | None = None) -> dict:
    """CPU model, core count, library versions and the UTC date, for every result file."""
    cpu = cpu_model()
    import ase
    import torch

    from .. import __version__

    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ase": ase.__version__,
        "mlff_distiller": __version__,
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        info["load_average_1min"] = round(os.getloadavg()[0], 2)  # others' work on a shared machine
    except OSError:
        pass
    if threads:
        info.update(threads)
    return info


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (frozenset, set)):
        return sorted(_jsonable(v) for v in obj)
    return obj


_atomic_write = atomic_write_text  # one implementation: mlff_distiller.fileio


def _f(x, fmt=None):
    """Numbers for tables: ``fmt`` if given, else 3 significant digits without exponents
    for 0.01 <= |x| < 1e6 (``1361``, ``68.0``, ``0.433``)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if fmt is not None:
        return fmt.format(x)
    ax = abs(x)
    if ax == 0:
        return "0"
    if 0.01 <= ax < 1e6:
        digits = max(0, 2 - int(math.floor(math.log10(ax))))
        return f"{x:.{digits}f}"
    return f"{x:.2e}"


def markdown(result: dict) -> str:
    """The human-readable tables of a bench result."""
    lines = _header_lines(result)
    lines += _speed_lines(result)
    lines += _accuracy_lines(result.get("accuracy"))
    lines += _heldout_lines(result.get("heldout"))
    lines += _md_lines(result)
    skipped = result.get("skipped", {})
    if skipped:
        lines += ["", "## Skipped", ""] + [f"- {k}: {v}" for k, v in skipped.items()]
    return "\n".join(lines) + "\n"


def _header_lines(result: dict) -> list[str]:
    """Title, accuracy verdict, machine and timing conventions, partial-result flag, notes."""
    from .targets import verdict_line

    m = result["meta"]
    s_lab, t_lab = result["student"]["label"], result["teacher"]["label"]
    lines = [
        f"# Bench: {s_lab} vs teacher ({t_lab})",
        "",
    ]
    verdict = verdict_line(result.get("verdict"))
    if verdict:
        lines += [f"**Accuracy gate: {verdict}**", ""]
    lines += [
        f"Machine: {m['cpu']}, {m.get('torch_threads', '?')} thread(s), torch {m['torch']}, "
        f"ASE {m['ase']}, Python {m['python']}, {m['date_utc']}"
        + (f", load average {m['load_average_1min']} at the start." if m.get("load_average_1min") is not None else "."),
        f"Timestep {result['config']['timestep_fs']} fs. Times are medians of interleaved calls "
        "(ms); ratio = teacher / student."
        + (f" Student calculator backend: {result['student']['backend']}." if result["student"].get("backend") else ""),
        "",
    ]
    if result.get("complete") is False:
        lines += [
            "**Partial result**: the bench was interrupted or is still running; missing rows were not measured.",
            "",
        ]
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    if result.get("notes"):
        lines.append("")
    return lines


def _memory_cell(m: dict | None) -> str:
    """``model MB + calls MB`` of a speed measurement's memory record, ``-`` without one."""
    if not m or "rss_peak_increase_mb" not in m:
        return "-"
    calls = f"{m['rss_peak_increase_mb']:.0f}"
    return f"{m['rss_model_mb']:.0f} + {calls}" if "rss_model_mb" in m else f"? + {calls}"


def _speed_lines(result: dict) -> list[str]:
    """The speed table: force call and MD step times of both models, ratios, ns/day, memory."""
    s_lab, t_lab = result["student"]["label"], result["teacher"]["label"]
    lines = [
        "## Speed",
        "",
        "| system | atoms | teacher ms/call | student ms/call | ratio | teacher ms/step | student ms/step "
        "| ratio | student ns/day | teacher ns/day | student MB (model + calls) | teacher MB (model + calls) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, sysres in result["systems"].items():
        sp = sysres.get("speed")
        if not sp:
            continue
        t, s, r = sp[t_lab], sp[s_lab], sp["ratio"]
        mem_s, mem_t = _memory_cell(s.get("memory")), _memory_cell(t.get("memory"))
        lines.append(
            f"| {name} | {sysres['n_atoms']} | {_f(t['force_call_ms']['median'])} | {_f(s['force_call_ms']['median'])} "
            f"| **{_f(r['force_call'], '{:.1f}')}x** | {_f(t['md_step_ms']['median'])} | "
            f"{_f(s['md_step_ms']['median'])} "
            f"| **{_f(r['md_step'], '{:.1f}')}x** | {_f(s['ns_per_day'])} | {_f(t['ns_per_day'])} "
            f"| {mem_s} | {mem_t} |"
        )
    return lines


def _accuracy_lines(acc: dict | None) -> list[str]:
    """The held-out accuracy table: all, then per element, structure type and sampler."""
    if not acc:
        return []
    lines = [
        "",
        f"## Accuracy on the held-out set ({acc['n_structures']} structures, {acc['n_atoms']} atoms)",
        "",
        "| group | structures | atoms | energy MAE meV/atom | force MAE meV/A | force RMSE / teacher RMS "
        "| mean force angle (deg) |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(label, b):
        e = b.get("energy_mae_per_atom")
        e = None if e is None else 1000 * e
        lines.append(
            f"| {label} | {b.get('n_structures', '-')} | {b['n_atoms']} | {_f(e)} | "
            f"{_f(1000 * b['force_mae'] if b['force_mae'] is not None else None)} "
            f"| {_f(b['force_rmse_relative'])} | {_f(b['force_angle_mean_deg'], '{:.1f}')} |"
        )

    row("**all**", acc)
    for el, b in acc["per_element"].items():
        row(f"element {el}", b)
    for ty, b in acc["per_type"].items():
        row(f"type {ty}", b)
    for sa, b in acc.get("per_sampler", {}).items():
        row(f"sampler {sa}", b)
    return lines


def _md_lines(result: dict) -> list[str]:
    """The MD fidelity table: NVE drift and status, stability per temperature, RDF overlap."""
    md_rows = [(n, r["md"]) for n, r in result["systems"].items() if r.get("md")]
    if not md_rows:
        return []
    s_lab, t_lab = result["student"]["label"], result["teacher"]["label"]
    lines = [
        "",
        "## MD fidelity",
        "",
        "| system | model | NVE drift eV/atom/ps | max excursion eV/atom | simulated ps | NVE status "
        "| stability | RDF overlap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, md in md_rows:
        overlap = md.get("rdf", {}).get("overlap")
        for label in (s_lab, t_lab):
            nve = md.get("nve", {}).get(label)
            stab = md.get("stability", {}).get(label, [])
            if not stab and (md.get("rdf") or {}).get("runs", {}).get(label):
                stab = [md["rdf"]["runs"][label]]  # the teacher's 300 K RDF run
            if nve is None and not stab:
                continue
            lines.append(
                f"| {name} | {label} | {_nve_cells(nve)} | {_stability_cell(stab)} "
                f"| {_f(overlap, '{:.3f}') if label == s_lab else ''} |"
            )
    sources = [f"{name}: {md['rdf']['teacher_source']}" for name, md in md_rows
               if (md.get("rdf") or {}).get("teacher_source")]
    if sources:
        lines += ["", f"The teacher's RDF is that of its held-out MD frames ({'; '.join(sources)})."]
    return lines


def _stability_cell(stab: list[dict]) -> str:
    """``300 K ok, 600 K UNSTABLE (reason)`` of a model's stability runs, ``-`` without any."""
    return (
        ", ".join(
            f"{int(x['temperature_K'])} K {'ok' if x['stable'] else 'UNSTABLE (' + x['reason'] + ')'}"
            + (f" ({x['simulated_ps']:.3g} ps: wall-clock budget)" if x.get("status") == "time_limit" else "")
            for x in stab
        )
        or "-"
    )


def _nve_cells(nve: dict | None) -> str:
    """The four NVE cells (drift, excursion, simulated ps, status with flags) of one model."""
    if not nve:
        return "- | - | - | -"
    status = nve["status"] + (" FLAGGED: " + "; ".join(nve["flags"]) if nve["flagged"] else "")
    return (
        f"{_f(nve['drift_ev_per_atom_per_ps'], '{:.2e}')} | "
        f"{_f(nve['excursion_ev_per_atom'], '{:.2e}')} "
        f"| {_f(nve['simulated_ps'])} | {status}"
    )


def _heldout_lines(heldout: dict | None) -> list[str]:
    """Table of the held-out teacher-MD runs: absolute and centered energy errors, offsets,
    relative force error, each pooled row with its bootstrap 95 % interval."""
    if not heldout or not heldout.get("runs"):
        return []

    def ci(b, key, scale=1.0, fmt="{:.3g}"):
        lo, hi = b.get(key + "_ci95") or (None, None)
        v = fmt.format(scale * b[key]) if b.get(key) is not None else "-"
        return v if lo is None else f"{v} [{fmt.format(scale * lo)}, {fmt.format(scale * hi)}]"

    lines = [
        "",
        "## Accuracy on the teacher's own MD (held-out; 95 % bootstrap intervals)",
        "",
        "| run | frames | energy MAE meV/atom (absolute) | offset meV/atom | centered MAE meV/atom "
        "| force RMSE / teacher RMS | teacher MD |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(label, b, md=""):
        if not b.get("n_frames"):
            lines.append(f"| {label} | 0 | - | - | - | - | {md} |")
            return
        lines.append(
            f"| {label} | {b['n_frames']} | {ci(b, 'energy_mae_per_atom', 1000)} | "
            f"{ci(b, 'energy_offset_per_atom', 1000)} "
            f"| {ci(b, 'energy_mae_centered_per_atom', 1000)} | {ci(b, 'force_rel_rmse')} | {md} |"
        )

    row("**pooled**", heldout.get("pooled") or {})
    for name, b in heldout["runs"].items():
        rep = b.get("teacher_md") or {}
        row(name, b, f"{rep.get('status', '?')}, mean {_f(rep.get('mean_temperature_K'), '{:.0f}')} K")
    return lines


def _plots(result: dict, out_dir: str, parity: dict | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    s_lab, t_lab = result["student"]["label"], result["teacher"]["label"]
    if parity is not None:
        fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
        for ax, key, unit in ((axes[0], "energy", "eV/atom"), (axes[1], "forces", "eV/A")):
            ref, pred = np.asarray(parity[f"{key}_ref"]), np.asarray(parity[f"{key}_pred"])
            if len(ref) > 20000:  # keep the PNG light
                idx = np.random.default_rng(0).choice(len(ref), 20000, replace=False)
                ref, pred = ref[idx], pred[idx]
            ax.scatter(ref, pred, s=3, alpha=0.4)
            if len(ref):
                lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
                ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_xlabel(f"teacher {key} ({unit})")
            ax.set_ylabel(f"student {key} ({unit})")
        fig.tight_layout()
        path = os.path.join(out_dir, "parity.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    for name, sysres in result["systems"].items():
        md = sysres.get("md") or {}
        nve = md.get("nve") or {}
        if nve:
            fig, ax = plt.subplots(figsize=(6, 3.6))
            for label, run in nve.items():
                tr = run["trace"]
                e = np.asarray(tr["etot_ev_per_atom"], float)
                if len(e):
                    ax.plot(tr["t_ps"], (e - e[0]) * 1000, label=f"{label} ({run['status']})")
            ax.set_xlabel("time (ps)")
            ax.set_ylabel("E_total - E_total(0) (meV/atom)")
            ax.set_title(f"NVE drift, {name}")
            ax.legend()
            fig.tight_layout()
            path = os.path.join(out_dir, f"drift_{name}.png")
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
        rdf = md.get("rdf") or {}
        if rdf.get(s_lab) and rdf.get(t_lab):
            fig, ax = plt.subplots(figsize=(6, 3.6))
            for label in (t_lab, s_lab):
                ax.plot(rdf[label]["r"], rdf[label]["g"], label=label)
            ax.set_xlabel("r (A)")
            ax.set_ylabel("g(r)" if rdf[s_lab]["periodic"] else "pair-distance density (1/A)")
            ax.set_title(f"{name}: overlap {rdf['overlap']:.3f}")
            ax.legend()
            fig.tight_layout()
            path = os.path.join(out_dir, f"rdf_{name}.png")
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written


def write_outputs(result: dict, out_dir: str, parity: dict | None = None, plots: bool = True) -> dict:
    """Write ``bench.json``, ``bench.md`` and the plots into ``out_dir``; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "bench.json"), "markdown": os.path.join(out_dir, "bench.md")}
    _atomic_write(paths["json"], json.dumps(_jsonable(result), indent=1) + "\n")
    _atomic_write(paths["markdown"], markdown(result))
    if plots:
        paths["plots"] = _plots(result, out_dir, parity)
    return paths
