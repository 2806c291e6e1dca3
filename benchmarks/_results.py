"""Where a benchmark script leaves its results: ``NAME.json`` (the numbers, for tests and for
later scripts) and ``NAME.md`` (the table a reader opens), side by side, each written
atomically so that a run stopped half-way never leaves one new file beside one stale one's
half. Every script here that leaves such a pair writes it through :func:`save`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlff_distiller.fileio import atomic_write_text


def save(stem: str | Path, result: Any, markdown: str, *, echo: bool = False, indent: int = 1,
         default: Any = str) -> Path:
    """Write ``stem + '.json'`` (``result`` as JSON) and ``stem + '.md'`` (``markdown``).

    ``stem`` is a path without the suffix (a ``.json`` or ``.md`` one is dropped); the folder is
    created.
    ``default`` converts what JSON cannot hold (numpy scalars, paths). With ``echo`` the
    Markdown is printed too. Returns the path of the Markdown file.
    """
    stem = Path(stem)
    if stem.suffix in (".json", ".md"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    text = markdown if markdown.endswith("\n") else markdown + "\n"
    atomic_write_text(stem.parent / f"{stem.name}.json", json.dumps(result, indent=indent, default=default) + "\n")
    md = stem.parent / f"{stem.name}.md"
    atomic_write_text(md, text)
    if echo:
        print(text, end="")
    return md
