"""FeNNol teacher: a small FENNIX model built offline from a config dict, saved as .fnx."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
from ase.build import bulk, molecule

from mlff_distiller.errors import TeacherError
from mlff_distiller.teachers import build_teacher
from test_teachers_fd import fd_forces, fd_stress

jax = pytest.importorskip("jax")
fennol = pytest.importorskip("fennol")

SMALL_FENNIX = dict(
    cutoff=5.0,
    energy_unit="kcal/mol",  # not eV on purpose: the teacher must convert
    energy_terms=["energy"],
    modules=OrderedDict(
        embedding={"module_name": "PAINN", "dim": 16, "nlayers": 1, "nchannels": 4,
                   "message_hidden": [16], "update_hidden": [16]},
        energy={"module_name": "NEURAL_NET", "neurons": [16, 1], "input_key": "embedding", "squeeze": True},
    ),
)
# ten molecules, ten different atom counts (2..12)
TEN_SIZES = ["H2", "H2O", "NH3", "CH4", "CH3OH", "CH3CHO", "C2H6", "CH3CH2OH", "C3H8", "C6H6"]


def make_small_fnx(path) -> str:
    model = fennol.FENNIX(**SMALL_FENNIX, rng_key=jax.random.PRNGKey(0))
    model.save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def fnx(tmp_path_factory):
    return make_small_fnx(tmp_path_factory.mktemp("fennol") / "small.fnx")


@pytest.fixture(scope="module")
def teacher(fnx):
    return build_teacher({"name": "fennol", "weights_path": fnx})


def _si():
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    si.rattle(0.05, seed=1)
    return si


def test_fennol_ten_sizes_without_a_recompilation_each(teacher):
    """Runs first, on the freshly loaded model, so the count is the cold-start count."""
    mols = [molecule(name) for name in TEN_SIZES]
    assert len({len(m) for m in mols}) == 10
    before = teacher.compiled_variants()
    results = [teacher.label([m])[0] for m in mols]  # one at a time: the worst case for recompiles
    first = teacher.compiled_variants() - before
    again = [teacher.label([m])[0] for m in mols]
    second = teacher.compiled_variants() - before - first
    assert all(r.ok for r in results)
    # padding buckets: fewer compilations than sizes (7 measured here, 19 without padding:
    # benchmarks/results/teachers.md), and none at all once the buckets exist
    assert first < len(mols), f"{first} compilations for {len(mols)} sizes"
    assert second == 0
    for a, b in zip(results, again):  # padded sizes may differ between passes: float32 rounding only
        assert a.energy == pytest.approx(b.energy, abs=1e-5)
    batched = teacher.label(mols)
    for b, s in zip(batched, results):
        assert b.energy == pytest.approx(s.energy, abs=1e-4)
        np.testing.assert_allclose(b.forces, s.forces, atol=1e-4)


def test_fennol_matches_fennix_calculator_in_ev(teacher, fnx):
    from fennol.ase import FENNIXCalculator

    mol = molecule("CH3CH2OH")
    structs = [_si(), mol]
    res = teacher.label(structs)
    calc = FENNIXCalculator(fnx, use_atom_padding=True, gpu_preprocessing=False)
    for atoms, r in zip(structs, res):
        assert r.ok, r.error
        a = atoms.copy()
        a.calc = calc
        assert r.energy == pytest.approx(a.get_potential_energy(), abs=1e-5)
        np.testing.assert_allclose(r.forces, a.get_forces(), atol=1e-5)
    assert res[1].stress is None and res[0].stress.shape == (6,)
    fp = teacher.fingerprint
    assert fp["package"] == "fennol" and len(fp["weights_sha256"]) == 64


def test_fennol_fd_forces_and_stress(teacher):
    mol = molecule("CH3OH")
    mol.rattle(0.03, seed=3)
    r = teacher.label([mol])[0]
    comps = [(0, 0), (2, 1), (4, 2)]
    # batch_size=1 reuses the single-structure compilation (padding) instead of compiling a batch shape
    fd = fd_forces(teacher, mol, comps, 1e-3, batch_size=1)
    np.testing.assert_allclose(fd, [r.forces[a, k] for a, k in comps], atol=2e-3)
    si = _si()
    r = teacher.label([si])[0]
    assert np.abs(r.stress).max() > 1e-4  # kcal/mol-scale random model: small but non-zero
    np.testing.assert_allclose(fd_stress(teacher, si, 1e-3, batch_size=1), r.stress, atol=5e-6)


def test_fennol_missing_and_bad_file(tmp_path):
    with pytest.raises(TeacherError, match="needs weights_path"):
        build_teacher("fennol")
    with pytest.raises(TeacherError, match="does not exist"):
        build_teacher({"name": "fennol", "weights_path": str(tmp_path / "none.fnx")})
    junk = tmp_path / "junk.fnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(TeacherError, match="cannot load"):
        build_teacher({"name": "fennol", "weights_path": str(junk)})


def test_fennol_fingerprint_follows_weights_not_file_name(teacher, fnx, tmp_path):
    import shutil

    copy = tmp_path / "renamed.fnx"
    shutil.copy(fnx, copy)
    other = build_teacher({"name": "fennol", "weights_path": str(copy)}, cache=False)
    assert other.fingerprint_id == teacher.fingerprint_id
    assert other.fingerprint["file"] == "renamed.fnx"
