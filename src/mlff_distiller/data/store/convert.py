"""Conversion between ``ase.Atoms`` and the column blocks the store writes and reads.

A :class:`Block` holds the columns of consecutive structures (what one part file or one
append holds). :func:`atoms_to_block` validates ``ase.Atoms`` (one-line
:class:`~mlff_distiller.errors.DatasetError` naming the structure on bad input) and converts
them. Units are ASE's: eV, A, eV/A, eV/A^3 (stress Voigt xx yy zz yz xz xy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ... import fields as F
from ...errors import DatasetError
from ...labels import LabelError, check_energy, check_forces, check_stress

LABEL_FIELDS = (F.ENERGY, F.FORCES, F.STRESS)
PROVENANCE_KEYS = ("source", "sampler", "params", "parent", "group", "seed", "teacher")
PROV_STR = ("source", "sampler", "params", "group", "teacher", "extra")  # stored as string-table codes
PROV_INT = ("parent", "seed")
FLOAT32_MANTISSA_BITS = 23
# Generated pools (positions dtype int32): positions are stored as int32 counts of
# 2**-GRID_BITS A (1.5e-5 A, far below any thermal displacement), the cell as float32 on the
# same grid and the stress as float32. Values on this grid below 256 A are exact in float32,
# so a float32 teacher computes on exactly the stored coordinates.
GRID_BITS = 16
GRID_DTYPE = np.dtype(np.int32)
_BASE_ARRAYS = ("numbers", "positions")
_EXTRA_KINDS = {"f": np.float64, "i": np.int64, "u": np.int64, "b": np.bool_}


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


def check_bits(bits) -> int:
    """Validated ``forces_mantissa_bits`` (``None`` = full float32)."""
    if bits is None:
        return FLOAT32_MANTISSA_BITS
    if not isinstance(bits, (int, np.integer)) or not 4 <= int(bits) <= FLOAT32_MANTISSA_BITS:
        raise DatasetError(f"forces_mantissa_bits {bits!r} is not valid; use an integer 4-23 (23 = full float32)")
    return int(bits)


def check_positions_dtype(positions_dtype) -> np.dtype:
    """Validated positions dtype: float64, float32, or int32 (the grid of generated pools)."""
    try:
        dt = np.dtype(positions_dtype)
    except TypeError:
        dt = None
    if dt not in (np.float64, np.float32, GRID_DTYPE):
        raise DatasetError(
            f"positions_dtype {positions_dtype!r} is not valid; use 'float64', 'float32' or "
            f"'int32' (positions on a 2^-{GRID_BITS} A grid)"
        )
    return dt


def snap_to_grid(values, bits: int = GRID_BITS) -> np.ndarray:
    """``values`` (A) rounded half to even to the nearest multiple of ``2**-bits`` A, as int32
    counts; DatasetError beyond the int32 range (+-32768 A at 16 bits). Idempotent."""
    q = np.rint(np.asarray(values, dtype=np.float64) * 2.0**bits)
    if q.size and np.abs(q).max() > np.iinfo(np.int32).max:
        raise DatasetError(
            f"coordinates up to {np.abs(q).max() * 2.0**-bits:.4g} A do not fit the positions grid "
            f"(+-{2.0 ** (31 - bits):.0f} A); wrap the atoms into the cell or store them as float64"
        )
    return q.astype(GRID_DTYPE)


def from_grid(codes, bits: int = GRID_BITS) -> np.ndarray:
    """int32 grid counts -> float64 A (exact)."""
    return np.asarray(codes, dtype=np.float64) * 2.0**-bits


def encode_positions(positions, dtype) -> np.ndarray:
    """Positions (A) in the stored representation of a file with positions dtype ``dtype``
    (grid counts for int32; integer input is taken as counts already)."""
    dtype = np.dtype(dtype)
    arr = np.asarray(positions)
    if dtype != GRID_DTYPE:
        return arr.astype(dtype)
    return arr.astype(GRID_DTYPE) if arr.dtype.kind == "i" else snap_to_grid(arr)


def layout_dtypes(positions_dtype) -> dict:
    """Stored dtypes of ``cell`` and ``stress`` for a file with this positions dtype: float32
    in the grid layout of generated pools (teachers compute in float32), float64 otherwise."""
    small = np.dtype(np.float32) if np.dtype(positions_dtype) == GRID_DTYPE else np.dtype(np.float64)
    return {F.CELL: small, F.STRESS: small}


def encode_cell(cell, positions_dtype) -> np.ndarray:
    """Cell (A) as stored: snapped to the grid and float32 in the grid layout, else float64."""
    if np.dtype(positions_dtype) == GRID_DTYPE:
        return from_grid(snap_to_grid(cell)).astype(np.float32)
    return np.asarray(cell, np.float64)


def default_provenance() -> dict:
    """Provenance of a structure that carries none (see docs/architecture.md)."""
    return {"source": "", "sampler": "", "params": {}, "parent": -1, "group": "", "seed": -1, "teacher": ""}


def to_json(obj) -> str:
    """Sorted JSON text; numpy scalars and arrays become plain numbers and lists."""

    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"{type(o).__name__} is not JSON-serialisable")

    return json.dumps(obj, sort_keys=True, default=default, allow_nan=True)


@dataclass
class Block:
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
        return {k: spec(v) for k, (v, _) in self.extra.items()}

    def __len__(self) -> int:
        return len(self.n_atoms)


def spec(values: np.ndarray) -> list:
    """JSON-able description ``[dtype, trailing shape]`` of an extra per-atom array."""
    return [np.dtype(values.dtype).name, list(values.shape[1:])]


def merge_specs(specs: Iterable[dict], where: str) -> dict:
    """Union of extra-array specs; DatasetError when one name has two dtypes/shapes."""
    out: dict = {}
    for sp_all in specs:
        for name, sp in sp_all.items():
            if name in out and out[name] != list(sp):
                raise DatasetError(
                    f"per-atom array {name!r} has dtype/shape {sp} in {where} but {out[name]} elsewhere; "
                    "make it consistent or drop it (del atoms.arrays[name])"
                )
            out[name] = list(sp)
    return out


def _describe(k: int, atoms) -> str:
    prov = atoms.info.get("provenance") if hasattr(atoms, "info") else None
    src = prov.get("source") if isinstance(prov, dict) else None
    return f"structure {k} of the appended list" + (f" (source {src!r})" if src else "")


def _geometry(atoms, what: str):
    """Validated ``(numbers, positions, cell, pbc)`` of one structure."""
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
    return z, pos, cell, np.asarray(atoms.pbc, dtype=bool)


def _labels(atoms, what: str, n: int, pbc: np.ndarray, label_fields: tuple) -> dict:
    """Validated labels of one structure: name -> (value, present)."""
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
    out = {}
    for name in label_fields:
        if name == F.STRESS:
            out[name] = _stress(results.get(F.STRESS) if periodic3d else None, what)
            continue
        if name not in results:
            raise DatasetError(
                f"{what} has no {name} label but the file stores {name}; label it or record it as a failure"
            )
        try:
            if name == F.ENERGY:
                out[name] = (check_energy(results[F.ENERGY]), True)
            else:
                out[name] = (check_forces(results[F.FORCES], n), True)
        except LabelError as err:
            raise _label_error(what, err) from None
    return out


def _label_error(what: str, err: LabelError) -> DatasetError:
    """The store's one-line message for a label that fails :mod:`mlff_distiller.labels`."""
    if err.kind == "finite":
        return DatasetError(f"{what} has {err}; drop it or record it as a failure")
    return DatasetError(f"{what} has {err}")


