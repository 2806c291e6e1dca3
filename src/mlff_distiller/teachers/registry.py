"""Teacher names -> classes; :func:`build_teacher` and :func:`list_teachers`.

A spec is a name string (``"chgnet"``, ``"emt"``, ``"orb-v2"``, or an import path
``"ase.calculators.emt:EMT"``) or a dict ``{"name": ..., <options>}``. Building is cached
per process (:func:`mlff_distiller.teachers.base.cached_teacher`, keyed by the normalised
spec and the weights file's size/mtime), so a Dask worker that labels many chunks loads the
model once.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import yaml

from ..errors import ConfigError, TeacherError
from ..fileio import load_yaml, yaml_error_text
from .base import Teacher, cached_teacher, clear_cache, package_version

__all__ = ["DEFAULT_TEACHER", "build_teacher", "check_teacher_spec", "clear_cache", "known_teachers", "list_teachers",
           "normalize_spec", "parse_teacher_spec", "teacher_class"]

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


_EXAMPLE = "chgnet, 'orb,weights_path=/w.ckpt' or '{\"name\": \"chgnet\"}'"


def parse_teacher_spec(spec: Any, where: str = "teacher") -> dict | str:
    """The teacher spec a user wrote, as a name or a mapping (not yet checked; see
    :func:`check_teacher_spec`). The one reader of every command-line ``--teacher`` word.

    Accepts a mapping (copied), a name (``chgnet``, ``emt``, ``ase.calculators.emt:EMT``), a
    name with options (``orb,model=orb-v2,weights_path=/w.ckpt``; values parsed as YAML), a
    JSON/YAML mapping in a string (``{"name": "orb", ...}``) or a ``.json`` / ``.yaml`` file
    holding a spec or a whole recipe (its ``teacher:`` section). ``where`` starts each error
    message (``--teacher``, ``teacher``); errors are one-line :class:`ConfigError`.
    """
    if isinstance(spec, dict):
        return dict(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"{where}: give a teacher name or a mapping with a 'name' key, such as {_EXAMPLE}")
    text = spec.strip()
    if text[0] in "{[":
        try:
            value = load_yaml(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{where}: cannot parse '{text[:60]}' as JSON/YAML ({yaml_error_text(err)}); "
                              f"write it like {_EXAMPLE}") from None
        if not isinstance(value, dict) or "name" not in value:
            raise ConfigError(f"{where}: a mapping spec needs a 'name' key, such as '{{\"name\": \"chgnet\"}}'")
        return value
    if text.endswith((".json", ".yaml", ".yml")):
        return _teacher_spec_file(text, where)
    if "," in text:
        name, *pairs = _split_top_level(text)
        parsed: dict[str, Any] = {"name": name}
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq or not key.strip():
                raise ConfigError(f"{where}: option '{pair}' in '{text}' is not key=value; "
                                  "write e.g. 'orb,weights_path=/w.ckpt'")
            try:
                parsed[key.strip()] = load_yaml(value)
            except yaml.YAMLError:
                raise ConfigError(f"{where}: option '{pair}' has a value YAML cannot parse; "
                                  "quote it or fix the brackets") from None
        return parsed
    return text


def _teacher_spec_file(path: str, where: str) -> dict | str:
    if not os.path.isfile(path):
        raise ConfigError(f"{where}: spec file '{path}' does not exist; give a teacher name or an existing "
                          "YAML/JSON file")
    try:
        with open(path) as fh:
            value = load_yaml(fh)
    except OSError as err:
        raise ConfigError(f"{where}: cannot read spec file '{path}' ({err.strerror}); check its permissions") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        words = yaml_error_text(err) if isinstance(err, yaml.YAMLError) else "not text"
        raise ConfigError(f"{where}: spec file '{path}' is not valid YAML/JSON ({words}); fix the file") from None
    if isinstance(value, dict) and isinstance(value.get("teacher"), (dict, str)):
        value = value["teacher"]  # a whole recipe: take its teacher section
    if isinstance(value, str) and value.strip():
        return value.strip()
    if not isinstance(value, dict) or "name" not in value:
        raise ConfigError(f"{where}: spec file '{path}' must hold a mapping with a 'name' key "
                          "(or a recipe with a teacher: section)")
    return value


def _split_top_level(text: str) -> list[str]:
    """Split on the commas that are not inside [...] or {...}."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


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
