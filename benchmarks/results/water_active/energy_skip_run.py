"""The warm starts of energy_skip.md: S0 on the final active dataset, the energies of the active
frames in the loss (``full``) or out of it (``masked``: a copy of the dataset whose
``energy_mask`` is false for them, what ``training.energy_skip_sources: [active/]`` does), then
the reference refit on the first dataset. Paths are this machine's runs of
benchmarks/active_vs_random.py (water). Units: eV, A."""

import shutil
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
AVR = Path("/work/exp5/avr2")  # the active-vs-random run (refit in the loop)
ROOT = Path("/work/exp6/emask")
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

cfg = Recipe.load("/work/exp5/water_al.yaml").training.replace(max_steps=1000, warmup_steps=20)
for name, data in (("masked", masked), ("full", ACTIVE)):
    run = ROOT / name
    if not (run / "done").exists():
        t0 = time.time()
        DistillationTrainer(data, cfg, run, resume="auto", progress=False, init_from=AVR / "s0").fit()
        (run / "done").write_text(f"{time.time() - t0:.0f}\n")
    refit = run / "refit.pt"
    if not refit.exists():
        shutil.copy(run / "checkpoints" / "best.pt", refit)
        print(name, refit_reference(refit, AVR / "base.h5", backend="numba"), flush=True)
