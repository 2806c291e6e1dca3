"""Exact resume: an interrupted-then-resumed run reaches the same state as an uninterrupted one."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mlff_distiller.errors import ConfigError, UserError
from mlff_distiller.training import DistillationTrainer
from test_training_core import emt_structures, small_config, write_dataset


class Crash(Exception):
    """Stands for a kill: no state is saved on the way out."""


def stop_at(step: int, exc):
    def cb(trainer, event, info):
        if event == "step" and info["step"] == step:
            raise exc()

    return cb


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("resume") / "emt.h5", emt_structures(n_roots=6, per_root=3, seed=7))


def cfg():
    # 15 training structures / batch 4 -> 4 steps per epoch; checkpoints every 3 steps.
    return small_config(max_epochs=3, checkpoint_every=3, schedule="cosine", ema_decay=0.9, weight_decay=1e-3,
                        val_fraction=0.15)


def load_state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["extra"]["train_state"]


def metric_rows(run: Path) -> list[dict]:
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    for r in rows:
        r.pop("elapsed_s")
    return rows


def assert_same_run(a: Path, b: Path):
    sa, sb = load_state(a), load_state(b)
    assert sa["state"]["step"] == sb["state"]["step"] == 12
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k
    for k, v in sa["ema"]["shadow"].items():
        assert torch.equal(v, sb["ema"]["shadow"][k]), k
    for pid, st in sa["optimizer"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(st[key], sb["optimizer"]["state"][pid][key])
    assert metric_rows(a) == metric_rows(b)
    ba = torch.load(a / "checkpoints" / "best.pt", weights_only=True)
    bb = torch.load(b / "checkpoints" / "best.pt", weights_only=True)
    assert ba["extra"]["epoch"] == bb["extra"]["epoch"]
    for k, v in ba["state_dict"].items():
        assert torch.equal(v, bb["state_dict"][k]), k


@pytest.fixture(scope="module")
def reference_run(dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    summary = DistillationTrainer(dataset, cfg(), run, progress=False).fit()
    assert summary["steps"] == 12
    return run


def test_ctrl_c_mid_epoch_then_resume_is_bitwise_identical(dataset, reference_run, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        DistillationTrainer(dataset, cfg(), run, progress=False, callbacks=[stop_at(6, KeyboardInterrupt)]).fit()
    assert load_state(run)["state"]["step"] == 6  # saved on the way out
    assert load_state(run)["state"]["batch_in_epoch"] == 2
    DistillationTrainer(dataset, cfg(), run, resume=True, progress=False).fit()
    assert_same_run(reference_run, run)


@pytest.mark.parametrize("every, crash, saved", [pytest.param(3, 11, 9, marks=pytest.mark.slow), (4, 10, 8)])
def test_crash_resumes_from_periodic_checkpoint(dataset, reference_run, tmp_path, every, crash, saved):
    """Crash (no save on the way out) mid-epoch; with every=4 the checkpoint is the last batch of
    epoch 1, taken before that epoch's validation row was written."""
    run = tmp_path / "run"
    with pytest.raises(Crash):
        DistillationTrainer(dataset, cfg().replace(checkpoint_every=every), run, progress=False,
                            callbacks=[stop_at(crash, Crash)]).fit()
    assert load_state(run)["state"]["step"] == saved  # the last periodic checkpoint
    assert len(metric_rows(run)) == 2  # two epoch rows were written before the crash
    DistillationTrainer(dataset, cfg(), run, resume=True, progress=False).fit()
    assert_same_run(reference_run, run)


def test_resume_with_more_epochs_continues_finished_run(dataset, tmp_path):
    run = tmp_path / "run"
    DistillationTrainer(dataset, cfg().replace(max_epochs=1), run, progress=False).fit()
    summary = DistillationTrainer(dataset, cfg().replace(max_epochs=2), run, resume=True, progress=False).fit()
    assert summary["epochs"] == 2 and summary["steps"] == 8
    assert [r["epoch"] for r in metric_rows(run)] == ["0", "1"]


def test_resume_errors(dataset, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(UserError, match="--resume"):
        DistillationTrainer(dataset, cfg(), run, resume=True)  # nothing to resume
    DistillationTrainer(dataset, cfg().replace(max_epochs=1), run, progress=False).fit()
    with pytest.raises(UserError, match="not empty"):
        DistillationTrainer(dataset, cfg(), run)  # would overwrite a run
    with pytest.raises(ConfigError, match="lr"):
        DistillationTrainer(dataset, cfg().replace(lr=0.5), run, resume=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable"):
        DistillationTrainer(dataset, cfg(), run, resume=True, progress=False).fit()


@pytest.mark.slow
def test_sigkill_then_resume_matches(dataset, reference_run, tmp_path):
    """A real SIGKILL of the CLI process at a random moment, then --resume."""
    import yaml

    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(cfg().to_dict()))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "mlff_distiller.cli", "train", str(dataset), "--config", str(conf), "-o", str(run),
           "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # it was still training when killed
    subprocess.run(cmd + ["--resume"], env=env, check=True)
    assert_same_run(reference_run, run)


def test_streaming_from_file_with_workers_equals_in_memory(dataset, reference_run, tmp_path):
    """in_memory=False reads structures lazily in 2 DataLoader workers: same batches, same run."""
    run = tmp_path / "run"
    DistillationTrainer(dataset, cfg().replace(in_memory=False, num_workers=2), run, progress=False).fit()
    assert_same_run(reference_run, run)


def test_resume_auto(dataset, reference_run, tmp_path):
    """resume="auto": continue when last.pt exists, start afresh over an unstarted run's files."""
    run = tmp_path / "run"
    with pytest.raises(Crash):  # dies before the first checkpoint (step 3), after writing set-up files
        DistillationTrainer(dataset, cfg(), run, progress=False, callbacks=[stop_at(2, Crash)]).fit()
    assert (run / "config.yaml").is_file() and not (run / "checkpoints" / "last.pt").exists()
    with pytest.raises(Crash):  # auto: starts again, dies after the step-9 checkpoint
        DistillationTrainer(dataset, cfg(), run, resume="auto", progress=False, callbacks=[stop_at(10, Crash)]).fit()
    DistillationTrainer(dataset, cfg(), run, resume="auto", progress=False).fit()
    assert_same_run(reference_run, run)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="notes.txt"):
        DistillationTrainer(dataset, cfg(), other, resume="auto")
    assert (other / "notes.txt").read_text() == "keep me"
