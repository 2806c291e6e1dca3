"""Student files: checkpoint round trip, TorchScript export (runs without this package), bad files."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from mlff_distiller.cli import main as cli_main
from mlff_distiller.data.graph import atoms_to_batch
from mlff_distiller.data.normalization import NormalizationStats
from mlff_distiller.errors import UserError
from mlff_distiller.student import (
    StudentConfig,
    StudentFileError,
    build_student,
    export_torchscript,
    load_any,
    load_exported,
    load_student,
    read_checkpoint,
    save_student,
)
from mlff_distiller.student import io as student_io

CUTOFF = 4.5
STATS = NormalizationStats(element_energies={1: -1.1, 6: -5.3, 8: -3.7, 14: -4.6}, force_rms=0.7,
                           avg_num_neighbors=12.0, cutoff=CUTOFF)


def structures():
    crystal = bulk("Si", "diamond", 5.43, cubic=True)
    crystal.rattle(0.05, seed=1)
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=2)
    return [mol, crystal]


@pytest.fixture(params=["float32", "float64"])
def model(request):
    torch.manual_seed(0)
    m = build_student(StudentConfig(preset="tiny", cutoff=CUTOFF, dtype=request.param), STATS).eval()
    with torch.no_grad():
        m.readout[-1].weight.mul_(10.0)
    return m


def outputs(model, atoms_list):
    batch = atoms_to_batch(atoms_list, CUTOFF, dtype=torch.float64)
    return model(batch, compute_forces=True, compute_stress=True)


def test_checkpoint_round_trip_and_run_directory(tmp_path, model):
    path = save_student(tmp_path / "run" / "checkpoints" / "best.pt", model, extra={"step": 7})
    assert not list(path.parent.glob(".*tmp*"))  # no temporary left behind
    data = read_checkpoint(tmp_path / "run")
    assert data["extra"] == {"step": 7} and data["format_version"] == student_io.FORMAT_VERSION
    assert "eV" in data["units"]
    for source in (tmp_path / "run", path):
        loaded = load_student(source)
        assert not loaded.training and loaded.config == model.config
        assert loaded.stats.to_dict() == model.stats.to_dict()
        a, b = outputs(model, structures()), outputs(loaded, structures())
        for key in a:
            assert torch.equal(a[key], b[key])


def test_torchscript_export_matches_python_model(tmp_path, model):
    path = export_torchscript(model, tmp_path / "student_ts.pt")
    exported = load_exported(path)
    assert exported.cutoff == CUTOFF and exported.elements == [1, 6, 8, 14]
    assert sum(p.numel() for p in exported.parameters()) == sum(p.numel() for p in model.parameters())
    assert isinstance(load_any(path), type(exported)) and load_any(model) is model
    ref, out = outputs(model, structures()), outputs(exported, structures())
    tol = 1e-12 if model.config.dtype == "float64" else 1e-5
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(out[key], ref[key], atol=tol, rtol=tol)
    # The tensor-level entry point of the scripted module.
    b = atoms_to_batch(structures(), CUTOFF, dtype=torch.float64)
    direct = exported.module.compute(b["numbers"], b["positions"], b["cell"], b["pbc"], b["batch"],
                                     b["edge_index"], b["edge_shift"], 2, True, False)
    torch.testing.assert_close(direct["energy"].detach(), ref["energy"], atol=tol, rtol=tol)


def test_exported_file_runs_without_this_package(tmp_path, model):
    path = export_torchscript(model, tmp_path / "student_ts.pt")
    b = atoms_to_batch(structures(), CUTOFF, dtype=torch.float64)
    np.savez(tmp_path / "batch.npz", **{k: v.numpy() for k, v in b.items()})
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["mlff_distiller"] = None  # any import of this package now fails
        import numpy as np, torch
        d = np.load({str(tmp_path / "batch.npz")!r})
        batch = {{k: torch.from_numpy(d[k]) for k in d.files}}
        m = torch.jit.load({str(path)!r})
        out = m(batch, True, True)
        np.savez({str(tmp_path / "out.npz")!r}, **{{k: v.detach().numpy() for k, v in out.items()}})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    got = np.load(tmp_path / "out.npz")
    ref = outputs(model, structures())
    for key in ("energy", "forces", "stress"):
        np.testing.assert_allclose(got[key], ref[key].numpy(), atol=1e-5, rtol=1e-5)


def test_incompatible_or_foreign_files_give_one_line_errors(tmp_path, model):
    good = save_student(tmp_path / "good.pt", model)
    data = torch.load(good, weights_only=True)
    data["format_version"] = 99
    data["code_version"] = "9.9.9"
    torch.save(data, tmp_path / "future.pt")
    with pytest.raises(StudentFileError, match="format version 99") as err:
        load_student(tmp_path / "future.pt")
    assert "\n" not in str(err.value) and f"reads version {student_io.FORMAT_VERSION}" in str(err.value)

    torch.save({"state_dict": model.state_dict()}, tmp_path / "foreign.pt")
    with pytest.raises(StudentFileError, match="not an mlff-distiller student checkpoint"):
        load_student(tmp_path / "foreign.pt")

    # A pickled module must be refused (weights_only=True), not executed.
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")
    with pytest.raises(StudentFileError, match="cannot read student checkpoint"):
        load_student(tmp_path / "pickled.pt")

    (tmp_path / "garbage.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(StudentFileError, match="corrupt"):
        load_student(tmp_path / "garbage.pt")

    data = torch.load(good, weights_only=True)
    data["state_dict"].pop("filters.0.weight")
    torch.save(data, tmp_path / "truncated.pt")
    with pytest.raises(StudentFileError, match="weights do not match"):
        load_student(tmp_path / "truncated.pt")

    with pytest.raises(StudentFileError, match="checkpoints/best.pt"):
        load_student(tmp_path)  # a directory that is not a run directory
    with pytest.raises(StudentFileError, match="does not exist"):
        load_student(tmp_path / "missing.pt")
    with pytest.raises(StudentFileError, match="not a TorchScript export"):
        load_exported(good)

    ts = export_torchscript(model, tmp_path / "ts.pt")
    with pytest.raises(StudentFileError, match="TorchScript export, not a checkpoint"):
        load_student(ts)
    assert good.read_bytes()  # nothing already written was touched
    assert isinstance(load_student(good), torch.nn.Module)


def test_incompatible_checkpoint_through_the_cli_is_one_line_exit_2(tmp_path, capsys):
    """`mlff-distill export` on an old checkpoint: one error line, exit status 2, no output file."""
    assert issubclass(StudentFileError, UserError)
    torch.save({"format": "mlff-distiller-student", "format_version": 0}, tmp_path / "old.pt")
    code = cli_main(["export", str(tmp_path / "old.pt"), "-o", str(tmp_path / "ts.pt")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("mlff-distill: error:") and "format version 0" in err and "\n" not in err
    assert not (tmp_path / "ts.pt").exists()


def test_compile_flag_does_not_leak_into_copies_or_exports(tmp_path, model):
    import copy

    model.enable_compile()  # lazy: nothing is compiled until the first call
    try:
        assert copy.deepcopy(model)._compiled is None
        exported = load_exported(export_torchscript(model, tmp_path / "ts.pt"))
        save_student(tmp_path / "ck.pt", model)
        assert load_student(tmp_path / "ck.pt")._compiled is None
        assert exported.cutoff == CUTOFF
    finally:
        model.disable_compile()
