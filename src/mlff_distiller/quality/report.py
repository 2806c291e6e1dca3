"""The dataset analysis report (one self-contained HTML file) and the markdown dataset card.

``write_report(path, out_dir, config)`` writes into ``out_dir``:

* ``report.html`` -- rendered from the Jinja2 template ``templates/report.html.j2``: gate
  verdicts of every checkpoint in one table, then plots embedded as base64 PNG (matplotlib,
  Agg backend): element histogram, size distribution, energy per atom and |F| distributions,
  PCA map coloured by source, QUESTS entropy versus sample size, RMSD matrix of the largest
  composition; then tables of check results and diversity, long per-source tables collapsed.
  No external resources. The project report (:mod:`.project_report`) reuses these sections.
* ``dataset_card.md`` -- teacher (name, version, weights sha256), units, recipe and seeds,
  counts per source and sampler, splits, code version, license, known limitations.
* ``quality.json`` -- every number behind the two.

Files are written under a temporary name and renamed, so a crash never leaves a half file.
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import UserError
from ..fields import UNIT_SYSTEM
from ..fileio import atomic_write_text
from ._data import Records, load_records
from ._html import colors, fig_png, render, table, verdict_cell
from .checks import validate
from .config import CHECKPOINTS, QualityConfig
from .diversity_metrics import diversity, sampler_category
from .gates import evaluate_gates

PLOTS = (
    ("element-histogram", "Atoms per element"),
    ("size-distribution", "Structure size (atoms per structure)"),
    ("energy-distribution", "Energy per atom (eV/atom)"),
    ("force-distribution", "Per-atom force magnitude |F| (eV/A)"),
    ("pca-map", "PCA map of mean QUESTS descriptors, by source"),
    ("entropy-curve", "QUESTS entropy H versus sample size"),
    ("rmsd-matrix", "RMSD among structures of the largest composition"),
)


_atomic_write = atomic_write_text  # one implementation: mlff_distiller.fileio


_png = fig_png


def _plots(rec: Records, div) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = {}
    chem, size, en, st = div.chemical, div.size, div.energetic, div.structural

    fig, ax = plt.subplots(figsize=(6, 3.2))
    els = chem["elements"]
    ax.bar(els, [chem["atom_counts"][e] for e in els], color="#4c72b0")
    ax.set_yscale("log")
    ax.set_ylabel("atoms")
    ax.set_title(f"{len(els)} elements")
    out["element-histogram"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6, 3.2))
    n_atoms = np.asarray(size["n_atoms"])
    bins = np.unique(np.concatenate([[max(1, n_atoms.min())], size["bin_edges"], [n_atoms.max() + 1]]))
    ax.hist(n_atoms, bins=bins, color="#55a868", edgecolor="white")
    ax.set_xscale("log")
    ax.set_xlabel("atoms per structure")
    ax.set_ylabel("structures")
    ax.set_title(f"coverage {size['coverage']:.2f}, smoothness {size['smoothness']:.2f}")
    out["size-distribution"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6, 3.2))
    epa = np.asarray(en["energy_per_atom"])
    ax.hist(epa, bins=40, color="#c44e52", edgecolor="white")
    ax.set_xlabel("energy per atom (eV/atom)")
    ax.set_ylabel("structures")
    out["energy-distribution"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6, 3.2))
    fmag = np.concatenate([np.linalg.norm(f, axis=1) for f in rec.forces if f is not None] or [np.zeros(0)])
    fmag = fmag[np.isfinite(fmag)]
    if fmag.size:
        ax.hist(fmag, bins=50, color="#8172b2", edgecolor="white")
        ax.set_yscale("log")
    ax.set_xlabel("|F| (eV/A)")
    ax.set_ylabel("atoms")
    out["force-distribution"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    pca = st["pca"]
    coords = np.asarray(pca["coords"]).reshape(-1, 2)
    sources = np.asarray(pca["sources"], dtype=object)
    top = [s for s, _ in Counter(sources.tolist()).most_common(12)]
    labels = np.array([s if s in top else "other" for s in sources], dtype=object)
    groups = top + (["other"] if len(set(sources.tolist())) > len(top) else [])
    for s, color in zip(groups, colors(len(groups))):  # distinct colours: no two sources look alike
        m = labels == s
        ax.scatter(coords[m, 0], coords[m, 1], s=8, alpha=0.7, label=s, color=color)
    ax.set_xlabel(f"PC1 ({100 * pca['explained'][0]:.0f} %)")
    ax.set_ylabel(f"PC2 ({100 * pca['explained'][1]:.0f} %)")
    ax.legend(fontsize=7, markerscale=2, loc="best")
    out["pca-map"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6, 3.2))
    c = st["curve"]
    sizes = np.asarray(c["sizes"], dtype=float)
    ax.errorbar(sizes, c["entropy_mean"], yerr=c["entropy_std"], marker="o", capsize=3, label="H (QUESTS)")
    ax.plot(sizes, np.log(sizes), "k--", lw=1, label="ln n (all distinct)")
    ax.set_xscale("log")
    ax.set_xlabel("atomic environments sampled, n")
    ax.set_ylabel("entropy H (nats)")
    ax.legend(fontsize=8)
    out["entropy-curve"] = _png(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4))
    comps = st["rmsd"]["compositions"]
    if comps and comps[0]["matrix"] is not None:
        im = ax.imshow(np.asarray(comps[0]["matrix"]), cmap="viridis")
        fig.colorbar(im, ax=ax, label="RMSD (A)")
        ax.set_title(f"{comps[0]['formula']}: {comps[0]['n_compared']} structures")
    else:
        ax.text(0.5, 0.5, "no composition occurs twice", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    out["rmsd-matrix"] = _png(fig)
    return out


def _fmt(x, digits=4) -> str:
    if x is None:
        return "-"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{float(x):.{digits}g}"


def code_version() -> str:
    """Package version, plus the git commit when the package runs from a checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return f"mlff-distiller {__version__}" + (f" (git {sha}{'+dirty' if dirty else ''})" if sha else "")


