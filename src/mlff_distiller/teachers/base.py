"""The teacher contract: :class:`Teacher`, :class:`LabelResult` and the ASE adapter.

A teacher labels ``ase.Atoms`` with energy (eV), forces (eV/A) and, for 3-D periodic
cells only, stress (Voigt ``xx yy zz yz xz xy``, eV/A^3, ASE's sign: ``(1/V) dE/d strain``).

Every structure is labelled in isolation: an exception, a NaN/inf value or a wrong shape
in one structure turns into a failed :class:`LabelResult` carrying the reason, and the
rest of the batch is still labelled. Backends that batch (several structures in one
forward pass) first try the whole chunk and fall back to one-at-a-time only when the
chunk raises, so a bad structure does not poison its neighbours.

Concrete teachers implement :meth:`Teacher._label_one` (and optionally
:meth:`Teacher._label_batch`), :meth:`Teacher._fingerprint_parts`, ``elements`` and
``capabilities``; everything else (spec handling, fingerprints, validation, the ASE
calculator) lives here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import chemical_symbols

from ..errors import ConfigError, TeacherError
from ..labels import LabelError, check_energy, check_forces, check_stress

__all__ = ["LabelResult", "Teacher", "TeacherCalculator", "TeacherCalculationError", "cached_teacher", "clear_cache",
           "sha256_file"]


class TeacherCalculationError(RuntimeError):
    """Raised by :class:`TeacherCalculator` when the teacher fails on a structure."""


@dataclass
class LabelResult:
    """Labels for one structure, or the reason it could not be labelled.

    ``energy`` eV (float), ``forces`` eV/A ``(n_atoms, 3)`` float64, ``stress`` Voigt
    ``(6,)`` eV/A^3 for 3-D periodic cells and ``None`` otherwise; ``error`` is ``None``
    on success and a one-line reason on failure (then the other fields are ``None``).
    """

    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failure(cls, reason: str) -> "LabelResult":
        return cls(error=" ".join(str(reason).split()) or "unknown failure")

    def to_atoms(self, atoms: Atoms) -> Atoms:
        """A copy of ``atoms`` with these labels on a ``SinglePointCalculator``.

        Raises :class:`TeacherCalculationError` for a failed result.
        """
        from ase.calculators.singlepoint import SinglePointCalculator

        if not self.ok:
            raise TeacherCalculationError(self.error)
        out = atoms.copy()
        results: dict[str, Any] = {"energy": self.energy, "free_energy": self.energy, "forces": self.forces}
        if self.stress is not None:
            results["stress"] = self.stress
        out.calc = SinglePointCalculator(out, **results)
        return out


_HASH_CACHE: dict[tuple, str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, cached per process by (path, size, mtime)."""
    path = os.fspath(path)
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def package_version(dist: str) -> str | None:
    """Installed version of distribution ``dist``, or ``None`` when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def element_symbol(z: int) -> str:
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"


def is_3d_periodic(atoms: Atoms) -> bool:
    return bool(np.all(atoms.pbc))


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


class Teacher:
    """Base class of every teacher. Build one with :func:`mlff_distiller.teachers.build_teacher`.

    Attributes (read-only): ``name`` (str), ``spec`` (JSON-able dict that rebuilds this
    teacher, e.g. on a Dask worker), ``fingerprint`` (dict: package, version, model,
    weights sha256, options), ``fingerprint_id`` (short str stored in provenance),
    ``elements`` (frozenset of atomic numbers or ``None`` = any), ``capabilities`` (dict).
    """

    #: spec keys this teacher accepts, with their defaults (``name`` is implicit)
    OPTIONS: dict[str, Any] = {}
    #: the backend can evaluate several structures in one call
    can_batch: bool = False
    #: ``label`` sends this many structures per backend call unless the spec/caller says otherwise
    default_batch_size: int = 1

    def __init__(self, spec: dict):
        self._spec = self.normalize_spec(spec)
        self._lock = threading.RLock()
        self._fingerprint: dict | None = None

    @classmethod
    def availability_note(cls) -> str | None:
        """Why a default-spec teacher cannot load here (e.g. needs a weights file), or None."""
        return None

    # -- spec ---------------------------------------------------------------------------
    @classmethod
    def check_spec(cls, spec: dict) -> None:
        """Check a normalised spec without loading a model or calling anything it names
        (subclasses whose spec names code to import override this)."""

    @classmethod
    def normalize_spec(cls, spec: dict) -> dict:
        """Fill defaults and reject unknown keys (ConfigError naming the key)."""
        spec = dict(spec)
        name = spec.pop("name")
        unknown = sorted(set(spec) - set(cls.OPTIONS))
        if unknown:
            raise ConfigError(
                f"teacher.{unknown[0]}: unknown option for teacher '{name}'; "
                f"allowed: {', '.join(sorted(cls.OPTIONS)) or '(none)'}"
            )
        out = {"name": name}
        for key, default in cls.OPTIONS.items():
            out[key] = copy.deepcopy(spec.get(key, default))
        if out.get("batch_size") is not None:
            bs = out["batch_size"]
            if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
                raise ConfigError(f"teacher.batch_size: must be a positive integer, got {bs!r}")
        try:
            _canonical_json(out)
            json.dumps(out)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"teacher spec for '{name}' must be JSON-serialisable ({err})") from None
        return out

    @property
    def name(self) -> str:
        return self._spec["name"]

    @property
    def spec(self) -> dict:
        return copy.deepcopy(self._spec)

    # -- identity -----------------------------------------------------------------------
    def _fingerprint_parts(self) -> dict:
        """Package name/version, model name, weights sha256 (``file``: informational): subclass specific."""
        return {}

    @property
    def fingerprint(self) -> dict:
        if self._fingerprint is None:
            fp: dict[str, Any] = {"teacher": self.name}
            fp.update(self._fingerprint_parts())
            fp.setdefault("options", {k: v for k, v in self._spec.items() if k in self.result_options()})
            self._fingerprint = fp
        return copy.deepcopy(self._fingerprint)

    def result_options(self) -> tuple[str, ...]:
        """Spec keys that can change the numbers (others, e.g. batch_size, do not)."""
        return ()

    @property
    def fingerprint_id(self) -> str:
        fp = self.fingerprint
        fp.pop("file", None)  # informational: renaming a weights file does not change the teacher
        digest = hashlib.sha256(_canonical_json(fp).encode()).hexdigest()[:12]
        model = fp.get("model")
        short = isinstance(model, str) and model != self.name and all(c.isalnum() or c in "._-" for c in model)
        if short and isinstance(model, str) and len(model) <= 40:
            stem = model if model.startswith(self.name) else f"{self.name}-{model}"
        else:
            stem = self.name
        return f"{stem}-{digest}"

    @property
    def elements(self) -> frozenset[int] | None:
        return None

    @property
    def capabilities(self) -> dict:
        """``energy``, ``forces``, ``stress`` (3-D periodic only), ``conservative_forces``
        (forces are -dE/dx; ``None`` = unknown), ``batched``, ``molecules``, ``periodic``,
        ``device``, ``dtype``."""
        return {
            "energy": True,
            "forces": True,
            "stress": True,
            "conservative_forces": None,
            "batched": self.can_batch,
            "molecules": True,
            "periodic": True,
            "device": "cpu",
            "dtype": "float64",
        }

    def __reduce__(self):
        # pickling (e.g. to a Dask worker) sends the class and spec; the worker rebuilds (once, cached)
        return (cached_teacher, (type(self), self.spec))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.fingerprint_id}>"

    # -- checks -------------------------------------------------------------------------
    def unsupported_elements(self, atoms: Atoms) -> list[int]:
        allowed = self.elements
        if allowed is None:
            return []
        return sorted(set(int(z) for z in atoms.numbers) - set(allowed))

    def check_elements(self, atoms_list: Iterable[Atoms]) -> None:
        """Raise :class:`TeacherError` naming the first element (and structure) this teacher cannot label."""
        for i, atoms in enumerate(atoms_list):
            bad = self.unsupported_elements(atoms)
            if bad:
                names = ", ".join(element_symbol(z) for z in bad)
                raise TeacherError(
                    f"element {names} in structure {i} is not supported by teacher '{self.name}' "
                    f"({self._elements_summary()}); choose another teacher or remove those structures"
                )

    def _elements_summary(self) -> str:
        els = self.elements
        if els is None:
            return "it supports any element"
        zs = sorted(els)
        if zs == list(range(zs[0], zs[-1] + 1)) and len(zs) > 6:
            return f"supported: {element_symbol(zs[0])}..{element_symbol(zs[-1])} (Z {zs[0]}-{zs[-1]})"
        return "supported: " + " ".join(element_symbol(z) for z in zs)

    def _precheck(self, atoms: Atoms) -> str | None:
        """Reason this structure cannot be labelled before calling the backend, or None."""
        if len(atoms) == 0:
            return "structure has no atoms"
        bad = self.unsupported_elements(atoms)
        if bad:
            names = ", ".join(element_symbol(z) for z in bad)
            return f"element {names} not supported by teacher '{self.name}'"
        if not np.all(np.isfinite(atoms.positions)):
            return "positions contain NaN or inf"
        if is_3d_periodic(atoms) and abs(atoms.cell.volume) < 1e-8:
            return "3-D periodic structure has a zero-volume cell"
        return None

    # -- labelling ----------------------------------------------------------------------
    def label(self, atoms_list: Sequence[Atoms], batch_size: int | None = None) -> list[LabelResult]:
        """Label structures; one :class:`LabelResult` per input, in order. Never raises for
        a bad structure (it becomes a failed result); raises :class:`TeacherError` only for
        input that is not a list of ``ase.Atoms``. Inputs are not modified."""
        if isinstance(atoms_list, Atoms):
            atoms_list = [atoms_list]
        atoms_list = list(atoms_list)
        for i, a in enumerate(atoms_list):
            if not isinstance(a, Atoms):
                raise TeacherError(f"label() item {i} is {type(a).__name__}, not ase.Atoms; pass a list of ase.Atoms")
        bs = int(batch_size or self._spec.get("batch_size") or self.default_batch_size)
        results: list[LabelResult | None] = [None] * len(atoms_list)
        todo: list[int] = []
        for i, atoms in enumerate(atoms_list):
            reason = self._precheck(atoms)
            if reason:
                results[i] = LabelResult.failure(reason)
            else:
                todo.append(i)
        with self._lock:
            if bs > 1 and len(todo) > 1:
                for start in range(0, len(todo), bs):
                    idx = todo[start : start + bs]
                    chunk = [atoms_list[i] for i in idx]
                    try:
                        raw = self._label_batch(chunk)
                        if len(raw) != len(chunk):
                            raise RuntimeError(f"backend returned {len(raw)} results for {len(chunk)} structures")
                    except Exception:  # isolate: redo one at a time to find the culprit
                        raw = [self._safe_one(a) for a in chunk]
                    for i, atoms, r in zip(idx, chunk, raw):
                        results[i] = self._finalize(atoms, r)
            else:
                for i in todo:
                    results[i] = self._finalize(atoms_list[i], self._safe_one(atoms_list[i]))
        return results  # type: ignore[return-value]

    def _safe_one(self, atoms: Atoms):
        try:
            return self._label_one(atoms)
        except Exception as err:  # noqa: BLE001 - failure isolation is the point
            return LabelResult.failure(f"{type(err).__name__}: {err}")

    def _label_one(self, atoms: Atoms) -> LabelResult | tuple:
        """Label one structure: return ``(energy, forces, stress_or_None)`` or a LabelResult."""
        raise NotImplementedError

    def _label_batch(self, atoms_list: list[Atoms]) -> list:
        """Label several structures in one backend call (default: one at a time)."""
        return [self._safe_one(a) for a in atoms_list]

    def _finalize(self, atoms: Atoms, raw) -> LabelResult:
        """Check shapes and finiteness; convert stress to Voigt; drop it unless 3-D periodic."""
        if isinstance(raw, LabelResult):
            if not raw.ok:
                return raw
            energy, forces, stress = raw.energy, raw.forces, raw.stress
        else:
            energy, forces, stress = raw
        try:
            energy = check_energy(energy)
            forces = check_forces(forces, len(atoms))
            stress = check_stress(stress) if is_3d_periodic(atoms) and stress is not None else None
        except LabelError as err:
            return LabelResult.failure(f"teacher returned {err}")
        return LabelResult(energy=energy, forces=forces, stress=stress)

    # -- ASE ----------------------------------------------------------------------------
    def calculator(self) -> "TeacherCalculator":
        """An ASE calculator backed by this teacher (for MD, relaxation, benchmarks)."""
        return TeacherCalculator(self)


# The one per-process cache of built teachers, keyed by the normalised spec and the weights
# file's size/mtime: building CHGNet or Orb costs seconds and hundreds of MB, so a Dask worker
# that labels many chunks (or an unpickled teacher) must reuse it. ``Teacher.label`` holds its
# own lock, so threads may share one instance.
_CACHE: dict[str, Teacher] = {}
_CACHE_LOCK = threading.Lock()


def _cache_key(spec: dict) -> str:
    stamp = None
    path = spec.get("weights_path")
    if isinstance(path, str) and os.path.exists(path):
        st = os.stat(path)
        stamp = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    return json.dumps([spec, stamp], sort_keys=True, default=str)


def cached_teacher(cls: type[Teacher], spec: dict) -> Teacher:
    """The instance of ``cls`` for ``spec`` in this process, built on first use.

    :func:`mlff_distiller.teachers.build_teacher` (names and aliases) and unpickling both
    come here.
    """
    full = cls.normalize_spec(spec)
    key = _cache_key(full)
    with _CACHE_LOCK:
        teacher = _CACHE.get(key)
        if teacher is None:
            teacher = cls(full)
            _CACHE[key] = teacher
    return teacher


def clear_cache() -> None:
    """Forget every teacher built in this process."""
    with _CACHE_LOCK:
        _CACHE.clear()


class TeacherCalculator(Calculator):
    """ASE calculator that evaluates a :class:`Teacher` (energy eV, forces eV/A, stress
    Voigt eV/A^3 for 3-D periodic cells). Raises :class:`TeacherCalculationError` when the
    teacher fails on the structure."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, teacher: Teacher, **kwargs):
        super().__init__(**kwargs)
        self.teacher = teacher

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        result = self.teacher.label([self.atoms])[0]
        if not result.ok:
            raise TeacherCalculationError(f"teacher '{self.teacher.name}' failed: {result.error}")
        self.results = {"energy": result.energy, "free_energy": result.energy, "forces": result.forces}
        if result.stress is not None:
            self.results["stress"] = result.stress
