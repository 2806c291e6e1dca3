"""Import from extxyz (or any format ASE reads) into a dataset file, and export back.

Labels travel on ASE's SinglePointCalculator (energy eV, forces eV/A, stress eV/A^3).
In extxyz the provenance dict is flattened into info keys ``prov_source``,
``prov_sampler``, ``prov_params`` (JSON text), ``prov_parent``, ``prov_group``,
``prov_seed``, ``prov_teacher`` (plus ``prov_<key>`` for extra keys, JSON text); empty
strings and defaults are left out. ``charge``, ``spin_multiplicity`` and other info keys
are written as they are. The file attributes ride on the first frame as
``dataset_attrs`` (JSON text). Round trip extxyz -> HDF5 -> extxyz keeps every one of
these fields; forces pass through float32 storage (relative error below 1e-7).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .. import fields as F
from ..errors import DatasetError
from ..fileio import replace_atomically, temp_path
from .store import LABEL_FIELDS, DatasetReader, DatasetWriter, default_provenance, journal_dir

PROV_PREFIX = "prov_"
ATTRS_KEY = "dataset_attrs"
FAILURES_KEY = "dataset_failures"
log = logging.getLogger(__name__)


def flatten_provenance(atoms) -> None:
    """In place: ``info["provenance"]`` -> ``prov_*`` info keys (for extxyz)."""
    prov = atoms.info.pop("provenance", None)
    if not prov:
        return
    defaults = default_provenance()
    for key, value in prov.items():
        if key in defaults and value == defaults[key]:
            continue  # defaults are implied on import; empty strings break extxyz parsing
        if key in ("source", "sampler", "group", "teacher"):
            atoms.info[PROV_PREFIX + key] = _extxyz_safe(str(value))
        elif key in ("parent", "seed"):
            atoms.info[PROV_PREFIX + key] = int(value)
        else:  # params and any extra key: JSON text, so nested values survive
            atoms.info[PROV_PREFIX + key] = json.dumps(value, sort_keys=True)


def unflatten_provenance(atoms, default_source: str = "") -> None:
    """In place: ``prov_*`` info keys -> ``info["provenance"]`` (defaults for missing keys)."""
    prov = default_provenance()
    found = False
    for key in [k for k in atoms.info if k.startswith(PROV_PREFIX)]:
        name = key[len(PROV_PREFIX):]
        value = atoms.info.pop(key)
        found = True
        if name in ("source", "sampler", "group", "teacher"):
            prov[name] = _from_extxyz_safe(value)
        elif name in ("parent", "seed"):
            prov[name] = int(value)
        else:
            try:
                prov[name] = json.loads(value) if isinstance(value, str) else _plain(value)
            except json.JSONDecodeError:
                prov[name] = value
    if isinstance(atoms.info.get("provenance"), dict):
        prov.update(atoms.info["provenance"])
        found = True
    if not found:
        prov["source"] = default_source
        prov["sampler"] = "none"
    atoms.info["provenance"] = prov


_JSON_MARK = "json:"


def _extxyz_safe(text: str) -> str:
    """``text``, or ``json:"..."`` when extxyz would read it back as something else (``00``, ``T``, ``1 2``)."""
    from ase.io.extxyz import key_val_dict_to_str, key_val_str_to_dict

    def survives(t):
        back = key_val_str_to_dict(key_val_dict_to_str({"k": t})).get("k")
        return isinstance(back, str) and back == t

    if survives(text) and not text.startswith(_JSON_MARK):
        return text
    encoded = _JSON_MARK + json.dumps(text)
    if not survives(encoded):
        raise DatasetError(
            f"provenance text {text!r} cannot be written to extxyz intact; avoid backslashes in provenance strings"
        )
    return encoded


def _from_extxyz_safe(value) -> str:
    if isinstance(value, str) and value.startswith(_JSON_MARK):
        try:
            decoded = json.loads(value[len(_JSON_MARK):])
            if isinstance(decoded, str):
                return decoded
        except json.JSONDecodeError:
            pass
    if isinstance(value, (bool, np.bool_)):
        return "T" if value else "F"
    return str(_plain(value))


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def _iread(path: Path, format: str | None, index: str):
    from ase.io import iread

    if not path.exists():
        raise DatasetError(f"input file not found: {path}; check the path")
    if format is None and is_hdf5(path):  # a dataset file: its structures, labels and provenance
        yield from _iread_dataset(path, index)
        return
    try:
        yield from iread(str(path), index=index, format=format)
    except DatasetError:
        raise
    except Exception as err:  # ASE raises many types for unreadable input
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetError(
            f"cannot read {path} with ASE (format {format or 'auto'}): {msg}; check the file and --format"
        ) from None


def _iread_dataset(path: Path, index: str):
    """The structures of a dataset file (HDF5), selected by an ASE-style ``index``."""
    from ase.io.formats import string2index

    try:
        sel = string2index(index)
    except ValueError:
        raise DatasetError(f"--index {index!r} is not a frame selection; use e.g. ':' or '::10'") from None
    with DatasetReader(path) as r:
        n = len(r)
        if not isinstance(sel, slice) and not -n <= sel < n:
            raise DatasetError(f"--index {index} is out of range for {path} ({n} structures)")
        for i in range(n)[sel] if isinstance(sel, slice) else [sel % n]:
            yield r.get_atoms(i)


def _check_one_teacher(paths: Sequence[Path], out: Path | None) -> dict:
    """The teacher attributes (fingerprint, spec, units) of the first labelled dataset file among
    ``paths``; a one-line error when two of them (or ``out``, when appending) were labelled by
    different teachers."""
    ids: dict = {}
    shared: dict = {}
    for p in [*paths, *([out] if out is not None else [])]:
        if not is_hdf5(p):
            continue
        with DatasetReader(p) as r:
            t = r.attrs.get("teacher_fingerprint_id") if r.label_fields else None
            if t is not None and not ids and p is not out:
                shared = {k: v for k, v in r.attrs.items() if k.startswith("teacher") or k == "units"}
        if t is not None:
            ids.setdefault(t, p)
    if len(ids) > 1:
        (t1, p1), (t2, p2) = list(ids.items())[:2]
        raise DatasetError(f"{p1} was labelled by {t1} and {p2} by {t2}; a student learns one teacher's physics: "
                           f"relabel one of them with the other's teacher (mlff-distill label)")
    return shared


def _carried_labels(atoms) -> set[str]:
    res = atoms.calc.results if getattr(atoms, "calc", None) is not None else {}
    out = {k for k in (F.ENERGY, F.FORCES) if k in res}
    if F.STRESS in res and bool(np.all(atoms.pbc)):
        out.add(F.STRESS)
    return out


# Label keys of other tools' extxyz files, recognised without --energy-key/... (MACE writes
# REF_*, older GAP/ACE files DFT_*/dft_*). Energy and stress are info keys, forces per-atom arrays.
LABEL_CONVENTIONS = {
    F.ENERGY: ("REF_energy", "DFT_energy", "dft_energy", "ref_energy", "energy_dft", "TotEnergy", "total_energy"),
    F.FORCES: ("REF_forces", "DFT_forces", "dft_forces", "ref_forces", "forces_dft", "force"),
    F.STRESS: ("REF_stress", "DFT_stress", "dft_stress", "ref_stress", "stress_dft"),
}
# Virial keys (MACE: ``REF_virials``/``virials``; GAP: ``virial``), converted to stress when no
# stress key is present. MACE's convention: virial = -stress * volume (eV), 3x3 or 9 values;
# 6 values are read as Voigt in ASE's order (xx yy zz yz xz xy).
VIRIAL_CONVENTIONS = ("REF_virials", "DFT_virials", "dft_virials", "ref_virials", "virials",
                      "REF_virial", "DFT_virial", "dft_virial", "ref_virial", "virial")


class VirialKey(str):
    """An info key holding a virial (eV) that becomes the stress label (eV/A^3) on import."""


def virial_to_stress(virial, atoms, where: str = "") -> np.ndarray:
    """Stress (eV/A^3, Voigt xx yy zz yz xz xy, ASE sign) from a virial (eV): ``-virial / volume``.

    ``virial`` is a 3x3 matrix, 9 values (row-major) or 6 Voigt values. Raises
    :class:`DatasetError` for a structure that is not periodic in all three directions
    (stress is defined for 3-D periodic cells only) or a virial of another shape.
    """
    v = np.asarray(virial, dtype=np.float64)
    at = f"{where}: " if where else ""
    if not bool(np.all(atoms.pbc)) or atoms.cell.rank < 3:
        raise DatasetError(f"{at}virials on a structure that is not periodic in 3-D (pbc={atoms.pbc.tolist()}); "
                           "stress is defined for 3-D periodic cells only: remove the virials of these structures "
                           "or import without stress (--labels energy,forces)")
    if v.size == 9:
        voigt = F.matrix_to_voigt(v.reshape(3, 3))
    elif v.size == 6:
        voigt = v.reshape(6)
    else:
        raise DatasetError(f"{at}virials have {v.size} values; expected 9 (3x3) or 6 (Voigt xx yy zz yz xz xy)")
    return -voigt / atoms.get_volume()

_LABEL_WORDS = ("energy", "force", "stress", "virial")
_OWN_KEYS = (ATTRS_KEY, FAILURES_KEY)


def _where(field: str) -> str:
    return "arrays" if field == F.FORCES else "info"


def _label_like(key: str) -> bool:
    k = key.lower()
    return not key.startswith(PROV_PREFIX) and key not in _OWN_KEYS and any(w in k for w in _LABEL_WORDS)


def resolve_label_keys(found: dict, calc_fields: set, keys: dict, label_fields) -> dict:
    """Where each label comes from: ``{field: None (atoms.calc) | info/arrays key}``.

    Fields outside ``label_fields`` stay in the mapping: their keys are dropped on import
    (the labels are not stored) rather than kept as stray info entries.

    ``found``: ``{"info": set, "arrays": set}`` of keys seen in the input; ``calc_fields``:
    labels carried on ``atoms.calc``; ``keys``: user choices (``--energy-key`` ...). An
    explicit key wins; else the calculator's label; else the first known convention present.
    Warns (log) about label-like keys left unused, so a label never goes missing silently.
    """
    mapping: dict = {}
    if keys.get("virials") and keys.get(F.STRESS):
        raise DatasetError("--stress-key and --virials-key both name the stress; give one")
    for name in LABEL_FIELDS:
        key = keys.get(name)
        if name == F.STRESS and keys.get("virials"):
            key = keys["virials"]
            if key not in found["info"]:
                raise DatasetError(f"--virials-key {key}: no structure has atoms.info[{key!r}] (keys found: "
                                   f"{', '.join(_keys_seen(found['info'])[:12]) or 'none'}); give one of those, "
                                   "or leave the option out")
            mapping[name] = VirialKey(key)
            continue
        where = _where(name)
        if key:
            if key in found[where] or (key == name and name in calc_fields):
                mapping[name] = None if (key == name and key not in found[where]) else key
                continue
            raise DatasetError(f"--{name}-key {key}: no structure has atoms.{where}[{key!r}] (keys found: "
                               f"{', '.join(_keys_seen(found[where])[:12]) or 'none'}); give one of those, "
                               "or leave the option out")
        if name in calc_fields:
            mapping[name] = None
            continue
        conv = next((k for k in LABEL_CONVENTIONS[name] if k in found[where]), None)
        if conv is None and name == F.STRESS:
            conv = next((VirialKey(k) for k in VIRIAL_CONVENTIONS if k in found["info"]), None)
        if conv is not None:
            mapping[name] = conv
    if label_fields == ():
        return mapping  # stripping labels: the keys they came from are dropped, nothing to warn about
    used = {v for v in mapping.values() if v}
    for where in ("info", "arrays"):
        for k in sorted(found[where]):
            if _label_like(k) and k not in used and k not in LABEL_FIELDS:
                log.warning("input atoms.%s key %r looks like a label but is not imported (labels: %s); map it with "
                            "--energy-key/--forces-key/--stress-key/--virials-key %s, or ignore this if it is not "
                            "a label",
                            where, k, ", ".join(f"{f} <- {v or 'calculator'}" for f, v in mapping.items()) or "none", k)
    return mapping


def _keys_seen(keys) -> list:
    """Input keys worth naming in an error, label-like ones first."""
    return sorted((k for k in keys if not k.startswith(PROV_PREFIX) and k not in _OWN_KEYS
                   and k not in ("numbers", "positions")), key=lambda k: (not _label_like(k), k))


def apply_label_keys(atoms, mapping: dict, label_fields, where: str = "") -> None:
    """In place: labels named by ``mapping`` onto a SinglePointCalculator holding only ``label_fields``.

    Keys used as labels are removed from ``info``/``arrays`` (they become the labels); labels
    of the calculator not in ``label_fields`` are dropped (``()`` strips every label). A
    :class:`VirialKey` source is converted to stress (:func:`virial_to_stress`); ``where``
    names the structure in its errors.
    """
    from ase.calculators.singlepoint import SinglePointCalculator

    res = dict(atoms.calc.results) if getattr(atoms, "calc", None) is not None else {}
    out = {}
    for name in label_fields:
        src = mapping.get(name)
        if src is None:
            if name in res:
                out[name] = res[name]
            continue
        store = atoms.arrays if name == F.FORCES else atoms.info
        if src in store:
            value = np.asarray(store[src], dtype=np.float64)
            if isinstance(src, VirialKey):
                value = virial_to_stress(value, atoms, where or f"atoms.info[{src!r}]")
            elif name == F.STRESS and value.size == 9:
                value = F.matrix_to_voigt(value.reshape(3, 3))
            out[name] = float(value) if name == F.ENERGY and value.size == 1 else value
    for src in mapping.values():
        if src and src in atoms.info:
            del atoms.info[src]
        elif src and src in atoms.arrays:
            del atoms.arrays[src]
    if F.STRESS in out and not bool(np.all(atoms.pbc)):
        del out[F.STRESS]  # stress is defined for 3-D periodic cells only
    atoms.calc = None
    if out:
        atoms.calc = SinglePointCalculator(atoms, **out)


def import_structures(sources: Sequence, out, format: str | None = None, index: str = ":",
                      label_fields: Sequence[str] | None = None, mode: str = "w", positions_dtype: str = "float64",
                      forces_mantissa_bits: int | None = None, chunk: int = 500, progress: bool = False,
                      label_keys: dict | None = None, overwrite: bool = False, attrs: dict | None = None) -> int:
    """Read structures with ASE and store them in dataset ``out``; returns how many.

    ``label_fields=None`` takes every label (energy eV, forces eV/A, stress eV/A^3) that any
    structure carries, on its calculator or under a known key (``REF_energy``,
    ``DFT_forces``, ... see :data:`LABEL_CONVENTIONS`); ``label_keys`` names the keys
    explicitly (``{"energy": "my_E", "forces": "my_F", "stress": "my_S"}``, or ``"virials":
    "my_V"`` for a virial in eV converted to stress = -virial / volume; MACE's ``REF_virials``
    and ``virials`` are recognised when no stress key is present). A file without
    labels becomes an unlabelled pool, and ``label_fields=()`` strips labels (to relabel
    structures with a teacher). ``mode="w"`` writes a new ``out``, replacing an existing one
    only with ``overwrite``; ``"a"`` appends (the label fields must match). The file is
    written under a temporary name and renamed, so a failed import leaves nothing behind.
    ``attrs`` are added to the file attributes.
    """
    extra_attrs = dict(attrs or {})
    sources = [Path(s) for s in ([sources] if isinstance(sources, (str, os.PathLike)) else sources)]
    if not sources:
        raise DatasetError("no input files given; name at least one structure file to import")
    for s in sources:
        if not s.exists():
            raise DatasetError(f"input file not found: {s}; check the path")
    out = Path(out)
    if out.resolve() in [s.resolve() for s in sources]:
        raise DatasetError(f"output {out} is also an input; choose another output path")
    if mode == "w" and out.exists() and not overwrite:
        raise DatasetError(f"output {out} exists; pass --overwrite to replace it, --append to add to it, "
                           "or choose another -o")
    appending_to = out if mode == "a" and out.exists() else None
    attrs: dict = {} if format is not None else _check_one_teacher(sources, appending_to)
    failures: list = []
    carried: set[str] = set()
    found: dict = {"info": set(), "arrays": set()}
    for s in sources:  # first pass: labels carried, attributes and failures of an exported dataset
        for k, atoms in enumerate(_iread(s, format, index)):
            carried |= _carried_labels(atoms)
            found["info"].update(atoms.info)
            found["arrays"].update(atoms.arrays)
            if k == 0 and ATTRS_KEY in atoms.info:
                attrs.update(_load_attrs(atoms.info[ATTRS_KEY], s))
            if k == 0 and FAILURES_KEY in atoms.info:
                failures += [tuple(f) for f in _load_attrs(atoms.info[FAILURES_KEY], s, list)]
    mapping = resolve_label_keys(found, carried, dict(label_keys or {}),
                                 None if label_fields is None else tuple(label_fields))
    if label_fields is None:
        label_fields = tuple(f for f in LABEL_FIELDS if f in mapping)
    label_fields = tuple(label_fields)
    if not attrs or any(is_hdf5(s) for s in sources):
        attrs.setdefault("imported_from", [str(s) for s in sources])
    attrs.update(extra_attrs)
    new_file = mode == "w" or not out.exists()
    target = out if not out.exists() or mode == "a" else temp_path(out)
    bar = None
    if progress:
        from ..logs import progress as progress_bar

        bar = progress_bar(desc="import", unit="struct")
    n, ok = 0, False
    try:
        with DatasetWriter(target, label_fields=label_fields, attrs=attrs, mode=mode, positions_dtype=positions_dtype,
                           forces_mantissa_bits=forces_mantissa_bits) as w:
            for s in sources:
                buf = []
                for k, atoms in enumerate(_iread(s, format, index)):
                    atoms.info.pop(ATTRS_KEY, None)
                    atoms.info.pop(FAILURES_KEY, None)
                    where = f"{s} frame {k}" + ("" if index == ":" else f" of --index {index}")
                    apply_label_keys(atoms, mapping, label_fields, where=where)
                    unflatten_provenance(atoms, default_source=f"file:{s.name}")
                    buf.append(atoms)
                    if len(buf) >= chunk:
                        n += _append(w, buf, n, bar)
                        buf = []
                if buf:
                    n += _append(w, buf, n, bar)
            if failures:
                w.record_failures(failures)
        if target != out:
            replace_atomically(target, out)
        ok = True
    finally:
        if bar is not None:
            bar.close()
        if not ok and new_file:  # a file this call started: a failed import leaves nothing behind
            target.unlink(missing_ok=True)
        if target != out or (not ok and new_file):
            shutil.rmtree(journal_dir(target), ignore_errors=True)
    return n


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path) -> bool:
    """True when ``path`` starts with the HDF5 signature (a dataset file rather than extxyz & co.)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def require_dataset(path, role: str = "dataset") -> None:
    """Raise a one-line error naming ``dataset import`` when ``path`` is a structure file, not HDF5."""
    p = Path(path)
    if p.is_file() and p.stat().st_size and not is_hdf5(p):
        raise DatasetError(f"{p} is not a dataset file (HDF5) but perhaps a structure file (extxyz, traj, ...); "
                           f"import it first: mlff-distill dataset import {p} -o {p.with_suffix('.h5').name}")


