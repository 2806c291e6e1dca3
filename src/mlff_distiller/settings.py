"""Shared helpers of the typed config sections (the recipe's top level, ``bench``, ``active``...).

A flat section (``labeling``, ``labeling.hpc``, ``training``, ``student``, ``active``,
``bench``, ``bench.heldout``, every mapping of ``generation``) is a pydantic dataclass declared
with :func:`section`: each field
states its type and limits (``Annotated[Int, limits(ge=1)]``, ``Literal[...]`` for a choice, the
strict scalar types :data:`Int`, :data:`Float`, :data:`Bool`, :data:`Str` below), and rules that
tie several fields together live in the class's ``__post_init__``. Building one, by
``cls(...)``, ``dataclasses.replace`` or the class's ``from_dict`` (see :func:`build`),
validates it (``build(cls, d, where=...)`` names the place when one section class stands for
many, as ``generation.sources.NAME``; :func:`where_of` gives that name to ``__post_init__``),
and every error is one line: :func:`config_error` is the one translator from
pydantic's ``ValidationError`` to the house :class:`~mlff_distiller.errors.ConfigError`:

* an unknown key: ``where: unknown key 'x' (did you mean 'y'?); allowed: a, b``
  (:func:`unknown_keys_error`, also used by the sections that are not dataclasses);
* a wrong type: ``where.field must be an integer, got 'abc'`` (an item of a list field
  ``where.field[2]``, of a mapping field ``where.field.key``);
* a value out of range: ``where.field = -1 is invalid: must be >= 0 eV/A (0 = off)``, the
  range from the field's limits, the unit and the note from :func:`limits`;
* an unknown choice: ``where.field: unknown value 'jax' (did you mean ...?); allowed: a, b``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from contextvars import ContextVar
from typing import Annotated, Any, Callable, TypeVar, dataclass_transform

from pydantic import BeforeValidator, ConfigDict, Field, Strict, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

from .errors import ConfigError

T = TypeVar("T")


def did_you_mean(key, allowed) -> str:
    """`` (did you mean 'x'?)`` with the allowed name closest to ``key``, or ``""``."""
    close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_keys_error(where: str, unknown, allowed) -> ConfigError:
    """The one phrasing of "this mapping has keys that are not allowed":
    ``where: unknown key 'x' (did you mean 'y'?); allowed: a, b`` (``unknown keys 'x', 'z'`` with
    a hint per key when several)."""
    unknown, allowed = [str(k) for k in unknown], [str(a) for a in allowed]
    if len(unknown) == 1:
        head = f"unknown key '{unknown[0]}'{did_you_mean(unknown[0], allowed)}"
    else:
        hints = [difflib.get_close_matches(k, allowed, n=1) for k in unknown]
        head = "unknown keys " + ", ".join(f"'{k}'" for k in unknown)
        head += "".join(f" (did you mean '{h[0]}' for '{k}'?)" for k, h in zip(unknown, hints) if h)
    return ConfigError(f"{where}: {head}; allowed: {', '.join(allowed)}")


def invalid(where: str, value, allowed: str) -> ConfigError:
    """The one phrasing of "this value is out of range": ``where = value is invalid: must be allowed``."""
    return ConfigError(f"{where} = {value!r} is invalid: must be {allowed}")


# -- field types -----------------------------------------------------------------------------
def _integral(value):
    """YAML may give ``4.0`` for an integer: an integral float becomes an int (never a bool)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _number(value):
    """YAML reads ``1e-3`` as a string: a float field accepts a string that parses as one."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def as_list(value):
    """A single value stands for a list of one; a tuple is a list."""
    if isinstance(value, tuple):
        return list(value)
    return value if isinstance(value, list) else [value]


#: an integer (``true`` is not one; ``4.0`` is 4)
Int = Annotated[int, Strict(), BeforeValidator(_integral)]
#: a number (an int is taken as a float, a numeric string such as ``"1e-3"`` too; ``true`` is not one)
Float = Annotated[float, Strict(), BeforeValidator(_number)]
#: ``true`` or ``false`` only
Bool = Annotated[bool, Strict()]
#: a string only (``5`` is not one)
Str = Annotated[str, Strict()]


def limits(*, unit: str = "", note: str = "", allowed: str = "", **constraints) -> Any:
    """A field's limits (pydantic's ``ge``, ``gt``, ``le``, ``lt``, ``min_length``,
    ``allow_inf_nan``) and what its error message adds: ``unit`` after the range, ``note`` in
    brackets, or ``allowed``, a whole description of the valid values that replaces the range
    (for a list or a value pydantic's limits cannot state)."""
    extra: dict[str, Any] = {k: v for k, v in (("unit", unit), ("note", note), ("allowed", allowed)) if v}
    return Field(json_schema_extra=extra or None, **constraints)


def copied_default(value) -> Any:
    """A section field's default taken from its owner (a class's keyword default, a defaults
    table): a fresh deep copy per instance, so a mutable default is never shared."""
    import copy

    return dataclasses.field(default_factory=lambda: copy.deepcopy(value))


# -- sections --------------------------------------------------------------------------------
#: the pydantic config of every section
SECTION_CONFIG = ConfigDict(extra="forbid")


@dataclass_transform(field_specifiers=(dataclasses.field, Field))
def section(where: str, **config) -> Callable[[type[T]], type[T]]:
    """Class decorator: ``cls`` as a pydantic dataclass (``extra="forbid"``, plus ``config``)
    whose constructor raises the one-line :class:`ConfigError` of :func:`config_error` instead
    of pydantic's ``ValidationError``; ``where`` (``"labeling.hpc"``) names it in messages."""

    def wrap(cls: type[T]) -> type[T]:
        cls = pydantic_dataclass(cls, config=ConfigDict(**SECTION_CONFIG, **config))  # type: ignore[assignment, typeddict-item]
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            name = _NAMED.get() or where
            named, building = _NAMED.set(None), _BUILDING.set(name)
            try:
                init(self, *args, **kwargs)
            except ValidationError as err:
                raise config_error(name, err, type(self), kwargs) from None
            finally:
                _BUILDING.reset(building)
                _NAMED.reset(named)

        cls.__init__ = __init__  # type: ignore[method-assign]
        cls.__section__ = where  # type: ignore[attr-defined]
        return cls

    return wrap


#: the name :func:`build` gives the next section built (``generation.sources.metal``), when a
#: section class stands for many places of the recipe
_NAMED: ContextVar[str | None] = ContextVar("section_named", default=None)
#: the name of the section being built now (for its ``__post_init__``)
_BUILDING: ContextVar[str | None] = ContextVar("section_building", default=None)


def where_of(obj) -> str:
    """The name of a section in its messages: inside its ``__post_init__``, the name it is being
    built under (``build(cls, d, where=...)``), else the one of :func:`section`."""
    return str(_BUILDING.get() or getattr(obj, "__section__", type(obj).__name__))


def field_names(cls) -> list[str]:
    """The field names of a section, in order."""
    return [f.name for f in dataclasses.fields(cls)]


def build(cls: type[T], d: dict | None, where: str | None = None) -> T:
    """A section from a recipe mapping (``None`` = the defaults): ``cls(**d)``, with a one-line
    :class:`ConfigError` for a value that is not a mapping, a key that is not a field, a bad value.
    ``where`` names this place of the recipe in messages (``generation.mix[2].size``) instead of
    the class's name, for a section class used in many places."""
    where = str(where or getattr(cls, "__section__", cls.__name__))
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping of field: value, got {type(d).__name__}")
    odd = [k for k in d if not isinstance(k, str)]
    if odd:
        raise unknown_keys_error(where, odd, field_names(cls))
    token = _NAMED.set(where)
    try:
        return cls(**d)
    finally:
        _NAMED.reset(token)


# -- the translator --------------------------------------------------------------------------
_KINDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "dict_type": "a mapping", "list_type": "a list",
    "dataclass_type": "a mapping", "dataclass_exact_type": "a mapping", "none_required": "null",
}
_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _section_in(annotation) -> type | None:
    """The section dataclass in ``annotation`` (``X`` or ``X | None``), else None."""
    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and hasattr(t, "__pydantic_fields__"):
            return t
    return None


