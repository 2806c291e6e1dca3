"""Teacher API, ASE-calculator wrapper (EMT, LJ), CHGNet default teacher, failure isolation, bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from mlff_distiller.errors import ConfigError, TeacherError
from mlff_distiller.teachers import LabelResult, TeacherCalculationError, build_teacher, list_teachers
from test_teachers_fd import fd_forces, fd_stress


def _cu_cell():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=3)
    return atoms


def _cu_cluster():
    atoms = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0.1], [1.2, 1.3, 2.1]])
    return atoms


# -- EMT through the ASE wrapper ------------------------------------------------------------
@pytest.mark.parametrize(
    "spec", ["emt", {"name": "ase", "calculator": "ase.calculators.emt:EMT"}, "ase.calculators.emt:EMT"]
)
def test_emt_matches_ase_emt_directly(spec):
    teacher = build_teacher(spec, cache=False)
    atoms = _cu_cell()
    res = teacher.label([atoms])[0]
    ref = atoms.copy()
    ref.calc = EMT()
    assert res.ok
    assert res.energy == pytest.approx(ref.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(res.forces, ref.get_forces(), atol=1e-12)
    np.testing.assert_allclose(res.stress, ref.get_stress(voigt=True), atol=1e-12)
    assert atoms.calc is None  # the input was not touched


def test_emt_fd_forces_and_stress_periodic():
    teacher = build_teacher("emt")
    atoms = _cu_cell()
    res = teacher.label([atoms])[0]
    comps = [(0, 0), (3, 1), (7, 2)]
    np.testing.assert_allclose(fd_forces(teacher, atoms, comps, 1e-4), [res.forces[a, k] for a, k in comps], atol=1e-6)
    np.testing.assert_allclose(fd_stress(teacher, atoms, 1e-5), res.stress, atol=1e-7)
    assert np.abs(res.stress).max() > 1e-4


def test_emt_fd_forces_molecule_has_no_stress():
    teacher = build_teacher("emt")
    atoms = _cu_cluster()
    res = teacher.label([atoms])[0]
    assert res.ok and res.stress is None
    comps = [(a, k) for a in range(4) for k in range(3)]
    np.testing.assert_allclose(fd_forces(teacher, atoms, comps, 1e-4), res.forces.ravel(), atol=1e-6)
    np.testing.assert_allclose(res.forces.sum(axis=0), 0.0, atol=1e-10)  # isolated: momentum conserved


def test_stress_only_for_3d_periodic():
    teacher = build_teacher("emt")
    slab = _cu_cell()
    slab.pbc = (True, True, False)
    res = teacher.label([slab])[0]
    assert res.ok and res.stress is None


def test_spec_rebuilds_same_teacher_and_fingerprint_is_stable():
    t1 = build_teacher({"name": "lj", "kwargs": {"sigma": 2.0}}, cache=False)
    t2 = build_teacher(json.loads(json.dumps(t1.spec)), cache=False)
    assert t1.fingerprint == t2.fingerprint and t1.fingerprint_id == t2.fingerprint_id
    t3 = build_teacher({"name": "lj", "kwargs": {"sigma": 2.1}}, cache=False)
    assert t3.fingerprint_id != t1.fingerprint_id  # a parameter that changes the numbers changes the id
    assert t1.fingerprint["package"] == "ase" and t1.fingerprint["version"]


def test_build_is_cached_per_process():
    assert build_teacher("emt") is build_teacher({"name": "emt"})
    assert build_teacher("emt", cache=False) is not build_teacher("emt")


def test_calculator_drives_ase():
    teacher = build_teacher("emt")
    atoms = _cu_cell()
    atoms.calc = teacher.calculator()
    ref = _cu_cell()
    ref.calc = EMT()
    assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(atoms.get_stress(), ref.get_stress(), atol=1e-12)
    bad = Atoms("Fe2", positions=[[0, 0, 0], [2, 0, 0]])
    bad.calc = teacher.calculator()
    with pytest.raises(TeacherCalculationError, match="Fe"):
        bad.get_potential_energy()


# -- failure isolation ----------------------------------------------------------------------
def test_failure_isolation_one_bad_structure_in_a_batch():
    teacher = build_teacher("emt")
    good = [_cu_cell(), _cu_cluster()]
    nan_pos = _cu_cluster()
    nan_pos.positions[1, 0] = np.nan
    fe = Atoms("Fe2", positions=[[0, 0, 0], [2, 0, 0]])
    empty = Atoms()
    res = teacher.label([good[0], nan_pos, fe, good[1], empty])
    assert [r.ok for r in res] == [True, False, False, True, False]
    assert "NaN" in res[1].error and "Fe" in res[2].error and "no atoms" in res[4].error
    assert res[0].energy == pytest.approx(teacher.label([good[0]])[0].energy)


def test_backend_exception_and_nan_output_become_failures():
    from ase.calculators.calculator import Calculator

    class Flaky(Calculator):
        implemented_properties = ("energy", "forces")

        def calculate(self, atoms=None, properties=("energy",), system_changes=()):
            super().calculate(atoms, properties, system_changes)
            if len(self.atoms) == 3:
                raise ValueError("three atoms are bad luck")
            e = np.nan if len(self.atoms) == 4 else float(len(self.atoms))
            self.results = {"energy": e, "forces": np.zeros((len(self.atoms), 3))}

    import sys
    import types

    mod = types.ModuleType("flaky_teacher_mod")
    mod.Flaky = Flaky
    sys.modules["flaky_teacher_mod"] = mod
    teacher = build_teacher({"name": "ase", "calculator": "flaky_teacher_mod:Flaky"}, cache=False)
    structs = [
        Atoms("H2", positions=np.eye(3)[:2] * 3),
        Atoms("H3", positions=np.eye(3) * 3),
        Atoms("H4", positions=np.vstack([np.eye(3), [[1, 1, 1]]]) * 3),
        Atoms("H5", positions=np.random.rand(5, 3) * 5),
    ]
    res = teacher.label(structs)
    assert [r.ok for r in res] == [True, False, False, True]
    assert "ValueError: three atoms are bad luck" in res[1].error
    assert "non-finite energy" in res[2].error
    assert res[3].energy == 5.0


def test_to_atoms_attaches_labels():
    teacher = build_teacher("emt")
    atoms = _cu_cell()
    res = teacher.label([atoms])[0]
    labelled = res.to_atoms(atoms)
    assert labelled.get_potential_energy() == res.energy
    np.testing.assert_array_equal(labelled.get_stress(), res.stress)
    with pytest.raises(TeacherCalculationError):
        LabelResult.failure("x").to_atoms(atoms)


# -- bad input ------------------------------------------------------------------------------
def test_unknown_teacher_lists_known_ones():
    with pytest.raises(TeacherError) as err:
        build_teacher("orbital-9000")
    msg = str(err.value)
    assert "orbital-9000" in msg and "chgnet" in msg and "emt" in msg and "\n" not in msg


def test_bad_import_path():
    with pytest.raises(TeacherError, match="does not import"):
        build_teacher("no_such_pkg.calculators:Thing")
    with pytest.raises(TeacherError, match="no attribute"):
        build_teacher({"name": "ase", "calculator": "ase.calculators.emt:NotEMT"})
    with pytest.raises(ConfigError, match="teacher.calculator"):
        build_teacher({"name": "ase"})


def test_unknown_option_is_named():
    with pytest.raises(ConfigError, match="teacher.wieghts_path"):
        build_teacher({"name": "chgnet", "wieghts_path": "x"})


def test_check_elements_names_element_and_teacher():
    teacher = build_teacher("emt")
    teacher.check_elements([_cu_cell(), molecule("CH4")])
    with pytest.raises(TeacherError) as err:
        teacher.check_elements([_cu_cell(), Atoms("FeCu", positions=[[0, 0, 0], [2, 0, 0]])])
    msg = str(err.value)
    assert "Fe" in msg and "'emt'" in msg and "structure 1" in msg


def test_label_rejects_non_atoms():
    with pytest.raises(TeacherError, match="not ase.Atoms"):
        build_teacher("emt").label([_cu_cell(), "Cu.xyz"])


def test_list_teachers_reports_every_teacher():
    rows = {r["name"]: r for r in list_teachers()}
    assert {"chgnet", "orb", "fennol", "xtb", "emt", "lj", "ase"} <= set(rows)
    assert rows["emt"]["available"] and rows["chgnet"]["available"]
    for r in rows.values():
        assert r["available"] or r["reason"]  # every unavailable teacher says why


# -- CHGNet, the default teacher --------------------------------------------------------------
@pytest.fixture(scope="module")
def chgnet():
    return build_teacher("chgnet")


def test_chgnet_is_default_and_fingerprinted(chgnet):
    assert build_teacher() is chgnet
    fp = chgnet.fingerprint
    assert fp["package"] == "chgnet" and fp["model"] == "0.3.0" and len(fp["weights_sha256"]) == 64
    assert chgnet.fingerprint_id.startswith("chgnet-0.3.0-")
    assert chgnet.elements == frozenset(range(1, 95))


def test_chgnet_fd_forces_and_stress_periodic(chgnet):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=2)
    res = chgnet.label([atoms])[0]
    assert res.ok and res.stress.shape == (6,)
    comps = [(0, 0), (5, 2)]
    # float32 model: step 2e-3 A balances truncation error against float32 energy noise / (2h)
    np.testing.assert_allclose(fd_forces(chgnet, atoms, comps, 2e-3), [res.forces[a, k] for a, k in comps], atol=2e-3)
    np.testing.assert_allclose(fd_stress(chgnet, atoms, 2e-3), res.stress, atol=1e-4)
    assert np.abs(res.stress).max() > 1e-3


def test_chgnet_molecule_boxed_fd_forces_and_box_independence(chgnet):
    mol = molecule("CH3OH")
    mol.rattle(0.03, seed=4)
    res = chgnet.label([mol])[0]
    assert res.ok and res.stress is None
    comps = [(0, 0), (1, 2), (3, 1)]
    np.testing.assert_allclose(fd_forces(chgnet, mol, comps, 2e-3), [res.forces[a, k] for a, k in comps], atol=2e-3)
    # the box leaves no image within the cutoff: a bigger box gives the same numbers
    big = mol.copy()
    big.center(vacuum=20.0)
    big.pbc = True
    res_big = chgnet.label([big])[0]
    assert res_big.energy == pytest.approx(res.energy, abs=1e-4)
    np.testing.assert_allclose(res_big.forces, res.forces, atol=1e-3)  # float32, other origin


def test_chgnet_batch_equals_single_and_isolates_failures(chgnet):
    si = bulk("Si", "diamond", a=5.43)
    si.rattle(0.02, seed=5)
    mol = molecule("H2O")
    slab = bulk("Si", "diamond", a=5.43, cubic=True)
    slab.pbc = (True, True, False)
    assert chgnet.capabilities["batched"] and chgnet.default_batch_size == 1  # CPU: one at a time by default
    batch = chgnet.label([si, slab, mol], batch_size=3)
    assert [r.ok for r in batch] == [True, False, True]
    assert "partly periodic" in batch[1].error
    for atoms, r in zip([si, mol], [batch[0], batch[2]]):
        single = chgnet.label([atoms])[0]
        assert r.energy == pytest.approx(single.energy, abs=1e-4)
        np.testing.assert_allclose(r.forces, single.forces, atol=1e-4)


def test_chgnet_one_backward_pass_gives_predict_graphs_numbers(chgnet):
    """The labels come from one backward pass (teachers/chgnet_teacher.py) instead of chgnet's
    predict_graph (two, each building a graph of the gradients): same energy, forces and stress
    (GPa) to float32 rounding, one structure at a time and in a batch of different cells."""
    from mlff_distiller.bench.systems import load_system
    from mlff_distiller.teachers.chgnet_teacher import _energy_forces_stress

    assert chgnet._one_backward  # chgnet 0.4.2 is installed here: the fast path is the one in use
    tri = bulk("Si", "diamond", a=5.43)  # primitive cell: triclinic, smaller than the 6 A cutoff
    tri.set_cell(tri.cell.array @ (np.eye(3) + [[0.02, 0.01, 0], [0, -0.01, 0.02], [0, 0, 0.01]]),
                 scale_atoms=True)
    tri.rattle(0.05, seed=7)
    water = load_system("water-96").atoms.copy()
    water.rattle(0.05, seed=8)
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=9)
    graphs = [chgnet._graph(a) for a in (tri, water, mol)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = [chgnet._model.predict_graph(g, task="efs") for g in graphs]
    for new in ([_energy_forces_stress(chgnet._model, [g])[0] for g in graphs],
                _energy_forces_stress(chgnet._model, graphs)):
        for r, n in zip(ref, new):
            assert float(n["e"]) == pytest.approx(float(r["e"]), abs=1e-6)
            np.testing.assert_allclose(n["f"], r["f"], rtol=0, atol=1e-5 * max(1.0, np.abs(r["f"]).max()))
            # stress sums many bond terms in float32: 1e-4 GPa (6e-7 eV/A^3)
            np.testing.assert_allclose(n["s"], r["s"], rtol=0, atol=1e-4 * max(1.0, np.abs(r["s"]).max()))
        assert np.abs(ref[1]["f"]).max() > 1.0  # the comparison is not of zeros


def test_chgnet_missing_weights_file():
    with pytest.raises(TeacherError, match="weights_path '/nonexistent/chgnet.pth.tar' does not exist"):
        build_teacher({"name": "chgnet", "weights_path": "/nonexistent/chgnet.pth.tar"})


# -- GFN2-xTB through tblite ---------------------------------------------------------------
def test_xtb_fd_forces_and_charge_from_info():
    pytest.importorskip("tblite")
    teacher = build_teacher("xtb")
    mol = molecule("CH3OH")
    mol.rattle(0.03, seed=1)
    r = teacher.label([mol])[0]
    comps = [(0, 0), (2, 1), (5, 2)]
    np.testing.assert_allclose(fd_forces(teacher, mol, comps, 1e-3), [r.forces[a, k] for a, k in comps], atol=1e-4)
    cation = mol.copy()
    cation.info.update(charge=1, spin_multiplicity=2)
    r_cat, r_again = teacher.label([cation, mol])
    assert r_cat.ok and r_cat.energy > r.energy + 5.0  # ionisation costs several eV
    assert r_again.energy == pytest.approx(r.energy, abs=1e-8)  # the charge did not leak to the next one


def test_teacher_pickles_as_its_spec():
    import pickle

    t = build_teacher({"name": "lj", "kwargs": {"sigma": 2.2}})
    t2 = pickle.loads(pickle.dumps(t))
    assert t2.fingerprint_id == t.fingerprint_id
    atoms = _cu_cell()
    assert t2.label([atoms])[0].energy == t.label([atoms])[0].energy


def test_one_teacher_cache_for_builds_unpickling_and_workers():
    import pickle

    from mlff_distiller.labeling.worker import get_teacher
    from mlff_distiller.teachers import clear_cache

    clear_cache()
    t = build_teacher({"name": "lj", "kwargs": {"sigma": 2.3}})
    assert get_teacher({"name": "lj", "kwargs": {"sigma": 2.3}}) is t
    assert pickle.loads(pickle.dumps(t)) is t
    clear_cache()
    assert build_teacher({"name": "lj", "kwargs": {"sigma": 2.3}}) is not t
    # base.py imports nothing from registry.py (the former import cycle), not even lazily
    import ast

    import mlff_distiller.teachers.base as base

    tree = ast.parse(open(base.__file__).read())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any("registry" in m for m in imported), imported


def test_label_checks_name_the_field_and_the_problem():
    from mlff_distiller.labels import LabelError, check_energy, check_forces, check_stress

    assert check_energy(np.array([[-1.5]])) == -1.5
    with pytest.raises(LabelError, match=r"energy of shape \(2,\), expected a scalar") as err:
        check_energy([1.0, 2.0])
    assert (err.value.field, err.value.kind) == ("energy", "shape")
    with pytest.raises(LabelError, match="non-finite energy") as err:
        check_energy(np.nan)
    assert err.value.kind == "finite" and np.isnan(check_energy(np.nan, finite=False))
    with pytest.raises(LabelError, match=r"forces of shape \(2, 3\), expected \(3, 3\)"):
        check_forces(np.zeros((2, 3)), 3)
    with pytest.raises(LabelError, match="non-finite forces"):
        check_forces(np.full((3, 3), np.inf), 3)
    m = np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])
    np.testing.assert_array_equal(check_stress(m), [1, 2, 3, 4, 5, 6])
    with pytest.raises(LabelError, match=r"stress of shape \(5,\)"):
        check_stress(np.zeros(5))


def test_orb_model_names_are_aliases():
    from mlff_distiller.teachers.registry import normalize_spec

    assert normalize_spec("orb-v3-conservative-inf-omat") == {"name": "orb", "model": "orb-v3-conservative-inf-omat"}
    assert normalize_spec({"name": "orb-v2", "weights_path": "w"}) == {
        "name": "orb",
        "model": "orb-v2",
        "weights_path": "w",
    }


def test_bad_batch_size_is_named():
    with pytest.raises(ConfigError, match="teacher.batch_size"):
        build_teacher({"name": "chgnet", "batch_size": 0})


def test_chgnet_rotation_and_translation_invariance(chgnet):
    from scipy.spatial.transform import Rotation

    mol = molecule("CH3OH")
    mol.rattle(0.03, seed=6)
    rot = Rotation.from_euler("xyz", [30, 50, 70], degrees=True).as_matrix()
    moved = mol.copy()
    moved.positions = mol.positions @ rot.T + np.array([3.0, -2.0, 7.5])
    r0, r1 = chgnet.label([mol, moved])
    assert r1.energy == pytest.approx(r0.energy, abs=1e-4)
    np.testing.assert_allclose(r1.forces, r0.forces @ rot.T, atol=1e-3)  # forces rotate with the molecule


def test_constraints_do_not_break_or_change_labels(chgnet):
    from ase.constraints import FixAtoms, FixCom

    for teacher in (chgnet, build_teacher("emt")):
        atoms = _cu_cell() if teacher.name == "emt" else bulk("Si", "diamond", a=5.43, cubic=True)
        plain = teacher.label([atoms])[0]
        for constraint in (FixCom(), FixAtoms(indices=[0])):
            held = atoms.copy()
            held.set_constraint(constraint)
            r = teacher.label([held])[0]
            assert r.ok and r.energy == pytest.approx(plain.energy, abs=1e-6)
            np.testing.assert_allclose(r.forces, plain.forces, atol=1e-6)  # raw forces, not projected
