"""run_bench / `mlff-distill bench` end to end: EMT teacher, a small trained student, bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from mlff_distiller.bench import BenchConfig, run_bench
from mlff_distiller.bench.accuracy import accuracy_metrics
from mlff_distiller.cli import main
from mlff_distiller.errors import ConfigError, UserError

# settings small enough for the default test run; MD fidelity still runs every stage
FAST = dict(n_rounds=2, n_calls=2, n_md_steps=2, warmup=1, timestep_fs=2.0, drift_ps=0.1,
            stability_temperatures_K=[300.0, 1200.0], stability_ps=0.04, rdf_ps=0.06, rdf_every=5, rdf_r_max=4.0,
            memory=False)


def labelled_cu(n, seed, size=(1, 1, 1)):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.61 * (1 + rng.normal(0, 0.01)), cubic=True).repeat(size)
        a.positions += rng.normal(0, 0.08, a.positions.shape)
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        a.info["provenance"] = {"source": "bulk:Cu-fcc", "sampler": "rattle", "params": {}, "parent": -1,
                                "group": f"g{k}", "seed": seed, "teacher": "emt"}
        out.append(a)
    return out


@pytest.fixture(scope="module")
def trained_student(tmp_path_factory):
    """A tiny PaiNN-class student distilled from EMT on rattled fcc Cu (a run directory)."""
    training = pytest.importorskip("mlff_distiller.training")
    from mlff_distiller.data.store import DatasetWriter

    d = tmp_path_factory.mktemp("bench_student")
    with DatasetWriter(d / "train.h5", label_fields=("energy", "forces")) as w:
        w.append(labelled_cu(12, seed=1))
    cfg = training.TrainConfig.from_dict(
        dict(student={"preset": "tiny", "cutoff": 4.0, "num_features": 16, "num_rbf": 8}, batch_size=4,
             max_epochs=15, warmup_steps=2, lr=1e-2, val_fraction=0.25, seed=0, checkpoint_every=1000)
    )
    training.DistillationTrainer(d / "train.h5", cfg, d / "run", progress=False).fit()
    held = d / "held.extxyz"
    write(held, labelled_cu(3, seed=99))
    return d / "run", held


@pytest.fixture(scope="module")
def cu32_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sys") / "cu32.xyz"
    write(path, bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2)))
    return str(path)


def test_bench_trained_student_against_emt(trained_student, cu32_file, tmp_path):
    run, held = trained_student
    out = tmp_path / "bench"
    res = run_bench(str(run), "emt", systems=[cu32_file], dataset=str(held), out_dir=str(out), progress=False,
                    **{**FAST, "memory": True})
    s_lab, t_lab = res["student"]["label"], res["teacher"]["label"]
    assert res["student"]["elements"] == frozenset({29})
    sysres = res["systems"]["cu32"]
    sp = sysres["speed"]
    # the ratio is exactly teacher time / student time
    assert sp["ratio"]["force_call"] == sp[t_lab]["force_call_ms"]["median"] / sp[s_lab]["force_call_ms"]["median"]
    assert sp["ratio"]["md_step"] == sp[t_lab]["md_step_ms"]["median"] / sp[s_lab]["md_step_ms"]["median"]
    assert res["meta"]["torch_threads"] == 1
    # memory: each model rebuilt and measured in a fresh process
    for lab in (s_lab, t_lab):
        mem = sp[lab]["memory"]
        assert mem["isolated"] is True and "error" not in mem, mem
        assert mem["rss_peak_mb"] > mem["rss_peak_increase_mb"] >= 0
    # accuracy equals a direct recomputation with the student calculator
    from ase.io import read

    from mlff_distiller.student import StudentCalculator

    calc = StudentCalculator(str(run))
    recs = []
    for a in read(held, ":"):
        b = a.copy()
        b.calc = calc
        recs.append({"numbers": a.numbers, "energy_ref": a.get_potential_energy(), "forces_ref": a.get_forces(),
                     "energy_pred": b.get_potential_energy(), "forces_pred": b.get_forces()})
    direct = accuracy_metrics(recs)
    for key in ("energy_mae_per_atom", "force_mae", "force_rmse_relative", "force_angle_mean_deg"):
        assert res["accuracy"][key] == pytest.approx(direct[key], rel=1e-5), key
    assert res["accuracy"]["force_rmse_relative"] < 1.0  # it learned something
    # MD fidelity ran for the student and the RDF compared both
    md = sysres["md"]
    assert md["nve"][s_lab]["n_steps"] == 50
    assert [x["temperature_K"] for x in md["stability"][s_lab]] == [300.0, 1200.0]
    assert 0.0 <= md["rdf"]["overlap"] <= 1.0
    # outputs
    data = json.loads((out / "bench.json").read_text())
    assert data["complete"] is True
    assert data["systems"]["cu32"]["speed"]["ratio"]["md_step"] == pytest.approx(sp["ratio"]["md_step"])
    text = (out / "bench.md").read_text()
    assert "| cu32 | 32 |" in text and "Accuracy on the held-out set" in text and "MD fidelity" in text
    for png in ("parity.png", "drift_cu32.png", "rdf_cu32.png"):
        assert (out / png).stat().st_size > 1000


def test_exploding_timestep_is_reported_not_raised(trained_student, cu32_file):
    run, _ = trained_student
    res = run_bench(str(run), "emt", systems=[cu32_file], out_dir=None, progress=False,
                    **{**FAST, "timestep_fs": 80.0, "drift_ps": 40.0, "rdf": False, "memory": False})
    nve = res["systems"]["cu32"]["md"]["nve"]["student"]
    assert nve["flagged"] and nve["n_steps"] < 500
    assert nve["status"] in ("exploded", "error")


def test_element_coverage_errors(trained_student, tmp_path):
    run, _ = trained_student
    # student claims Zn, which EMT lacks: the missing element is named
    with pytest.raises(UserError, match=r"supports Zn which teacher emt does not"):
        run_bench(str(run), "emt", systems=["cu-64"], out_dir=None, progress=False, student_elements=[29, 30])
    # a system with an element neither supports
    with pytest.raises(UserError, match=r"system si-64 contains Si, which neither"):
        run_bench(str(run), "emt", systems=["si-64"], out_dir=None, progress=False)
    # a system with an element only the teacher supports
    ag = tmp_path / "ag.xyz"
    write(ag, bulk("Ag", "fcc", a=4.09, cubic=True))
    with pytest.raises(UserError, match=r"contains Ag, which the student does not support \(student elements: Cu\)"):
        run_bench(str(run), "emt", systems=[str(ag)], out_dir=None, progress=False)
    # default systems: none is made of Cu only, so nothing is left to run
    with pytest.raises(UserError, match="none of the default systems"):
        run_bench(str(run), "emt", out_dir=None, progress=False)


def test_bad_inputs_are_one_line_errors(trained_student, tmp_path):
    run, _ = trained_student
    with pytest.raises(UserError, match="neither a built-in"):
        run_bench(str(run), "emt", systems=["no-such-system"], out_dir=None, progress=False)
    with pytest.raises(UserError, match="does not exist"):
        run_bench(str(tmp_path / "nothing"), "emt", systems=["cu-64"], out_dir=None, progress=False)
    with pytest.raises(ConfigError, match="timestep_fs"):
        run_bench(str(run), "emt", systems=["cu-64"], out_dir=None, progress=False, timestep_fs=-1)
    with pytest.raises(ConfigError, match="unknown key"):
        BenchConfig.from_dict({"timestep": 1.0})
    with pytest.raises(UserError, match="given twice"):
        run_bench(str(run), "emt", systems=["cu-64", "cu-64"], out_dir=None, progress=False)


def test_cli_bench(trained_student, cu32_file, tmp_path, capsys):
    run, held = trained_student
    import yaml

    out = tmp_path / "cli"
    recipe = tmp_path / "recipe.yaml"  # a recipe's bench section; flags override it
    recipe.write_text(yaml.safe_dump({"name": "t", "bench": {**FAST, "stability_ps": 0.02}}))
    code = main(["bench", "--student", str(run), "--teacher", "emt", "--systems", cu32_file, "--dataset", str(held),
                 "-o", str(out), "--config", str(recipe), "--rounds", "1", "--drift-ps", "0.02",
                 "--stability-temps", "300", "--no-rdf"])
    assert code == 0
    data = json.loads((out / "bench.json").read_text())
    assert data["config"]["n_rounds"] == 1 and data["config"]["stability_ps"] == 0.02 and not data["config"]["rdf"]
    assert data["systems"]["cu32"]["md"]["nve"]["student"]["n_steps"] == 10
    assert (out / "bench.md").exists()
    assert "## Speed" in capsys.readouterr().out
    # bad input: one line on stderr, exit 2, nothing written
    bad_out = tmp_path / "bad"
    code = main(["bench", "--student", str(tmp_path / "missing"), "--teacher", "emt", "-o", str(bad_out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("mlff-distill: error:") and err.count("\n") == 1
    assert not bad_out.exists()
    code = main(["bench", "--student", str(run), "--teacher", "{not json", "-o", str(bad_out)])
    assert code == 2 and "cannot parse '{not json'" in capsys.readouterr().err


def test_builtin_systems_are_what_the_docs_say():
    from mlff_distiller.bench.systems import load_system

    expect = {"aspirin": (21, "C9H8O4"), "si-64": (64, "Si64"), "si-512": (512, "Si512"), "cu-64": (64, "Cu64")}
    for name, (n, formula) in expect.items():
        s = load_system(name)
        assert len(s.atoms) == n and s.formula == formula
    w = load_system("water-192").atoms
    assert len(w) == 192
    density = w.get_masses().sum() / w.get_volume() * 1.66054  # amu/A^3 -> g/cm^3
    assert density == pytest.approx(1.0, rel=0.01)
    d = w.get_all_distances(mic=True) + 10 * np.eye(len(w))
    assert d.min() > 0.9  # no overlapping molecules
    assert os.path.basename(load_system("aspirin").source) == "builtin"


def test_default_systems_skip_what_the_models_cannot_run(tmp_path):
    # a plain ASE calculator as the student, declared to cover H, C, O only
    res = run_bench(EMT(), "emt", out_dir=str(tmp_path), progress=False, student_elements=[1, 6, 8],
                    md=False, memory=False, n_rounds=1, n_calls=1, n_md_steps=1, warmup=0)
    assert list(res["systems"]) == ["aspirin"]
    assert set(res["skipped"]) == {"si-64", "si-512"}
    assert "Si" in res["skipped"]["si-64"]
    assert any("Al" in note for note in res["notes"])  # EMT also covers Al, Cu, ...: noted, not an error
    text = (tmp_path / "bench.md").read_text()
    assert "## Skipped" in text and "si-512" in text


def test_bench_runs_student_md_while_the_heldout_teacher_md_runs_on_workers(trained_student, tmp_path):
    """With a cluster, the held-out teacher MD runs on its workers while the student's NVE and
    stability runs go on here; the RDF then takes the teacher's side from those frames."""
    run, _ = trained_student
    heldout = {"systems": ["cu-64"], "temperatures_K": [300, 600], "frames": 3, "interval": 3, "equil_steps": 3}
    res = run_bench(str(run), "emt", systems=["cu-64"], out_dir=str(tmp_path / "bench"), progress=False,
                    cluster={"n_workers": 2}, **{**FAST, "rdf_temperature_K": 300.0, "heldout": heldout})
    s_lab = res["student"]["label"]
    md = res["systems"]["cu-64"]["md"]
    assert md["nve"][s_lab]["n_steps"] == 50 and len(md["stability"][s_lab]) == 2
    assert md["rdf"]["teacher_source"] == "held-out teacher MD cu-64@300K (3 frames, ok)"
    assert set(res["heldout"]["runs"]) == {"cu-64@300K", "cu-64@600K"}
    assert res["heldout"]["pooled"]["n_frames"] == 6 and res["complete"]
    assert sorted(p.name for p in (tmp_path / "bench" / "heldout_frames").glob("*.json")) == [
        "cu-64@300K.json", "cu-64@600K.json"]