def _teacher(attrs: dict) -> dict:
    fp = attrs.get("teacher_fingerprint") or {}
    if isinstance(fp, str):
        try:
            fp = json.loads(fp)
        except json.JSONDecodeError:
            fp = {}
    spec = attrs.get("teacher_spec")
    spec_name = spec.get("name") if isinstance(spec, dict) else spec if isinstance(spec, str) else None
    name = fp.get("teacher") or attrs.get("teacher") or spec_name
    return {
        "name": name or "unknown (not recorded in the file)",
        "package": fp.get("package", "-"),
        "version": fp.get("version", "-"),
        "model": fp.get("model", "-"),
        "weights_sha256": fp.get("weights_sha256") or attrs.get("weights_sha256") or "not recorded",
        "fingerprint_id": attrs.get("teacher_fingerprint_id", "-"),
    }


def _find(attrs: dict, *keys):
    """First value of any key in attrs or in the pool's attrs carried by labelling."""
    for scope in (attrs, attrs.get("pool_attrs") if isinstance(attrs.get("pool_attrs"), dict) else {}):
        for k in keys:
            if k in scope and scope[k] not in (None, ""):
                return scope[k]
    return None


def _card(rec: Records, validation, div, gates: dict, config: QualityConfig) -> str:
    attrs = rec.attrs or {}
    t = _teacher(attrs)
    groups = {str(p.get("group", "")) for p in rec.provenance}
    license_ = _find(attrs, "license")
    lines = [
        *_card_summary_lines(rec, attrs, div),
        "",
        "## Teacher",
        "",
        f"- name: {t['name']}",
        f"- package / version: {t['package']} {t['version']}",
        f"- model: {t['model']}",
        f"- weights sha256: `{t['weights_sha256']}`",
        f"- fingerprint id (in every structure's provenance): `{t['fingerprint_id']}`",
        "",
        "## Units",
        "",
        f"{attrs.get('units') or UNIT_SYSTEM}.",
        "",
        *_card_recipe_lines(rec, attrs, groups),
        "",
        *_card_count_lines(rec),
        "",
        "## Splits",
        "",
        _card_split_text(attrs, groups),
        "",
        *_card_quality_lines(len(rec), validation, div, gates),
        "",
        "## Code version",
        "",
        code_version(),
        "",
        "## License",
        "",
        (str(license_) if license_ is not None else
         "Not specified in the file (set `license` in the recipe). The labels derive from the teacher; its "
         "model license applies to their use."),
        "",
        "## Known limitations",
        "",
        *[f"- {x}" for x in _limitations(rec, validation, div, t)],
        "",
    ]
    return "\n".join(lines)


