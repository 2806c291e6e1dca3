"""The student: a compact PaiNN-class equivariant message-passing network (pure torch).

Input is the batch dict of :func:`mlff_distiller.data.graph.collate` (positions in A,
``r_ij = positions[j] - positions[i] + edge_shift @ cell``); output is a dict with
``energy`` (B,) eV (float64), ``forces`` (N, 3) eV/A and ``stress`` (B, 6) eV/A^3 in Voigt
order ``(xx, yy, zz, yz, xz, xy)``. Forces are ``-dE/dr`` by autograd (conservative);
stress is ``(1/V) dE/d(strain)`` with the strain applied to positions and cell (zero for
structures that are not periodic in all three directions).

Design for speed (most of the time of such models goes into elementwise work on
per-edge tensors and its backward pass):

* each layer's radial filter is a bias-free linear map of the radial basis, and the
  cutoff envelope and ``1/avg_num_neighbors`` multiply the (E, num_rbf) basis once, not
  the (E, 3F) filters of every layer (forward and backward);
* the first layer has no vector features yet, so its vector message is only the
  direction term (no gather of neighbour vectors);
* the last layer does not update vector features nobody reads, and with
  ``scalar_last_message`` its message is scalar-only (no per-edge vector work at all);
* sums over neighbours are ``index_add`` into the node tensor itself (no extra add).

No ASE, no file I/O and no printing here; the module is TorchScript-able.
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, List

import torch
from torch import Tensor, nn

from ..data.normalization import NormalizationStats
from ..errors import ConfigError
from .config import StudentConfig
from .repulsion import pair_tables, repulsion_atom_energies

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class _Message(nn.Module):
    """Continuous-filter message: scalars from neighbours' scalars, vectors from
    neighbours' vectors and from the pair direction (rotation-equivariant)."""

    def __init__(self, num_features: int, first: bool, scalar_only: bool = False):
        super().__init__()
        self.num_features = num_features
        self.first = first
        self.scalar_only = scalar_only
        # The first layer has no neighbour vectors to weight: 2F channels (scalar, direction);
        # a scalar-only message has F channels and leaves the vector features as they are.
        self.width = (1 if scalar_only else 2 if first else 3) * num_features
        self.phi = nn.Sequential(
            nn.Linear(num_features, num_features), nn.SiLU(), nn.Linear(num_features, self.width)
        )

    def forward(self, s: Tensor, v: Tensor, filt: Tensor, direction: Tensor, i: Tensor, j: Tensor):
        f = self.num_features
        x = self.phi(s).index_select(0, j) * filt  # (E, 2F or 3F)
        parts = torch.split(x, f, dim=1)
        s = s.index_add(0, i, parts[0])
        if self.scalar_only:
            return s, v
        msg = parts[-1].unsqueeze(1) * direction.unsqueeze(2)  # (E, 3, F)
        if not self.first:
            # mul + in-place add: addcmul's backward would spend an extra (E, 3, F) pass
            msg = msg.add_(parts[1].unsqueeze(1) * v.index_select(0, j))
        v = v.index_add(0, i, msg)
        return s, v


class _Update(nn.Module):
    """Atom-wise gated update mixing scalar and vector channels (PaiNN update block)."""

    def __init__(self, num_features: int, last: bool):
        super().__init__()
        self.num_features = num_features
        self.last = last
        self.uv = nn.Linear(num_features, 2 * num_features, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * num_features, num_features), nn.SiLU(), nn.Linear(num_features, 3 * num_features)
        )

    def forward(self, s: Tensor, v: Tensor):
        f = self.num_features
        u, w = torch.split(self.uv(v), f, dim=2)  # (N, 3, F) each
        w_norm = torch.sqrt(torch.sum(w * w, dim=1) + 1e-8)
        a = self.mlp(torch.cat([s, w_norm], dim=1))
        a_vv, a_sv, a_ss = torch.split(a, f, dim=1)
        s = s + a_ss + a_sv * torch.sum(u * w, dim=1)
        if not self.last:
            v = torch.addcmul(v, a_vv.unsqueeze(1), u)
        return s, v


