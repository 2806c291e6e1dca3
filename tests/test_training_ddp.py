"""DDP: two gloo processes under torchrun give the run of one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

from mlff_distiller.training import DistillationTrainer
from test_training_core import TINY, emt_structures, small_config, write_dataset


def _torchrun(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mlff_distiller.cli", "train", *args, "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[:6000]
    return proc


@pytest.mark.timeout(600)
def test_two_gloo_processes_match_single_process(tmp_path):
    # 24 structures, one group of 4 held out: 20 training structures, global batch 4 -> 5 steps per
    # epoch and no padding duplicates from DistributedSampler (20 is divisible by 2 processes).
    ds = write_dataset(tmp_path / "emt.h5", emt_structures(n_roots=6, per_root=4, seed=11))
    cfg = small_config(max_epochs=2, batch_size=4, val_fraction=0.15, checkpoint_every=3, stress_weight=0.1,
                       student={**TINY, "dtype": "float64"})
    single = tmp_path / "single"
    DistillationTrainer(ds, cfg, single, progress=False).fit()

    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(cfg.to_dict()))
    ddp = tmp_path / "ddp"
    proc = _torchrun([str(ds), "--config", str(conf), "-o", str(ddp)])
    assert proc.stdout.count("trained 10 steps") == 1  # only rank 0 reports

    a = torch.load(single / "checkpoints" / "last.pt", weights_only=True)["extra"]["train_state"]
    b = torch.load(ddp / "checkpoints" / "last.pt", weights_only=True)["extra"]["train_state"]
    assert a["state"]["step"] == b["state"]["step"] == 10
    # float64 and the same global batch: the only difference is the order of the gradient sum
    # (two halves all-reduced instead of one sum), ~1e-16 relative per step; after 10 AdamW steps
    # it stays far below 1e-9. A wrong loss normalisation or batch split would differ by ~1e-3.
    worst = max(float((v - b["model"][k]).abs().max()) for k, v in a["model"].items() if v.is_floating_point())
    assert worst < 1e-9, worst
    print(f"max |single - ddp| weight difference after 10 steps: {worst:.2e}")
    # validation metrics were all-reduced over the two shards: same numbers as one process
    rows_a = (single / "metrics.csv").read_text().splitlines()
    rows_b = (ddp / "metrics.csv").read_text().splitlines()
    assert len(rows_a) == len(rows_b) == 3
    for ra, rb in zip(rows_a[1:], rows_b[1:]):
        va, vb = ra.split(",")[:-1], rb.split(",")[:-1]  # drop elapsed_s
        for x, y in zip(va, vb):
            assert float(x) == pytest.approx(float(y), rel=1e-6, abs=1e-12)
    assert (ddp / "parity.png").is_file() and (ddp / "checkpoints" / "best.pt").is_file()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ddp_resume_matches_single_process(tmp_path):
    """Two gloo processes: 1 epoch, then --resume to 2 epochs == one process for 2 epochs
    (constant schedule after warmup, so the plan's length does not change the lr)."""
    ds = write_dataset(tmp_path / "emt.h5", emt_structures(n_roots=6, per_root=4, seed=11))
    cfg = small_config(max_epochs=2, batch_size=4, val_fraction=0.15, checkpoint_every=3, schedule="constant",
                       student={**TINY, "dtype": "float64"})
    single = tmp_path / "single"
    DistillationTrainer(ds, cfg, single, progress=False).fit()
    c1, c2 = tmp_path / "c1.yaml", tmp_path / "c2.yaml"
    c1.write_text(yaml.safe_dump(cfg.replace(max_epochs=1).to_dict()))
    c2.write_text(yaml.safe_dump(cfg.to_dict()))
    ddp = tmp_path / "ddp"
    _torchrun([str(ds), "--config", str(c1), "-o", str(ddp)])
    _torchrun([str(ds), "--config", str(c2), "-o", str(ddp), "--resume"])
    a = torch.load(single / "checkpoints" / "last.pt", weights_only=True)["extra"]["train_state"]
    b = torch.load(ddp / "checkpoints" / "last.pt", weights_only=True)["extra"]["train_state"]
    assert a["state"]["step"] == b["state"]["step"] == 10
    worst = max(float((v - b["model"][k]).abs().max()) for k, v in a["model"].items() if v.is_floating_point())
    assert worst < 1e-9, worst
