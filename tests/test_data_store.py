"""Dataset store: round trips, label masks, provenance, attrs, failures and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlff_distiller.cli import main as cli_main
from mlff_distiller.data.store import FORMAT_VERSION, DatasetReader, DatasetWriter, journal_dir, repack
from mlff_distiller.errors import DatasetError


def emt_labelled(atoms, seed=0, stdev=0.05):
    atoms = atoms.copy()
    atoms.rattle(stdev, seed=seed)
    atoms.calc = EMT()
    res = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        res["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **res)
    atoms.info["provenance"] = {"source": f"test:{atoms.get_chemical_formula()}", "sampler": "rattle",
                                "params": {"stdev": stdev, "nested": {"a": [1, 2]}}, "parent": -1,
                                "group": f"g{seed % 3}", "seed": seed, "teacher": "emt"}
    return atoms


@pytest.fixture
def mixed():
    out = []
    for k in range(6):
        base = bulk("Cu", "fcc", a=3.6, cubic=True) * (1, 1, 2) if k % 2 else molecule("CH3OH")
        out.append(emt_labelled(base, seed=k))
    out[0].info["charge"] = -1
    out[0].info["spin_multiplicity"] = 2
    out[2].info["config_type"] = "mol"
    return out


def test_round_trip_labels_masks_provenance(tmp_path, mixed):
    path = tmp_path / "d.h5"
    with DatasetWriter(path, attrs={"teacher": {"name": "emt", "version": "3"}, "recipe": "x: 1"}) as w:
        assert w.append(mixed[:2]) == [0, 1]
        assert w.append(mixed[2:]) == [2, 3, 4, 5]
    assert not journal_dir(path).exists()  # finalized into one compact file
    with DatasetReader(path) as r:
        assert len(r) == 6 and r.n_segments == 0
        assert r.label_fields == ("energy", "forces", "stress")
        assert r.attrs["teacher"] == {"name": "emt", "version": "3"} and r.attrs["recipe"] == "x: 1"
        assert r.units["energy"] == "eV" and r.units["forces"] == "eV/A" and r.units["stress"] == "eV/A^3"
        for i, a in enumerate(mixed):
            b = r.get_atoms(i)
            assert np.array_equal(a.numbers, b.numbers)
            assert np.array_equal(a.positions, b.positions)  # float64: exact
            assert np.array_equal(a.cell.array, b.cell.array) and np.array_equal(a.pbc, b.pbc)
            assert b.get_potential_energy() == a.get_potential_energy()
            np.testing.assert_allclose(b.get_forces(), a.get_forces(), rtol=1e-6, atol=1e-6)  # float32 storage
            if a.pbc.all():
                np.testing.assert_array_equal(b.get_stress(), a.get_stress())
            else:
                assert "stress" not in b.calc.results  # masked: stress only for 3-D periodic cells
            assert b.info["provenance"] == a.info["provenance"] == r.provenance(i)
        assert r.get_atoms(0).info["charge"] == -1 and r.get_atoms(0).info["spin_multiplicity"] == 2
        assert "charge" not in r.get_atoms(1).info
        assert r.get_atoms(2).info["config_type"] == "mol"
        np.testing.assert_array_equal(r.column("stress_mask"), [False, True] * 3)


def test_plain_h5py_reads_the_layout(tmp_path, mixed):
    path = tmp_path / "d.h5"
    with DatasetWriter(path) as w:
        w.append(mixed)
    with h5py.File(path, "r") as h5:
        assert h5.attrs["format_version"] == FORMAT_VERSION
        off = h5["offsets"][()]
        assert off[-1] == h5["numbers"].shape[0] == sum(len(a) for a in mixed)
        np.testing.assert_array_equal(h5["positions"][off[3]:off[4]], mixed[3].positions)
        assert h5["positions"].compression == "gzip" and h5["positions"].shuffle
        assert h5["forces"].dtype == np.float32 and h5["energy"].dtype == np.float64
        table = h5["provenance/source_values"].asstr()[()]
        assert table[h5["provenance/source"][1]] == mixed[1].info["provenance"]["source"]
        assert json.loads(h5.attrs["label_fields"]) == ["energy", "forces", "stress"]


def test_unlabelled_pool_and_failures(tmp_path, mixed):
    path = tmp_path / "pool.h5"
    bare = []
    for a in mixed:
        b = a.copy()
        b.calc = None
        bare.append(b)
    with DatasetWriter(path, label_fields=()) as w:
        w.append(bare)
        w.record_failures([(3, "teacher\ncrashed"), (5, "nan energy")])
    with DatasetReader(path) as r:
        assert r.label_fields == () and len(r) == 6
        assert r.get_atoms(0).calc is None
        assert set(r.get_arrays(0)) == {"numbers", "positions", "cell", "pbc", "charge", "spin_multiplicity"}
        assert r.failures() == [(3, "teacher crashed"), (5, "nan energy")]
    # a labelled structure cannot go into the pool
    with pytest.raises(DatasetError, match="carries labels .*energy.*unlabelled pool"):
        with DatasetWriter(path, label_fields=()) as w:
            w.append(mixed[:1])


def test_append_mode_reopens_and_checks_label_fields(tmp_path, mixed):
    path = tmp_path / "d.h5"
    with DatasetWriter(path, label_fields=("energy", "forces")) as w:
        w.append([emt_labelled(molecule("CH4"))])
    with DatasetWriter(path, label_fields=("energy", "forces")) as w:
        assert w.append([emt_labelled(molecule("C2H6"), seed=1)]) == [1]
    assert len(DatasetReader(path)) == 2
    with pytest.raises(
        DatasetError, match=r"stores label fields \(energy, forces\).*opened with \(energy, forces, stress\)"
    ):
        DatasetWriter(path, label_fields=("energy", "forces", "stress"))
    # the file is untouched by the refused writer
    with DatasetReader(path) as r:
        assert len(r) == 2 and r.label_fields == ("energy", "forces")
    # mode "w" starts over
    with DatasetWriter(path, label_fields=("energy",), mode="w") as w:
        assert len(w) == 0
    assert len(DatasetReader(path)) == 0


def test_journal_is_read_before_finalize_and_compacts(tmp_path, mixed, monkeypatch):
    import mlff_distiller.data.store as store

    monkeypatch.setattr(store.writer, "MAX_JOURNAL_SEGMENTS", 3)
    path = tmp_path / "d.h5"
    w = DatasetWriter(path, attrs={"a": 1})
    for a in mixed:
        w.append([a])
    w.update_attrs({"b": 2})
    with DatasetReader(path) as r:  # unfinalized: main file is empty, data lives in the journal
        assert len(r) == 6 and 1 <= r.n_segments <= 4
        assert r.attrs["a"] == 1 and r.attrs["b"] == 2
        assert r.get_atoms(5).info["provenance"] == mixed[5].info["provenance"]
    with h5py.File(path, "r") as h5:
        assert h5["numbers"].shape[0] == 0
    w.close()
    with DatasetReader(path) as r:
        assert len(r) == 6 and r.n_segments == 0 and r.attrs["b"] == 2


def test_preloaded_reader_answers_from_memory_and_pickles(tmp_path, mixed):
    import pickle

    path = tmp_path / "d.h5"
    mixed[1].set_tags(np.arange(len(mixed[1])))
    with DatasetWriter(path, finalize_on_close=False) as w:  # main file + journal segments
        w.append(mixed[:3])
        w.append(mixed[3:])
    lazy = DatasetReader(path)
    mem = DatasetReader(path, preload=True)
    copy = pickle.loads(pickle.dumps(mem))  # a lazy reader holds open HDF5 files and does not pickle
    for r in (mem, copy):
        assert len(r) == len(lazy) and r.n_segments == lazy.n_segments == 2
        for i in range(len(lazy)):
            a, b = lazy.get_arrays(i), r.get_arrays(i)
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
            assert r.provenance(i) == lazy.provenance(i)
            assert r.extra_arrays(i).keys() == lazy.extra_arrays(i).keys()
        r.verify()  # reopens the files to check every chunk
    lazy.close()
    mem.close()


def test_writer_is_exclusive(tmp_path, mixed):
    path = tmp_path / "d.h5"
    with DatasetWriter(path) as w:
        w.append(mixed[:1])
        with pytest.raises(DatasetError, match="already open for writing"):
            DatasetWriter(path)


def test_repack_float32_positions_error_is_small(tmp_path, mixed):
    path, small = tmp_path / "d.h5", tmp_path / "d32.h5"
    with DatasetWriter(path) as w:
        w.append(mixed)
    repack(path, small, positions_dtype="float32")
    with DatasetReader(path) as r, DatasetReader(small) as r32:
        assert r32.positions_dtype == np.float32 and len(r32) == len(r)
        for i in range(len(r)):
            err = np.abs(r32.get_arrays(i)["positions"] - r.get_arrays(i)["positions"]).max()
            assert 0 <= err < 1e-6  # float32 spacing at |x| < 16 A is below 2e-6
            assert r32.provenance(i) == r.provenance(i)
        assert r32.attrs == r.attrs


# ---------------------------------------------------------------------------- bad input
def _one(**kw):
    a = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    res = {"energy": -1.0, "forces": np.zeros((3, 3))}
    res.update(kw)
    a.calc = SinglePointCalculator(a, **res)
    return a


@pytest.mark.parametrize(
    "bad, pattern",
    [
        (dict(energy=np.nan), r"structure 1 of the appended list .*non-finite energy"),
        (dict(forces=np.full((3, 3), np.inf)), r"structure 1 .*non-finite forces"),
        (dict(forces=np.zeros((2, 3))), r"structure 1 .*forces of shape \(2, 3\), expected \(3, 3\)"),
    ],
)
def test_bad_labels_name_the_structure_and_write_nothing(tmp_path, bad, pattern):
    path = tmp_path / "d.h5"
    with DatasetWriter(path, label_fields=("energy", "forces")) as w:
        w.append([_one()])
        with pytest.raises(DatasetError, match=pattern) as err:
            w.append([_one(), _one(**bad)])
        assert "\n" not in str(err.value)
        assert len(w) == 1
    assert len(DatasetReader(path)) == 1


def test_unknown_atomic_number_and_missing_labels(tmp_path):
    path = tmp_path / "d.h5"
    with DatasetWriter(path, label_fields=("energy", "forces")) as w:
        a = _one()
        a.numbers[1] = 0
        with pytest.raises(DatasetError, match="unknown atomic number 0"):
            w.append([a])
        b = _one()
        b.calc = None
        with pytest.raises(DatasetError, match="no energy label"):
            w.append([b])
        c = _one()
        c.calc = SinglePointCalculator(c, energy=1.0, forces=np.zeros((3, 3)), stress=np.zeros(6))
        c.pbc = True
        c.cell = np.eye(3) * 5
        with pytest.raises(DatasetError, match=r"carries labels \(stress\)"):
            w.append([c])
    with pytest.raises(DatasetError, match="label_fields"):
        DatasetWriter(tmp_path / "x.h5", label_fields=("energy", "dipole"))


def test_missing_truncated_corrupt_and_other_version(tmp_path, mixed):
    with pytest.raises(DatasetError, match="not found"):
        DatasetReader(tmp_path / "nope.h5")
    path = tmp_path / "d.h5"
    with DatasetWriter(path) as w:
        w.append(mixed)
    data = path.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        DatasetReader(trunc)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an hdf5 file at all" * 100)
    with pytest.raises(DatasetError, match="not a readable dataset file"):
        DatasetReader(garbage)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["x"] = [1]
    with pytest.raises(DatasetError, match="not an mlff-distiller dataset"):
        DatasetReader(other)
    with h5py.File(path, "a") as h5:
        h5.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(DatasetError, match=f"format version {FORMAT_VERSION + 1}"):
        DatasetReader(path)
    with pytest.raises(DatasetError, match="format version"):
        DatasetWriter(path)  # appending to it is refused the same way
    # the CLI turns these into one line and exit status 2
    assert cli_main(["dataset", "info", str(trunc)]) == 2


def test_corrupt_data_chunk_is_a_dataset_error(tmp_path, mixed):
    path = tmp_path / "d.h5"
    with DatasetWriter(path) as w:
        w.append(mixed * 40)
    with h5py.File(path, "r") as h5:
        off = h5["positions"].id.get_chunk_info(0).byte_offset
    raw = bytearray(path.read_bytes())
    raw[off:off + 64] = b"\x00" * 64  # clobber the gzip stream of the first positions chunk
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="corrupt"):
        with DatasetReader(path) as r:
            r.get_arrays(0)


def test_round_mantissa_error_bound_and_repack(tmp_path, mixed):
    from mlff_distiller.data.store import round_mantissa

    rng = np.random.default_rng(0)
    x = (rng.normal(size=100000) * 10.0 ** rng.uniform(-3, 2, size=100000)).astype(np.float32)
    for bits in (10, 16, 23):
        y = round_mantissa(x, bits)
        assert y.dtype == np.float32
        rel = np.abs(y.astype(np.float64) - x) / np.abs(x)
        assert rel.max() <= 2.0 ** -(bits + 1) * (1 + 1e-6)
        assert np.all(np.sign(y) == np.sign(x))
        if bits == 23:
            assert np.array_equal(x, y)
    assert round_mantissa(np.float32([1.0, 0.0, -2.5]), 8).tolist() == [1.0, 0.0, -2.5]  # exact values stay
    path, small = tmp_path / "d.h5", tmp_path / "s.h5"
    with DatasetWriter(path) as w:
        w.append(mixed)
    repack(path, small, forces_mantissa_bits=12)
    with DatasetReader(path) as r, DatasetReader(small) as rs:
        assert rs.forces_mantissa_bits == 12 and r.forces_mantissa_bits == 23
        for i in range(len(r)):
            f, fs = r.get_arrays(i)["forces"], rs.get_arrays(i)["forces"]
            assert np.all(np.abs(fs - f) <= np.abs(f) * 2.0**-13 * (1 + 1e-6))
    with pytest.raises(DatasetError, match="forces_mantissa_bits"):
        repack(path, small, forces_mantissa_bits=30)


def test_bad_stress_shape_and_corrupt_journal_segment(tmp_path, mixed):
    path = tmp_path / "d.h5"
    w = DatasetWriter(path, finalize_on_close=False)
    cu = mixed[1].copy()
    cu.calc = SinglePointCalculator(cu, energy=1.0, forces=np.zeros((len(cu), 3)), stress=np.zeros(5))
    with pytest.raises(DatasetError, match=r"stress of shape \(5,\), expected \(6,\) Voigt or \(3, 3\)"):
        w.append([cu])
    w.append(mixed[:2])
    w.close()
    segs = sorted(journal_dir(path).glob("seg-*.h5"))
    assert len(segs) == 1 and len(DatasetReader(path)) == 2
    segs[0].write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)  # damaged by something outside the writer
    with pytest.raises(DatasetError, match=r"seg-0000000001-0000000001\.h5 is not a readable dataset file"):
        DatasetReader(path)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["append", "finalize", "reopen", "fail", "attrs"]),
                              st.integers(0, 4)), min_size=1, max_size=14))
def test_random_operation_sequences_match_a_model(tmp_path_factory, ops):
    """Appends, failures, attrs, finalize and reopen in any order, with journal compaction
    after 3 segments, read back exactly what a plain list model holds."""
    import mlff_distiller.data.store as store

    path = tmp_path_factory.mktemp("ops") / "d.h5"
    old = store.writer.MAX_JOURNAL_SEGMENTS
    store.writer.MAX_JOURNAL_SEGMENTS = 3
    model, failures, attrs = [], [], {}
    try:
        w = DatasetWriter(path, label_fields=("energy", "forces", "stress"), finalize_on_close=False)
        for op, k in ops:
            if op == "append":
                batch = []
                for j in range(k):
                    idx = len(model) + j
                    a = _random_structure(idx)
                    batch.append(a)
                assert w.append(batch) == list(range(len(model), len(model) + k))
                model += batch
            elif op == "finalize":
                w.finalize()
            elif op == "reopen":
                w.close(finalize=False)
                w = DatasetWriter(path, label_fields=("energy", "forces", "stress"), finalize_on_close=False)
                assert len(w) == len(model)
            elif op == "fail":
                w.record_failures([(100 + k, f"reason {k}")])
                failures.append((100 + k, f"reason {k}"))
            else:
                w.update_attrs({f"k{k}": k})
                attrs[f"k{k}"] = k
            with DatasetReader(path) as r:
                assert len(r) == len(model) and r.failures() == failures
                assert {key: r.attrs[key] for key in attrs} == attrs
        w.close(finalize=True)
    finally:
        store.writer.MAX_JOURNAL_SEGMENTS = old
    with DatasetReader(path) as r:
        assert r.n_segments == 0 and len(r) == len(model) and r.failures() == failures
        for i, a in enumerate(model):
            b = r.get_atoms(i)
            assert np.array_equal(a.positions, b.positions) and np.array_equal(a.numbers, b.numbers)
            assert b.get_potential_energy() == a.get_potential_energy()
            assert ("stress" in b.calc.results) == bool(a.pbc.all())
            assert b.info["provenance"]["seed"] == i
            assert set(a.arrays) == set(b.arrays)
            if "tags" in a.arrays:
                assert np.array_equal(a.get_tags(), b.get_tags())


def _random_structure(i):
    rng = np.random.default_rng(i)
    n = 1 + i % 4
    periodic = i % 3 == 0
    a = Atoms(numbers=rng.integers(1, 80, size=n), positions=rng.normal(size=(n, 3)) * 2,
              cell=np.eye(3) * 6 if periodic else None, pbc=periodic)
    res = {"energy": float(rng.normal()), "forces": rng.normal(size=(n, 3))}
    if periodic:
        res["stress"] = rng.normal(size=6)
    a.calc = SinglePointCalculator(a, **res)
    if i % 2:
        a.set_tags(np.arange(n))
    a.info["provenance"] = {"source": f"s{i % 3}", "seed": i}
    return a


def test_write_failure_is_one_line_and_keeps_committed_data(tmp_path, mixed, monkeypatch):
    import errno

    path = tmp_path / "d.h5"
    w = DatasetWriter(path)
    w.append(mixed[:2])
    real = h5py.File

    def full_disk(name, mode="r", *args, **kwargs):
        if mode == "w":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(name, mode, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", full_disk)
    with pytest.raises(DatasetError, match="No space left on device.*everything committed before is intact"):
        w.append(mixed[2:])
    monkeypatch.setattr(h5py, "File", real)
    assert not list(tmp_path.rglob("*.tmp"))
    w.close()
    with DatasetReader(path) as r:
        assert len(r) == 2


def _v1_fixture(version: int = 1):
    import importlib.util

    here = Path(__file__).with_name("data")
    spec = importlib.util.spec_from_file_location("make_v1_fixture", here / "make_v1_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return here / f"dataset_v{version}.h5", mod.v1_structures()


@pytest.mark.parametrize("version,pdt", [(1, np.float64), (2, np.float32)])
def test_reads_appends_to_and_repacks_an_old_file(tmp_path, version, pdt):
    """Files written by the format-1 and format-2 code (tests/data/make_v*_fixture.py) read back
    exactly, verify their checksums, take appends and repack into the current format with
    their positions dtype and float64 cell and stress (nothing is rounded)."""
    import shutil

    fixture, structures = _v1_fixture(version)
    path = tmp_path / "old.h5"
    shutil.copyfile(fixture, path)
    with h5py.File(path, "r") as h5:
        assert int(h5.attrs["format_version"]) == version and h5["positions"].dtype == pdt

    def check(r, n_old):
        assert len(r) >= n_old and r.attrs["fixture"] == f"v{version}" and r.failures() == [(7, "teacher failed")]
        for i, a in enumerate(structures[:n_old]):
            b = r.get_atoms(i)
            assert np.array_equal(a.positions.astype(pdt), b.positions) and np.array_equal(a.numbers, b.numbers)
            assert np.array_equal(a.cell.array, b.cell.array)
            assert b.get_potential_energy() == a.get_potential_energy()
            assert np.array_equal(b.get_forces(), a.get_forces().astype(np.float32))
            if a.pbc.all():
                assert np.array_equal(b.get_stress(), a.get_stress())  # float64, bit for bit
            assert b.info["provenance"] == a.info["provenance"]
        assert np.array_equal(r.get_atoms(1).get_tags(), structures[1].get_tags())
        assert r.get_atoms(1).info["charge"] == -1
        r.verify()

    with DatasetReader(path) as r:
        assert r.format_version == version and r.positions_dtype == pdt
        check(r, 4)
    with DatasetWriter(path) as w:  # appending keeps the data and layout, and writes the current format
        w.append(structures[:1])
    with DatasetReader(path) as r:
        assert r.format_version == FORMAT_VERSION == 3 and len(r) == 5 and r.positions_dtype == pdt
        check(r, 4)
    with h5py.File(path, "r") as h5:
        assert h5["cell"].dtype == np.float64 and h5["stress"].dtype == np.float64
    repack(fixture, tmp_path / "new.h5")
    with DatasetReader(tmp_path / "new.h5") as r:
        assert r.format_version == 3
        check(r, 4)


def test_generated_pool_positions_are_on_the_grid_and_exact_through_labeling(tmp_path):
    """Generated pools (GENERATED_POSITIONS_DTYPE) store positions as int32 counts of 2^-16 A
    and the cell on the same grid as float32: what the reader gives a teacher is exactly on the
    grid and exact in float32, and a labelled file written with the pool's dtype stores it bit
    for bit, with float32 forces and stress."""
    from mlff_distiller.data.store import GENERATED_POSITIONS_DTYPE

    _, structures = _v1_fixture()
    structures[0].cell[0, 1] = 0.1234567891  # a cell entry off the grid
    pool = tmp_path / "pool.h5"
    plain = [a.copy() for a in structures]  # no calculators: an unlabelled pool
    with DatasetWriter(pool, label_fields=(), positions_dtype=GENERATED_POSITIONS_DTYPE) as w:
        w.append(plain[:2])
        w.append(plain[2:])  # two journal segments, merged on close
    with h5py.File(pool, "r") as h5:
        assert h5["positions"].dtype == np.int32 and h5.attrs["positions_grid_bits"] == 16
        assert h5["cell"].dtype == np.float32 and int(h5.attrs["format_version"]) == FORMAT_VERSION == 3
    with DatasetReader(pool) as r:
        assert r.positions_dtype == np.int32
        seen = [r.get_atoms(i) for i in range(len(r))]  # what a teacher is given
    for a, ref in zip(seen, structures):
        for x in (a.positions, a.cell.array):
            assert x.dtype == np.float64 and np.array_equal(x * 2**16, np.rint(x * 2**16))  # on the grid
            assert np.array_equal(x.astype(np.float32), x)  # exact in float32: a float32 teacher sees these
        assert np.abs(a.positions - ref.positions).max() <= 2**-17  # rounded to the nearest grid point
        assert np.abs(a.cell.array - ref.cell.array).max() <= 2**-17
    out = tmp_path / "labelled.h5"
    teacher = []
    with DatasetWriter(out, label_fields=("energy", "forces", "stress"), positions_dtype=r.positions_dtype) as w:
        for a in seen:
            a.calc = EMT()
            res = {"energy": a.get_potential_energy(), "forces": a.get_forces()}
            if a.pbc.all():
                res["stress"] = a.get_stress()
            a.calc = SinglePointCalculator(a, **res)
            teacher.append(res)
        w.append(seen)
    with h5py.File(out, "r") as h5:
        assert h5["positions"].dtype == np.int32 and h5["stress"].dtype == np.float32
        assert h5["energy"].dtype == np.float64
    with DatasetReader(out) as r:
        for i, (a, res) in enumerate(zip(seen, teacher)):
            b = r.get_atoms(i)
            assert np.array_equal(b.positions, a.positions) and np.array_equal(b.cell.array, a.cell.array)
            assert b.get_potential_energy() == res["energy"]
            assert np.array_equal(b.get_forces(), res["forces"].astype(np.float32))
            if "stress" in res:
                assert b.get_stress().dtype == np.float64
                assert np.array_equal(b.get_stress(), res["stress"].astype(np.float32))
    for dtype in ("float64", "float32", None):  # repacking to another layout and back changes no bit
        repack(out, tmp_path / f"re-{dtype}.h5", positions_dtype=dtype)
        repack(tmp_path / f"re-{dtype}.h5", tmp_path / "back.h5", positions_dtype="int32")
        for name in (f"re-{dtype}.h5", "back.h5"):
            with DatasetReader(tmp_path / name) as r:
                for i, a in enumerate(seen):
                    assert np.array_equal(r.get_atoms(i).positions, a.positions)
                    assert np.array_equal(r.get_atoms(i).cell.array, a.cell.array)


def test_grid_positions_out_of_range_and_bad_dtype(tmp_path):
    far = Atoms("H2", positions=[[0, 0, 0], [40000.0, 0, 0]])
    with pytest.raises(DatasetError, match="do not fit the positions grid"):
        with DatasetWriter(tmp_path / "far.h5", label_fields=(), positions_dtype="int32") as w:
            w.append([far])
    with pytest.raises(DatasetError, match="positions_dtype 'int16' is not valid"):
        DatasetWriter(tmp_path / "x.h5", label_fields=(), positions_dtype="int16")
