"""The accuracy gate: a recipe's ``bench.targets`` checked against a bench result.

Targets (each optional; a target is met when the measured value is at or below it):

==============================  ===========  ==================================================
key                             unit         measured as
==============================  ===========  ==================================================
``force_rel_rmse``              1            force RMSE / teacher force RMS
``energy_mae_mev``              meV/atom     mean absolute energy error per atom (absolute,
                                             not centered: a constant offset counts)
``nve_drift_mev_per_atom_ps``   meV/atom/ps  largest |NVE drift| of the student's MD systems
``md_blowups``                  count        student Langevin runs that ended unstable (a run
                                             cut by the wall-clock budget counts as stable;
                                             the verdict says how many ps it ran)
==============================  ===========  ==================================================

Accuracy targets are measured on the held-out teacher MD (``bench.heldout``) when the bench
ran it, otherwise on the test split; the verdict says which. A target whose value was not
measured is NO-GO (a gate that cannot check must not pass). The mapping is a typed section
(:class:`Targets`, :func:`mlff_distiller.settings.section`): an unknown target or a value that
is not a finite number >= 0 is a one-line :class:`~mlff_distiller.errors.ConfigError`.
"""

from __future__ import annotations

import math
from typing import Annotated

from ..settings import Float, build, field_names, limits, section


def _target(unit: str = "") -> object:
    return limits(ge=0, allow_inf_nan=False, unit=unit)


@section("bench.targets")
class Targets:
    """The accuracy targets (each a finite number >= 0; left out = not a target)."""

    force_rel_rmse: Annotated[Float, _target()] = None  # type: ignore[assignment]
    energy_mae_mev: Annotated[Float, _target("meV/atom")] = None  # type: ignore[assignment]
    nve_drift_mev_per_atom_ps: Annotated[Float, _target("meV/atom/ps")] = None  # type: ignore[assignment]
    md_blowups: Annotated[Float, _target("runs")] = None  # type: ignore[assignment]


TARGETS = tuple(field_names(Targets))


def check_targets(d: dict | None) -> dict | None:
    """Validated copy of a ``bench.targets`` mapping (``None`` = no accuracy gate): the targets
    given, in their order, as floats (checked by the :class:`Targets` section)."""
    if d is None:
        return None
    checked = build(Targets, d)
    return {key: getattr(checked, key) for key in d}


def _measured(result: dict) -> dict:
    """target key -> (value, where it was measured) from a bench result."""
    out = {}
    pooled = (result.get("heldout") or {}).get("pooled") or {}
    acc = result.get("accuracy") or {}
    if pooled.get("n_frames"):
        out["force_rel_rmse"] = (pooled.get("force_rel_rmse"), "held-out teacher MD")
        out["energy_mae_mev"] = (1000.0 * pooled["energy_mae_per_atom"], "held-out teacher MD")
    elif acc.get("n_structures"):
        out["force_rel_rmse"] = (acc.get("force_rmse_relative"), "test split")
        e = acc.get("energy_mae_per_atom")
        out["energy_mae_mev"] = (1000.0 * e if e is not None else None, "test split")
    drifts, runs, unstable, cut = [], 0, 0, []
    for sys_ in (result.get("systems") or {}).values():
        md = sys_.get("md") or {}
        for label, nve in (md.get("nve") or {}).items():
            if label == (result.get("student") or {}).get("label") and nve.get("drift_ev_per_atom_per_ps") is not None:
                drifts.append(abs(1000.0 * nve["drift_ev_per_atom_per_ps"]))
        for reps in (md.get("stability") or {}).values():
            for rep in reps:
                runs += 1
                unstable += 0 if rep.get("stable") else 1
                if rep.get("status") == "time_limit":
                    cut.append(rep)
    if drifts:
        out["nve_drift_mev_per_atom_ps"] = (max(drifts), "student NVE")
    if runs:
        out["md_blowups"] = (float(unstable), f"{runs} student Langevin runs" + _cut_note(cut))
    return out


def _cut_note(cut: list[dict]) -> str:
    """``, 1 cut by the wall-clock budget at 57 of 100 ps`` for stability runs that stopped at
    ``max_wall_s`` (stable over the time they simulated, not over the time asked for)."""
    if not cut:
        return ""
    spans = ", ".join(f"{r.get('simulated_ps', float('nan')):.3g} of {r.get('requested_ps', float('nan')):.3g} ps"
                      for r in cut)
    return f", {len(cut)} cut by the wall-clock budget at {spans}"


def evaluate_targets(result: dict, targets: dict | None) -> dict | None:
    """``{"passed", "targets": [{target, value, threshold, passed, measured_on}]}`` or None."""
    if not targets:
        return None
    measured = _measured(result)
    rows = []
    for key, threshold in targets.items():
        value, where = measured.get(key, (None, "not measured"))
        ok = value is not None and math.isfinite(value) and value <= threshold
        rows.append({"target": key, "value": value, "threshold": threshold, "passed": bool(ok), "measured_on": where})
    return {"passed": all(r["passed"] for r in rows), "targets": rows}


def verdict_line(verdict: dict | None) -> str | None:
    """One line for summaries: ``GO`` / ``NO-GO`` and each target's value vs threshold."""
    if not verdict:
        return None
    parts = []
    for r in verdict["targets"]:
        v = "n/a" if r["value"] is None else f"{r['value']:.3g}"
        parts.append(
            f"{r['target']} {v} <= {r['threshold']:g} {'met' if r['passed'] else 'NOT met'} ({r['measured_on']})"
        )
    return ("GO" if verdict["passed"] else "NO-GO") + ": " + "; ".join(parts)
