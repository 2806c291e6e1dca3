"""``mlff-distill teachers list|compare`` and the compare report's numbers."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule

from mlff_distiller.cli import main
from mlff_distiller.teachers import build_teacher
from mlff_distiller.teachers.compare import compare_teachers
from mlff_distiller.teachers.registry import parse_teacher_spec as parse_teacher_arg


def _structures():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    au = bulk("Au", "fcc", a=4.1).repeat(2)
    mol = molecule("CH4")
    for k, a in enumerate((cu, au, mol)):
        a.rattle(0.05, seed=k)
    mol.info["provenance"] = {"source": "smiles:C", "sampler": "none"}
    return [cu, au, mol]


LJ = {"name": "lj", "kwargs": {"sigma": 2.3, "epsilon": 0.05, "rc": 6.0}}


def test_compare_numbers_match_a_direct_computation():
    structs = _structures()
    emt, lj = build_teacher("emt"), build_teacher(LJ)
    rep = compare_teachers(emt, lj, structs)
    ra, rb = emt.label(structs), lj.label(structs)
    de = np.array([(a.energy - b.energy) / len(s) for a, b, s in zip(ra, rb, structs)])
    df = np.concatenate([(a.forces - b.forces).ravel() for a, b in zip(ra, rb)])
    assert rep["compared"] == 3 and rep["energy_per_atom"]["mae"] == pytest.approx(np.abs(de).mean())
    assert rep["energy_per_atom_offset_removed"]["max"] == pytest.approx(np.abs(de - de.mean()).max())
    assert rep["forces"]["rmse"] == pytest.approx(np.sqrt((df**2).mean()))
    assert rep["stress"]["n"] == 12  # two periodic cells x 6 Voigt components, none for the molecule
    h = np.concatenate([(ra[2].forces - rb[2].forces)[structs[2].numbers == 1].ravel()])
    assert rep["by_element"]["H"]["forces"]["max"] == pytest.approx(np.abs(h).max())
    assert rep["by_structure_type"]["periodic"]["structures"] == 2
    assert rep["by_structure_type"]["molecule"]["structures"] == 1
    assert list(rep["by_source"]) == ["smiles"]


def test_compare_teacher_with_itself_is_zero_and_failures_are_reported():
    structs = _structures() + [bulk("Fe", "bcc", a=2.87)]  # Fe: not an EMT element
    rep = compare_teachers(build_teacher("emt"), build_teacher("emt", cache=False), structs)
    assert rep["forces"]["max"] == 0.0 and rep["energy_per_atom"]["max"] == 0.0
    assert rep["compared"] == 3 and rep["failed_a"][0][0] == 3 and "Fe" in rep["failed_a"][0][1]


def test_cli_compare_extxyz_writes_json(tmp_path, capsys):
    path = tmp_path / "s.extxyz"
    ase.io.write(path, _structures())
    out = tmp_path / "rep.json"
    rc = main(["teachers", "compare", "emt", "lj,kwargs={sigma: 2.3, epsilon: 0.05, rc: 6.0}", str(path),
               "--quiet", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "forces by element" in text and "energy, offset removed" in text
    rep = json.loads(out.read_text())
    assert rep["teacher_b"]["spec"]["kwargs"]["sigma"] == 2.3 and rep["compared"] == 3


def test_cli_compare_reads_dataset_h5(tmp_path, capsys):
    store = pytest.importorskip("mlff_distiller.data.store")
    path = tmp_path / "pool.h5"
    with store.DatasetWriter(path, label_fields=()) as w:
        w.append(_structures())
    assert main(["teachers", "compare", "emt", "emt", str(path), "--quiet", "--limit", "2"]) == 0
    assert "compared: 2" in capsys.readouterr().out


def test_cli_list(capsys):
    assert main(["teachers", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["emt"]["available"] and not rows["orb"]["available"] and "weights_path" in rows["orb"]["reason"]
    assert main(["teachers", "list"]) == 0
    assert "chgnet" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["teachers", "compare", "nosuch", "emt", "STRUCT"], "unknown teacher 'nosuch'; known teachers: chgnet"),
        (["teachers", "compare", "emt", "nomod.calc:X", "STRUCT"], "does not import"),
        (["teachers", "compare", "emt", "emt", "/no/such.extxyz"], "does not exist"),
        (
            ["teachers", "compare", "emt", "orb,weights_path=/no/orb.ckpt", "STRUCT"],
            "weights_path '/no/orb.ckpt' does not exist",
        ),
        (["teachers", "compare", "emt", "emt,bogus", "STRUCT"], "not key=value"),
        (["teachers", "compare", "emt", "emt", "STRUCT", "--limit", "0"], "--limit"),
    ],
)
def test_cli_bad_input_one_line_exit_2(tmp_path, capsys, argv, needle):
    path = tmp_path / "s.extxyz"
    ase.io.write(path, _structures())
    argv = [str(path) if a == "STRUCT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlff-distill: error: ") and needle in err and "\n" not in err


def test_parse_teacher_arg_forms(tmp_path):
    assert parse_teacher_arg("chgnet") == "chgnet"
    assert parse_teacher_arg('{"name": "emt"}') == {"name": "emt"}
    assert parse_teacher_arg("orb,model=orb-v2,batch_size=4") == {"name": "orb", "model": "orb-v2", "batch_size": 4}
    f = tmp_path / "recipe.yaml"
    f.write_text("name: x\nteacher:\n  name: emt\n")
    assert parse_teacher_arg(str(f)) == {"name": "emt"}
