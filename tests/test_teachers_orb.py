"""Orb teacher against orb-models' own ORBCalculator on the same (random, locally saved) weights."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, molecule

from mlff_distiller.errors import ConfigError, TeacherError
from mlff_distiller.teachers import build_teacher

torch = pytest.importorskip("torch")
pretrained = pytest.importorskip("orb_models.forcefield.pretrained")


@pytest.fixture
def restore_torch():
    """orb's own loader (used for the reference) changes torch globals; put them back."""
    dtype, prec = torch.get_default_dtype(), torch.get_float32_matmul_precision()
    yield
    torch.set_default_dtype(dtype)
    torch.set_float32_matmul_precision(prec)


@pytest.fixture(scope="module")
def xs_weights(tmp_path_factory):
    """Random weights of the orb-v2 architecture with 5 message-passing steps = orb-d3-xs-v2's shape."""
    torch.manual_seed(0)
    model = pretrained.orb_v2_architecture(num_message_passing_steps=5, device="cpu")
    path = tmp_path_factory.mktemp("orb") / "orb-xs-random.ckpt"
    torch.save(model.state_dict(), path)
    return str(path)


def _structures():
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    si.rattle(0.05, seed=1)
    mol = molecule("CH3CH2OH")
    mol.rattle(0.02, seed=2)
    return si, mol


def _orb_reference(model_name, weights, atoms_list):
    from orb_models.forcefield.calculator import ORBCalculator

    loader = pretrained.ORB_PRETRAINED_MODELS[model_name]
    calc = ORBCalculator(loader(weights_path=weights, device="cpu", compile=False), device="cpu")
    out = []
    for atoms in atoms_list:
        a = atoms.copy()
        a.calc = calc
        stress = a.get_stress() if all(a.pbc) else None
        out.append((a.get_potential_energy(), a.get_forces(), stress))
    return out


def _check_against_orb(teacher, model_name, weights):
    structs = _structures()
    dtype, prec = torch.get_default_dtype(), torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    batched = teacher.label(list(structs))
    # the teacher left torch's global state as it found it
    assert torch.get_default_dtype() == dtype and torch.get_float32_matmul_precision() == "highest"
    torch.set_float32_matmul_precision(prec)
    ref = _orb_reference(model_name, weights, structs)
    for r, (e, f, s) in zip(batched, ref):
        assert r.ok, r.error
        assert r.energy == pytest.approx(e, abs=1e-4)
        np.testing.assert_allclose(r.forces, f, atol=1e-4)
        if s is None:
            assert r.stress is None
        else:
            np.testing.assert_allclose(r.stress, s, atol=1e-5)
    singles = [teacher.label([a])[0] for a in structs]
    for b, s in zip(batched, singles):  # batch == one-at-a-time
        assert b.energy == pytest.approx(s.energy, abs=1e-4)
        np.testing.assert_allclose(b.forces, s.forces, atol=1e-4)


def test_orb_matches_orbcalculator_molecule_and_cell(xs_weights, restore_torch):
    teacher = build_teacher({"name": "orb", "model": "orb-d3-xs-v2", "weights_path": xs_weights}, cache=False)
    assert teacher.capabilities["batched"] and teacher.capabilities["conservative_forces"] is False
    fp = teacher.fingerprint
    assert fp["package"] == "orb-models" and fp["version"] and len(fp["weights_sha256"]) == 64
    assert teacher.fingerprint_id.startswith("orb-d3-xs-v2-")
    _check_against_orb(teacher, "orb-d3-xs-v2", xs_weights)


def test_orb_failure_isolation_in_batch(xs_weights):
    teacher = build_teacher({"name": "orb", "model": "orb-d3-xs-v2", "weights_path": xs_weights})
    si, mol = _structures()
    slab = si.copy()
    slab.pbc = (True, True, False)
    res = teacher.label([si, slab, mol])
    assert [r.ok for r in res] == [True, False, True]
    assert "partly periodic" in res[1].error


def test_orb_missing_and_mismatched_weights(tmp_path, xs_weights):
    with pytest.raises(TeacherError, match="weights_path '/nope/orb.ckpt' does not exist"):
        build_teacher({"name": "orb", "weights_path": "/nope/orb.ckpt"})
    with pytest.raises(TeacherError, match="does not fit the orb-v2 architecture"):
        build_teacher({"name": "orb", "model": "orb-v2", "weights_path": xs_weights}, cache=False)
    with pytest.raises(ConfigError, match="teacher.model"):
        build_teacher({"name": "orb", "model": "orb-v99", "weights_path": xs_weights})


def test_orb_without_weights_offline_gives_one_line_hint(monkeypatch):
    from mlff_distiller.teachers import orb_teacher

    monkeypatch.setattr(orb_teacher, "_url_reachable", lambda url, timeout=3.0: False)  # the network check only
    with pytest.raises(TeacherError) as err:
        build_teacher("orb-v2", cache=False)
    msg = str(err.value)
    assert "weights_path" in msg and "orb-v2-20241011.ckpt" in msg and "\n" not in msg


@pytest.mark.slow
def test_orb_v2_full_architecture_matches_orbcalculator(tmp_path, restore_torch):
    torch.manual_seed(1)
    model = pretrained.orb_v2_architecture(device="cpu")
    path = tmp_path / "orb-v2-random.ckpt"
    torch.save(model.state_dict(), path)
    teacher = build_teacher({"name": "orb", "model": "orb-v2", "weights_path": str(path)}, cache=False)
    _check_against_orb(teacher, "orb-v2", str(path))
