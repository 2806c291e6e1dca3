"""The accuracy gate: a recipe's ``bench.targets`` checked against a bench result.

Targets (each optional; a target is met when the measured value is at or below it):

==============================  ===========  ==================================================
key                             unit         measured as
==============================  ===========  ==================================================
``force_rel_rmse``              1            force RMSE / teacher force RMS
``energy_mae_mev``              meV/atom     mean absolute energy error per atom (absolute,
                                             not centered: a constant offset counts)
``nve_drift_mev_per_atom_ps``   meV/atom/ps  largest |NVE drift| of the student's MD systems
``md_blowups``                  count        student Langevin runs that ended unstable
==============================  ===========  ==================================================

Accuracy targets are measured on the held-out teacher MD (``bench.heldout``) when the bench
ran it, otherwise on the test split; the verdict says which. A target whose value was not
measured is NO-GO (a gate that cannot check must not pass).
"""

from __future__ import annotations

import math

from ..errors import ConfigError

TARGETS = ("force_rel_rmse", "energy_mae_mev", "nve_drift_mev_per_atom_ps", "md_blowups")


def check_targets(d: dict | None) -> dict | None:
    """Validated copy of a ``bench.targets`` mapping (``None`` = no accuracy gate)."""
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ConfigError(f"bench.targets must be a mapping such as {{force_rel_rmse: 0.1}}, got {d!r}")
    unknown = sorted(set(d) - set(TARGETS))
    if unknown:
        raise ConfigError(f"bench.targets: unknown target(s) {', '.join(unknown)}; allowed: {', '.join(TARGETS)}")
    out = {}
    for key, value in d.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or not math.isfinite(value):
            raise ConfigError(f"bench.targets.{key} = {value!r}: must be a finite number >= 0")
        out[key] = float(value)
    return out


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
    drifts, runs, unstable = [], 0, 0
    for sys_ in (result.get("systems") or {}).values():
        md = sys_.get("md") or {}
        for label, nve in (md.get("nve") or {}).items():
            if label == (result.get("student") or {}).get("label") and nve.get("drift_ev_per_atom_per_ps") is not None:
                drifts.append(abs(1000.0 * nve["drift_ev_per_atom_per_ps"]))
        for reps in (md.get("stability") or {}).values():
            for rep in reps:
                runs += 1
                unstable += 0 if rep.get("stable") else 1
    if drifts:
        out["nve_drift_mev_per_atom_ps"] = (max(drifts), "student NVE")
    if runs:
        out["md_blowups"] = (float(unstable), f"{runs} student Langevin runs")
    return out


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