def _card_summary_lines(rec: Records, attrs: dict, div) -> list[str]:
    """Title, generation time and code version, and the one-table summary of the dataset."""
    chem, size = div.chemical, div.size
    return [
        f"# Dataset card: {Path(rec.path).name if rec.path else 'in-memory dataset'}",
        "",
        f"Generated {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} by {code_version()}.",
        "",
        "| | |", "|---|---|",
        f"| structures | {len(rec)} |",
        f"| atoms | {int(rec.n_atoms.sum())} |",
        f"| elements | {', '.join(chem['elements'])} |",
        f"| atoms per structure | {size['min']}-{size['max']} (mean {size['mean']:.1f}) |",
        f"| label fields | {', '.join(rec.label_fields)} |",
        f"| failed labelling attempts | {len(rec.failures)} |",
        f"| created | {attrs.get('created', 'not recorded')} |",
    ]


def _card_recipe_lines(rec: Records, attrs: dict, groups: set) -> list[str]:
    """The "Recipe and seeds" section: recipe name and tier, seeds, groups, the resolved recipe."""
    seeds = sorted({int(p["seed"]) for p in rec.provenance if isinstance(p.get("seed"), (int, np.integer))})
    recipe_dict = _find(attrs, "recipe")
    recipe_dict = recipe_dict if isinstance(recipe_dict, dict) else {}
    resolved = _find(attrs, "recipe_resolved")  # every default filled in (pools from Recipe.resolved())
    shown, what = (resolved, "Resolved recipe (every default filled in)") if isinstance(resolved, dict) and resolved \
        else (recipe_dict, "Recipe as given")
    recipe = _find(attrs, "recipe_name") or recipe_dict.get("name") or _find(attrs, "recipe")
    tier = _find(attrs, "tier")
    recipe_seed = _find(attrs, "seed", "recipe_seed")
    if recipe_seed is None:
        recipe_seed = recipe_dict.get("seed")
    return [
        "## Recipe and seeds",
        "",
        f"- recipe: {recipe if recipe is not None else 'not recorded in the file'}"
        + (f" (tier {tier})" if tier else ""),
        f"- recipe seed: {recipe_seed if recipe_seed is not None else 'not recorded'}",
        f"- distinct per-structure sampler seeds: {len(seeds)}"
        + (f" (from {seeds[0]} to {seeds[-1]})" if seeds else ""),
        f"- provenance groups (root structures): {len(groups)}",
        *(["", f"{what}, as stored by generation:", "", "```yaml", _yaml(shown).rstrip(), "```"]
          if shown else []),
    ]


def _card_count_lines(rec: Records) -> list[str]:
    """Structures per source and per sampler, most frequent first."""
    n = len(rec)
    sources = Counter(rec.source(i) for i in range(n))
    samplers = Counter(rec.sampler(i) for i in range(n))
    return [
        "## Counts per source",
        "",
        "| source | structures |", "|---|---|",
        *[f"| {s} | {c} |" for s, c in sources.most_common()],
        "",
        "## Counts per sampler",
        "",
        "| sampler | structures |", "|---|---|",
        *[f"| {s} | {c} |" for s, c in samplers.most_common()],
    ]


def _card_split_text(attrs: dict, groups: set) -> str:
    split = _find(attrs, "split", "splits")
    return (f"This file is the `{split}` split." if isinstance(split, str) else
            f"Splits: {json.dumps(split)}" if split is not None else
            f"Not split in this file. Training splits by provenance group ({len(groups)} groups), so structures "
            "derived from one root never straddle train and validation.")


