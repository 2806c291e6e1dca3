"""Accuracy of the student against the teacher's labels on a held-out dataset.

Metrics (units eV, eV/A; "teacher" = the labels in the dataset):

* ``energy_mae_per_atom``: mean over structures of ``|E_student - E_teacher| / n_atoms`` (eV/atom);
* ``force_mae``: mean absolute error over all force components (eV/A);
* ``force_rmse``: root-mean-square error over all force components (eV/A);
* ``force_rms_teacher``: RMS of the teacher's force components (eV/A);
* ``force_rmse_relative``: ``force_rmse / force_rms_teacher`` (dimensionless);
* ``force_angle_mean_deg``: mean over atoms of the angle between the student's and the
  teacher's force vectors, in degrees, over atoms whose teacher force is at least
  ``min_force`` eV/A long (direction is meaningless for a vanishing force). A zero student
  force counts as 90 degrees.

The force metrics are also given per element (``per_element``, keyed by symbol) and,
with the energy MAE, per structure type (``per_type``: the provenance ``source`` such as
``smiles:CCO`` or ``bulk:Si-diamond``, or the chemical formula when a structure carries no
provenance) and per sampler (``per_sampler``: ``rattle``, ``md``, ...).
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
from ase.data import chemical_symbols

from ..errors import DatasetError, UserError

MIN_FORCE = 1e-3  # eV/A: below this the teacher force has no reliable direction


def _force_block(f_ref: np.ndarray, f_pred: np.ndarray, min_force: float) -> dict:
    diff = f_pred - f_ref
    rms_ref = float(np.sqrt(np.mean(f_ref**2))) if f_ref.size else float("nan")
    rmse = float(np.sqrt(np.mean(diff**2))) if diff.size else float("nan")
    n_ref = np.linalg.norm(f_ref, axis=1)
    n_pred = np.linalg.norm(f_pred, axis=1)
    keep = n_ref >= min_force
    if keep.any():
        cos = np.einsum("ij,ij->i", f_ref[keep], f_pred[keep]) / np.maximum(n_ref[keep] * n_pred[keep], 1e-300)
        cos = np.where(n_pred[keep] > 0, np.clip(cos, -1.0, 1.0), 0.0)
        angle = float(np.degrees(np.arccos(cos)).mean())
    else:
        angle = float("nan")
    return {
        "n_atoms": int(len(f_ref)),
        "force_mae": float(np.mean(np.abs(diff))) if diff.size else float("nan"),
        "force_rmse": rmse,
        "force_rms_teacher": rms_ref,
        "force_rmse_relative": rmse / rms_ref if rms_ref > 0 else float("nan"),
        "force_angle_mean_deg": angle,
    }


def accuracy_metrics(records: list[dict], min_force: float = MIN_FORCE) -> dict:
    """Metrics from per-structure records, pure numpy.

    Each record holds ``numbers`` (n,), ``energy_ref``, ``energy_pred`` (eV),
    ``forces_ref``, ``forces_pred`` (n, 3) eV/A, and optionally ``type`` and ``sampler``
    (str). Energies may be ``None`` (unlabelled energy: left out of the energy MAE).
    """
    if not records:
        raise UserError("the held-out dataset has no labelled structures to evaluate; give a labelled dataset")
    numbers = np.concatenate([np.asarray(r["numbers"]) for r in records])
    f_ref = np.concatenate([np.asarray(r["forces_ref"], float).reshape(-1, 3) for r in records])
    f_pred = np.concatenate([np.asarray(r["forces_pred"], float).reshape(-1, 3) for r in records])

    def energy_mae(recs):
        errs = [
            abs(r["energy_pred"] - r["energy_ref"]) / len(r["numbers"])
            for r in recs
            if r.get("energy_ref") is not None and r.get("energy_pred") is not None
        ]
        return float(np.mean(errs)) if errs else float("nan")

    out = {"n_structures": len(records), "energy_mae_per_atom": energy_mae(records)}
    out.update(_force_block(f_ref, f_pred, min_force))
    out["per_element"] = {
        chemical_symbols[z]: _force_block(f_ref[numbers == z], f_pred[numbers == z], min_force)
        for z in sorted(set(int(z) for z in numbers))
    }
    for key, name in (("type", "per_type"), ("sampler", "per_sampler")):
        groups = defaultdict(list)
        for r in records:
            groups[str(r.get(key) or "unknown")].append(r)
        table = {}
        for g, recs in sorted(groups.items()):
            fr = np.concatenate([np.asarray(r["forces_ref"], float).reshape(-1, 3) for r in recs])
            fp = np.concatenate([np.asarray(r["forces_pred"], float).reshape(-1, 3) for r in recs])
            block = {"n_structures": len(recs), "energy_mae_per_atom": energy_mae(recs)}
            block.update(_force_block(fr, fp, min_force))
            table[g] = block
        out[name] = table
    out["min_force"] = min_force
    return out


def load_labelled(dataset, max_structures: int | None = None) -> list:
    """Labelled structures (``ase.Atoms`` with a SinglePointCalculator) from a dataset.

    ``dataset`` is a list of Atoms, an HDF5 file of the dataset store (``.h5``/``.hdf5``)
    or any file ASE reads with labels (extxyz, ...). Raises :class:`DatasetError` when the
    file is missing or holds no force labels.
    """
    if isinstance(dataset, (list, tuple)):
        frames = list(dataset)
    else:
        path = os.fspath(dataset)
        if not os.path.exists(path):
            raise DatasetError(f"held-out dataset {path} does not exist; give a labelled dataset file (.h5 or extxyz)")
        if path.endswith((".h5", ".hdf5")):
            from ..data.store import DatasetReader

            with DatasetReader(path) as reader:
                if "forces" not in tuple(reader.label_fields):
                    raise DatasetError(
                        f"held-out dataset {path} has no force labels; label it first with `mlff-distill label`"
                    )
                n = len(reader) if max_structures is None else min(len(reader), max_structures)
                frames = [reader.get_atoms(i) for i in range(n)]
        else:
            from ase.io import read

            try:
                frames = read(path, index=":")
            except Exception as err:
                raise DatasetError(f"cannot read held-out dataset {path}: {type(err).__name__}: {err}") from None
    if max_structures is not None:
        frames = frames[:max_structures]
    frames = [a for a in frames if a.calc is not None and "forces" in a.calc.results]
    if not frames:
        raise DatasetError("the held-out dataset holds no structures with force labels; give a labelled dataset")
    return frames


def evaluate(student_calc, frames, min_force: float = MIN_FORCE, progress=None) -> tuple[dict, dict]:
    """Run ``student_calc`` on labelled ``frames``; return ``(metrics, parity)``.

    ``parity`` holds flat arrays for plots: ``energy_ref``/``energy_pred`` per atom (eV/atom)
    and ``forces_ref``/``forces_pred`` components (eV/A).
    """
    records = []
    for atoms in frames:
        res = atoms.calc.results
        e_ref = res.get("energy")
        f_ref = np.asarray(res["forces"], float)
        prov = atoms.info.get("provenance") or {}
        work = atoms.copy()
        work.calc = student_calc
        f_pred = np.asarray(work.get_forces(), float)
        e_pred = float(work.get_potential_energy())
        records.append(
            {
                "numbers": atoms.numbers.copy(),
                "energy_ref": None if e_ref is None else float(e_ref),
                "energy_pred": e_pred,
                "forces_ref": f_ref,
                "forces_pred": f_pred,
                "type": prov.get("source") or atoms.get_chemical_formula(),
                "sampler": prov.get("sampler") or "unknown",
            }
        )
        if progress:
            progress()
    metrics = accuracy_metrics(records, min_force)
    with_e = [r for r in records if r["energy_ref"] is not None]
    parity = {
        "energy_ref": np.array([r["energy_ref"] / len(r["numbers"]) for r in with_e]),
        "energy_pred": np.array([r["energy_pred"] / len(r["numbers"]) for r in with_e]),
        "forces_ref": np.concatenate([r["forces_ref"].ravel() for r in records]),
        "forces_pred": np.concatenate([r["forces_pred"].ravel() for r in records]),
    }
    return metrics, parity
