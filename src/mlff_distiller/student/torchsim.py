"""torch-sim ``ModelInterface`` for the student: many systems in one batched call.

Needs the optional extra ``torchsim`` (``pip install 'mlff-distiller[torchsim]'``, package
``torch-sim-atomistic``)::

    import torch_sim as ts
    from mlff_distiller.student.torchsim import StudentTorchSimModel

    model = StudentTorchSimModel(RUN_DIR, device="cuda", compute_stress=True)
    state = ts.io.atoms_to_state(list_of_atoms, model.device, torch.float64)
    out = model(state)   # energy (B,) eV, forces (N, 3) eV/A, stress (B, 3, 3) eV/A^3

Units are torch-sim's metal units, the same as ASE's: eV, Angstrom, eV/A, eV/A^3; ``stress``
is ``(1/V) dE/d(strain)`` as a 3x3 matrix (ASE's sign), zero for non-periodic systems.

The neighbour list is built on the CPU with vesin (radius ``cutoff + skin``) and reused on the
device while no atom has moved more than ``skin / 2`` since the build and the cell, atoms and
periodicity are unchanged; atoms that torch-sim wraps back into the cell keep their pairs (the
integer lattice jump of each atom is folded into the pair shifts). Each call passes only pairs
inside the cutoff to the network, so reuse gives the same numbers as a rebuild.

Backends (as for :class:`~mlff_distiller.student.StudentCalculator`): ``"torch"`` runs all
systems of the state through the network in one batched call, on ``device`` (CPU or CUDA),
forces and stress by autograd; ``"numba"`` (CPU only) runs the compiled kernel of
:mod:`mlff_distiller.student.fast` once per system inside the same torch-sim call; ``"auto"``
picks numba on the CPU when it is installed, torch otherwise. On one CPU thread the network is
memory-bound already for one 64-atom cell, so batching gains little there and the numba kernel
is the faster path (``benchmarks/results/torchsim_md.md``); batching pays on a GPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..data.neighbors import neighbor_list
from ..errors import UserError
from .fast import HAVE_NUMBA, fast_student
from .io import ExportedStudent, load_any
from .model import StudentModel

try:
    import torch_sim as ts
    from torch_sim.models.interface import ModelInterface

    HAVE_TORCHSIM = True
except ImportError:  # the optional extra is not installed
    ts = None
    ModelInterface = torch.nn.Module
    HAVE_TORCHSIM = False

INSTALL_HINT = "install the optional extra: pip install 'mlff-distiller[torchsim]' (package torch-sim-atomistic)"
BACKENDS = ("auto", "numba", "torch")


class BatchedNeighborList:
    """Full neighbour lists of a batch of structures, reused with a Verlet skin (see the module
    docstring). ``__call__`` returns ``edge_index`` (2, E) into the batch and ``edge_shift``
    (E, 3) integer shifts (float, positions' dtype) of the pairs closer than ``cutoff``, with
    ``r_ij = pos[j] - pos[i] + edge_shift @ cell[system of i]`` (row-vector cells, A)."""

    def __init__(self, cutoff: float, skin: float = 0.5):
        if skin < 0:
            raise UserError(f"neighbour list skin must be >= 0 A, got {skin}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.builds = 0
        self._ref = None  # (positions, cell, pbc, system_idx, numbers, edge_index, shifts)

    def _stale(self, positions: Tensor, cell: Tensor, pbc: bool, system_idx: Tensor, numbers: Tensor) -> bool:
        ref = self._ref
        return (
            ref is None
            or self.skin == 0.0
            or ref["positions"].shape != positions.shape
            or ref["positions"].device != positions.device
            or ref["pbc"] != pbc
            or not torch.equal(ref["cell"], cell)
            or not torch.equal(ref["system_idx"], system_idx)
            or not torch.equal(ref["numbers"], numbers)
        )

    def _build(self, positions: Tensor, cell: Tensor, pbc: bool, system_idx: Tensor, numbers: Tensor) -> None:
        pos_np = positions.detach().cpu().to(torch.float64).numpy()
        cell_np = cell.detach().cpu().to(torch.float64).numpy()
        counts = torch.bincount(system_idx, minlength=cell.shape[0]).cpu().numpy()
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        index, shifts = [], []
        for b, (start, n) in enumerate(zip(starts, counts)):
            ei, es = neighbor_list(pos_np[start : start + n], cell_np[b], pbc, self.cutoff + self.skin)
            index.append(ei + start)
            shifts.append(es)
        device = positions.device
        self._ref = {
            "positions": positions.detach().clone(),
            "cell": cell.detach().clone(),
            "inv_cell": torch.linalg.inv(cell.detach()) if pbc else None,
            "pbc": pbc,
            "system_idx": system_idx.clone(),
            "numbers": numbers.clone(),
            "edge_index": torch.as_tensor(np.concatenate(index, axis=1), dtype=torch.long, device=device),
            "edge_shift": torch.as_tensor(np.concatenate(shifts), dtype=torch.long, device=device),
        }
        self.builds += 1

    def __call__(self, positions: Tensor, cell: Tensor, pbc: bool, system_idx: Tensor, numbers: Tensor):
        positions = positions.detach()
        if self._stale(positions, cell, pbc, system_idx, numbers):
            self._build(positions, cell, pbc, system_idx, numbers)
        ref = self._ref
        shifts = ref["edge_shift"]
        disp = positions - ref["positions"]
        if pbc:  # atoms wrapped back into the cell jumped by whole lattice vectors: undo that
            frac = torch.bmm(disp.unsqueeze(1), ref["inv_cell"].index_select(0, system_idx)).squeeze(1)
            jump = torch.round(frac)
            disp = disp - torch.bmm(jump.unsqueeze(1), cell.index_select(0, system_idx)).squeeze(1)
        if self.skin > 0.0 and float(torch.max(torch.sum(disp * disp, dim=1), dim=0).values) > (0.5 * self.skin) ** 2:
            self._build(positions, cell, pbc, system_idx, numbers)
            return self(positions, cell, pbc, system_idx, numbers)
        i, j = ref["edge_index"]
        if pbc:
            jump = jump.to(torch.long)
            shifts = shifts + jump.index_select(0, i) - jump.index_select(0, j)
        shift_f = shifts.to(positions.dtype)
        edge_cell = cell.index_select(0, system_idx.index_select(0, i))
        rvec = positions.index_select(0, j) - positions.index_select(0, i)
        rvec = rvec + torch.bmm(shift_f.unsqueeze(1), edge_cell).squeeze(1)
        keep = torch.sum(rvec * rvec, dim=1) < self.cutoff**2
        return ref["edge_index"][:, keep], shift_f[keep]


class StudentTorchSimModel(ModelInterface):
    """A trained student as a torch-sim model (see the module docstring).

    ``model``: a run directory, checkpoint, TorchScript export or :class:`StudentModel` (eval
    mode). ``device``: where the network runs (default: CUDA when available, else CPU).
    ``compute_forces`` / ``compute_stress``: what ``forward`` returns besides the energy.
    ``skin`` (A): Verlet skin of the reused neighbour list (0 rebuilds it every call).
    ``backend``: ``"auto"``, ``"torch"`` or ``"numba"`` (see the module docstring).
    """

    def __init__(
        self,
        model,
        device=None,
        compute_forces: bool = True,
        compute_stress: bool = False,
        skin: float = 0.5,
        backend: str = "auto",
    ):
        if not HAVE_TORCHSIM:
            raise UserError(f"StudentTorchSimModel needs torch-sim; {INSTALL_HINT}")
        if backend not in BACKENDS:
            raise UserError(f"StudentTorchSimModel: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        super().__init__()
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if backend == "auto":
            backend = "numba" if device.type == "cpu" and HAVE_NUMBA else "torch"
        if backend == "numba" and device.type != "cpu":
            raise UserError(
                f"StudentTorchSimModel: the numba backend runs on the CPU only, not {device}; use backend='torch'"
            )
        if backend == "numba" and not HAVE_NUMBA:
            raise UserError(
                "StudentTorchSimModel: backend='numba' needs numba: pip install numba, or use backend='torch'"
            )
        student = load_any(model, map_location=device)
        if isinstance(student, StudentModel):
            if student.training:
                raise UserError("StudentTorchSimModel: the model is in training mode; call model.eval() first")
            student = student.to(device)
            self._compute = student.compute
            dtype_name = student.config.dtype
        else:
            assert isinstance(student, ExportedStudent)
            self._compute = student.module.compute
            dtype_name = student.meta.get("dtype", "float32")
        self.student = student if isinstance(student, StudentModel) else student.module
        self._device = device
        self._dtype = torch.float64 if dtype_name == "float64" else torch.float32
        self._compute_forces = bool(compute_forces)
        self._compute_stress = bool(compute_stress)
        self._memory_scales_with = "n_atoms_x_density"
        self.cutoff = float(student.cutoff)
        self.elements = [int(z) for z in student.elements]
        self.neighbors = BatchedNeighborList(self.cutoff, skin)
        self.backend = backend
        self._fast = fast_student(student) if backend == "numba" else None

    def forward(self, state, **kwargs) -> dict[str, Tensor]:
        """``energy`` (B,) eV, ``forces`` (N, 3) eV/A, ``stress`` (B, 3, 3) eV/A^3 in the
        state's dtype, for a ``SimState`` or a state dict (positions, cell, pbc,
        atomic_numbers, system_idx; torch-sim's column-vector cell)."""
        if isinstance(state, dict):
            state = ts.SimState(**{"masses": torch.ones_like(state["positions"][:, 0]), **state})
        positions = state.positions.to(self._device)
        cell = state.row_vector_cell.to(self._device)
        system_idx = state.system_idx.to(self._device)
        numbers = state.atomic_numbers.to(self._device)
        pbc = bool(state.pbc)
        self._check_elements(numbers)
        edge_index, edge_shift = self.neighbors(positions, cell, pbc, system_idx, numbers)
        n_systems = int(cell.shape[0])
        if self._fast is not None:
            return self._forward_numba(state, positions, cell, pbc, system_idx, numbers, edge_index, edge_shift)
        pbc_rows = torch.full((n_systems, 3), pbc, dtype=torch.bool, device=self._device)
        with torch.enable_grad():
            out = self._compute(
                numbers, positions.detach(), cell, pbc_rows, system_idx, edge_index, edge_shift, n_systems,
                self._compute_forces, self._compute_stress,
            )
        dtype = state.positions.dtype
        results = {"energy": out["energy"].detach().to(dtype)}
        if self._compute_forces:
            results["forces"] = out["forces"].detach().to(dtype)
        if self._compute_stress:
            v = out["stress"].detach().to(dtype)  # Voigt xx yy zz yz xz xy
            results["stress"] = torch.stack(
                [v[:, 0], v[:, 5], v[:, 4], v[:, 5], v[:, 1], v[:, 3], v[:, 4], v[:, 3], v[:, 2]], dim=1
            ).reshape(-1, 3, 3)
        return results

    def _check_elements(self, numbers: Tensor) -> None:
        """UserError for atomic numbers the student was not trained on (checked when they change)."""
        checked = getattr(self, "_checked_numbers", None)
        if checked is not None and checked.shape == numbers.shape and torch.equal(checked, numbers):
            return
        unknown = sorted(set(numbers.cpu().tolist()) - set(self.elements))
        if unknown:
            raise UserError(
                f"StudentTorchSimModel: atomic numbers {unknown} are not among the student's elements "
                f"{self.elements}; train a student on data containing them"
            )
        self._checked_numbers = numbers.clone()

    def _forward_numba(self, state, positions, cell, pbc, system_idx, numbers, edge_index, edge_shift):
        """The numba kernel once per system (edges come grouped by system, in system order)."""
        pos = positions.detach().cpu().numpy().astype(np.float64, copy=False)
        cells = cell.detach().cpu().numpy().astype(np.float64, copy=False)
        nums = numbers.cpu().numpy()
        ei = edge_index.cpu().numpy()
        es = edge_shift.cpu().numpy()
        n_systems = cells.shape[0]
        owner = system_idx.cpu().numpy()
        atom_start = np.searchsorted(owner, np.arange(n_systems + 1))
        edge_start = np.searchsorted(owner[ei[0]], np.arange(n_systems + 1))
        energy = np.zeros(n_systems)
        forces = np.zeros_like(pos)
        stress = np.zeros((n_systems, 3, 3))
        for b in range(n_systems):
            a0, a1, e0, e1 = atom_start[b], atom_start[b + 1], edge_start[b], edge_start[b + 1]
            energy[b], forces[a0:a1], virial = self._fast(
                nums[a0:a1], pos[a0:a1], ei[:, e0:e1] - a0, es[e0:e1] @ cells[b]
            )
            volume = abs(np.linalg.det(cells[b]))
            if pbc and volume > 1e-10:
                stress[b] = 0.5 * (virial + virial.T) / volume
        dtype, device = state.positions.dtype, state.positions.device
        results = {"energy": torch.as_tensor(energy, dtype=dtype, device=device)}
        if self._compute_forces:
            results["forces"] = torch.as_tensor(forces, dtype=dtype, device=device)
        if self._compute_stress:
            results["stress"] = torch.as_tensor(stress, dtype=dtype, device=device)
        return results
