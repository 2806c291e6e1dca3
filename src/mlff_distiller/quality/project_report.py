"""The project report: one self-contained HTML page for a finished (or partial) pipeline run.

``write_project_report(project_dir, out_dir, config)`` reads the project directory and writes
``report.html`` (rendered from ``templates/report.html.j2``, images inlined as base64 PNG),
plus the dataset's ``dataset_card.md`` and ``quality.json``, in this order of sections:

1. verdict -- GO / NO-GO per accuracy target (``bench/bench.json`` ``verdict``);
2. training curves -- losses and validation errors per epoch (``train/metrics.csv``);
3. held-out accuracy -- parity plot (``bench/parity.png``, else ``train/parity.png``), the
   held-out teacher-MD table (``heldout``) and the test-split table (``accuracy``; per
   element / type / sampler rows collapsed);
4. speed -- teacher / student time per force call and MD step (``systems.*.speed``);
5. MD -- NVE drift and RDF plots (``bench/drift_*.png``, ``bench/rdf_*.png``) and a table;
6. dataset quality -- the dataset report's sections, with the gate of each tier that exists
   (``tiers/<tier>/gate.json``).

A missing part (no bench, no training yet) is left out with one line saying so. Units are
ASE's: eV, Angstrom, eV/A, fs; errors in meV/atom and meV/A as labelled.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fields import UNIT_SYSTEM
from ._html import colors, fig_png, file_png, render, table, verdict_cell
from .config import CHECKPOINTS, QualityConfig
from .report import analyse, check_out_dir, code_version, dataset_sections, gate_sections, write_files

#: Tier directory names in the order the pipeline builds them (``all``: an untiered recipe).
TIER_ORDER = (*CHECKPOINTS, "all")
NO_BENCH = ("No bench results (bench/bench.json not found, e.g. the run used --skip bench or has not reached "
            "the bench): verdict, held-out accuracy, speed and MD sections are left out.")


def _num(x, fmt="{:.3g}", scale=1.0) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return fmt.format(scale * x)


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path} ({err}): re-run the stage that writes it") from None


def find_dataset(project: Path) -> Path | None:
    """The last tier's labelled dataset (``tiers/<tier>/dataset.h5``), or None."""
    found = [p for p in (project / "tiers").glob("*/dataset.h5") if p.is_file()]
    rank = {t: i for i, t in enumerate(TIER_ORDER)}
    found.sort(key=lambda p: (rank.get(p.parent.name, -1), p.stat().st_mtime))
    return found[-1] if found else None


def tier_gates(project: Path) -> dict[str, dict]:
    """``{"tier <name>": gate.json}`` for every tier that has been gated, in build order."""
    rank = {t: i for i, t in enumerate(TIER_ORDER)}
    paths = sorted((project / "tiers").glob("*/gate.json"), key=lambda p: (rank.get(p.parent.name, -1), p.parent.name))
    out = {}
    for p in paths:
        g = _load_json(p)
        if isinstance(g, dict):
            out[f"tier {p.parent.name} (checkpoint {g.get('checkpoint', '?')})"] = g
    return out