def _card_quality_lines(n: int, validation, div, gates: dict) -> list[str]:
    """The "Quality" section: flagged structures, diversity, gate verdicts."""
    return [
        "## Quality",
        "",
        f"- validation: {validation.n_flagged} of {n} structures flagged ({100 * validation.flagged_fraction:.2f} %): "
        + ", ".join(f"{k} {v}" for k, v in validation.counts.items() if v) if validation.n_flagged else
        f"- validation: no structure flagged by {len(validation.flags)} checks",
        f"- diversity score {div.score:.3f}; QUESTS H {div.entropy:.3f} nats, D {div.diversity:.3f} nats "
        f"on {div.structural['subsample_atoms']} environments",
        *[f"- gate {cp}: {'passed' if g.passed else 'FAILED'}"
          + ("" if g.passed else " (" + "; ".join(v.message for v in g.failed) + ")") for cp, g in gates.items()],
    ]


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(d, default=str)), sort_keys=False, default_flow_style=None, width=100)


def _limitations(rec, validation, div, teacher) -> list[str]:
    out = [
        f"Labels are {teacher['name']} predictions, not reference quantum chemistry: a student trained on them "
        "inherits the teacher's errors.",
        f"Only these elements occur: {', '.join(div.chemical['elements'])}; other elements are out of domain.",
        f"Structure sizes span {div.size['min']}-{div.size['max']} atoms; larger systems are extrapolation "
        "for the local environments only.",
    ]
    if "stress" not in rec.label_fields:
        out.append("No stress labels: the teacher gave none, so a student trained here cannot learn stress.")
    if validation.n_flagged:
        out.append(f"{validation.n_flagged} structures are flagged by validation checks (see report.html) and "
                   "should be filtered before training.")
    if not div.chemical["organic_and_inorganic"]:
        kind = "organic" if div.chemical["n_organic"] else "inorganic"
        out.append(f"Only {kind} structures: the other chemistry is not represented.")
    cats = div.energetic["category_counts"]
    missing = [k.replace("_", "-") for k in ("minima", "perturbed", "high_energy") if not cats.get(k)]
    if missing:
        out.append(f"No {', '.join(missing)} structures according to provenance samplers.")
    out.extend(div.warnings)
    out.append("QUESTS descriptors ignore element identity (structure only); RMSD compares structures of one "
               "composition with atoms matched by index.")
    return out


def gate_sections(gates: dict[str, dict], combined: bool) -> list[dict]:
    """The "Gate verdicts" section from ``{name: GateReport.to_dict()}`` (or ``gate.json`` contents).

    ``combined``: the gates were evaluated on one dataset (a bare dataset's report), so one
    table holds the value once and a verdict column per checkpoint; otherwise (a project's
    tiers, each on its own data) one table per tier.
    """
    head = "; ".join(f"{name}: {'PASSED' if g.get('passed') else 'FAILED'}" for name, g in gates.items())
    sec = {"id": "gates", "title": "Gate verdicts", "level": 3, "paragraphs": [head] if gates and combined else [],
           "note": None if gates else "No gate results found.", "tables": []}
    if combined and gates:
        metrics = list(dict.fromkeys(v["metric"] for g in gates.values() for v in g.get("verdicts", [])))
        by = {cp: {v["metric"]: v for v in g.get("verdicts", [])} for cp, g in gates.items()}
        rows = []
        for m in metrics:
            first = next(b[m] for b in by.values() if m in b)
            rows.append([m, _fmt(first["value"])] + [
                verdict_cell(b[m]["passed"], f"pass ({_fmt(b[m]['threshold'])})", f"FAIL ({_fmt(b[m]['threshold'])})")
                if m in b else "-" for b in by.values()])
        sec["tables"].append({"caption": "", "collapsed": False, "table": table(
            ["metric", "value", *[f"{cp}: verdict (threshold)" for cp in gates]], rows)})
        return [sec]
    for name, g in gates.items():
        sec["tables"].append({"caption": f"{name}: {'PASSED' if g.get('passed') else 'FAILED'}", "collapsed": False,
                              "table": table(["metric", "value", "threshold", "verdict"],
                                             [[v["metric"], _fmt(v["value"]), _fmt(v["threshold"]),
                                               verdict_cell(v["passed"])] for v in g.get("verdicts", [])])})
    return [sec]


