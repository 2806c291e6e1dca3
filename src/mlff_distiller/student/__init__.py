"""The student network, its files (checkpoint / TorchScript export) and its ASE calculator.

```python
model = build_student(StudentConfig(preset="small", cutoff=5.0, elements=[1, 6, 8]), stats)
out = model(batch, compute_forces=True, compute_stress=False)  # energy (B,) eV, forces (N,3) eV/A
save_student("student.pt", model); model = load_student("student.pt" or RUN_DIR)
export_torchscript(model, "student_ts.pt"); exported = load_exported("student_ts.pt")
atoms.calc = StudentCalculator(RUN_DIR or "student.pt" or "student_ts.pt" or model)  # backend="auto"/"numba"/"torch"
# optional extras: student.metatomic.export_metatomic(model, "mta.pt")  (LAMMPS, i-PI; [metatomic])
#                  student.torchsim.StudentTorchSimModel(RUN_DIR)       (batched torch-sim MD; [torchsim])
```
Units: eV, A, eV/A, eV/A^3 (stress in Voigt order xx yy zz yz xz xy).
"""

from .config import PRESETS, StudentConfig
from .io import (
    ExportedStudent,
    StudentFileError,
    export_torchscript,
    load_any,
    load_exported,
    load_student,
    read_checkpoint,
    save_student,
    student_from_dict,
    student_to_dict,
)
from .model import StudentModel, build_student


def __getattr__(name):  # the calculator imports ASE's calculator machinery: load it on demand
    if name == "StudentCalculator":
        from .calculator import StudentCalculator

        return StudentCalculator
    raise AttributeError(name)


__all__ = [
    "PRESETS",
    "StudentConfig",
    "StudentModel",
    "build_student",
    "ExportedStudent",
    "StudentFileError",
    "export_torchscript",
    "load_any",
    "load_exported",
    "load_student",
    "read_checkpoint",
    "save_student",
    "student_from_dict",
    "student_to_dict",
    "StudentCalculator",
]
