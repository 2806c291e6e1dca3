"""Recreate ``tests/data/dataset_v2.h5``: a tiny labelled dataset in format version 2 with
float32 positions (the version-2 layout of a dataset labelled from a generated pool).

Run with the mlff-distiller of a v2 release (commit f88fc91) on PYTHONPATH:
``PYTHONPATH=<v2 checkout>/src python tests/data/make_v2_fixture.py``. The structures are
those of ``make_v1_fixture.v1_structures``, which the test uses to check what it reads back.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from make_v1_fixture import v1_structures

    from mlff_distiller.data.store import FORMAT_VERSION, DatasetWriter

    assert FORMAT_VERSION == 2, "run this with a v2 mlff-distiller on PYTHONPATH"
    path = Path(__file__).with_name("dataset_v2.h5")
    with DatasetWriter(path, attrs={"fixture": "v2"}, mode="w", positions_dtype="float32") as w:
        w.append(v1_structures())
        w.record_failures([(7, "teacher failed")])
    print(path)