def dataset_sections(rec: Records, validation, div, gate_secs: list[dict], plots: dict) -> list[dict]:
    """The dataset-quality sections of the report: summary, gates, plots, checks, diversity, counts."""
    name = Path(rec.path).name if rec.path else "in-memory dataset"
    t = _teacher(rec.attrs or {})
    top = {"id": "dataset", "title": f"Dataset quality: {name}", "level": 2, "paragraphs": [
        f"{len(rec)} structures, {int(rec.n_atoms.sum())} atoms, elements {', '.join(div.chemical['elements'])}; "
        f"labels by teacher {t['name']} ({t['fingerprint_id']}); {len(rec.failures)} failed labelling attempts."]}
    figs = {"id": "plots", "title": "Dataset plots", "level": 3,
            "figures": [{"id": key, "caption": caption, "png": plots[key]} for key, caption in PLOTS]}
    rows = []
    for r in validation.rows():
        idx = validation.flagged_indices(r["check"]) if r["check"] in validation.flags else []
        shown = ", ".join(map(str, idx[:20])) + (" ..." if len(idx) > 20 else "")
        rows.append([r["check"], "on" if r["enabled"] else "off", r["flagged"],
                     "-" if r["worst"] is None else f"{r['worst']:.4g} {r['unit']}", r["description"], shown])
    checks = {
        "id": "checks",
        "title": "Validation checks",
        "level": 3,
        "paragraphs": [
            f"{validation.n_flagged} of {validation.n_structures} structures flagged "
            f"({100 * validation.flagged_fraction:.2f} %)."
        ]
        + [f"Note: {n}" for n in validation.notes],
        "tables": [
            {
                "caption": "",
                "collapsed": False,
                "table": table(["check", "enabled", "flagged", "worst value", "criterion", "flagged structures"], rows),
            }
        ],
    }
    n = len(rec)
    counts = {"id": "provenance", "title": "Counts per source and sampler", "level": 3, "tables": [
        {"caption": f"Structures per source ({len(set(rec.source(i) for i in range(n)))} sources)", "collapsed": True,
         "table": table(["source", "structures"], Counter(rec.source(i) for i in range(n)).most_common())},
        {"caption": "Structures per sampler", "collapsed": True,
         "table": table(["sampler", "category", "structures"],
                        [[s, sampler_category(s).replace("_", "-"), c]
                         for s, c in Counter(rec.sampler(i) for i in range(n)).most_common()])}]}
    return [top, *gate_secs, figs, checks, _diversity_section(div), counts]


def _diversity_section(div) -> dict:
    s, c = div.structural, div.chemical
    tables = [{"caption": "", "collapsed": False, "table": table(["metric", "value"], [
        ["diversity score (0-1)", _fmt(div.score, 3)],
        *[[f"component: {k}", _fmt(v, 3)] for k, v in div.components.items()],
        ["QUESTS entropy H (nats)", f"{s['entropy']:.3f} +- {s['entropy_std']:.3f}"],
        ["QUESTS diversity D (nats)", f"{s['diversity']:.3f} +- {s['diversity_std']:.3f}"],
        ["environments per subsample x repeats", f"{s['subsample_atoms']} x {s['repeats']}"],
        ["H / ln n", _fmt(s["entropy_fraction"], 3)],
        ["elements", f"{c['n_elements']} ({', '.join(c['elements'])})"],
        ["organic / inorganic structures", f"{c['n_organic']} / {c['n_inorganic']}"],
        ["compositions; composition entropy (nats)", f"{c['n_compositions']}; {c['composition_entropy']:.3f}"],
        ["element entropy (nats)", _fmt(c["element_entropy"], 3)],
        ["size coverage / smoothness", f"{div.size['coverage']:.2f} / {div.size['smoothness']:.2f}"],
        ["minima / perturbed / high-energy / other",
         " / ".join(str(div.energetic["category_counts"][k]) for k in ("minima", "perturbed", "high_energy", "other"))],
        ["sampler balance (0-1)", _fmt(div.energetic["balance"], 3)],
        ["median RMSD within a composition (A)", _fmt(s["rmsd"]["median"], 3)],
    ])}]
    if s["rmsd"]["compositions"]:
        tables.append({"caption": f"RMSD within compositions (A), {len(s['rmsd']['compositions'])} compositions",
                       "collapsed": True,
                       "table": table(["composition", "structures", "compared", "mean", "median", "max"],
                                      [[x["formula"], x["n_structures"], x["n_compared"], _fmt(x["mean"], 3),
                                        _fmt(x["median"], 3), _fmt(x["max"], 3)] for x in s["rmsd"]["compositions"]])})
    return {"id": "diversity", "title": "Diversity", "level": 3,
            "paragraphs": [f"Warning: {w}" for w in div.warnings], "tables": tables}


