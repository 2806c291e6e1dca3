"""metatomic export: the file, run by metatomic's own ASE calculator, gives StudentCalculator's
energy, per-atom energies, forces and stress; it loads without this package; the CLI writes it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule

pytest.importorskip("metatomic.torch", reason="metatomic-torch not installed (optional extra [metatomic])")
metatomic_ase = pytest.importorskip("metatomic_ase", reason="metatomic-ase not installed (optional extra [metatomic])")

from metatomic.torch import System, load_atomistic_model  # noqa: E402

from mlff_distiller.cli import main  # noqa: E402
from mlff_distiller.data.normalization import NormalizationStats  # noqa: E402
from mlff_distiller.student import StudentCalculator, StudentConfig, build_student, save_student  # noqa: E402
from mlff_distiller.student.metatomic import export_metatomic  # noqa: E402

# metatomic loads models with torch.jit.load, which torch 2.13 marks deprecated (it works)
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated:DeprecationWarning")

CUTOFF = 4.0
STATS = NormalizationStats(element_energies={1: -13.6, 6: -1030.0, 8: -2040.0, 13: -3.7, 14: -4.6},
                           force_rms=0.5, avg_num_neighbors=12.0, cutoff=CUTOFF)


def make_model(dtype):
    torch.manual_seed(5)
    # the float64 student also carries the angular block, so that the export is checked with it
    angular = 4 if dtype == "float64" else 0
    model = build_student(StudentConfig(preset="tiny", cutoff=CUTOFF, dtype=dtype, angular_channels=angular),
                          STATS).eval()
    with torch.no_grad():
        # forces of a few eV/A, not ~0 (this seed gives the angular student smaller outputs)
        model.readout[-1].weight.mul_(100.0 if angular else 10.0)
    return model


def systems():
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=1)
    tri = Atoms("Si4", scaled_positions=[[0, 0, 0], [0.26, 0.24, 0.27], [0.5, 0.52, 0.0], [0.1, 0.55, 0.5]],
                cell=[[5.2, 0.0, 0.0], [1.3, 5.0, 0.0], [0.9, -1.1, 5.4]], pbc=True)
    small = bulk("Si", "diamond", 5.43)  # primitive cell: 2 atoms, heights ~3.1 A < cutoff 4 A
    small.rattle(0.04, seed=2)
    slab = fcc111("Al", size=(2, 2, 3), vacuum=6.0)
    slab.rattle(0.05, seed=3)
    return {"molecule": mol, "triclinic": tri, "small_cell": small, "slab": slab}


@pytest.fixture(scope="module", params=["float32", "float64"])
def exported(request, tmp_path_factory):
    model = make_model(request.param)
    path = export_metatomic(model, tmp_path_factory.mktemp("mta") / f"student_{request.param}.pt")
    return model, path


@pytest.mark.parametrize("name", ["molecule", "triclinic", "small_cell", "slab"])
def test_metatomic_ase_calculator_matches_student_calculator(exported, name):
    model, path = exported
    f32 = model.config.dtype == "float32"
    atoms = systems()[name]
    periodic3 = bool(atoms.pbc.all())
    ref = atoms.copy()
    ref.calc = StudentCalculator(model, backend="torch")
    got = atoms.copy()
    got.calc = metatomic_ase.MetatomicCalculator(str(path), check_consistency=True, device="cpu")

    e_ref, e_got = ref.get_potential_energy(), got.get_potential_energy()
    # float32: the file returns the energy in float32 (~1e-7 relative of the reference-energy sum)
    assert e_got == pytest.approx(e_ref, rel=1e-6 if f32 else 1e-12, abs=1e-4 if f32 else 1e-10)
    f_ref, f_got = ref.get_forces(), got.get_forces()
    assert np.abs(f_ref).max() > 0.02  # non-trivial forces: a test that could fail
    assert np.abs(f_got - f_ref).max() <= (1e-4 if f32 else 1e-10)
    np.testing.assert_allclose(got.get_potential_energies(), ref.get_potential_energies(),
                               atol=1e-3 if f32 else 1e-10, rtol=1e-6 if f32 else 0)
    if periodic3:
        s_ref, s_got = ref.get_stress(), got.get_stress()
        assert np.abs(s_ref).max() > 1e-4
        np.testing.assert_allclose(s_got, s_ref, atol=1e-5 if f32 else 1e-11)


def test_capabilities_neighbour_request_and_selected_atoms(exported):
    import vesin.metatomic

    model, path = exported
    loaded = load_atomistic_model(str(path))
    caps = loaded.capabilities()
    assert caps.length_unit.lower() == "angstrom" and caps.dtype == model.config.dtype
    assert sorted(caps.atomic_types) == sorted(model.elements)
    assert caps.interaction_range == pytest.approx(model.num_layers * CUTOFF)
    assert caps.outputs["energy"].unit == "eV" and caps.outputs["energy"].sample_kind == "atom"
    assert set(caps.outputs) == {"energy"}  # no non-conservative outputs declared
    (request,) = loaded.requested_neighbor_lists()
    assert request.cutoff == pytest.approx(CUTOFF) and request.full_list and request.strict

    # selected_atoms (what LAMMPS passes for its local atoms) restricts the energy to those atoms
    from metatensor.torch import Labels
    from metatomic.torch import ModelEvaluationOptions, ModelOutput

    dt = torch.float32 if model.config.dtype == "float32" else torch.float64
    atoms = systems()["triclinic"]
    system = System(types=torch.tensor(atoms.numbers), positions=torch.tensor(atoms.positions, dtype=dt),
                    cell=torch.tensor(atoms.cell.array, dtype=dt), pbc=torch.tensor(atoms.pbc))
    for nl_calculator in vesin.metatomic.neighbor_lists_for_model("angstrom", loaded):
        nl_calculator.add_neighbor_list([system])
    per_atom = ModelEvaluationOptions(length_unit="angstrom",
                                      outputs={"energy": ModelOutput(unit="eV", sample_kind="atom")})
    e_atoms = loaded([system], per_atom, check_consistency=True)["energy"].block().values.reshape(-1)
    chosen = Labels(["system", "atom"], torch.tensor([[0, 1], [0, 3]], dtype=torch.int32))
    total = ModelEvaluationOptions(length_unit="angstrom", outputs={"energy": ModelOutput(unit="eV")},
                                   selected_atoms=chosen)
    e_sel = loaded([system], total, check_consistency=True)["energy"].block().values.reshape(-1)
    assert float(e_sel[0]) == pytest.approx(float(e_atoms[1] + e_atoms[3]), rel=1e-6)


def test_exported_file_loads_without_this_package(tmp_path):
    model = make_model("float32")
    path = export_metatomic(model, tmp_path / "student.pt")
    atoms = systems()["triclinic"]
    atoms.write(tmp_path / "tri.xyz")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["mlff_distiller"] = None  # any import of this package now fails
        import ase.io, numpy as np
        from metatomic_ase import MetatomicCalculator
        atoms = ase.io.read({str(tmp_path / "tri.xyz")!r})
        atoms.calc = MetatomicCalculator({str(path)!r}, device="cpu")
        np.save({str(tmp_path / "forces.npy")!r}, atoms.get_forces())
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    atoms.calc = StudentCalculator(model, backend="torch")
    np.testing.assert_allclose(np.load(tmp_path / "forces.npy"), atoms.get_forces(), atol=1e-4)


def test_cli_export_format_metatomic(tmp_path, capsys):
    model = make_model("float32")
    ckpt = save_student(tmp_path / "student.pt", model)
    out = tmp_path / "student_mta.pt"
    assert main(["export", str(ckpt), "--format", "metatomic", "-o", str(out)]) == 0
    assert "metatomic" in capsys.readouterr().out
    atoms = systems()["small_cell"]
    atoms.calc = metatomic_ase.MetatomicCalculator(str(out), device="cpu")
    ref = atoms.copy()
    ref.calc = StudentCalculator(model, backend="torch")
    assert np.abs(atoms.get_forces() - ref.get_forces()).max() <= 1e-4


def test_nve_trajectory_matches_student_calculator(tmp_path):
    """Ten velocity-Verlet steps with the metatomic file follow StudentCalculator's trajectory."""
    from ase import units
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    model = make_model("float64")
    path = export_metatomic(model, tmp_path / "student.pt")
    start = systems()["triclinic"]
    thermalize_momenta(start, temperature_K=600.0, rng=np.random.default_rng(0))
    runs = []
    for calc in (StudentCalculator(model, backend="torch"), metatomic_ase.MetatomicCalculator(str(path), device="cpu")):
        atoms = start.copy()
        atoms.calc = calc
        VelocityVerlet(atoms, timestep=1.0 * units.fs).run(10)
        runs.append((atoms.positions.copy(), atoms.get_total_energy()))
    assert np.abs(runs[0][0] - start.positions).max() > 1e-3  # the atoms moved
    np.testing.assert_allclose(runs[1][0], runs[0][0], atol=1e-9)
    assert runs[1][1] == pytest.approx(runs[0][1], abs=1e-9)


def test_repulsion_prior_is_in_the_exported_model(tmp_path):
    """A student with the ZBL prior (student.repulsion: zbl) exports it: on a squeezed molecule
    (bonds ~0.6 A, where the prior dominates) the file matches StudentCalculator."""
    torch.manual_seed(5)
    model = build_student(StudentConfig(preset="tiny", cutoff=CUTOFF, dtype="float64", repulsion="zbl"), STATS)
    path = export_metatomic(model.eval(), tmp_path / "student_zbl.pt")
    atoms = molecule("CH3CH2OH")
    atoms.set_positions(atoms.positions * 0.55)
    ref = atoms.copy()
    ref.calc = StudentCalculator(model, backend="torch")
    got = atoms.copy()
    got.calc = metatomic_ase.MetatomicCalculator(str(path), check_consistency=True, device="cpu")
    assert np.abs(ref.get_forces()).max() > 10.0  # the prior's forces, not the network's
    assert got.get_potential_energy() == pytest.approx(ref.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(got.get_forces(), ref.get_forces(), atol=1e-9)