def test_interrupted_bench_keeps_what_was_measured(tmp_path):
    class Interrupting(EMT):
        """Works through the speed stage, then the user presses Ctrl-C during MD."""

        calls = 0

        def calculate(self, *args, **kwargs):
            type(self).calls += 1
            if type(self).calls > 5:  # speed stage: 2 (warm-up MD) + 1 call + 2 (MD start + step)
                raise KeyboardInterrupt
            super().calculate(*args, **kwargs)

    a = bulk("Cu", "fcc", a=3.61, cubic=True)
    a.info["name"] = "cu4"
    with pytest.raises(KeyboardInterrupt):
        run_bench(Interrupting(), EMT(), systems=[a], out_dir=str(tmp_path), progress=False, memory=False,
                  n_rounds=1, n_calls=1, n_md_steps=1, warmup=0, drift_ps=0.01, timestep_fs=1.0)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["complete"] is False
    assert data["systems"]["cu4"]["speed"]["ratio"]["force_call"] > 0
    assert "md" not in data["systems"]["cu4"]
    assert "Partial result" in (tmp_path / "bench.md").read_text()


def test_bench_torchscript_export_of_the_student(trained_student, cu32_file, tmp_path):
    # `mlff-distill run` benches the exported student.pt: same numbers path as the run directory
    from mlff_distiller.student import export_torchscript, load_student

    ts = tmp_path / "student_ts.pt"
    export_torchscript(load_student(str(trained_student[0])), ts)
    res = run_bench(str(ts), "emt", systems=[cu32_file], out_dir=None, progress=False,
                    **{**FAST, "md": False})
    assert res["student"]["elements"] == frozenset({29})
    assert res["student"]["backend"] == "numba"  # auto: the compiled CPU kernel
    sp = res["systems"]["cu32"]["speed"]
    assert sp["ratio"]["md_step"] == sp["emt"]["md_step_ms"]["median"] / sp["student"]["md_step_ms"]["median"]
    # the torch backend of the same file, asked for by name; memory measured in a fresh process
    res = run_bench(str(ts), "emt", systems=[cu32_file], out_dir=None, progress=False,
                    **{**FAST, "md": False, "memory": True, "student_backend": "torch"})
    assert res["student"]["backend"] == "torch"
    assert res["systems"]["cu32"]["speed"]["student"]["memory"].get("isolated") is True
    with pytest.raises(ConfigError, match="student_backend"):
        BenchConfig.from_dict({"student_backend": "jax"})


