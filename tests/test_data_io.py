"""extxyz <-> HDF5 round trips (property-based) and the `mlff-distill dataset` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlff_distiller.cli import main as cli_main
from mlff_distiller.data.io import export_structures, import_structures
from mlff_distiller.data.normalization import load_statistics
from mlff_distiller.data.store import DatasetReader, DatasetWriter
from mlff_distiller.errors import DatasetError

text = st.text(alphabet="abceTFXYZ019:-_.+# ", min_size=1, max_size=12).filter(lambda s: s.strip() == s)
json_leaf = st.one_of(st.integers(-1000, 1000), st.floats(-1e3, 1e3, allow_nan=False).map(lambda x: round(x, 6)), text)


@st.composite
def structures(draw):
    n = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    periodic = draw(st.booleans())
    a = Atoms(numbers=rng.integers(1, 90, size=n), positions=rng.uniform(-5, 15, size=(n, 3)),
              cell=(np.diag(rng.uniform(4, 12, size=3)) + rng.uniform(-1, 1, size=(3, 3))) if periodic else None,
              pbc=periodic)
    res = {}
    if draw(st.booleans()) or periodic:
        res = {"energy": float(rng.normal() * 100), "forces": rng.normal(size=(n, 3)) * 3}
        if periodic:
            res["stress"] = rng.normal(size=6) * 0.01
    if res:
        a.calc = SinglePointCalculator(a, **res)
    a.info["provenance"] = {
        "source": draw(text), "sampler": draw(st.sampled_from(["none", "rattle", "md"])),
        "params": draw(st.dictionaries(st.sampled_from(["T", "stdev", "steps", "name"]), json_leaf, max_size=3)),
        "parent": draw(st.integers(-1, 50)), "group": draw(text), "seed": draw(st.integers(-1, 2**31)),
        "teacher": draw(st.sampled_from(["", "emt-abc123"])),
    }
    if draw(st.booleans()):
        a.info["charge"] = draw(st.integers(-2, 2))
        a.info["spin_multiplicity"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        a.info["config_type"] = draw(text)
    if draw(st.booleans()):  # extra per-atom arrays travel too
        a.set_tags(rng.integers(0, 5, size=n))
        a.set_momenta(np.round(rng.normal(size=(n, 3)), 6))
    return a


def _assert_same(a, b, forces_rtol=1e-6):
    assert np.array_equal(a.numbers, b.numbers)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.cell.array, b.cell.array)
    assert np.array_equal(a.pbc, b.pbc)
    ra = a.calc.results if a.calc else {}
    rb = b.calc.results if b.calc else {}
    assert set(ra) == set(rb)
    if "energy" in ra:
        assert ra["energy"] == rb["energy"]
        np.testing.assert_allclose(rb["forces"], ra["forces"], rtol=forces_rtol, atol=1e-6)  # float32 on disk
    if "stress" in ra:
        np.testing.assert_array_equal(ra["stress"], rb["stress"])
    assert a.info == b.info
    assert set(a.arrays) == set(b.arrays)
    for name in a.arrays:
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(structures(), min_size=1, max_size=5))
def test_extxyz_hdf5_extxyz_round_trip(tmp_path_factory, frames):
    tmp = tmp_path_factory.mktemp("rt")
    # Labels are all-or-none per file in this test (a labelled dataset or a pool).
    if any(f.calc is not None for f in frames) and not all(f.calc is not None for f in frames):
        frames = [f for f in frames if f.calc is not None]
    src = tmp / "in.extxyz"
    from mlff_distiller.data.io import flatten_provenance

    flat = []
    for f in frames:
        g = f.copy()
        g.calc = f.calc
        flatten_provenance(g)
        flat.append(g)
    write(src, flat, format="extxyz")
    h5 = tmp / "d.h5"
    assert import_structures([src], h5) == len(frames)
    with DatasetReader(h5) as r:
        assert r.label_fields == (("energy", "forces") + (("stress",) if any(f.pbc.all() for f in frames) else ())
                                  if frames[0].calc is not None else ())
        for i, f in enumerate(read(src, ":")):
            from mlff_distiller.data.io import unflatten_provenance

            unflatten_provenance(f)
            _assert_same(f, r.get_atoms(i))
            assert r.get_atoms(i).info["provenance"] == frames[i].info["provenance"]
    out = tmp / "out.extxyz"
    assert export_structures(h5, out) == len(frames)
    back = read(out, ":")
    for f, b in zip(read(src, ":"), back):
        b.info.pop("dataset_attrs", None)
        _assert_same(f, b, forces_rtol=1e-6)


def test_cli_import_info_stats_export_repack(tmp_path, capsys):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    frames = []
    for k in range(8):
        a = bulk("Cu", "fcc", a=3.6, cubic=True) if k % 2 else bulk("Au", "fcc", a=4.08) * (2, 1, 1)
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        a.calc = SinglePointCalculator(a, energy=a.get_potential_energy(), forces=a.get_forces(), stress=a.get_stress())
        a.info["prov_source"] = "bulk:Cu" if k % 2 else "bulk:Au"
        frames.append(a)
    src = tmp_path / "in.extxyz"
    write(src, frames, format="extxyz")
    h5 = tmp_path / "d.h5"
    assert cli_main(["dataset", "import", str(src), "-o", str(h5)]) == 0
    assert cli_main(["dataset", "info", str(h5)]) == 0
    out = capsys.readouterr().out
    assert "structures             8 (8 periodic 3-D, 0 non-periodic)" in out
    assert "Cu:16" in out and "Au:8" in out and "energy (8), forces (8), stress (8)" in out
    assert "bulk:Cu (4)" in out and "eV/A^3" in out
    assert cli_main(["dataset", "info", str(h5), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["atoms_per_structure"] == {"min": 2, "median": 3.0, "max": 4}
    js = tmp_path / "stats.json"
    assert cli_main(["dataset", "stats", str(h5), "--cutoff", "4.0", "-o", str(js)]) == 0
    stats = load_statistics(h5)
    assert stats.cutoff == 4.0 and stats.n_structures == 8 and set(stats.element_energies) == {29, 79}
    assert json.loads(js.read_text())["n_structures"] == 8
    xyz = tmp_path / "out.extxyz"
    assert cli_main(["dataset", "export", str(h5), "-o", str(xyz)]) == 0
    assert len(read(xyz, ":")) == 8
    small = tmp_path / "small.h5"
    assert cli_main(["dataset", "repack", str(h5), "-o", str(small), "--positions-dtype", "float32"]) == 0
    assert DatasetReader(small).positions_dtype == np.float32
    assert load_statistics(small).n_structures == 8  # attributes travel with the repack
    import h5py

    with h5py.File(h5, "r") as f:  # imported data keeps float64 geometry and stress: lossless
        assert [f[k].dtype for k in ("positions", "cell", "stress")] == [np.float64] * 3
    with DatasetReader(h5) as r:
        for i, a in enumerate(read(src, ":")):  # what the extxyz file holds, bit for bit
            b = r.get_atoms(i)
            assert np.array_equal(a.positions, b.positions) and np.array_equal(a.get_stress(), b.get_stress())
    grid = tmp_path / "grid.h5"  # the layout of generated pools, on request (rounds to 2^-16 A)
    assert cli_main(["dataset", "repack", str(h5), "-o", str(grid), "--positions-dtype", "int32"]) == 0
    capsys.readouterr()
    assert cli_main(["dataset", "info", str(grid)]) == 0
    assert "positions on a 2^-16 A grid (int32), cell and stress float32" in capsys.readouterr().out
    with DatasetReader(grid) as r:
        assert np.abs(r.get_atoms(0).positions - frames[0].positions).max() <= 2**-17
    capsys.readouterr()
    # one-line errors, exit status 2
    assert cli_main(["dataset", "import", str(tmp_path / "nope.xyz"), "-o", str(tmp_path / "x.h5")]) == 2
    assert cli_main(["dataset", "import", str(src), "-o", str(h5), "--labels", "energy,dipole"]) == 2
    err = capsys.readouterr().err
    assert err.count("mlff-distill: error:") == 2 and "not found" in err and "'dipole'" in err
    assert len(DatasetReader(h5)) == 8  # nothing written was lost


def test_import_pool_without_labels_and_names_bad_structure(tmp_path):
    frames = [Atoms("CO", positions=[[0, 0, 0], [1.1, 0, 0]]) for _ in range(3)]
    src = tmp_path / "pool.xyz"
    write(src, frames, format="extxyz")
    h5 = tmp_path / "pool.h5"
    import_structures([src], h5)
    with DatasetReader(h5) as r:
        assert r.label_fields == () and len(r) == 3
        assert r.provenance(0)["source"] == "file:pool.xyz" and r.provenance(0)["sampler"] == "none"
    frames[2].calc = SinglePointCalculator(frames[2], energy=float("nan"), forces=np.zeros((2, 3)))
    for f in frames[:2]:
        f.calc = SinglePointCalculator(f, energy=1.0, forces=np.zeros((2, 3)))
    bad = tmp_path / "bad.extxyz"
    write(bad, frames, format="extxyz")
    with pytest.raises(DatasetError, match="input structure 2 .*non-finite energy"):
        import_structures([bad], tmp_path / "bad.h5")
    with pytest.raises(DatasetError, match="also an input"):
        import_structures([src], src)


def test_failures_survive_export_and_import(tmp_path):
    a = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])
    a.calc = SinglePointCalculator(a, energy=-1.0, forces=np.zeros((2, 3)))
    h5 = tmp_path / "d.h5"
    with DatasetWriter(h5, label_fields=("energy", "forces"), attrs={"teacher": {"name": "emt"}}) as w:
        w.append([a])
        w.record_failures([(7, "SCF did not converge")])
    xyz = tmp_path / "d.extxyz"
    export_structures(h5, xyz)
    h5b = tmp_path / "e.h5"
    import_structures([xyz], h5b)
    with DatasetReader(h5b) as r:
        assert r.failures() == [(7, "SCF did not converge")]
        assert r.attrs["teacher"] == {"name": "emt"}


def _labelled(path, seeds, teacher="emt-abc123"):
    """A small EMT-labelled dataset file with a teacher fingerprint in its attributes."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    frames = []
    for k in seeds:
        a = bulk("Cu", "fcc", a=3.6, cubic=True)
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        a.calc = SinglePointCalculator(a, energy=a.get_potential_energy(), forces=a.get_forces(), stress=a.get_stress())
        a.info["provenance"] = {"source": f"bulk:Cu/{k}", "sampler": "rattle", "group": f"g{k}", "teacher": teacher}
        frames.append(a)
    with DatasetWriter(path, attrs={"teacher_fingerprint_id": teacher, "units": "ASE"}, mode="w") as w:
        w.append(frames)
    return frames