def pool_from_structures(src, dst, progress: bool = False) -> Path:
    """An unlabelled pool ``dst`` made from the ASE-readable file ``src`` (labels stripped).

    ``dst`` is reused when it was made from a file with the same content (sha256), so a
    resumed labelling run sees the same pool.
    """
    from ..teachers.base import sha256_file

    src, dst = Path(src), Path(dst)
    sha = sha256_file(src)
    if dst.exists() and is_hdf5(dst):
        try:
            with DatasetReader(dst) as r:
                if r.attrs.get("imported_sha256") == sha:
                    return dst
        except DatasetError:
            pass
    log.info("importing %s into the unlabelled pool %s (labels stripped)", src, dst)
    import_structures([src], dst, label_fields=(), overwrite=True, progress=progress,
                      attrs={"imported_sha256": sha})
    return dst


def _load_attrs(text, source, kind=dict):
    try:
        d = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        d = None
    if not isinstance(d, kind):
        raise DatasetError(f"{source}: the dataset_attrs/dataset_failures entry of the first frame is not JSON "
                           f"{kind.__name__}; remove it or fix it")
    return d


def _append(w: DatasetWriter, buf, done: int, bar) -> int:
    try:
        w.append(buf)
    except DatasetError as err:
        # Name the structure by its position in the input, not in the appended chunk.
        msg = str(err)
        m = re.match(r"structure (\d+) of the appended list", msg)
        if m:
            msg = msg.replace(m.group(0), f"input structure {done + int(m.group(1))}")
        raise DatasetError(msg) from None
    if bar is not None:
        bar.update(len(buf))
    return len(buf)


