"""Physics tests of the student network: finite differences, symmetries, batching, periodic images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from mlff_distiller.data.graph import atoms_to_batch, atoms_to_graph, collate
from mlff_distiller.data.normalization import NormalizationStats
from mlff_distiller.errors import ConfigError
from mlff_distiller.student import PRESETS, StudentConfig, build_student

CUTOFF = 4.0
STATS = NormalizationStats(
    element_energies={1: -1.1, 6: -5.3, 8: -3.7, 14: -4.6}, energy_mean=0.02, energy_std=0.05,
    force_rms=0.7, avg_num_neighbors=12.0, cutoff=CUTOFF,
)


def make_model(dtype="float64", preset="tiny", **kw):
    torch.manual_seed(1)
    model = build_student(StudentConfig(preset=preset, cutoff=CUTOFF, dtype=dtype, **kw), STATS).eval()
    # Random init gives small outputs; scale up the readout so that tests see sizeable forces.
    with torch.no_grad():
        model.readout[-1].weight.mul_(20.0)
    return model


def run(model, atoms_list, stress=False):
    dtype = model.embedding.weight.dtype
    batch = atoms_to_batch(atoms_list, CUTOFF, dtype=dtype)
    out = model(batch, compute_forces=True, compute_stress=stress)
    return {k: v.detach().numpy().astype(np.float64) for k, v in out.items()}


def ethanol():
    a = molecule("CH3CH2OH")
    a.rattle(0.05, seed=3)
    return a


def si_crystal(triclinic=True):
    a = bulk("Si", "diamond", 5.43, cubic=True)
    if triclinic:  # a sheared, non-orthogonal cell
        cell = a.cell.array.copy()
        cell[1] += [0.6, 0.0, 0.0]
        cell[2] += [0.3, -0.4, 0.0]
        a.set_cell(cell, scale_atoms=True)
    a.rattle(0.08, seed=5)
    return a


@pytest.fixture(scope="module", params=[{"scalar_last_message": False}, {"scalar_last_message": True},
                                        {"angular_channels": 4}], ids=["full", "scalar-last-message", "angular"])
def model64(request):
    return make_model("float64", **request.param)


def test_forces_match_finite_differences_molecule_and_crystal(model64):
    h = 1e-5
    for atoms in (ethanol(), si_crystal()):
        forces = run(model64, [atoms])["forces"]
        assert np.abs(forces).max() > 1e-2  # a non-trivial test
        rng = np.random.default_rng(0)
        for a in rng.choice(len(atoms), size=4, replace=False):
            for c in range(3):
                plus, minus = atoms.copy(), atoms.copy()
                plus.positions[a, c] += h
                minus.positions[a, c] -= h
                fd = -(run(model64, [plus])["energy"][0] - run(model64, [minus])["energy"][0]) / (2 * h)
                assert fd == pytest.approx(forces[a, c], abs=1e-7, rel=1e-6)


def test_stress_matches_finite_strain_derivative(model64):
    atoms = si_crystal()
    stress = run(model64, [atoms], stress=True)["stress"][0]
    assert np.abs(stress).max() > 1e-4
    h = 1e-6
    volume = atoms.get_volume()
    voigt_pairs = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    for k, (p, q) in enumerate(voigt_pairs):
        energies = []
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[p, q] += 0.5 * sign * h
            eps[q, p] += 0.5 * sign * h
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            energies.append(run(model64, [strained])["energy"][0])
        fd = (energies[0] - energies[1]) / (2 * h) / volume
        assert fd == pytest.approx(stress[k], abs=1e-8, rel=1e-5)


def random_rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def test_energy_invariant_and_forces_equivariant_under_rotation(model64):
    rot = random_rotation(7)
    for atoms in (ethanol(), si_crystal()):
        ref = run(model64, [atoms], stress=atoms.pbc.all())
        turned = atoms.copy()
        turned.positions = atoms.positions @ rot.T
        if atoms.pbc.all():
            turned.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
        out = run(model64, [turned], stress=atoms.pbc.all())
        assert out["energy"][0] == pytest.approx(ref["energy"][0], abs=1e-9)
        np.testing.assert_allclose(out["forces"], ref["forces"] @ rot.T, atol=1e-9)
        if atoms.pbc.all():
            from mlff_distiller.fields import matrix_to_voigt, voigt_to_matrix

            expected = matrix_to_voigt(rot @ voigt_to_matrix(ref["stress"][0]) @ rot.T)
            np.testing.assert_allclose(out["stress"][0], expected, atol=1e-10)


def test_translation_and_permutation_invariance(model64):
    for atoms in (ethanol(), si_crystal()):
        ref = run(model64, [atoms])
        moved = atoms.copy()
        moved.positions += [1.3, -2.1, 0.7]  # also moves atoms across periodic boundaries
        out = run(model64, [moved])
        assert out["energy"][0] == pytest.approx(ref["energy"][0], abs=1e-9)
        np.testing.assert_allclose(out["forces"], ref["forces"], atol=1e-9)

        perm = np.random.default_rng(1).permutation(len(atoms))
        shuffled = atoms[perm]
        out = run(model64, [shuffled])
        assert out["energy"][0] == pytest.approx(ref["energy"][0], abs=1e-9)
        np.testing.assert_allclose(out["forces"], ref["forces"][perm], atol=1e-9)


def test_forces_sum_to_zero_and_wrapping_is_irrelevant(model64):
    atoms = si_crystal()
    out = run(model64, [atoms])
    np.testing.assert_allclose(out["forces"].sum(0), 0.0, atol=1e-9)
    wrapped = atoms.copy()
    wrapped.positions += 2.0
    wrapped.wrap()
    np.testing.assert_allclose(run(model64, [wrapped])["forces"], out["forces"], atol=1e-9)


def test_batch_equals_one_at_a_time(model64):
    structures = [ethanol(), si_crystal(), bulk("Si", "fcc", 3.9), molecule("H2O")]
    together = run(model64, structures, stress=True)
    start = 0
    for k, atoms in enumerate(structures):
        alone = run(model64, [atoms], stress=True)
        n = len(atoms)
        assert together["energy"][k] == pytest.approx(alone["energy"][0], abs=1e-9)
        np.testing.assert_allclose(together["forces"][start : start + n], alone["forces"], atol=1e-9)
        np.testing.assert_allclose(together["stress"][k], alone["stress"][0], atol=1e-10)
        if not atoms.pbc.all():
            assert np.all(together["stress"][k] == 0.0)
        start += n


def test_supercell_energy_is_n_times_cell_energy_with_cell_smaller_than_cutoff(model64):
    # fcc primitive cell: 1 atom, lattice vectors 2.76 A long, far below the 4 A cutoff,
    # so an atom sees many images of itself (and pairs appear with several shifts).
    prim = bulk("Si", "fcc", 3.9)
    assert max(np.linalg.norm(prim.cell.array, axis=1)) < CUTOFF
    two = bulk("Si", "diamond", 5.43)  # 2-atom primitive cell, also smaller than the cutoff
    two.positions[1] += [0.05, -0.03, 0.02]
    for cell_atoms in (prim, two):
        base = run(model64, [cell_atoms], stress=True)
        for reps in ((2, 2, 2), (3, 1, 2)):
            sup = cell_atoms.repeat(reps)
            n = int(np.prod(reps))
            out = run(model64, [sup], stress=True)
            assert out["energy"][0] == pytest.approx(n * base["energy"][0], abs=1e-8 * n)
            np.testing.assert_allclose(out["forces"], np.tile(base["forces"], (n, 1)), atol=1e-9)
            np.testing.assert_allclose(out["stress"][0], base["stress"][0], atol=1e-10)


def test_energy_is_smooth_at_the_cutoff_and_separates(model64):
    # A dimer: energy and force go continuously to the isolated-atom values at the cutoff.
    def dimer(r):
        return Atoms("CO", positions=[[0, 0, 0], [r, 0, 0]])

    far = run(model64, [dimer(CUTOFF + 1e-3)])
    near = run(model64, [dimer(CUTOFF - 1e-3)])
    assert near["energy"][0] == pytest.approx(far["energy"][0], abs=1e-6)
    assert np.abs(near["forces"]).max() < 1e-3
    assert np.all(far["forces"] == 0.0)
    # Two molecules further apart than the cutoff: energy is the sum of the parts.
    a, b = ethanol(), molecule("H2O")
    b.positions += [CUTOFF + 6.0, 0, 0]
    both = run(model64, [a + b])
    assert both["energy"][0] == pytest.approx(run(model64, [a])["energy"][0] + run(model64, [b])["energy"][0], abs=1e-9)


def test_reference_energies_and_float32_default():
    model = build_student(StudentConfig(preset="tiny", cutoff=CUTOFF), STATS).eval()
    assert model.embedding.weight.dtype == torch.float32
    with torch.no_grad():  # zero network output: energy is exactly references + mean shift
        model.readout[-1].weight.zero_()
        model.readout[-1].bias.zero_()
    atoms = ethanol()
    out = model(atoms_to_batch([atoms], CUTOFF), compute_forces=True)
    expected = sum(STATS.element_energies[int(z)] + STATS.energy_mean for z in atoms.numbers)
    assert out["energy"].dtype == torch.float64
    assert float(out["energy"][0]) == pytest.approx(expected, abs=1e-9)
    assert out["forces"].dtype == torch.float32
    assert float(out["forces"].abs().max()) == 0.0


def test_float32_agrees_with_float64():
    m64 = make_model("float64")
    m32 = make_model("float32")
    m32.load_state_dict(m64.state_dict())  # load_state_dict casts into each float32 parameter
    assert m32.embedding.weight.dtype == torch.float32 and m32.atom_energy_const.dtype == torch.float64
    atoms = si_crystal()
    a, b = run(m64, [atoms], stress=True), run(m32, [atoms], stress=True)
    assert b["energy"][0] == pytest.approx(a["energy"][0], abs=1e-4)
    np.testing.assert_allclose(b["forces"], a["forces"], atol=1e-4)


def test_training_mode_forces_are_differentiable_wrt_weights():
    model = make_model("float32").train()
    batch = atoms_to_batch([ethanol(), si_crystal()], CUTOFF)
    out = model(batch, compute_forces=True, compute_stress=True)
    loss = out["forces"].pow(2).sum() + out["stress"].pow(2).sum() + out["energy"].sum().float()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert model.filters[0].weight.grad.abs().sum() > 0
    assert model.messages[1].phi[0].weight.grad.abs().sum() > 0


def test_no_grad_context_still_gives_forces(model64):
    batch = atoms_to_batch([ethanol()], CUTOFF, dtype=torch.float64)
    ref = model64(batch)["forces"].detach()
    with torch.no_grad():
        out = model64(batch)
    torch.testing.assert_close(out["forces"], ref)


def test_presets_and_parameter_counts():
    sizes = {}
    for preset in PRESETS:
        m = build_student(StudentConfig(preset=preset, cutoff=CUTOFF), STATS)
        sizes[preset] = sum(p.numel() for p in m.parameters())
        assert m.num_features == PRESETS[preset]["num_features"]
        assert len(m.messages) == PRESETS[preset]["num_layers"]
    assert sizes["tiny"] < sizes["small"] < sizes["base"]
    # elements default to those of the statistics
    assert build_student(StudentConfig(preset="tiny"), STATS).elements == [1, 6, 8, 14]
    with pytest.raises(ConfigError, match="student.elements is empty"):
        build_student({"preset": "tiny"}, NormalizationStats())


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"student: unknown key 'widht'.*allowed: preset"):
        StudentConfig.from_dict({"preset": "tiny", "widht": 3})
    with pytest.raises(ConfigError, match="student.preset.*tiny, small, base"):
        StudentConfig.from_dict({"preset": "huge"})
    with pytest.raises(ConfigError, match="student.dtype"):
        StudentConfig.from_dict({"dtype": "float16"})
    with pytest.raises(ConfigError, match="student.cutoff"):
        StudentConfig.from_dict({"cutoff": -1})
    with pytest.raises(ConfigError, match="student.elements"):
        StudentConfig.from_dict({"elements": [1, "Xx"]})
    with pytest.raises(ConfigError, match="student.num_layers"):
        StudentConfig.from_dict({"num_layers": 0})
    cfg = StudentConfig.from_dict({"preset": "base", "elements": ["O", 1, "H"], "num_layers": 2})
    assert cfg.elements == [1, 8] and cfg.num_features == 128 and cfg.num_layers == 2
    assert StudentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError) as info:
        StudentConfig.from_dict({"a": 1, "b": 2})
    assert "\n" not in str(info.value) and "unknown keys 'a', 'b';" in str(info.value)


def test_batch_from_collate_with_graphs_in_float64_input_to_float32_model():
    model = make_model("float32")
    graphs = [atoms_to_graph(ethanol(), CUTOFF), atoms_to_graph(si_crystal(), CUTOFF)]
    out32 = model(collate(graphs, dtype=torch.float32))
    out64in = model(collate(graphs, dtype=torch.float64))
    torch.testing.assert_close(out32["forces"], out64in["forces"])

