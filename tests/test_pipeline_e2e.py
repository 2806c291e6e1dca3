"""End to end: ``mlff-distill run`` on a tiny EMT recipe, resume, interruption, gates, bad input.

The teacher here is ASE's EMT (offline, analytic): this tests the pipeline, not a teacher.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mlff_distiller.cli import main
from mlff_distiller.generation.recipe import load_recipe

TRAINING = {
    "student": {"preset": "tiny"},
    "max_epochs": 3,
    "batch_size": 8,
    "warmup_steps": 2,
    "checkpoint_every": 2,
}
BENCH = {
    "systems": ["cu-64"],
    "n_rounds": 1,
    "n_calls": 2,
    "n_md_steps": 2,
    "warmup": 1,
    "drift_ps": 0.05,
    "stability_ps": 0.02,
    "stability_temperatures_K": [300.0],
    "rdf": False,
    "max_wall_s": 60.0,
    "test_fraction": 0.2,
}


def _recipe(tmp_path: Path, **changes) -> Path:
    recipe = load_recipe("tiny")
    recipe["name"] = "tiny-test"
    recipe["generation"]["count"] = 24
    recipe["training"] = dict(TRAINING)
    recipe["bench"] = dict(BENCH)
    recipe["labeling"] = {"workers": 1}
    # EMT is crude on organics: a few structures get flagged; the gate here tests plumbing.
    recipe["quality"] = {"gates": {"full": {"max_flagged_fraction": 0.25}}}
    for k, v in changes.items():
        recipe[k] = v
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _stages(project: Path) -> dict:
    return json.loads((project / "project.json").read_text())["stages"]


PROGRESS_INTERVAL = 0.2  # s; short, so the tiny run prints some periodic progress lines


@pytest.fixture(scope="module")
def finished_project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    recipe = _recipe(tmp)
    project = tmp / "proj"
    with pytest.MonkeyPatch.context() as mp:  # progress on, as in a batch job (stderr is not a terminal here)
        mp.setattr("mlff_distiller.logs.PROGRESS_INTERVAL", PROGRESS_INTERVAL)
        rc = main(["run", str(recipe), "-o", str(project)])
    assert rc == 0
    return recipe, project


def test_progress_off_a_terminal_is_bounded_periodic_lines(finished_project):
    """Progress in a non-TTY run: one-line reports at most one per interval per bar, no bar redraws."""
    import re
    from datetime import datetime

    _, project = finished_project
    log = (project / "logs" / "run.log").read_text()
    assert "\r" not in log and "\x1b[" not in log  # no carriage-return bar refreshes, no ANSI codes
    line_re = re.compile(r"^(\S+ \S+) INFO +mlff_distiller\.progress: (.+?): \d+(?:/\d+ \(\d+ %\))?, (.*)$")
    by_desc: dict = {}
    for line in log.splitlines():
        m = line_re.match(line)
        if m:
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            by_desc.setdefault(m.group(2), []).append((t, "done in" in m.group(3)))
    assert by_desc, "no progress line at all: the line reporter was not used"
    for desc, rows in by_desc.items():
        span = rows[-1][0] - rows[0][0]
        n_done = sum(done for _, done in rows)
        # each bar: at most one line per interval, plus its closing "done in" line
        assert len(rows) <= span / PROGRESS_INTERVAL + 2 * max(n_done, 1) + 1, (desc, len(rows), span, n_done)
    total = sum(len(r) for r in by_desc.values())
    assert total < 200, total


def test_outputs_exist_and_are_sane(finished_project):
    recipe, project = finished_project
    stages = _stages(project)
    for name in ("generate:all", "label:all", "gate:all", "split", "train", "export", "bench", "report"):
        assert stages[name]["status"] == "done", name
    lab = stages["label:all"]["info"]
    assert lab["labelled"] + lab["failed"] == 24
    from mlff_distiller.data.store import DatasetReader

    with DatasetReader(project / "tiers" / "all" / "dataset.h5") as r:
        assert len(r) == lab["labelled"]
        a = r.get_atoms(0)
        assert a.get_forces().shape == (len(a), 3)
    with DatasetReader(project / "data" / "train.h5") as tr, DatasetReader(project / "data" / "test.h5") as te:
        split = stages["split"]["info"]
        assert len(tr) + len(te) == lab["labelled"] - split["n_excluded"] and len(te) > 0
        assert split["n_excluded"] <= 0.25 * lab["labelled"]  # the gate's allowance
        train_groups = {tr.provenance(i)["group"] for i in range(len(tr))}
        test_groups = {te.provenance(i)["group"] for i in range(len(te))}
        assert not train_groups & test_groups  # grouped split: no root straddles train/test
    metrics = (project / "train" / "metrics.csv").read_text().splitlines()
    assert len(metrics) >= 2
    assert (project / "student.pt").stat().st_size > 0
    html = Path(stages["report"]["info"]["html"])
    assert html.exists() and "<img" in html.read_text()
    summary = (project / "summary.md").read_text()
    assert f"tier `all`: labelled {lab['n_dataset']}, failed {lab['n_failures']}; gate: GO" in summary
    log = (project / "logs" / "run.log").read_text()  # the batch job's record of everything
    for text in ("[run ] label:all", "dashboard:", "gate full: PASSED", "epoch 0 step", "[run ] bench"):
        assert text in log, text


def test_rerun_skips_every_stage(finished_project, capsys):
    recipe, project = finished_project
    before = _stages(project)
    assert main(["run", str(recipe), "-o", str(project)]) == 0
    cap = capsys.readouterr()
    out = cap.out + cap.err  # stage lines are log lines: stderr (and logs/run.log)
    assert "[run ]" not in out and out.count("[skip]") >= 8
    assert {k: v["fingerprint"] for k, v in _stages(project).items()} == {
        k: v["fingerprint"] for k, v in before.items()
    }


def test_rerun_result_lists_every_stage_as_skipped(finished_project):
    from mlff_distiller.pipeline import RunOptions, run_project

    recipe, project = finished_project
    summary = (project / "summary.md").read_text()
    res = run_project(recipe, project, RunOptions(progress=False))
    assert res.stages_run == []
    assert res.stages_skipped == ["generate:all", "label:all", "gate:all", "split", "train", "export", "bench",
                                  "report"]
    assert (project / "summary.md").read_text() == summary  # the same summary from the recorded results


def test_changed_recipe_is_reported_not_mixed(finished_project, tmp_path, capsys):
    recipe, project = finished_project
    changed = yaml.safe_load(recipe.read_text())
    changed["generation"]["count"] = 30
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    assert main(["run", str(path), "-o", str(project)]) == 2
    err = capsys.readouterr().err
    assert "recipe changed since stage 'generate:all'" in err and "--restart-from" in err


def test_failing_gate_stops_with_nonzero_exit_and_report(tmp_path, capsys):
    recipe = _recipe(tmp_path, quality={"gates": {"full": {"min_structures": 10_000}}})
    project = tmp_path / "proj"
    assert main(["run", str(recipe), "-o", str(project), "--quiet"]) == 3
    out = capsys.readouterr().out
    assert "NO-GO" in out and "min_structures" in out
    stages = _stages(project)
    assert stages["gate:all"]["status"] == "failed"
    assert "train" not in stages
    assert list((project / "report").glob("no-go-all/*.html"))


def test_bad_inputs_one_line_errors(tmp_path, capsys):
    bad = yaml.safe_load(_recipe(tmp_path).read_text())
    bad["trainig"] = {}
    p = tmp_path / "typo.yaml"
    p.write_text(yaml.safe_dump(bad))
    assert main(["run", str(p), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "trainig" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()  # nothing done before validation

    bad = yaml.safe_load(_recipe(tmp_path).read_text())
    bad["teacher"] = {"name": "ase", "calculator": "no_such_module:Calc"}
    p.write_text(yaml.safe_dump(bad))
    assert main(["run", str(p), "-o", str(tmp_path / "y")]) == 2
    assert "no_such_module" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()

    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("x")
    assert main(["run", str(_recipe(tmp_path)), "-o", str(tmp_path / "foreign")]) == 2
    assert "holds no mlff-distill project" in capsys.readouterr().err


def _run_cli(recipe: Path, project: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlff_distiller.cli",
            "run",
            str(recipe),
            "-o",
            str(project),
            "--skip",
            "bench",
            "--skip",
            "report",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )


def _kill_when(proc: subprocess.Popen, marker: str, timeout: float = 300) -> None:
    t0 = time.time()
    for line in proc.stdout:
        if marker in line:
            time.sleep(1.0)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        assert time.time() - t0 < timeout
    raise AssertionError(f"run ended before {marker!r}")


@pytest.mark.slow
def test_sigkill_in_labeling_and_training_then_resume_matches(tmp_path):
    """Kill -9 during labeling, then during training; the resumed run equals an uninterrupted one."""
    recipe = _recipe(tmp_path)
    ref = tmp_path / "ref"
    assert (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mlff_distiller.cli",
                "run",
                str(recipe),
                "-o",
                str(ref),
                "--quiet",
                "--skip",
                "bench",
                "--skip",
                "report",
            ],
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        ).returncode
        == 0
    )
    proj = tmp_path / "proj"
    _kill_when(_run_cli(recipe, proj), "[run ] label:all")
    _kill_when(_run_cli(recipe, proj), "[run ] train")
    proc = _run_cli(recipe, proj)
    out = proc.communicate()[0]
    assert proc.returncode == 0, out

    import numpy as np
    import torch

    from mlff_distiller.data.store import DatasetReader

    with DatasetReader(ref / "tiers/all/dataset.h5") as a, DatasetReader(proj / "tiers/all/dataset.h5") as b:
        assert len(a) == len(b)
        for i in range(len(a)):
            np.testing.assert_array_equal(a.get_atoms(i).get_forces(), b.get_atoms(i).get_forces())
        # the summary gives the file's totals, not the count of the resumed labelling call
        n_fail = len(b.failures())
        assert f"tier `all`: labelled {len(b)}, failed {n_fail};" in (proj / "summary.md").read_text()
    wa = torch.load(ref / "train/checkpoints/last.pt", weights_only=True)
    wb = torch.load(proj / "train/checkpoints/last.pt", weights_only=True)
    sa, sb = wa.get("state_dict", wa.get("model")), wb.get("state_dict", wb.get("model"))
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=1e-6)


def test_restart_from_train_retrains_from_scratch(finished_project, capsys):
    """--restart-from train must not 'resume' the finished run left in train/."""
    recipe, project = finished_project
    rows_before = (project / "train" / "metrics.csv").read_text().splitlines()
    mtime = (project / "train" / "metrics.csv").stat().st_mtime_ns
    assert (
        main(["run", str(recipe), "-o", str(project), "--restart-from", "train", "--skip", "bench", "--skip", "report"])
        == 0
    )
    cap = capsys.readouterr()
    out = cap.out + cap.err
    assert "[run ] train" in out and "[skip] split" in out
    info = _stages(project)["train"]["info"]
    assert info["steps"] > 0 and info["epochs"] == TRAINING["max_epochs"]
    rows_after = (project / "train" / "metrics.csv").read_text().splitlines()
    assert (project / "train" / "metrics.csv").stat().st_mtime_ns != mtime
    assert len(rows_after) == len(rows_before)  # a fresh run of the same length, not appended


def test_accuracy_gate_no_go_exits_3_with_verdict_and_heldout(finished_project, tmp_path, capsys):
    """bench.targets that the student cannot meet -> exit 3, the summary leads with NO-GO and
    carries the held-out teacher-MD numbers; GO when the targets are loose."""
    import shutil

    recipe, project = finished_project
    proj = tmp_path / "proj"
    shutil.copytree(project, proj)
    changed = yaml.safe_load(recipe.read_text())
    changed["bench"]["heldout"] = {"systems": ["cu-64"], "temperatures_K": [300.0], "frames": 3, "interval": 2,
                                   "equil_steps": 2}
    changed["bench"]["targets"] = {"force_rel_rmse": 0.0, "energy_mae_mev": 1e6}
    path = tmp_path / "gated.yaml"
    path.write_text(yaml.safe_dump(changed))
    assert main(["run", str(path), "-o", str(proj), "--restart-from", "bench", "--skip", "report", "--quiet"]) == 3
    assert "NO-GO" in capsys.readouterr().out
    summary = (proj / "summary.md").read_text()
    first = [ln for ln in summary.splitlines() if ln.strip() and not ln.startswith("#")][0]
    assert first.startswith("**Accuracy gate NO-GO") and "force_rel_rmse" in first and "NOT met" in first
    assert "held-out teacher MD" in first  # measured on the teacher's MD, not the test split
    assert "frames of the teacher's own MD" in summary
    bench = json.loads((proj / "bench" / "bench.json").read_text())
    assert bench["heldout"]["pooled"]["n_frames"] == 3
    assert bench["verdict"]["passed"] is False

    changed["bench"]["targets"] = {"force_rel_rmse": 1e6, "energy_mae_mev": 1e6, "md_blowups": 0}
    path.write_text(yaml.safe_dump(changed))
    assert main(["run", str(path), "-o", str(proj), "--restart-from", "bench", "--skip", "report", "--quiet"]) == 0
    assert "**Accuracy gate GO" in (proj / "summary.md").read_text()
