"""Hostile and careless input: every case is a non-zero exit with one line naming the problem
and the file or field, no traceback, no hang, no partial output, no existing file changed.

The CLI is driven in-process (``mlff_distiller.cli.main``); fixtures are small EMT-labelled
datasets written directly, so nothing here starts a Dask cluster or trains a model.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import types

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import h5py
import numpy as np
import pytest
from ase import Atoms

from mlff_distiller.cli import main
from mlff_distiller.data.store import DatasetReader, DatasetWriter
from mlff_distiller.errors import TeacherError, UserError
from mlff_distiller.quality.synthetic import emt_dataset
from mlff_distiller.teachers import build_teacher, check_teacher_spec

SOURCES = ("bulk:Cu-fcc", "cluster:Ag-ico13", "bulk:Ni-bcc")


# -- helpers ------------------------------------------------------------------------------------
def _run(capsys, argv, expect=2, timeout=60.0) -> str:
    """Run the CLI; assert the exit code, no traceback, a timely end, and one error line. Returns it."""
    t0 = time.perf_counter()
    rc = main([str(a) for a in argv])
    elapsed = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert rc == expect, f"{argv}: exit {rc}, stderr {err!r}"
    assert elapsed < timeout, f"{argv} took {elapsed:.0f} s"
    assert "Traceback" not in err + out
    errors = [line for line in err.replace("\r", "\n").splitlines() if "mlff-distill: error:" in line]
    assert len(errors) == 1, err
    assert errors[0].startswith("mlff-distill: error:"), f"error not on its own line: {errors[0]!r}"
    return errors[0]


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _write(path, atoms_list):
    with DatasetWriter(path) as w:
        w.append(atoms_list)
    return path


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A labelled dataset (30 structures, EMT) and an unlabelled pool of the same structures."""
    d = tmp_path_factory.mktemp("hostile")
    atoms = emt_dataset(SOURCES, n_per_source=10, amplitude=0.05)
    ds = _write(d / "data.h5", atoms)
    bare = [Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc) for a in atoms]
    with DatasetWriter(d / "pool.h5", label_fields=()) as w:
        w.append(bare)
    return ds


@pytest.fixture
def data(labelled, tmp_path):
    """A private copy of the labelled dataset (tests may damage it)."""
    dst = tmp_path / "data.h5"
    dst.write_bytes(labelled.read_bytes())
    return dst


@pytest.fixture
def pool(labelled, tmp_path):
    dst = tmp_path / "pool.h5"
    dst.write_bytes((labelled.parent / "pool.h5").read_bytes())
    return dst


@pytest.fixture(scope="module")
def student_ckpt(tmp_path_factory):
    from mlff_distiller.data.normalization import NormalizationStats
    from mlff_distiller.student import StudentConfig, build_student, save_student

    stats = NormalizationStats(element_energies={14: -4.6, 29: -3.5}, force_rms=0.5, avg_num_neighbors=12.0, cutoff=4.0)
    model = build_student(StudentConfig(preset="tiny", cutoff=4.0, dtype="float32"), stats).eval()
    return save_student(tmp_path_factory.mktemp("student") / "student.pt", model), model


def _zero_block(path, name, nbytes=4096):
    """Zero ``nbytes`` inside the stored (compressed) chunks of dataset ``name``."""
    with h5py.File(path, "r") as f:
        ds = f[name]
        info = ds.id.get_chunk_info(0)
        offset, size = info.byte_offset, info.size
    assert size > 8
    with open(path, "r+b") as fh:
        fh.seek(offset + 4)
        fh.write(b"\0" * min(nbytes, size - 8))


def _replace_column(path, name, values):
    with h5py.File(path, "r+") as f:
        del f[name]
        f.create_dataset(name, data=values)


