"""Recreate ``tests/data/dataset_v1.h5``: a tiny dataset in format version 1.

Run with the mlff-distiller of a v1 release (commit f2eefc5 or earlier) on PYTHONPATH:
``PYTHONPATH=<v1 checkout>/src python tests/data/make_v1_fixture.py``. The structures come
from :func:`v1_structures`, which the test uses to check what it reads back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def v1_structures() -> list:
    """Four small structures: a periodic Cu cell with stress, two molecules, charge/spin/tags."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for k in range(4):
        rng = np.random.default_rng(k)
        periodic = k % 2 == 0
        n = 3 + k
        a = Atoms(numbers=[29] * n if periodic else [1, 6, 8, 7, 1, 1, 1][:n], positions=rng.normal(size=(n, 3)) * 2,
                  cell=np.eye(3) * 7.0 if periodic else None, pbc=periodic)
        res = {"energy": float(rng.normal()) - 10.0, "forces": rng.normal(size=(n, 3))}
        if periodic:
            res["stress"] = rng.normal(size=6) * 0.01
        a.calc = SinglePointCalculator(a, **res)
        a.info["provenance"] = {"source": f"fixture:{k}", "sampler": "rattle", "params": {"k": k}, "parent": k - 1,
                                "group": f"g{k // 2}", "seed": 100 + k, "teacher": "emt"}
        if k == 1:
            a.info["charge"] = -1
            a.info["spin_multiplicity"] = 2
            a.set_tags(np.arange(n))
        out.append(a)
    return out


if __name__ == "__main__":
    from mlff_distiller.data.store import FORMAT_VERSION, DatasetWriter

    assert FORMAT_VERSION == 1, "run this with a v1 mlff-distiller on PYTHONPATH"
    path = Path(__file__).with_name("dataset_v1.h5")
    with DatasetWriter(path, attrs={"fixture": "v1"}, mode="w") as w:
        w.append(v1_structures())
        w.record_failures([(7, "teacher failed")])
    print(path)
