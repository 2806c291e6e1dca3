"""FeNNol FENNIX models (``.fnx`` files) as a teacher.

Spec: ``{"name": "fennol", "weights_path": "model.fnx", "batch_size": 8}``.

* The model is loaded with fennol's own loader, ``FENNIX.load(path, use_atom_padding=True)``:
  atom counts are padded to buckets so structures of different sizes reuse one compiled
  (JAX-jitted) function instead of recompiling for every new size.
  :meth:`FennolTeacher.compiled_variants` reports how many compiled variants exist, so
  recompilations can be measured.
* Energies are converted from the model's ``energy_unit`` to eV (forces to eV/A).
* Stress for 3-D periodic cells comes from FeNNol's strain derivative (virial):
  ``stress = virial / V`` (ASE sign, eV/A^3).
* Batching: a chunk is split into molecules and 3-D periodic cells; each group is one
  FeNNol call with ``natoms`` / ``batch_index`` describing the systems.
* JAX runs in float32 (fennol's default); the teacher does not switch on JAX's global
  x64 mode.
"""

from __future__ import annotations

import os

import numpy as np
from ase import Atoms, units
from ase.data import atomic_numbers

from ..errors import TeacherError
from .base import Teacher, is_3d_periodic, package_version, sha256_file


def _find_species_order(obj):
    """The first ``species_order`` in a FeNNol config (list of symbols), or None."""
    if isinstance(obj, dict):
        for key, val in obj.items():
            if key == "species_order" and val:
                return [s.strip() for s in val.split(",")] if isinstance(val, str) else list(val)
            found = _find_species_order(val)
            if found:
                return found
    elif isinstance(obj, (list, tuple)):
        for val in obj:
            found = _find_species_order(val)
            if found:
                return found
    return None


class FennolTeacher(Teacher):
    OPTIONS = {"weights_path": None, "batch_size": 8}
    can_batch = True
    default_batch_size = 8

    @classmethod
    def availability_note(cls) -> str | None:
        return "needs weights_path: a FeNNol .fnx model file (none ship with fennol)"

    def __init__(self, spec: dict):
        super().__init__(spec)
        try:
            import jax  # noqa: F401
            from fennol import FENNIX
            from fennol.utils.atomic_units import au
        except ImportError as err:
            raise TeacherError(
                f"teacher 'fennol' needs fennol and jax ({err}); install them: pip install 'mlff-distiller[fennol]'"
            ) from None
        path = self._spec["weights_path"]
        if path is None:
            raise TeacherError(
                "teacher 'fennol' needs weights_path: the .fnx file of a FENNIX model (fennol ships none)"
            )
        if not os.path.isfile(path):
            raise TeacherError(f"teacher 'fennol': weights_path '{path}' does not exist; pass a FENNIX .fnx model file")
        self._path = os.path.abspath(path)
        try:
            self._model = FENNIX.load(self._path, use_atom_padding=True)
        except Exception as err:  # noqa: BLE001 - any parse failure means a bad file
            raise TeacherError(
                f"teacher 'fennol': cannot load '{path}' as a FENNIX model ({type(err).__name__}: {err})"
            ) from None
        # model energy unit -> eV
        self._to_ev = units.Hartree / au.get_multiplier(self._model.energy_unit)
        order = _find_species_order(self._model._input_args.get("modules", {}))
        self._elements = frozenset(atomic_numbers[s] for s in order if s in atomic_numbers) if order else None

    @property
    def elements(self):
        return self._elements

    @property
    def capabilities(self) -> dict:
        caps = super().capabilities
        caps.update(conservative_forces=True, dtype="float32")
        return caps

    def _fingerprint_parts(self) -> dict:
        return {
            "package": "fennol",
            "version": package_version("fennol"),
            "model": "fennix",
            "weights_sha256": sha256_file(self._path),
            "file": os.path.basename(self._path),
        }

    def compiled_variants(self) -> int:
        """Number of compiled variants of FeNNol's jitted energy/force(/virial) functions."""
        total = 0
        for name in ("_energy_and_forces", "_energy_and_forces_and_virial"):
            fn = getattr(self._model, name, None)
            size = getattr(fn, "_cache_size", None)
            if callable(size):
                total += int(size())
        return total

    def _precheck(self, atoms: Atoms):
        reason = super()._precheck(atoms)
        if reason is None and any(atoms.pbc) and not all(atoms.pbc):
            reason = (
                "teacher 'fennol' handles molecules (no pbc) and 3-D periodic cells, not partly periodic structures"
            )
        return reason

    def _run(self, atoms_list: list[Atoms], periodic: bool) -> list[tuple]:
        n = np.array([len(a) for a in atoms_list], dtype=np.int32)
        inputs = {
            "species": np.concatenate([a.numbers for a in atoms_list]).astype(np.int32),
            "coordinates": np.concatenate([a.positions for a in atoms_list]).astype(np.float32),
            "natoms": n,
            "batch_index": np.repeat(np.arange(len(atoms_list), dtype=np.int32), n),
            "total_charge": np.array([int(a.info.get("charge", 0)) for a in atoms_list], dtype=np.int32),
        }
        model = self._model
        if periodic:
            cells = np.stack([a.cell.array for a in atoms_list]).astype(np.float32)
            inputs["cells"] = cells
            inputs["reciprocal_cells"] = np.linalg.inv(cells)
        data = model.preprocess(**inputs)
        if periodic:
            _, _, _, out = model._energy_and_forces_and_virial(model.variables, data)
        else:
            _, _, out = model._energy_and_forces(model.variables, data)
        out = model.remove_atom_padding(out)
        energy = np.asarray(out["total_energy"], dtype=np.float64).reshape(-1)[: len(atoms_list)] * self._to_ev
        forces = np.asarray(out["forces"], dtype=np.float64)[: n.sum()] * self._to_ev
        splits = np.split(forces, np.cumsum(n)[:-1])
        results = []
        for k, atoms in enumerate(atoms_list):
            stress = None
            if periodic:
                virial = np.asarray(out["virial_tensor"], dtype=np.float64)[k]
                stress = virial * self._to_ev / atoms.get_volume()
            results.append((energy[k], splits[k], stress))
        return results

    def _label_one(self, atoms: Atoms):
        return self._run([atoms], is_3d_periodic(atoms))[0]

    def _label_batch(self, atoms_list):
        out: list = [None] * len(atoms_list)
        for periodic in (False, True):
            idx = [k for k, a in enumerate(atoms_list) if is_3d_periodic(a) == periodic]
            if idx:
                for k, r in zip(idx, self._run([atoms_list[k] for k in idx], periodic)):
                    out[k] = r
        return out
