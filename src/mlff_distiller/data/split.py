"""Grouped splits of a dataset: the one implementation behind the trainer's validation split
and the pipeline's train/test files.

Structures derived from one root (the same provenance ``group``) never straddle the two
sides, so near-duplicates cannot leak from training into validation or test.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import fields as F
from ..errors import DatasetError, UserError


def provenance_groups(reader) -> list[str]:
    """One group per structure of a :class:`DatasetReader`: its provenance ``group``; when that
    is empty, the group of the root of its ``parent`` chain; else ``"#<root index>"`` (the
    structure and everything derived from it form a group of their own)."""
    n = len(reader)
    try:
        groups = [str(g) for g in reader.column("group")]
        parent = np.asarray(reader.column("parent"), dtype=np.int64)
    except UserError:
        prov = [reader.provenance(i) or {} for i in range(n)]
        groups = [str(p.get("group") or "") for p in prov]
        parent = np.array([int(p.get("parent", -1)) for p in prov], dtype=np.int64)
    root = np.arange(n, dtype=np.int64)
    valid = (parent >= 0) & (parent < n) & (parent != np.arange(n))
    root[valid] = parent[valid]
    for _ in range(64):  # pointer jumping: chains of any practical length
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    return [groups[i] or groups[root[i]] or f"#{root[i]}" for i in range(n)]


def grouped_partition(groups: Sequence[str], fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split structure indices into ``len(fractions)`` parts of about these fractions, whole
    groups only: groups in an order fixed by ``seed`` fill part 0 up to its share, then part 1,
    ...; with fractions summing below 1 the remaining groups are left out. Sorted index arrays."""
    fr = np.asarray(list(fractions), dtype=np.float64)
    if fr.size == 0 or (fr < 0).any() or not np.isfinite(fr).all() or fr.sum() > 1 + 1e-9:
        raise DatasetError(f"split fractions {list(fractions)} must be non-negative and sum to at most 1")
    n = len(groups)
    targets = np.floor(np.cumsum(fr) * n + 1e-9).astype(np.int64)
    uniq, inverse, counts = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True,
                                      return_counts=True)
    order = np.random.default_rng(seed).permutation(len(uniq))
    assign = np.full(len(uniq), -1, np.int64)
    filled, k = 0, 0
    for g in order:
        while k < len(fr) and filled >= targets[k]:
            k += 1
        if k == len(fr):
            break
        assign[g] = k
        filled += counts[g]
    part = assign[inverse] if n else np.zeros(0, np.int64)
    return [np.nonzero(part == s)[0] for s in range(len(fr))]


def chemistry_keys(reader) -> list[str]:
    """One key per structure of a :class:`DatasetReader`: its sorted element set, e.g. ``"6-14"``."""
    keys: list[str] = []
    for offsets, numbers in reader.iter_atom_blocks(F.NUMBERS):
        for a, b in zip(offsets[:-1], offsets[1:]):
            keys.append("-".join(str(z) for z in np.unique(numbers[a:b])))
    return keys


def grouped_split(
    groups: Sequence[str], val_fraction: float, seed: int, chemistry: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Split structure indices into (train, val) so that no provenance group is in both.

    Groups are visited in an order fixed by ``seed`` and moved to validation until it
    holds at least ``val_fraction`` of the structures (at least one structure, and never
    all groups). With ``chemistry`` (one key per structure, e.g. its sorted element set) a
    group is held out only if each of its keys still occurs in a group left for training:
    validation then measures the student inside the chemistry it was trained on, and a
    one-of-a-kind prototype (say the only SiC crystal) is never the whole val signal. With a
    single group (e.g. one MD trajectory) a grouped split is impossible; the structures are
    then split at random and the returned ``kind`` says so.
    Returns sorted index arrays and ``kind`` (``"grouped"`` or ``"random"``).
    """
    n = len(groups)
    if n < 2:
        raise DatasetError(f"dataset holds {n} structure(s); training needs at least 2 (one for validation)")
    target = max(1, int(round(val_fraction * n)))
    rng = np.random.default_rng(seed)
    unique = sorted(set(groups))
    if len(unique) >= 2:
        order = [unique[k] for k in rng.permutation(len(unique))]
        members: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            members.setdefault(g, []).append(i)
        key_count: dict[str, int] = {}
        group_keys: dict[str, set] = {}
        if chemistry is not None:
            for g, idx in members.items():
                group_keys[g] = {chemistry[i] for i in idx}
                for k in group_keys[g]:
                    key_count[k] = key_count.get(k, 0) + 1
        val: list[int] = []
        for g in order[:-1]:  # keep at least one group for training
            if len(val) >= target:
                break
            keys = group_keys.get(g, ())
            if any(key_count[k] < 2 for k in keys):
                continue  # its chemistry would leave training entirely
            for k in keys:
                key_count[k] -= 1
            val.extend(members[g])
        if not val:  # every group is one of a kind: fall back to the plain grouped split
            for g in order[:-1]:
                if len(val) >= target:
                    break
                val.extend(members[g])
        val_idx = np.array(sorted(val), dtype=np.int64)
        train_idx = np.setdiff1d(np.arange(n), val_idx)
        return train_idx, val_idx, "grouped"
    perm = rng.permutation(n)
    target = min(target, n - 1)
    return np.sort(perm[target:]), np.sort(perm[:target]), "random"


def split_keeping_in_training(
    groups: Sequence[str], keep: Sequence[int], val_fraction: float, seed: int,
    chemistry: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """:func:`grouped_split` of the structures not in ``keep``; those in ``keep`` all go to
    training; validation holds ``val_fraction`` of the others. ``keep``: the structures trained
    without their energy (the frames an active round adds, ``energy_skip_sources``): each cost a
    teacher call to be trained on, and a validation set made of them measures no energy. In one
    grouped split of a water round's dataset a single group of 21 of them was the whole
    validation set, and the checkpoint was chosen on forces alone. With fewer than 2 other
    structures the plain split of all is returned.
    """
    kept = {int(i) for i in keep}
    rest = np.array([i for i in range(len(groups)) if i not in kept], dtype=np.int64)
    if not kept or len(rest) < 2:
        return grouped_split(groups, val_fraction, seed, chemistry)
    tr, va, kind = grouped_split([groups[i] for i in rest], val_fraction, seed,
                                 None if chemistry is None else [chemistry[i] for i in rest])
    train = np.sort(np.concatenate([rest[tr], np.array(sorted(kept), dtype=np.int64)]))
    return train, np.sort(rest[va]), kind
