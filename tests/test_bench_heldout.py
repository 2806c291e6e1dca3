"""Held-out teacher-MD accuracy and the accuracy gate (bench/heldout.py, bench/targets.py).

EMT plays the teacher (this tests the measurement, not a teacher); a student that *is* the
teacher scores exactly zero, a shifted one shows exactly its offset.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from ase.calculators.emt import EMT

from mlff_distiller.bench.heldout import (
    HeldoutConfig,
    heldout_metrics,
    paired_difference,
    score_frames,
    teacher_md_frames,
)
from mlff_distiller.bench.systems import load_system
from mlff_distiller.bench.targets import check_targets, evaluate_targets, verdict_line
from mlff_distiller.errors import ConfigError


class ShiftedEMT(EMT):
    """EMT plus a constant energy per atom (eV/atom) and a force scale: a known error."""

    def __init__(self, shift=0.0, force_scale=1.0):
        super().__init__()
        self.shift, self.force_scale = shift, force_scale

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        self.results["energy"] += self.shift * len(self.atoms)
        self.results["free_energy"] = self.results["energy"]
        self.results["forces"] = self.results["forces"] * self.force_scale


def _record(n, e_ref, e_pred, f_ref, f_pred):
    return {
        "n": n,
        "e_ref": e_ref,
        "e_pred": e_pred,
        "f_ref": np.asarray(f_ref, float),
        "f_pred": np.asarray(f_pred, float),
    }


@pytest.fixture(scope="module")
def frames():
    cfg = HeldoutConfig(systems=["cu-64"], temperatures_K=[600.0], frames=4, interval=3, equil_steps=3)
    atoms = load_system("cu-64").atoms
    frames, report = teacher_md_frames(EMT(), atoms, 600.0, cfg, seed=1)
    return frames, report


def test_teacher_frames_carry_the_teachers_labels(frames):
    frames, report = frames
    assert len(frames) == 4 and report["stable"]
    # the frames move (MD ran) and each label is the teacher's at exactly those positions
    assert not np.allclose(frames[0].positions, frames[-1].positions)
    for f in frames:
        check = f.copy()
        check.calc = EMT()
        assert check.get_potential_energy() == pytest.approx(f.info["energy_ref"], abs=1e-10)
        np.testing.assert_allclose(check.get_forces(), f.arrays["forces_ref"], atol=1e-10)


def test_student_equal_to_teacher_scores_zero_and_a_shift_is_an_offset(frames):
    frames, _ = frames
    same = heldout_metrics(score_frames(EMT(), frames), ["a"] * len(frames), n_boot=50)
    assert same["energy_mae_per_atom"] == pytest.approx(0.0, abs=1e-12)
    assert same["force_rel_rmse"] == pytest.approx(0.0, abs=1e-12)
    shifted = heldout_metrics(
        score_frames(ShiftedEMT(shift=0.025, force_scale=1.1), frames), ["a"] * len(frames), n_boot=50
    )
    # a constant per-atom shift is all offset: absolute MAE = offset, centered MAE = 0
    assert shifted["energy_mae_per_atom"] == pytest.approx(0.025, rel=1e-9)
    assert shifted["energy_offset_per_atom"] == pytest.approx(0.025, rel=1e-9)
    assert shifted["energy_mae_centered_per_atom"] == pytest.approx(0.0, abs=1e-9)
    assert shifted["force_rel_rmse"] == pytest.approx(0.1, rel=1e-9)  # |1.1 F - F| / |F|


def test_offsets_are_centered_per_run_and_intervals_bracket_the_estimate():
    rng = np.random.default_rng(0)
    recs, runs = [], []
    for run, offset in (("bulk", 0.02), ("slab", -0.05)):
        for _ in range(30):
            f = rng.normal(size=(4, 3))
            noise = rng.normal(scale=0.001)
            recs.append(_record(4, 0.0, 4 * (offset + noise), f, f + rng.normal(scale=0.1, size=(4, 3))))
            runs.append(run)
    m = heldout_metrics(recs, runs, n_boot=300)
    assert m["n_runs"] == 2 and m["n_frames"] == 60
    assert m["energy_mae_per_atom"] == pytest.approx(0.035, abs=0.002)  # (0.02 + 0.05) / 2
    assert m["energy_mae_centered_per_atom"] < 0.002  # each run's own offset removed
    for key in ("energy_mae_per_atom", "force_rel_rmse"):
        lo, hi = m[key + "_ci95"]
        assert lo <= m[key] <= hi and hi - lo > 0


def test_paired_difference_sign_and_interval():
    rng = np.random.default_rng(1)
    fs = [rng.normal(size=(3, 3)) for _ in range(40)]
    a = [_record(3, 0.0, 0.0, f, f + rng.normal(scale=0.2, size=(3, 3))) for f in fs]
    b = [_record(3, 0.0, 0.0, f, f + rng.normal(scale=0.1, size=(3, 3))) for f in fs]
    d = paired_difference(a, b, ["x"] * 40, "force_rel_rmse", n_boot=300)
    assert d["difference"] < 0 and d["ci95"][1] < 0  # b is better, and the interval excludes 0
    same = paired_difference(a, a, ["x"] * 40, "force_rel_rmse", n_boot=50)
    assert same["difference"] == 0.0 and same["ci95"] == [0.0, 0.0]


def test_heldout_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="bench.heldout: unknown key"):
        HeldoutConfig.from_dict({"systems": ["si-64"], "temps": [300]})
    with pytest.raises(ConfigError, match="bench.heldout.systems"):
        HeldoutConfig.from_dict({"systems": []})
    with pytest.raises(ConfigError, match="bench.heldout.frames"):
        HeldoutConfig.from_dict({"systems": ["si-64"], "frames": 0})
    with pytest.raises(ConfigError, match="temperatures_K"):
        HeldoutConfig.from_dict({"systems": ["si-64"], "temperatures_K": [-5]})


def test_targets_check_and_verdict():
    with pytest.raises(ConfigError, match=r"bench.targets: unknown key 'force_rmse' \(did you mean 'force_rel_rmse'"):
        check_targets({"force_rmse": 0.1})
    with pytest.raises(ConfigError, match=r"bench.targets.energy_mae_mev = -1 is invalid: must be >= 0 meV/atom"):
        check_targets({"energy_mae_mev": -1})
    result = {
        "student": {"label": "student"},
        "accuracy": {"n_structures": 10, "force_rmse_relative": 0.2, "energy_mae_per_atom": 0.004},
        "heldout": {"pooled": {"n_frames": 5, "force_rel_rmse": 0.08, "energy_mae_per_atom": 0.006}},
        "systems": {"si-64": {"md": {"nve": {"student": {"drift_ev_per_atom_per_ps": -2e-4}},
                                     "stability": {"student": [{"stable": True}, {"stable": False}]}}}},
    }
    v = evaluate_targets(result, {"force_rel_rmse": 0.1, "energy_mae_mev": 5.0, "nve_drift_mev_per_atom_ps": 1.0,
                                  "md_blowups": 0})
    by = {r["target"]: r for r in v["targets"]}
    assert by["force_rel_rmse"]["passed"] and by["force_rel_rmse"]["measured_on"] == "held-out teacher MD"
    assert not by["energy_mae_mev"]["passed"] and by["energy_mae_mev"]["value"] == pytest.approx(6.0)
    assert by["nve_drift_mev_per_atom_ps"]["value"] == pytest.approx(0.2) and by["nve_drift_mev_per_atom_ps"]["passed"]
    assert by["md_blowups"]["value"] == 1 and not by["md_blowups"]["passed"]
    assert not v["passed"] and verdict_line(v).startswith("NO-GO")
    # without held-out MD the accuracy targets fall back to the test split
    del result["heldout"]
    v = evaluate_targets(result, {"force_rel_rmse": 0.1})
    assert v["targets"][0]["measured_on"] == "test split" and not v["passed"]
    # a target nothing measured cannot pass
    v = evaluate_targets({"systems": {}}, {"nve_drift_mev_per_atom_ps": 1.0})
    assert not v["passed"] and v["targets"][0]["value"] is None


def test_md_blowups_verdict_names_the_ps_a_budget_cut_run_reached():
    """A stability run stopped by the wall-clock budget counts as stable, and the verdict says
    how far it got (the silicon bench's "100 ps" runs stopped at 57 ps unnoticed)."""
    cut = {"stable": True, "status": "time_limit", "simulated_ps": 57.2, "requested_ps": 100.0}
    result = {"systems": {"si-64": {"md": {"stability": {"student": [cut, {"stable": True, "status": "ok"}]}}}}}
    v = evaluate_targets(result, {"md_blowups": 0})
    row = v["targets"][0]
    assert v["passed"] and row["value"] == 0
    assert row["measured_on"] == "2 student Langevin runs, 1 cut by the wall-clock budget at 57.2 of 100 ps"
    assert "57.2 of 100 ps" in verdict_line(v)
    full = {"systems": {"si-64": {"md": {"stability": {"student": [{"stable": True, "status": "ok"}]}}}}}
    assert evaluate_targets(full, {"md_blowups": 0})["targets"][0]["measured_on"] == "1 student Langevin runs"


def test_stability_runs_get_their_own_wall_clock_budget():
    from ase.calculators.emt import EMT

    from mlff_distiller.bench.runner import BenchConfig, _md_dynamics
    from mlff_distiller.bench.systems import load_system

    class Handle:
        label = "emt"

        def make_calculator(self):
            return EMT()

    with pytest.raises(ConfigError, match="stability_max_wall_s"):
        BenchConfig.from_dict({"stability_max_wall_s": 0})
    cfg = BenchConfig.from_dict({"stability_ps": 50.0, "stability_temperatures_K": [300], "drift_ps": 0.01,
                                 "rdf": False, "timestep_fs": 1.0, "max_wall_s": 30.0,
                                 "stability_max_wall_s": 1e-9})
    md = _md_dynamics(load_system("cu-64"), Handle(), Handle(), cfg, progress=False)
    assert md["nve"]["emt"]["status"] == "ok"  # the other runs keep max_wall_s
    rep = md["stability"]["emt"][0]
    assert rep["status"] == "time_limit" and rep["stable"] and rep["simulated_ps"] < rep["requested_ps"] == 50.0
    from mlff_distiller.bench.report import _stability_cell

    assert _stability_cell([rep]) == f"300 K ok ({rep['simulated_ps']:.3g} ps: wall-clock budget)"


def test_heldout_runs_per_system_temperatures():
    cfg = HeldoutConfig.from_dict({"systems": {"aspirin": [300, 450], "si-64": [800]}})
    assert cfg.runs() == [("aspirin", 300.0), ("aspirin", 450.0), ("si-64", 800.0)]
    cfg = HeldoutConfig.from_dict({"systems": ["si-64", "cu-64"], "temperatures_K": [300, 600]})
    assert cfg.runs() == [("si-64", 300.0), ("si-64", 600.0), ("cu-64", 300.0), ("cu-64", 600.0)]
    with pytest.raises(ConfigError, match="bench.heldout.systems.si-64"):
        HeldoutConfig.from_dict({"systems": {"si-64": []}})


def test_unknown_fields_name_the_closest_one():
    from mlff_distiller.bench.runner import BenchConfig

    with pytest.raises(ConfigError, match=r"bench: unknown key 'drift_pss' \(did you mean 'drift_ps'"):
        BenchConfig.from_dict({"drift_pss": 1.0})
    with pytest.raises(ConfigError, match=r"did you mean 'temperatures_K'"):
        HeldoutConfig.from_dict({"systems": ["si-64"], "temperature_K": [300]})


def test_heldout_frames_are_cached_per_teacher_and_settings(tmp_path):
    """A second bench scores on the stored frames without calling the teacher; other settings rerun it."""
    from mlff_distiller.bench.heldout import run_heldout
    from mlff_distiller.bench.models import ModelHandle

    calls = {"n": 0}

    def counting_emt():
        calc = EMT()
        orig = calc.calculate

        def calculate(*a, **k):
            calls["n"] += 1
            return orig(*a, **k)

        calc.calculate = calculate
        return calc

    teacher = ModelHandle("emt", counting_emt, [29], {})
    student = ModelHandle("student", lambda: ShiftedEMT(shift=0.01), [29], {})
    cfg = HeldoutConfig(systems=["cu-64"], temperatures_K=[500.0], frames=3, interval=2, equil_steps=2)
    first = run_heldout(student, teacher, cfg, cache_dir=tmp_path / "cache")
    n_first = calls["n"]
    assert n_first > 0 and (tmp_path / "cache" / "cu-64@500K.json").is_file()
    again = run_heldout(student, teacher, cfg, cache_dir=tmp_path / "cache")
    assert calls["n"] == n_first  # the teacher never ran again
    e_first = first["pooled"]["energy_offset_per_atom"]
    assert again["pooled"]["energy_offset_per_atom"] == pytest.approx(e_first, abs=1e-9)
    assert again["pooled"]["force_rel_rmse"] == pytest.approx(first["pooled"]["force_rel_rmse"], abs=1e-6)
    # another temperature, or another teacher label, runs the teacher again
    run_heldout(student, ModelHandle("emt-v2", counting_emt, [29], {}), cfg, cache_dir=tmp_path / "cache")
    assert calls["n"] > n_first


def test_relax_steps_start_from_the_teachers_minimum_and_key_the_cache():
    """``relax_steps`` relaxes the start with the teacher first: the same MD then runs colder
    (a rattled Cu box releases its strain energy as heat without it); 0 keeps the old cache key."""
    from mlff_distiller.bench.heldout import _cache_key, relaxed_start

    atoms = load_system("cu-64").atoms
    atoms.rattle(0.15, seed=4)
    relaxed = relaxed_start(EMT(), atoms, 200)
    assert relaxed.calc is None and atoms.calc is None
    relaxed.calc, start = EMT(), atoms.copy()
    start.calc = EMT()
    assert np.abs(relaxed.get_forces()).max() < 0.05
    assert relaxed.get_potential_energy() < start.get_potential_energy() - 0.5
    hot = HeldoutConfig(systems=["cu-64"], temperatures_K=[100.0], frames=4, interval=5, equil_steps=20)
    cold = HeldoutConfig(**{**hot.__dict__, "relax_steps": 200})
    t_hot = teacher_md_frames(EMT(), atoms, 100.0, hot, seed=1)[1]["mean_temperature_K"]
    t_cold = teacher_md_frames(EMT(), atoms, 100.0, cold, seed=1)[1]["mean_temperature_K"]
    assert t_cold < 0.7 * t_hot
    assert "relax_steps" not in _cache_key("emt", atoms, 100.0, hot)
    assert _cache_key("emt", atoms, 100.0, cold)["relax_steps"] == 200
    with pytest.raises(ConfigError, match="bench.heldout.relax_steps"):
        HeldoutConfig.from_dict({"systems": ["cu-64"], "relax_steps": -1})


def test_replicas_are_independent_trajectories_and_the_interval_covers_them(tmp_path):
    """``replicas: 2`` runs a second trajectory (seed + 1, run ``name#1``, its own cache file);
    replica 0 keeps the single run's cache key. The bootstrap then resamples trajectories: two
    trajectories with different (frame-constant) errors give a wide interval, where the same
    frames counted as one trajectory give none."""
    from mlff_distiller.bench.heldout import _cache_key, heldout_frames
    from mlff_distiller.bench.models import ModelHandle

    teacher = ModelHandle("emt", EMT, [29], {})
    one = HeldoutConfig(systems=["cu-64"], temperatures_K=[500.0], frames=3, interval=2, equil_steps=2)
    two = HeldoutConfig(**{**one.__dict__, "replicas": 2})
    atoms = load_system("cu-64").atoms
    assert _cache_key("emt", atoms, 500.0, two) == _cache_key("emt", atoms, 500.0, one)
    assert _cache_key("emt", atoms, 500.0, two, 1)["seed"] == one.seed + 1
    runs = heldout_frames(teacher, two, cache_dir=tmp_path)
    assert [r[0] for r in runs] == ["cu-64@500K", "cu-64@500K#1"]
    assert (tmp_path / "cu-64@500K#1.extxyz").is_file()
    a, b = runs[0][3], runs[1][3]
    assert len(a) == len(b) == 3 and not np.allclose(a[0].positions, b[0].positions)
    # trajectory-level spread: errors 0.1 eV/atom on one trajectory, 0.3 on the other
    recs = [_record(1, 0.0, e, [[1.0, 0, 0]], [[1.0, 0, 0]]) for e in [0.1] * 10 + [0.3] * 10]
    as_one = heldout_metrics(recs, ["x@1K"] * 20, n_boot=400)
    as_two = heldout_metrics(recs, ["x@1K"] * 10 + ["x@1K#1"] * 10, n_boot=400)
    assert as_one["energy_mae_per_atom"] == pytest.approx(as_two["energy_mae_per_atom"]) == pytest.approx(0.2)
    lo1, hi1 = as_one["energy_mae_per_atom_ci95"]
    lo2, hi2 = as_two["energy_mae_per_atom_ci95"]
    assert hi2 - lo2 > 0.1 and hi2 - lo2 > 2 * (hi1 - lo1)
    assert as_two["n_runs"] == 2 and as_two["n_conditions"] == 1
    with pytest.raises(ConfigError, match="bench.heldout.replicas"):
        HeldoutConfig.from_dict({"systems": ["cu-64"], "replicas": 0})


def test_heldout_runs_on_dask_workers_give_the_same_frames(tmp_path):
    """With a cluster, the runs not in the cache are Dask tasks, one per worker: the frames (and
    the cache files) are those of the runs made one after another here, in the same order."""
    from mlff_distiller.bench.heldout import heldout_frames
    from mlff_distiller.bench.models import resolve_teacher

    teacher = resolve_teacher("emt")
    cfg = HeldoutConfig(systems=["cu-64"], temperatures_K=[400.0, 800.0], frames=3, interval=2, equil_steps=2,
                        replicas=2)
    here = heldout_frames(teacher, cfg, cache_dir=tmp_path / "here")
    (tmp_path / "dask").mkdir()
    cached = heldout_frames(teacher, HeldoutConfig(**{**cfg.__dict__, "replicas": 1}), cache_dir=tmp_path / "dask")
    lines, meanwhile = [], []
    there = heldout_frames(teacher, cfg, cache_dir=tmp_path / "dask", cluster={"n_workers": 2},
                           progress=lines.append, meanwhile=lambda: meanwhile.append(threading.current_thread().name))
    assert meanwhile == ["MainThread"]  # the bench's student MD, here, while the workers run the teacher
    assert [r[0] for r in there] == [r[0] for r in here] == ["cu-64@400K", "cu-64@400K#1", "cu-64@800K",
                                                             "cu-64@800K#1"]
    # the two runs already cached were read back; the other two ran on the cluster
    assert any("2 runs (cu-64@400K#1, cu-64@800K#1) on a Dask cluster" in line for line in lines)
    assert [r[0] for r in cached] == ["cu-64@400K", "cu-64@800K"]
    for a, b in zip(here, there):
        assert len(a[3]) == len(b[3]) == 3
        for fa, fb in zip(a[3], b[3]):
            np.testing.assert_allclose(fa.positions, fb.positions, rtol=0, atol=1e-7)  # extxyz keeps 8 digits
            assert fa.info["energy_ref"] == pytest.approx(fb.info["energy_ref"], abs=1e-6)
        assert (tmp_path / "dask" / f"{a[0]}.json").is_file()
    # the work done meanwhile fails: its error comes out (the teacher runs are cancelled)

    def fail():
        raise ValueError("student MD failed")

    with pytest.raises(ValueError, match="student MD failed"):
        heldout_frames(teacher, HeldoutConfig(**{**cfg.__dict__, "replicas": 3}), cache_dir=tmp_path / "dask",
                       cluster={"n_workers": 2}, meanwhile=fail)
    # without a cluster the runs are made here first, then the work of meanwhile
    order = []
    heldout_frames(teacher, HeldoutConfig(**{**cfg.__dict__, "temperatures_K": [500.0], "replicas": 1}),
                   progress=order.append, meanwhile=lambda: order.append("meanwhile"))
    assert order == ["held-out teacher MD cu-64@500K", "meanwhile"]


def test_teacher_rdf_comes_from_the_heldout_frames_when_there_are_some():
    """A held-out run of the MD system at the RDF temperature is the teacher's RDF: no teacher
    Langevin run from the unrelaxed start (it heated a water box to ~590 K and cost 600 s)."""
    from mlff_distiller.bench.report import _md_lines
    from mlff_distiller.bench.runner import BenchConfig, _md_rdf, _rdf_run

    class Handle:
        def __init__(self, label):
            self.label, self.calls = label, 0

        def make_calculator(self):
            self.calls += 1
            return EMT()

    system = load_system("cu-64")
    cfg = HeldoutConfig(systems=["cu-64"], temperatures_K=[300.0], frames=4, interval=3, equil_steps=3)
    frames, report = teacher_md_frames(EMT(), system.atoms, 300.0, cfg, seed=1)
    bench = BenchConfig.from_dict({"stability_temperatures_K": [300], "stability_ps": 0.01, "drift_ps": 0.01,
                                   "rdf_ps": 0.02, "rdf_every": 2, "timestep_fs": 1.0, "rdf_temperature_K": 300})
    student, teacher = Handle("student"), Handle("teacher")
    runs = [("cu-64@300K", 64, 300.0, frames, report), ("cu-64@600K", 64, 600.0, frames[:1], report)]
    student_run = _rdf_run(system, student, bench, False)
    md = {"rdf": _md_rdf(system, student, teacher, bench, False, student_run, runs)}
    assert teacher.calls == 0 and "teacher" not in md["rdf"]["runs"]
    assert md["rdf"]["teacher"]["n_frames"] == 4
    assert md["rdf"]["teacher_source"] == "held-out teacher MD cu-64@300K (4 frames, ok)"
    assert 0.0 < md["rdf"]["overlap"] <= 1.0
    text = "\n".join(_md_lines({"systems": {"cu-64": {"md": md}}, "student": {"label": "student"},
                                "teacher": {"label": "teacher"}}))
    assert "RDF is that of its held-out MD frames (cu-64: held-out teacher MD cu-64@300K (4 frames, ok))" in text
    # without a held-out run at that temperature, or with one of another cell or one that blew up,
    # the teacher runs its own Langevin MD
    strained = [f.copy() for f in frames]
    for f in strained:
        f.set_cell(f.cell.array * 1.01, scale_atoms=True)
    for n, other in enumerate((runs[1:], [("cu-64@300K", 64, 300.0, strained, report)],
                               [("cu-64@300K", 64, 300.0, frames, {**report, "stable": False})]), start=1):
        md = {"rdf": _md_rdf(system, student, teacher, bench, False, student_run, other)}
        assert teacher.calls == n and "teacher" in md["rdf"]["runs"] and "teacher_source" not in md["rdf"]
