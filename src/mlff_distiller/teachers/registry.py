"""Teacher names -> classes; :func:`build_teacher` and :func:`list_teachers`.

A spec is a name string (``"chgnet"``, ``"emt"``, ``"orb-v2"``, or an import path
``"ase.calculators.emt:EMT"``) or a dict ``{"name": ..., <options>}``. Building is cached
per process (:func:`mlff_distiller.teachers.base.cached_teacher`, keyed by the normalised
spec and the weights file's size/mtime), so a Dask worker that labels many chunks loads the
model once.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import ConfigError, TeacherError
from .base import Teacher, cached_teacher, clear_cache, package_version

__all__ = ["DEFAULT_TEACHER", "build_teacher", "check_teacher_spec", "clear_cache", "known_teachers", "list_teachers",
           "normalize_spec", "teacher_class"]

# name -> (module, class, one-line description, python package that must import)
_TEACHERS: dict[str, tuple[str, str, str, str | None]] = {
    "chgnet": (
        "chgnet_teacher",
        "CHGNetTeacher",
        "CHGNet 0.3.0 universal potential, weights ship in the wheel (default)",
        "chgnet",
    ),
    "orb": ("orb_teacher", "OrbTeacher", "Orb (orb-models): orb-v2 / orb-v3 from a local weights_path", "orb_models"),
    "fennol": ("fennol_teacher", "FennolTeacher", "FeNNol FENNIX model from a .fnx file (weights_path)", "fennol"),
    "xtb": ("ase_teacher", "XTBTeacher", "GFN2-xTB through tblite (molecules)", "tblite"),
    "emt": ("ase_teacher", "ShorthandASETeacher", "ASE EMT (Al Ni Cu Pd Ag Pt Au + H C N O), analytic", "ase"),
    "lj": ("ase_teacher", "ShorthandASETeacher", "ASE Lennard-Jones, analytic (tests)", "ase"),
    "ase": ("ase_teacher", "ASETeacher", "any ASE calculator: calculator='module:Class', kwargs={...}", "ase"),
}
DEFAULT_TEACHER = "chgnet"
# name aliases: alias -> (teacher, extra options)
_ALIASES: dict[str, tuple[str, dict]] = {
    "gfn2-xtb": ("xtb", {}),
}
# any other "orb-..." name is read as {"name": "orb", "model": <that name>} (checked against
# the installed orb-models when the teacher is built)
_ORB_PREFIXES = ("orb-", "separate-d")

def known_teachers() -> list[str]:
    return list(_TEACHERS)


def normalize_spec(spec: Any) -> dict:
    """Name string or dict -> dict with a known ``name`` (options not yet validated)."""
    if isinstance(spec, Teacher):
        return spec.spec
    if isinstance(spec, str):
        spec = spec.strip()
        if ":" in spec and spec not in _TEACHERS:
            spec = {"name": "ase", "calculator": spec}
        else:
            spec = {"name": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"teacher: expected a name or a mapping with a 'name', got {type(spec).__name__}")
    if "name" not in spec or not isinstance(spec["name"], str):
        raise ConfigError(f"teacher.name: missing; use one of {', '.join(known_teachers())}")
    spec = dict(spec)
    name = spec["name"].strip().lower()
    if name in _ALIASES:
        target, extra = _ALIASES[name]
        spec = {**extra, **spec, "name": target}
        name = target
    elif name not in _TEACHERS and name.startswith(_ORB_PREFIXES):
        spec = {"model": name, **spec, "name": "orb"}
        name = "orb"
    if name not in _TEACHERS:
        raise TeacherError(
            f"unknown teacher '{spec['name']}'; known teachers: {', '.join(known_teachers())} "
            f"(or an ASE calculator import path like 'ase.calculators.emt:EMT')"
        )
    spec["name"] = name
    return spec


def teacher_class(name: str) -> type[Teacher]:
    modname, clsname, _, _ = _TEACHERS[name]
    module = importlib.import_module(f"{__package__}.{modname}")
    return getattr(module, clsname)


def check_teacher_spec(spec: Any, missing_ok: bool = False) -> dict:
    """The normalised spec, checked without building the teacher or calling anything it names.

    Raises :class:`TeacherError` / :class:`ConfigError` for an unknown name or option and,
    for ``ase``, an import path that does not import or names something other than an ASE
    calculator class (or a factory function marked ``factory: true``). Call it before
    shipping a spec to workers. With ``missing_ok`` an import path whose package is not
    installed in this process passes (workers may have it; they run the same check before
    calling anything).
    """
    spec = normalize_spec(spec)
    cls = teacher_class(spec["name"])
    full = cls.normalize_spec(spec)
    try:
        cls.check_spec(full)
    except TeacherError as err:
        if not (missing_ok and getattr(err, "module_missing", False)):
            raise
    return full


def build_teacher(spec: Any = DEFAULT_TEACHER, *, cache: bool = True) -> Teacher:
    """Build (or reuse, per process) the teacher described by ``spec``.

    ``spec``: a name (``"chgnet"``, ``"emt"``, ``"lj"``, ``"xtb"``, ``"orb"``, ``"orb-v2"``,
    ``"fennol"``), an import path ``"module:Class"`` of an ASE calculator, or a dict
    ``{"name": ..., **options}``. Raises :class:`TeacherError` for an unknown name, an
    import path that does not import or missing weights, and :class:`ConfigError` for an
    unknown option.
    """
    spec = normalize_spec(spec)
    cls = teacher_class(spec["name"])
    if not cache:
        return cls(cls.normalize_spec(spec))
    return cached_teacher(cls, spec)


def list_teachers(probe: bool = False) -> list[dict]:
    """One dict per teacher: ``name``, ``description``, ``package``, ``version``,
    ``available`` (bool), ``reason`` (why not, or what it needs).

    Without ``probe`` only imports are checked; with ``probe`` each teacher that needs no
    user-supplied file is built and asked to label a small structure.
    """
    import importlib.util

    rows = []
    for name, (_, _, desc, pkg) in _TEACHERS.items():
        dist = {"orb_models": "orb-models"}.get(pkg, pkg) if pkg else None
        version = package_version(dist) if dist else None
        row: dict[str, Any] = {"name": name, "description": desc, "package": dist, "version": version}
        try:
            importable = pkg is None or importlib.util.find_spec(pkg) is not None
        except (ImportError, ValueError):
            importable = False
        if not importable:
            row.update(
                available=False, reason=f"package '{dist}' is not installed (pip install 'mlff-distiller[{name}]')"
            )
            rows.append(row)
            continue
        needs = teacher_class(name).availability_note()
        if needs:
            row.update(available=False, reason=needs)
        elif name == "ase":
            row.update(available=True, reason="needs calculator='module:Class'")
        else:
            row.update(available=True, reason="")
            if probe:
                row.update(_probe(name))
        rows.append(row)
    return rows


def _probe(name: str) -> dict:
    from ase.build import bulk, molecule

    try:
        teacher = build_teacher(name)
        atoms = bulk("Cu", "fcc", a=3.6) if name in ("emt", "lj") else molecule("H2O")
        res = teacher.label([atoms])[0]
        if not res.ok:
            return {"available": False, "reason": f"built but failed on a test structure: {res.error}"}
        return {"available": True, "reason": f"labelled a test structure ({teacher.fingerprint_id})"}
    except Exception as err:  # noqa: BLE001 - report, do not crash the listing
        return {"available": False, "reason": f"{type(err).__name__}: {err}"}
