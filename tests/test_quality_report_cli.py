"""HTML report (parses, self-contained, every plot), dataset card, and the validate/report CLI."""

from __future__ import annotations

import base64
import json
import os
from html.parser import HTMLParser

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import pytest

from mlff_distiller.cli import main
from mlff_distiller.data.store import DatasetWriter
from mlff_distiller.quality import write_report
from mlff_distiller.quality.report import PLOTS
from mlff_distiller.quality.synthetic import emt_dataset

SMALL_YAML = """quality:
  diversity: {subsample_atoms: 200, repeats: 2, pca_structures: 40, curve_sizes: [50, 100, 200]}
"""
SMALL = {"diversity": {"subsample_atoms": 200, "repeats": 2, "pca_structures": 40, "curve_sizes": [50, 100, 200]}}
ATTRS = {
    "teacher_fingerprint": {"teacher": "emt", "package": "ase", "version": "3.23.0",
                            "model": "ase.calculators.emt:EMT", "weights_sha256": "ab" * 32},
    "teacher_fingerprint_id": "emt-0123456789ab",
    "license": "CC-BY-4.0",
    "pool_attrs": {"recipe_name": "quickstart", "tier": "1k", "seed": 7,
                   "recipe": {"name": "quickstart", "seed": 7, "generation": {"count": 20}},
                   "recipe_resolved": {"name": "quickstart", "seed": 7,
                                       "generation": {"count": 20, "min_distance_factor": 0.6}}},
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    path = d / "data.h5"
    ds = emt_dataset(("bulk:Cu-fcc", "cluster:Ag-ico13", "bulk:Ni-bcc", "smiles:CH4"), n_per_source=5,
                     amplitude=0.05, include_minimum=True)
    ds[3].calc.results["forces"][0] = [99.0, 0.0, 0.0]  # one flagged structure
    with DatasetWriter(path, attrs=ATTRS) as w:
        w.append(ds)
        w.record_failures([(77, "scf did not converge")])
    (d / "q.yaml").write_text(SMALL_YAML)
    return path


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.tags, self.ext = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(a)
        for key in ("src", "href"):
            if key in a and not str(a[key]).startswith(("data:", "#")):  # in-page anchors are fine
                self.ext.append(a[key])


@pytest.fixture(scope="module")
def report(dataset):
    """The report written once through the CLI; the Python API is exercised below."""
    out = dataset.parent / "rep"
    assert main(["report", str(dataset), "-o", str(out), "--config", str(dataset.parent / "q.yaml")]) == 0
    return out / "report.html", out / "dataset_card.md"


def test_report_html_parses_and_embeds_every_plot(dataset, report):
    html_path, card_path = report
    assert html_path == dataset.parent / "rep" / "report.html" and card_path.name == "dataset_card.md"
    text = html_path.read_text()
    parser = _Collect()
    parser.feed(text)
    parser.close()
    assert parser.ext == []  # self-contained: no external file or URL
    ids = {img["id"]: img for img in parser.imgs}
    assert set(ids) == {f"plot-{key}" for key, _ in PLOTS}
    for img in ids.values():
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        png = base64.b64decode(img["src"][len(prefix):], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    for word in ("Gate verdicts", "Validation checks", "max_force", "Diversity", "QUESTS entropy H",
                 "1k", "10k", "full", "bulk:Cu-fcc"):
        assert word in text
    assert "<td>max_force</td><td>on</td><td>1</td>" in text
    assert "<td>rattle</td><td>perturbed</td><td>16</td>" in text
    q = json.loads((html_path.parent / "quality.json").read_text())
    assert q["validation"]["counts"]["max_force"] == 1
    assert set(q["gates"]) == {"1k", "10k", "full"}
    assert q["diversity"]["structural"]["subsample_atoms"] == 200


def test_dataset_card_fields(report):
    _, card_path = report
    card = card_path.read_text()
    for needle in (
        "## Teacher",
        "- name: emt",
        "ase 3.23.0",
        "ab" * 32,
        "emt-0123456789ab",
        "## Units",
        "eV/A",
        "recipe: quickstart (tier 1k)",
        "recipe seed: 7",
        "```yaml",
        "count: 20",
        "Resolved recipe (every default filled in), as stored by generation:",
        "min_distance_factor: 0.6",  # a default: only the resolved recipe has it
        "| bulk:Cu-fcc | 5 |",
        "| rattle | 16 |",
        "| none | 4 |",
        "## Splits",
        "## Code version",
        "mlff-distiller",
        "## License",
        "CC-BY-4.0",
        "## Known limitations",
        "failed labelling attempts | 1",
        "1 structures are flagged",
    ):
        assert needle in card, needle
    assert "| structures | 20 |" in card


def test_report_refuses_a_file_as_output_dir(dataset, tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    assert main(["report", str(dataset), "-o", str(f)]) == 2
    assert f.read_text() == "x"


def test_write_report_api_and_atomic_rewrite(dataset, report, tmp_path):
    out = tmp_path / "api"
    html_path, card_path = write_report(emt_dataset(("bulk:Cu-fcc", "cluster:Ag-ico13"), n_per_source=3), out,
                                        SMALL)
    assert (html_path, card_path) == (out / "report.html", out / "dataset_card.md")
    assert "in-memory dataset" in card_path.read_text()
    assert sorted(p.name for p in out.iterdir()) == ["dataset_card.md", "quality.json", "report.html"]  # no temp files


def test_cli_validate_exit_codes(dataset, tmp_path, capsys):
    cfg = str(dataset.parent / "q.yaml")
    # one of 20 structures flagged = 5 %: passes the 1k gate (<= 5 %), fails full (<= 2 %)
    assert (
        main(["validate", str(dataset), "--config", cfg, "--checkpoint", "1k", "--json", str(tmp_path / "v.json")]) == 0
    )
    out = capsys.readouterr().out
    assert "gate 1k: PASSED" in out and "max_force" in out
    assert json.loads((tmp_path / "v.json").read_text())["gate"]["passed"] is True
    assert main(["validate", str(dataset), "--config", cfg, "--checkpoint", "full"]) == 1
    assert "FAIL: flagged fraction" in capsys.readouterr().out


@pytest.mark.parametrize(
    "yaml_text, match",
    [
        ("quality:\n  checks:\n    not_a_check: {}\n", "quality.checks: unknown key 'not_a_check'"),
        ("quality: [1, 2\n", "not valid YAML"),
    ],
)
def test_cli_bad_config_is_one_line(dataset, tmp_path, capsys, yaml_text, match):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    assert main(["validate", str(dataset), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlff-distill: error: ") and match in err and "\n" not in err


def test_cli_bad_dataset_is_one_line(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "missing.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not found" in err and "\n" not in err
    empty = tmp_path / "empty.h5"
    with DatasetWriter(empty):
        pass
    assert main(["validate", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert "empty" in err and "\n" not in err
    pool = tmp_path / "pool.h5"
    structures = emt_dataset(("bulk:Cu-fcc",), n_per_source=2)
    for a in structures:
        a.calc = None
    with DatasetWriter(pool, label_fields=()) as w:
        w.append(structures)
    assert main(["report", str(pool), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no energy labels" in err and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_energy_only_labels_and_unwritable_output(tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlff_distiller.errors import UserError
    from mlff_distiller.quality import diversity, validate

    ds = emt_dataset(("bulk:Cu-fcc", "cluster:Ag-ico13"), n_per_source=3, amplitude=0.05)
    for a in ds:
        a.calc = SinglePointCalculator(a, energy=a.calc.results["energy"])
    v = validate(ds)
    assert v.n_flagged == 0 and np.all(np.isnan(v.values["max_force"]))
    d = diversity(ds, SMALL)
    assert d.energetic["force_spread"] == 0.0 and d.energetic["force_magnitude_stats"] == {"n": 0}
    html_path, card_path = write_report(ds, tmp_path / "ok", SMALL)
    assert "label fields | energy |" in card_path.read_text() and html_path.exists()
    from mlff_distiller.quality import evaluate_gates

    gate = evaluate_gates(ds, "1k", SMALL)
    reused, _ = write_report(ds, tmp_path / "reuse", SMALL, validation=gate.validation,
                             diversity_report=gate.diversity)
    assert f"{gate.diversity.entropy:.3f}" in reused.read_text()
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a parent directory should be")
    with pytest.raises(UserError, match="cannot write the report") as err:
        write_report(ds, blocker / "sub", SMALL)
    assert "\n" not in str(err.value)