def test_import_merges_dataset_files_of_one_teacher_and_refuses_two(tmp_path, capsys):
    """`dataset import a.h5 b.h5 -o m.h5` keeps labels, provenance and the teacher; --append adds a
    third; a file of another teacher is refused in one line and the merged file is left as it was."""
    a, b = _labelled(tmp_path / "a.h5", [0, 1, 2]), _labelled(tmp_path / "b.h5", [3, 4])
    merged = tmp_path / "m.h5"
    assert cli_main(["dataset", "import", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"), "-o", str(merged)]) == 0
    with DatasetReader(merged) as r:
        assert len(r) == 5 and r.attrs["teacher_fingerprint_id"] == "emt-abc123"
        got = [r.get_atoms(i) for i in range(5)]
    for want, have in zip(a + b, got):
        np.testing.assert_array_equal(want.positions, have.positions)
        assert have.calc.results["energy"] == want.calc.results["energy"]
        assert have.info["provenance"]["group"] == want.info["provenance"]["group"]
    c = _labelled(tmp_path / "c.h5", [5])
    assert cli_main(["dataset", "import", str(tmp_path / "c.h5"), "-o", str(merged), "--append",
                     "--index", "0"]) == 0
    with DatasetReader(merged) as r:
        assert len(r) == 6
        np.testing.assert_array_equal(r.get_atoms(5).positions, c[0].positions)
    _labelled(tmp_path / "other.h5", [6], teacher="orb-v2-123")
    capsys.readouterr()
    assert cli_main(["dataset", "import", str(tmp_path / "other.h5"), "-o", str(merged), "--append"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "emt-abc123" in err and "orb-v2-123" in err and "relabel" in err
    with DatasetReader(merged) as r:
        assert len(r) == 6
    with pytest.raises(DatasetError, match="labelled by"):
        import_structures([tmp_path / "a.h5", tmp_path / "other.h5"], tmp_path / "n.h5")
    assert not (tmp_path / "n.h5").exists()
