"""Dataset store (HDF5), ``MolecularDataset``, neighbour lists and normalization statistics.

Units are ASE's: eV, A, eV/A, eV/A^3 (stress Voigt xx yy zz yz xz xy). Names are imported
on first use so that ``mlff_distiller.data.store`` (h5py + numpy) loads without torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FORMAT_VERSION": "store",
    "DatasetReader": "store",
    "DatasetWriter": "store",
    "repack": "store",
    "MolecularDataset": "dataset",
    "collate": "graph",
    "atoms_to_graph": "graph",
    "atoms_to_batch": "graph",
    "NormalizationStats": "normalization",
    "compute_statistics": "normalization",
    "dataset_statistics": "normalization",
    "store_statistics": "normalization",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
