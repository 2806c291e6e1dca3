"""Active learning: committee calculator, selection, config, and the rounds of ``mlff-distill run``.

The end-to-end case runs the built-in ``tiny-active`` recipe (EMT teacher) once per module;
labeling goes through the usual Dask path, here on one in-process worker shared by all rounds.
"""

from __future__ import annotations

import json
import os

# As in the quality tests: numba's thread count is fixed when its first parallel kernel runs
# (QUESTS in the pipeline's gate), and this module is collected before those that set it.
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk

from mlff_distiller.active import ActiveConfig
from mlff_distiller.active.select import farthest_point, physical_mask, select_frames
from mlff_distiller.data.normalization import NormalizationStats
from mlff_distiller.errors import ConfigError
from mlff_distiller.student import StudentCalculator, StudentConfig, build_student
from mlff_distiller.student.committee import CommitteeCalculator

STATS = NormalizationStats(element_energies={13: -3.0, 29: -4.0}, force_rms=0.5, avg_num_neighbors=12.0, cutoff=4.0)


def _model(seed: int):
    torch.manual_seed(seed)
    model = build_student(StudentConfig(preset="tiny", cutoff=4.0, dtype="float64"), STATS).eval()
    with torch.no_grad():
        model.readout[-1].weight.mul_(10.0)
    return model


def _cu():
    atoms = bulk("Cu", "fcc", 3.6, cubic=True)
    atoms.rattle(0.08, seed=1)
    return atoms


# -- committee ----------------------------------------------------------------------------------
def test_committee_identical_members_agree_and_single_member_is_the_student():
    m = _model(1)
    atoms = _cu()
    atoms.calc = CommitteeCalculator([m, m], backend="torch")
    f = atoms.get_forces()
    std = atoms.calc.results["forces_committee_std"]
    assert std.shape == (len(atoms),) and np.all(std == 0.0)
    assert atoms.calc.results["energy_committee_std"] == 0.0

    ref = _cu()
    ref.calc = StudentCalculator(m, backend="torch")
    one = _cu()
    one.calc = CommitteeCalculator([m], backend="torch")
    np.testing.assert_allclose(one.get_forces(), ref.get_forces(), rtol=0, atol=1e-12)
    assert one.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(one.get_stress(), ref.get_stress(), atol=1e-12)
    np.testing.assert_allclose(f, ref.get_forces(), atol=1e-12)


def test_committee_disagreement_of_different_members():
    a, b = _model(1), _model(2)
    atoms = _cu()
    atoms.calc = CommitteeCalculator([a, b], backend="torch")
    f_mean = atoms.get_forces()
    res = atoms.calc.results
    fa = StudentCalculator(a, backend="torch").get_forces(_cu())
    fb = StudentCalculator(b, backend="torch").get_forces(_cu())
    np.testing.assert_allclose(f_mean, 0.5 * (fa + fb), atol=1e-12)
    # two members: the rms deviation from the mean is half the distance between them
    np.testing.assert_allclose(res["forces_committee_std"], 0.5 * np.linalg.norm(fa - fb, axis=1), atol=1e-12)
    assert np.all(res["forces_committee_std"] > 0) and res["energy_committee_std"] > 0
    assert res["forces_committee_std_max"] == pytest.approx(res["forces_committee_std"].max())


