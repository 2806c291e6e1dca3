"""Student files: checkpoints (weights + config, no pickled code) and TorchScript exports.

A checkpoint is a plain dict written with ``torch.save`` and read with
``torch.load(..., weights_only=True)``, so opening one cannot run code::

    {"format": "mlff-distiller-student", "format_version": 2, "code_version": "0.1.0",
     "units": ..., "config": StudentConfig dict, "stats": NormalizationStats dict,
     "state_dict": {name: tensor}, "extra": {...} (trainer's own plain data)}

A TorchScript export (:func:`export_torchscript`) is a self-contained archive for
``torch.jit.load``: it runs without this package's Python model code, and carries its
metadata (cutoff in A, elements, config, units) in the extra file ``mlff_distiller.json``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict

import torch

from .. import __version__
from ..data.normalization import NormalizationStats
from ..errors import UserError
from ..fields import UNIT_SYSTEM
from ..fileio import atomic_path
from .config import StudentConfig
from .model import StudentModel

FORMAT = "mlff-distiller-student"
FORMAT_VERSION = 2  # 2: per-layer bias-free radial filters (1: one shared filter layer)
EXPORT_FORMAT = "mlff-distiller-student-torchscript"
EXPORT_META = "mlff_distiller.json"


class StudentFileError(UserError):
    """A student checkpoint or export is missing, corrupt, or of another format version."""


# -- checkpoints ----------------------------------------------------------------------------
def student_to_dict(model: StudentModel, extra: dict | None = None) -> dict:
    """The plain-data checkpoint dict of ``model`` (tensors on CPU)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "code_version": __version__,
        "units": UNIT_SYSTEM,
        "config": model.config.to_dict(),
        "stats": model.stats.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }


def _atomic_write(path: Path, write) -> None:
    """``write(tmp)`` a file, then rename it over ``path`` (mlff_distiller.fileio.atomic_path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        write(tmp)


def save_student(path, model: StudentModel, extra: dict | None = None) -> Path:
    """Write ``model`` as a plain-data checkpoint (atomic: a crash never leaves half a file)."""
    path = Path(path)
    data = student_to_dict(model, extra)
    _atomic_write(path, lambda p: torch.save(data, p))
    return path


def _resolve(path_or_run_dir) -> Path:
    path = Path(path_or_run_dir)
    if path.is_dir():
        best = path / "checkpoints" / "best.pt"
        if not best.is_file():
            raise StudentFileError(
                f"{path} is a directory without checkpoints/best.pt: give a training run directory "
                "or a student .pt file"
            )
        return best
    if not path.is_file():
        raise StudentFileError(f"student file {path} does not exist: give a run directory or a student .pt file")
    return path


def is_torchscript_file(path) -> bool:
    """True when ``path`` is a TorchScript archive (``torch.jit.save``), not a plain checkpoint."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def read_checkpoint(path_or_run_dir, map_location="cpu") -> dict:
    """The validated checkpoint dict (``weights_only=True``); for a run directory, its best.pt."""
    path = _resolve(path_or_run_dir)
    if is_torchscript_file(path):
        raise StudentFileError(
            f"{path} is a TorchScript export, not a checkpoint: load it with load_exported() or StudentCalculator"
        )
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling refused, truncated file, not a torch file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StudentFileError(
            f"cannot read student checkpoint {path} ({first[:160]}): the file is corrupt or not a student checkpoint"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StudentFileError(f"{path} is not an mlff-distiller student checkpoint (no '{FORMAT}' format tag)")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise StudentFileError(
            f"{path} has student format version {version} (written by mlff-distiller {data.get('code_version', '?')}); "
            f"this mlff-distiller {__version__} reads version {FORMAT_VERSION}: retrain, or load it with the "
            "matching version"
        )
    for key in ("config", "stats", "state_dict"):
        if key not in data:
            raise StudentFileError(f"{path} is missing '{key}': the checkpoint is incomplete; retrain or re-save it")
    return data


def student_from_dict(data: dict, where: str = "checkpoint") -> StudentModel:
    """Rebuild a :class:`StudentModel` from a checkpoint dict (see :func:`student_to_dict`)."""
    config = StudentConfig.from_dict(data["config"])
    stats = NormalizationStats.from_dict(data["stats"])
    model = StudentModel(config, stats)
    try:
        model.load_state_dict(data["state_dict"], strict=True)
    except RuntimeError as err:
        raise StudentFileError(
            f"{where}: weights do not match the stored config ({str(err).splitlines()[0][:160]}); the file is corrupt"
        ) from None
    return model.eval()


def load_student(path_or_run_dir, map_location="cpu") -> StudentModel:
    """Load a student (eval mode) from a checkpoint file or a run directory (its checkpoints/best.pt)."""
    data = read_checkpoint(path_or_run_dir, map_location="cpu")
    return student_from_dict(data, where=str(_resolve(path_or_run_dir))).to(map_location)


# -- TorchScript export --------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_jit():
    """torch 2.13 marks torch.jit as deprecated but it works; TorchScript is the export format on
    purpose (loadable without Python model code, also from C++ hosts)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        yield


def export_torchscript(model: StudentModel, path) -> Path:
    """Write ``model`` as a TorchScript archive that runs without this package.

    The scripted module's ``forward(batch: Dict[str, Tensor], compute_forces: bool = True,
    compute_stress: bool = False, compute_energies: bool = False)`` takes the collate batch
    dict (``numbers``, ``positions`` A, ``cell`` A, ``pbc``, ``batch``, ``n_atoms``,
    ``edge_index``, ``edge_shift``) and returns ``energy`` (B,) eV, ``forces`` (N,3) eV/A,
    ``stress`` (B,6) eV/A^3 (Voigt) and, when asked, ``energies`` (N,) eV per atom;
    ``compute(numbers, positions, cell, pbc, batch, edge_index, edge_shift, num_structures,
    compute_forces, compute_stress)`` takes the tensors directly. Call it with grad mode on.
    """
    if not isinstance(model, StudentModel):
        raise TypeError(f"export_torchscript needs a StudentModel, got {type(model).__name__}")
    path = Path(path)
    clone = copy.deepcopy(model).cpu().eval()
    with _quiet_jit():
        scripted = torch.jit.script(clone)
    meta = {
        "format": EXPORT_FORMAT,
        "format_version": FORMAT_VERSION,
        "code_version": __version__,
        "units": UNIT_SYSTEM,
        "cutoff": float(model.cutoff),
        "elements": [int(z) for z in model.elements],
        "dtype": model.config.dtype,
        "config": model.config.to_dict(),
        "stats": model.stats.to_dict(),
    }
    extra = {EXPORT_META: json.dumps(meta, indent=2, sort_keys=True)}
    with _quiet_jit():
        _atomic_write(path, lambda p: torch.jit.save(scripted, str(p), _extra_files=extra))
    return path


class ExportedStudent:
    """A loaded TorchScript export: callable like :class:`StudentModel` on a batch dict.

    Attributes: ``module`` (the ``torch.jit.ScriptModule``), ``meta`` (dict), ``cutoff`` (A),
    ``elements`` (list of Z).
    """

    def __init__(self, module, meta: Dict[str, Any]):
        self.module = module
        self.meta = meta
        self.cutoff = float(meta["cutoff"])
        self.elements = [int(z) for z in meta["elements"]]
        self.has_energies = "compute_energies" in str(module.forward.schema)

    def __call__(
        self, batch, compute_forces: bool = True, compute_stress: bool = False, compute_energies: bool = False
    ):
        args: tuple = (batch, compute_forces, compute_stress)
        if compute_energies:  # exports written before per-atom energies take three arguments
            if not self.has_energies:
                raise StudentFileError(
                    "this TorchScript export predates per-atom energies: re-export it with `mlff-distill export`"
                )
            args = args + (True,)
        with torch.enable_grad():
            out = self.module(*args)
        return {k: v.detach() for k, v in out.items()}

    def eval(self):
        self.module.eval()
        return self

    def parameters(self):
        """The scripted module's parameters (e.g. to count them)."""
        return self.module.parameters()

    @property
    def training(self) -> bool:
        return bool(self.module.training)


def load_exported(path, map_location="cpu") -> ExportedStudent:
    """Load a TorchScript export written by :func:`export_torchscript`."""
    path = Path(path)
    if not path.is_file():
        raise StudentFileError(
            f"exported student {path} does not exist: write one with `mlff-distill export RUN -o FILE`"
        )
    if not is_torchscript_file(path):
        raise StudentFileError(f"{path} is not a TorchScript export: use load_student() for a checkpoint")
    extra = {EXPORT_META: ""}
    try:
        with _quiet_jit():
            module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
    except Exception as err:
        raise StudentFileError(
            f"cannot load TorchScript file {path} ({str(err).splitlines()[0][:160]}): re-export it"
        ) from None
    try:
        meta = json.loads(extra[EXPORT_META])
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise StudentFileError(
            f"{path} is a TorchScript file without mlff-distiller metadata: export it with export_torchscript()"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise StudentFileError(
            f"{path} has export format version {meta.get('format_version')}; this mlff-distiller {__version__} "
            f"reads version {FORMAT_VERSION}: re-export it with this version"
        )
    return ExportedStudent(module.eval(), meta)


def load_any(path_or_model, map_location="cpu"):
    """A StudentModel (checkpoint/run dir) or an ExportedStudent (TorchScript file)."""
    if isinstance(path_or_model, (StudentModel, ExportedStudent)):
        return path_or_model
    path = _resolve(path_or_model)
    if is_torchscript_file(path):
        return load_exported(path, map_location=map_location)
    return load_student(path, map_location=map_location)