def _html(rec: Records, validation, div, gates: dict, plots: dict) -> str:
    title = f"Dataset quality report: {Path(rec.path).name if rec.path else 'in-memory dataset'}"
    gate_secs = gate_sections({cp: g.to_dict() for cp, g in gates.items()}, combined=True)
    return render(title=title, intro=[f"Units: {UNIT_SYSTEM}. {code_version()}."],
                  sections=dataset_sections(rec, validation, div, gate_secs, plots))


def analyse(path, config: QualityConfig, *, progress: bool = False, validation=None, diversity_report=None):
    """Everything the dataset sections need: ``(records, validation, diversity, gates, plots)``.

    ``gates`` holds every checkpoint's :class:`GateReport` on this dataset; ``plots`` maps a
    :data:`PLOTS` key to a base64 PNG.
    """
    rec = load_records(path)
    validation = validation if validation is not None else validate(rec, config, progress=progress)
    div = diversity_report if diversity_report is not None else diversity(rec, config, progress=progress)
    gates = {cp: evaluate_gates(rec, cp, config, validation=validation, diversity_report=div) for cp in CHECKPOINTS}
    return rec, validation, div, gates, _plots(rec, div)


def write_files(out: Path, html_text: str, parts, config: QualityConfig) -> tuple[Path, Path]:
    """Write ``report.html`` (the given page), ``dataset_card.md`` and ``quality.json`` into ``out``."""
    rec, validation, div, gates, _ = parts
    html_path, card_path = out / "report.html", out / "dataset_card.md"
    card_text = _card(rec, validation, div, gates, config)
    payload = {
        "dataset": rec.path,
        "units": UNIT_SYSTEM,
        "code_version": code_version(),
        "config": config.to_dict(),
        "validation": validation.to_dict(),
        "diversity": div.to_dict(),
        "gates": {cp: g.to_dict() for cp, g in gates.items()},
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write(html_path, html_text)
        _atomic_write(card_path, card_text)
        _atomic_write(out / "quality.json", json.dumps(payload, indent=1, default=str) + "\n")
    except OSError as err:
        raise UserError(f"cannot write the report into {out} ({err.strerror or err}): choose a writable -o") from None
    return html_path, card_path


def check_out_dir(out_dir) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"report output {out} exists and is not a directory: choose another -o")
    return out


def write_report(path, out_dir, config: QualityConfig | dict | None = None, *, progress: bool = False,
                 validation=None, diversity_report=None) -> tuple[Path, Path]:
    """Write ``report.html``, ``dataset_card.md`` and ``quality.json`` for a dataset into ``out_dir``.

    ``path`` is a dataset file (or a list of labelled ``ase.Atoms``). Returns
    ``(html_path, card_path)``. ``validation`` / ``diversity_report`` computed earlier on the
    same data with the same config (e.g. ``GateReport.validation``) are reused when given.
    Raises :class:`~mlff_distiller.errors.DatasetError` for an empty or unlabelled dataset and
    :class:`UserError` when ``out_dir`` is a file or cannot be written.
    """
    config = QualityConfig.from_dict(config) if not isinstance(config, QualityConfig) else config
    out = check_out_dir(out_dir)
    parts = analyse(path, config, progress=progress, validation=validation, diversity_report=diversity_report)
    return write_files(out, _html(*parts), parts, config)
