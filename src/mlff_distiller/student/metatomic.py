"""Export a student as a metatomic atomistic model (LAMMPS ``pair_style metatomic``, i-PI,
ASE's ``MetatomicCalculator``, torch-sim through ``metatomic-torchsim``).

Needs the optional extra ``metatomic`` (``pip install 'mlff-distiller[metatomic]'``, package
``metatomic-torch``); the written file needs only ``metatomic-torch`` (and torch) to load, not
this package.

What the file declares (its ``ModelCapabilities``):

* one output, ``energy`` in eV, per structure or per atom (``sample_kind="atom"``: the
  engine may ask for either); forces and stress are left to the engine, which takes them by
  autograd of the energy with respect to positions and cell (conservative). No
  non-conservative forces or stress are declared;
* ``length_unit`` Angstrom, the student's elements as ``atomic_types`` (types are atomic
  numbers), its float dtype (``float32`` or ``float64``) and devices ``cuda`` then ``cpu``;
* one neighbour list request: a **full** list (each pair as ``i, j`` and ``j, i``) with the
  student's cutoff, ``strict`` (pairs inside the cutoff only);
* ``interaction_range`` = ``num_layers * cutoff``: a message-passing network sees that far,
  so domain-decomposed engines (LAMMPS) must keep ghost atoms that deep.

The model uses the engine's pair vectors (``r_ij`` of the neighbour list, connected to
positions and cell by the engine's autograd), so forces on ghost atoms and the virial come
out right in LAMMPS. ``selected_atoms`` (LAMMPS: the local atoms) restricts the energy to the
atoms it names; the per-atom energies include the per-element reference energies and sum to
the structure's energy.
"""

# no `from __future__ import annotations`: metatomic and TorchScript read the real annotations

import copy
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor

from ..errors import UserError

try:
    from metatensor.torch import Labels, TensorBlock, TensorMap
    from metatomic.torch import (
        AtomisticModel,
        ModelCapabilities,
        ModelMetadata,
        ModelOutput,
        NeighborListOptions,
        System,
    )

    HAVE_METATOMIC = True
except ImportError:  # the optional extra is not installed
    HAVE_METATOMIC = False

from .model import StudentModel

LENGTH_UNIT = "angstrom"
ENERGY_UNIT = "eV"
INSTALL_HINT = "install the optional extra: pip install 'mlff-distiller[metatomic]' (package metatomic-torch)"


def _require_metatomic() -> None:
    if not HAVE_METATOMIC:
        raise UserError(f"metatomic export needs the metatomic-torch package; {INSTALL_HINT}")