class _Angular(nn.Module):
    """Three-body angular invariants of degree 2 and 3, added to the scalar features before the
    first message (``angular_channels`` > 0).

    Per channel ``c`` and degree ``l``: ``A_clm = sum_j w_c(j, r_ij) Y_lm(r_ij / r_ij)`` and
    ``B_cl = sum_m A_clm^2 = sum_jk w_c(j) w_c(k) P_l(cos theta_jik)``, with real spherical
    harmonics normalised so that ``sum_m Y_lm(a) Y_lm(b) = P_l(a . b)``. PaiNN's vector features
    give the first layer only ``cos theta`` (degree 1); a covalent bond network (the tetrahedral
    angle of Si, the H-O-H angle) needs ``cos^2`` and ``cos^3`` terms. The weights
    ``w_c(j, r)`` are the neighbour's embedding mapped per channel times a radial filter.
    """

    def __init__(self, num_features: int, channels: int, num_rbf: int):
        super().__init__()
        self.channels = channels
        self.neighbour = nn.Linear(num_features, 2 * channels)
        self.radial = nn.Linear(num_rbf, 2 * channels, bias=False)
        self.out = nn.Linear(2 * channels, num_features)

    def forward(self, s: Tensor, rbf: Tensor, direction: Tensor, i: Tensor, j: Tensor) -> Tensor:
        c = self.channels
        w = self.neighbour(s).index_select(0, j) * self.radial(rbf)  # (E, 2C)
        x, y, z = direction[:, 0], direction[:, 1], direction[:, 2]
        r3 = math.sqrt(3.0)
        y2 = torch.stack([r3 * x * y, r3 * y * z, 1.5 * z * z - 0.5, r3 * x * z, 0.5 * r3 * (x * x - y * y)], dim=1)
        z5 = 5.0 * z * z
        a, b, e = math.sqrt(10.0) / 4.0, math.sqrt(15.0), math.sqrt(6.0) / 4.0
        y3 = torch.stack(
            [a * y * (3.0 * x * x - y * y), b * x * y * z, e * y * (z5 - 1.0), 0.5 * z * (z5 - 3.0),
             e * x * (z5 - 1.0), 0.5 * b * z * (x * x - y * y), a * x * (x * x - 3.0 * y * y)],
            dim=1,
        )
        n = s.shape[0]
        a2 = torch.zeros(n, 5, c, dtype=s.dtype, device=s.device).index_add(
            0, i, y2.unsqueeze(2) * w[:, :c].unsqueeze(1))
        a3 = torch.zeros(n, 7, c, dtype=s.dtype, device=s.device).index_add(
            0, i, y3.unsqueeze(2) * w[:, c:].unsqueeze(1))
        inv = torch.cat([torch.sum(a2 * a2, dim=1), torch.sum(a3 * a3, dim=1)], dim=1)  # (N, 2C)
        return s + self.out(inv)


