"""Teachers: the large force fields the student learns from.

``build_teacher(spec)`` returns a :class:`Teacher` whose ``label(atoms_list)`` gives one
:class:`LabelResult` per structure (energy eV, forces eV/A, Voigt stress eV/A^3 for 3-D
periodic cells, or a failure reason). See ``docs/teachers.md``.
"""

from .base import LabelResult, Teacher, TeacherCalculationError, TeacherCalculator
from .registry import (
    DEFAULT_TEACHER,
    build_teacher,
    check_teacher_spec,
    clear_cache,
    known_teachers,
    list_teachers,
    parse_teacher_spec,
)

__all__ = [
    "DEFAULT_TEACHER",
    "LabelResult",
    "Teacher",
    "TeacherCalculationError",
    "TeacherCalculator",
    "build_teacher",
    "check_teacher_spec",
    "clear_cache",
    "known_teachers",
    "list_teachers",
    "parse_teacher_spec",
]
