"""The HDF5 dataset store: one crash-safe format for unlabelled pools and labelled datasets.

Layout and guarantees are specified in ``docs/dataset-format.md`` (format version
:data:`FORMAT_VERSION`). In short, a dataset at ``PATH`` is

* ``PATH``: a compact HDF5 file with ragged arrays (per-atom arrays concatenated, an
  ``offsets`` index), per-structure arrays, provenance columns and JSON attributes;
* ``PATH.journal/``: while a writer is appending, each :meth:`DatasetWriter.append` call
  becomes one small *segment* file of the same layout, written under a temporary name and
  renamed into place atomically. :meth:`DatasetWriter.finalize` (run by ``close``) merges
  the main file and the segments into a new compact main file (again temp + rename).

:class:`DatasetReader` reads the main file plus any committed segments transparently, so
a writer killed at any moment (SIGKILL included) leaves a dataset that opens, holds every
structure whose ``append`` returned, never shows a partial structure, and can be appended
to again. Units are ASE's: eV, A, eV/A, eV/A^3 (stress in Voigt order xx yy zz yz xz xy).

Modules: :mod:`.convert` (``ase.Atoms`` <-> columns), :mod:`.parts` (one HDF5 part file),
:mod:`.reader`, :mod:`.writer` (with its journal), :mod:`.repack`.
"""

from __future__ import annotations

from .convert import FLOAT32_MANTISSA_BITS, LABEL_FIELDS, PROVENANCE_KEYS, default_provenance, round_mantissa
from .parts import (
    CHUNK_ATOMS,
    CHUNK_STRUCTURES,
    FORMAT_NAME,
    FORMAT_VERSION,
    GENERATED_POSITIONS_DTYPE,
    READ_VERSIONS,
    journal_dir,
)
from .reader import DatasetReader
from .repack import repack
from .writer import MAX_JOURNAL_SEGMENTS, DatasetWriter

__all__ = [
    "CHUNK_ATOMS",
    "CHUNK_STRUCTURES",
    "FLOAT32_MANTISSA_BITS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "GENERATED_POSITIONS_DTYPE",
    "LABEL_FIELDS",
    "READ_VERSIONS",
    "MAX_JOURNAL_SEGMENTS",
    "PROVENANCE_KEYS",
    "DatasetReader",
    "DatasetWriter",
    "default_provenance",
    "journal_dir",
    "repack",
    "round_mantissa",
]
