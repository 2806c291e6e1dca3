"""Retrain the silicon students with liquid silicon added (the run of ``liquid_data.md``).

``PROJECT/data/train.h5`` (the ``silicon`` project's training split) + ``LIQUID_H5`` (made with
``mlff-distill generate liquid_recipe.yaml -o liquid_pool.h5 --workers 2`` and ``mlff-distill label
liquid_pool.h5 -o liquid.h5 --teacher chgnet``) are written to ``OUT/train_liquid.h5``; then one
student per step budget is trained with the project's ``training`` section, as
``benchmarks/learning_curves.py`` trains its points, into ``OUT/liquid_<steps>``.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/results/silicon/liquid_data_run.py PROJECT
LIQUID_H5 OUT 4000 8000``; then ``benchmarks/compare_students.py`` on the students.
"""

import sys
from pathlib import Path

import torch
import yaml

from mlff_distiller.data.store import DatasetReader, DatasetWriter
from mlff_distiller.training import DistillationTrainer, TrainConfig

project, liquid, out = (Path(a) for a in sys.argv[1:4])
torch.set_num_threads(1)
merged = out / "train_liquid.h5"
if not merged.exists():
    with DatasetReader(project / "data" / "train.h5") as r, DatasetReader(liquid) as extra:
        with DatasetWriter(merged, label_fields=tuple(r.label_fields), attrs=dict(r.attrs), mode="w") as w:
            for start in range(0, len(r), 256):
                w.append([r.get_atoms(i) for i in range(start, min(len(r), start + 256))])
            w.append([extra.get_atoms(i) for i in range(len(extra))])
tcfg = dict(yaml.safe_load((project / "recipe.yaml").read_text())["training"])
for steps in (int(s) for s in sys.argv[4:]):
    cfg = TrainConfig.from_dict({**tcfg, "max_steps": steps, "max_epochs": 100000})
    DistillationTrainer(merged, cfg, out / f"liquid_{steps}", resume="auto", progress=False).fit()
