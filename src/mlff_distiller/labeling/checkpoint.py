"""The labeling checkpoint: a work directory of chunk shards plus a manifest.

Layout of ``<out>.parts/`` (next to the output dataset)::

    plan.json              what is being labelled: pool sha256, teacher fingerprint,
                           chunk size, min_distance (written once, atomically)
    chunk-0000012.npz      labels of chunk 12 (energy eV, forces eV/A, stress Voigt
                           eV/A^3, failures); present <=> chunk 12 is committed
    manifest.jsonl         one line per committed chunk (append-only log)

Commit protocol for one chunk: write it under a temporary name beside ``chunk-N.npz``,
fsync it, rename it to ``chunk-N.npz`` (atomic on POSIX), fsync the directory (all by
:func:`mlff_distiller.fileio.atomic_path`), then append a manifest line. The shard file is
the source of truth: a process killed at any point
leaves either no shard for the chunk (it is labelled again on resume) or a complete one
(it is skipped), never half a chunk and never a chunk twice. A shard whose rename landed
but whose manifest line did not is found by the directory scan and logged again.
Leftover temporary files of killed runs are removed on resume.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from ..fileio import atomic_path, atomic_write_bytes, is_temp_path

PLAN = "plan.json"
MANIFEST = "manifest.jsonl"
_SHARD_KEYS = (
    "chunk_id",
    "indices",
    "energy",
    "n_atoms",
    "forces",
    "stress",
    "stress_mask",
    "fail_index",
    "fail_reason",
)


def shard_name(chunk_id: int) -> str:
    return f"chunk-{chunk_id:07d}.npz"


class WorkDir:
    """Shards and manifest of one labeling run (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def for_output(cls, out_path: str | os.PathLike) -> "WorkDir":
        out = Path(out_path)
        return cls(out.with_name(out.name + ".parts"))

    def exists(self) -> bool:
        return self.path.is_dir()

    # -- plan -----------------------------------------------------------------------------
    def read_plan(self) -> dict | None:
        """The stored plan, or ``None`` if there is none or it is unreadable."""
        try:
            return json.loads((self.path / PLAN).read_text())
        except (OSError, ValueError):
            return None

    def write_plan(self, plan: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path / PLAN, (json.dumps(plan, indent=1, sort_keys=True) + "\n").encode())

    # -- shards ---------------------------------------------------------------------------
    def shard_path(self, chunk_id: int) -> Path:
        return self.path / shard_name(chunk_id)

    def commit(self, result: dict) -> Path:
        """Make one chunk's result durable (write, fsync, atomic rename, manifest line)."""
        cid = int(result["chunk_id"])
        fails = sorted(result["failures"])
        arrays = {
            "chunk_id": np.int64(cid),
            "indices": np.asarray(result["indices"], dtype=np.int64),
            "energy": np.asarray(result["energy"], dtype=np.float64),
            "n_atoms": np.asarray(result["n_atoms"], dtype=np.int64),
            "forces": np.asarray(result["forces"], dtype=np.float64).reshape(-1, 3),
            "stress": np.asarray(result["stress"], dtype=np.float64).reshape(-1, 6),
            "stress_mask": np.asarray(result["stress_mask"], dtype=bool),
            "fail_index": np.asarray([i for i, _ in fails], dtype=np.int64),
            "fail_reason": np.asarray([str(r) for _, r in fails] or [""], dtype=str)[: len(fails)],
        }
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.shard_path(cid)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        self._log(cid, len(arrays["indices"]), len(fails))
        return path

    def _log(self, chunk_id: int, labelled: int, failed: int) -> None:
        line = json.dumps({"chunk": chunk_id, "labelled": labelled, "failed": failed, "shard": shard_name(chunk_id)})
        # No fsync: the shard (already durable) is the source of truth and a lost line is
        # re-logged by ``committed``; syncing here would add a disk flush per chunk.
        with open(self.path / MANIFEST, "ab+") as fh:
            if fh.tell() > 0:  # after a torn line (killed mid-append) start a fresh line
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    line = "\n" + line
            fh.write((line + "\n").encode())

    def manifest(self) -> dict[int, dict]:
        """Manifest entries by chunk id; a torn last line (killed mid-append) is ignored."""
        out: dict[int, dict] = {}
        try:
            text = (self.path / MANIFEST).read_text()
        except OSError:
            return out
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                out[int(entry["chunk"])] = entry
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def load(self, chunk_id: int) -> dict:
        """Read one committed shard (raises ``ValueError`` if it is damaged)."""
        try:
            with np.load(self.shard_path(chunk_id), allow_pickle=False) as z:
                data = {k: z[k] for k in _SHARD_KEYS}
        except (OSError, KeyError, zipfile.BadZipFile, EOFError) as err:
            raise ValueError(f"shard {shard_name(chunk_id)} is unreadable: {err}") from None
        if int(data["chunk_id"]) != chunk_id:
            raise ValueError(f"shard {shard_name(chunk_id)} holds chunk {int(data['chunk_id'])}")
        data["failures"] = [(int(i), str(r)) for i, r in zip(data["fail_index"], data["fail_reason"])]
        return data

    def load_index(self, chunk_id: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Only the labelled pool indices and the failures of one shard."""
        try:
            with np.load(self.shard_path(chunk_id), allow_pickle=False) as z:
                idx = z["indices"]
                fails = [(int(i), str(r)) for i, r in zip(z["fail_index"], z["fail_reason"])]
        except (OSError, KeyError, zipfile.BadZipFile, EOFError) as err:
            raise ValueError(f"shard {shard_name(chunk_id)} is unreadable: {err}") from None
        return idx, fails

    def committed(self, n_chunks: int) -> dict[int, dict]:
        """Scan and verify committed shards -> {chunk_id: {"labelled", "failed"}}.

        Damaged shards (only possible after a disk fault, since shards appear by rename)
        are deleted so their chunks are labelled again. Stray temporary files go too.
        """
        out: dict[int, dict] = {}
        if not self.exists():
            return out
        logged = self.manifest()
        for p in self.path.iterdir():
            if is_temp_path(p) or ".tmp-" in p.name:  # ".tmp-": temporary names of earlier versions
                p.unlink(missing_ok=True)
        for cid in range(n_chunks):
            if not self.shard_path(cid).exists():
                continue
            try:
                data = self.load(cid)
            except ValueError:
                self.shard_path(cid).unlink(missing_ok=True)
                continue
            entry = {"labelled": int(len(data["indices"])), "failed": int(len(data["fail_index"]))}
            if cid not in logged:  # killed between rename and manifest append
                self._log(cid, entry["labelled"], entry["failed"])
            out[cid] = entry
        return out

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
