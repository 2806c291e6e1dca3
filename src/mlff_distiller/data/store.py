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
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import re
import time
import uuid as _uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np

from .. import __version__
from .. import fields as F
from ..errors import DatasetError

FORMAT_NAME = "mlff-distiller-dataset"
FORMAT_VERSION = 1
LABEL_FIELDS = (F.ENERGY, F.FORCES, F.STRESS)
PROVENANCE_KEYS = ("source", "sampler", "params", "parent", "group", "seed", "teacher")
_PROV_STR = ("source", "sampler", "params", "group", "teacher", "extra")  # stored as string-table codes
_PROV_INT = ("parent", "seed")
_SEG_RE = re.compile(r"^seg-(\d{10})-(\d{10})\.h5$")
# Chunk lengths of the compact layout: small enough that a random single-structure read
# decompresses little, large enough that gzip+shuffle still compresses well.
CHUNK_ATOMS = 2048
CHUNK_STRUCTURES = 1024
MAX_JOURNAL_SEGMENTS = 32  # compact the journal into one segment beyond this many


FLOAT32_MANTISSA_BITS = 23


def round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """float32 values rounded (half to even) to ``bits`` explicit mantissa bits.

    Relative error at most ``2**-(bits + 1)``; the zeroed low bits make shuffle+gzip
    compress much better, and the result is still plain float32 for any HDF5 reader.
    """
    arr = np.ascontiguousarray(values, dtype=np.float32)
    drop = FLOAT32_MANTISSA_BITS - int(bits)
    if drop <= 0:
        return arr
    u = arr.view(np.uint32)
    lsb = (u >> np.uint32(drop)) & np.uint32(1)
    bias = np.uint32((1 << (drop - 1)) - 1) + lsb
    mask = np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    return ((u + bias) & mask).view(np.float32)


def _check_bits(bits) -> int:
    if bits is None:
        return FLOAT32_MANTISSA_BITS
    if not isinstance(bits, (int, np.integer)) or not 4 <= int(bits) <= FLOAT32_MANTISSA_BITS:
        raise DatasetError(f"forces_mantissa_bits {bits!r} is not valid; use an integer 4-23 (23 = full float32)")
    return int(bits)


def default_provenance() -> dict:
    """Provenance of a structure that carries none (see docs/architecture.md)."""
    return {"source": "", "sampler": "", "params": {}, "parent": -1, "group": "", "seed": -1, "teacher": ""}


def journal_dir(path) -> Path:
    """Directory holding the append journal of dataset ``path``."""
    p = Path(path)
    return p.with_name(p.name + ".journal")


def _json(obj) -> str:
    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"{type(o).__name__} is not JSON-serialisable")

    return json.dumps(obj, sort_keys=True, default=default, allow_nan=True)


# ----------------------------------------------------------------------------------------
# In-memory columns of a block of structures (what one segment / one file holds)
# ----------------------------------------------------------------------------------------
@dataclass
class _Block:
    """Columns of consecutive structures; string provenance kept as python strings."""

    numbers: np.ndarray
    positions: np.ndarray
    n_atoms: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    charge: np.ndarray
    spin: np.ndarray
    labels: dict = field(default_factory=dict)  # name -> array; plus name_mask
    prov_str: dict = field(default_factory=dict)  # key -> list[str]
    prov_int: dict = field(default_factory=dict)  # key -> int64 array
    info: list = field(default_factory=list)  # JSON strings of extra info
    extra: dict = field(default_factory=dict)  # per-atom array name -> (values (n_atoms, ...), mask (n,))

    def extra_specs(self) -> dict:
        return {k: _spec(v) for k, (v, _) in self.extra.items()}

    def __len__(self) -> int:
        return len(self.n_atoms)


_BASE_ARRAYS = ("numbers", "positions")
_EXTRA_KINDS = {"f": np.float64, "i": np.int64, "u": np.int64, "b": np.bool_}


def _spec(values: np.ndarray) -> list:
    """JSON-able description ``[dtype, trailing shape]`` of an extra per-atom array."""
    return [np.dtype(values.dtype).name, list(values.shape[1:])]


def _merge_specs(specs: Iterable[dict], where: str) -> dict:
    out: dict = {}
    for spec in specs:
        for name, sp in spec.items():
            if name in out and out[name] != list(sp):
                raise DatasetError(f"per-atom array {name!r} has dtype/shape {sp} in {where} but {out[name]} elsewhere; "
                                   "make it consistent or drop it (del atoms.arrays[name])")
            out[name] = list(sp)
    return out


def _describe(k: int, atoms) -> str:
    prov = atoms.info.get("provenance") if hasattr(atoms, "info") else None
    src = prov.get("source") if isinstance(prov, dict) else None
    return f"structure {k} of the appended list" + (f" (source {src!r})" if src else "")


