"""Shared helper of the typed config sections (the recipe's top level, ``bench``, ``active``...).

One rule for a mapping read from a recipe: every key must be a field of the section's
dataclass, and an unknown one is a one-line :class:`~mlff_distiller.errors.ConfigError` that
names it, suggests the closest field, and lists the allowed ones.
"""

from __future__ import annotations

import dataclasses
import difflib

from .errors import ConfigError


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


def check_fields(cls, d: dict, where: str) -> None:
    """Raise ``ConfigError`` if mapping ``d`` has keys that are not fields of ``cls`` (a
    dataclass or a pydantic model class)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping of field: value, got {type(d).__name__}")
    names = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else list(cls.model_fields)
    unknown = sorted(set(d) - set(names), key=str)
    if unknown:
        raise unknown_keys_error(where, unknown, names)


def coerce_field(where: str, value, type_name, finite: bool = False):
    """``value`` from YAML checked against a dataclass field's annotated type (as a string:
    ``dict``, ``list`` (of numbers), ``bool``, ``str``, ``int``, ``float``, each optionally
    ``| None``); a mismatch is a ``ConfigError`` naming ``where``. ``finite`` also refuses
    inf/nan numbers. YAML reads ``1e-3`` as a string: a float field accepts it."""
    import math

    t = str(type_name)
    if t.endswith(" | None"):
        if value is None:
            return None
        t = t[: -len(" | None")]
    if t == "dict":
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if t == "list":
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in items):
            raise ConfigError(f"{where} must be a list of numbers, got {value!r}")
        return [float(v) for v in items]
    if t == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if t == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if t == "int":
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(value)
    if t == "float":
        kind = "a finite number" if finite else "a number"
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where} must be {kind}, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (finite and not math.isfinite(value)):
            raise ConfigError(f"{where} must be {kind}, got {value!r}")
        return float(value)
    return value
