"""Shared helper of the typed config sections (``bench``, ``bench.heldout``, ``active``...).

One rule for a mapping read from a recipe: every key must be a field of the section's
dataclass, and an unknown one is a one-line :class:`~mlff_distiller.errors.ConfigError` that
names it, suggests the closest field, and lists the allowed ones.
"""

from __future__ import annotations

import dataclasses
import difflib

from .errors import ConfigError


def check_fields(cls, d: dict, where: str) -> None:
    """Raise ``ConfigError`` if mapping ``d`` has keys that are not fields of dataclass ``cls``."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping of field: value, got {type(d).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names), key=str)
    if unknown:
        hints = [difflib.get_close_matches(str(k), names, n=1) for k in unknown]
        hint = "".join(f" (did you mean '{h[0]}' for '{k}'?)" for k, h in zip(unknown, hints) if h)
        raise ConfigError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}{hint}; allowed: {', '.join(names)}")