def _atoms_to_block(atoms_list: Sequence, label_fields: tuple, positions_dtype: np.dtype,
                    forces_bits: int = FLOAT32_MANTISSA_BITS) -> _Block:
    """Validate ``ase.Atoms`` and convert them into columns (DatasetError on bad input)."""
    numbers, positions, n_atoms, cells, pbcs, charges, spins, infos = [], [], [], [], [], [], [], []
    labels = {name: [] for name in label_fields}
    masks = {name: [] for name in label_fields}
    prov_str = {k: [] for k in _PROV_STR}
    prov_int = {k: [] for k in _PROV_INT}
    extra_vals: dict[str, list] = {}
    extra_present: list[set] = []
    for k, atoms in enumerate(atoms_list):
        what = _describe(k, atoms)
        if not hasattr(atoms, "numbers") or not hasattr(atoms, "get_positions"):
            raise DatasetError(f"{what} is a {type(atoms).__name__}, not an ase.Atoms; append a list of ase.Atoms")
        z = np.asarray(atoms.numbers)
        n = len(z)
        if n == 0:
            raise DatasetError(f"{what} has no atoms; drop empty structures before appending")
        bad = (z < 1) | (z > 118)
        if bad.any():
            raise DatasetError(f"{what} has unknown atomic number {int(z[bad][0])}; atomic numbers must be 1-118")
        pos = np.asarray(atoms.get_positions(), dtype=np.float64)
        if pos.shape != (n, 3):
            raise DatasetError(f"{what} has positions of shape {pos.shape}, expected ({n}, 3)")
        if not np.isfinite(pos).all():
            raise DatasetError(f"{what} has NaN/inf positions; fix or drop the structure")
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        if not np.isfinite(cell).all():
            raise DatasetError(f"{what} has a NaN/inf cell; fix or drop the structure")
        pbc = np.asarray(atoms.pbc, dtype=bool)
        results = dict(atoms.calc.results) if getattr(atoms, "calc", None) is not None else {}
        periodic3d = bool(pbc.all())
        carried = [name for name in (F.ENERGY, F.FORCES) if name in results]
        if periodic3d and F.STRESS in results:
            carried.append(F.STRESS)
        extra = [name for name in carried if name not in label_fields]
        if extra:
            raise DatasetError(
                f"{what} carries labels ({', '.join(extra)}) that this file does not store "
                f"(label fields: {', '.join(label_fields) or 'none, an unlabelled pool'}); "
                "remove atoms.calc or write to a file with matching label_fields"
            )
        for name in label_fields:
            if name == F.ENERGY:
                if F.ENERGY not in results:
                    raise DatasetError(f"{what} has no energy label but the file stores energy; label it or record it as a failure")
                e = np.asarray(results[F.ENERGY], dtype=np.float64)
                if e.size != 1:
                    raise DatasetError(f"{what} has an energy of shape {e.shape}, expected a scalar (eV)")
                if not np.isfinite(e).all():
                    raise DatasetError(f"{what} has a NaN/inf energy label; drop it or record it as a failure")
                labels[name].append(float(e.reshape(())))
                masks[name].append(True)
            elif name == F.FORCES:
                if F.FORCES not in results:
                    raise DatasetError(f"{what} has no forces label but the file stores forces; label it or record it as a failure")
                f = np.asarray(results[F.FORCES], dtype=np.float64)
                if f.shape != (n, 3):
                    raise DatasetError(f"{what} has forces of shape {f.shape}, expected ({n}, 3) eV/A")
                if not np.isfinite(f).all():
                    raise DatasetError(f"{what} has NaN/inf forces; drop it or record it as a failure")
                labels[name].append(f)
                masks[name].append(True)
            elif name == F.STRESS:
                s = results.get(F.STRESS) if periodic3d else None
                if s is None:  # stress is defined only for 3-D periodic cells
                    labels[name].append(np.zeros(6))
                    masks[name].append(False)
                    continue
                s = np.asarray(s, dtype=np.float64)
                if s.shape == (3, 3):
                    s = F.matrix_to_voigt(s)
                if s.shape != (6,):
                    raise DatasetError(f"{what} has stress of shape {s.shape}, expected (6,) Voigt or (3, 3) eV/A^3")
                if not np.isfinite(s).all():
                    raise DatasetError(f"{what} has NaN/inf stress; drop it or record it as a failure")
                labels[name].append(s)
                masks[name].append(True)
        info = dict(atoms.info)
        prov = info.pop("provenance", None) or {}
        if not isinstance(prov, dict):
            raise DatasetError(f"{what} has info['provenance'] of type {type(prov).__name__}; it must be a dict")
        full = default_provenance()
        full.update(prov)
        try:
            prov_int["parent"].append(int(full.pop("parent")))
            prov_int["seed"].append(int(full.pop("seed")))
        except (TypeError, ValueError):
            raise DatasetError(f"{what} has a non-integer provenance parent or seed; use ints (-1 for none)") from None
        for key in ("source", "sampler", "group", "teacher"):
            prov_str[key].append(str(full.pop(key)))
        try:
            prov_str["params"].append(_json(full.pop("params")))
            prov_str["extra"].append(_json(full) if full else "")
            charge = info.pop("charge", None)
            spin = info.pop("spin_multiplicity", None)
            charges.append(np.nan if charge is None else float(charge))
            spins.append(np.nan if spin is None else float(spin))
            infos.append(_json(info) if info else "")
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{what} has provenance/info that is not JSON-serialisable ({err}); use plain types") from None
        present = set()
        for name, values in atoms.arrays.items():
            if name in _BASE_ARRAYS:
                continue
            arr = np.asarray(values)
            if arr.dtype.kind not in _EXTRA_KINDS or arr.shape[:1] != (n,):
                raise DatasetError(f"{what} has per-atom array {name!r} of dtype {arr.dtype} and shape {arr.shape}; "
                                   "only numeric arrays with one row per atom are stored, drop it (del atoms.arrays[name])")
            arr = arr.astype(_EXTRA_KINDS[arr.dtype.kind])
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise DatasetError(f"{what} has NaN/inf in per-atom array {name!r}; fix or drop it")
            extra_vals.setdefault(name, []).append((len(numbers), arr))
            present.add(name)
        extra_present.append(present)
        numbers.append(z.astype(np.uint8))
        positions.append(pos)
        n_atoms.append(n)
        cells.append(cell)
        pbcs.append(pbc)
    blk = _Block(
        numbers=np.concatenate(numbers) if numbers else np.zeros(0, np.uint8),
        positions=(np.concatenate(positions) if positions else np.zeros((0, 3))).astype(positions_dtype),
        n_atoms=np.asarray(n_atoms, np.int32),
        cell=np.asarray(cells, np.float64).reshape(-1, 3, 3),
        pbc=np.asarray(pbcs, bool).reshape(-1, 3),
        charge=np.asarray(charges, np.float32),
        spin=np.asarray(spins, np.float32),
        prov_str=prov_str,
        prov_int={k: np.asarray(v, np.int64) for k, v in prov_int.items()},
        info=infos,
    )
    sizes = np.asarray(n_atoms, np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for name, items in extra_vals.items():
        trailing = {a.shape[1:] for _, a in items}
        kinds = {a.dtype for _, a in items}
        if len(trailing) > 1 or len(kinds) > 1:
            raise DatasetError(f"per-atom array {name!r} has different dtypes/shapes across the appended structures; "
                               "make it consistent or drop it")
        (tr,), (dt,) = trailing, kinds
        vals = np.zeros((int(starts[-1]),) + tr, dtype=dt)
        mask = np.zeros(len(sizes), bool)
        for s_idx, a in items:
            vals[starts[s_idx]:starts[s_idx + 1]] = a
            mask[s_idx] = True
        blk.extra[name] = (vals, mask)
    for name in label_fields:
        fld = F.FIELDS[name]
        vals = labels[name]
        if name == F.FORCES:
            arr = np.concatenate(vals) if vals else np.zeros((0, 3))
        else:
            arr = np.asarray(vals, np.float64).reshape((-1,) + fld.shape)
        if np.isfinite(arr).all() and fld.np_dtype == np.float32 and np.abs(arr).max(initial=0) > 3e38:
            raise DatasetError(f"{name} labels exceed the float32 range; check the units (eV/A expected)")
        blk.labels[name] = arr.astype(fld.np_dtype)
        if name == F.FORCES:
            blk.labels[name] = round_mantissa(blk.labels[name], forces_bits)
        blk.labels[name + "_mask"] = np.asarray(masks[name], bool)
    return blk


# ----------------------------------------------------------------------------------------
# Writing one HDF5 file (main file or journal segment) of a given layout
# ----------------------------------------------------------------------------------------
class _FileBuilder:
    """Creates a part file with fixed-size datasets that are filled block by block."""

    def __init__(self, h5: h5py.File, n_structures: int, n_atoms: int, label_fields, positions_dtype, compact: bool):
        self.h5 = h5
        self.compact = compact
        self.s = 0  # structures written
        self.a = 0  # atoms written
        comp = dict(compression="gzip", compression_opts=4) if compact else dict(compression="lzf")
        comp.update(shuffle=True, fletcher32=True)  # a checksum per chunk: damage is detected on read

        def mk(name, n, trailing, dtype, chunk):
            shape = (n,) + tuple(trailing)
            chunks = (max(1, min(n, chunk)),) + tuple(trailing) if n else None
            kw = comp if n else {}
            return h5.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, **kw)

        ca, cs = CHUNK_ATOMS, CHUNK_STRUCTURES
        self.ds = {
            F.NUMBERS: mk(F.NUMBERS, n_atoms, (), np.uint8, ca),
            F.POSITIONS: mk(F.POSITIONS, n_atoms, (3,), positions_dtype, ca),
            F.N_ATOMS: mk(F.N_ATOMS, n_structures, (), np.int32, cs),
            F.CELL: mk(F.CELL, n_structures, (3, 3), np.float64, cs),
            F.PBC: mk(F.PBC, n_structures, (3,), bool, cs),
            F.CHARGE: mk(F.CHARGE, n_structures, (), np.float32, cs),
            F.SPIN: mk(F.SPIN, n_structures, (), np.float32, cs),
        }
        for name in label_fields:
            fld = F.FIELDS[name]
            n = n_atoms if fld.per == "atom" else n_structures
            self.ds[name] = mk(name, n, fld.shape, fld.np_dtype, ca if fld.per == "atom" else cs)
            self.ds[name + "_mask"] = mk(name + "_mask", n_structures, (), bool, cs)
        for key in _PROV_INT:
            self.ds["provenance/" + key] = mk("provenance/" + key, n_structures, (), np.int64, cs)
        for key in _PROV_STR:
            self.ds["provenance/" + key] = mk("provenance/" + key, n_structures, (), np.int32, cs)
        self.ds["info"] = mk("info", n_structures, (), np.int32, cs)
        self.extra_specs = json.loads(h5.attrs.get("extra_arrays", "{}"))
        for name, (dtype, trailing) in self.extra_specs.items():
            self.ds["arrays/" + name] = mk("arrays/" + name, n_atoms, tuple(trailing), np.dtype(dtype), ca)
            self.ds["arrays/" + name + "_mask"] = mk("arrays/" + name + "_mask", n_structures, (), bool, cs)
        self.offsets = np.zeros(n_structures + 1, np.int64)
        self.tables = {key: {} for key in (*_PROV_STR, "info")}

    def _codes(self, key, values):
        table = self.tables[key]
        return np.fromiter((table.setdefault(v, len(table)) for v in values), dtype=np.int32, count=len(values))

    def add(self, blk: _Block):
        ns, na = len(blk), len(blk.numbers)
        if ns == 0:
            return
        s0, s1, a0, a1 = self.s, self.s + ns, self.a, self.a + na
        put = {
            F.NUMBERS: blk.numbers, F.POSITIONS: blk.positions, F.N_ATOMS: blk.n_atoms, F.CELL: blk.cell,
            F.PBC: blk.pbc, F.CHARGE: blk.charge, F.SPIN: blk.spin, **blk.labels,
        }
        for name, arr in put.items():
            ds = self.ds[name]
            if ds.shape[0] == 0:
                continue
            if name in (F.NUMBERS, F.POSITIONS, F.FORCES):
                ds[a0:a1] = arr
            else:
                ds[s0:s1] = arr
        for key in _PROV_INT:
            self.ds["provenance/" + key][s0:s1] = blk.prov_int[key]
        for key in _PROV_STR:
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
    return dict(chunks=(min(n, chunk),) + tuple(trailing), compression="gzip", compression_opts=4, shuffle=True,
                fletcher32=True)


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


