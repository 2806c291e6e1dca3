"""``mlff-distill train`` / ``export`` and the one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from mlff_distiller.cli import main
from mlff_distiller.data.graph import atoms_to_batch
from test_training_core import TINY, emt_structures, small_config, write_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    atoms = emt_structures(n_roots=3, per_root=2, seed=5)
    return {
        "dir": d,
        "atoms": atoms,
        "full": write_dataset(d / "full.h5", atoms),
        "energy_only": write_dataset(d / "energy.h5", atoms, ("energy",)),
    }


def write_config(path: Path, d: dict) -> Path:
    path.write_text(yaml.safe_dump(d))
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlff-distill: error: ") and "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def trained_run(data):
    conf = write_config(data["dir"] / "c.yaml", small_config(max_epochs=2, val_fraction=0.3).to_dict())
    run = data["dir"] / "run"
    assert main(["train", str(data["full"]), "--config", str(conf), "-o", str(run), "--no-progress"]) == 0
    return run


def test_train_then_export_torchscript_matches_python_model(data, trained_run, tmp_path, capsys):
    from mlff_distiller.student import load_exported, load_student

    out = tmp_path / "student.pt"
    assert main(["export", str(trained_run), "-o", str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    exported = load_exported(out)
    model = load_student(trained_run)
    batch = atoms_to_batch(data["atoms"], cutoff=model.cutoff)
    a = model(batch, compute_forces=True)
    b = exported(batch, compute_forces=True)
    assert torch.allclose(a["energy"], b["energy"], rtol=1e-6, atol=1e-5)
    assert torch.allclose(a["forces"], b["forces"], rtol=1e-5, atol=1e-5)
    # the last checkpoint exports too, and holds other (raw, non-EMA) weights
    out_last = tmp_path / "last.pt"
    assert main(["export", str(trained_run), "-o", str(out_last), "--checkpoint", "last"]) == 0
    c = load_exported(out_last)(batch, compute_forces=False)
    assert not torch.allclose(a["energy"], c["energy"])


def test_recipe_with_training_section_is_accepted(data, tmp_path):
    recipe = {"name": "demo", "seed": 0, "training": small_config(max_epochs=1, val_fraction=0.3).to_dict()}
    conf = write_config(tmp_path / "recipe.yaml", recipe)
    assert main(["train", str(data["full"]), "--config", str(conf), "-o", str(tmp_path / "r"), "--no-progress"]) == 0
    assert (tmp_path / "r" / "checkpoints" / "best.pt").is_file()


def test_dataset_without_forces_is_one_line_error(data, tmp_path, capsys):
    conf = write_config(tmp_path / "c.yaml", {"forces_weight": 5.0, "student": TINY})
    run = tmp_path / "run"
    assert main(["train", str(data["energy_only"]), "--config", str(conf), "-o", str(run)]) == 2
    err = one_line_error(capsys)
    assert "no force labels" in err and "forces_weight" in err
    assert not run.exists()  # nothing written


def test_energy_only_dataset_trains_with_zero_force_weight(data, tmp_path):
    conf = write_config(tmp_path / "c.yaml", small_config(max_epochs=1, forces_weight=0.0, stress_weight=0.0,
                                                          val_fraction=0.3).to_dict())
    assert main(["train", str(data["energy_only"]), "--config", str(conf), "-o", str(tmp_path / "r"),
                 "--no-progress"]) == 0
    rows = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    assert rows[1].split(",")[7] == "nan"  # val_force_mae: no force labels


@pytest.mark.parametrize(
    "config, expect",
    [({"learning_rate": 0.1}, "'learning_rate'"),
     ({"student": {"preset": "huge"}}, "preset"),
     ({"student": {"preset": "tiny", "widht": 3}}, "unknown key 'widht'"),
     ({"schedule": "linear"}, "schedule"),
     ({"stress_weight": 1.0, "student": TINY}, None)],
)
def test_bad_config_is_one_line_error(data, tmp_path, capsys, config, expect):
    conf = write_config(tmp_path / "c.yaml", config)
    ds = data["energy_only"] if expect is None else data["full"]
    if expect is None:  # stress asked of a dataset without stress labels
        config["forces_weight"] = 0.0
        write_config(conf, config)
        expect = "no stress labels"
    assert main(["train", str(ds), "--config", str(conf), "-o", str(tmp_path / "run")]) == 2
    assert expect in one_line_error(capsys)


def test_file_errors_are_one_line(data, trained_run, tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "r1")]) == 2
    assert "not found" in one_line_error(capsys)
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    assert main(["train", str(data["full"]), "--config", str(bad), "-o", str(tmp_path / "r2")]) == 2
    assert "not valid YAML" in one_line_error(capsys)
    assert main(["train", str(data["full"]), "--config", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "r3")]) == 2
    assert "does not exist" in one_line_error(capsys)
    # an existing run is never overwritten
    before = (trained_run / "checkpoints" / "best.pt").read_bytes()
    assert main(["train", str(data["full"]), "-o", str(trained_run)]) == 2
    assert "--resume" in one_line_error(capsys)
    assert (trained_run / "checkpoints" / "best.pt").read_bytes() == before
    # export errors
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x.pt")]) == 2
    assert "does not exist" in one_line_error(capsys)
    assert main(["export", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.pt")]) == 2
    assert "does not exist" in one_line_error(capsys)
    ckpt = trained_run / "checkpoints" / "best.pt"
    assert main(["export", str(ckpt), "-o", str(ckpt)]) == 2
    assert "overwrite" in one_line_error(capsys)


def test_elements_missing_from_student_config(data, tmp_path, capsys):
    conf = write_config(tmp_path / "c.yaml", {"student": {**TINY, "elements": ["Cu"]}})
    assert main(["train", str(data["full"]), "--config", str(conf), "-o", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "Ni" in one_line_error(capsys)


def test_tiny_dataset_and_missing_device_are_one_line_errors(data, tmp_path, capsys):
    one = write_dataset(tmp_path / "one.h5", data["atoms"][:1])
    assert main(["train", str(one), "-o", str(tmp_path / "r1"), "--no-progress"]) == 2
    assert "at least 2" in one_line_error(capsys)
    if not torch.cuda.is_available():
        conf = write_config(tmp_path / "c.yaml", {"device": "cuda", "student": TINY})
        assert main(["train", str(data["full"]), "--config", str(conf), "-o", str(tmp_path / "r2")]) == 2
        assert "CUDA" in one_line_error(capsys)
