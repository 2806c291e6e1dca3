"""Part files: one HDF5 file (the main file or one journal segment) in the store's layout.

:func:`write_part` writes a complete part under a temporary name and renames it into place
(:func:`mlff_distiller.fileio.atomic_path`); :class:`Part` opens one for reading (small
columns in RAM, per-atom arrays read lazily or preloaded), with HDF5 checksum damage
reported as a :class:`~mlff_distiller.errors.DatasetError` naming the structures.
The layout is specified in docs/dataset-format.md. Units are ASE's (eV, A, eV/A, eV/A^3).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from ... import __version__
from ... import fields as F
from ...errors import DatasetError
from ...fileio import atomic_path
from .convert import (
    FLOAT32_MANTISSA_BITS,
    GRID_BITS,
    GRID_DTYPE,
    LABEL_FIELDS,
    PROV_INT,
    PROV_STR,
    Block,
    encode_cell,
    encode_positions,
    from_grid,
    layout_dtypes,
    to_json,
)

FORMAT_NAME = "mlff-distiller-dataset"
FORMAT_VERSION = 3  # what this code writes
# What it reads. v1: chunks of 2048 atoms / 1024 structures, gzip level 4; v2: float32 or
# float64 positions, cell and stress float64; v3 adds the grid layout (int32 positions).
READ_VERSIONS = (1, 2, 3)
# Positions of generated pools (and of the datasets labelled from them): int32 counts of
# 2**-16 A, rounded when the pool is written, before any teacher sees them; cell on the same
# grid and stress as float32 (see convert.layout_dtypes). Imported data keeps float64.
GENERATED_POSITIONS_DTYPE = "int32"
SEG_RE = re.compile(r"^seg-(\d{10})-(\d{10})\.h5$")
# Chunk lengths of the compact layout (v2): a random single-structure read decompresses one
# chunk per array (16384 atoms = 192 KiB of float32 positions), and chunks this long let
# gzip+shuffle find ~2.5% more than v1's 2048 / 1024 (measured in docs/dataset-format.md).
CHUNK_ATOMS = 16384
CHUNK_STRUCTURES = 8192
GZIP_LEVEL = 9  # costs time only when finalizing/repacking; decompression speed is the same



def _first_line(err: BaseException, default: str | None = None) -> str:
    """The first line of an exception's message (its type name, or ``default``, when empty)."""
    text = str(err)
    if text:
        return text.splitlines()[0]
    return type(err).__name__ if default is None else default

def journal_dir(path) -> Path:
    """Directory holding the append journal of dataset ``path``."""
    p = Path(path)
    return p.with_name(p.name + ".journal")