def _write_part(final_path: Path, blocks: Iterable[_Block], n_structures: int, n_atoms: int, meta: dict,
                failures, compact: bool, fsync: bool) -> None:
    """Write a complete part file under a temporary name, then rename it to ``final_path``."""
    tmp = final_path.with_name(f".{final_path.name}.{os.getpid()}.{_uuid.uuid4().hex[:8]}.tmp")
    try:
        with h5py.File(tmp, "w", libver="latest") as h5:
            for key, value in meta.items():
                h5.attrs[key] = value
            b = _FileBuilder(h5, n_structures, n_atoms, json.loads(meta["label_fields"]),
                             np.dtype(meta["positions_dtype"]), compact)
            for blk in blocks:
                b.add(blk)
            if b.s != n_structures or b.a != n_atoms:  # pragma: no cover - internal consistency
                raise RuntimeError("part file sizes disagree with their blocks")
            b.close(list(failures))
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, final_path)
        if fsync:
            _fsync_dir(final_path.parent)
    except OSError as err:  # disk full, permissions, quota: nothing committed is touched
        raise DatasetError(
            f"writing {final_path} failed ({str(err).splitlines()[0] if str(err) else type(err).__name__}); check free disk "
            "space and permissions, everything committed before is intact"
        ) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's live process
        return True
    return True


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------
# Reading one part file
# ----------------------------------------------------------------------------------------
class _Part:
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
                f"{path} is corrupt or incomplete ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "restore it from a copy or re-create it"
            ) from None

    def _load(self):
        h5, attrs = self.h5, self.h5.attrs
        if attrs.get("format") != FORMAT_NAME:
            raise DatasetError(f"{self.path} is an HDF5 file but not an mlff-distiller dataset (no format attribute); "
                               "import foreign data with `mlff-distill dataset import`")
        version = int(attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise DatasetError(f"{self.path} has dataset format version {version}, this mlff-distiller reads version "
                               f"{FORMAT_VERSION}; use the matching mlff-distiller version or re-import the data")
        self.meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
        self.label_fields = tuple(json.loads(self.meta["label_fields"]))
        self.uuid = str(self.meta["dataset_uuid"])
        unknown = [name for name in self.label_fields if name not in F.FIELDS or name not in LABEL_FIELDS]
        if unknown:
            raise DatasetError(f"{self.path} lists unknown label field {unknown[0]!r}; the file is corrupt, re-create it")
        self.offsets = None
        self.n_atoms = self._whole(F.N_ATOMS).astype(np.int64)
        offsets = self._whole("offsets")
        n = len(self.n_atoms)
        if (len(offsets) != n + 1 or (n and (offsets[0] != 0 or offsets[-1] != h5[F.NUMBERS].shape[0]
                                             or not np.array_equal(np.diff(offsets), self.n_atoms)))):
            raise DatasetError(f"{self.path} has an inconsistent offsets index; the file is corrupt, re-create it")
        self.offsets = offsets
        self.small = {name: self._whole(name) for name in (F.CELL, F.PBC, F.CHARGE, F.SPIN)}
        for name in self.label_fields:
            if F.FIELDS[name].per == "structure":
                self.small[name] = self._whole(name)
            self.small[name + "_mask"] = self._whole(name + "_mask")
        self.prov = {k: self._whole("provenance/" + k) for k in (*_PROV_STR, *_PROV_INT)}
        self.tables = {k: list(h5["provenance/" + k + "_values"].asstr()[()]) for k in _PROV_STR}
        self.prov["info"] = self._whole("info")
        self.tables["info"] = list(h5["info_values"].asstr()[()])
        self.failures = list(zip(h5["failures/index"][()].tolist(), h5["failures/reason"].asstr()[()].tolist()))
        self.atom_ds = {name: h5[name] for name in (F.NUMBERS, F.POSITIONS) + ((F.FORCES,) if F.FORCES in self.label_fields else ())}
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
        cols = {**self.small, **{"provenance/" + k: v for k, v in self.prov.items() if k != "info"},
                "info": self.prov["info"], **{"arrays/" + k + "_mask": v for k, v in self.extra_masks.items()}}
        for name, col in cols.items():
            if len(col) != n:
                raise DatasetError(f"{self.path}: column {name!r} has {len(col)} entries for {n} structures "
                                   "(wrong length); the file is corrupt, re-create it")
        for name, ds in self.atom_ds.items():
            if ds.shape[0] != n_at:
                raise DatasetError(f"{self.path}: per-atom array {name!r} has {ds.shape[0]} rows for {n_at} atoms "
                                   "(wrong length); the file is corrupt, re-create it")
        for key, table in self.tables.items():
            codes = self.prov[key]
            if len(codes) and (codes.min() < 0 or codes.max() >= len(table)):
                raise DatasetError(f"{self.path}: column {key!r} has codes outside its string table; "
                                   "the file is corrupt, re-create it")

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
            per_atom = name in (F.NUMBERS, F.POSITIONS, F.FORCES) or (name.startswith("arrays/") and not name.endswith("_mask"))
            per_structure = not per_atom and name != "offsets" and not name.endswith("_values") \
                and not name.startswith("failures/")
            if per_atom and self.offsets is not None:
                first, last = (int(np.searchsorted(self.offsets, x, side="right") - 1) for x in (first, last))
                where = f" of structures {first}-{last}"
            elif per_structure:
                where = f" of structures {first}-{last}"
            else:
                where = f" (rows {first}-{last})"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return DatasetError(f"{self.path} is corrupt: {name}{where} cannot be read ({reason}); "
                            "restore the file from a copy or re-create it")

    def __len__(self):
        return len(self.n_atoms)

    def preload(self):
        self.preloaded = {name: self.read_atoms(name) for name in self.atom_ds}

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
            return self.atom_ds[name][a:b]
        except OSError as err:
            raise self._damage(name, err) from None

    def verify(self) -> None:
        """Read every chunk of every dataset once (checksums, decompression); DatasetError on damage."""
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.chunks is not None and obj.shape and obj.shape[0]:
                for sl in obj.iter_chunks():
                    try:
                        obj[sl]
                    except OSError as err:
                        raise self._damage(name, err) from None

        self.h5.visititems(visit)

    def close(self):
        try:
            self.h5.close()
        except Exception:  # pragma: no cover - closing a broken file
            pass


def _list_segments(jdir: Path, merged_through: int) -> tuple[list[tuple[int, int, Path]], list[Path]]:
    """Committed journal segments ``(first, last, path)`` in order, and stale files (for writers).

    A segment is stale when the main file already holds it (``last <= merged_through``) or a
    compacted segment covers its range. Temporary files are never read.
    """
    if not jdir.is_dir():
        return [], []
    found, stale = [], []
    for p in jdir.iterdir():
        m = _SEG_RE.match(p.name)
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


class _SnapshotChanged(Exception):
    """The dataset changed on disk while a reader was opening it."""


class DatasetReader:
    """Read a dataset (main file plus committed journal segments).

    ``len(r)``, ``r.label_fields``, ``r.attrs`` (dict), ``r.get_atoms(i)`` (``ase.Atoms`` with a
    SinglePointCalculator: energy eV, forces eV/A, stress Voigt eV/A^3), ``r.get_arrays(i)``
    (dict of numpy arrays), ``r.provenance(i)``, ``r.failures()``. Raises
    :class:`~mlff_distiller.errors.DatasetError` for a missing, corrupt or other-version file.
    With ``preload=True`` the per-atom arrays are read into RAM once.
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
        self._prov_codes, self._tables = {}, {}
        for key in (*_PROV_STR, "info"):
            table: dict[str, int] = {}
            codes = []
            for p in self._parts:
                remap = np.array([table.setdefault(v, len(table)) for v in p.tables[key]] or [0], np.int32)
                codes.append(remap[p.prov[key]] if len(p) else np.zeros(0, np.int32))
            self._prov_codes[key] = np.concatenate(codes)
            self._tables[key] = list(table)
        self._prov_ints = {k: np.concatenate([p.prov[k] for p in self._parts]) for k in _PROV_INT}
        self.extra_specs: dict = _merge_specs((p.extra_specs for p in self._parts), str(self.path))
        if preload:
            for p in self._parts:
                p.preload()

    def _open_snapshot(self) -> list:
        before = os.stat(self.path).st_ino
        main = _Part(self.path)
        parts = [main]
        try:
            segs, _ = _list_segments(journal_dir(self.path), int(main.meta.get("merged_through", 0)))
            for _, _, p in segs:
                try:
                    part = _Part(p)
                except DatasetError:
                    if not p.exists():  # merged and deleted by a writer meanwhile
                        raise _SnapshotChanged() from None
                    raise
                if part.uuid != main.uuid:  # left over from an earlier dataset at this path
                    part.close()
                    continue
                if part.label_fields != main.label_fields:
                    part.close()
                    raise DatasetError(f"journal segment {p} has other label fields than {self.path}; delete the segment")
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
        if name in _PROV_INT:
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
            if name not in p.atom_ds:
                raise DatasetError(f"{self.path} has no per-atom array {name!r}")
            yield p.offsets, p.read_atoms(name)

    def elements(self) -> list[int]:
        zs = set()
        for _, nums in self.iter_atom_blocks(F.NUMBERS):
            zs.update(np.unique(nums).tolist())
        return sorted(int(z) for z in zs)


# ----------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------
def _base_meta(label_fields, attrs, positions_dtype, uuid, merged_through, forces_bits=FLOAT32_MANTISSA_BITS) -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "dataset_uuid": uuid,
        "merged_through": int(merged_through),
        "label_fields": json.dumps(list(label_fields)),
        "positions_dtype": np.dtype(positions_dtype).name,
        "forces_mantissa_bits": int(forces_bits),
        "units": json.dumps({**F.UNITS, "stress_order": "voigt xx yy zz yz xz xy"}),
        "unit_system": F.UNIT_SYSTEM,
        "attrs": _json(attrs),
        "code_version": f"mlff-distiller {__version__}",
        "extra_arrays": "{}",
    }


class DatasetWriter:
    """Append structures to a dataset, crash-safely (see module docstring).

    ``label_fields``: subset of ``("energy", "forces", "stress")``; ``()`` makes an unlabelled
    pool. Labels come from ``atoms.calc.results``, provenance from ``atoms.info["provenance"]``,
    charge / spin from ``atoms.info["charge"]`` / ``["spin_multiplicity"]``. ``attrs`` is a
    JSON-able dict stored in the file (teacher, recipe, ...). ``mode="a"`` appends to an
    existing file (its label fields must match), ``"w"`` starts a new one. ``append`` is
    durable when it returns; ``close`` (also on leaving ``with``) runs :meth:`finalize`.
    """

    def __init__(self, path, label_fields: Sequence[str] = LABEL_FIELDS, attrs: dict | None = None, mode: str = "a",
                 positions_dtype: str = "float64", forces_mantissa_bits: int | None = None, fsync: bool = True,
                 finalize_on_close: bool = True):
        self.path = Path(path)
        label_fields = tuple(label_fields)
        bad = [f for f in label_fields if f not in LABEL_FIELDS]
        if bad or len(set(label_fields)) != len(label_fields):
            raise DatasetError(f"label_fields {label_fields} is not valid; use a subset of {LABEL_FIELDS}")
        label_fields = tuple(f for f in LABEL_FIELDS if f in label_fields)  # canonical order
        if mode not in ("a", "w"):
            raise DatasetError(f"writer mode {mode!r} is not valid; use 'a' (append) or 'w' (new file)")
        if np.dtype(positions_dtype) not in (np.float64, np.float32):
            raise DatasetError(f"positions_dtype {positions_dtype!r} is not valid; use 'float64' or 'float32'")
        self.forces_bits = _check_bits(forces_mantissa_bits)
        if not self.path.parent.is_dir():
            raise DatasetError(f"directory {self.path.parent} does not exist; create it first")
        self.fsync = fsync
        self.finalize_on_close = finalize_on_close
        self._closed = False
        self._jdir = journal_dir(self.path)
        try:
            self._jdir.mkdir(exist_ok=True)
            self._lock_fh = open(self._jdir / "writer.lock", "a+")
        except OSError as err:
            raise DatasetError(f"cannot write next to {self.path} ({err.strerror or err}); check the directory's permissions") from None
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_fh.close()
            raise DatasetError(f"{self.path} is already open for writing by another process; wait for it or stop it") from None
        try:
            self._open(label_fields, dict(attrs or {}), mode, positions_dtype)
        except BaseException:
            self._release()
            raise

    def _remove_orphaned_temp_files(self) -> None:
        """Delete temporary main-file copies left by killed processes (never a live one's)."""
        pat = re.compile(r"^\." + re.escape(self.path.name) + r"\.(\d+)\.[0-9a-f]{8}\.tmp$")
        for p in self.path.parent.iterdir():
            m = pat.match(p.name)
            if m and not _pid_alive(int(m.group(1))):
                p.unlink(missing_ok=True)

    def _open(self, label_fields, attrs, mode, positions_dtype):
        self._remove_orphaned_temp_files()
        if mode == "a" and self.path.exists():
            r = DatasetReader(self.path)
            try:
                if r.label_fields != label_fields:
                    raise DatasetError(
                        f"{self.path} stores label fields ({', '.join(r.label_fields) or 'none'}) but the writer was "
                        f"opened with ({', '.join(label_fields) or 'none'}); use the file's label fields or a new file"
                    )
                main = r._parts[0]
                self.uuid = main.uuid
                self.merged_through = int(main.meta.get("merged_through", 0))
                self.positions_dtype = np.dtype(main.meta.get("positions_dtype", "float64"))
                self.forces_bits = r.forces_mantissa_bits
                self._extra_specs = dict(r.extra_specs)
                self._attrs = dict(r.attrs)
                self._n = len(r)
                live = {part.path for part in r._parts[1:]}
            finally:
                r.close()
            segs, stale = _list_segments(self._jdir, self.merged_through)
            stale += [p for _, _, p in segs if p not in live]  # other dataset generation
            for p in stale:
                p.unlink(missing_ok=True)
            self._segments = [s for s in segs if s[2] in live]
            self._seq = max([self.merged_through] + [last for _, last, _ in segs])
            self.label_fields = label_fields
            new = {k: v for k, v in attrs.items() if self._attrs.get(k, object()) != v}
            if new:
                self.update_attrs(new)
        else:
            self.uuid = _uuid.uuid4().hex
            self.merged_through = 0
            self.positions_dtype = np.dtype(positions_dtype)
            attrs.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
            attrs.setdefault("code_version", f"mlff-distiller {__version__}")
            self._attrs = attrs
            self._extra_specs = {}
            self._n = 0
            self._seq = 0
            meta = _base_meta(label_fields, attrs, self.positions_dtype, self.uuid, 0, self.forces_bits)
            _write_part(self.path, [], 0, 0, meta, [], compact=True, fsync=self.fsync)
            for p in self._jdir.iterdir():  # journal of a previous dataset at this path
                if _SEG_RE.match(p.name) or p.name.endswith(".tmp"):
                    p.unlink(missing_ok=True)
            self._segments = []
        self.label_fields = label_fields

    # -- state --------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def attrs(self) -> dict:
        return dict(self._attrs)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # On an exception inside ``with`` keep the journal as it is (every returned append is
        # already durable) and skip the merge.
        self.close(finalize=self.finalize_on_close and exc_type is None)

    def _check_open(self):
        if self._closed:
            raise DatasetError(f"the writer of {self.path} is closed; open a new DatasetWriter to append")

    # -- journal ------------------------------------------------------------------------
    def _commit_segment(self, blk: _Block | None, failures=(), attrs_update: dict | None = None) -> None:
        seq = self._seq + 1
        meta = _base_meta(self.label_fields, {}, self.positions_dtype, self.uuid, 0, self.forces_bits)
        meta["segment"] = seq
        if blk is not None:
            meta["extra_arrays"] = json.dumps(blk.extra_specs(), sort_keys=True)
        if attrs_update:
            meta["attrs_update"] = _json(attrs_update)
        final = self._jdir / f"seg-{seq:010d}-{seq:010d}.h5"
        blocks = [blk] if blk is not None else []
        ns = len(blk) if blk is not None else 0
        na = len(blk.numbers) if blk is not None else 0
        _write_part(final, blocks, ns, na, meta, failures, compact=False, fsync=self.fsync)
        self._seq = seq
        self._segments.append((seq, seq, final))
        if len(self._segments) > MAX_JOURNAL_SEGMENTS:
            self._compact_journal()

    def append(self, atoms_list) -> list[int]:
        """Append structures; durable when it returns. Returns their indices in the file."""
        self._check_open()
        if hasattr(atoms_list, "get_positions"):
            atoms_list = [atoms_list]
        atoms_list = list(atoms_list)
        if not atoms_list:
            return []
        blk = _atoms_to_block(atoms_list, self.label_fields, self.positions_dtype, self.forces_bits)
        specs = _merge_specs([self._extra_specs, blk.extra_specs()], "the appended structures")
        self._commit_segment(blk)
        self._extra_specs = specs
        start = self._n
        self._n += len(blk)
        return list(range(start, self._n))

    def record_failures(self, failures) -> None:
        """Record ``(pool_index, reason)`` pairs of structures that could not be labelled (durable)."""
        self._check_open()
        failures = [(int(i), " ".join(str(r).split())) for i, r in failures]
        if failures:
            self._commit_segment(None, failures=failures)

    def update_attrs(self, attrs: dict) -> None:
        """Add or replace file attributes (JSON-able values); durable when it returns."""
        self._check_open()
        try:
            _json(attrs)
        except (TypeError, ValueError) as err:
            raise DatasetError(f"file attributes must be JSON-serialisable: {err}") from None
        self._commit_segment(None, attrs_update=attrs)
        self._attrs.update(attrs)

    def _compact_journal(self) -> None:
        """Merge all journal segments into one (temp + rename); the old ones become stale."""
        parts = [_Part(p) for _, _, p in self._segments]
        try:
            first, last = self._segments[0][0], self._segments[-1][1]
            attrs_update: dict = {}
            for p in parts:
                if p.meta.get("attrs_update"):
                    attrs_update.update(json.loads(p.meta["attrs_update"]))
            meta = _base_meta(self.label_fields, {}, self.positions_dtype, self.uuid, 0, self.forces_bits)
            meta["segment"] = last
            meta["extra_arrays"] = json.dumps(_merge_specs((p.extra_specs for p in parts), "the journal"), sort_keys=True)
            if attrs_update:
                meta["attrs_update"] = _json(attrs_update)
            final = self._jdir / f"seg-{first:010d}-{last:010d}.h5"
            failures = [f for p in parts for f in p.failures]
            _write_part(final, (_part_block(p) for p in parts), sum(len(p) for p in parts),
                        sum(int(p.offsets[-1]) for p in parts), meta, failures, compact=False, fsync=self.fsync)
        finally:
            for p in parts:
                p.close()
        old = self._segments
        self._segments = [(first, last, final)]
        for f, l, p in old:
            if p != final:
                p.unlink(missing_ok=True)

    def finalize(self) -> None:
        """Merge main file and journal into a new compact main file (temp + atomic rename)."""
        self._check_open()
        if not self._segments:
            return
        _merge_into(self.path, self.path, self.positions_dtype, fsync=self.fsync, merged_through=self._seq,
                    forces_bits=self.forces_bits)
        self.merged_through = self._seq
        for _, _, p in self._segments:
            p.unlink(missing_ok=True)
        self._segments = []

    def _release(self):
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
        finally:
            self._lock_fh.close()

    def close(self, finalize: bool | None = None) -> None:
        if self._closed:
            return
        try:
            if self.finalize_on_close if finalize is None else finalize:
                self.finalize()
        finally:
            self._closed = True
            self._release()
            try:  # leave no empty journal directory behind a finalized file
                if not any(p.name != "writer.lock" for p in self._jdir.iterdir()):
                    (self._jdir / "writer.lock").unlink(missing_ok=True)
                    self._jdir.rmdir()
            except OSError:
                pass


def _part_block(p: _Part, lo: int = 0, hi: int | None = None) -> _Block:
    """Read structures ``lo:hi`` of a part back into a block (for merging)."""
    hi = len(p) if hi is None else hi
    a, b = int(p.offsets[lo]), int(p.offsets[hi])
    blk = _Block(
        numbers=p.read_atoms(F.NUMBERS, a, b), positions=p.read_atoms(F.POSITIONS, a, b), n_atoms=p.n_atoms[lo:hi].astype(np.int32),
        cell=p.small[F.CELL][lo:hi], pbc=p.small[F.PBC][lo:hi], charge=p.small[F.CHARGE][lo:hi], spin=p.small[F.SPIN][lo:hi],
    )
    for name in p.label_fields:
        blk.labels[name] = p.read_atoms(name, a, b) if name == F.FORCES else p.small[name][lo:hi]
        blk.labels[name + "_mask"] = p.small[name + "_mask"][lo:hi]
    for key in _PROV_STR:
        table = p.tables[key]
        blk.prov_str[key] = [table[c] for c in p.prov[key][lo:hi]]
    blk.info = [p.tables["info"][c] for c in p.prov["info"][lo:hi]]
    for name in p.extra_specs:
        blk.extra[name] = (p.read_atoms("arrays/" + name, a, b), p.extra_masks[name][lo:hi])
    blk.prov_int = {k: p.prov[k][lo:hi] for k in _PROV_INT}
    return blk


def _merge_into(src: Path, dst: Path, positions_dtype=None, fsync: bool = True, merged_through: int | None = None,
                forces_bits: int | None = None) -> None:
    """Write the dataset at ``src`` (main + journal) as one compact file at ``dst`` (temp + rename)."""
    r = DatasetReader(src)
    try:
        main = r._parts[0]
        pdt = np.dtype(positions_dtype) if positions_dtype is not None else r.positions_dtype
        bits = min(_check_bits(forces_bits), r.forces_mantissa_bits)  # precision lost once stays lost
        meta = _base_meta(r.label_fields, r.attrs, pdt, main.uuid if dst == src else _uuid.uuid4().hex,
                          merged_through if merged_through is not None else 0, bits)
        meta["extra_arrays"] = json.dumps(r.extra_specs, sort_keys=True)
        if dst != src:
            meta["attrs"] = _json(r.attrs)
        step = 4096

        def blocks():
            for part in r._parts:
                for lo in range(0, len(part), step):
                    blk = _part_block(part, lo, min(len(part), lo + step))
                    blk.positions = blk.positions.astype(pdt)
                    if F.FORCES in blk.labels:
                        blk.labels[F.FORCES] = round_mantissa(blk.labels[F.FORCES], bits)
                    yield blk

        n_atoms = int(r.n_atoms.sum())
        _write_part(Path(dst), blocks(), len(r), n_atoms, meta, r.failures(), compact=True, fsync=fsync)
    finally:
        r.close()


def repack(src, dst=None, positions_dtype: str | None = None, forces_mantissa_bits: int | None = None,
           fsync: bool = True) -> Path:
    """Write the compact read-optimised layout of ``src`` to ``dst`` (default: in place).

    In place, this is what :meth:`DatasetWriter.finalize` does. ``positions_dtype="float32"``
    and ``forces_mantissa_bits < 23`` trade precision for file size (errors measured in
    docs/dataset-format.md); by default the file keeps its current precision.
    """
    if positions_dtype is not None and np.dtype(positions_dtype) not in (np.float64, np.float32):
        raise DatasetError(f"positions_dtype {positions_dtype!r} is not valid; use 'float64' or 'float32'")
    _check_bits(forces_mantissa_bits)
    src = Path(src)
    dst = Path(dst) if dst is not None else src
    if dst == src:
        with DatasetWriter(src, label_fields=_label_fields_of(src), fsync=fsync, finalize_on_close=False) as w:
            _merge_into(src, src, positions_dtype, fsync=fsync, merged_through=w._seq, forces_bits=forces_mantissa_bits)
            for _, _, p in w._segments:
                p.unlink(missing_ok=True)
            w._segments = []
    else:
        if dst.exists() and dst.resolve() == src.resolve():
            raise DatasetError(f"{dst} is the same file as {src}; omit the output to repack in place")
        _merge_into(src, dst, positions_dtype, fsync=fsync, forces_bits=forces_mantissa_bits)
        jd = journal_dir(dst)
        if jd.is_dir():  # journal of an older dataset at dst has another uuid: stale
            for p in jd.iterdir():
                if _SEG_RE.match(p.name):
                    p.unlink(missing_ok=True)
    return dst


def _label_fields_of(path) -> tuple[str, ...]:
    with DatasetReader(path) as r:
        return r.label_fields
