"""Distillation loss and validation metrics.

Loss (ASE units): ``w_E * MSE(E/N) + w_F * MSE(F) + w_S * MSE(S)`` where ``E/N`` is the
energy per atom (eV/atom), ``F`` the force components (eV/A) and ``S`` the Voigt stress
components (eV/A^3); each mean runs over the structures / components that carry that
label (masks from :func:`mlff_distiller.data.graph.collate`).

Under DDP each process holds part of the global batch. The means are taken over the
*global* counts (summed across processes before the forward pass) and the local loss is
multiplied by the number of processes, because DDP averages gradients: the resulting
gradient is that of the single-process loss on the whole global batch.
"""

from __future__ import annotations

import math

import torch

from .. import fields as F


def label_counts(batch: dict) -> torch.Tensor:
    """(3,) float64: labelled energies, force components, stress components in ``batch``."""
    n_e = batch[F.ENERGY + "_mask"].sum() if F.ENERGY + "_mask" in batch else 0
    if F.FORCES + "_mask" in batch:
        atom_has_f = batch[F.FORCES + "_mask"][batch[F.BATCH]]
        n_f = 3 * atom_has_f.sum()
    else:
        n_f = 0
    n_s = 6 * batch[F.STRESS + "_mask"].sum() if F.STRESS + "_mask" in batch else 0
    return torch.tensor([float(n_e), float(n_f), float(n_s)], dtype=torch.float64)


def squared_errors(out: dict, batch: dict, weights: tuple[float, float, float]) -> list:
    """Sums of squared errors [energy per atom, forces, stress] as tensors (or 0.0)."""
    w_e, w_f, w_s = weights
    sums = [0.0, 0.0, 0.0]
    if w_e > 0 and F.ENERGY + "_mask" in batch:
        m = batch[F.ENERGY + "_mask"]
        n = batch[F.N_ATOMS].to(out[F.ENERGY].dtype)
        diff = (out[F.ENERGY] - batch[F.ENERGY].to(out[F.ENERGY].dtype)) / n
        sums[0] = (diff[m] ** 2).sum()
    if w_f > 0 and F.FORCES + "_mask" in batch:
        m = batch[F.FORCES + "_mask"][batch[F.BATCH]]
        diff = out[F.FORCES] - batch[F.FORCES].to(out[F.FORCES].dtype)
        sums[1] = (diff[m] ** 2).sum()
    if w_s > 0 and F.STRESS + "_mask" in batch and F.STRESS in out:
        m = batch[F.STRESS + "_mask"]
        diff = out[F.STRESS] - batch[F.STRESS].to(out[F.STRESS].dtype)
        sums[2] = (diff[m] ** 2).sum()
    return sums


def distillation_loss(out: dict, batch: dict, weights, global_counts: torch.Tensor, world: int = 1):
    """Weighted loss of one (local part of a) batch, normalised by the global label counts."""
    sums = squared_errors(out, batch, weights)
    loss = 0.0
    for w, s, n in zip(weights, sums, global_counts.tolist()):
        if w > 0 and n > 0 and not isinstance(s, float):
            loss = loss + (w * world / n) * s
    if isinstance(loss, float):  # nothing labelled in the whole global batch
        loss = torch.zeros((), dtype=out[F.ENERGY].dtype, device=out[F.ENERGY].device, requires_grad=True)
    return loss


class MetricSums:
    """Accumulates validation errors as sums, so that DDP shards can be all-reduced.

    Slots: [|dE|/N sum, (dE/N)^2 sum, n_E, |dF| sum, dF^2 sum, n_F components,
    F_teacher^2 sum, |dS| sum, dS^2 sum, n_S components].
    """

    N = 10

    def __init__(self):
        self.v = torch.zeros(self.N, dtype=torch.float64)

    @torch.no_grad()
    def add(self, out: dict, batch: dict) -> None:
        v = self.v
        if F.ENERGY + "_mask" in batch:
            m = batch[F.ENERGY + "_mask"]
            d = ((out[F.ENERGY].double() - batch[F.ENERGY].double()) / batch[F.N_ATOMS].double())[m]
            v[0] += d.abs().sum().cpu()
            v[1] += (d**2).sum().cpu()
            v[2] += int(m.sum())
        if F.FORCES + "_mask" in batch and F.FORCES in out:
            m = batch[F.FORCES + "_mask"][batch[F.BATCH]]
            ref = batch[F.FORCES].double()[m]
            d = out[F.FORCES].double()[m] - ref
            v[3] += d.abs().sum().cpu()
            v[4] += (d**2).sum().cpu()
            v[5] += d.numel()
            v[6] += (ref**2).sum().cpu()
        if F.STRESS + "_mask" in batch and F.STRESS in out:
            m = batch[F.STRESS + "_mask"]
            d = out[F.STRESS].double()[m] - batch[F.STRESS].double()[m]
            v[7] += d.abs().sum().cpu()
            v[8] += (d**2).sum().cpu()
            v[9] += d.numel()

    def metrics(self, weights) -> dict:
        """Validation metrics (eV/atom, eV/A, eV/A^3) and the weighted validation loss."""
        v = self.v.tolist()
        nan = math.nan

        def div(a, b):
            return a / b if b > 0 else nan

        m = {
            "energy_mae_per_atom": div(v[0], v[2]),
            "energy_rmse_per_atom": math.sqrt(div(v[1], v[2])) if v[2] else nan,
            "force_mae": div(v[3], v[5]),
            "force_rmse": math.sqrt(div(v[4], v[5])) if v[5] else nan,
            "force_rel_rmse": math.sqrt(div(v[4], v[6])) if v[6] > 0 else nan,
            "stress_mae": div(v[7], v[9]),
        }
        loss = 0.0
        for w, se, n in zip(weights, (v[1], v[4], v[8]), (v[2], v[5], v[9])):
            if w > 0 and n > 0:
                loss += w * se / n
        m["loss"] = loss
        return m
