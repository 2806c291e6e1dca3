"""Samplers: physics checks (normal-mode equipartition on a harmonic system, Langevin thermostat,
relaxation lowers the energy, Hessian against analytic), minimum distances, parameter validation."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from mlff_distiller.errors import ConfigError
from mlff_distiller.generation import samplers as smp
from mlff_distiller.generation.geometry import respects_min_distance


class HarmonicSprings(Calculator):
    """E = sum_{i<j} k/2 (r_ij - r0_ij)^2 over all pairs, r0 from a reference geometry (eV, A).

    Rotation and translation invariant, minimum at the reference: 3N-6 vibrational modes.
    """

    implemented_properties = ("energy", "forces")

    def __init__(self, reference: Atoms, k: float = 5.0):
        super().__init__()
        self.r0 = reference.get_all_distances()
        self.k = k

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        pos = self.atoms.positions
        diff = pos[None, :, :] - pos[:, None, :]  # r_j - r_i
        r = np.linalg.norm(diff, axis=-1)
        np.fill_diagonal(r, 1.0)
        stretch = r - self.r0
        np.fill_diagonal(stretch, 0.0)
        self.results["energy"] = 0.25 * self.k * float((stretch**2).sum())  # each pair counted twice
        coef = self.k * stretch / r
        self.results["forces"] = (coef[:, :, None] * diff).sum(axis=1)


def _reference_molecule():
    return Atoms("CH3OH"[:2] + "HHOH", positions=[[0.0, 0.0, 0.0], [1.09, 0.0, 0.0], [-0.36, 1.03, 0.0],
                                                     [-0.36, -0.51, 0.89], [-0.47, -0.66, -1.17],
                                                     [-1.43, -0.66, -1.2]])


def test_harmonic_springs_forces_match_finite_differences():
    ref = _reference_molecule()
    atoms = ref.copy()
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    atoms.calc = HarmonicSprings(ref)
    f = atoms.get_forces()
    h = 1e-5
    for i, a in [(0, 0), (3, 2), (5, 1)]:
        x = atoms.positions.copy()
        x[i, a] += h
        ep = atoms.calc.get_potential_energy(Atoms(atoms.numbers, x))
        x[i, a] -= 2 * h
        em = atoms.calc.get_potential_energy(Atoms(atoms.numbers, x))
        assert abs(-(ep - em) / (2 * h) - f[i, a]) < 1e-6


def test_finite_difference_hessian_and_modes_of_a_harmonic_molecule():
    ref = _reference_molecule()
    calc = HarmonicSprings(ref, k=5.0)
    hess = smp.finite_difference_hessian(ref, calc, delta=0.005)
    np.testing.assert_allclose(hess, hess.T, atol=1e-10)
    # analytic Hessian at the minimum: k * sum over pairs of outer(u_ij, u_ij) blocks
    n = len(ref)
    exact = np.zeros((3 * n, 3 * n))
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            u = ref.positions[j] - ref.positions[i]
            u /= np.linalg.norm(u)
            blk = 5.0 * np.outer(u, u)
            exact[3 * i:3 * i + 3, 3 * j:3 * j + 3] -= blk
            exact[3 * i:3 * i + 3, 3 * i:3 * i + 3] += blk
    np.testing.assert_allclose(hess, exact, atol=2e-4)
    vals, vecs = smp.vibrational_modes(ref, hess)
    assert len(vals) == 3 * n - 6 and (vals > 0).all()


@pytest.mark.parametrize("T", [50.0, 300.0])
def test_normal_mode_sampling_gives_equipartition_energy(T):
    ref = _reference_molecule()
    calc = HarmonicSprings(ref, k=20.0)
    params = smp.validate_params("normal_modes", {"per_root": 600, "temperatures": [T], "relax_steps": 0,
                                                  "delta": 0.002, "min_distance_factor": 0.0}, "t")
    samples = smp.sample_normal_modes(ref, np.random.default_rng(7), params, calc)
    assert len(samples) == 600
    energies = np.array([calc.get_potential_energy(s.atoms) for s in samples])
    n_modes = 3 * len(ref) - 6
    expected = n_modes * units.kB * T / 2
    # statistical error of the mean: sqrt(2 / (n_modes * n_samples)) ~ 1.7 %; anharmonicity of the
    # distance springs adds a little at 300 K
    assert energies.mean() == pytest.approx(expected, rel=0.08)
    assert all(s.params["T"] == T and s.params["n_modes"] == n_modes for s in samples)
    # the centre of mass does not move (rigid-body modes are excluded)
    com0 = ref.get_center_of_mass()
    assert max(np.linalg.norm(s.atoms.get_center_of_mass() - com0) for s in samples) < 1e-8


def test_langevin_md_reaches_target_temperature():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)  # 32 atoms
    params = smp.validate_params("md", {"temperatures": [600], "per_root": 40, "friction": 0.05,
                                        "equil_steps": 60, "interval": 5, "timestep": 2.0}, "t")
    samples = smp.sample_md(atoms, np.random.default_rng(3), params, EMT())
    temps = np.array([s.atoms.get_temperature() for s in samples])
    assert temps.mean() == pytest.approx(600, rel=0.1)
    # snapshots form a chain and are decorrelated enough to differ
    assert [s.parent for s in samples] == list(range(-1, 39))
    assert all(s.params["T"] == 600 for s in samples)
    d = np.linalg.norm(samples[1].atoms.positions - samples[0].atoms.positions, axis=1)
    assert d.mean() > 0.02
    assert samples[-1].params["step"] == 60 + 40 * 5


def test_md_relax_steps_starts_from_the_relaxed_root():
    """A strained root (rattled Cu) relaxed first: the first snapshot is far
    lower in energy than one from MD on the root as built, and the samples say so."""
    root = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    root.rattle(0.15, seed=4)
    base = {"temperatures": [50], "per_root": 1, "friction": 0.05, "equil_steps": 2, "interval": 1, "timestep": 1.0}
    energy = {}
    for relax in (0, 60):
        params = smp.validate_params("md", {**base, "relax_steps": relax}, "t")
        assert params["relax_steps"] == relax
        (sample,) = smp.sample_md(root, np.random.default_rng(3), params, EMT())
        assert ("relax_steps" in sample.params) == bool(relax)
        sample.atoms.calc = EMT()
        energy[relax] = sample.atoms.get_potential_energy() / len(root)
    relaxed = root.copy()
    relaxed.calc = EMT()
    e_root = relaxed.get_potential_energy() / len(root)
    assert energy[60] < energy[0] - 0.02 and energy[0] > e_root - 0.03  # 3 MD steps do not relax it
    assert smp.validate_params("md", {}, "t")["relax_steps"] == 0
    with pytest.raises(ConfigError, match="relax_steps"):
        smp.validate_params("md", {"relax_steps": -1}, "t")


def test_rattle_respects_min_distance_strain_and_stdev():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    params = smp.validate_params("rattle", {"per_root": 40, "stdev": 0.05, "strain": 0.04}, "t")
    samples = smp.sample_rattle(atoms, np.random.default_rng(1), params)
    assert len(samples) == 40
    disp = []
    for s in samples:
        assert respects_min_distance(s.atoms)
        strain = np.linalg.solve(atoms.cell.array, s.atoms.cell.array) - np.eye(3)
        assert np.abs(strain).max() <= 0.04 + 1e-12 and np.abs(strain).max() > 0
        np.testing.assert_allclose(strain, strain.T, atol=1e-12)
        unstrained = s.atoms.positions @ np.linalg.solve(s.atoms.cell.array, atoms.cell.array)
        disp.append(unstrained - atoms.positions)
    # displacement stdev ~ 0.05 A (strain removed approximately: cell-scaled displacements are tiny)
    assert np.std(np.concatenate(disp)) == pytest.approx(0.05, rel=0.1)
    # molecules are not strained
    mol = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    out = smp.sample_rattle(mol, np.random.default_rng(2), params)
    assert all(s.params["strain"] == 0.0 and (s.atoms.cell.array == 0).all() for s in out)


def test_rattle_rejects_overlaps():
    # a huge stdev makes most draws overlap; what comes back must still respect the minimum distance
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    params = smp.validate_params("rattle", {"per_root": 10, "stdev": 1.0, "strain": 0.0, "max_tries": 5}, "t")
    out = smp.sample_rattle(atoms, np.random.default_rng(0), params)
    assert len(out) < 10 and all(respects_min_distance(s.atoms) for s in out)


def test_non_finite_structures_never_pass_the_distance_check():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    assert respects_min_distance(atoms)
    atoms.positions[1, 0] = np.nan
    assert not respects_min_distance(atoms) and not respects_min_distance(atoms, 0.0)


def test_rattle_relax_tree_lowers_energy():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    params = smp.validate_params("rattle_relax", {"per_root": 9, "keep_rattled": True, "relax_steps": 5,
                                                  "stdev": [0.1, 0.15], "branching": 2}, "t")
    samples = smp.sample_rattle_relax(atoms, np.random.default_rng(4), params, EMT())
    assert len(samples) == 9
    calc = EMT()
    for k, s in enumerate(samples):
        assert s.parent < k
        if s.params["stage"] == "relaxed":
            parent = samples[s.parent]
            assert parent.params["stage"] == "rattled"
            assert calc.get_potential_energy(s.atoms) < calc.get_potential_energy(parent.atoms)
    assert max(s.params["depth"] for s in samples) >= 2  # a tree, not a star


def test_high_energy_stretch_and_compress():
    mol = Atoms("CO", positions=[[0, 0, 0], [1.13, 0, 0]])
    params = smp.validate_params("high_energy", {"methods": ["stretch"], "stretch": [1.5, 1.5], "stdev": 0.0,
                                                 "per_root": 3}, "t")
    for s in smp.sample_high_energy(mol, np.random.default_rng(0), params):
        assert s.atoms.get_distance(0, 1) == pytest.approx(1.5 * 1.13)
        assert s.params["method"] == "stretch"
    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    params = smp.validate_params("high_energy", {"methods": ["compress"], "compress": [0.9, 0.9], "stdev": 0.0,
                                                 "per_root": 2}, "t")
    for s in smp.sample_high_energy(cu, np.random.default_rng(0), params):
        assert s.atoms.get_volume() == pytest.approx(0.9**3 * cu.get_volume())
    # hot compressed MD: energy above the strained-but-cold structure
    params = smp.validate_params("high_energy", {"methods": ["compress_md"], "compress": [0.92, 0.92],
                                                 "md_steps": 20, "temperature": 3000, "per_root": 1}, "t")
    out = smp.sample_high_energy(cu, np.random.default_rng(0), params, EMT())
    calc = EMT()
    cold = cu.copy()
    cold.set_cell(cu.cell * 0.92, scale_atoms=True)
    assert calc.get_potential_energy(out[0].atoms) > calc.get_potential_energy(cold)
    assert smp.needs_calculator("high_energy", params) and not smp.needs_calculator("rattle", {})


@pytest.mark.parametrize("sampler, params, match", [
    ("rattle", {"stdev": -0.1}, "stdev"),
    ("rattle", {"stdv": 0.1}, "stdv"),
    ("md", {"temperatures": [300, -5]}, "temperatures"),
    ("md", {"per_root": 0}, "per_root"),
    ("high_energy", {"methods": ["dimer"]}, "methods"),
    ("wiggle", {}, "sampler"),
])
def test_bad_sampler_params_are_named(sampler, params, match):
    with pytest.raises(ConfigError, match=match) as err:
        smp.validate_params(sampler, params, "generation.mix[0]")
    assert "\n" not in str(err.value) and "generation.mix[0]" in str(err.value)


@pytest.mark.parametrize("sampler, params, message", [
    ("rattle", {"stdv": 0.1}, "generation.mix[0].params: unknown key 'stdv' (did you mean 'stdev'?); allowed: "
                              "include_root, min_distance_factor, per_root, stdev, strain, max_tries"),
    ("rattle", {"stdev": [0.2, 0.1]}, "generation.mix[0].params.stdev = [0.2, 0.1] is invalid: must be a number "
                                      ">= 0 or [min, max] with 0 <= min <= max (A)"),
    ("high_energy", {"stretch": [1, 2, 3]}, "generation.mix[0].params.stretch = [1, 2, 3] is invalid: must be a "
                                            "number >= 0 or [min, max] with 0 <= min <= max (scale factor)"),
    ("md", {"temperatures": []}, "generation.mix[0].params.temperatures = [] is invalid: must be a temperature "
                                 "> 0 K or a non-empty list of them"),
    ("md", {"per_root": 0}, "generation.mix[0].params.per_root = 0 is invalid: must be >= 1 "
                            "(samples taken from one root)"),
    ("md", {"per_root": True}, "generation.mix[0].params.per_root must be an integer, got True"),
    ("md", {"timestep": 0}, "generation.mix[0].params.timestep = 0 is invalid: must be > 0 fs"),
    ("normal_modes", {"relax_steps": -1}, "generation.mix[0].params.relax_steps = -1 is invalid: must be >= 0 "
                                          "(0 = none)"),
    ("none", {"min_distance_factor": 2}, "generation.mix[0].params.min_distance_factor = 2 is invalid: must be in "
                                         "[0, 2) (fraction of the covalent-radius sum)"),
    ("rattle_relax", {"keep_rattled": 1}, "generation.mix[0].params.keep_rattled must be true or false, got 1"),
    ("none", [1], "generation.mix[0].params must be a mapping of field: value, got list"),
])
def test_sampler_params_messages(sampler, params, message):
    """Each sampler's params are a typed section: one line naming ``where.params.key`` and the allowed values."""
    with pytest.raises(ConfigError) as err:
        smp.validate_params(sampler, params, "generation.mix[0]")
    assert str(err.value) == message