def _locate(cls, loc) -> tuple[type, list[str], Any, list]:
    """Walk an error location: (the section that owns the last field named, the field path,
    that field's FieldInfo (None when the path is empty), the rest of the location: list
    indices, an unknown key...)."""
    owner, names, info = cls, [], None  # type: tuple[type, list[str], Any]
    for i, part in enumerate(loc):
        fields = getattr(owner, "__pydantic_fields__", {})
        if not isinstance(part, str) or part not in fields:
            return owner, names, info, list(loc[i:])
        names.append(part)
        info = fields[part]
        nested = _section_in(info.annotation)
        if nested is not None and i + 1 < len(loc):
            owner = nested
    return owner, names, info, []


def _range(info, ctx: dict) -> str:
    """``>= 1``, ``in [0, 1)``... from the field's limits (or the error's context)."""
    bounds = {k: getattr(m, k) for m in (info.metadata if info is not None else []) for k in _BOUNDS
              if getattr(m, k, None) is not None}
    bounds = bounds or {k: v for k, v in ctx.items() if k in _BOUNDS}
    low = [(k, v) for k, v in bounds.items() if k in ("ge", "gt")]
    high = [(k, v) for k, v in bounds.items() if k in ("le", "lt")]
    if low and high:
        (lk, lv), (hk, hv) = low[0], high[0]
        return f"in {'[' if lk == 'ge' else '('}{lv:g}, {hv:g}{']' if hk == 'le' else ')'}"
    return " and ".join(f"{_BOUNDS[k]} {v:g}" for k, v in bounds.items()) or "valid"