class _FileBuilder:
    """Creates a part file with fixed-size datasets that are filled block by block."""

    def __init__(self, h5: h5py.File, n_structures: int, n_atoms: int, label_fields, positions_dtype, compact: bool):
        self.h5 = h5
        self.compact = compact
        self.s = 0  # structures written
        self.a = 0  # atoms written
        self.positions_dtype = np.dtype(positions_dtype)
        dtypes = layout_dtypes(positions_dtype)
        comp = dict(compression="gzip", compression_opts=GZIP_LEVEL) if compact else dict(compression="lzf")
        comp.update(shuffle=True, fletcher32=True)  # a checksum per chunk: damage is detected on read

        def mk(name, n, trailing, dtype, chunk, split=False):
            shape = (n,) + tuple(trailing)
            # split: one chunk per column (grid positions: x, y, z counts compress better apart)
            chunks = (max(1, min(n, chunk)),) + tuple(1 if split else t for t in trailing) if n else None
            kw = comp if n else {}
            return h5.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, **kw)

        ca, cs = CHUNK_ATOMS, CHUNK_STRUCTURES
        self.ds = {
            F.NUMBERS: mk(F.NUMBERS, n_atoms, (), np.uint8, ca),
            F.POSITIONS: mk(F.POSITIONS, n_atoms, (3,), positions_dtype, ca, split=self.positions_dtype == GRID_DTYPE),
            F.N_ATOMS: mk(F.N_ATOMS, n_structures, (), np.int32, cs),
            F.CELL: mk(F.CELL, n_structures, (3, 3), dtypes[F.CELL], cs),
            F.PBC: mk(F.PBC, n_structures, (3,), bool, cs),
            F.CHARGE: mk(F.CHARGE, n_structures, (), np.float32, cs),
            F.SPIN: mk(F.SPIN, n_structures, (), np.float32, cs),
        }
        for name in label_fields:
            fld = F.FIELDS[name]
            n = n_atoms if fld.per == "atom" else n_structures
            self.ds[name] = mk(name, n, fld.shape, dtypes.get(name, fld.np_dtype), ca if fld.per == "atom" else cs)
            self.ds[name + "_mask"] = mk(name + "_mask", n_structures, (), bool, cs)
        for key in PROV_INT:
            self.ds["provenance/" + key] = mk("provenance/" + key, n_structures, (), np.int64, cs)
        for key in PROV_STR:
            self.ds["provenance/" + key] = mk("provenance/" + key, n_structures, (), np.int32, cs)
        self.ds["info"] = mk("info", n_structures, (), np.int32, cs)
        self.extra_specs = json.loads(h5.attrs.get("extra_arrays", "{}"))
        for name, (dtype, trailing) in self.extra_specs.items():
            self.ds["arrays/" + name] = mk("arrays/" + name, n_atoms, tuple(trailing), np.dtype(dtype), ca)
            self.ds["arrays/" + name + "_mask"] = mk("arrays/" + name + "_mask", n_structures, (), bool, cs)
        self.offsets = np.zeros(n_structures + 1, np.int64)
        self.tables = {key: {} for key in (*PROV_STR, "info")}

    def _codes(self, key, values):
        table = self.tables[key]
        return np.fromiter((table.setdefault(v, len(table)) for v in values), dtype=np.int32, count=len(values))

    def add(self, blk: Block):
        ns, na = len(blk), len(blk.numbers)
        if ns == 0:
            return
        s0, s1, a0, a1 = self.s, self.s + ns, self.a, self.a + na
        put = {
            F.NUMBERS: blk.numbers,
            F.POSITIONS: encode_positions(blk.positions, self.positions_dtype),  # never a float->int cast
            F.N_ATOMS: blk.n_atoms,
            F.CELL: encode_cell(blk.cell, self.positions_dtype),
            F.PBC: blk.pbc,
            F.CHARGE: blk.charge,
            F.SPIN: blk.spin,
            **blk.labels,
        }
        for name, arr in put.items():
            ds = self.ds[name]
            if ds.shape[0] == 0:
                continue
            if name in (F.NUMBERS, F.POSITIONS, F.FORCES):
                ds[a0:a1] = arr
            else:
                ds[s0:s1] = arr
        for key in PROV_INT:
            self.ds["provenance/" + key][s0:s1] = blk.prov_int[key]
        for key in PROV_STR:
            self.ds["provenance/" + key][s0:s1] = self._codes(key, blk.prov_str[key])
        self.ds["info"][s0:s1] = self._codes("info", blk.info)
        for name, (vals, mask) in blk.extra.items():
            if self.ds["arrays/" + name].shape[0]:
                self.ds["arrays/" + name][a0:a1] = vals
            self.ds["arrays/" + name + "_mask"][s0:s1] = mask  # absent arrays keep fill values 0 / False
        self.offsets[s0 + 1 : s1 + 1] = a0 + np.cumsum(blk.n_atoms, dtype=np.int64)
        self.s, self.a = s1, a1

    def close(self, failures: list[tuple[int, str]]):
        h5 = self.h5
        h5.create_dataset("offsets", data=self.offsets, **_compression(len(self.offsets), CHUNK_STRUCTURES))
        for key, table in self.tables.items():
            name = ("provenance/" if key != "info" else "") + key + "_values"
            _write_strings(h5, name, list(table))
        h5.create_dataset("failures/index", data=np.array([int(i) for i, _ in failures], np.int64))
        _write_strings(h5, "failures/reason", [str(r) for _, r in failures])


def _compression(n: int, chunk: int, trailing=()) -> dict:
    if n == 0:
        return {}
    return dict(
        chunks=(min(n, chunk),) + tuple(trailing),
        compression="gzip",
        compression_opts=GZIP_LEVEL,
        shuffle=True,
        fletcher32=True,
    )


