"""The one owner of what a structure's labels must look like.

* energy: a scalar, eV;
* forces: ``(n_atoms, 3)``, eV/A;
* stress: Voigt ``(6,)`` ``(xx, yy, zz, yz, xz, xy)`` in eV/A^3; a ``(3, 3)`` matrix is
  converted (:func:`mlff_distiller.fields.matrix_to_voigt`);
* with ``finite=True`` (the default) no NaN or inf.

Each ``check_*`` returns the label as float64 (energy as a Python float) or raises
:class:`LabelError`, whose message continues "teacher returned ..." or "structure 3 has ...".
Teachers, the labelling worker and the quality reader call these; whether a label applies
at all (stress only for 3-D periodic cells) stays with the caller.
"""

from __future__ import annotations

import math

import numpy as np

from .fields import matrix_to_voigt

__all__ = ["LabelError", "check_energy", "check_forces", "check_stress"]


class LabelError(ValueError):
    """A label of the wrong shape (``kind="shape"``) or not finite (``kind="finite"``).

    ``field`` is ``"energy"``, ``"forces"`` or ``"stress"``; the message reads as the object
    of "has" / "returned", e.g. ``"forces of shape (2, 3), expected (3, 3) eV/A"``.
    """

    def __init__(self, field: str, kind: str, message: str):
        super().__init__(message)
        self.field = field
        self.kind = kind


def check_energy(value, *, finite: bool = True) -> float:
    """``value`` as a float (eV); :class:`LabelError` unless it is one finite number."""
    try:
        energy = float(np.asarray(value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        raise LabelError("energy", "shape", f"an energy of shape {np.shape(value)}, expected a scalar (eV)") from None
    if finite and not math.isfinite(energy):
        raise LabelError("energy", "finite", f"a non-finite energy ({energy})")
    return energy


def check_forces(value, n_atoms: int, *, finite: bool = True) -> np.ndarray:
    """``value`` as a float64 ``(n_atoms, 3)`` array (eV/A); :class:`LabelError` otherwise."""
    forces = np.asarray(value, dtype=np.float64)
    if forces.shape != (n_atoms, 3):
        raise LabelError("forces", "shape", f"forces of shape {forces.shape}, expected ({n_atoms}, 3) eV/A")
    if finite and not np.all(np.isfinite(forces)):
        raise LabelError("forces", "finite", "non-finite forces (NaN/inf)")
    return forces


def check_stress(value, *, finite: bool = True) -> np.ndarray:
    """``value`` (Voigt ``(6,)`` or ``(3, 3)``) as a float64 Voigt ``(6,)`` array (eV/A^3)."""
    stress = np.asarray(value, dtype=np.float64)
    if stress.shape == (3, 3):
        stress = matrix_to_voigt(stress)
    if stress.shape != (6,):
        raise LabelError("stress", "shape", f"stress of shape {stress.shape}, expected (6,) Voigt or (3, 3) eV/A^3")
    if finite and not np.all(np.isfinite(stress)):
        raise LabelError("stress", "finite", "non-finite stress (NaN/inf)")
    return stress