# -- selection ------------------------------------------------------------------------------------
def test_farthest_point_covers_every_cluster_and_respects_the_budget():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    x = np.concatenate([c + 0.1 * rng.normal(size=(25, 2)) for c in centers])
    picked = farthest_point(x, 0, 4)
    assert len(picked) == 4 and len(set(picked)) == 4
    assert sorted({int(i) // 25 for i in picked}) == [0, 1, 2, 3]  # one per cluster

    scores = rng.uniform(size=len(x))
    for budget in (1, 3, 7):
        sel = select_frames(scores, x, np.ones(len(x), bool), budget, candidate_factor=4)
        assert len(sel) == budget and len(set(sel)) == budget
        assert sel[0] == int(np.argmax(scores))  # farthest-point sampling starts at the most uncertain frame
    # candidate pool: only the budget x factor most uncertain frames are eligible
    sel = select_frames(scores, x, np.ones(len(x), bool), 3, candidate_factor=2)
    assert set(sel) <= set(np.argsort(-scores)[:6].tolist())
    assert select_frames(scores, x, np.ones(len(x), bool), 5, min_score=2.0) == []


def test_a_kind_share_caps_the_most_uncertain_kind_while_others_remain():
    """Without a cap the hot frames (all scoring highest) take the budget; with a share of 1/3
    they take ceil(budget / 3) and the rest goes to the other kinds; past the caps, the kinds
    with the fewest picks go first; a single kind left takes the whole budget."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 3))
    kinds = np.array(["hot"] * 20 + ["md"] * 30 + ["relax"] * 10)
    scores = np.concatenate([5 + rng.uniform(size=20), 1 + rng.uniform(size=30), rng.uniform(size=10)])
    ok = np.ones(60, bool)
    free = select_frames(scores, x, ok, 9, candidate_factor=2, kinds=kinds)
    assert all(kinds[i] == "hot" for i in free)
    capped = select_frames(scores, x, ok, 9, candidate_factor=2, kinds=kinds, max_kind_share=1 / 3)
    got = {k: int(np.sum(kinds[capped] == k)) for k in ("hot", "md", "relax")}
    assert got == {"hot": 3, "md": 3, "relax": 3}, got
    assert capped[0] == int(np.argmax(scores))  # the walk still starts at the most uncertain frame
    assert len(set(capped)) == 9
    # only hot and md physical: both reach their cap of 3, the other 3 picks are spread evenly
    only = ok & (kinds != "relax")
    capped = select_frames(scores, x, only, 9, candidate_factor=4, kinds=kinds, max_kind_share=1 / 3)
    n_hot, n_md = int(np.sum(kinds[capped] == "hot")), int(np.sum(kinds[capped] == "md"))
    assert n_hot + n_md == 9 and abs(n_hot - n_md) <= 1
    # a share of 1/9: each kind gets one before any gets a second
    capped = select_frames(scores, x, ok, 3, candidate_factor=2, kinds=kinds, max_kind_share=1 / 9)
    assert sorted(kinds[capped]) == ["hot", "md", "relax"]
    # a single kind left: the cap gives way rather than leaving budget unspent
    capped = select_frames(scores, x, kinds == "md", 9, candidate_factor=4, kinds=kinds, max_kind_share=1 / 3)
    assert len(capped) == 9 and all(kinds[i] == "md" for i in capped)


@pytest.mark.parametrize("kind", ["descriptor", "quests"])
def test_novelty_is_low_on_training_environments_and_high_off_them(kind):
    """Both novelty measures rank a thermal copy of the training crystal below a compressed one."""
    from mlff_distiller.active.uncertainty import make_novelty

    rng = np.random.default_rng(0)
    base = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    train = []
    for _ in range(6):
        a = base.copy()
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        train.append(a)
    nov = make_novelty(kind, train, 8, 5.0)
    near = base.copy()
    near.positions += rng.normal(0, 0.05, near.positions.shape)
    squeezed = base.copy()
    squeezed.set_cell(base.cell * 0.85, scale_atoms=True)
    assert nov(near) < nov(squeezed)
    if kind == "quests":  # dH <= 0 inside the training support, > 0 outside it
        assert nov(train[0]) <= 0.0 < nov(squeezed)


def test_unphysical_frames_are_dropped():
    good = _cu()
    close = _cu()
    close.positions[1] = close.positions[0] + [0.3, 0.0, 0.0]  # atoms 0.3 A apart
    nan = _cu()
    nan.positions[2, 0] = np.nan
    frames = [good, close, nan, good.copy()]
    forces = [np.zeros((len(a), 3)) for a in frames]
    forces[3][0] = [500.0, 0.0, 0.0]  # above the default max_force
    energies = [-10.0, -10.0, -10.0, -10.0]
    ok, flagged = physical_mask(frames, energies, forces)
    assert ok.tolist() == [True, False, False, False]
    assert flagged.get("min_distance", 0) >= 1 and flagged.get("max_force", 0) >= 1
    scores = np.array([0.1, 5.0, 9.0, 7.0])  # the unphysical frames are the most "uncertain"
    feats = np.arange(8, dtype=float).reshape(4, 2)
    assert select_frames(scores, feats, ok, budget=4) == [0]


# -- config -------------------------------------------------------------------------------------
@pytest.mark.parametrize("section, field", [
    ({"budget_per_rund": 3}, "budget_per_rund"),
    ({"committee_size": 1}, "active.committee_size"),
    ({"temperatures": []}, "active.temperatures"),
    ({"backend": "jax"}, "active.backend"),
    ({"retrain": {"max_stepz": 3}}, "max_stepz"),
    ({"stop_force_std": "abc"}, "active.stop_force_std"),
    ({"max_kind_share": 0}, "active.max_kind_share"),
    ({"max_kind_share": 1.5}, "active.max_kind_share"),
    ({"final_training": "warm"}, "active.final_training"),
    ({"committee_student": {"preset": "huge"}}, "active.committee_student.preset"),
    ({"retrain": {"max_steps": -1}}, "active.retrain.max_steps"),
    ({"first_training": {"max_steps": -2}}, "active.first_training.max_steps"),
    ({"first_training": {"student": {"preset": "tiny"}}}, "active.first_training.student"),
])
def test_active_config_errors_name_the_field(section, field):
    with pytest.raises(ConfigError) as err:
        ActiveConfig.from_dict(section)
    msg = str(err.value)
    assert field in msg and "\n" not in msg


def test_recipe_accepts_the_active_section():
    from mlff_distiller.generation.recipe import load_recipe

    recipe = load_recipe("tiny-active")
    cfg = ActiveConfig.from_dict(recipe["active"])
    assert cfg.stage_names()[0] == "active:round-1" and cfg.teacher_call_budget == 10
    assert cfg.stage_names()[-1] == "active:final" and cfg.final_training == "scratch"
    assert ActiveConfig.from_dict({"final_training": "none", "max_rounds": 2}).stage_names() == [
        "active:round-1", "active:round-2"]


# -- end to end -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dask_address():
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                           dashboard_address=":0")
    yield cluster.scheduler_address
    cluster.close()


def _recipe_file(tmp: Path, address: str, **active) -> Path:
    from mlff_distiller.generation.recipe import load_recipe

    recipe = load_recipe("tiny-active")
    recipe["labeling"] = {"scheduler": address, "chunk_size": 8}
    recipe["active"].update(active)
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory, dask_address):
    from mlff_distiller.pipeline.run import RunOptions, run_project

    tmp = tmp_path_factory.mktemp("active")
    out = tmp / "proj"
    t0 = time.time()
    run_project(_recipe_file(tmp, dask_address, first_training={"max_steps": 16}), out,
                RunOptions(progress=False, skip=("bench", "report")))
    return out, time.time() - t0


def _sources(path) -> list[str]:
    from mlff_distiller.data.store import DatasetReader

    with DatasetReader(path) as r:
        return [str((r.provenance(i) or {}).get("source")) for i in range(len(r))]


def test_rounds_append_frames_with_provenance_within_budget(project):
    out, _ = project
    rep = json.loads((out / "active" / "rounds.json").read_text())
    rounds = rep["rounds"]
    assert rep["initial_teacher_calls"] == 24 and rounds
    prev = _sources(out / "data" / "train.h5")
    assert not any(s.startswith("active/") for s in prev)
    for rec in rounds:
        n = rec["round"]
        if not rec.get("dataset"):
            continue
        now = _sources(rec["dataset"])
        assert now[: len(prev)] == prev  # the previous dataset, then the new frames
        new = now[len(prev):]
        assert 0 < len(new) <= 4 and set(new) == {f"active/round-{n}"}  # budget_per_round: 4
        assert rec["appended"] == len(new) and rec["teacher_calls"] <= 4
        by_kind = rec["selection"]["by_kind"]  # the picks per exploration kind add up
        assert sum(by_kind.values()) == rec["selection"]["n_selected"] and set(by_kind) <= {"md", "relax", "hot"}
        prev = now
    assert rounds[-1]["teacher_calls_total"] <= 10  # max_teacher_calls
    # the stopping rule fired: the teacher-call budget (10 = 4 + 4 + 2) ends the third round
    assert rounds[-1]["stop"] == "teacher_budget" and len(rounds) == 3
    assert [r["teacher_calls"] for r in rounds] == [4, 4, 2]
    for name in ("rounds.md", "error_vs_teacher_calls.png"):
        assert (out / "active" / name).stat().st_size > 100
    stages = json.loads((out / "project.json").read_text())["stages"]
    assert sorted(s for s in stages if s.startswith("active:")) == ["active:final", "active:round-1",
                                                                   "active:round-2", "active:round-3"]
    # the exported student is the final one, trained from scratch on the last round's dataset
    from mlff_distiller.student import load_exported, load_student

    fin = rep["final"]
    assert fin["dataset"] == rounds[-1]["dataset"] and Path(fin["run_dir"]) == out / "active" / "final" / "train"
    assert fin["train"]["steps"] == 20  # the recipe's training.max_steps, not active.retrain's 10
    # the first training took active.first_training's 16 steps
    assert stages["train"]["info"]["steps"] == 16
    assert fin["heldout_before"] == rounds[-1]["heldout_after"]
    final = load_student(Path(fin["run_dir"]))
    last_round = load_student(Path(rounds[-1]["run_dir"]))
    assert any(not torch.equal(a, b) for a, b in zip(final.state_dict().values(), last_round.state_dict().values()))
    exported = load_exported(out / "student.pt")
    atoms = _cu()
    atoms.calc = StudentCalculator(final, backend="torch")
    ref = atoms.get_forces()
    atoms.calc = StudentCalculator(exported, backend="torch")
    np.testing.assert_allclose(atoms.get_forces(), ref, atol=1e-5)
    summary = (out / "summary.md").read_text()
    assert (
        "active learning: 3 round(s), 10 teacher calls (after 24 in the initial dataset), stopped: teacher_budget"
        in summary
    )
    assert "- final student: trained from scratch on the grown dataset" in summary
    assert "| final (from scratch) |" in (out / "active" / "rounds.md").read_text()
    r1 = rounds[0]
    assert r1["explore"]["n_frames"] > 0 and 0 <= r1["explore"]["md_stability"] <= 1
    assert set(r1["calibration_heldout"]) >= {"frame_spearman", "atom_pearson"}


def test_retrained_students_keep_the_absolute_energies_of_the_first_dataset(project):
    """After each retraining the reference energies are refit on the first training set: the
    student's energy residuals there sum to zero (per element, least squares), once per checkpoint."""
    from mlff_distiller.active.rounds import _training_frames, refit_reference

    out, _ = project
    rounds = json.loads((out / "active" / "rounds.json").read_text())["rounds"]
    trained = [r for r in rounds if r.get("run_dir")]
    assert trained and all("mean_residual_before_meV_per_atom" in r["train"]["reference_refit"] for r in trained)
    calc = StudentCalculator(Path(trained[-1]["run_dir"]), backend="torch")
    residual, counts = [], []
    frames = _training_frames(out / "data" / "train.h5")
    elements = sorted({int(z) for a in frames for z in a.numbers})
    for atoms in frames:
        work = atoms.copy()
        work.calc = calc
        residual.append(work.get_potential_energy() - atoms.get_potential_energy())
        counts.append([np.sum(atoms.numbers == z) for z in elements])
    normal = np.asarray(counts, dtype=float).T @ np.asarray(residual)  # least squares: C^T r = 0
    assert np.abs(normal).max() < 1e-3 * np.sum(counts), normal  # float32 network: 1 meV per atom
    best = Path(trained[-1]["run_dir"]) / "checkpoints" / "best.pt"
    before = best.read_bytes()
    assert refit_reference(best, out / "data" / "train.h5") == trained[-1]["train"]["reference_refit"]
    assert best.read_bytes() == before  # recorded in the checkpoint: not applied twice


def test_rounds_train_the_added_frames_on_forces_only_by_default(project):
    """Without ``fit_active_energies`` the retraining and the committee skip the energies of the
    frames the rounds added (source active/...); ``_round_config`` leaves an explicit choice alone."""
    from mlff_distiller.active import ActiveConfig
    from mlff_distiller.active.rounds import _round_config
    from mlff_distiller.training import TrainConfig, load_train_config

    out, _ = project
    rounds = json.loads((out / "active" / "rounds.json").read_text())["rounds"]
    run = Path(rounds[-1]["run_dir"])
    assert load_train_config(run / "config.yaml").energy_skip_sources == ["active/"]
    assert load_train_config(out / "active" / "final" / "train" / "config.yaml").energy_skip_sources == ["active/"]
    assert "without their energy (energy_skip_sources)" in (run / "train.log").read_text()
    member = run.parent / "committee" / "member-0"
    assert load_train_config(member / "config.yaml").energy_skip_sources == ["active/"]
    base = TrainConfig.from_dict({"energy_skip_sources": ["imported/"]})
    assert _round_config(base, ActiveConfig()).energy_skip_sources == ["imported/", "active/"]
    assert _round_config(base, ActiveConfig(fit_active_energies=True)) is base


def test_rerun_skips_every_stage_and_round(project):
    """The rounds are recorded stages too: re-running the same recipe redoes none of them."""
    from mlff_distiller.pipeline.run import RunOptions, run_project

    out, _ = project
    before = json.loads((out / "project.json").read_text())["stages"]
    rounds = json.loads((out / "active" / "rounds.json").read_text())
    res = run_project(out.parent / "recipe.yaml", out, RunOptions(progress=False, skip=("bench", "report")))
    assert res.stages_run == []
    assert res.stages_skipped == ["generate:all", "label:all", "gate:all", "split", "train", "active:round-1",
                                  "active:round-2", "active:round-3", "active:final", "export"]
    after = json.loads((out / "project.json").read_text())["stages"]
    assert {k: v["fingerprint"] for k, v in after.items()} == {k: v["fingerprint"] for k, v in before.items()}
    assert json.loads((out / "active" / "rounds.json").read_text()) == rounds  # rewritten from the records


def test_final_training_none_keeps_the_last_round_and_redoes_only_what_follows(project):
    """``final_training: none`` exports the last round's warm-started student without redoing a
    round (``--restart-from export``); switching back (``--restart-from active:final``) redoes only
    the final training, with the same result, and the export."""
    from mlff_distiller.pipeline.run import RunOptions, run_project
    from mlff_distiller.student import load_exported, load_student

    out, _ = project
    recipe = yaml.safe_load((out.parent / "recipe.yaml").read_text())
    recipe["active"]["final_training"] = "none"
    other = out.parent / "recipe-none.yaml"
    other.write_text(yaml.safe_dump(recipe))
    before = json.loads((out / "active" / "rounds.json").read_text())["final"]
    opts = RunOptions(progress=False, skip=("bench", "report"))
    try:
        res = run_project(other, out, replace(opts, restart_from="export"))
        assert res.stages_run == ["export"]
        rounds = json.loads((out / "active" / "rounds.json").read_text())
        assert "final" not in rounds
        atoms = _cu()
        atoms.calc = StudentCalculator(load_student(Path(rounds["rounds"][-1]["run_dir"])), backend="torch")
        ref = atoms.get_forces()
        atoms.calc = StudentCalculator(load_exported(out / "student.pt"), backend="torch")
        np.testing.assert_allclose(atoms.get_forces(), ref, atol=1e-5)
    finally:
        res = run_project(out.parent / "recipe.yaml", out, replace(opts, restart_from="active:final"))
    assert res.stages_run == ["active:final", "export"] and "active:round-3" in res.stages_skipped
    after = json.loads((out / "active" / "rounds.json").read_text())["final"]
    assert after["heldout_after"] == before["heldout_after"]  # the same training again


def _ctx(out: Path, **changes):
    from mlff_distiller.active import ActiveContext
    from mlff_distiller.labeling.config import LabelingConfig
    from mlff_distiller.teachers import build_teacher
    from mlff_distiller.training import TrainConfig

    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    cfg = ActiveConfig.from_dict({**recipe["active"], **changes})
    return ActiveContext(
        cfg=cfg,
        teacher=build_teacher(recipe["teacher"]),
        train_config=TrainConfig.from_dict(recipe["training"]),
        quality=None,
        labeling=LabelingConfig.from_dict(recipe["labeling"]),
        train_h5=out / "data" / "train.h5",
        test_h5=out / "data" / "test.h5",
        root=out / "active-extra",
        seed=3,
        say=lambda s: None,
    )


def test_stopping_rules_accuracy_gate_and_convergence(project):
    from mlff_distiller.active import run_round

    out, _ = project
    rec = run_round(_ctx(out, target_force_mae=100.0), 1, out / "train", out / "data" / "train.h5", 0)
    assert rec["stop"] == "accuracy_gate" and rec["teacher_calls"] == 0 and "explore" not in rec
    rec = run_round(_ctx(out, stop_force_std=100.0, committee_steps=2), 1, out / "train", out / "data" / "train.h5", 0)
    assert rec["stop"] == "converged" and rec["teacher_calls"] == 0
    assert rec["disagreement"]["mean"] < 100.0 and rec["explore"]["n_frames"] > 0
    assert not (out / "active-extra" / "round-1" / "labels.h5").exists()
    rec = run_round(_ctx(out), 1, out / "train", out / "data" / "train.h5", 10)
    assert rec["stop"] == "teacher_budget" and rec["teacher_calls"] == 0


def test_warm_start_checks_the_architecture(project, tmp_path):
    from mlff_distiller.training import DistillationTrainer

    out, _ = project
    cfg = {"student": {"preset": "small", "cutoff": 4.0}, "max_steps": 1}
    with pytest.raises(ConfigError, match="warm start"):
        DistillationTrainer(
            out / "data" / "train.h5", cfg, tmp_path / "run", progress=False, init_from=out / "train"
        ).fit()


def test_warm_start_starts_from_the_given_weights(project, tmp_path):
    from mlff_distiller.student import load_student
    from mlff_distiller.training import DistillationTrainer

    out, _ = project
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    cfg = {**recipe["training"], "max_steps": 1, "lr": 1e-9, "warmup_steps": 0, "ema_decay": 0.0}
    DistillationTrainer(out / "data" / "train.h5", cfg, tmp_path / "run", progress=False, init_from=out / "train").fit()
    a, b = load_student(out / "train"), load_student(tmp_path / "run")
    assert a.stats.to_dict() == b.stats.to_dict()
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, atol=1e-6, rtol=0, msg=k)


def test_exploration_on_dask_worker_processes_equals_in_process(project):
    """The trajectories as tasks on worker processes (each building the student from its run
    directory) give the same frames and records as the in-process loop."""
    from distributed import Client, LocalCluster

    from mlff_distiller.active.explore import explore
    from mlff_distiller.data.store import DatasetReader

    out, _ = project
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    cfg = ActiveConfig.from_dict({**recipe["active"], "md_steps": 6, "sample_interval": 2})
    with DatasetReader(out / "data" / "train.h5") as r:
        seeds = [r.get_atoms(i) for i in (0, 3)]
    here = explore(seeds, [0, 3], StudentCalculator(out / "train", backend=cfg.backend), cfg, 2, 11)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        there = explore(seeds, [0, 3], None, cfg, 2, 11, client=client, student_run=out / "train")
    assert here.trajectories == there.trajectories
    assert len(here.trajectories) == 2 * (len(cfg.temperatures) * cfg.replicas + 2)  # + relax + hot per seed
    assert len(here.frames) == len(there.frames) > 0
    for a, b in zip(here.frames, there.frames):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.info["provenance"] == b.info["provenance"]


@pytest.mark.slow
def test_kill_and_resume_a_round_gives_the_uninterrupted_result(project, tmp_path, dask_address):
    """SIGKILL during round 2's exploration/labelling, then resume: same datasets and weights."""
    ref_out, _ = project
    recipe = _recipe_file(tmp_path, dask_address)
    out = tmp_path / "proj"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "mlff_distiller.cli", "run", str(recipe), "-o", str(out), "--skip", "bench",
           "--skip", "report", "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = out / "active" / "round-2" / "explore.json"
    deadline = time.time() + 900
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the run ended before round 2 explored"
    stages = json.loads((out / "project.json").read_text())["stages"]
    assert stages["active:round-2"]["status"] == "running"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_same_project(ref_out, out)


def _assert_same_project(a: Path, b: Path) -> None:
    from mlff_distiller.data.store import DatasetReader
    from mlff_distiller.student import load_student

    ra = json.loads((a / "active" / "rounds.json").read_text())["rounds"]
    rb = json.loads((b / "active" / "rounds.json").read_text())["rounds"]
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        for key in ("teacher_calls", "appended", "stop", "disagreement", "heldout_after"):
            assert x.get(key) == y.get(key), key
        with DatasetReader(x["dataset"]) as da, DatasetReader(y["dataset"]) as db:
            assert len(da) == len(db)
            for i in range(len(da)):
                pa, pb = da.get_arrays(i), db.get_arrays(i)
                for k in ("positions", "energy", "forces"):
                    np.testing.assert_array_equal(pa[k], pb[k])
    fa = json.loads((a / "active" / "rounds.json").read_text())["final"]
    fb = json.loads((b / "active" / "rounds.json").read_text())["final"]
    assert fa["heldout_after"] == fb["heldout_after"]
    for run_a, run_b in ((ra[-1]["run_dir"], rb[-1]["run_dir"]), (fa["run_dir"], fb["run_dir"])):
        sa, sb = load_student(Path(run_a)), load_student(Path(run_b))
        for (k, va), vb in zip(sa.state_dict().items(), sb.state_dict().values()):
            torch.testing.assert_close(va, vb, atol=0, rtol=0, msg=k)


def test_the_built_in_recipe_benches_its_final_student(project, tmp_path):
    """`run tiny-active` as a user runs it ends with the bench (no error: its systems are EMT's)."""
    import shutil

    from mlff_distiller.cli import main

    out, _ = project
    copy = tmp_path / "proj"
    shutil.copytree(out, copy)
    rc = main(["run", str(out.parent / "recipe.yaml"), "-o", str(copy), "--restart-from", "bench",
               "--skip", "report", "--quiet"])
    assert rc == 0
    bench = json.loads((copy / "bench" / "bench.json").read_text())
    assert list(bench["systems"]) == ["cu-64"]
    assert bench["student"]["path"].endswith(str(Path("active") / "final" / "train")) and bench["complete"]
