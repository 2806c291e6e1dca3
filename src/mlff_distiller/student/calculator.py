"""ASE calculator for a trained student (checkpoint, run directory, TorchScript export or model).

Properties: ``energy`` and ``free_energy`` (eV), ``forces`` (eV/A), ``energies`` (per-atom
energies in eV that sum to ``energy``; computed in the same call when asked for) and, for cells
periodic in all three directions only, ``stress`` (eV/A^3, Voigt ``xx yy zz yz xz xy``).

The neighbour list (vesin) is built with radius ``cutoff + skin`` and reused while no atom
has moved more than ``skin / 2`` since it was built and the cell, periodicity and atoms are
unchanged (Verlet skin); each step only the pairs inside the cutoff are passed to the model,
so a reused list gives the same forces as a fresh one.

Backends: ``"torch"`` runs the model (forces by autograd); ``"numba"`` runs
:mod:`mlff_distiller.student.fast`, the same network with a hand-derived backward pass
compiled by Numba (CPU only, equal to the torch model to float32 rounding, ~2-4x faster per
call on small systems); ``"auto"`` (default) picks numba on CPU when it is installed.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols

from ..data.neighbors import neighbor_list
from ..errors import UserError
from ..fields import matrix_to_voigt
from .fast import HAVE_NUMBA, fast_student
from .io import ExportedStudent, load_any
from .model import StudentModel

BACKENDS = ("auto", "numba", "torch")
# Two atoms closer than this (A) are refused: the model's pair terms are undefined at r = 0
# (NaN energy) and meaningless long before; no physical structure comes near it.
MIN_PAIR_DISTANCE = 0.01


class StudentCalculator(Calculator):
    """Drop-in ASE calculator running a student.

    ``model``: a run directory (uses ``checkpoints/best.pt``), a checkpoint ``.pt`` written by
    :func:`~mlff_distiller.student.save_student`, a TorchScript file written by
    :func:`~mlff_distiller.student.export_torchscript`, or a :class:`StudentModel` in eval mode.
    ``device``: torch device string. ``skin`` (A): Verlet skin of the reused neighbour list
    (0 rebuilds it at every call). ``compile``: run a Python model through ``torch.compile``
    (a private copy; the first calls take minutes on a busy CPU, later calls were ~1.7x faster
    on a 192-atom water box here and about equal on 64-atom Si; ignored for TorchScript files;
    implies the torch backend). ``backend``: ``"auto"``, ``"numba"`` or ``"torch"`` (see the
    module docstring); the numba kernel compiles on its first call (~15 s, then cached on disk).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self, model, device: str = "cpu", skin: float = 0.5, compile: bool = False, backend: str = "auto", **kwargs
    ):
        super().__init__(**kwargs)
        if skin < 0:
            raise UserError(f"StudentCalculator: skin must be >= 0 A, got {skin}")
        if backend not in BACKENDS:
            raise UserError(f"StudentCalculator: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.device = torch.device(device)
        self.model = load_any(model, map_location=self.device)
        if isinstance(self.model, StudentModel):
            if self.model.training:
                raise UserError("StudentCalculator: the model is in training mode; call model.eval() first")
            param = next(self.model.parameters())
            if param.device != self.device:
                raise UserError(
                    f"StudentCalculator: the model is on {param.device}, not {self.device}; move it or pass device="
                )
            self.dtype = param.dtype
            if compile:
                self.model = copy.deepcopy(self.model).enable_compile()
        else:
            assert isinstance(self.model, ExportedStudent)
            self.dtype = torch.float64 if self.model.meta.get("dtype") == "float64" else torch.float32
        self.backend = self._pick_backend(backend, compile)
        self._fast = fast_student(self.model) if self.backend == "numba" else None
        self.cutoff = float(self.model.cutoff)
        self.elements = [int(z) for z in self.model.elements]
        self.skin = float(skin)
        self._known = np.zeros(119, dtype=bool)
        self._known[self.elements] = True
        self._nl = None  # cached neighbour list (see _neighbors)
        self.neighbor_list_builds = 0

    def _pick_backend(self, backend: str, compile: bool) -> str:
        if backend == "torch" or (backend == "auto" and (compile or self.device.type != "cpu" or not HAVE_NUMBA)):
            return "torch"
        if self.device.type != "cpu":
            raise UserError(
                f"StudentCalculator: the numba backend runs on the CPU only, not {self.device}; use backend='torch'"
            )
        if compile:
            raise UserError(
                "StudentCalculator: compile=True needs backend='torch' (the numba kernel is compiled already)"
            )
        if not HAVE_NUMBA:
            raise UserError("StudentCalculator: backend='numba' needs numba: pip install numba, or use backend='torch'")
        return "numba"

    # -- neighbour list with Verlet skin -----------------------------------------------------
    def _neighbors(self, atoms):
        positions = atoms.positions
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        nl = self._nl
        rebuild = (
            nl is None
            or self.skin == 0.0
            or nl["positions"].shape != positions.shape
            or not np.array_equal(nl["numbers"], atoms.numbers)
            or not np.array_equal(nl["pbc"], pbc)
            or not np.array_equal(nl["cell"], cell)
        )
        if not rebuild:
            disp2 = np.max(np.sum((positions - nl["positions"]) ** 2, axis=1), initial=0.0)
            rebuild = disp2 > (0.5 * self.skin) ** 2
        if rebuild:
            edge_index, edge_shift = neighbor_list(positions, cell, pbc, self.cutoff + self.skin)
            nl = {
                "positions": positions.copy(),
                "numbers": atoms.numbers.copy(),
                "pbc": pbc.copy(),
                "cell": cell.copy(),
                "edge_index": edge_index,
                "edge_shift": edge_shift,
                "shift_vec": edge_shift @ cell,
            }
            self._nl = nl
            self.neighbor_list_builds += 1
        edge_index, edge_shift, shift_vec = nl["edge_index"], nl["edge_shift"], nl["shift_vec"]
        if edge_index.shape[1]:
            i, j = edge_index
            rvec = positions[j] - positions[i] + shift_vec
            d2 = np.einsum("ij,ij->i", rvec, rvec)
            if d2.min() < MIN_PAIR_DISTANCE**2:  # the distances are at hand: one reduction per call
                self._refuse_close_pair(atoms, edge_index, d2)
            if self.skin > 0.0:
                keep = d2 < self.cutoff**2
                edge_index, edge_shift, shift_vec = edge_index[:, keep], edge_shift[keep], shift_vec[keep]
        return edge_index, edge_shift, shift_vec, cell, pbc

    @staticmethod
    def _refuse_close_pair(atoms, edge_index, d2):
        k = int(np.argmin(d2))
        i, j = sorted((int(edge_index[0, k]), int(edge_index[1, k])))
        sym = atoms.get_chemical_symbols()
        image = "" if i != j else " (with its own periodic image)"
        raise UserError(
            f"StudentCalculator: atoms {i} ({sym[i]}) and {j} ({sym[j]}){image} are {np.sqrt(d2[k]):.3g} A apart, "
            f"closer than {MIN_PAIR_DISTANCE} A; the energy is undefined there: fix the structure (or the MD step)"
        )

    @staticmethod
    def _check_finite(atoms) -> None:
        positions = atoms.positions
        if not np.isfinite(positions).all():
            k = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
            raise UserError(
                f"StudentCalculator: atom {k} ({atoms.get_chemical_symbols()[k]}) has a non-finite position "
                f"{positions[k].tolist()}; fix the structure (an MD run that blew up gives this)"
            )
        if not np.isfinite(atoms.cell.array).all():
            raise UserError("StudentCalculator: the cell has NaN/inf entries; fix the structure's cell")

    # -- ASE entry points ---------------------------------------------------------------------
    def check_state(self, atoms, tol=1e-15):
        """What changed since the last calculation, as ASE's ``check_state`` but with exact
        array comparisons: ASE's ``compare_atoms`` runs ``np.isclose`` over every array, which
        cost ~6 % of a 21-atom MD step here. Energy depends on positions, numbers, cell and
        pbc; initial charges and magnetic moments are compared too (the student ignores them,
        but another calculator swapped in would not)."""
        old = self.atoms
        if old is None:
            return list(all_changes)
        changes = []
        if not np.array_equal(old.positions, atoms.positions):
            changes.append("positions")
        if not np.array_equal(old.numbers, atoms.numbers):
            changes.append("numbers")
        if not np.array_equal(old.cell.array, atoms.cell.array):
            changes.append("cell")
        if not np.array_equal(old.pbc, atoms.pbc):
            changes.append("pbc")
        for name in ("initial_charges", "initial_magmoms"):
            a, b = old.arrays.get(name), atoms.arrays.get(name)
            if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
                changes.append(name)
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        numbers = atoms.numbers
        known = (numbers > 0) & (numbers < 119) & self._known[np.clip(numbers, 0, 118)]
        if not known.all():
            unknown = sorted({int(z) for z in numbers[~known]})
            names = ", ".join(f"{chemical_symbols[z] if 0 <= z < 119 else '?'} (Z={z})" for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in self.elements)
            raise UserError(
                f"StudentCalculator: element {names} is not among the student's elements ({known}); "
                "train a student on data containing it"
            )
        self._check_finite(atoms)
        want_stress = "stress" in properties
        if want_stress and not atoms.pbc.all():
            raise PropertyNotImplementedError("stress is only defined for cells periodic in all three directions")
        want_energies = "energies" in properties
        edge_index, edge_shift, shift_vec, cell, pbc = self._neighbors(atoms)
        energy, forces, stress, energies = self._evaluate(
            atoms, edge_index, edge_shift, shift_vec, cell, pbc, want_stress, want_energies
        )
        if not (np.isfinite(energy) and np.isfinite(forces).all()):  # never hand NaN to MD
            raise UserError(
                f"StudentCalculator: the student gave a non-finite energy/forces ({energy}) for this {len(atoms)}-atom "
                "structure; check it for overlapping atoms or values far outside the training data"
            )
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = forces
        if want_stress:
            self.results["stress"] = stress
        if want_energies:
            self.results["energies"] = energies

    def _evaluate(self, atoms, edge_index, edge_shift, shift_vec, cell, pbc, want_stress, want_energies):
        """(energy eV, forces eV/A, Voigt stress eV/A^3 or None, per-atom energies eV or None)
        from the chosen backend."""
        numbers = atoms.numbers
        if self._fast is not None:
            energy, forces, virial, *per_atom = self._fast(
                numbers, atoms.positions, edge_index, shift_vec, per_atom=want_energies
            )
            stress = matrix_to_voigt(virial / abs(np.linalg.det(cell))) if want_stress else None
            return energy, forces, stress, (per_atom[0] if want_energies else None)
        dev, dt = self.device, self.dtype
        batch = {
            "numbers": torch.as_tensor(numbers, dtype=torch.long, device=dev),
            "positions": torch.as_tensor(atoms.positions, dtype=dt, device=dev),
            "cell": torch.as_tensor(cell, dtype=dt, device=dev).unsqueeze(0),
            "pbc": torch.as_tensor(pbc, device=dev).unsqueeze(0),
            "batch": torch.zeros(len(atoms), dtype=torch.long, device=dev),
            "ptr": torch.tensor([0, len(atoms)], dtype=torch.long, device=dev),
            "n_atoms": torch.tensor([len(atoms)], dtype=torch.long, device=dev),
            "edge_index": torch.as_tensor(edge_index, dtype=torch.long, device=dev),
            "edge_shift": torch.as_tensor(edge_shift, dtype=dt, device=dev),
        }
        out = self.model(batch, compute_forces=True, compute_stress=want_stress, compute_energies=want_energies)
        energy = float(out["energy"].detach()[0])
        forces = out["forces"].detach().to(torch.float64).cpu().numpy()
        stress = out["stress"].detach().to(torch.float64).cpu().numpy()[0] if want_stress else None
        energies = out["energies"].detach().to(torch.float64).cpu().numpy() if want_energies else None
        return energy, forces, stress, energies
