"""Repacking: write a dataset (main file + journal) as one compact main file.

:func:`merge_into` is what :meth:`DatasetWriter.finalize` runs; :func:`repack` rewrites a
dataset in place or to a new path, optionally trading precision for size (float32
positions, rounded force mantissas; errors measured in docs/dataset-format.md).
"""

from __future__ import annotations

import json
import uuid as _uuid
from pathlib import Path

import numpy as np

from ... import fields as F
from ...errors import DatasetError
from .convert import check_bits, check_positions_dtype, encode_positions, round_mantissa, to_json
from .parts import SEG_RE, base_meta, journal_dir, write_part
from .reader import DatasetReader


def merge_into(
    src: Path,
    dst: Path,
    positions_dtype=None,
    fsync: bool = True,
    merged_through: int | None = None,
    forces_bits: int | None = None,
) -> None:
    """Write the dataset at ``src`` (main + journal) as one compact file at ``dst`` (temp + rename)."""
    r = DatasetReader(src)
    try:
        pdt = np.dtype(positions_dtype) if positions_dtype is not None else r.positions_dtype
        bits = min(check_bits(forces_bits), r.forces_mantissa_bits)  # precision lost once stays lost
        meta = base_meta(
            r.label_fields,
            r.attrs,
            pdt,
            r.uuid if dst == src else _uuid.uuid4().hex,
            merged_through if merged_through is not None else 0,
            bits,
        )
        meta["extra_arrays"] = json.dumps(r.extra_specs, sort_keys=True)
        if dst != src:
            meta["attrs"] = to_json(r.attrs)

        def blocks():
            for blk in r.iter_blocks():
                blk.positions = encode_positions(blk.positions, pdt)
                if F.FORCES in blk.labels:
                    blk.labels[F.FORCES] = round_mantissa(blk.labels[F.FORCES], bits)
                yield blk

        n_atoms = int(r.n_atoms.sum())
        write_part(Path(dst), blocks(), len(r), n_atoms, meta, r.failures(), compact=True, fsync=fsync)
    finally:
        r.close()


def repack(
    src, dst=None, positions_dtype: str | None = None, forces_mantissa_bits: int | None = None, fsync: bool = True
) -> Path:
    """Write the compact read-optimised layout of ``src`` to ``dst`` (default: in place).

    In place, this is what :meth:`DatasetWriter.finalize` does. ``positions_dtype="float32"``
    and ``forces_mantissa_bits < 23`` trade precision for file size (errors measured in
    docs/dataset-format.md); by default the file keeps its current precision.
    """
    from .writer import DatasetWriter  # the writer finalizes through merge_into

    if positions_dtype is not None:
        check_positions_dtype(positions_dtype)
    check_bits(forces_mantissa_bits)
    src = Path(src)
    dst = Path(dst) if dst is not None else src
    if dst == src:
        with DatasetReader(src) as r:
            label_fields = r.label_fields
        with DatasetWriter(src, label_fields=label_fields, fsync=fsync, finalize_on_close=False) as w:
            w.rewrite(positions_dtype, forces_mantissa_bits)
    else:
        if dst.exists() and dst.resolve() == src.resolve():
            raise DatasetError(f"{dst} is the same file as {src}; omit the output to repack in place")
        merge_into(src, dst, positions_dtype, fsync=fsync, forces_bits=forces_mantissa_bits)
        jd = journal_dir(dst)
        if jd.is_dir():  # journal of an older dataset at dst has another uuid: stale
            for p in jd.iterdir():
                if SEG_RE.match(p.name):
                    p.unlink(missing_ok=True)
    return dst
