"""Small file helpers shared by the stages."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import yaml

# Temporary files are named ``.<target name>.<pid>.<8 hex>.tmp[<target suffix>]`` beside
# their target, so that stale ones (their writer was killed) can be found and removed.
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp(?P<rest>.*)$")


def temp_path(path: str | os.PathLike, keep_suffix: bool = False) -> Path:
    """A fresh temporary path beside ``path`` (same directory, so a rename is atomic).

    ``keep_suffix`` ends the name with the target's suffix, for writers that choose the
    format from it (matplotlib, ``ase.db``).
    """
    path = Path(path)
    suffix = path.suffix if keep_suffix else ""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


def is_temp_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a :func:`temp_path` (or a file derived from one)."""
    return _TEMP_RE.match(Path(path).name) is not None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (this process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's live process
        return True
    return True


def stale_temp_paths(path: str | os.PathLike) -> list[Path]:
    """Temporary paths beside ``path`` made for it by processes that no longer run
    (files and anything named after them, e.g. a dataset's ``.journal`` directory)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    out = []
    for p in path.parent.iterdir():
        m = _TEMP_RE.match(p.name)
        if m and m.group("name") == path.name and not pid_alive(int(m.group("pid"))):
            out.append(p)
    return sorted(out)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry (a rename or a new file in it) to disk; a no-op where
    directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write the file there. On a clean exit the file
    is fsynced, renamed over ``path`` (atomic: readers and crashes see the old file or the
    new one, never a partial one) and the directory fsynced; on an exception the temporary
    file is removed and ``path`` is untouched. ``fsync=False`` skips both flushes (tests,
    scratch files)."""
    path = Path(path)
    tmp = temp_path(path, keep_suffix)
    try:
        yield tmp
        replace_atomically(tmp, path, fsync=fsync)
    finally:
        if tmp.is_file() or tmp.is_symlink():
            tmp.unlink()


def replace_atomically(tmp: str | os.PathLike, path: str | os.PathLike, fsync: bool = True) -> None:
    """Rename the finished file ``tmp`` over ``path`` (same directory): fsync the file, rename,
    fsync the directory (``fsync=False`` skips both flushes)."""
    if fsync:
        fsync_file(tmp)
    os.replace(tmp, path)
    if fsync:
        fsync_dir(Path(path).parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """A ``yaml.SafeLoader`` that refuses a mapping with the same key twice."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in first_line:
                        raise yaml.constructor.ConstructorError(
                            None, None,
                            f"key '{key}' is given twice (first on line {first_line[key]}); keep one",
                            key_node.start_mark,
                        )
                    first_line[key] = key_node.start_mark.line + 1
                except TypeError:  # an unhashable key: SafeLoader itself reports it
                    continue
        return super().construct_mapping(node, deep=deep)


def load_yaml(stream):
    """``yaml.safe_load`` that refuses a mapping with the same key twice.

    PyYAML keeps the last of two equal keys without a word, so a setting a user adds to a
    recipe that already has it would silently override (or lose to) the other. The error is a
    ``yaml.constructor.ConstructorError`` (a ``yaml.YAMLError``) marked at the second key, so
    every caller's handling of YAML errors reports it with its line.
    """
    return yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_error_text(err: Exception) -> str:
    """A ``yaml.YAMLError`` in a few words: 'line 12: key 'seed' is given twice ...'."""
    problem = getattr(err, "problem", None) or (str(err).splitlines() or [type(err).__name__])[0]
    mark = getattr(err, "problem_mark", None)
    return f"line {mark.line + 1}: {problem}" if mark is not None else str(problem)


def read_settings_file(path: str | os.PathLike, section: str, what: str = "--config") -> dict:
    """The ``section`` mapping of a YAML (or JSON) settings file that holds either that section's
    fields or a whole recipe (then its ``section:``); an empty file is ``{}``.

    The one reader of the commands' ``--config`` files (:func:`read_mapping_file` gives the
    whole mapping). Every problem is a one-line :class:`~mlff_distiller.errors.ConfigError`.
    """
    data = read_mapping_file(path, what, section)
    inner = data.get(section)
    return dict(inner) if isinstance(inner, dict) else data


def read_mapping_file(path: str | os.PathLike, what: str = "--config", section: str = "settings") -> dict:
    """The mapping a YAML (or JSON) settings file holds (an empty file is ``{}``). Every problem
    (missing, unreadable, invalid YAML, a key given twice, not a mapping) is a one-line
    :class:`~mlff_distiller.errors.ConfigError` that starts with ``what`` and the path;
    ``section`` names what the file should hold in those messages."""
    import json

    from .errors import ConfigError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} does not exist: give an existing YAML file (a {section}: section or a recipe)")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "not text"
        raise ConfigError(f"{what} {p} cannot be read ({reason}): give a readable YAML file") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else load_yaml(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ConfigError(f"{what} {p} is not valid YAML/JSON ({yaml_error_text(err)}): fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {p} holds a {type(data).__name__}, not a mapping (a {section}: section's "
                          "fields or a recipe)")
    return data
