"""Size of labelled dataset files against the same data as float64/int64 numpy arrays.

For each store file given: the file size on disk, and the size of an uncompressed ``.npz`` of
numbers (int64), positions, cell, energy, forces, stress (float64), pbc and offsets; the ratio
is what issue 19's storage target ("generated pools >= 3x smaller") is about. Also prints the
positions dtype and filter of the file, its format version and the largest datasets
(KB = 1000 bytes on disk). Units: MiB.

Run: ``.venv/bin/python benchmarks/store_ratio.py PROJECT/tiers/all/dataset.h5 [...]``
"""
import io
import os
import sys

import h5py
import numpy as np

from mlff_distiller.data.store import DatasetReader

for p in sys.argv[1:]:
    r = DatasetReader(p)
    cols = {k: [] for k in ('numbers', 'positions', 'cell', 'pbc', 'energy', 'forces', 'stress')}
    for i in range(len(r)):
        a = r.get_atoms(i)
        cols['numbers'].append(a.numbers.astype(np.int64))
        cols['positions'].append(a.positions.astype(np.float64))
        cols['cell'].append(a.cell.array.astype(np.float64))
        cols['pbc'].append(a.pbc)
        res = a.calc.results
        cols['energy'].append(np.float64(res['energy']))
        cols['forces'].append(np.asarray(res['forces'], np.float64))
        cols['stress'].append(np.asarray(res.get('stress', np.zeros(6)), np.float64))
    buf = io.BytesIO()
    np.savez(buf, numbers=np.concatenate(cols['numbers']), positions=np.concatenate(cols['positions']),
             cell=np.stack(cols['cell']), pbc=np.stack(cols['pbc']), energy=np.array(cols['energy']),
             forces=np.concatenate(cols['forces']), stress=np.stack(cols['stress']),
             offsets=np.cumsum([0] + [len(x) for x in cols['numbers']]).astype(np.int64))
    with h5py.File(p) as h:
        sizes = {}

        def find(name, obj, sizes=sizes):
            if isinstance(obj, h5py.Dataset):
                sizes[name] = (obj.id.get_storage_size(), obj.dtype)
            if name.endswith("positions") and hasattr(obj, "dtype"):
                print("  positions dataset", name, obj.dtype, obj.compression, "shuffle" if obj.shuffle else "")
        h.visititems(find)
        top = sorted(sizes.items(), key=lambda kv: -kv[1][0])[:6]
        rest = sum(v for v, _ in sizes.values()) - sum(v for _, (v, _) in top)
        print("  format version", h.attrs["format_version"], "; KB on disk:",
              ", ".join(f"{k} {v / 1e3:.1f} ({dt})" for k, (v, dt) in top), f"; other datasets {rest / 1e3:.1f}")
    size = os.path.getsize(p)
    n_atoms = sum(len(x) for x in cols['numbers'])
    npz = len(buf.getvalue())
    print(p, len(r), 'structures', n_atoms, 'atoms; store', round(size / 2**20, 2), 'MiB; npz',
          round(npz / 2**20, 2), 'MiB; ratio', f'{npz / size:.3f}', '; bytes', size, npz)
