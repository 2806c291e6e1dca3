"""CHGNet: the default, offline teacher (weights ship inside the ``chgnet`` wheel).

Spec: ``{"name": "chgnet", "model": "0.3.0", "weights_path": null, "device": "cpu",
"batch_size": null}``. ``model`` names a checkpoint shipped in the package (``0.3.0`` the
MPtrj model, ``0.2.0``, ``r2scan``); ``weights_path`` loads a CHGNet ``.pth.tar`` file
instead.

Molecules: CHGNet only handles periodic crystals (a structure without a cell fails with a
singular matrix). A structure with no periodic direction is therefore placed, centred, in
an orthorhombic box whose edges are its extent plus ``2 * (cutoff + 1 A)`` (cutoff =
CHGNet's atom-graph cutoff, 6 A), with pbc on. No atom then sees any periodic image of
any atom, so the energy and forces are those of the isolated molecule; no stress is
reported for it. Partly periodic structures (slabs, wires) are refused with a reason.

Batching: several structures are converted to CHGNet graphs one by one (a structure
whose conversion fails is isolated) and evaluated in one forward pass. ``batch_size``
defaults to 1 on CPU (batching measured no faster there) and 8 on other devices.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import warnings

import numpy as np
from ase import Atoms, units

from ..errors import ConfigError, TeacherError
from .base import LabelResult, Teacher, is_3d_periodic, package_version, sha256_file

CHGNET_ELEMENTS = tuple(range(1, 95))  # CHGNet's atom embedding covers H..Pu
BOX_MARGIN = 1.0  # A, added on top of the cutoff on each side of a boxed molecule


def packaged_chgnet_weights(model: str) -> str | None:
    """Path of the checkpoint for ``model`` inside the installed chgnet package, or None."""
    try:
        import chgnet
    except ImportError:
        return None
    root = os.path.join(os.path.dirname(chgnet.__file__), "pretrained", model)
    hits = sorted(glob.glob(os.path.join(root, "*.pth.tar")))
    return hits[0] if hits else None


def box_molecule(atoms: Atoms, cutoff: float) -> Atoms:
    """Copy of a non-periodic structure centred in a box with no image within ``cutoff``."""
    boxed = atoms.copy()
    boxed.calc = None
    pos = boxed.positions
    extent = pos.max(axis=0) - pos.min(axis=0)
    edges = extent + 2.0 * (cutoff + BOX_MARGIN)
    boxed.set_cell(np.diag(edges))
    boxed.positions = pos - pos.min(axis=0) + (cutoff + BOX_MARGIN)
    boxed.pbc = True
    return boxed


class CHGNetTeacher(Teacher):
    OPTIONS = {"model": "0.3.0", "weights_path": None, "device": "cpu", "batch_size": None}
    can_batch = True

    @property
    def default_batch_size(self) -> int:
        # measured here (benchmarks/results/teachers.md): on CPU a CHGNet batch is no faster
        # per structure than one at a time (slower for crystals), so batch only on accelerators
        return 1 if self._spec["device"] == "cpu" else 8

    def __init__(self, spec: dict):
        super().__init__(spec)
        try:
            from chgnet.model import CHGNet
        except ImportError as err:
            raise TeacherError(
                f"teacher 'chgnet' needs the chgnet package ({err}); install it: pip install chgnet"
            ) from None
        wpath = self._spec["weights_path"]
        model_name = self._spec["model"]
        if wpath is not None:
            if not os.path.isfile(wpath):
                raise TeacherError(
                    f"teacher 'chgnet': weights_path '{wpath}' does not exist; give a CHGNet .pth.tar file "
                    f"or drop weights_path to use the packaged {model_name} model"
                )
            self._weights_file = os.path.abspath(wpath)
        else:
            self._weights_file = packaged_chgnet_weights(model_name)
            if self._weights_file is None:
                raise ConfigError(
                    f"teacher.model: CHGNet model '{model_name}' is not shipped with the installed chgnet; "
                    f"use 0.3.0, 0.2.0 or r2scan, or pass weights_path"
                )
        device = self._spec["device"]
        with contextlib.redirect_stdout(io.StringIO()):  # CHGNet prints on load
            if wpath is not None:
                model = CHGNet.from_file(self._weights_file)
            else:
                model = CHGNet.load(model_name=model_name, use_device=device, verbose=False)
        self._model = model.to(device).eval()
        self._model.graph_converter.set_isolated_atom_response("ignore")
        self._cutoff = float(getattr(self._model.graph_converter, "atom_graph_cutoff", 6.0))
        self._device = device
        self._one_backward = one_backward_supported(self._model)

    @property
    def elements(self):
        return frozenset(CHGNET_ELEMENTS)

    @property
    def capabilities(self) -> dict:
        caps = super().capabilities
        caps.update(conservative_forces=True, device=self._device, dtype="float32")
        return caps

    def result_options(self):
        return ("model",)

    def _fingerprint_parts(self) -> dict:
        fp = {
            "package": "chgnet",
            "version": package_version("chgnet"),
            "model": self._spec["model"] if self._spec["weights_path"] is None else "custom",
            "weights_sha256": sha256_file(self._weights_file),
        }
        if self._spec["weights_path"] is not None:
            fp["file"] = os.path.basename(self._weights_file)
        return fp

    def _precheck(self, atoms: Atoms):
        reason = super()._precheck(atoms)
        if reason is None and any(atoms.pbc) and not all(atoms.pbc):
            reason = (
                "teacher 'chgnet' handles molecules (no pbc) and 3-D periodic cells, not partly periodic structures"
            )
        return reason

    def _graph(self, atoms: Atoms):
        from pymatgen.io.ase import AseAtomsAdaptor

        if is_3d_periodic(atoms):
            work = atoms.copy()
            work.calc = None
        else:
            work = box_molecule(atoms, self._cutoff)
        work.set_constraint()  # constraints do not change the energy; pymatgen warns on FixCom etc.
        structure = AseAtomsAdaptor.get_structure(work)
        return self._model.graph_converter(structure)

    def _predict(self, graphs) -> list[dict]:
        with warnings.catch_warnings():  # chgnet's own "tensor with requires_grad to scalar"
            warnings.simplefilter("ignore", UserWarning)
            if self._one_backward:
                return _energy_forces_stress(self._model, graphs)
            preds = self._model.predict_graph(graphs, task="efs", batch_size=len(graphs))
        return [preds] if isinstance(preds, dict) else list(preds)

    def _to_result(self, atoms: Atoms, pred: dict):
        n = len(atoms)
        energy = float(pred["e"]) * (n if self._model.is_intensive else 1)
        stress = np.asarray(pred["s"], dtype=np.float64) * units.GPa if is_3d_periodic(atoms) else None
        return energy, pred["f"], stress

    def _label_one(self, atoms: Atoms):
        return self._to_result(atoms, self._predict([self._graph(atoms)])[0])

    def _label_batch(self, atoms_list):
        out: list = [None] * len(atoms_list)
        graphs, where = [], []
        for k, atoms in enumerate(atoms_list):
            try:
                graphs.append(self._graph(atoms))
                where.append(k)
            except Exception as err:  # noqa: BLE001 - isolate the failing structure
                out[k] = LabelResult.failure(f"{type(err).__name__}: {err}")
        if graphs:
            for k, pred in zip(where, self._predict(graphs)):
                out[k] = self._to_result(atoms_list[k], pred)
        return out


#: chgnet releases whose internals :func:`_energy_forces_stress` was checked against (the
#: package's own ``predict_graph``: tests/test_teachers_core.py); 0.4.2 is the one installed here
ONE_BACKWARD_VERSIONS = ("0.4.",)


def one_backward_supported(model) -> bool:
    """Whether :func:`_energy_forces_stress` may stand in for ``model.predict_graph`` (a chgnet
    release it was checked on, with the internals it uses); otherwise the teacher calls
    ``predict_graph``."""
    version = package_version("chgnet") or ""
    return (version.startswith(ONE_BACKWARD_VERSIONS) and hasattr(model, "_compute")
            and hasattr(model, "bond_basis_expansion") and hasattr(model, "angle_basis_expansion"))


def _energy_forces_stress(model, graphs) -> list[dict]:
    """CHGNet's energy, forces and stress for ``graphs``, as ``model.predict_graph(graphs,
    task="efs")`` gives them (``e`` eV/atom for an intensive model, ``f`` eV/A, ``s`` GPa), from
    one backward pass.

    chgnet's forward (0.4.2) takes the forces and then the stress from two separate
    ``autograd.grad`` calls, each with ``create_graph=True`` (kept for training on forces);
    for labels one pass over the graph for both, without a graph of the gradients, gives the
    same numbers (to float32 rounding: forces within 1e-5 of the largest force, stress within
    1e-4 GPa) in less time (benchmarks/results/chgnet_one_backward.md).
    """
    import torch
    from chgnet.model.model import BatchedGraph

    device = next(model.parameters()).device
    graphs = [g.to(device) for g in graphs]
    batched = BatchedGraph.from_graphs(graphs, bond_basis_expansion=model.bond_basis_expansion,
                                       angle_basis_expansion=model.angle_basis_expansion, compute_stress=True)
    pred = model._compute(batched, compute_force=False, compute_stress=False)
    energy = pred["e"]  # per atom for an intensive model: the total is what the positions move
    n_atoms = torch.tensor([len(p) for p in batched.atom_positions], dtype=energy.dtype, device=energy.device)
    total = energy * n_atoms if model.is_intensive else energy
    grads = torch.autograd.grad(total.sum(), [*batched.atom_positions, *batched.strains])
    n = len(graphs)
    if model.composition_model is not None:
        energy = energy + model.composition_model(graphs)
    gpa = 160.21766208  # eV/A^3 -> GPa, as chgnet converts
    return [{"e": energy[k].detach().cpu().numpy(), "f": (-grads[k]).detach().cpu().numpy(),
             "s": (grads[n + k] * (gpa / batched.volumes[k])).detach().cpu().numpy()} for k in range(n)]