def _stress(s, what: str):
    if s is None:  # stress is defined only for 3-D periodic cells
        return np.zeros(6), False
    try:
        return check_stress(s), True
    except LabelError as err:
        raise _label_error(what, err) from None


def _provenance_and_info(atoms, what: str) -> tuple[dict, dict, float, float, str]:
    """``(string provenance, int provenance, charge, spin, info JSON)`` of one structure."""
    info = dict(atoms.info)
    prov = info.pop("provenance", None) or {}
    if not isinstance(prov, dict):
        raise DatasetError(f"{what} has info['provenance'] of type {type(prov).__name__}; it must be a dict")
    full = default_provenance()
    full.update(prov)
    try:
        ints = {"parent": int(full.pop("parent")), "seed": int(full.pop("seed"))}
    except (TypeError, ValueError):
        raise DatasetError(f"{what} has a non-integer provenance parent or seed; use ints (-1 for none)") from None
    strs = {key: str(full.pop(key)) for key in ("source", "sampler", "group", "teacher")}
    try:
        strs["params"] = to_json(full.pop("params"))
        strs["extra"] = to_json(full) if full else ""
        charge = info.pop("charge", None)
        spin = info.pop("spin_multiplicity", None)
        charge = np.nan if charge is None else float(charge)
        spin = np.nan if spin is None else float(spin)
        info_text = to_json(info) if info else ""
    except (TypeError, ValueError) as err:
        raise DatasetError(
            f"{what} has provenance/info that is not JSON-serialisable ({err}); use plain types"
        ) from None
    return strs, ints, charge, spin, info_text


