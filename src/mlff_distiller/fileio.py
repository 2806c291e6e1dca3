"""Small file helpers shared by the stages."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader (or a crash) sees the old file or the new
    one, never a partial file: write a temporary file beside it, fsync, rename over."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def check_output_path(path: str | os.PathLike, what: str = "output", *, directory: bool = False,
                      create_parents: bool = False) -> Path:
    """Refuse an output location that cannot be written, before any work starts.

    ``path`` is a file to write (``directory=False``) or a directory to create or fill. The
    nearest existing ancestor must be a directory in which a file can be created (probed
    with a temporary file that is removed at once; nothing else is created). Without
    ``create_parents`` the parent directory must exist already. Raises :class:`UserError`
    naming ``what`` and the path.
    """
    from .errors import UserError

    p = Path(path)
    if not str(path).strip():
        raise UserError(f"{what}: empty path; give a file name")
    if p.exists():
        if directory and not p.is_dir():
            raise UserError(f"{what} {p} is a file, not a directory; choose another path")
        if not directory and p.is_dir():
            raise UserError(f"{what} {p} is a directory; give a file name")
    anchor = p if (directory and p.is_dir()) else p.parent
    probe = anchor
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe != anchor and not create_parents:
        raise UserError(f"{what} {p}: directory {anchor} does not exist; create it first")
    if not probe.is_dir():
        raise UserError(f"{what} {p}: {probe} is a file, not a directory; choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".mlff-distill-probe-", dir=probe)
    except OSError as err:
        raise UserError(f"{what} {p}: cannot write in {probe} ({err.strerror or type(err).__name__}); "
                        "choose a writable location") from None
    os.close(fd)
    os.unlink(tmp)
    return p