def test_teacher_nve_and_md_systems_selection():
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    a.info["name"] = "cu8"
    b = bulk("Cu", "fcc", a=3.61, cubic=True)
    b.info["name"] = "cu4"
    res = run_bench(EMT(), EMT(), systems=[a, b], out_dir=None, progress=False,
                    **{**FAST, "md_systems": ["cu4"], "teacher_nve": True, "rdf": False, "drift_ps": 0.02})
    assert "md" not in res["systems"]["cu8"]
    nve = res["systems"]["cu4"]["md"]["nve"]
    assert set(nve) == {"student", "teacher"}
    # the same calculator as student and teacher, same seed: identical trajectories
    assert nve["student"]["drift_ev_per_atom_per_ps"] == pytest.approx(nve["teacher"]["drift_ev_per_atom_per_ps"])
    with pytest.raises(UserError, match="md_systems names cu9"):
        run_bench(EMT(), EMT(), systems=[b], out_dir=None, progress=False, **{**FAST, "md_systems": ["cu9"]})


@pytest.mark.slow
def test_bench_against_chgnet_on_aspirin(tmp_path):
    """The default teacher end to end (CHGNet boxes the molecule itself); an untrained student."""
    pytest.importorskip("chgnet")
    from mlff_distiller.data.normalization import NormalizationStats
    from mlff_distiller.student import StudentConfig, build_student, save_student

    stats = NormalizationStats(element_energies={1: -3.0, 6: -8.0, 8: -6.0}, avg_num_neighbors=10.0, cutoff=4.0)
    save_student(tmp_path / "s.pt", build_student(StudentConfig(preset="tiny", cutoff=4.0, elements=[1, 6, 8]), stats))
    res = run_bench(str(tmp_path / "s.pt"), "chgnet", systems=["aspirin"], out_dir=str(tmp_path / "out"),
                    progress=False, **{**FAST, "timestep_fs": 0.5, "memory": True})
    sp = res["systems"]["aspirin"]["speed"]
    assert sp["chgnet"]["memory"]["isolated"] and "error" not in sp["chgnet"]["memory"]
    assert sp["ratio"]["force_call"] > 1.0  # a 32-feature PaiNN beats CHGNet on any machine
    assert "rdf" in res["systems"]["aspirin"]["md"]