def test_sampler_params_keep_their_types_and_order():
    """Defaults in the sampler's order then the common keys given; ranges and temperatures as lists
    of floats, numbers as floats, an integer ``min_distance_factor`` as given."""
    out = smp.validate_params("high_energy", {"min_distance_factor": 1, "methods": "stretch", "stretch": 1.5,
                                              "temperature": 300, "per_root": 2.0, "include_root": True}, "t")
    assert list(out) == [*smp.SAMPLER_DEFAULTS["high_energy"], "min_distance_factor", "include_root"]
    assert out["methods"] == ["stretch"] and out["stretch"] == [1.5, 1.5] and out["compress"] == [0.82, 0.94]
    assert type(out["temperature"]) is float and type(out["per_root"]) is int and out["per_root"] == 2
    assert type(out["min_distance_factor"]) is int and out["include_root"] is True
    md = smp.validate_params("md", {"temperatures": 450}, "t")
    assert md["temperatures"] == [450.0] and type(md["temperatures"][0]) is float
    assert smp.validate_params("rattle", {}, "t")["stdev"] is not smp.SAMPLER_DEFAULTS["rattle"]["stdev"]


def test_mmff_normal_modes_need_no_teacher_and_follow_the_force_field():
    """``hessian: mmff``: RDKit's MMFF94 gives forces (checked by finite differences), the Hessian and
    the relaxation; the sampler runs without a teacher and the samples are thermal around its minimum."""
    from mlff_distiller.generation import molecules

    smiles = "CC(=O)Oc1ccccc1C(=O)O"  # aspirin, 21 atoms
    root = molecules.embed_smiles(smiles, 1, seed=0)[0]
    root.info["smiles"] = smiles
    probe = root.copy()
    probe.positions[3] += [0.05, -0.03, 0.02]
    probe.calc = smp.mmff_calculator(root)
    f = probe.get_forces()
    h, x0 = 1e-4, probe.positions.copy()
    for i, a in ((3, 0), (10, 2)):
        x = x0.copy()
        x[i, a] += h
        probe.positions = x
        e_plus = probe.get_potential_energy()
        x[i, a] -= 2 * h
        probe.positions = x
        e_minus = probe.get_potential_energy()
        assert -(e_plus - e_minus) / (2 * h) == pytest.approx(f[i, a], rel=1e-3, abs=1e-4)
    params = smp.validate_params("normal_modes", {"hessian": "mmff", "per_root": 4, "temperatures": [300]}, "t")
    assert not smp.needs_calculator("normal_modes", params) and smp.needs_calculator("normal_modes", {})
    samples = smp.sample_normal_modes(root, np.random.default_rng(1), params, calc=None)
    assert len(samples) == 4 and all(s.params["hessian"] == "mmff" and s.params["n_modes"] == 57 for s in samples)
    assert "smiles" not in samples[0].atoms.info  # the pool stores no extra keys
    shift = [np.sqrt(((s.atoms.positions - root.positions) ** 2).sum(1)).mean() for s in samples]
    assert all(0.02 < d < 1.0 for d in shift), shift
    with pytest.raises(ConfigError, match="molecules built from SMILES"):
        smp.sample_normal_modes(bulk("Cu", "fcc", a=3.61), np.random.default_rng(1), params)
    with pytest.raises(ConfigError, match="params.hessian: unknown value 'xtb'; allowed: teacher, mmff"):
        smp.validate_params("normal_modes", {"hessian": "xtb"}, "t")