def _verdict_section(bench: dict) -> dict:
    sec = {"id": "verdict", "title": "Verdict"}
    v = bench.get("verdict")
    if not v:
        sec["note"] = "No accuracy targets in the recipe (bench.targets), so there is no GO / NO-GO verdict."
        return sec
    sec["badge"] = {"text": "GO" if v.get("passed") else "NO-GO", "cls": "pass" if v.get("passed") else "fail"}
    sec["tables"] = [{"caption": "", "collapsed": False, "table": table(
        ["target", "measured", "threshold", "verdict", "measured on"],
        [[r["target"], _num(r.get("value")), _num(r.get("threshold"), "{:g}"),
          verdict_cell(r.get("passed"), "met (GO)", "NOT met (NO-GO)"), r.get("measured_on", "-")]
         for r in v.get("targets", [])])}]
    return sec


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """Columns of a training ``metrics.csv`` as float arrays (empty cells -> NaN)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = {}
    for key in (rows[0].keys() if rows else []):
        vals = []
        for r in rows:
            try:
                vals.append(float(r[key]))
            except (TypeError, ValueError):
                vals.append(float("nan"))
        cols[key] = np.asarray(vals)
    return cols


def _training_section(project: Path) -> dict:
    sec = {"id": "training", "title": "Training curves"}
    path = project / "train" / "metrics.csv"
    m = read_metrics(path) if path.is_file() else {}
    if not m.get("epoch", np.zeros(0)).size:
        sec["note"] = "No training metrics (train/metrics.csv missing or empty): the run has not trained yet."
        return sec
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ep = m["epoch"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    series = [(axes[0], "train_loss", "train loss", 1.0), (axes[0], "val_loss", "validation loss", 1.0),
              (axes[1], "val_energy_mae_per_atom", "energy MAE (meV/atom)", 1000.0),
              (axes[1], "val_force_mae", "force MAE (meV/A)", 1000.0)]
    for (ax, key, label, scale), color in zip(series, colors(len(series))):
        y = m.get(key)
        if y is not None and np.isfinite(y).any():
            ax.plot(ep, scale * y, label=label, color=color)
    for ax, ylabel in ((axes[0], "loss"), (axes[1], "validation error")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    sec["figures"] = [
        {"id": "training-curves", "caption": "Losses and validation errors per epoch", "png": fig_png(fig)}
    ]
    vl = m.get("val_loss")
    line = f"{int(np.nanmax(ep))} epochs"
    if vl is not None and np.isfinite(vl).any():
        b = int(np.nanargmin(vl))
        line += (f"; best validation loss {vl[b]:.4g} at epoch {int(ep[b])} (energy MAE "
                 f"{_num(m.get('val_energy_mae_per_atom', ep * np.nan)[b], scale=1000)} meV/atom, force MAE "
                 f"{_num(m.get('val_force_mae', ep * np.nan)[b], scale=1000)} meV/A)")
    if "elapsed_s" in m and np.isfinite(m["elapsed_s"]).any():
        line += f"; {np.nanmax(m['elapsed_s']):.0f} s of training"
    sec["paragraphs"] = [line + "."]
    return sec


def _acc_row(label, b) -> list:
    return [label, b.get("n_structures", "-"), b.get("n_atoms", "-"), _num(b.get("energy_mae_per_atom"), scale=1000),
            _num(b.get("force_mae"), scale=1000), _num(b.get("force_rmse_relative")),
            _num(b.get("force_angle_mean_deg"), "{:.1f}")]


def _ci(b, key, scale=1.0) -> str:
    v = _num(b.get(key), scale=scale)
    lo, hi = b.get(key + "_ci95") or (None, None)
    return v if lo is None or hi is None else f"{v} [{_num(lo, scale=scale)}, {_num(hi, scale=scale)}]"


def _accuracy_section(project: Path, bench: dict) -> dict:
    sec = {"id": "accuracy", "title": "Held-out accuracy", "figures": [], "tables": []}
    for rel, caption in (("bench/parity.png", "Student against teacher on the test split (bench)"),
                         ("train/parity.png", "Student against teacher on the validation set (training)")):
        png = file_png(project / rel)
        if png:
            sec["figures"].append({"id": "parity", "caption": caption, "png": png})
            break
    held = bench.get("heldout") or {}
    if held.get("runs"):
        rows = [["pooled", (held.get("pooled") or {}).get("n_frames", 0), *[
            _ci(held.get("pooled") or {}, k, s) for k, s in (("energy_mae_per_atom", 1000),
                                                           ("energy_offset_per_atom", 1000),
                                                           ("energy_mae_centered_per_atom", 1000),
                                                           ("force_rel_rmse", 1))]]]
        for name, b in held["runs"].items():
            rows.append([name, b.get("n_frames", 0), *[_ci(b, k, s) for k, s in (
                ("energy_mae_per_atom", 1000), ("energy_offset_per_atom", 1000),
                ("energy_mae_centered_per_atom", 1000), ("force_rel_rmse", 1))]])
        sec["tables"].append({"caption": "On the teacher's own MD (held-out; 95 % bootstrap intervals)",
                              "collapsed": False, "table": table(
            ["run", "frames", "energy MAE meV/atom", "offset meV/atom", "centered MAE meV/atom",
             "force RMSE / teacher RMS"], rows)})
    acc = bench.get("accuracy") or {}
    headers = ["group", "structures", "atoms", "energy MAE meV/atom", "force MAE meV/A",
               "force RMSE / teacher RMS", "mean force angle (deg)"]
    if acc:
        sec["tables"].append({"caption": "On the test split", "collapsed": False,
                              "table": table(headers, [_acc_row("all", acc)])})
        groups = [(f"element {k}", b) for k, b in (acc.get("per_element") or {}).items()]
        groups += [(f"type {k}", b) for k, b in (acc.get("per_type") or {}).items()]
        groups += [(f"sampler {k}", b) for k, b in (acc.get("per_sampler") or {}).items()]
        if groups:
            sec["tables"].append({"caption": f"Test split per element, type and sampler ({len(groups)} groups)",
                                  "collapsed": True, "table": table(headers, [_acc_row(k, b) for k, b in groups])})
    if not sec["figures"] and not sec["tables"]:
        sec["note"] = "The bench measured no accuracy (no test split, no held-out runs)."
    return sec


def _labels(bench: dict) -> tuple[str, str]:
    return (bench.get("student") or {}).get("label", "student"), (bench.get("teacher") or {}).get("label", "teacher")


def _speed_section(bench: dict) -> dict:
    s_lab, t_lab = _labels(bench)
    rows = []
    for name, sysres in (bench.get("systems") or {}).items():
        sp = sysres.get("speed")
        if not sp:
            continue
        t, s, r = sp.get(t_lab, {}), sp.get(s_lab, {}), sp.get("ratio", {})

        def med(d, k):
            return _num((d.get(k) or {}).get("median"))

        rows.append([name, sysres.get("n_atoms", "-"), med(t, "force_call_ms"), med(s, "force_call_ms"),
                     _num(r.get("force_call"), "{:.1f}x"), med(t, "md_step_ms"), med(s, "md_step_ms"),
                     _num(r.get("md_step"), "{:.1f}x"), _num(s.get("ns_per_day")), _num(t.get("ns_per_day"))])
    sec = {"id": "speed", "title": "Speed"}
    if not rows:
        sec["note"] = "The bench measured no speed (no system with a speed result)."
        return sec
    meta = bench.get("meta") or {}
    sec["paragraphs"] = [f"Medians of interleaved calls, ratio = teacher / student. Machine: {meta.get('cpu', '?')}, "
                         f"{meta.get('torch_threads', '?')} thread(s), torch {meta.get('torch', '?')}, "
                         f"{meta.get('date_utc', '')}."]
    sec["tables"] = [{"caption": "", "collapsed": False, "table": table(
        ["system", "atoms", "teacher ms/call", "student ms/call", "ratio", "teacher ms/step", "student ms/step",
         "ratio", "student ns/day", "teacher ns/day"], rows)}]
    return sec


def _md_section(project: Path, bench: dict) -> dict:
    s_lab, _ = _labels(bench)
    sec = {"id": "md", "title": "MD: energy drift and structure", "figures": [], "tables": []}
    rows = []
    for name, sysres in (bench.get("systems") or {}).items():
        md = sysres.get("md") or {}
        for kind, caption in (("drift", "NVE total energy drift"), ("rdf", "RDF, student MD against teacher MD")):
            png = file_png(project / "bench" / f"{kind}_{name}.png")
            if png:
                sec["figures"].append({"id": f"{kind}-{name}", "caption": f"{name}: {caption}", "png": png})
        for label, nve in (md.get("nve") or {}).items():
            stab = (md.get("stability") or {}).get(label, [])
            rows.append([name, label, _num(nve.get("drift_ev_per_atom_per_ps"), "{:.2e}"),
                         _num(nve.get("simulated_ps")),
                         verdict_cell(not nve.get("flagged"), nve.get("status", "ok"),
                                      f"{nve.get('status', '?')}: {'; '.join(nve.get('flags', []))}"),
                         ", ".join(f"{int(x['temperature_K'])} K {'ok' if x['stable'] else 'UNSTABLE'}" for x in stab)
                         or "-",
                         _num((md.get("rdf") or {}).get("overlap"), "{:.3f}") if label == s_lab else ""])
    if rows:
        sec["tables"].append({"caption": "", "collapsed": False, "table": table(
            ["system", "model", "NVE drift eV/atom/ps", "simulated ps", "NVE status", "stability", "RDF overlap"],
            rows)})
    if not sec["figures"] and not rows:
        sec["note"] = "The bench ran no MD (no drift or RDF results)."
    return sec


def _load_bench(project: Path) -> dict | None:
    bench = _load_json(project / "bench" / "bench.json")
    if bench is not None and not isinstance(bench, dict):
        raise UserError(f"{project / 'bench' / 'bench.json'} is not a bench result: re-run the bench stage")
    return bench


def project_sections(project: Path) -> tuple[list[dict], dict | None]:
    """The sections above the dataset part (verdict ... MD), and the bench result if any."""
    bench = _load_bench(project)
    if bench is None:
        return [{"id": "verdict", "title": "Verdict", "note": NO_BENCH}, _training_section(project)], None
    secs = [_verdict_section(bench), _training_section(project), _accuracy_section(project, bench),
            _speed_section(bench), _md_section(project, bench)]
    if bench.get("complete") is False:
        secs[0]["paragraphs"] = ["Partial bench result: the bench was interrupted; missing rows were not measured."]
    return secs, bench


def write_project_report(project_dir, out_dir=None, config: QualityConfig | dict | None = None, *,
                         dataset=None, progress: bool = False) -> Path:
    """Write the project's ``report.html`` (plus the dataset's card and ``quality.json``) into
    ``out_dir`` (default ``PROJECT/report``); return the HTML path.

    ``dataset`` defaults to the last tier's ``tiers/<tier>/dataset.h5``. Raises
    :class:`UserError` when ``project_dir`` is not a directory or ``out_dir`` cannot be written.
    """
    project = Path(project_dir)
    if not project.is_dir():
        raise UserError(f"project directory {project} not found: pass the -o directory of `mlff-distill run`")
    config = QualityConfig.from_dict(config) if not isinstance(config, QualityConfig) else config
    out = check_out_dir(out_dir if out_dir is not None else project / "report")
    secs, bench = project_sections(project)
    meta = _load_json(project / "project.json") or {}
    title = f"Project report: {meta.get('recipe_name', project.name)} ({project.name})"
    intro = [f"Units: {UNIT_SYSTEM}. {code_version()}."]
    if bench:
        intro.insert(0, f"Student {_labels(bench)[0]} against teacher {_labels(bench)[1]}.")
    dataset = dataset if dataset is not None else find_dataset(project)
    if dataset is None:
        secs.append({"id": "dataset", "title": "Dataset quality",
                     "note": "No labelled dataset in this project yet (tiers/<tier>/dataset.h5 not found)."})
        out.mkdir(parents=True, exist_ok=True)
        html_path = out / "report.html"
        from ..fileio import atomic_write_text

        atomic_write_text(html_path, render(title=title, intro=intro, sections=secs))
        return html_path
    parts = analyse(dataset, config, progress=progress)
    rec, validation, div, _, plots = parts
    gates = tier_gates(project)
    gate_secs = (gate_sections(gates, combined=False) if gates else
                 gate_sections({cp: g.to_dict() for cp, g in parts[3].items()}, combined=True))
    secs += dataset_sections(rec, validation, div, gate_secs, plots)
    html_path, _ = write_files(out, render(title=title, intro=intro, sections=secs), parts, config)
    return html_path


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """Path of a Chromium-family browser that can run headless, or None."""
    import shutil

    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def screenshot(html_path, png_path, width: int = 1200, height: int = 4000, timeout: float = 120) -> Path:
    """Render ``html_path`` in a headless Chromium (no network, no GPU) and save a PNG of the
    top ``width`` x ``height`` pixels. Raises :class:`UserError` when no browser is installed
    or it fails."""
    import subprocess

    browser = find_browser()
    if browser is None:
        raise UserError(
            f"no headless browser found ({', '.join(BROWSERS)}): install one, e.g. apt-get install chromium"
        )
    png = Path(png_path).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--hide-scrollbars", f"--window-size={width},{height}", f"--screenshot={png}",
           Path(html_path).resolve().as_uri()]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"{browser} failed to take a screenshot ({err}): check the browser install") from None
    if not png.is_file():
        tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"{browser} wrote no screenshot (exit {proc.returncode}: {tail[0]}): check the browser install")
    return png
