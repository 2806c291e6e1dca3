"""Data plumbing for the trainer: training-split statistics, batch order (the grouped split
is :mod:`mlff_distiller.data.split`).

Everything here is deterministic given the seed, so that an interrupted run that is
resumed sees exactly the batches the uninterrupted run would have seen, and a DDP run
with ``P`` processes sees, at every optimizer step, the same global batch as a single
process run with the same global batch size.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from .. import fields as F
from ..data.normalization import NormalizationStats, compute_statistics
from ..errors import ConfigError, DatasetError


class GraphListDataset(Dataset):
    """Graphs (``atoms_to_graph`` dicts) held in memory, indexable like the file."""

    def __init__(self, graphs: Sequence[dict]):
        self.graphs = list(graphs)

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int) -> dict:
        return self.graphs[i]


def training_statistics(graphs: Iterable[dict], cutoff: float, elements: Sequence[int]) -> NormalizationStats:
    """Normalization statistics of the given (training) graphs, in one pass.

    Reference energies are fitted on the structures with an energy label; an element of
    ``elements`` absent from them gets a reference energy of 0 eV. The mean neighbour
    count is edges per atom of the graphs' neighbour lists.
    """
    numbers, energies, forces = [], [], []
    n_atoms = n_edges = 0
    for g in graphs:
        n_atoms += len(g[F.NUMBERS])
        n_edges += int(np.shape(g[F.EDGE_INDEX])[1])
        if F.ENERGY in g:
            numbers.append(np.asarray(g[F.NUMBERS]))
            energies.append(float(g[F.ENERGY]))
        if F.FORCES in g:
            forces.append(np.asarray(g[F.FORCES], dtype=np.float64))
    if not energies:
        raise DatasetError("the training split has no energy labels: label the dataset with a teacher first")
    stats = compute_statistics(numbers, np.array(energies), forces=forces or None, neighbor_counts=None,
                               cutoff=cutoff)
    stats.avg_num_neighbors = max(n_edges / max(n_atoms, 1), 1.0)
    for z in elements:
        stats.element_energies.setdefault(int(z), 0.0)
    return stats


class BatchOrder:
    """The per-process batches of each epoch, built on :class:`DistributedSampler`.

    The sampler shuffles with ``seed + epoch`` and deals indices round-robin to the
    ``world`` processes; each process cuts its share into batches of
    ``global_batch / world``. Step ``k`` of every process then covers positions
    ``[k*B, (k+1)*B)`` of the epoch's permutation together, which is exactly the batch a
    single process with global batch ``B`` takes at step ``k``.
    """

    def __init__(self, n: int, global_batch: int, world: int, rank: int, seed: int, shuffle: bool = True):
        if global_batch % world:
            raise ConfigError(
                f"training.batch_size = {global_batch} is not divisible by the {world} DDP processes: "
                f"use a multiple of {world}"
            )
        self.n = n
        self.local_batch = global_batch // world
        self.world, self.rank, self.seed, self.shuffle = world, rank, seed, shuffle

    def epoch(self, epoch: int) -> list[list[int]]:
        sampler = DistributedSampler(
            _Sized(self.n),
            num_replicas=self.world,
            rank=self.rank,
            shuffle=self.shuffle,
            seed=self.seed,
            drop_last=False,
        )
        sampler.set_epoch(epoch)
        idx = list(sampler)
        b = self.local_batch
        return [idx[k : k + b] for k in range(0, len(idx), b)]

    @property
    def steps_per_epoch(self) -> int:
        per_rank = math.ceil(self.n / self.world)
        return math.ceil(per_rank / self.local_batch)


class _Sized:
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def to_device(batch: dict, device: torch.device) -> dict:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
