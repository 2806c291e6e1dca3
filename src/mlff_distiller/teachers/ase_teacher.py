"""Any ASE calculator as a teacher, given by import path and keyword arguments.

Spec: ``{"name": "ase", "calculator": "ase.calculators.emt:EMT", "kwargs": {...},
"elements": [..] or None, "conservative_forces": true|false|null, "factory": false}``. Shorthands with the
calculator filled in: ``emt`` (ASE EMT), ``lj`` (ASE Lennard-Jones, kwargs ``sigma``,
``epsilon``, ``rc``...), ``xtb`` (tblite GFN2-xTB; ``method`` picks another xTB level).

What ``calculator`` names is checked before anything is called: an ASE ``Calculator``
subclass is accepted; a plain Python function that returns a calculator only with
``factory: true``; anything else (``os:system``, ``builtins:eval``, a module, an instance)
is refused without being called. Importing the module still runs its top-level code, so a
spec (and a recipe holding one) is as trusted as a script.

The calculator is constructed once, when the teacher is built; each structure is a
fresh ``calculate`` on a copy, so the caller's ``Atoms`` are never touched.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator, all_changes
from ase.data import atomic_numbers

from ..errors import ConfigError, TeacherError
from .base import Teacher, is_3d_periodic, package_version

# ASE EMT has parameters for these elements only (ase.calculators.emt.parameters).
EMT_ELEMENTS = ("H", "C", "N", "O", "Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")
# GFN2-xTB / GFN1-xTB parametrise Z = 1..86.
XTB_ELEMENTS = tuple(range(1, 87))


def import_object(path: str, what: str = "calculator"):
    """``"package.module:Name"`` (or ``"package.module.Name"``) -> the object; TeacherError if it does not import."""
    if not isinstance(path, str) or not path.strip():
        raise TeacherError(f"teacher {what} must be an import path like 'ase.calculators.emt:EMT', got {path!r}")
    if ":" in path:
        modname, _, attr = path.partition(":")
    else:
        modname, _, attr = path.rpartition(".")
    if not modname or not attr:
        raise TeacherError(f"teacher {what} '{path}' is not 'module:Class'; write it like 'ase.calculators.emt:EMT'")
    try:
        module = importlib.import_module(modname)
    except ImportError as err:
        error = TeacherError(
            f"teacher {what} '{path}' does not import ({type(err).__name__}: {err}); "
            f"check the module name or install the package that provides it"
        )
        # the package is absent here (it may be installed only where the teacher runs)
        error.module_missing = isinstance(err, ModuleNotFoundError) and bool(err.name) and \
            (modname == err.name or modname.startswith(err.name + "."))
        raise error from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TeacherError(
                f"teacher {what} '{path}': module '{modname}' has no attribute '{attr}'; check the class name"
            )
        obj = getattr(obj, part)
    return obj


def _kind(obj) -> str:
    """A short description of what an import path named (for refusals)."""
    if inspect.isclass(obj):
        return f"the class {obj.__module__}.{obj.__qualname__}, not an ASE Calculator subclass"
    if inspect.isbuiltin(obj):
        return "a built-in function"
    if inspect.ismodule(obj):
        return "a module"
    if inspect.isfunction(obj):
        return "a function"
    return f"a {type(obj).__name__} object"


def resolve_calculator(path: str, factory: bool = False):
    """Import what ``path`` names and check it *without calling it*.

    Returns an ASE ``Calculator`` subclass, or with ``factory`` a plain Python function
    (expected to return a calculator). Anything else raises :class:`TeacherError`.
    """
    if not isinstance(factory, bool):
        raise ConfigError(f"teacher.factory: must be true or false, got {factory!r}")
    obj = import_object(path)
    if inspect.isclass(obj) and issubclass(obj, BaseCalculator):
        return obj
    if factory and inspect.isfunction(obj):
        return obj
    if inspect.isfunction(obj):
        raise TeacherError(
            f"teacher calculator '{path}' is a function, not an ASE Calculator class; it was not called. "
            "If it is a factory that returns a calculator, say so with factory: true in the teacher spec"
        )
    hint = ("a Python function that returns one (with factory: true)" if not factory
            else "with factory: true, a Python function (def) that returns one; built-ins are never called")
    raise TeacherError(
        f"teacher calculator '{path}' is {_kind(obj)}; it was not called. Name an ASE Calculator class "
        f"(like 'ase.calculators.emt:EMT') or {hint}"
    )


def _as_numbers(elements) -> frozenset[int] | None:
    if elements is None:
        return None
    out = set()
    for e in elements:
        if isinstance(e, (int, np.integer)) and 0 < int(e) < 119:
            out.add(int(e))
        elif isinstance(e, str) and e in atomic_numbers:
            out.add(atomic_numbers[e])
        else:
            raise ConfigError(
                f"teacher.elements: {e!r} is not an element symbol or atomic number; use e.g. ['H', 'C', 'O']"
            )
    return frozenset(out)


SHORTHANDS: dict[str, dict[str, Any]] = {
    "emt": {
        "calculator": "ase.calculators.emt:EMT",
        "elements": list(EMT_ELEMENTS),
        "conservative_forces": True,
        "description": "ASE effective-medium theory (Al Ni Cu Pd Ag Pt Au + H C N O); analytic, fast",
        "package": "ase",
    },
    "lj": {
        "calculator": "ase.calculators.lj:LennardJones",
        "elements": None,
        "conservative_forces": True,
        "description": "ASE Lennard-Jones (one sigma/epsilon for all atoms); analytic, for tests",
        "package": "ase",
    },
    "xtb": {
        "calculator": "tblite.ase:TBLite",
        "elements": list(XTB_ELEMENTS),
        "conservative_forces": True,
        "description": "GFN2-xTB through tblite (molecules; slow for large periodic cells)",
        "package": "tblite",
    },
}


class ASETeacher(Teacher):
    """Teacher wrapping an ASE calculator built from an import path and kwargs."""

    OPTIONS = {"calculator": None, "kwargs": {}, "elements": None, "conservative_forces": None, "factory": False}

    def __init__(self, spec: dict):
        super().__init__(spec)
        path, kwargs, elements, self._conservative = self._resolve()
        self._path = path
        self._elements = _as_numbers(elements)
        cls = self._check(path, kwargs, self._spec.get("factory", False))
        try:
            self._calc = cls(**kwargs)
        except TypeError as err:
            raise TeacherError(f"teacher calculator '{path}' rejected kwargs {kwargs}: {err}") from None
        if not isinstance(self._calc, BaseCalculator):
            raise TeacherError(
                f"teacher calculator factory '{path}' returned a {type(self._calc).__name__}, not an ASE calculator"
            )
        props = tuple(getattr(self._calc, "implemented_properties", ()) or ())
        missing = [p for p in ("energy", "forces") if p not in props]
        if missing:
            raise TeacherError(
                f"teacher calculator '{path}' does not implement {', '.join(missing)}; a teacher needs energy and "
                "forces"
            )
        self._has_stress = "stress" in props

    @staticmethod
    def _check(path, kwargs, factory):
        """The class (or factory) that ``path`` names, checked before anything is called."""
        if path is None:
            raise ConfigError(
                "teacher.calculator: required for teacher 'ase'; give an import path like 'ase.calculators.emt:EMT'"
            )
        if not isinstance(kwargs, dict):
            raise ConfigError("teacher.kwargs: must be a mapping of calculator keyword arguments")
        return resolve_calculator(path, factory)

    @classmethod
    def check_spec(cls, spec: dict) -> None:
        """Check a normalised spec without building anything (see :func:`resolve_calculator`)."""
        cls._check(spec.get("calculator"), spec.get("kwargs") or {}, spec.get("factory", False))

    def _resolve(self):
        """(import path, kwargs, elements, conservative_forces) from the spec."""
        s = self._spec
        return s["calculator"], dict(s["kwargs"] or {}), s["elements"], s["conservative_forces"]

    @property
    def elements(self):
        return self._elements

    @property
    def capabilities(self) -> dict:
        caps = super().capabilities
        caps["stress"] = self._has_stress
        caps["conservative_forces"] = self._conservative
        return caps

    def result_options(self):
        return ("calculator", "kwargs")

    def _package(self) -> str:
        return self._path.split(":")[0].split(".")[0]

    def _fingerprint_parts(self) -> dict:
        pkg = self._package()
        return {"package": pkg, "version": package_version(pkg), "model": self._path}

    def _label_one(self, atoms: Atoms):
        work = atoms.copy()
        work.calc = None
        props = ["energy", "forces"]
        if self._has_stress and is_3d_periodic(work):
            props.append("stress")
        calc = self._calc
        calc.reset()
        calc.calculate(work, props, all_changes)
        res = calc.results
        stress = res.get("stress") if "stress" in props else None
        return res["energy"], res["forces"], stress


class ShorthandASETeacher(ASETeacher):
    """``emt``, ``lj``: an :class:`ASETeacher` with the calculator filled in; ``kwargs`` go to it."""

    OPTIONS = {"kwargs": {}}

    @classmethod
    def check_spec(cls, spec: dict) -> None:
        if not isinstance(spec.get("kwargs") or {}, dict):
            raise ConfigError("teacher.kwargs: must be a mapping of calculator keyword arguments")

    def _resolve(self):
        short = SHORTHANDS[self.name]
        return short["calculator"], dict(self._spec["kwargs"] or {}), short["elements"], short["conservative_forces"]

    def result_options(self):
        return tuple(k for k in self.OPTIONS if k != "batch_size")

    def _package(self) -> str:
        return SHORTHANDS[self.name]["package"]


class XTBTeacher(ShorthandASETeacher):
    """GFN-xTB through tblite; ``method`` (default ``GFN2-xTB``) is passed to ``TBLite``."""

    OPTIONS = {"method": "GFN2-xTB", "kwargs": {}}

    def _resolve(self):
        short = SHORTHANDS["xtb"]
        kwargs = dict(self._spec["kwargs"] or {})
        kwargs.setdefault("method", self._spec["method"])
        kwargs.setdefault("verbosity", 0)
        return short["calculator"], kwargs, short["elements"], short["conservative_forces"]

    def _label_one(self, atoms: Atoms):
        # total charge (e) and spin multiplicity 2S+1 per structure, from atoms.info (architecture.md keys)
        charge = atoms.info.get("charge")
        mult = atoms.info.get("spin_multiplicity")
        self._calc.set(
            charge=None if charge is None else int(round(float(charge))),
            multiplicity=None if mult is None else int(round(float(mult))),
        )
        return super()._label_one(atoms)
