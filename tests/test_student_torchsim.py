"""torch-sim model: batched energies/forces/stress equal the per-system ASE calculator's (both
backends, float32 and float64), the reused neighbour list survives torch-sim's wrapping of
positions, torch-sim's own conformance check passes, and a batched NVE run works."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

ts = pytest.importorskip("torch_sim", reason="torch-sim-atomistic not installed (optional extra [torchsim])")

from mlff_distiller.data.normalization import NormalizationStats  # noqa: E402
from mlff_distiller.errors import UserError  # noqa: E402
from mlff_distiller.student import StudentCalculator, StudentConfig, build_student, export_torchscript  # noqa: E402
from mlff_distiller.student.torchsim import StudentTorchSimModel  # noqa: E402

CUTOFF = 4.0
STATS = NormalizationStats(element_energies={1: -13.6, 6: -1030.0, 8: -2040.0, 14: -4.6, 26: -8.0},
                           force_rms=0.5, avg_num_neighbors=12.0, cutoff=CUTOFF)
CPU = torch.device("cpu")


def make_model(dtype):
    torch.manual_seed(7)
    model = build_student(StudentConfig(preset="tiny", cutoff=CUTOFF, dtype=dtype), STATS).eval()
    with torch.no_grad():
        model.readout[-1].weight.mul_(50.0)  # forces of ~0.05-1 eV/A, not ~0
    return model


def crystals():
    si8 = bulk("Si", "diamond", 5.43, cubic=True)
    si8.rattle(0.05, seed=1)
    small = bulk("Si", "diamond", 5.43)  # 2 atoms, cell heights ~3.1 A < cutoff
    small.rattle(0.04, seed=2)
    tri = Atoms("Si4", scaled_positions=[[0, 0, 0], [0.26, 0.24, 0.27], [0.5, 0.52, 0.0], [0.1, 0.55, 0.5]],
                cell=[[5.2, 0.0, 0.0], [1.3, 5.0, 0.0], [0.9, -1.1, 5.4]], pbc=True)
    return [si8, small, tri]


def molecules():
    mols = [molecule("CH3CH2OH"), molecule("H2O"), molecule("C6H6")]
    for k, m in enumerate(mols):
        m.rattle(0.05, seed=k)
    return mols


def per_system_reference(model, atoms_list, stress):
    out = []
    for atoms in atoms_list:
        a = atoms.copy()
        a.calc = StudentCalculator(model, backend="torch")
        out.append((a.get_potential_energy(), a.get_forces(), a.get_stress(voigt=False) if stress else None))
    return out


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["crystals", "molecules"])
def test_batched_equals_per_system_ase(backend, dtype, kind):
    model = make_model(dtype)
    atoms_list = crystals() if kind == "crystals" else molecules()
    periodic = kind == "crystals"
    tsm = StudentTorchSimModel(model, device="cpu", compute_stress=True, backend=backend)
    assert tsm.backend == backend
    out = tsm(ts.io.atoms_to_state(atoms_list, CPU, torch.float64))
    n_total = sum(len(a) for a in atoms_list)
    assert out["energy"].shape == (len(atoms_list),) and out["forces"].shape == (n_total, 3)
    assert out["stress"].shape == (len(atoms_list), 3, 3)
    f32 = dtype == "float32"
    start = 0
    for k, (e, f, s) in enumerate(per_system_reference(model, atoms_list, periodic)):
        got_f = out["forces"][start : start + len(f)].numpy()
        start += len(f)
        assert float(out["energy"][k]) == pytest.approx(e, rel=1e-6 if f32 else 1e-12, abs=1e-5 if f32 else 1e-10)
        assert np.abs(f).max() > 0.02
        assert np.abs(got_f - f).max() <= (1e-4 if f32 else 1e-10)
        if periodic:
            np.testing.assert_allclose(out["stress"][k].numpy(), s, atol=1e-5 if f32 else 1e-11)
        else:
            assert not out["stress"][k].any()  # no stress without a 3-D periodic cell


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_reused_neighbour_list_survives_wrapped_positions(backend):
    model = make_model("float64")
    atoms = bulk("Si", "diamond", 5.43, cubic=True)
    atoms.positions[0] = [0.02, 0.03, 5.40]  # next to two faces of the cell
    state = ts.io.atoms_to_state([atoms, atoms.copy()], CPU, torch.float64)
    reused = StudentTorchSimModel(model, device="cpu", skin=0.6, backend=backend)
    fresh = StudentTorchSimModel(model, device="cpu", skin=0.0, backend=backend)
    reused(state)
    assert reused.neighbors.builds == 1
    rng = np.random.default_rng(0)
    for _ in range(3):  # small moves (< skin/2 in total), atom 0 crosses the faces, then wrap
        step = torch.as_tensor(rng.normal(scale=0.02, size=state.positions.shape))
        step[0] = torch.tensor([-0.04, -0.05, 0.04])
        state.positions = ts.transforms.pbc_wrap_batched(state.positions + step, state.cell, state.system_idx)
        got, ref = reused(state), fresh(state)
        torch.testing.assert_close(got["forces"], ref["forces"], atol=1e-10, rtol=0)
        torch.testing.assert_close(got["energy"], ref["energy"], atol=1e-10, rtol=0)
    assert float(state.positions[0, 2]) < 1.0  # atom 0 really was wrapped to the other side
    assert reused.neighbors.builds == 1  # and the list was still reused
    state.positions = state.positions + 0.35  # beyond skin/2: rebuilt
    reused(state)
    assert reused.neighbors.builds == 2


def test_torchsim_conformance_check_and_torchscript_export(tmp_path):
    from torch_sim.models.interface import validate_model_outputs

    model = make_model("float64")
    for source in (model, export_torchscript(model, tmp_path / "ts.pt")):
        tsm = StudentTorchSimModel(source, device="cpu", compute_stress=True, backend="torch")
        validate_model_outputs(tsm, CPU, torch.float64)  # raises on any mismatch


def test_batched_nve_run_and_errors():
    model = make_model("float32")
    tsm = StudentTorchSimModel(model, device="cpu", backend="torch")
    replicas = [bulk("Si", "diamond", 5.43, cubic=True) for _ in range(3)]
    state = ts.io.atoms_to_state(replicas, CPU, torch.float64)
    dt = torch.tensor(1.0 * ts.units.MetalUnits.time / 1000)  # 1 fs
    kT = torch.tensor(300.0 * ts.units.MetalUnits.temperature)
    init, update = ts.nve(tsm, dt=dt, kT=kT)
    md = init(state, seed=3)
    e0 = md.energy + ts.calc_kinetic_energy(masses=md.masses, momenta=md.momenta, system_idx=md.system_idx)
    for _ in range(20):
        md = update(md)
    e1 = md.energy + ts.calc_kinetic_energy(masses=md.masses, momenta=md.momenta, system_idx=md.system_idx)
    assert torch.all(torch.abs(e1 - e0) / 8 < 5e-3)  # eV/atom over 20 fs
    assert not torch.allclose(md.positions, state.positions)
    with pytest.raises(UserError, match="not among the student's elements"):
        tsm(ts.io.atoms_to_state([bulk("Cu", "fcc", 3.6)], CPU, torch.float64))
    with pytest.raises(UserError, match="backend"):
        StudentTorchSimModel(model, backend="jax")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_torch_backend_on_cuda():
    model = make_model("float32")
    atoms_list = crystals()
    tsm = StudentTorchSimModel(model, device="cuda", compute_stress=True)
    assert tsm.backend == "torch"
    out = tsm(ts.io.atoms_to_state(atoms_list, torch.device("cuda"), torch.float64))
    start = 0
    for k, (_, f, s) in enumerate(per_system_reference(model, atoms_list, True)):
        assert np.abs(out["forces"][start : start + len(f)].cpu().numpy() - f).max() <= 1e-4
        np.testing.assert_allclose(out["stress"][k].cpu().numpy(), s, atol=1e-5)
        start += len(f)
