"""What runs on a Dask worker: one teacher per process, chunks labelled into plain arrays.

Tasks receive the structures themselves (not a path), so workers need no access to the
pool file: this works the same on a :class:`distributed.LocalCluster`, an existing
cluster reached with ``--scheduler`` and a Slurm allocation. Results travel back as
numpy arrays (energy eV, forces eV/A, stress Voigt eV/A^3) and a failures list; the
client alone writes files, so there is exactly one writer of the checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

import numpy as np

from ..data.neighbors import closest_pair
from ..labels import LabelError, check_energy, check_forces, check_stress


class TeacherLoadError(RuntimeError):
    """The teacher could not be built on a worker; the message carries the worker's error."""


def spec_key(spec: dict | str) -> str:
    """Canonical JSON of a teacher spec (stored in the labelled file to recognise a rerun)."""
    return json.dumps(spec, sort_keys=True, default=str)


def where() -> str:
    """``host:pid`` of this process, for error messages."""
    return f"{socket.gethostname()}:{os.getpid()}"


def get_teacher(spec: dict | str, threads: int | None = None):
    """The teacher for ``spec`` in this process, built on first use.

    The teachers' per-process cache (:func:`mlff_distiller.teachers.build_teacher`) builds
    it once per worker: building CHGNet or Orb costs seconds and hundreds of MB, so it must
    not happen per task. ``threads`` sets torch's intra-op threads (the math threads of one
    worker), and ``OMP_NUM_THREADS`` before the first build. Any error while building becomes
    :class:`TeacherLoadError` naming the worker and the original exception, so the client can
    fail fast with it.
    """
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(int(threads))
    try:
        from ..teachers import build_teacher

        teacher = build_teacher(spec)
    except Exception as err:  # noqa: BLE001 - reported to the client verbatim
        msg = " ".join(f"{type(err).__name__}: {err}".split())
        raise TeacherLoadError(f"teacher failed to load on worker {where()}: {msg}") from None
    if threads:
        _set_threads(int(threads))
    return teacher


def _set_threads(n: int) -> None:
    # Only when the teacher pulled torch in: importing it for an analytic teacher (EMT)
    # would cost seconds per worker for nothing.
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def warm_up(spec: dict | str, threads: int | None) -> str:
    """Build (or fetch) this worker's teacher; returns its fingerprint id."""
    return get_teacher(spec, threads).fingerprint_id


def probe(spec: dict | str, threads: int | None, atoms_list: list) -> dict:
    """Build the teacher, label ``atoms_list[0]`` once to warm up, then time the rest.

    Returns the teacher's identity (``spec``, ``fingerprint``, ``fingerprint_id``,
    ``capabilities``) and ``seconds_per_structure`` (``None`` when fewer than two structures
    were given) so the client can size chunks. Nothing labelled here is kept.
    """
    t0 = time.perf_counter()
    teacher = get_teacher(spec, threads)
    build_s = time.perf_counter() - t0
    per = None
    if atoms_list:
        teacher.label(atoms_list[:1])
        rest = atoms_list[1:]
        if rest:
            t1 = time.perf_counter()
            teacher.label(rest)
            per = (time.perf_counter() - t1) / len(rest)
    return {
        "spec": teacher.spec,
        "fingerprint": teacher.fingerprint,
        "fingerprint_id": teacher.fingerprint_id,
        "capabilities": dict(teacher.capabilities),
        "build_seconds": build_s,
        "seconds_per_structure": per,
        "worker": where(),
    }


def too_close(atoms, min_distance: float) -> str | None:
    """Reason string when two atoms (periodic images included) are closer than ``min_distance`` A.

    Uses ASE's neighbour list (numpy only): vesin would pull torch into every worker, which
    costs seconds for analytic teachers that never need it.
    """
    if min_distance <= 0 or len(atoms) == 0 or (len(atoms) == 1 and not np.any(atoms.pbc)):
        return None
    pos = atoms.get_positions()
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if not np.all(np.isfinite(pos)):
        return None  # reported by the teacher's pre-check
    if np.any(atoms.pbc) and abs(np.linalg.det(cell)) < 1e-8:
        return None  # the teacher's own check reports the degenerate cell
    pair = closest_pair(pos, cell, atoms.pbc, float(min_distance), engine="ase")
    if not pair.found:
        return None
    return f"atoms {pair.i} and {pair.j} overlap: distance {pair.distance:.3f} A < min_distance {min_distance:g} A"


def label_chunk(
    spec: dict | str,
    threads: int | None,
    chunk_id: int,
    indices: list[int],
    atoms_list: list,
    min_distance: float = 0.0,
) -> dict:
    """Label one chunk on this worker; never raises for a bad structure.

    Returns a dict of plain arrays: ``indices`` (pool indices labelled), ``energy`` (k,)
    eV, ``n_atoms`` (k,), ``forces`` (sum n_atoms, 3) eV/A, ``stress`` (k, 6) Voigt eV/A^3
    with ``stress_mask`` (k,), ``failures`` [(pool index, reason)], ``seconds``, ``worker``.
    """
    teacher = get_teacher(spec, threads)
    t0 = time.perf_counter()
    failures: list[tuple[int, str]] = []
    todo_idx: list[int] = []
    todo_atoms: list = []
    for idx, atoms in zip(indices, atoms_list):
        reason = too_close(atoms, min_distance)
        if reason:
            failures.append((int(idx), reason))
        else:
            todo_idx.append(int(idx))
            todo_atoms.append(atoms)
    results = teacher.label(todo_atoms) if todo_atoms else []
    ok_idx, energy, n_atoms, forces, stress, smask = [], [], [], [], [], []
    for idx, atoms, res in zip(todo_idx, todo_atoms, results):
        if not res.ok:
            failures.append((idx, res.error))
            continue
        # The teacher already checks shapes and finiteness; check again here because a
        # non-finite label must never reach a dataset, whatever the backend did.
        try:
            e = check_energy(res.energy)
            f = check_forces(res.forces, len(atoms))
            s = None if res.stress is None else check_stress(res.stress)
        except LabelError as err:
            failures.append((idx, f"teacher returned {err}"))
            continue
        ok_idx.append(idx)
        energy.append(e)
        n_atoms.append(len(atoms))
        forces.append(f)
        stress.append(np.zeros(6) if s is None else s)
        smask.append(s is not None)
    failures.sort()
    return {
        "chunk_id": int(chunk_id),
        "indices": np.asarray(ok_idx, dtype=np.int64),
        "energy": np.asarray(energy, dtype=np.float64),
        "n_atoms": np.asarray(n_atoms, dtype=np.int64),
        "forces": np.concatenate(forces).astype(np.float64) if forces else np.zeros((0, 3)),
        "stress": np.asarray(stress, dtype=np.float64).reshape(-1, 6),
        "stress_mask": np.asarray(smask, dtype=bool),
        "failures": failures,
        "seconds": time.perf_counter() - t0,
        "worker": where(),
    }