def _keyed(info) -> bool:
    """Whether the field is a mapping (``dict[str, X]``), whose keys name its items in messages."""
    annotation = info.annotation if info is not None else None
    return any(typing.get_origin(t) is dict for t in (annotation, *typing.get_args(annotation)))


def _given(given: dict | None, names: list[str], default):
    """The value the user gave at field path ``names`` (``default`` when it cannot be found)."""
    value: Any = given
    for name in names:
        if not isinstance(value, dict) or name not in value:
            return default
        value = value[name]
    return value


def config_error(where: str, err: ValidationError, cls: type, given: dict | None = None) -> ConfigError:
    """The one-line :class:`ConfigError` for pydantic's ``err`` raised while building section
    ``cls`` (named ``where``) from ``given``: the first problem, named by its field path (see
    the module doc for the phrasings)."""
    errors = err.errors(include_url=False)
    unknown = [e for e in errors if e["type"] in ("unexpected_keyword_argument", "extra_forbidden")]
    first = unknown[0] if unknown else errors[0]
    owner, names, info, rest = _locate(cls, first["loc"])
    path = ".".join([where, *names])
    if unknown:
        keys = [e["loc"][-1] for e in unknown if tuple(e["loc"][:-1]) == tuple(first["loc"][:-1])]
        return unknown_keys_error(path, keys, field_names(owner))
    if first["type"] == "missing":
        return ConfigError(f"{path}: missing; add it")
    extra = (info.json_schema_extra if info is not None else None) or {}
    value = _given(given, names, first.get("input"))
    if extra.get("allowed"):
        return invalid(path, value, extra["allowed"])
    item = path + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest
                          if isinstance(p, int) or _keyed(info))
    if first["type"] == "literal_error":
        choices = [str(c) for c in typing.get_args(info.annotation)] if info is not None else []
        hint = did_you_mean(first["input"], choices) if isinstance(first["input"], str) else ""
        allowed = ", ".join(choices) or first["ctx"]["expected"]
        return ConfigError(f"{item}: unknown value {first['input']!r}{hint}; allowed: {allowed}")
    if first["type"] in _KINDS:
        return ConfigError(f"{item} must be {_KINDS[first['type']]}, got {first.get('input')!r}")
    if first["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        allowed = _range(info if not rest else None, first.get("ctx") or {})
        allowed += f" {extra['unit']}" if extra.get("unit") else ""
        allowed += f" ({extra['note']})" if extra.get("note") else ""
        return invalid(item if rest else path, first.get("input") if rest else value, allowed)
    if first["type"] == "too_short":
        return invalid(path, value, f"a list of at least {first['ctx']['min_length']}")
    return ConfigError(f"{item}: {first['msg']}, got {first.get('input')!r}")
