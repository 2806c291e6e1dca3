"""One manual on-policy round for the water student (2026-11-29): frames of its own Langevin MD,
written as an unlabelled pool for `mlff-distill label`. Run: python water_round1_explore.py RUN_DIR pool.h5"""
import sys

import numpy as np
from ase import units
from ase.md.langevin import Langevin

from mlff_distiller.bench.md import thermalize
from mlff_distiller.bench.systems import load_system
from mlff_distiller.data.store import DatasetWriter
from mlff_distiller.student import StudentCalculator

calc = StudentCalculator(sys.argv[1], backend='numba')  # the student's run directory
frames = []
for k, (name, T) in enumerate([('water-96', 600), ('water-96', 450), ('water-slab', 600), ('water-slab', 450)]):
    a = load_system(name).atoms
    a.calc = calc
    thermalize(a, T, 100 + k)
    dyn = Langevin(a, 0.5 * units.fs, temperature_K=T, friction=0.01 / units.fs, rng=np.random.default_rng(200 + k))
    for _ in range(40):
        dyn.run(100)
        f = a.copy()
        f.calc = None
        f.info['group'] = f'active/manual-{name}-{T}'
        frames.append(f)
    print(name, T, 'done', flush=True)
with DatasetWriter(
    sys.argv[2], label_fields=(), attrs={"kind": "pool", "recipe_name": "water-manual-round"}, mode="w"
) as w:
    w.append(frames)
print(len(frames))
