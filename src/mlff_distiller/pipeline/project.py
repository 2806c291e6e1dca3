"""Project directory bookkeeping for ``mlff-distill run``: stage records, fingerprints, resume.

``PROJECT_DIR/project.json`` records, for each finished stage, the fingerprint of everything
that stage depends on (the recipe sections it reads and the fingerprints of the stages before
it). Re-running the same command skips stages whose fingerprint still matches; a recipe change
that invalidates a finished stage is reported, never silently mixed with old outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from ..errors import UserError
from ..fileio import atomic_write_text

PROJECT_FILE = "project.json"
PROJECT_FORMAT = 1


def fingerprint(*parts) -> str:
    """Stable short hash of JSON-able parts."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_atomic_write_text = atomic_write_text  # one implementation: mlff_distiller.fileio


class Project:
    """A project directory: ``project.json`` plus one folder per stage output."""

    def __init__(self, root: str | os.PathLike, recipe_name: str, overwrite: bool = False):
        self.root = Path(root)
        self.file = self.root / PROJECT_FILE
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"output path {self.root} exists and is not a directory: choose another -o")
        if self.file.exists():
            try:
                self.data = json.loads(self.file.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise UserError(
                    f"{self.file} is unreadable ({err}); move the directory away or pass --overwrite"
                ) from None
            if self.data.get("recipe_name") != recipe_name and not overwrite:
                raise UserError(
                    f"{self.root} holds project '{self.data.get('recipe_name')}', not '{recipe_name}': "
                    "use another -o directory or pass --overwrite"
                )
        else:
            if self.root.exists() and any(self.root.iterdir()) and not overwrite:
                raise UserError(
                    f"{self.root} is not empty and holds no mlff-distill project: use another -o directory"
                )
            self.data = {"format": PROJECT_FORMAT, "recipe_name": recipe_name, "stages": {}, "events": []}
        if overwrite and self.file.exists() and self.data.get("recipe_name") != recipe_name:
            self.data = {"format": PROJECT_FORMAT, "recipe_name": recipe_name, "stages": {}, "events": []}
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def save(self) -> None:
        _atomic_write_text(self.file, json.dumps(self.data, indent=2, sort_keys=True, default=str) + "\n")

    # -- stages ------------------------------------------------------------------------
    def stage(self, name: str) -> dict | None:
        return self.data["stages"].get(name)

    def is_done(self, name: str, fp: str) -> bool:
        """True if ``name`` finished with fingerprint ``fp``; raise if it finished with another."""
        rec = self.stage(name)
        if rec is None or rec.get("status") != "done":
            return False
        if rec.get("fingerprint") != fp:
            raise UserError(
                f"the recipe changed since stage '{name}' ran in {self.root} (its inputs differ): "
                f"re-run with --restart-from {name.split(':')[0]} to redo it and everything after, or use a new -o "
                "directory"
            )
        return True

    def mark(self, name: str, fp: str, status: str = "done", **info) -> None:
        self.data["stages"][name] = {"status": status, "fingerprint": fp, "time": time.time(), **info}
        self.save()

    def forget_from(self, names_in_order: list[str], first: str) -> None:
        """Drop records of ``first`` (a stage name or prefix) and every stage after it."""
        drop = False
        for n in names_in_order:
            if n == first or n.split(":")[0] == first:
                drop = True
            if drop:
                self.data["stages"].pop(n, None)
        self.save()

    def event(self, text: str) -> None:
        self.data["events"].append({"time": time.time(), "text": text})
        self.save()
