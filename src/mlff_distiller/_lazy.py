"""Lazy package exports: a package names what it exports and from which submodule, and the
submodule is imported on first use (so that reading a recipe does not import torch)."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str], namespace: dict):
    """``(__getattr__, __dir__)`` for the package ``package`` whose attribute ``name`` lives in
    the submodule ``exports[name]``; ``namespace`` is the package's ``globals()``."""

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
            namespace[name] = value  # later lookups skip this function
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(list(namespace) + list(exports))

    return __getattr__, __dir__