if HAVE_METATOMIC:

    class MetatomicStudent(torch.nn.Module):
        """A :class:`StudentModel` behind metatomic's ``ModelInterface`` (TorchScript-able).

        ``forward(systems, outputs, selected_atoms)`` returns ``{"energy": TensorMap}`` with
        one block: samples ``system`` (global) or ``system, atom`` (per atom), one property,
        values in eV in the systems' dtype. Other requested outputs are not computed.
        """

        def __init__(self, student: StudentModel):
            super().__init__()
            self.student = student
            self.nl_options = NeighborListOptions(cutoff=float(student.cutoff), full_list=True, strict=True)

        def requested_neighbor_lists(self) -> List[NeighborListOptions]:
            return [self.nl_options]

        def forward(
            self, systems: List[System], outputs: Dict[str, ModelOutput], selected_atoms: Optional[Labels]
        ) -> Dict[str, TensorMap]:
            result: Dict[str, TensorMap] = {}
            if "energy" not in outputs or len(systems) == 0:
                return result
            device = systems[0].positions.device
            out_dtype = systems[0].positions.dtype
            dtype = self.student.embedding.weight.dtype

            types: List[Tensor] = []
            rvecs: List[Tensor] = []
            pairs: List[Tensor] = []
            owners: List[Tensor] = []
            starts: List[int] = []
            offset = 0
            for k, system in enumerate(systems):
                n = system.types.shape[0]
                neighbors = system.get_neighbor_list(self.nl_options)
                pairs.append(neighbors.samples.values[:, :2].to(torch.long).T + offset)
                rvecs.append(neighbors.values.reshape(-1, 3))
                types.append(system.types.to(torch.long))
                owners.append(torch.full((n,), k, dtype=torch.long, device=device))
                starts.append(offset)
                offset += n
            numbers = torch.cat(types)
            species = self.student.z_to_index.index_select(0, numbers)
            if bool((species < 0).any()):
                raise ValueError(
                    "mlff-distiller student: a system contains an atomic type the student was not trained on"
                )
            net = self.student.energies_from_vectors(species, torch.cat(rvecs).to(dtype), torch.cat(pairs, dim=1))
            atom_energy = net.to(torch.float64) + self.student.atom_energy_const.to(torch.float64).index_select(
                0, species
            )
            owner = torch.cat(owners)
            atom_index = torch.arange(offset, device=device) - torch.tensor(starts, device=device).index_select(
                0, owner
            )
            if selected_atoms is not None:
                sel_system = selected_atoms.column("system").to(torch.long)
                sel_atom = selected_atoms.column("atom").to(torch.long)
                rows = torch.tensor(starts, device=device).index_select(0, sel_system) + sel_atom
                atom_energy = atom_energy.index_select(0, rows)
                owner = sel_system
                atom_index = sel_atom

            properties = Labels(["energy"], torch.zeros(1, 1, dtype=torch.int32, device=device))
            if outputs["energy"].sample_kind == "atom":
                samples = Labels(["system", "atom"], torch.stack([owner, atom_index], dim=1).to(torch.int32))
                values = atom_energy.reshape(-1, 1)
            else:
                samples = Labels(
                    ["system"], torch.arange(len(systems), dtype=torch.int32, device=device).reshape(-1, 1)
                )
                values = torch.zeros(len(systems), dtype=torch.float64, device=device).index_add(0, owner, atom_energy)
                values = values.reshape(-1, 1)
            block = TensorBlock(
                values=values.to(out_dtype),
                samples=samples,
                components=torch.jit.annotate(List[Labels], []),
                properties=properties,
            )
            keys = Labels(["_"], torch.zeros(1, 1, dtype=torch.int32, device=device))
            result["energy"] = TensorMap(keys, [block])
            return result


def metatomic_capabilities(model: StudentModel):
    """The ``ModelCapabilities`` of an exported ``model`` (see the module docstring)."""
    _require_metatomic()
    description = (
        "energy of the distilled student (eV); forces and stress by the engine's autograd (conservative); "
        "per-atom energies include the per-element reference energies"
    )
    return ModelCapabilities(
        outputs={"energy": ModelOutput(quantity="", unit=ENERGY_UNIT, sample_kind="atom", description=description)},
        atomic_types=[int(z) for z in model.elements],
        interaction_range=float(model.num_layers * model.cutoff),
        length_unit=LENGTH_UNIT,
        supported_devices=["cuda", "cpu"],
        dtype=model.config.dtype,
    )


def to_metatomic(model: StudentModel):
    """``model`` (a private copy, on CPU, eval mode) wrapped as a metatomic ``AtomisticModel``."""
    _require_metatomic()
    if not isinstance(model, StudentModel):
        raise TypeError(f"to_metatomic needs a StudentModel, got {type(model).__name__}")
    from .. import __version__

    clone = copy.deepcopy(model).cpu().eval()
    config = model.config
    metadata = ModelMetadata(
        name="mlff-distiller student",
        description=(
            f"PaiNN-class student distilled with mlff-distiller {__version__}: {config.num_features} features, "
            f"{config.num_layers} layers, cutoff {float(model.cutoff):g} A, {config.dtype}"
        ),
    )
    return AtomisticModel(MetatomicStudent(clone).eval(), metadata, metatomic_capabilities(model))


def export_metatomic(model: StudentModel, path) -> Path:
    """Write ``model`` as a metatomic model file (TorchScript archive; atomic write).

    Load it with ``metatomic.torch.load_atomistic_model(path)``, ``metatomic_ase.MetatomicCalculator(path)``,
    LAMMPS ``pair_style metatomic path`` or i-PI's ``-m metatomic`` driver (see docs/student.md).
    """
    from .io import _atomic_write, _quiet_jit

    atomistic = to_metatomic(model)
    path = Path(path)
    with _quiet_jit():
        _atomic_write(path, lambda p: atomistic.save(str(p)))
    return path
