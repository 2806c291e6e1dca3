"""The dataset writer and its append journal.

Each :meth:`DatasetWriter.append` becomes one journal segment (a part file written under a
temporary name and renamed into place); beyond :data:`MAX_JOURNAL_SEGMENTS` segments the
journal is compacted into one; :meth:`DatasetWriter.finalize` merges main file and journal
into a new compact main file. A writer killed at any moment leaves a dataset that opens and
holds every structure whose ``append`` returned. One writer per dataset (a file lock).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import shutil
import uuid as _uuid
from pathlib import Path
from typing import Sequence

import numpy as np

from ... import __version__
from ...errors import DatasetError
from ...fileio import stale_temp_paths
from .convert import LABEL_FIELDS, Block, atoms_to_block, check_bits, check_positions_dtype, merge_specs, to_json
from .parts import SEG_RE, Part, base_meta, journal_dir, list_segments, part_block, write_part
from .reader import DatasetReader
from .repack import merge_into

MAX_JOURNAL_SEGMENTS = 32  # compact the journal into one segment beyond this many


class DatasetWriter:
    """Append structures to a dataset, crash-safely (see module docstring).

    ``label_fields``: subset of ``("energy", "forces", "stress")``; ``()`` makes an unlabelled
    pool. Labels come from ``atoms.calc.results``, provenance from ``atoms.info["provenance"]``,
    charge / spin from ``atoms.info["charge"]`` / ``["spin_multiplicity"]``. ``attrs`` is a
    JSON-able dict stored in the file (teacher, recipe, ...). ``mode="a"`` appends to an
    existing file (its label fields must match), ``"w"`` starts a new one. ``append`` is
    durable when it returns; ``close`` (also on leaving ``with``) runs :meth:`finalize`.
    """

    def __init__(
        self,
        path,
        label_fields: Sequence[str] = LABEL_FIELDS,
        attrs: dict | None = None,
        mode: str = "a",
        positions_dtype: str = "float64",
        forces_mantissa_bits: int | None = None,
        fsync: bool = True,
        finalize_on_close: bool = True,
    ):
        self.path = Path(path)
        label_fields = tuple(label_fields)
        bad = [f for f in label_fields if f not in LABEL_FIELDS]
        if bad or len(set(label_fields)) != len(label_fields):
            raise DatasetError(f"label_fields {label_fields} is not valid; use a subset of {LABEL_FIELDS}")
        label_fields = tuple(f for f in LABEL_FIELDS if f in label_fields)  # canonical order
        if mode not in ("a", "w"):
            raise DatasetError(f"writer mode {mode!r} is not valid; use 'a' (append) or 'w' (new file)")
        check_positions_dtype(positions_dtype)
        self.forces_bits = check_bits(forces_mantissa_bits)
        if not self.path.parent.is_dir():
            raise DatasetError(f"directory {self.path.parent} does not exist; create it first")
        self.fsync = fsync
        self.finalize_on_close = finalize_on_close
        self._closed = False
        self._jdir = journal_dir(self.path)
        try:
            self._jdir.mkdir(exist_ok=True)
            self._lock_fh = open(self._jdir / "writer.lock", "a+")
        except OSError as err:
            raise DatasetError(
                f"cannot write next to {self.path} ({err.strerror or err}); check the directory's permissions"
            ) from None
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_fh.close()
            raise DatasetError(
                f"{self.path} is already open for writing by another process; wait for it or stop it"
            ) from None
        try:
            self._open(label_fields, dict(attrs or {}), mode, positions_dtype)
        except BaseException:
            self._release()
            raise

    def _remove_orphaned_temp_files(self) -> None:
        """Delete temporary main-file copies left by killed processes (never a live one's)."""
        for p in stale_temp_paths(self.path):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def _open(self, label_fields, attrs, mode, positions_dtype):
        self._remove_orphaned_temp_files()
        if mode == "a" and self.path.exists():
            r = DatasetReader(self.path)
            try:
                if r.label_fields != label_fields:
                    raise DatasetError(
                        f"{self.path} stores label fields ({', '.join(r.label_fields) or 'none'}) but the writer was "
                        f"opened with ({', '.join(label_fields) or 'none'}); use the file's label fields or a new file"
                    )
                self.uuid = r.uuid
                self.merged_through = r.merged_through
                self.positions_dtype = r.positions_dtype
                self.forces_bits = r.forces_mantissa_bits
                self._extra_specs = dict(r.extra_specs)
                self._attrs = dict(r.attrs)
                self._n = len(r)
                live = set(r.segment_paths)
            finally:
                r.close()
            segs, stale = list_segments(self._jdir, self.merged_through)
            stale += [p for _, _, p in segs if p not in live]  # other dataset generation
            for p in stale:
                p.unlink(missing_ok=True)
            self._segments = [s for s in segs if s[2] in live]
            self._seq = max([self.merged_through] + [last for _, last, _ in segs])
            self.label_fields = label_fields
            new = {k: v for k, v in attrs.items() if self._attrs.get(k, object()) != v}
            if new:
                self.update_attrs(new)
        else:
            self.uuid = _uuid.uuid4().hex
            self.merged_through = 0
            self.positions_dtype = np.dtype(positions_dtype)
            attrs.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
            attrs.setdefault("code_version", f"mlff-distiller {__version__}")
            self._attrs = attrs
            self._extra_specs = {}
            self._n = 0
            self._seq = 0
            meta = base_meta(label_fields, attrs, self.positions_dtype, self.uuid, 0, self.forces_bits)
            write_part(self.path, [], 0, 0, meta, [], compact=True, fsync=self.fsync)
            for p in self._jdir.iterdir():  # journal of a previous dataset at this path
                if SEG_RE.match(p.name) or p.name.endswith(".tmp"):
                    p.unlink(missing_ok=True)
            self._segments = []
        self.label_fields = label_fields

    # -- state --------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def attrs(self) -> dict:
        return dict(self._attrs)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # On an exception inside ``with`` keep the journal as it is (every returned append is
        # already durable) and skip the merge.
        self.close(finalize=self.finalize_on_close and exc_type is None)

    def _check_open(self):
        if self._closed:
            raise DatasetError(f"the writer of {self.path} is closed; open a new DatasetWriter to append")

    # -- journal ------------------------------------------------------------------------
    def _commit_segment(self, blk: Block | None, failures=(), attrs_update: dict | None = None) -> None:
        seq = self._seq + 1
        meta = base_meta(self.label_fields, {}, self.positions_dtype, self.uuid, 0, self.forces_bits)
        meta["segment"] = seq
        if blk is not None:
            meta["extra_arrays"] = json.dumps(blk.extra_specs(), sort_keys=True)
        if attrs_update:
            meta["attrs_update"] = to_json(attrs_update)
        final = self._jdir / f"seg-{seq:010d}-{seq:010d}.h5"
        blocks = [blk] if blk is not None else []
        ns = len(blk) if blk is not None else 0
        na = len(blk.numbers) if blk is not None else 0
        write_part(final, blocks, ns, na, meta, failures, compact=False, fsync=self.fsync)
        self._seq = seq
        self._segments.append((seq, seq, final))
        if len(self._segments) > MAX_JOURNAL_SEGMENTS:
            self._compact_journal()

    def append(self, atoms_list) -> list[int]:
        """Append structures; durable when it returns. Returns their indices in the file."""
        self._check_open()
        if hasattr(atoms_list, "get_positions"):
            atoms_list = [atoms_list]
        atoms_list = list(atoms_list)
        if not atoms_list:
            return []
        blk = atoms_to_block(atoms_list, self.label_fields, self.positions_dtype, self.forces_bits)
        specs = merge_specs([self._extra_specs, blk.extra_specs()], "the appended structures")
        self._commit_segment(blk)
        self._extra_specs = specs
        start = self._n
        self._n += len(blk)
        return list(range(start, self._n))

    def record_failures(self, failures) -> None:
        """Record ``(pool_index, reason)`` pairs of structures that could not be labelled (durable)."""
        self._check_open()
        failures = [(int(i), " ".join(str(r).split())) for i, r in failures]
        if failures:
            self._commit_segment(None, failures=failures)

    def update_attrs(self, attrs: dict) -> None:
        """Add or replace file attributes (JSON-able values); durable when it returns."""
        self._check_open()
        try:
            to_json(attrs)
        except (TypeError, ValueError) as err:
            raise DatasetError(f"file attributes must be JSON-serialisable: {err}") from None
        self._commit_segment(None, attrs_update=attrs)
        self._attrs.update(attrs)

    def _compact_journal(self) -> None:
        """Merge all journal segments into one (temp + rename); the old ones become stale."""
        parts = [Part(p) for _, _, p in self._segments]
        try:
            first, last = self._segments[0][0], self._segments[-1][1]
            attrs_update: dict = {}
            for p in parts:
                if p.meta.get("attrs_update"):
                    attrs_update.update(json.loads(p.meta["attrs_update"]))
            meta = base_meta(self.label_fields, {}, self.positions_dtype, self.uuid, 0, self.forces_bits)
            meta["segment"] = last
            meta["extra_arrays"] = json.dumps(
                merge_specs((p.extra_specs for p in parts), "the journal"), sort_keys=True
            )
            if attrs_update:
                meta["attrs_update"] = to_json(attrs_update)
            final = self._jdir / f"seg-{first:010d}-{last:010d}.h5"
            failures = [f for p in parts for f in p.failures]
            write_part(
                final,
                (part_block(p) for p in parts),
                sum(len(p) for p in parts),
                sum(int(p.offsets[-1]) for p in parts),
                meta,
                failures,
                compact=False,
                fsync=self.fsync,
            )
        finally:
            for p in parts:
                p.close()
        old = self._segments
        self._segments = [(first, last, final)]
        for _first, _last, p in old:
            if p != final:
                p.unlink(missing_ok=True)

    @property
    def sequence(self) -> int:
        """Journal sequence number of the last committed append/record/attrs update."""
        return self._seq

    @property
    def n_segments(self) -> int:
        """Journal segments not yet merged into the main file."""
        return len(self._segments)

    def finalize(self) -> None:
        """Merge main file and journal into a new compact main file (temp + atomic rename)."""
        self._check_open()
        if self._segments:
            self.rewrite()

    def rewrite(self, positions_dtype=None, forces_mantissa_bits: int | None = None) -> None:
        """Write main file and journal as a new compact main file (temp + atomic rename), even
        with an empty journal; optionally with other positions dtype / force mantissa bits
        (see :func:`repack`). Precision lost once stays lost."""
        self._check_open()
        pdt = self.positions_dtype if positions_dtype is None else check_positions_dtype(positions_dtype)
        bits = min(check_bits(forces_mantissa_bits), self.forces_bits)
        merge_into(self.path, self.path, pdt, fsync=self.fsync, merged_through=self._seq, forces_bits=bits)
        self.merged_through = self._seq
        self.positions_dtype, self.forces_bits = pdt, bits
        for _, _, p in self._segments:
            p.unlink(missing_ok=True)
        self._segments = []

    def _release(self):
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
        finally:
            self._lock_fh.close()

    def close(self, finalize: bool | None = None) -> None:
        if self._closed:
            return
        try:
            if self.finalize_on_close if finalize is None else finalize:
                self.finalize()
        finally:
            self._closed = True
            self._release()
            try:  # leave no empty journal directory behind a finalized file
                if not any(p.name != "writer.lock" for p in self._jdir.iterdir()):
                    (self._jdir / "writer.lock").unlink(missing_ok=True)
                    self._jdir.rmdir()
            except OSError:
                pass
