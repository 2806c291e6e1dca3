"""Turn what the user names (a student run directory / model file, a teacher spec) into
calculators the bench can time, with the set of elements each one supports.

Anything that already is an ASE calculator is accepted as is (tests use EMT and
friends); its element set is then unknown (``None``) unless given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from ase.calculators.calculator import Calculator
from ase.data import atomic_numbers

from ..errors import UserError
from .systems import symbols


@dataclass
class ModelHandle:
    """A named force field: a factory for fresh ASE calculators plus what it supports.

    ``make_calculator()`` returns a new calculator each call, so two MD runs never share
    cached results. ``elements`` is a frozenset of atomic numbers, or ``None`` when the
    model does not say (e.g. a plain ASE calculator).
    """

    label: str
    make_calculator: Callable[[], Any]
    elements: frozenset[int] | None = None
    info: dict = field(default_factory=dict)
    #: ``("student", (path, backend))`` or ``("teacher", spec)``: how a fresh process rebuilds this model
    #: (for memory measured in isolation); ``None`` for calculator objects.
    rebuild: tuple | None = None

    def missing(self, zs) -> frozenset[int]:
        """Elements among ``zs`` this model does not support (empty if unknown)."""
        if self.elements is None:
            return frozenset()
        return frozenset(int(z) for z in zs) - self.elements


def _as_elements(values) -> frozenset[int] | None:
    if values is None:
        return None
    out = set()
    for v in values:
        if isinstance(v, str):
            if v not in atomic_numbers:
                raise UserError(f"unknown element symbol {v!r} in the model's element list")
            out.add(atomic_numbers[v])
        else:
            out.add(int(v))
    return frozenset(out)


def _calc_factory(calc) -> Callable[[], Any]:
    """A shared calculator object: hand out the same one, reset, each time."""

    def make():
        if hasattr(calc, "reset"):
            calc.reset()
        return calc

    return make


def _student_elements(model) -> frozenset[int] | None:
    for owner in (model, getattr(model, "config", None)):
        if owner is None:
            continue
        for name in ("elements", "atomic_numbers", "species"):
            vals = getattr(owner, name, None) if not isinstance(owner, dict) else owner.get(name)
            if vals is not None:
                try:
                    return _as_elements(list(vals.tolist() if hasattr(vals, "tolist") else vals))
                except (TypeError, ValueError):
                    continue
    return None


def resolve_student(student, elements=None, label: str = "student", backend: str = "auto") -> ModelHandle:
    """A run directory, a ``.pt`` model file, a TorchScript export or an ASE calculator -> handle.

    ``backend``: the :class:`~mlff_distiller.student.StudentCalculator` backend for a student
    file (``auto``, ``numba`` or ``torch``). Raises :class:`UserError` when the path does not
    exist or holds no loadable student.
    """
    if isinstance(student, ModelHandle):
        return student
    if isinstance(student, Calculator) or (hasattr(student, "calculate") and hasattr(student, "get_property")):
        return ModelHandle(label, _calc_factory(student), _as_elements(elements), {"kind": type(student).__name__})
    path = os.fspath(student)
    if not os.path.exists(path) and ":" in path and not path.endswith((".pt", ".pth")):
        # any ASE calculator as the student, by import path (module:Class), e.g. for baselines
        from ..teachers import build_teacher

        t = build_teacher({"name": "ase", "calculator": path})
        return ModelHandle(label, _calc_factory(t.calculator()), _as_elements(elements) if elements is not None
                           else (frozenset(t.elements) if t.elements is not None else None), {"kind": path},
                           rebuild=("student", (path, backend)))
    if not os.path.exists(path):
        raise UserError(f"student {path} does not exist; give a training run directory or an exported model file")
    try:
        from ..student import StudentCalculator
        from ..student.io import load_any
    except ImportError as err:  # the student stage is not installed / built
        raise UserError(f"cannot load student {path}: the student stage is unavailable ({err})") from None
    model = load_any(path)  # a checkpoint, a run directory or a TorchScript export
    elems = _as_elements(elements) if elements is not None else _student_elements(model)
    info = {"kind": "mlff-distiller student", "path": os.path.abspath(path)}
    try:
        info["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    except Exception:  # a TorchScript export or foreign object may not expose parameters
        pass
    info["backend"] = StudentCalculator(model, backend=backend).backend  # what "auto" resolves to
    return ModelHandle(label, lambda: StudentCalculator(model, backend=backend), elems, info,
                       rebuild=("student", (path, backend)))


def resolve_teacher(teacher, elements=None) -> ModelHandle:
    """A teacher spec (name, dict, or ``Teacher``) or an ASE calculator -> handle.

    Built teachers are created once; each MD run gets a fresh calculator from
    ``Teacher.calculator()``.
    """
    if isinstance(teacher, ModelHandle):
        return teacher
    if isinstance(teacher, Calculator) or (hasattr(teacher, "calculate") and hasattr(teacher, "get_property")):
        return ModelHandle("teacher", _calc_factory(teacher), _as_elements(elements), {"kind": type(teacher).__name__})
    if hasattr(teacher, "calculator") and hasattr(teacher, "spec"):
        t = teacher
    else:
        from ..teachers import build_teacher

        t = build_teacher(teacher)
    calc = t.calculator()
    elems = _as_elements(elements) if elements is not None else (
        frozenset(int(z) for z in t.elements) if getattr(t, "elements", None) is not None else None
    )
    info = {"kind": "teacher", "name": getattr(t, "name", str(teacher)), "spec": getattr(t, "spec", teacher)}
    fid = getattr(t, "fingerprint_id", None)
    if fid:
        info["fingerprint_id"] = fid
    spec = getattr(t, "spec", None)
    return ModelHandle(str(getattr(t, "name", "teacher")), _calc_factory(calc), elems, info,
                       rebuild=("teacher", spec) if spec is not None else None)


def check_coverage(student: ModelHandle, teacher: ModelHandle, systems) -> list[str]:
    """Check element support before anything runs.

    Raises :class:`UserError` (one line) when the student supports elements the teacher
    does not (wrong teacher), or when a system holds an element that the student or the
    teacher lacks. Returns report notes (e.g. elements only the teacher covers).
    """
    notes = []
    if student.elements is not None and teacher.elements is not None:
        student_only = student.elements - teacher.elements
        if student_only:
            raise UserError(
                f"element coverage differs: the student supports {symbols(student_only)} which teacher "
                f"{teacher.label} does not; bench the student against the teacher it was distilled from"
            )
        teacher_only = teacher.elements - student.elements
        if teacher_only and len(teacher_only) <= 20:
            notes.append(f"teacher {teacher.label} also covers {symbols(teacher_only)}, which the student does not")
    for s in systems:
        lack_s = student.missing(s.elements)
        lack_t = teacher.missing(s.elements)
        both = lack_s & lack_t
        if both:
            raise UserError(
                f"system {s.name} contains {symbols(both)}, which neither the student nor teacher {teacher.label} "
                "supports; drop the system or use models that cover it"
            )
        if lack_s:
            raise UserError(
                f"system {s.name} contains {symbols(lack_s)}, which the student does not support "
                f"(student elements: {symbols(student.elements)}); drop the system or retrain with it"
            )
        if lack_t:
            raise UserError(
                f"system {s.name} contains {symbols(lack_t)}, which teacher {teacher.label} does not support; "
                "drop the system or choose another teacher"
            )
    return notes
