"""The project summary of ``mlff-distill run``: ``summary.md`` and ``summary.json``.

The bench's headline numbers (:func:`bench_summary`) are what the ``bench`` stage records in
``project.json``; the summary repeats them, with the tiers, the training and the active
rounds. Units are ASE's (eV, Angstrom; the summary shows meV/atom and meV/A where it says so).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..recipe import Recipe


def bench_summary(res: dict) -> dict:
    """Headline numbers of a bench result (the full result is ``bench/bench.json``)."""
    res = json.loads(json.dumps(res, default=str))
    acc = res.get("accuracy") or {}
    pooled = (res.get("heldout") or {}).get("pooled") or {}
    out = {
        "accuracy": {
            k: acc.get(k)
            for k in ("n_structures", "energy_mae_per_atom", "force_mae", "force_rmse_relative", "force_angle_mean_deg")
        },
        "heldout": {k: v for k, v in pooled.items()} if pooled else None,
        "verdict": res.get("verdict"),
        "flags": _bench_flags(res),
        "systems": {},
    }
    for name, sysres in (res.get("systems") or {}).items():
        speed = sysres.get("speed") or {}
        entry = {"n_atoms": sysres.get("n_atoms"), "ratio": speed.get("ratio")}
        student = speed.get("student") or {}
        entry["student_md_step_ms"] = (student.get("md_step_ms") or {}).get("median")
        nve = ((sysres.get("md") or {}).get("nve") or {}).get("student") or {}
        if nve:
            entry["nve_drift_ev_per_atom_per_ps"] = nve.get("drift_ev_per_atom_per_ps")
            entry["nve_status"] = nve.get("status") + (", FLAGGED" if nve.get("flagged") else "")
        out["systems"][name] = entry
    return out


def _bench_flags(res: dict) -> list[str]:
    """Every warning the bench raised, one line each: flagged NVE runs, unstable Langevin
    runs, held-out teacher MD that did not finish. The summary repeats all of them."""
    flags = []
    for name, sysres in (res.get("systems") or {}).items():
        md = sysres.get("md") or {}
        for label, nve in (md.get("nve") or {}).items():
            if nve.get("flagged"):
                flags.append(f"{name} NVE ({label}): " + "; ".join(nve.get("flags") or ["flagged"]))
        for label, reps in (md.get("stability") or {}).items():
            for rep in reps:
                if not rep.get("stable"):
                    flags.append(
                        f"{name} Langevin {rep.get('temperature_K', '?'):g} K ({label}): UNSTABLE, {rep.get('reason')}"
                    )
    for key, run in ((res.get("heldout") or {}).get("runs") or {}).items():
        md = run.get("teacher_md") or {}
        if md and not md.get("stable", True):
            flags.append(f"held-out teacher MD {key}: {md.get('status')}, {md.get('reason')}")
    return flags


def write_summary(project, recipe: Recipe, teacher, tiers: list, bench_info: dict, report_info: dict,
                  run_dir: Path) -> Path:
    """Write ``summary.md`` and ``summary.json`` in the project directory; return the first."""
    out = project.root
    stages = project.data["stages"]
    if bench_info and "meta" in bench_info:  # a full bench result: keep the headline numbers
        bench_info = bench_summary(bench_info)
    lines = _head_lines(recipe, teacher, bench_info)
    lines += _tier_lines(stages, tiers) + _training_lines(stages) + _active_lines(out)
    if bench_info:
        lines += _bench_lines(bench_info)
    if report_info:
        lines.append(f"- report: `{report_info.get('html')}`; dataset card: `{report_info.get('card')}`")
    lines.append(f"- student run directory: `{run_dir}`; TorchScript: `{out / 'student.pt'}`")
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(
        json.dumps({"stages": stages, "bench": bench_info, "report": report_info}, indent=2, default=str)
    )
    return path


def _head_lines(recipe: Recipe, teacher, bench_info: dict) -> list[str]:
    from ..bench.targets import verdict_line

    lines = [f"# mlff-distill project: {recipe.name}", ""]
    verdict = verdict_line((bench_info or {}).get("verdict"))
    if verdict:
        lines += [f"**Accuracy gate {verdict}**", ""]
    elif bench_info:
        lines += ["**Accuracy gate: none set** (add `bench: {targets: ...}` to the recipe to get a GO/NO-GO)", ""]
    lines.append(f"- teacher: `{teacher.name}` ({teacher.fingerprint_id})")
    return lines


def _tier_lines(stages: dict, tiers: list) -> list[str]:
    lines = []
    for t in tiers:
        tname = t or "all"
        lab = stages.get(f"label:{tname}", {}).get("info", {})
        gate = stages.get(f"gate:{tname}", {})
        lines.append(
            # n_dataset / n_failures are the file's totals; labelled / failed count only the
            # last (possibly resumed) labelling call
            f"- tier `{tname}`: labelled {lab.get('n_dataset', lab.get('labelled', '?'))}, "
            f"failed {lab.get('n_failures', lab.get('failed', '?'))}; "
            f"gate: {'GO' if gate.get('status') == 'done' else gate.get('status', '?')}"
        )
    return lines


def _training_lines(stages: dict) -> list[str]:
    train = stages.get("train", {}).get("info", {})
    val = train.get("val") or {}
    if not val:
        return []
    return [
        f"- student validation (best epoch {train.get('best_epoch')} of {train.get('epochs')}): "
        + ", ".join(
            f"{k} = {fmt(val[k])}" for k in ("energy_mae_per_atom", "force_mae", "force_rmse", "force_rel_rmse")
            if k in val
        )
        + " (eV/atom, eV/A)"
    ]


def _active_lines(out: Path) -> list[str]:
    rounds_json = out / "active" / "rounds.json"
    if not rounds_json.is_file():
        return []
    rounds = json.loads(rounds_json.read_text())
    recs = rounds.get("rounds") or []
    if not recs:
        return []
    last = recs[-1]
    lines = [
        f"- active learning: {len(recs)} round(s), {last.get('teacher_calls_total')} teacher calls "
        f"(after {rounds.get('initial_teacher_calls')} in the initial dataset), stopped: "
        f"{last.get('stop') or 'not yet'}; rounds table `active/rounds.md`"
    ]
    final = rounds.get("final")
    if final:
        lines.append(
            f"- final student: trained from scratch on the grown dataset (`active/final/train`), held-out force MAE "
            f"{1000 * final['heldout_after']['force_mae']:.0f} meV/A (last round's warm start: "
            f"{1000 * final['heldout_before']['force_mae']:.0f} meV/A)"
        )
    return lines


def _bench_lines(bench_info: dict) -> list[str]:
    lines = []
    acc = bench_info.get("accuracy") or {}
    if acc.get("n_structures"):
        lines.append(
            f"- student vs teacher on {acc['n_structures']} held-out structures: energy MAE "
            f"{1000 * acc['energy_mae_per_atom']:.1f} meV/atom, force MAE {1000 * acc['force_mae']:.0f} meV/A, "
            f"force RMSE / teacher RMS {acc['force_rmse_relative']:.3f}, mean force angle "
            f"{acc['force_angle_mean_deg']:.1f} deg"
        )
    ho = bench_info.get("heldout") or {}
    if ho.get("n_frames"):
        lines.append(
            f"- student vs teacher on {ho['n_frames']} frames of the teacher's own MD ({ho['n_runs']} runs, "
            f"held out): energy MAE {1000 * ho['energy_mae_per_atom']:.1f} meV/atom (absolute; offset "
            f"{1000 * ho['energy_offset_per_atom']:+.1f}, centered "
            f"{1000 * ho['energy_mae_centered_per_atom']:.1f}), "
            f"force RMSE / teacher RMS {ho['force_rel_rmse']:.3f} "
            f"[{ho['force_rel_rmse_ci95'][0]:.3f}, {ho['force_rel_rmse_ci95'][1]:.3f}]"
        )
    for name, e in (bench_info.get("systems") or {}).items():
        r = e.get("ratio") or {}
        drift = e.get("nve_drift_ev_per_atom_per_ps")
        lines.append(
            f"- {name} ({e.get('n_atoms')} atoms): student {fmt(e.get('student_md_step_ms'))} ms per MD step, "
            f"speed-up vs teacher {fmt(r.get('md_step'))}x per MD step, {fmt(r.get('force_call'))}x per "
            "force call"
            + (f"; NVE drift {drift:.2e} eV/atom/ps ({e.get('nve_status')})" if drift is not None else "")
        )
    for flag in bench_info.get("flags") or []:
        lines.append(f"- FLAG: {flag}")
    lines.append("- full bench tables and plots: `bench/bench.md`")
    return lines


def fmt(v) -> str:
    """A number for the summary: floats to 4 significant digits."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)
