"""Orb (package ``orb-models``) as a teacher: orb-v2 and the orb-v3 family.

Spec: ``{"name": "orb", "model": "orb-v2", "weights_path": "/path/orb-v2-20241011.ckpt",
"device": "cpu", "precision": "float32-high", "compile": false, "batch_size": 8}``.

* ``model`` is any key of the installed package's ``pretrained.ORB_PRETRAINED_MODELS``
  (``orb-v2``, ``orb-d3-v2``, ``orb-d3-sm-v2``, ``orb-d3-xs-v2``, ``orb-v3-conservative-inf-omat``,
  ...). The package's own loader builds the architecture and loads the state dict.
* ``weights_path`` is a local checkpoint (a state dict). Without it the loader's own URL
  is tried (cached by ``cached_path``); when the network is unreachable the teacher
  fails with a one-line error naming the file to download and pass as ``weights_path``.
* ``compile`` defaults to false: ``torch.compile`` costs ~20 s on CPU for ~5-10 %.
* Orb's loader sets torch's global default dtype and float32 matmul precision. The
  teacher restores both after loading and sets the model's values only while it runs
  (then restores them again), so the caller's torch state is never changed.
* Batching: structures are converted with orb's own featuriser (``ase_atoms_to_atom_graphs``
  in 0.5.x, ``atoms_adapter.from_ase_atoms`` in 0.6+) and concatenated with orb's
  ``batch_graphs`` into one forward pass.
* API differences are detected by feature, not by version string: a loader that returns
  ``(model, adapter)`` (0.6+) or a bare model (0.5.x). Only 0.5.5 is tested here.

Orb-v2 predicts forces and stress directly (not as energy gradients), so its forces are
not conservative; orb-v3 ``conservative`` models differentiate the energy.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import socket
import warnings
from urllib.parse import urlparse

import numpy as np
from ase import Atoms

from ..errors import ConfigError, TeacherError
from .base import Teacher, package_version, sha256_file

ORB_ELEMENTS = tuple(range(1, 119))  # orb embeds Z = 1..118


@contextlib.contextmanager
def torch_global_state(dtype=None, matmul_precision=None):
    """Run a block with the given torch default dtype / matmul precision, then restore both."""
    import torch

    old_dtype = torch.get_default_dtype()
    old_prec = torch.get_float32_matmul_precision()
    try:
        if dtype is not None:
            torch.set_default_dtype(dtype)
        if matmul_precision is not None:
            torch.set_float32_matmul_precision(matmul_precision)
        yield
    finally:
        torch.set_default_dtype(old_dtype)
        torch.set_float32_matmul_precision(old_prec)


def _url_reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https", "s3", "gs"):
        return True  # a local path or a scheme we do not probe
    host = parsed.hostname
    if not host:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _orb_loaders() -> dict:
    from orb_models.forcefield import pretrained

    return dict(getattr(pretrained, "ORB_PRETRAINED_MODELS", {}))


class OrbTeacher(Teacher):
    OPTIONS = {
        "model": "orb-v2",
        "weights_path": None,
        "device": "cpu",
        "precision": "float32-high",
        "compile": False,
        "batch_size": 8,
    }
    can_batch = True
    default_batch_size = 8
    PRECISIONS = ("float32-high", "float32-highest", "float64")

    @classmethod
    def availability_note(cls) -> str | None:
        return (
            "needs weights_path: a local orb checkpoint such as orb-v2-20241011.ckpt "
            "(or network access to orb's model bucket)"
        )

    def __init__(self, spec: dict):
        super().__init__(spec)
        try:
            import torch  # noqa: F401
            from orb_models.forcefield import pretrained  # noqa: F401
        except ImportError as err:
            raise TeacherError(
                f"teacher 'orb' needs orb-models ({err}); install it: pip install 'mlff-distiller[orb]'"
            ) from None
        s = self._spec
        loaders = _orb_loaders()
        if s["model"] not in loaders:
            raise ConfigError(
                f"teacher.model: '{s['model']}' is not an orb model of the installed orb-models "
                f"{package_version('orb-models')}; known: {', '.join(sorted(loaders))}"
            )
        if s["precision"] not in self.PRECISIONS:
            raise ConfigError(f"teacher.precision: '{s['precision']}' is not one of {', '.join(self.PRECISIONS)}")
        loader = loaders[s["model"]]
        wpath = s["weights_path"]
        if wpath is None:
            default = inspect.signature(loader).parameters.get("weights_path")
            url = default.default if default is not None else None
            if not isinstance(url, str) or not _url_reachable(url):
                raise TeacherError(
                    f"teacher 'orb': no weights_path given and the {s['model']} checkpoint cannot be downloaded here "
                    f"({url or 'no default URL'}); download it on a machine with network access and pass "
                    f"weights_path: /path/to/{os.path.basename(urlparse(url).path) if url else s['model'] + '.ckpt'}"
                )
            wpath = url
        elif not os.path.isfile(wpath):
            raise TeacherError(
                f"teacher 'orb': weights_path '{wpath}' does not exist; pass the local {s['model']} checkpoint "
                f"(e.g. orb-v2-20241011.ckpt from orbitalmaterials-public-models)"
            )
        self._model, self._adapter, self._weights_file = self._load(loader, wpath)

    # -- loading ------------------------------------------------------------------------
    def _load(self, loader, wpath):

        s = self._spec
        kwargs = {
            "weights_path": wpath,
            "device": s["device"],
            "precision": s["precision"],
            "compile": bool(s["compile"]),
        }
        accepted = inspect.signature(loader).parameters
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        with torch_global_state(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*default dtype.*")
            warnings.filterwarnings("ignore", message=".*precision=float32-high.*")
            try:
                loaded = loader(**kwargs)
            except (RuntimeError, KeyError) as err:  # state-dict mismatch: wrong file for this model
                raise TeacherError(
                    f"teacher 'orb': {wpath} does not fit the {s['model']} architecture "
                    f"({str(err).splitlines()[0][:200]}); pass the checkpoint of that model"
                ) from None
        # 0.6+: (model, atoms_adapter); 0.5.x: model
        if isinstance(loaded, tuple):
            model, adapter = loaded[0], loaded[1]
        else:
            model, adapter = loaded, None
        model.eval()
        self._dtype = next(model.parameters()).dtype
        local = wpath
        if not os.path.isfile(local):
            from cached_path import cached_path

            local = str(cached_path(wpath))
        return model, adapter, os.path.abspath(local)

    # -- identity -----------------------------------------------------------------------
    @property
    def elements(self):
        return frozenset(ORB_ELEMENTS)

    @property
    def conservative(self) -> bool:
        model = getattr(self._model, "xc_model", self._model)
        return hasattr(model, "grad_forces_name")

    @property
    def capabilities(self) -> dict:
        caps = super().capabilities
        model = getattr(self._model, "xc_model", self._model)
        caps.update(
            stress=bool(getattr(model, "has_stress", "stress" in getattr(model, "heads", {}))),
            conservative_forces=self.conservative,
            device=self._spec["device"],
            dtype=str(self._dtype).replace("torch.", ""),
        )
        return caps

    def result_options(self):
        return ("model", "precision")

    def _fingerprint_parts(self) -> dict:
        return {
            "package": "orb-models",
            "version": package_version("orb-models"),
            "model": self._spec["model"],
            "weights_sha256": sha256_file(self._weights_file),
            "file": os.path.basename(self._weights_file),
        }

    # -- inference ----------------------------------------------------------------------
    def _precheck(self, atoms: Atoms):
        reason = super()._precheck(atoms)
        if reason is None and any(atoms.pbc) and not all(atoms.pbc):
            reason = "teacher 'orb' handles molecules (no pbc) and 3-D periodic cells, not partly periodic structures"
        return reason

    def _prepare(self, atoms: Atoms) -> Atoms:
        work = atoms.copy()
        work.calc = None
        model = getattr(self._model, "xc_model", self._model)
        conditioner = getattr(getattr(model, "model", None), "conditioner", None)
        if conditioner is not None and type(conditioner).__name__ == "ChargeSpinConditioner":
            # OMol-trained models need total charge and spin multiplicity (2S+1)
            work.info["charge"] = float(atoms.info.get("charge", 0.0))
            work.info["spin"] = float(atoms.info.get("spin", atoms.info.get("spin_multiplicity", 1.0)))
        else:
            work.info.pop("charge", None)
            work.info.pop("spin", None)
        return work

    def _graph(self, atoms: Atoms):
        work = self._prepare(atoms)
        device = self._spec["device"]
        if self._adapter is not None:  # orb-models 0.6+
            return self._adapter.from_ase_atoms(atoms=work, device=device)
        from orb_models.forcefield.atomic_system import ase_atoms_to_atom_graphs

        return ase_atoms_to_atom_graphs(
            work, system_config=self._model.system_config, device=device, output_dtype=self._dtype
        )

    @staticmethod
    def _batch_fn():
        for modname in ("orb_models.forcefield.base", "orb_models.common.atoms.base", "orb_models.common.atoms.batch"):
            try:
                mod = __import__(modname, fromlist=["batch_graphs"])
            except ImportError:
                continue
            if hasattr(mod, "batch_graphs"):
                return mod.batch_graphs
        return None

    def _run(self, atoms_list: list[Atoms]) -> list[tuple]:
        import torch

        prec = {"float32-high": "high", "float32-highest": "highest"}.get(self._spec["precision"])
        with torch_global_state(self._dtype, prec):
            graphs = [self._graph(a) for a in atoms_list]
            if len(graphs) == 1:
                batch = graphs[0]
            else:
                batch_graphs = self._batch_fn()
                if batch_graphs is None:
                    raise RuntimeError("this orb-models has no batch_graphs; labelling one at a time")
                batch = batch_graphs(graphs)
            batch = batch.to(self._spec["device"])
            with torch.set_grad_enabled(self.conservative):
                out = self._model.predict(batch)
        model = getattr(self._model, "xc_model", self._model)
        if self.conservative:
            fkey, skey = model.grad_forces_name, getattr(model, "grad_stress_name", None)
        else:
            fkey, skey = "forces", "stress"
        energy = out["energy"].detach().cpu().double().numpy().reshape(-1)
        forces = out[fkey].detach().cpu().double().numpy()
        stress = out[skey].detach().cpu().double().numpy().reshape(len(atoms_list), 6) if skey in out else None
        n = [len(a) for a in atoms_list]
        splits = np.split(forces, np.cumsum(n)[:-1])
        return [
            (energy[k], splits[k], None if stress is None else stress[k]) for k in range(len(atoms_list))
        ]

    def _label_one(self, atoms: Atoms):
        return self._run([atoms])[0]

    def _label_batch(self, atoms_list):
        return self._run(list(atoms_list))
