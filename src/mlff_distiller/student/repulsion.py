"""Short-range nuclear repulsion prior for the student (ZBL universal potential).

Why: a distilled student only sees the distances its training data contains (the recipes keep
atoms at least ``min_distance_factor`` x the sum of covalent radii apart). Below that its
energy is an extrapolation of a smooth network, and nothing stops it from being attractive:
the water student's own MD at 600 K brought two H atoms to < 0.5 A within 20 fs. A fixed,
physically correct repulsion at short range removes that failure mode; the network learns the
rest (``E_teacher - E_repulsion``), as in MACE's and NequIP's ZBL option.

The pair energy (eV, r in A) is the Ziegler-Biersack-Littmark universal screened Coulomb
repulsion [ZBL 1985, "The Stopping and Range of Ions in Solids", eq. 2-60]:

    E_ij(r) = k_e Z_i Z_j / r * phi(r / a_ij) * sw(r / r_ij)
    a_ij = 0.46850 / (Z_i^0.23 + Z_j^0.23)        (A; 0.8854 Bohr radii)
    phi(x) = 0.18175 e^(-3.19980 x) + 0.50986 e^(-0.94229 x)
           + 0.28022 e^(-0.40290 x) + 0.02817 e^(-0.20162 x)

with ``k_e = e^2 / (4 pi eps_0) = 14.399645 eV A`` and a smooth switch
``sw(u) = 1 - 28 u^6 + 48 u^7 - 21 u^8`` (u < 1; 0 beyond; value, slope and curvature go to
zero at u = 1) that ends at ``r_ij = cov_i + cov_j``, the sum of the covalent radii (ASE's
table, Cordero et al. 2008). At equilibrium bond lengths the term is zero or nearly (O-H at
0.96 A: 3e-4 eV), so it does not shift the fitted reference energies; at 0.5 A an O-H pair
gets ~28 eV, an H-H pair ~1 eV.

Two implementations share the tables and constants below: :func:`repulsion_atom_energies`
(torch, differentiable, TorchScript-able: training, ASE, metatomic, torch-sim) and
``fast._repulsion_energy_forces`` (Numba, the CPU inference kernel).
"""

from __future__ import annotations

import numpy as np
import torch
from ase.data import covalent_radii
from torch import Tensor

#: Coulomb constant e^2 / (4 pi eps_0) in eV A (CODATA 2018).
COULOMB_EV_A = 14.399645
#: ZBL screening length prefactor (A) and exponent.
ZBL_LENGTH_A = 0.46850
ZBL_EXPONENT = 0.23
#: Coefficients and decay rates of the ZBL screening function phi(x).
ZBL_COEFFS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_DECAYS = (3.19980, 0.94229, 0.40290, 0.20162)
#: Allowed values of ``StudentConfig.repulsion``.
REPULSIONS = ("none", "zbl")


def pair_tables(elements: list[int], cutoff: float) -> np.ndarray:
    """Per element pair (rows of ``elements`` x rows of ``elements``) the three constants of
    the pair term, float64 array (n, n, 3): ``k_e Z_i Z_j`` (eV A), ``1 / a_ij`` (1/A) and
    ``1 / r_ij`` (1/A), where ``r_ij`` (the switch-off distance) is capped at ``cutoff``."""
    z = np.asarray(elements, dtype=np.float64)
    cov = np.asarray([covalent_radii[int(k)] for k in elements], dtype=np.float64)
    zp = z**ZBL_EXPONENT
    table = np.empty((len(z), len(z), 3), dtype=np.float64)
    table[..., 0] = COULOMB_EV_A * np.outer(z, z)
    table[..., 1] = (zp[:, None] + zp[None, :]) / ZBL_LENGTH_A
    table[..., 2] = 1.0 / np.minimum(cov[:, None] + cov[None, :], cutoff)
    return table


def repulsion_atom_energies(
    table: Tensor, num_elements: int, species: Tensor, r: Tensor, edge_index: Tensor, num_atoms: int
) -> Tensor:
    """Per-atom repulsion energies (N,) eV from the pair distances ``r`` (E,) A of a full
    neighbour list ``edge_index`` (2, E) (each pair listed both ways: half of each pair's
    energy goes to each of its atoms). ``table`` is :func:`pair_tables` reshaped to
    (num_elements**2, 3) in the model's dtype; ``species`` are row indices."""
    i = edge_index[0]
    pair_row = species.index_select(0, i) * num_elements + species.index_select(0, edge_index[1])
    consts = table.index_select(0, pair_row)
    u = r * consts[:, 2]
    near = u < 1.0
    r_safe = torch.where(near, torch.clamp(r, min=1e-3), torch.ones_like(r))
    u_safe = torch.where(near, u, torch.zeros_like(u))
    x = r_safe * consts[:, 1]
    phi = (
        0.18175 * torch.exp(-3.19980 * x)
        + 0.50986 * torch.exp(-0.94229 * x)
        + 0.28022 * torch.exp(-0.40290 * x)
        + 0.02817 * torch.exp(-0.20162 * x)
    )  # ZBL_COEFFS / ZBL_DECAYS written out (TorchScript)
    u6 = u_safe**6
    sw = 1.0 - 28.0 * u6 + 48.0 * u6 * u_safe - 21.0 * u6 * u_safe * u_safe
    pair = torch.where(near, (0.5 * consts[:, 0] / r_safe) * phi * sw, torch.zeros_like(r))
    return torch.zeros(num_atoms, dtype=r.dtype, device=r.device).index_add(0, i, pair)
