"""The warm starts of energy_skip.md: S0 on the final active dataset, the energies of the active
frames in the loss (``full``) or out of it (``masked``: a copy of the dataset whose
``energy_mask`` is false for them, what ``training.energy_skip_sources: [active/]`` does), then
the reference refit on the first dataset.

Run: ``python energy_skip_run.py AVR_DIR RECIPE OUT_DIR`` with AVR_DIR an output directory of
benchmarks/active_vs_random.py (its ``s0``, ``base.h5`` and ``active/round-2``) and RECIPE its
recipe (for water: /work/exp5/avr2, water_al.yaml, /work/exp6/emask on this machine). Units: eV, A."""

import shutil
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from mlff_distiller.active.rounds import refit_reference
from mlff_distiller.data.store import DatasetReader
from mlff_distiller.recipe import Recipe
from mlff_distiller.training import DistillationTrainer

torch.set_num_threads(1)
AVR, RECIPE, ROOT = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
ROOT.mkdir(parents=True, exist_ok=True)
ACTIVE = AVR / "active" / "round-2" / "dataset.h5"

masked = ROOT / "masked.h5"
if not masked.exists():
    shutil.copy(ACTIVE, masked)
    with DatasetReader(masked) as r:
        active = np.array([str(r.provenance(i)["source"]).startswith("active/") for i in range(len(r))])
    with h5py.File(masked, "r+") as f:
        mask = f["energy_mask"][()]
        mask[active] = False
        f["energy_mask"][...] = mask

cfg = Recipe.load(RECIPE).training.replace(max_steps=1000, warmup_steps=20)
for name, data in (("masked", masked), ("full", ACTIVE)):
    run = ROOT / name
    if not (run / "done").exists():
        t0 = time.time()
        DistillationTrainer(data, cfg, run, resume="auto", progress=False, init_from=AVR / "s0",
                            ).fit()
        (run / "done").write_text(f"{time.time() - t0:.0f}\n")
    refit = run / "refit.pt"
    if not refit.exists():
        shutil.copy(run / "checkpoints" / "best.pt", refit)
        print(name, refit_reference(refit, AVR / "base.h5", backend="numba"), flush=True)