DATASET_COMMANDS = {
    "info": lambda f, out: ["dataset", "info", f],
    "export": lambda f, out: ["dataset", "export", f, "-o", out / "x.xyz"],
    "stats": lambda f, out: ["dataset", "stats", f, "-o", out / "s.json"],
    "repack": lambda f, out: ["dataset", "repack", f, "-o", out / "r.h5"],
    "validate": lambda f, out: ["validate", f, "--json", out / "v.json"],
    "report": lambda f, out: ["report", f, "-o", out / "report"],
    "train": lambda f, out: ["train", f, "-o", out / "run"],
    "label": lambda f, out: ["label", f, "--teacher", "emt", "-o", out / "lab.h5", "--no-progress"],
    "compare": lambda f, out: ["teachers", "compare", "emt", "lj", f, "--json", out / "c.json", "--quiet"],
}


# -- code the user did not mean to run ------------------------------------------------------------
def test_os_system_teacher_is_refused_unrun_on_label(pool, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    spec = '{"name": "ase", "calculator": "os:system", "kwargs": {"command": "touch %s"}}' % marker
    msg = _run(capsys, ["label", pool, "--teacher", spec, "-o", tmp_path / "out.h5", "--workers", "1", "--no-progress"])
    assert "os:system" in msg and "not called" in msg
    assert not marker.exists() and not (tmp_path / "out.h5").exists()


def test_os_system_teacher_in_a_recipe_is_refused_by_generate(tmp_path, capsys):
    from mlff_distiller.generation.recipe import load_recipe

    marker = tmp_path / "PWNED"
    import yaml

    recipe = load_recipe("tiny")
    recipe["teacher"] = {"name": "ase", "calculator": "os:system", "kwargs": {"command": f"touch {marker}"}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    msg = _run(capsys, ["generate", tmp_path / "r.yaml", "-o", tmp_path / "pool.h5", "--quiet"])
    assert "os:system" in msg
    assert not marker.exists() and not (tmp_path / "pool.h5").exists()


@pytest.mark.parametrize("path, factory, words", [
    ("os:system", True, "built-in"),
    ("builtins:eval", False, "built-in"),
    ("os:path", False, "module"),
    ("ase.build:bulk", False, "factory: true"),
    ("ase.atoms:Atoms", False, "not an ASE Calculator"),
])
def test_only_calculator_classes_or_declared_factories_are_called(path, factory, words):
    spec = {"name": "ase", "calculator": path, "factory": factory}
    for check in (check_teacher_spec, lambda s: build_teacher(s, cache=False)):
        with pytest.raises(TeacherError) as err:
            check(spec)
        assert path in str(err.value) and words in str(err.value) and "\n" not in str(err.value)


def test_declared_factory_is_called_and_its_result_checked():
    from ase.calculators.emt import EMT

    calls = []
    mod = types.ModuleType("hostile_factories")

    def make_emt(scale=1.0):
        calls.append(scale)
        return EMT()

    def make_nothing():
        calls.append("nothing")
        return 42

    mod.make_emt, mod.make_nothing = make_emt, make_nothing
    sys.modules["hostile_factories"] = mod
    with pytest.raises(TeacherError, match="factory: true"):
        check_teacher_spec({"name": "ase", "calculator": "hostile_factories:make_emt"})
    assert calls == []  # refused unrun
    t = build_teacher({"name": "ase", "calculator": "hostile_factories:make_emt", "factory": True,
                       "kwargs": {"scale": 2.0}}, cache=False)
    assert calls == [2.0]
    cu = emt_dataset(("bulk:Cu-fcc",), n_per_source=1)[0]
    assert t.label([cu])[0].energy == pytest.approx(cu.get_potential_energy())
    with pytest.raises(TeacherError, match="not an ASE calculator"):
        build_teacher({"name": "ase", "calculator": "hostile_factories:make_nothing", "factory": True}, cache=False)
    with pytest.raises(UserError, match="teacher.factory"):
        check_teacher_spec({"name": "ase", "calculator": "ase.calculators.emt:EMT", "factory": "yes"})


# -- silent acceptance of broken files ---------------------------------------------------------------
@pytest.mark.parametrize("name, delta", [("energy", -3), ("energy", +2), ("forces", -5), ("forces", +7),
                                         ("cell", -1), ("provenance/group", 1)])
@pytest.mark.parametrize("command", ["info", "validate", "train"])
def test_wrong_length_columns_are_refused_on_open(data, tmp_path, capsys, name, delta, command):
    with h5py.File(data, "r") as f:
        col = f[name][()]
    pad = np.repeat(col[-1:], max(delta, 0), axis=0)
    _replace_column(data, name, np.concatenate([col[: len(col) + min(delta, 0)], pad]))
    before = _digest(data)
    msg = _run(capsys, DATASET_COMMANDS[command](data, tmp_path))
    assert str(data) in msg and repr(name) in msg and "wrong length" in msg
    assert _digest(data) == before and not (tmp_path / "run").exists() and not (tmp_path / "v.json").exists()


@pytest.mark.parametrize("name, command", [("positions", "info"), ("positions", "validate"), ("forces", "info"),
                                           ("numbers", "train"), ("positions", "export"), ("energy", "info")])
def test_zeroed_block_is_detected_with_the_structure_range(data, tmp_path, capsys, name, command):
    _zero_block(data, name)
    msg = _run(capsys, DATASET_COMMANDS[command](data, tmp_path))
    assert str(data) in msg and "corrupt" in msg and name in msg and "of structures 0-" in msg
    assert not (tmp_path / "x.xyz").exists() and not (tmp_path / "run").exists()


def test_files_without_the_checksum_filter_still_read(labelled, tmp_path):
    old = tmp_path / "old.h5"
    with h5py.File(labelled, "r") as src, h5py.File(old, "w") as dst:
        dst.attrs.update(dict(src.attrs))

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                dst.create_dataset(name, data=obj[()])  # contiguous, no filters

        src.visititems(copy)
    with h5py.File(old, "r") as f:
        assert not f["positions"].fletcher32
    with h5py.File(labelled, "r") as f:
        assert f["positions"].fletcher32 and f["energy"].fletcher32 and f["offsets"].fletcher32
    with DatasetReader(labelled) as a, DatasetReader(old) as b:
        b.verify()
        assert len(a) == len(b) == 30
        for i in (0, 17, 29):
            x, y = a.get_arrays(i), b.get_arrays(i)
            for k in x:
                np.testing.assert_array_equal(x[k], y[k])


def test_nan_labels_are_named_by_train_not_reported_as_divergence(data, tmp_path, capsys):
    with h5py.File(data, "r+") as f:
        e = f["energy"][()]
        e[4] = np.nan
        f["energy"][...] = e
        fr = f["forces"][()]
        start = int(f["offsets"][11])
        fr[start + 1, 2] = np.inf
        f["forces"][...] = fr
    msg = _run(capsys, ["train", data, "-o", tmp_path / "run"])
    assert "NaN/inf labels" in msg and "energy of 1 structure(s) (4)" in msg and "forces of 1 structure(s) (11)" in msg
    assert "diverged" not in msg and "lr" not in msg
    assert not (tmp_path / "run").exists()


# -- tracebacks instead of one-line errors -----------------------------------------------------------
def test_unwritable_outputs_are_refused_before_the_work(data, pool, student_ckpt, tmp_path, capsys):
    afile = tmp_path / "somefile"
    afile.write_text("x")
    t0 = time.perf_counter()
    msg = _run(capsys, ["validate", data, "--json", "/proc/x/q.json"])
    assert "--json" in msg and "/proc/x" in msg
    msg = _run(capsys, ["export", student_ckpt[0], "-o", "/proc/x/s.pt"])
    assert "-o" in msg and "/proc/x" in msg
    msg = _run(capsys, ["label", pool, "-o", afile / "x.h5", "--teacher", "emt"])
    assert "somefile" in msg and "not a directory" in msg
    for argv in (["train", data, "-o", afile / "run"], ["report", data, "-o", afile / "rep"],
                 ["dataset", "export", data, "-o", afile / "x.xyz"], ["dataset", "stats", data, "-o", "/proc/x/s.json"],
                 ["run", "tiny", "-o", afile / "proj"], ["generate", "tiny", "-o", "/proc/pool.h5"],
                 ["teachers", "compare", "emt", "lj", data, "--json", afile / "c.json"],
                 ["validate", data, "--json", tmp_path]):
        _run(capsys, argv)
    assert time.perf_counter() - t0 < 60  # refused up front, not after the work
    assert afile.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["data.h5", "pool.h5", "somefile"]


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_student_calculator_refuses_nan_positions_and_coincident_atoms(student_ckpt, backend):
    from mlff_distiller.student import StudentCalculator
    from mlff_distiller.student.fast import HAVE_NUMBA

    if backend == "numba" and not HAVE_NUMBA:
        pytest.skip("numba is not installed")
    model = student_ckpt[1]
    atoms = Atoms("Si3", positions=[[0, 0, 0], [2.3, 0, 0], [0, 2.3, 0]], cell=[8, 8, 8], pbc=True)
    atoms.calc = StudentCalculator(model, backend=backend)
    assert np.isfinite(atoms.get_potential_energy())
    atoms.positions[2] = atoms.positions[1]
    with pytest.raises(UserError) as err:
        atoms.get_potential_energy()
    assert "atoms 1 (Si) and 2 (Si)" in str(err.value) and "0 A apart" in str(err.value)
    atoms.positions[2] = [np.nan, 1.0, 1.0]
    with pytest.raises(UserError, match=r"atom 2 \(Si\) has a non-finite position"):
        atoms.get_forces()
    atoms.positions[2] = [0, 2.3, 0]
    atoms.positions[0] = atoms.positions[1] + [0.0, 0.0, 0.004]  # close, within the reused list's skin
    with pytest.raises(UserError, match="atoms 0 .* 0.004 A apart"):
        atoms.get_forces()


# -- silent nonsense ------------------------------------------------------------------------------
def test_generate_checks_the_teacher_name(tmp_path, capsys):
    import yaml

    from mlff_distiller.generation.recipe import load_recipe

    recipe = load_recipe("tiny")
    recipe["teacher"] = "orbital-9000"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    msg = _run(capsys, ["generate", tmp_path / "r.yaml", "-o", tmp_path / "pool.h5", "--quiet"])
    assert "orbital-9000" in msg and not (tmp_path / "pool.h5").exists()


def test_workers_zero_is_one_rule_for_run_and_label(pool, tmp_path, capsys):
    a = _run(capsys, ["run", "tiny", "-o", tmp_path / "proj", "--workers", "0", "--quiet"])
    b = _run(capsys, ["label", pool, "--teacher", "emt", "-o", tmp_path / "o.h5", "--workers", "0"])
    assert a == b and "labeling.workers" in a
    assert not (tmp_path / "proj").exists() and not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("cutoff", ["1e6", "nan", "-1", "0.1"])
def test_stats_cutoff_is_limited(data, capsys, cutoff):
    before = _digest(data)
    msg = _run(capsys, ["dataset", "stats", data, "--cutoff", cutoff], timeout=20)
    assert "cutoff" in msg and "20 A" in msg
    assert _digest(data) == before


def test_a_bad_student_section_fails_before_any_work(tmp_path, capsys):
    """A typo in training.student is named when the recipe loads, not after generation and labelling."""
    import yaml

    from mlff_distiller.generation.recipe import load_recipe

    recipe = load_recipe("tiny")
    recipe["training"]["student"] = {"preset": "huge"}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    msg = _run(capsys, ["run", tmp_path / "r.yaml", "-o", tmp_path / "proj"], timeout=20)
    assert "training.student.preset" in msg and "huge" in msg and "tiny, small, base" in msg
    assert not (tmp_path / "proj").exists()


def test_nested_recipe_typo_is_named(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text(
        "name: t\nseed: 1\ngeneration:\n  count: 4\n  sources:\n    m: {knd: bulk, crystals: [Cu-fcc]}\n"
        "  mix:\n    - {source: m, sampler: rattle, count: 4}\n")
    msg = _run(capsys, ["generate", tmp_path / "r.yaml", "-o", tmp_path / "p.h5"])
    assert "generation.sources.m" in msg and "'knd'" in msg and "did you mean 'kind'" in msg


def test_error_after_a_progress_bar_starts_on_its_own_line(data, tmp_path, capsys):
    _zero_block(data, "positions")
    _run(capsys, ["dataset", "export", data, "-o", tmp_path / "x.xyz"])  # the bar is live when it fails
    assert not (tmp_path / "x.xyz").exists()


# -- every dataset-reading subcommand x broken inputs ------------------------------------------------
def _broken(kind, tmp_path, labelled):
    p = tmp_path / f"in-{kind}.h5"
    if kind == "missing":
        return p
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("Cu 0 0 0\nthis is not a dataset\n" * 50)
    elif kind == "truncated":
        p.write_bytes(labelled.read_bytes()[: labelled.stat().st_size // 2])
    elif kind == "directory":
        p.mkdir()
    elif kind == "foreign-hdf5":
        with h5py.File(p, "w") as f:
            f["x"] = np.arange(3)
    return p


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "truncated", "directory", "foreign-hdf5"])
@pytest.mark.parametrize("command", sorted(DATASET_COMMANDS))
def test_broken_input_files(labelled, tmp_path, capsys, command, kind):
    src = _broken(kind, tmp_path, labelled)
    out = tmp_path / "out"
    out.mkdir()
    before = {p.name for p in tmp_path.iterdir()}
    msg = _run(capsys, DATASET_COMMANDS[command](src, out))
    assert src.name in msg
    assert list(out.iterdir()) == [] and {p.name for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("argv, words", [
    (["generate", "tiny", "-o", "{t}/p.h5", "--tier", "1k"], "tier"),
    (["generate", "tiny", "-o", "{t}/p.h5", "--seed", "-4"], "--seed"),
    (["generate", "no-such-recipe", "-o", "{t}/p.h5"], "no-such-recipe"),
    (["run", "tiny", "-o", "{t}/proj", "--until-tier", "1k"], "--until-tier"),
    (["label", "{d}", "--teacher", "emt", "-o", "{t}/o.h5", "--chunk-size", "0"], "chunk_size"),
    (["label", "{d}", "--teacher", "emt", "-o", "{t}/o.h5", "--workers", "100000"], "threads on a machine"),
    (["label", "{d}", "--teacher", "emt", "-o", "{t}/o.h5", "--threads-per-worker", "9999"], "threads_per_worker 9999"),
    (["run", "tiny", "-o", "{t}/proj", "--workers", "100000"], "threads on a machine"),
    (["label", "{d}", "--teacher", "emt", "-o", "{t}/o.h5", "--min-distance", "-1"], "min_distance"),
    (["label", "{d}", "--teacher", "{{not json", "-o", "{t}/o.h5"], "teacher"),
    (["label", "{d}", "--teacher", "emt", "-o", "{d}"], "pool itself"),
    (["dataset", "repack", "{d}", "--forces-mantissa-bits", "99"], "forces_mantissa_bits"),
    (["teachers", "compare", "emt", "lj", "{d}", "--limit", "0"], "--limit"),
    (["bench", "--student", "{t}/missing.pt", "--teacher", "emt", "-o", "{t}/b", "--threads", "0"], "--threads"),
    (["bench", "--student", "{t}/missing.pt", "--teacher", "emt", "-o", "{t}/b", "--workers", "0"], "--workers"),
    (["bench", "--student", "{t}/m.pt", "--teacher", "emt", "-o", "{t}/b", "--workers", "100000"], "threads on a"),
])
def test_bad_flags_and_conflicts(data, tmp_path, capsys, argv, words):
    argv = [a.format(t=tmp_path, d=data) for a in argv]
    before = _digest(data)
    msg = _run(capsys, argv)
    assert words in msg
    assert _digest(data) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.h5"]


def test_existing_output_is_not_changed(data, tmp_path, capsys):
    target = tmp_path / "pool.h5"
    target.write_bytes(data.read_bytes())
    before = _digest(target)
    msg = _run(capsys, ["generate", "tiny", "-o", target, "--quiet"])
    assert "already exists" in msg and _digest(target) == before


# -- every subcommand x broken recipe / config / checkpoint / structure files ------------------------
@pytest.mark.parametrize("kind", ["missing", "empty-pt", "garbage-pt", "truncated-pt"])
@pytest.mark.parametrize("command", ["export", "bench"])
def test_broken_student_files(student_ckpt, tmp_path, capsys, kind, command):
    src = tmp_path / "student.pt"
    raw = student_ckpt[0].read_bytes()
    if kind != "missing":
        src.write_bytes(
            {"empty-pt": b"", "garbage-pt": b"not a checkpoint\n" * 100, "truncated-pt": raw[: len(raw) // 2]}[kind]
        )
    argv = (["export", src, "-o", tmp_path / "out.pt"] if command == "export"
            else ["bench", "--student", src, "--teacher", "emt", "-o", tmp_path / "bench", "--no-md"])
    msg = _run(capsys, argv)
    assert "student.pt" in msg
    assert not (tmp_path / "out.pt").exists() and not (tmp_path / "bench").exists()


@pytest.mark.parametrize("content, words", [("a: [1, 2\n", "YAML"), ("- 1\n- 2\n", "mapping"),
                                            ("seed: 1\nseed: 2\n", "'seed' is given twice")])
@pytest.mark.parametrize("command", ["generate", "run", "train", "validate", "label", "bench"])
def test_broken_config_files(data, pool, student_ckpt, tmp_path, capsys, command, content, words):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(content)
    argv = {
        "generate": ["generate", cfg, "-o", tmp_path / "g.h5"],
        "run": ["run", cfg, "-o", tmp_path / "proj"],
        "train": ["train", data, "-o", tmp_path / "run", "--config", cfg],
        "validate": ["validate", data, "--config", cfg],
        "label": ["label", pool, "--teacher", "emt", "-o", tmp_path / "l.h5", "--config", cfg],
        "bench": ["bench", "--student", student_ckpt[0], "--teacher", "emt", "-o", tmp_path / "b", "--config", cfg],
    }[command]
    before = {p.name for p in tmp_path.iterdir()}
    msg = _run(capsys, argv)
    assert "cfg.yaml" in msg
    assert words.lower() in msg.lower()
    assert {p.name for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("text", ["", "2\n\nCu 0 0 0\n", "3\nLattice=\"1 0 0\" Properties=species:S:1\nCu 0 0 0\n"])
def test_broken_structure_files_for_compare(tmp_path, capsys, text):
    src = tmp_path / "s.xyz"
    src.write_text(text)
    msg = _run(capsys, ["teachers", "compare", "emt", "lj", src, "--quiet"])
    assert "s.xyz" in msg


def test_bench_unreachable_scheduler_fails_before_any_timing(tmp_path, capsys):
    """The held-out runs' scheduler is checked with the other inputs, not after minutes of timing."""
    from mlff_distiller.data.normalization import NormalizationStats
    from mlff_distiller.student import StudentConfig, build_student, save_student

    stats = NormalizationStats(element_energies={29: -3.5}, force_rms=0.5, avg_num_neighbors=12.0, cutoff=4.0)
    ckpt = save_student(tmp_path / "cu.pt", build_student(StudentConfig(preset="tiny", cutoff=4.0), stats).eval())
    cfg = tmp_path / "bench.yaml"
    cfg.write_text("heldout: {systems: [cu-64], temperatures_K: [300], frames: 2, interval: 2, equil_steps: 2}\n")
    msg = _run(capsys, ["bench", "--student", ckpt, "--teacher", "emt", "--systems", "cu-64",
                        "--config", cfg, "--no-md", "--scheduler", "tcp://127.0.0.1:9", "-o", tmp_path / "b"])
    assert "cannot reach Dask scheduler 'tcp://127.0.0.1:9'" in msg
    assert not (tmp_path / "b" / "bench.json").exists()
