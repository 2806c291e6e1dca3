"""The dataset reader: the main file plus committed journal segments, as one dataset.

Opening takes a consistent snapshot even while a writer appends, compacts or finalizes.
Units are ASE's: eV, A, eV/A, eV/A^3 (stress Voigt xx yy zz yz xz xy).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ... import fields as F
from ...errors import DatasetError
from .convert import FLOAT32_MANTISSA_BITS, LABEL_FIELDS, PROV_INT, PROV_STR, merge_specs
from .parts import Part, journal_dir, list_segments, part_block


class _SnapshotChanged(Exception):
    """The dataset changed on disk while a reader was opening it."""


class DatasetReader:
    """Read a dataset (main file plus committed journal segments).

    ``len(r)``, ``r.label_fields``, ``r.attrs`` (dict), ``r.get_atoms(i)`` (``ase.Atoms`` with a
    SinglePointCalculator: energy eV, forces eV/A, stress Voigt eV/A^3), ``r.get_arrays(i)``
    (dict of numpy arrays), ``r.provenance(i)``, ``r.failures()``. Raises
    :class:`~mlff_distiller.errors.DatasetError` for a missing, corrupt or other-version file.
    With ``preload=True`` the per-atom arrays are read into RAM once and the files are
    closed: the reader then answers from memory alone and pickles (DataLoader workers).
    """

    def __init__(self, path, preload: bool = False):
        self.path = Path(path)
        if not self.path.exists():
            raise DatasetError(f"dataset file not found: {self.path}; check the path")
        if self.path.is_dir():
            raise DatasetError(f"{self.path} is a directory, not a dataset file; give the .h5 file")
        # A writer may finalize or compact while we open: take a consistent snapshot by
        # retrying until the main file is unchanged and every listed segment still exists.
        for attempt in range(20):
            try:
                self._parts = self._open_snapshot()
                break
            except _SnapshotChanged:
                time.sleep(0.01 * (attempt + 1))
        else:
            raise DatasetError(f"{self.path} kept changing while being opened (a busy writer?); try again")
        main = self._parts[0]
        self.label_fields: tuple[str, ...] = main.label_fields
        self.uuid: str = main.uuid  # identity of the dataset (journal segments carry it too)
        self.merged_through = int(main.meta.get("merged_through", 0))  # journal sequence merged into the main file
        self.segment_paths: list[Path] = [p.path for p in self._parts[1:]]  # committed, unmerged segments
        self.format_version = int(main.meta["format_version"])
        self.positions_dtype = np.dtype(main.meta.get("positions_dtype", "float64"))
        self.forces_mantissa_bits = int(main.meta.get("forces_mantissa_bits", FLOAT32_MANTISSA_BITS))
        attrs = json.loads(main.meta.get("attrs", "{}"))
        for part in self._parts[1:]:
            upd = part.meta.get("attrs_update")
            if upd:
                attrs.update(json.loads(upd))
        self.attrs: dict = attrs
        self.units: dict = json.loads(main.meta.get("units", "{}"))
        sizes = np.array([len(p) for p in self._parts], np.int64)
        self._part_start = np.concatenate([[0], np.cumsum(sizes)])
        self._n = int(self._part_start[-1])
        # Global per-structure columns (small; kept in RAM for fast random access).
        self.n_atoms = np.concatenate([p.n_atoms for p in self._parts])
        self._part_of = np.repeat(np.arange(len(self._parts)), sizes)
        self._local = np.concatenate([np.arange(s) for s in sizes]) if self._n else np.zeros(0, np.int64)
        self._cols = {k: np.concatenate([p.small[k] for p in self._parts]) for k in main.small}
        for k in (F.CELL, F.STRESS):  # float32 in the grid layout: callers always get float64
            if k in self._cols:
                self._cols[k] = self._cols[k].astype(np.float64)
        self._prov_codes, self._tables = {}, {}
        for key in (*PROV_STR, "info"):
            table: dict[str, int] = {}
            codes = []
            for p in self._parts:
                remap = np.array([table.setdefault(v, len(table)) for v in p.tables[key]] or [0], np.int32)
                codes.append(remap[p.prov[key]] if len(p) else np.zeros(0, np.int32))
            self._prov_codes[key] = np.concatenate(codes)
            self._tables[key] = list(table)
        self._prov_ints = {k: np.concatenate([p.prov[k] for p in self._parts]) for k in PROV_INT}
        self.extra_specs: dict = merge_specs((p.extra_specs for p in self._parts), str(self.path))
        if preload:
            for p in self._parts:
                p.preload()

    def _open_snapshot(self) -> list:
        before = os.stat(self.path).st_ino
        main = Part(self.path)
        parts = [main]
        try:
            segs, _ = list_segments(journal_dir(self.path), int(main.meta.get("merged_through", 0)))
            for _, _, p in segs:
                try:
                    part = Part(p)
                except DatasetError:
                    if not p.exists():  # merged and deleted by a writer meanwhile
                        raise _SnapshotChanged() from None
                    raise
                if part.uuid != main.uuid:  # left over from an earlier dataset at this path
                    part.close()
                    continue
                if part.label_fields != main.label_fields:
                    part.close()
                    raise DatasetError(
                        f"journal segment {p} has other label fields than {self.path}; delete the segment"
                    )
                parts.append(part)
            try:
                after = os.stat(self.path).st_ino
            except FileNotFoundError:
                after = None
            if after != before:
                raise _SnapshotChanged()
        except BaseException:
            for part in parts:
                part.close()
            raise
        return parts

    # -- basic access -------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for p in getattr(self, "_parts", []):
            p.close()
        self._parts = []

    @property
    def n_segments(self) -> int:
        """Number of journal segments not yet merged by ``finalize``."""
        return len(self._parts) - 1

    def _index(self, i) -> int:
        try:
            i = int(i)
        except (TypeError, ValueError):
            raise DatasetError(f"structure index {i!r} is not an integer") from None
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"structure index out of range: the dataset holds {self._n} structures")
        return i

    def get_arrays(self, i) -> dict[str, np.ndarray]:
        """Arrays of structure ``i``: numbers, positions (A), cell (A), pbc, and present labels."""
        i = self._index(i)
        part = self._parts[self._part_of[i]]
        j = self._local[i]
        a, b = int(part.offsets[j]), int(part.offsets[j + 1])
        out = {
            F.NUMBERS: part.read_atoms(F.NUMBERS, a, b).astype(np.int64),
            F.POSITIONS: part.read_atoms(F.POSITIONS, a, b).astype(np.float64),
            F.CELL: self._cols[F.CELL][i].copy(),  # copies: callers may modify them in place
            F.PBC: self._cols[F.PBC][i].copy(),
        }
        cols = self._cols
        if F.ENERGY in self.label_fields and cols[F.ENERGY + "_mask"][i]:
            out[F.ENERGY] = np.float64(cols[F.ENERGY][i])
        if F.FORCES in self.label_fields and cols[F.FORCES + "_mask"][i]:
            out[F.FORCES] = part.read_atoms(F.FORCES, a, b).astype(np.float64)
        if F.STRESS in self.label_fields and cols[F.STRESS + "_mask"][i]:
            out[F.STRESS] = cols[F.STRESS][i].copy()
        for name in (F.CHARGE, F.SPIN):
            v = cols[name][i]
            if not np.isnan(v):
                out[name] = np.float64(v)
        return out

    def provenance(self, i) -> dict:
        """Provenance dict of structure ``i`` (keys of docs/architecture.md, plus any extra keys)."""
        i = self._index(i)
        t, c = self._tables, self._prov_codes
        prov = {
            "source": t["source"][c["source"][i]],
            "sampler": t["sampler"][c["sampler"][i]],
            "params": json.loads(t["params"][c["params"][i]]),
            "parent": int(self._prov_ints["parent"][i]),
            "group": t["group"][c["group"][i]],
            "seed": int(self._prov_ints["seed"][i]),
            "teacher": t["teacher"][c["teacher"][i]],
        }
        extra = t["extra"][c["extra"][i]]
        if extra:
            prov.update(json.loads(extra))
        return prov

    def info(self, i) -> dict:
        """Extra ``atoms.info`` entries stored with structure ``i`` (besides provenance, charge, spin)."""
        i = self._index(i)
        text = self._tables["info"][self._prov_codes["info"][i]]
        return json.loads(text) if text else {}

    def extra_arrays(self, i) -> dict[str, np.ndarray]:
        """Per-atom arrays other than numbers/positions stored with structure ``i`` (e.g. momenta, tags)."""
        i = self._index(i)
        if not self.extra_specs:
            return {}
        part = self._parts[self._part_of[i]]
        j = self._local[i]
        a, b = int(part.offsets[j]), int(part.offsets[j + 1])
        return {name: part.read_atoms("arrays/" + name, a, b) for name in part.extra_specs if part.extra_masks[name][j]}

    def get_atoms(self, i):
        """Structure ``i`` as ``ase.Atoms`` with labels on a SinglePointCalculator."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        arr = self.get_arrays(i)
        atoms = Atoms(numbers=arr[F.NUMBERS], positions=arr[F.POSITIONS], cell=arr[F.CELL], pbc=arr[F.PBC])
        atoms.info.update(self.info(i))
        for name, values in self.extra_arrays(i).items():
            atoms.new_array(name, values)
        atoms.info["provenance"] = self.provenance(i)
        for name in (F.CHARGE, F.SPIN):
            if name in arr:
                v = float(arr[name])
                atoms.info[name] = int(v) if v.is_integer() else v
        res = {k: arr[k] for k in LABEL_FIELDS if k in arr}
        if res:
            if F.ENERGY in res:
                res[F.ENERGY] = float(res[F.ENERGY])
            atoms.calc = SinglePointCalculator(atoms, **res)
        return atoms

    def __iter__(self):
        for i in range(self._n):
            yield self.get_atoms(i)

    def failures(self) -> list[tuple[int, str]]:
        """``(pool_index, reason)`` of every structure recorded as failed."""
        out = []
        for p in self._parts:
            out.extend(p.failures)
        return out

    # -- bulk columns (statistics, splits, summaries) --------------------------------------
    def column(self, name: str) -> np.ndarray:
        """A whole per-structure column (``energy``, ``cell``, ``pbc``, ``*_mask``, ``n_atoms``, ...)."""
        if name == F.N_ATOMS:
            return self.n_atoms.copy()
        if name in self._cols:
            return self._cols[name].copy()
        if name in PROV_INT:
            return self._prov_ints[name].copy()
        if name in ("source", "sampler", "group", "teacher"):
            table = np.array(self._tables[name], dtype=object)
            return table[self._prov_codes[name]] if self._n else np.zeros(0, object)
        raise DatasetError(f"unknown column {name!r}; per-structure columns: {sorted(self._cols) + ['n_atoms']}")

    def verify(self) -> None:
        """Read every stored chunk once, checking HDF5 checksums (files written since the
        fletcher32 filter) and decompression; DatasetError naming the damaged structures."""
        for p in self._parts:
            p.verify()

    def iter_atom_blocks(self, name: str):
        """Yield ``(offsets, values)`` of a per-atom array (numbers, positions, forces), one part at a time."""
        for p in self._parts:
            if name not in p.atom_names:
                raise DatasetError(f"{self.path} has no per-atom array {name!r}")
            yield p.offsets, p.read_atoms(name)

    def iter_blocks(self, step: int = 4096):
        """Yield the dataset as column blocks of at most ``step`` structures, in file order
        (what merging and repacking copy)."""
        for part in self._parts:
            for lo in range(0, len(part), step):
                yield part_block(part, lo, min(len(part), lo + step))

    def elements(self) -> list[int]:
        zs = set()
        for _, nums in self.iter_atom_blocks(F.NUMBERS):
            zs.update(np.unique(nums).tolist())
        return sorted(int(z) for z in zs)
