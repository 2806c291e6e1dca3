"""The project report: one HTML page, sections in order, verdict, embedded images, missing
parts noted in one line, and a real headless-browser render."""

from __future__ import annotations

import base64
import json
import os
import re
from html.parser import HTMLParser

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import pytest

from mlff_distiller.data.store import DatasetWriter
from mlff_distiller.errors import UserError
from mlff_distiller.quality import evaluate_gates
from mlff_distiller.quality.project_report import NO_BENCH, find_browser, screenshot, write_project_report
from mlff_distiller.quality.synthetic import emt_dataset

SMALL = {"diversity": {"subsample_atoms": 200, "repeats": 2, "pca_structures": 40, "curve_sizes": [50, 100, 200]}}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics(path, n=12):
    cols = ["epoch", "step", "lr", "train_loss", "val_loss", "val_energy_mae_per_atom", "val_energy_rmse_per_atom",
            "val_force_mae", "val_force_rmse", "val_force_rel_rmse", "val_stress_mae", "best", "elapsed_s"]
    lines = [",".join(cols)]
    for e in range(n):
        d = 1.0 / (1 + e)
        lines.append(f"{e},{4 * e},0.001,{2 * d},{3 * d},{0.05 * d},{0.06 * d},{0.2 * d},{0.3 * d},{0.5 * d},,"
                     f"{int(e == n - 1)},{2.0 * e}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _png(path, color):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1], color=color)
    fig.savefig(path)
    plt.close(fig)


BENCH = {
    "student": {"label": "student"},
    "teacher": {"label": "emt"},
    "complete": True,
    "meta": {"cpu": "test cpu", "torch_threads": 1, "torch": "2.x", "date_utc": "2026-01-01 00:00 UTC"},
    "verdict": {
        "passed": False,
        "targets": [
            {
                "target": "force_rel_rmse",
                "value": 0.42,
                "threshold": 0.1,
                "passed": False,
                "measured_on": "held-out teacher MD",
            },
            {
                "target": "md_blowups",
                "value": 0.0,
                "threshold": 0.0,
                "passed": True,
                "measured_on": "2 student Langevin runs",
            },
        ],
    },
    "heldout": {
        "pooled": {
            "n_frames": 20,
            "energy_mae_per_atom": 0.012,
            "energy_mae_per_atom_ci95": [0.01, 0.014],
            "energy_offset_per_atom": 0.003,
            "energy_mae_centered_per_atom": 0.009,
            "force_rel_rmse": 0.42,
        },
        "runs": {
            "cu-300K": {
                "n_frames": 20,
                "energy_mae_per_atom": 0.012,
                "energy_offset_per_atom": 0.003,
                "energy_mae_centered_per_atom": 0.009,
                "force_rel_rmse": 0.42,
            }
        },
    },
    "accuracy": {
        "n_structures": 8,
        "n_atoms": 96,
        "energy_mae_per_atom": 0.02,
        "force_mae": 0.15,
        "force_rmse_relative": 0.4,
        "force_angle_mean_deg": 20.0,
        "per_element": {
            "Cu": {
                "n_atoms": 96,
                "energy_mae_per_atom": None,
                "force_mae": 0.15,
                "force_rmse_relative": 0.4,
                "force_angle_mean_deg": 20.0,
            }
        },
        "per_type": {
            "bulk": {
                "n_structures": 8,
                "n_atoms": 96,
                "energy_mae_per_atom": 0.0217,
                "force_mae": 0.15,
                "force_rmse_relative": 0.4,
                "force_angle_mean_deg": 20.0,
            }
        },
    },
    "systems": {
        "cu-bulk": {
            "n_atoms": 32,
            "speed": {
                "emt": {"force_call_ms": {"median": 4.0}, "md_step_ms": {"median": 5.0}, "ns_per_day": 10.0},
                "student": {"force_call_ms": {"median": 2.0}, "md_step_ms": {"median": 2.5}, "ns_per_day": 20.0},
                "ratio": {"force_call": 2.0, "md_step": 2.0},
            },
            "md": {
                "nve": {
                    "student": {
                        "drift_ev_per_atom_per_ps": 1.5e-4,
                        "simulated_ps": 1.0,
                        "status": "ok",
                        "flagged": False,
                        "flags": [],
                    }
                },
                "stability": {"student": [{"temperature_K": 300, "stable": True, "reason": ""}]},
                "rdf": {"overlap": 0.987},
            },
        }
    },
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("proj")
    (root / "project.json").write_text(json.dumps({"recipe_name": "unit-test", "stages": {}}))
    tier = root / "tiers" / "all"
    tier.mkdir(parents=True)
    ds = emt_dataset(("bulk:Cu-fcc", "cluster:Ag-ico13", "bulk:Ni-bcc"), n_per_source=4, amplitude=0.05,
                     include_minimum=True)
    with DatasetWriter(tier / "dataset.h5") as w:
        w.append(ds)
    (tier / "gate.json").write_text(json.dumps(evaluate_gates(tier / "dataset.h5", "full", SMALL).to_dict(),
                                               default=str))
    _metrics(root / "train" / "metrics.csv")
    (root / "bench").mkdir()
    (root / "bench" / "bench.json").write_text(json.dumps(BENCH))
    for name, color in (("parity.png", "C0"), ("drift_cu-bulk.png", "C1"), ("rdf_cu-bulk.png", "C2")):
        _png(root / "bench" / name, color)
    html = write_project_report(root, root / "report", SMALL)
    return root, html


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.ext, self.ids = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        if "id" in a:
            self.ids.append(a["id"])
        for key in ("src", "href"):
            if key in a and not str(a[key]).startswith(("data:", "#")):
                self.ext.append(a[key])


def _parse(text):
    p = _Collect()
    p.feed(text)
    p.close()
    return p


def test_sections_in_order_and_verdict(project):
    root, html = project
    assert html == root / "report" / "report.html"
    assert sorted(p.name for p in html.parent.iterdir()) == ["dataset_card.md", "quality.json", "report.html"]
    text = html.read_text()
    ids = _parse(text).ids
    order = ["verdict", "training", "accuracy", "speed", "md", "dataset", "gates", "plots", "checks", "diversity",
             "provenance"]
    assert [i for i in ids if i in order] == order
    assert "Project report: unit-test" in text
    assert '<span class="badge fail">NO-GO</span>' in text
    assert '<td class="fail">NOT met (NO-GO)</td>' in text and '<td class="pass">met (GO)</td>' in text
    assert "<td>force_rel_rmse</td><td>0.42</td><td>0.1</td>" in text
    # speed and held-out numbers, in the units the headers state
    assert "<td>cu-bulk</td><td>32</td><td>4</td><td>2</td><td>2.0x</td>" in text
    assert "<td>pooled</td><td>20</td><td>12 [10, 14]</td>" in text
    assert "<td>0.987</td>" in text and "1.50e-04" in text
    # the training summary line comes from metrics.csv: best val loss at the last epoch
    assert "11 epochs; best validation loss 0.25 at epoch 11" in text


def test_long_tables_collapsed_and_gates_once(project):
    _, html = project
    text = html.read_text()
    details = re.findall(r"<details>.*?</details>", text, flags=re.S)
    assert any("type bulk" in d and "21.7" in d for d in details)  # per-type table, meV/atom
    assert any(re.search(r"<td>bulk:Cu-fcc</td><td>\d+</td>", d) for d in details)  # per-source counts
    assert "<td>all</td>" in text and "type bulk" not in text.split("<details>")[0]
    assert text.count("tier all (checkpoint full)") == 1  # one gate: the tier that exists
    assert "10k" not in text.split('id="gates"')[1].split('id="plots"')[0]
    # plots before the long tables inside the dataset section
    assert text.index('id="plot-pca-map"') < text.index('id="checks"')


def test_images_embedded(project):
    _, html = project
    p = _parse(html.read_text())
    assert p.ext == []
    ids = {img["id"] for img in p.imgs}
    assert {"plot-training-curves", "plot-parity", "plot-drift-cu-bulk", "plot-rdf-cu-bulk",
            "plot-pca-map", "plot-element-histogram"} <= ids
    for img in p.imgs:
        head, b64 = img["src"].split(",", 1)
        assert head == "data:image/png;base64"
        assert base64.b64decode(b64, validate=True)[:8] == PNG_MAGIC


def test_missing_bench_and_dataset_are_one_line_each(tmp_path):
    _metrics(tmp_path / "train" / "metrics.csv", n=3)
    html = write_project_report(tmp_path, None, SMALL)
    text = html.read_text()
    assert html == tmp_path / "report" / "report.html"
    assert text.count(NO_BENCH) == 1
    ids = _parse(text).ids
    assert "speed" not in ids and "md" not in ids and "accuracy" not in ids
    assert "training" in ids and "plot-training-curves" in ids
    assert "No labelled dataset in this project yet" in text
    with pytest.raises(UserError, match="project directory"):
        write_project_report(tmp_path / "nope")


def test_dataset_only_report_keeps_its_layout(tmp_path):
    from mlff_distiller.quality import write_report

    html, _ = write_report(emt_dataset(("bulk:Cu-fcc", "cluster:Ag-ico13"), n_per_source=3), tmp_path, SMALL)
    text = html.read_text()
    ids = _parse(text).ids
    assert "verdict" not in ids and "training" not in ids
    assert [i for i in ids if i in ("dataset", "gates", "plots", "checks")] == ["dataset", "gates", "plots", "checks"]
    assert "1k: verdict (threshold)" in text and "full: verdict (threshold)" in text


@pytest.mark.skipif(find_browser() is None, reason="no headless Chromium installed (apt-get install chromium)")
def test_report_renders_in_headless_browser(project, tmp_path):
    import matplotlib.image as mpimg

    _, html = project
    png = screenshot(html, tmp_path / "shot.png", width=1000, height=1500)
    assert png.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(png)[..., :3]
    assert img.shape[:2] == (1500, 1000)
    not_white = (img < 0.95).any(axis=-1).mean()
    assert not_white > 0.02, f"screenshot looks blank ({not_white:.3%} non-white pixels)"
    assert np.unique(img.reshape(-1, 3).round(2), axis=0).shape[0] > 50  # text, badges and plots in colour
