"""Teacher cross-check: label the same structures with two teachers and measure disagreement.

Energies are compared per atom (eV/atom), raw and after removing the mean per-atom
offset (teachers trained on different references differ by a constant per atom);
forces per Cartesian component (eV/A); stress per Voigt component (eV/A^3) where both
teachers give one. Breakdowns: forces by element, energies and forces by structure type
(``molecule``, ``periodic``, ``slab/wire``) and by provenance source kind (the part of
``provenance["source"]`` before ``:``, e.g. ``smiles``, ``bulk``) when present.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from ..errors import UserError
from ..fields import source_kind


def read_structures(path: str, limit: int | None = None) -> list[Atoms]:
    """Structures from a dataset/pool ``.h5`` (DatasetReader) or any file ASE can read (extxyz, cif...)."""
    if not os.path.exists(path):
        raise UserError(f"structures file '{path}' does not exist; give an extxyz/ASE-readable file or a dataset .h5")
    if path.endswith((".h5", ".hdf5")):
        from ..data.store import DatasetReader

        with DatasetReader(path) as reader:
            n = len(reader) if limit is None else min(limit, len(reader))
            return [reader.get_atoms(i) for i in range(n)]
    import ase.io

    try:
        index = ":" if limit is None else f":{int(limit)}"
        atoms = ase.io.read(path, index=index)
    except Exception as err:  # noqa: BLE001 - ASE raises many kinds for unreadable files
        raise UserError(
            f"cannot read structures from '{path}' ({type(err).__name__}: {err}); use extxyz or a dataset .h5"
        ) from None
    atoms = atoms if isinstance(atoms, list) else [atoms]
    if not atoms:
        raise UserError(f"'{path}' holds no structures")
    return atoms


def structure_type(atoms: Atoms) -> str:
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.all():
        return "periodic"
    return "molecule" if not pbc.any() else "slab/wire"


def _stats(diff: np.ndarray) -> dict:
    diff = np.asarray(diff, dtype=np.float64).ravel()
    if diff.size == 0:
        return {"n": 0, "mae": None, "rmse": None, "max": None}
    return {
        "n": int(diff.size),
        "mae": float(np.mean(np.abs(diff))),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "max": float(np.max(np.abs(diff))),
    }


def label_all(teacher, atoms_list: Sequence[Atoms], chunk: int = 16, progress: bool = False, desc: str = ""):
    """``teacher.label`` over chunks, with an optional tqdm bar."""
    results = []
    bar = None
    if progress:
        from ..logs import progress as progress_bar

        bar = progress_bar(total=len(atoms_list), desc=desc, unit="struct")
    for start in range(0, len(atoms_list), chunk):
        part = atoms_list[start : start + chunk]
        results.extend(teacher.label(part))
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()
    return results


def compare_teachers(teacher_a, teacher_b, atoms_list: Sequence[Atoms], progress: bool = False) -> dict:
    """Label ``atoms_list`` with both teachers; return the disagreement report (JSON-able dict)."""
    atoms_list = list(atoms_list)
    res_a = label_all(teacher_a, atoms_list, progress=progress, desc=teacher_a.name)
    res_b = label_all(teacher_b, atoms_list, progress=progress, desc=teacher_b.name)
    failures = {"a": [], "b": []}
    e_diff, f_diff, s_diff = [], [], []
    by_el: dict[str, list] = defaultdict(list)
    by_type: dict[str, dict[str, list]] = defaultdict(lambda: {"e": [], "f": []})
    by_src: dict[str, dict[str, list]] = defaultdict(lambda: {"e": [], "f": []})
    for i, (atoms, ra, rb) in enumerate(zip(atoms_list, res_a, res_b)):
        if not ra.ok:
            failures["a"].append([i, ra.error])
        if not rb.ok:
            failures["b"].append([i, rb.error])
        if not (ra.ok and rb.ok):
            continue
        n = len(atoms)
        de = (ra.energy - rb.energy) / n
        df = ra.forces - rb.forces
        e_diff.append(de)
        f_diff.append(df.ravel())
        if ra.stress is not None and rb.stress is not None:
            s_diff.append(ra.stress - rb.stress)
        for z in np.unique(atoms.numbers):
            by_el[chemical_symbols[z]].append(df[atoms.numbers == z].ravel())
        for table, key in ((by_type, structure_type(atoms)), (by_src, source_kind(atoms))):
            if key is not None:
                table[key]["e"].append(de)
                table[key]["f"].append(df.ravel())
    e = np.array(e_diff)
    offset = float(e.mean()) if e.size else None
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731

    def group(table):
        out = {}
        for key in sorted(table):
            ge = np.array(table[key]["e"])
            out[key] = {
                "structures": int(ge.size),
                "energy_per_atom": _stats(ge),
                "energy_per_atom_offset_removed": _stats(ge - offset),
                "forces": _stats(cat(table[key]["f"])),
            }
        return out

    return {
        "teacher_a": {"name": teacher_a.name, "fingerprint_id": teacher_a.fingerprint_id, "spec": teacher_a.spec},
        "teacher_b": {"name": teacher_b.name, "fingerprint_id": teacher_b.fingerprint_id, "spec": teacher_b.spec},
        "units": {"energy_per_atom": "eV/atom", "forces": "eV/A", "stress": "eV/A^3"},
        "structures": len(atoms_list),
        "compared": int(e.size),
        "failed_a": failures["a"],
        "failed_b": failures["b"],
        "mean_energy_offset_per_atom": offset,
        "energy_per_atom": _stats(e),
        "energy_per_atom_offset_removed": _stats(e - offset) if e.size else _stats(e),
        "forces": _stats(cat(f_diff)),
        "stress": _stats(cat(s_diff)),
        "by_element": {el: {"forces": _stats(cat(parts))} for el, parts in sorted(by_el.items())},
        "by_structure_type": group(by_type),
        "by_source": group(by_src),
    }


def _fmt(x, scale=1.0):
    return "-" if x is None else f"{x * scale:.4g}"


def format_report(rep: dict) -> str:
    """Plain-text tables (energies in meV/atom, forces in eV/A, stress in meV/A^3)."""
    a, b = rep["teacher_a"]["fingerprint_id"], rep["teacher_b"]["fingerprint_id"]
    lines = [
        f"teacher A: {a}",
        f"teacher B: {b}",
        f"structures: {rep['structures']}, compared: {rep['compared']}, "
        f"failed A: {len(rep['failed_a'])}, failed B: {len(rep['failed_b'])}",
    ]
    if rep["mean_energy_offset_per_atom"] is not None:
        lines.append(f"mean energy offset A-B: {rep['mean_energy_offset_per_atom'] * 1000:.4g} meV/atom")
    lines += ["", f"{'quantity':<34}{'MAE':>12}{'RMSE':>12}{'max':>12}{'n':>10}"]

    def row(label, st, scale=1.0):
        lines.append(
            f"{label:<34}{_fmt(st['mae'], scale):>12}{_fmt(st['rmse'], scale):>12}"
            f"{_fmt(st['max'], scale):>12}{st['n']:>10}"
        )

    row("energy (meV/atom)", rep["energy_per_atom"], 1000)
    row("energy, offset removed (meV/atom)", rep["energy_per_atom_offset_removed"], 1000)
    row("forces (eV/A)", rep["forces"])
    if rep["stress"]["n"]:
        row("stress (meV/A^3)", rep["stress"], 1000)
    if rep["by_element"]:
        lines += ["", "forces by element (eV/A)"]
        for el, st in rep["by_element"].items():
            row(f"  {el}", st["forces"])
    for title, key in (("by structure type", "by_structure_type"), ("by source", "by_source")):
        if rep[key]:
            lines += ["", f"{title} (energy: offset removed, meV/atom; forces: eV/A)"]
            for name, st in rep[key].items():
                row(f"  {name} ({st['structures']}): energy", st["energy_per_atom_offset_removed"], 1000)
                row(f"  {name} ({st['structures']}): forces", st["forces"])
    for side in ("a", "b"):
        fails = rep[f"failed_{side}"]
        if fails:
            lines += ["", f"failures of teacher {side.upper()} (first 5):"]
            lines += [f"  #{i}: {reason}" for i, reason in fails[:5]]
    return "\n".join(lines)
