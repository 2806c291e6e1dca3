"""Dataset store (HDF5), ``MolecularDataset``, neighbour lists and normalization statistics.

Units are ASE's: eV, A, eV/A, eV/A^3 (stress Voigt xx yy zz yz xz xy).
"""

from .graph import atoms_to_batch, atoms_to_graph, collate
from .stats import NormalizationStats, compute_statistics
from .store import FORMAT_VERSION, DatasetReader, DatasetWriter, repack

__all__ = [
    "FORMAT_VERSION",
    "DatasetReader",
    "DatasetWriter",
    "repack",
    "MolecularDataset",
    "collate",
    "atoms_to_graph",
    "atoms_to_batch",
    "NormalizationStats",
    "compute_statistics",
]


def __getattr__(name):  # MolecularDataset pulls in torch.utils.data; import it on first use
    if name == "MolecularDataset":
        from .dataset import MolecularDataset

        return MolecularDataset
    raise AttributeError(name)