def _write_strings(h5: h5py.File, name: str, values: list[str]) -> None:
    """A 1-D UTF-8 string dataset: fixed-length and gzip-compressed when the padding stays
    small (vlen strings live in an uncompressed heap), variable-length otherwise."""
    raw = [v.encode("utf-8") for v in values]
    width = max([1] + [len(b) for b in raw])
    if width * len(raw) <= 8 * 2**20:
        dt = h5py.string_dtype("utf-8", width)
        h5.create_dataset(name, data=np.array(raw, dtype=dt), **_compression(len(raw), max(1, 2**16 // width)))
    else:
        h5.create_dataset(name, data=np.array(values, dtype=object), dtype=h5py.string_dtype("utf-8"))


def write_part(
    final_path: Path,
    blocks: Iterable[Block],
    n_structures: int,
    n_atoms: int,
    meta: dict,
    failures,
    compact: bool,
    fsync: bool,
) -> None:
    """Write a complete part file under a temporary name, then rename it to ``final_path``."""
    try:
        with atomic_path(final_path, fsync=fsync) as tmp:
            with h5py.File(tmp, "w", libver="latest") as h5:
                for key, value in meta.items():
                    h5.attrs[key] = value
                b = _FileBuilder(
                    h5,
                    n_structures,
                    n_atoms,
                    json.loads(meta["label_fields"]),
                    np.dtype(meta["positions_dtype"]),
                    compact,
                )
                for blk in blocks:
                    b.add(blk)
                if b.s != n_structures or b.a != n_atoms:  # pragma: no cover - internal consistency
                    raise RuntimeError("part file sizes disagree with their blocks")
                b.close(list(failures))
    except OSError as err:  # disk full, permissions, quota: nothing committed is touched
        raise DatasetError(
            f"writing {final_path} failed ({_first_line(err)}); check free disk "
            "space and permissions, everything committed before is intact"
        ) from None


class Part:
    """One opened part file (main or segment): small columns in RAM, per-atom arrays lazy."""

    def __init__(self, path: Path, rdcc_nbytes: int = 64 * 2**20):
        self.path = path
        try:
            self.h5 = h5py.File(path, "r", rdcc_nbytes=rdcc_nbytes, rdcc_nslots=100003)
        except FileNotFoundError:
            raise DatasetError(f"dataset file not found: {path}; check the path") from None
        except OSError as err:
            raise DatasetError(
                f"{path} is not a readable dataset file (truncated or corrupt HDF5: {str(err).splitlines()[0]}); "
                "restore it from a copy or re-create it"
            ) from None
        try:
            self._load()
        except DatasetError:
            self.h5.close()
            raise
        except (KeyError, OSError, ValueError, TypeError, json.JSONDecodeError) as err:
            self.h5.close()
            raise DatasetError(
                f"{path} is corrupt or incomplete ({type(err).__name__}: {_first_line(err, '')}); "
                "restore it from a copy or re-create it"
            ) from None

    def _load(self):
        h5, attrs = self.h5, self.h5.attrs
        if attrs.get("format") != FORMAT_NAME:
            raise DatasetError(
                f"{self.path} is an HDF5 file but not an mlff-distiller dataset (no format attribute); "
                "import foreign data with `mlff-distill dataset import`"
            )
        version = int(attrs.get("format_version", -1))
        if version not in READ_VERSIONS:
            raise DatasetError(
                f"{self.path} has dataset format version {version}, this mlff-distiller reads versions "
                f"{', '.join(map(str, READ_VERSIONS))}; use the matching mlff-distiller version or "
                "re-import the data"
            )
        self.meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
        self.label_fields = tuple(json.loads(self.meta["label_fields"]))
        self.uuid = str(self.meta["dataset_uuid"])
        unknown = [name for name in self.label_fields if name not in F.FIELDS or name not in LABEL_FIELDS]
        if unknown:
            raise DatasetError(
                f"{self.path} lists unknown label field {unknown[0]!r}; the file is corrupt, re-create it"
            )
        self.offsets = None
        self.n_atoms = self._whole(F.N_ATOMS).astype(np.int64)
        offsets = self._whole("offsets")
        n = len(self.n_atoms)
        if len(offsets) != n + 1 or (
            n
            and (
                offsets[0] != 0
                or offsets[-1] != h5[F.NUMBERS].shape[0]
                or not np.array_equal(np.diff(offsets), self.n_atoms)
            )
        ):
            raise DatasetError(f"{self.path} has an inconsistent offsets index; the file is corrupt, re-create it")
        self.offsets = offsets
        self.small = {name: self._whole(name) for name in (F.CELL, F.PBC, F.CHARGE, F.SPIN)}
        for name in self.label_fields:
            if F.FIELDS[name].per == "structure":
                self.small[name] = self._whole(name)
            self.small[name + "_mask"] = self._whole(name + "_mask")
        self.prov = {k: self._whole("provenance/" + k) for k in (*PROV_STR, *PROV_INT)}
        self.tables = {k: list(h5["provenance/" + k + "_values"].asstr()[()]) for k in PROV_STR}
        self.prov["info"] = self._whole("info")
        self.tables["info"] = list(h5["info_values"].asstr()[()])
        self.failures = list(zip(h5["failures/index"][()].tolist(), h5["failures/reason"].asstr()[()].tolist()))
        self.atom_ds = {
            name: h5[name] for name in (F.NUMBERS, F.POSITIONS) + ((F.FORCES,) if F.FORCES in self.label_fields else ())
        }
        self.extra_specs = json.loads(self.meta.get("extra_arrays", "{}"))
        self.extra_masks = {name: self._whole("arrays/" + name + "_mask") for name in self.extra_specs}
        for name in self.extra_specs:
            self.atom_ds["arrays/" + name] = h5["arrays/" + name]
        self._check_lengths()
        self.preloaded: dict | None = None
        self._numbers: np.ndarray | None = None

    def _whole(self, name: str) -> np.ndarray:
        """A whole dataset; DatasetError naming the damaged structures when a chunk fails its checksum."""
        try:
            return self.h5[name][()]
        except OSError as err:
            raise self._damage(name, err) from None

    def _check_lengths(self) -> None:
        """Every column must have one entry per structure (or per atom) of the offsets index."""
        n, n_at = len(self.n_atoms), int(self.offsets[-1]) if len(self.offsets) else 0
        cols = {
            **self.small,
            **{"provenance/" + k: v for k, v in self.prov.items() if k != "info"},
            "info": self.prov["info"],
            **{"arrays/" + k + "_mask": v for k, v in self.extra_masks.items()},
        }
        for name, col in cols.items():
            if len(col) != n:
                raise DatasetError(
                    f"{self.path}: column {name!r} has {len(col)} entries for {n} structures "
                    "(wrong length); the file is corrupt, re-create it"
                )
        for name, ds in self.atom_ds.items():
            if ds.shape[0] != n_at:
                raise DatasetError(
                    f"{self.path}: per-atom array {name!r} has {ds.shape[0]} rows for {n_at} atoms "
                    "(wrong length); the file is corrupt, re-create it"
                )
        for key, table in self.tables.items():
            codes = self.prov[key]
            if len(codes) and (codes.min() < 0 or codes.max() >= len(table)):
                raise DatasetError(
                    f"{self.path}: column {key!r} has codes outside its string table; the file is corrupt, re-create it"
                )

    def _damage(self, name: str, err: Exception) -> DatasetError:
        """The error for an unreadable dataset ``name``: which chunk (and so which structures) fails."""
        ds = self.h5[name]
        first = last = None
        if ds.chunks is not None and ds.shape and ds.shape[0]:
            for sl in ds.iter_chunks():
                try:
                    ds[sl]
                except OSError:
                    first, last = sl[0].start, sl[0].stop - 1
                    break
        where = ""
        if first is not None:
            per_atom = name in (F.NUMBERS, F.POSITIONS, F.FORCES) or (
                name.startswith("arrays/") and not name.endswith("_mask")
            )
            per_structure = (
                not per_atom and name != "offsets" and not name.endswith("_values") and not name.startswith("failures/")
            )
            if per_atom and self.offsets is not None:
                first, last = (int(np.searchsorted(self.offsets, x, side="right") - 1) for x in (first, last))
                where = f" of structures {first}-{last}"
            elif per_structure:
                where = f" of structures {first}-{last}"
            else:
                where = f" (rows {first}-{last})"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return DatasetError(
            f"{self.path} is corrupt: {name}{where} cannot be read ({reason}); "
            "restore the file from a copy or re-create it"
        )

    def __len__(self):
        return len(self.n_atoms)

    @property
    def atom_names(self) -> tuple[str, ...]:
        """Names of the per-atom arrays of this part (numbers, positions, forces, arrays/...)."""
        return tuple(self.preloaded if self.preloaded is not None else self.atom_ds)

    def preload(self):
        """Read every per-atom array into RAM and close the file: the part then answers from
        memory alone (and pickles)."""
        self.preloaded = {name: self.read_atoms(name) for name in self.atom_ds}
        self.atom_ds = {}
        self.close()

    def read_atoms(self, name: str, a: int | None = None, b: int | None = None) -> np.ndarray:
        """Per-atom array ``name``, atoms ``a:b`` (all by default); DatasetError on damaged data."""
        if self.preloaded is not None:
            return self.preloaded[name][a:b]
        if name == F.NUMBERS:
            if self._numbers is None:  # 1 byte per atom: kept in RAM after the first read
                self._numbers = self._read(name, None, None)
            return self._numbers[a:b]
        return self._read(name, a, b)

    def _read(self, name, a, b) -> np.ndarray:
        try:
            values = self.atom_ds[name][a:b]
        except OSError as err:
            raise self._damage(name, err) from None
        if name == F.POSITIONS and values.dtype.kind == "i":  # grid layout: counts of 2**-bits A
            return from_grid(values, int(self.meta.get("positions_grid_bits", GRID_BITS)))
        return values

    def verify(self) -> None:
        """Read every chunk of every dataset once (checksums, decompression); DatasetError on damage."""

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.chunks is not None and obj.shape and obj.shape[0]:
                for sl in obj.iter_chunks():
                    try:
                        obj[sl]
                    except OSError as err:
                        raise self._damage(name, err) from None

        if self.h5 is not None:
            self.h5.visititems(visit)
            return
        self.h5 = h5py.File(self.path, "r")  # a preloaded part closed its file: reopen to check it
        try:
            self.h5.visititems(visit)
        finally:
            self.close()

    def close(self):
        if self.h5 is None:
            return
        try:
            self.h5.close()
        except Exception:  # pragma: no cover - closing a broken file
            pass
        self.h5 = None


def list_segments(jdir: Path, merged_through: int) -> tuple[list[tuple[int, int, Path]], list[Path]]:
    """Committed journal segments ``(first, last, path)`` in order, and stale files (for writers).

    A segment is stale when the main file already holds it (``last <= merged_through``) or a
    compacted segment covers its range. Temporary files are never read.
    """
    if not jdir.is_dir():
        return [], []
    found, stale = [], []
    for p in jdir.iterdir():
        m = SEG_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), p))
        elif p.name.endswith(".tmp"):
            stale.append(p)
    live = []
    for first, last, p in found:
        covered = last <= merged_through or any(
            f2 <= first and last <= l2 and (f2, l2) != (first, last) for f2, l2, _ in found
        )
        if covered:
            stale.append(p)
        else:
            live.append((first, last, p))
    live.sort()
    return live, stale