def _extra_arrays(atoms, what: str, n: int) -> dict:
    """Numeric per-atom arrays besides numbers/positions (momenta, tags, ...), validated."""
    out = {}
    for name, values in atoms.arrays.items():
        if name in _BASE_ARRAYS:
            continue
        arr = np.asarray(values)
        if arr.dtype.kind not in _EXTRA_KINDS or arr.shape[:1] != (n,):
            raise DatasetError(
                f"{what} has per-atom array {name!r} of dtype {arr.dtype} and shape {arr.shape}; "
                "only numeric arrays with one row per atom are stored, drop it (del atoms.arrays[name])"
            )
        arr = arr.astype(_EXTRA_KINDS[arr.dtype.kind])
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise DatasetError(f"{what} has NaN/inf in per-atom array {name!r}; fix or drop it")
        out[name] = arr
    return out


def _extra_columns(extra_vals: dict, sizes: np.ndarray) -> dict:
    """Per-atom extra arrays of several structures -> ``name -> (values, mask)`` (zeros where absent)."""
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out = {}
    for name, items in extra_vals.items():
        trailing = {a.shape[1:] for _, a in items}
        kinds = {a.dtype for _, a in items}
        if len(trailing) > 1 or len(kinds) > 1:
            raise DatasetError(
                f"per-atom array {name!r} has different dtypes/shapes across the appended structures; "
                "make it consistent or drop it"
            )
        (tr,), (dt,) = trailing, kinds
        vals = np.zeros((int(starts[-1]),) + tr, dtype=dt)
        mask = np.zeros(len(sizes), bool)
        for s_idx, a in items:
            vals[starts[s_idx] : starts[s_idx + 1]] = a
            mask[s_idx] = True
        out[name] = (vals, mask)
    return out


def _label_column(name: str, vals: list, forces_bits: int, dtypes: dict) -> np.ndarray:
    fld = F.FIELDS[name]
    dtype = dtypes.get(name, fld.np_dtype)
    if name == F.FORCES:
        arr = np.concatenate(vals) if vals else np.zeros((0, 3))
    else:
        arr = np.asarray(vals, np.float64).reshape((-1,) + fld.shape)
    if np.isfinite(arr).all() and dtype == np.float32 and np.abs(arr).max(initial=0) > 3e38:
        raise DatasetError(f"{name} labels exceed the float32 range; check the units ({fld.unit} expected)")
    arr = arr.astype(dtype)
    return round_mantissa(arr, forces_bits) if name == F.FORCES else arr


def atoms_to_block(
    atoms_list: Sequence, label_fields: tuple, positions_dtype: np.dtype, forces_bits: int = FLOAT32_MANTISSA_BITS
) -> Block:
    """Validate ``ase.Atoms`` and convert them into columns (DatasetError on bad input)."""
    numbers, positions, n_atoms, cells, pbcs, charges, spins, infos = [], [], [], [], [], [], [], []
    labels = {name: [] for name in label_fields}
    masks = {name: [] for name in label_fields}
    prov_str = {k: [] for k in PROV_STR}
    prov_int = {k: [] for k in PROV_INT}
    extra_vals: dict[str, list] = {}
    for k, atoms in enumerate(atoms_list):
        what = _describe(k, atoms)
        z, pos, cell, pbc = _geometry(atoms, what)
        for name, (value, present) in _labels(atoms, what, len(z), pbc, label_fields).items():
            labels[name].append(value)
            masks[name].append(present)
        strs, ints, charge, spin, info_text = _provenance_and_info(atoms, what)
        for key, value in strs.items():
            prov_str[key].append(value)
        for key, value in ints.items():
            prov_int[key].append(value)
        charges.append(charge)
        spins.append(spin)
        infos.append(info_text)
        for name, arr in _extra_arrays(atoms, what, len(z)).items():
            extra_vals.setdefault(name, []).append((len(numbers), arr))
        numbers.append(z.astype(np.uint8))
        positions.append(pos)
        n_atoms.append(len(z))
        cells.append(cell)
        pbcs.append(pbc)
    blk = Block(
        numbers=np.concatenate(numbers) if numbers else np.zeros(0, np.uint8),
        positions=encode_positions(np.concatenate(positions) if positions else np.zeros((0, 3)), positions_dtype),
        n_atoms=np.asarray(n_atoms, np.int32),
        cell=encode_cell(np.asarray(cells, np.float64).reshape(-1, 3, 3), positions_dtype),
        pbc=np.asarray(pbcs, bool).reshape(-1, 3),
        charge=np.asarray(charges, np.float32),
        spin=np.asarray(spins, np.float32),
        prov_str=prov_str,
        prov_int={k: np.asarray(v, np.int64) for k, v in prov_int.items()},
        info=infos,
    )
    blk.extra = _extra_columns(extra_vals, np.asarray(n_atoms, np.int64))
    for name in label_fields:
        blk.labels[name] = _label_column(name, labels[name], forces_bits, layout_dtypes(positions_dtype))
        blk.labels[name + "_mask"] = np.asarray(masks[name], bool)
    return blk