class StudentModel(nn.Module):
    """PaiNN-class student. Build with :func:`build_student`; see the module docstring."""

    def __init__(self, config: StudentConfig, stats: NormalizationStats):
        super().__init__()
        config = StudentConfig.from_dict(config.to_dict())  # private, validated copy
        if not config.elements:
            config.elements = sorted(int(z) for z in stats.element_energies)
        if not config.elements:
            raise ConfigError(
                "student.elements is empty and the normalization statistics name no elements: list the elements"
            )
        self.config = config
        self.stats = NormalizationStats.from_dict(stats.to_dict())
        f, n_layers, n_rbf = config.num_features, config.num_layers, config.num_rbf
        self.num_features = f
        self.num_layers = n_layers
        self.cutoff = float(config.cutoff)
        self.elements: List[int] = [int(z) for z in config.elements]

        z_to_index = torch.full((119,), -1, dtype=torch.long)
        for k, z in enumerate(self.elements):
            z_to_index[z] = k
        self.register_buffer("z_to_index", z_to_index)
        # Per-atom constant energy (eV): element reference + residual mean, kept in float64.
        shift = float(stats.energy_mean)
        self._atom_energy_values = [float(stats.element_energies.get(z, 0.0)) + shift for z in self.elements]
        self.register_buffer("atom_energy_const", torch.tensor(self._atom_energy_values, dtype=torch.float64))
        scale = float(stats.force_rms if config.energy_scale == "force_rms" else stats.energy_std)
        self.energy_scale = scale if scale > 0 else 1.0
        # Cutoff envelope and neighbour-sum normalisation folded into one per-edge factor.
        self.edge_norm = 1.0 / max(float(stats.avg_num_neighbors), 1.0)
        self.register_buffer("rbf_freq", torch.arange(1, n_rbf + 1, dtype=torch.float64) * math.pi / self.cutoff)

        # Optional fixed short-range repulsion (not trained, not saved: rebuilt from the config).
        self.use_repulsion = config.repulsion == "zbl"
        self.num_elements = len(self.elements)
        table = pair_tables(self.elements, self.cutoff).reshape(-1, 3)
        self.register_buffer("repulsion_table", torch.tensor(table, dtype=torch.float64), persistent=False)

        self.embedding = nn.Embedding(len(self.elements), f)
        # Empty unless angular_channels > 0, so that checkpoints without it keep their keys.
        self.angular = nn.ModuleList(
            [_Angular(f, config.angular_channels, n_rbf)] if config.angular_channels > 0 else []
        )
        self.messages = nn.ModuleList(
            [
                _Message(f, first=(k == 0), scalar_only=(config.scalar_last_message and k == n_layers - 1 and k > 0))
                for k in range(n_layers)
            ]
        )
        # Bias-free, so that the envelope can multiply the basis instead of the filters.
        self.filters = nn.ModuleList([nn.Linear(n_rbf, m.width, bias=False) for m in self.messages])
        self.updates = nn.ModuleList([_Update(f, last=(k == n_layers - 1)) for k in range(n_layers)])
        self.readout = nn.Sequential(
            nn.Linear(f, f // 2 if f >= 4 else f), nn.SiLU(), nn.Linear(f // 2 if f >= 4 else f, 1)
        )
        self._compiled = None  # set by enable_compile(); Python-only
        self.to(_DTYPES[config.dtype])

    def _apply(self, fn, *args, **kwargs):
        # Keep the per-atom reference energies in float64 whatever dtype the weights get
        # (a float32 cast would round -1000 eV-scale references to ~1e-4 eV).
        out = super()._apply(fn, *args, **kwargs)
        self.atom_energy_const = torch.tensor(
            self._atom_energy_values, dtype=torch.float64, device=self.atom_energy_const.device
        )
        return out

    @torch.jit.unused
    def shift_reference_energies(self, delta: Dict[int, float]) -> None:
        """Add ``delta[Z]`` eV to the constant energy of every atom of element ``Z``.

        The shift goes into ``stats.element_energies`` too, so that a saved checkpoint rebuilds
        the same model. Forces and stress do not change.
        """
        for z, d in delta.items():
            z = int(z)
            if z not in self.elements:
                raise ValueError(f"shift_reference_energies: element {z} is not one of the student's elements")
            self.stats.element_energies[z] = float(self.stats.element_energies.get(z, 0.0)) + float(d)
            self._atom_energy_values[self.elements.index(z)] += float(d)
        self.atom_energy_const = torch.tensor(
            self._atom_energy_values, dtype=torch.float64, device=self.atom_energy_const.device
        )

    def atom_energies(
        self,
        species: Tensor,
        pos: Tensor,
        cell: Tensor,
        batch: Tensor,
        edge_index: Tensor,
        edge_shift: Tensor,
        num_structures: int,
    ) -> Tensor:
        """Network part of the per-atom energies (N,) in eV (with the repulsion prior if the
        config has one; no reference energies): the
        differentiable core, kept free of autograd calls so that it can be compiled."""
        rvec = self.edge_vectors(pos, cell, batch, edge_index, edge_shift, num_structures)
        return self.energies_from_vectors(species, rvec, edge_index)

    def edge_vectors(
        self, pos: Tensor, cell: Tensor, batch: Tensor, edge_index: Tensor, edge_shift: Tensor, num_structures: int
    ) -> Tensor:
        """Pair vectors ``r_ij = pos[j] - pos[i] + edge_shift @ cell[batch[i]]`` (E, 3) in A."""
        i = edge_index[0]
        if num_structures == 1:
            shift_vec = edge_shift @ cell[0]
        else:
            edge_cell = cell.index_select(0, batch.index_select(0, i))
            shift_vec = torch.bmm(edge_shift.unsqueeze(1), edge_cell).squeeze(1)
        return pos.index_select(0, edge_index[1]) - pos.index_select(0, i) + shift_vec

    def energies_from_vectors(self, species: Tensor, rvec: Tensor, edge_index: Tensor) -> Tensor:
        """Network part (+ repulsion prior) of the per-atom energies (N,) in eV from the pair vectors ``rvec``
        (E, 3) A of the full list ``edge_index`` (2, E): engines that hand over pair vectors
        (metatomic) call this directly. ``species`` are row indices (``z_to_index[Z]``)."""
        dtype = rvec.dtype
        i = edge_index[0]
        j = edge_index[1]
        r = torch.sqrt(torch.sum(rvec * rvec, dim=1))
        inside = r < self.cutoff
        r_safe = torch.where(inside, r, torch.full_like(r, 0.5 * self.cutoff))
        envelope = torch.where(
            inside, (0.5 * self.edge_norm) * (torch.cos(r_safe * (math.pi / self.cutoff)) + 1.0), torch.zeros_like(r)
        )
        direction = rvec / r_safe.unsqueeze(1)
        # Radial basis times envelope (E, num_rbf); each layer maps it to its own filter.
        rbf = torch.sin(r_safe.unsqueeze(1) * self.rbf_freq.to(dtype)) * (envelope / r_safe).unsqueeze(1)

        f = self.num_features
        s = self.embedding(species)
        v = torch.zeros(s.shape[0], 3, f, dtype=dtype, device=s.device)
        for angular in self.angular:
            s = angular(s, rbf, direction, i, j)
        for message, update, radial in zip(self.messages, self.updates, self.filters):
            s, v = message(s, v, radial(rbf), direction, i, j)
            s, v = update(s, v)

        energy = self.readout(s).squeeze(1) * self.energy_scale  # (N,) eV, model dtype
        if self.use_repulsion:
            energy = energy + repulsion_atom_energies(
                self.repulsion_table, self.num_elements, species, r, edge_index, energy.shape[0]
            )
        return energy

    @torch.jit.unused
    def _run_compiled(self, species, pos, cell, batch, edge_index, edge_shift, num_structures: int) -> Tensor:
        return self._compiled(species, pos, cell, batch, edge_index, edge_shift, num_structures)

    @torch.jit.unused
    def enable_compile(self, dynamic: bool = True):
        """Run :meth:`atom_energies` through ``torch.compile`` in Python (not in the
        TorchScript export). The first calls compile (seconds); about 2x faster afterwards on
        CPU. Returns ``self``."""
        with warnings.catch_warnings():  # torch.compile touches the deprecated torch.jit API
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
            self._compiled = torch.compile(self.atom_energies, dynamic=dynamic)
        return self

    @torch.jit.unused
    def disable_compile(self):
        self._compiled = None
        return self

    def __getstate__(self):  # compiled functions neither deepcopy nor pickle: drop them
        state = dict(self.__dict__)
        state["_compiled"] = None
        return state

    # -- core computation on plain tensors ---------------------------------------------
    def compute(
        self,
        numbers: Tensor,
        positions: Tensor,
        cell: Tensor,
        pbc: Tensor,
        batch: Tensor,
        edge_index: Tensor,
        edge_shift: Tensor,
        num_structures: int,
        compute_forces: bool = True,
        compute_stress: bool = False,
        compute_energies: bool = False,
    ) -> Dict[str, Tensor]:
        """Energy (B,) eV [float64], forces (N,3) eV/A, stress (B,6) eV/A^3 from tensors;
        with ``compute_energies`` also ``energies`` (N,) eV [float64], the per-atom terms
        whose sum over each structure is its energy.

        ``edge_index`` (2, E) holds ``(i, j)`` with ``r_ij = pos[j] - pos[i] + shift @ cell``.
        Pairs at or beyond the cutoff contribute exactly zero, so a list built with a
        larger radius (Verlet skin) gives the same result.
        """
        dtype = self.embedding.weight.dtype
        species = self.z_to_index.index_select(0, numbers)
        if bool((species < 0).any()):
            raise ValueError("student: structure contains an element the student was not trained on")
        positions = positions.to(dtype)
        cell = cell.to(dtype)
        edge_shift = edge_shift.to(dtype)
        if (compute_forces or compute_stress) and not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        grad_inputs: List[Tensor] = [positions]
        pos = positions
        strain = torch.zeros(num_structures, 3, 3, dtype=dtype, device=positions.device)
        if compute_stress:
            strain.requires_grad_(True)
            grad_inputs.append(strain)
            pos = pos + torch.bmm(pos.unsqueeze(1), strain.index_select(0, batch)).squeeze(1)
            cell = cell + torch.bmm(cell, strain)

        if not torch.jit.is_scripting() and self._compiled is not None:
            atom_energy = self._run_compiled(species, pos, cell, batch, edge_index, edge_shift, num_structures)
        else:
            atom_energy = self.atom_energies(species, pos, cell, batch, edge_index, edge_shift, num_structures)
        net_energy = torch.zeros(num_structures, dtype=dtype, device=pos.device).index_add(0, batch, atom_energy)
        atom_const = self.atom_energy_const.to(torch.float64).index_select(0, species)
        const = torch.zeros(num_structures, dtype=torch.float64, device=pos.device).index_add(0, batch, atom_const)
        out: Dict[str, Tensor] = {"energy": net_energy.to(torch.float64) + const}
        if compute_energies:
            out["energies"] = atom_energy.detach().to(torch.float64) + atom_const

        if compute_forces or compute_stress:
            grads = torch.autograd.grad(
                [net_energy.sum()], grad_inputs, create_graph=self.training, allow_unused=True
            )
            if compute_forces:
                g = grads[0]
                out["forces"] = -g if g is not None else torch.zeros_like(positions)
            if compute_stress:
                g = grads[1]
                virial = g if g is not None else torch.zeros_like(strain)
                volume = torch.abs(torch.linalg.det(cell.detach()))
                periodic = pbc.to(torch.bool).all(dim=1) & (volume > 1e-10)
                inv_vol = torch.where(
                    periodic, 1.0 / torch.where(periodic, volume, torch.ones_like(volume)), torch.zeros_like(volume)
                )
                m = virial * inv_vol.view(-1, 1, 1)
                m = 0.5 * (m + m.transpose(1, 2))
                out["stress"] = torch.stack(
                    [m[:, 0, 0], m[:, 1, 1], m[:, 2, 2], m[:, 1, 2], m[:, 0, 2], m[:, 0, 1]], dim=1
                )
        if not self.training:  # inference: hand back plain tensors, no graph kept alive
            for key in list(out.keys()):
                out[key] = out[key].detach()
        return out

    def forward(
        self,
        batch: Dict[str, Tensor],
        compute_forces: bool = True,
        compute_stress: bool = False,
        compute_energies: bool = False,
    ) -> Dict[str, Tensor]:
        """Run on a :func:`~mlff_distiller.data.graph.collate` batch dict (see module docstring).

        Forces and stress need autograd: in Python this method turns grad mode on for the
        call (so it also works under ``torch.no_grad()``); a TorchScript export must be
        called with grad mode on.
        """
        if not torch.jit.is_scripting() and (compute_forces or compute_stress) and not torch.is_grad_enabled():
            return self._compute_with_grad(batch, compute_forces, compute_stress, compute_energies)
        return self.compute(
            batch["numbers"],
            batch["positions"],
            batch["cell"],
            batch["pbc"],
            batch["batch"],
            batch["edge_index"],
            batch["edge_shift"],
            int(batch["n_atoms"].shape[0]),
            compute_forces,
            compute_stress,
            compute_energies,
        )

    @torch.jit.unused
    def _compute_with_grad(
        self, batch: Dict[str, Tensor], compute_forces: bool, compute_stress: bool, compute_energies: bool = False
    ):
        with torch.enable_grad():
            out = self.forward(batch, compute_forces, compute_stress, compute_energies)
        return {k: v.detach() for k, v in out.items()}


def build_student(config: StudentConfig | dict, stats: NormalizationStats) -> StudentModel:
    """A freshly initialised :class:`StudentModel` for ``config`` and the dataset's ``stats``."""
    if isinstance(config, dict):
        config = StudentConfig.from_dict(config)
    return StudentModel(config, stats)