def part_block(p: Part, lo: int = 0, hi: int | None = None) -> Block:
    """Read structures ``lo:hi`` of a part back into a block (for merging)."""
    hi = len(p) if hi is None else hi
    a, b = int(p.offsets[lo]), int(p.offsets[hi])
    blk = Block(
        numbers=p.read_atoms(F.NUMBERS, a, b),
        positions=p.read_atoms(F.POSITIONS, a, b),
        n_atoms=p.n_atoms[lo:hi].astype(np.int32),
        cell=p.small[F.CELL][lo:hi],
        pbc=p.small[F.PBC][lo:hi],
        charge=p.small[F.CHARGE][lo:hi],
        spin=p.small[F.SPIN][lo:hi],
    )
    for name in p.label_fields:
        blk.labels[name] = p.read_atoms(name, a, b) if name == F.FORCES else p.small[name][lo:hi]
        blk.labels[name + "_mask"] = p.small[name + "_mask"][lo:hi]
    for key in PROV_STR:
        table = p.tables[key]
        blk.prov_str[key] = [table[c] for c in p.prov[key][lo:hi]]
    blk.info = [p.tables["info"][c] for c in p.prov["info"][lo:hi]]
    for name in p.extra_specs:
        blk.extra[name] = (p.read_atoms("arrays/" + name, a, b), p.extra_masks[name][lo:hi])
    blk.prov_int = {k: p.prov[k][lo:hi] for k in PROV_INT}
    return blk


def base_meta(label_fields, attrs, positions_dtype, uuid, merged_through, forces_bits=FLOAT32_MANTISSA_BITS) -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "dataset_uuid": uuid,
        "merged_through": int(merged_through),
        "label_fields": json.dumps(list(label_fields)),
        "positions_dtype": np.dtype(positions_dtype).name,
        **({"positions_grid_bits": GRID_BITS} if np.dtype(positions_dtype) == GRID_DTYPE else {}),
        "forces_mantissa_bits": int(forces_bits),
        "units": json.dumps({**F.UNITS, "stress_order": "voigt xx yy zz yz xz xy"}),
        "unit_system": F.UNIT_SYSTEM,
        "attrs": to_json(attrs),
        "code_version": f"mlff-distiller {__version__}",
        "extra_arrays": "{}",
    }
