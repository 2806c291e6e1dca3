"""Dataset store (HDF5), ``MolecularDataset``, neighbour lists and normalization statistics.

Units are ASE's: eV, A, eV/A, eV/A^3 (stress Voigt xx yy zz yz xz xy). Names are imported
on first use so that ``mlff_distiller.data.store`` (h5py + numpy) loads without torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