def _write_db(path: Path, frames) -> None:
    """An ASE database: simple info entries become searchable key-value pairs, the rest ``data``."""
    import ase.db
    from ase.db.core import reserved_keys

    with ase.db.connect(str(path), type="db", append=False) as con:
        for atoms in frames:
            kvp, data = {}, {}
            for k, v in atoms.info.items():
                v = _plain(v)
                simple = isinstance(v, (str, int, float, bool)) and not (isinstance(v, str) and not v)
                if simple and k.isidentifier() and k not in reserved_keys:
                    kvp[k] = v
                else:
                    data[k] = v
            con.write(atoms, key_value_pairs=kvp, data=data)


def export_format(out) -> str:
    """ASE format for an output file name: extxyz for .xyz/.extxyz (and unknown names), else ASE's guess."""
    name = Path(out).name.lower()
    if name.endswith((".xyz", ".extxyz")) or "." not in name:
        return "extxyz"
    from ase.io.formats import filetype

    try:
        return filetype(str(out), read=False)
    except Exception:  # noqa: BLE001 - ASE raises several kinds for unknown names
        return "extxyz"


def export_structures(path, out, format: str | None = "extxyz", indices: Iterable[int] | None = None,
                      progress: bool = False) -> int:
    """Write structures of dataset ``path`` to ``out`` with ASE (temp file + rename); returns how many.

    ``format=None`` picks it from the name of ``out`` (:func:`export_format`): ``.db`` for
    ``ase db``, ``.traj`` for ``ase gui``, ``.xyz``/``.extxyz`` for extxyz, which keeps every field.
    """
    from ase.io import write

    out = Path(out)
    format = format or export_format(out)
    if out.exists() and Path(path).exists() and out.resolve() == Path(path).resolve():
        raise DatasetError(f"output {out} is the dataset itself; choose another output path")
    if not out.parent.is_dir():
        raise DatasetError(f"directory {out.parent} does not exist; create it first")
    tmp = temp_path(out, keep_suffix=True)  # ase.db and some ASE writers pick the format from the suffix
    n = 0
    with DatasetReader(path) as r:
        idx = range(len(r)) if indices is None else [int(i) for i in indices]
        bar = None
        if progress:
            from ..logs import progress as progress_bar

            bar = progress_bar(total=len(idx), desc="export", unit="struct")
        frames: list = []
        stream = format == "extxyz"
        try:
            fh = open(tmp, "w") if stream else None
            try:
                for k, i in enumerate(idx):
                    atoms = r.get_atoms(i)
                    flatten_provenance(atoms)
                    if k == 0 and r.attrs:
                        atoms.info[ATTRS_KEY] = json.dumps(r.attrs, sort_keys=True)
                    if k == 0 and r.failures():
                        atoms.info[FAILURES_KEY] = json.dumps(r.failures())
                    frames.append(atoms)
                    n += 1
                    if stream and len(frames) >= 1000:
                        write(fh, frames, format="extxyz")
                        frames = []
                    if bar is not None:
                        bar.update(1)
                if stream:
                    if frames:
                        write(fh, frames, format="extxyz")
                elif format == "db":
                    _write_db(tmp, frames)
                else:
                    write(str(tmp), frames, format=format)
            except DatasetError:
                raise
            except Exception as err:
                raise DatasetError(
                    f"ASE cannot write format {format!r} "
                    f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                    "use extxyz or another multi-frame format ASE writes"
                ) from None
            finally:
                if fh is not None:
                    fh.close()
            replace_atomically(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
            if bar is not None:
                bar.close()
    return n
