"""A chemist's journeys: bring your own extxyz (MACE-style keys), batch-job logs, one flag spelling."""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.io import read, write

from mlff_distiller.cli import build_parser, main
from mlff_distiller.data.io import import_structures
from mlff_distiller.data.store import DatasetReader
from mlff_distiller.errors import DatasetError
from test_training_core import TINY, emt_structures


def mace_frames(n_roots=3, per_root=2, seed=3):
    """EMT structures written the way MACE users keep DFT data: REF_* keys, no calculator."""
    frames = []
    for a in emt_structures(n_roots=n_roots, per_root=per_root, seed=seed):
        res = a.calc.results
        b = a.copy()
        b.calc = None
        b.info["REF_energy"] = float(res["energy"])
        b.arrays["REF_forces"] = np.array(res["forces"])
        if "stress" in res and a.pbc.all():
            from mlff_distiller.fields import voigt_to_matrix

            b.info["REF_stress"] = voigt_to_matrix(np.asarray(res["stress"]))
            b.info["REF_virials"] = -voigt_to_matrix(np.asarray(res["stress"])).ravel() * a.get_volume()
        b.info["config_type"] = "md"
        frames.append((b, res))
    return frames


@pytest.fixture()
def mace_file(tmp_path):
    frames = mace_frames()
    path = tmp_path / "mace.extxyz"
    write(path, [b for b, _ in frames], format="extxyz")
    return path, frames


def test_mace_keys_are_imported_as_labels_and_unmapped_ones_warned(mace_file, tmp_path, caplog):
    path, frames = mace_file
    out = tmp_path / "d.h5"
    with caplog.at_level(logging.WARNING, logger="mlff_distiller"):
        assert import_structures([path], out) == len(frames)
    assert "REF_virials" in caplog.text and "--stress-key" in caplog.text
    with DatasetReader(out) as r:
        assert r.label_fields == ("energy", "forces", "stress")
        for i, (_, res) in enumerate(frames):
            a = r.get_atoms(i)
            assert a.get_potential_energy() == pytest.approx(res["energy"], rel=1e-12)
            np.testing.assert_allclose(a.get_forces(), res["forces"], rtol=1e-6, atol=1e-7)
            if a.pbc.all():
                np.testing.assert_allclose(a.get_stress(), res["stress"], rtol=1e-9, atol=1e-12)
            assert "REF_energy" not in a.info and "REF_forces" not in a.arrays  # became the labels
            assert a.info["config_type"] == "md"


def test_explicit_label_keys_and_unknown_key(tmp_path):
    frames = []
    for b, _ in mace_frames(n_roots=2, per_root=1):
        b.info["my_E"] = b.info.pop("REF_energy")
        b.arrays["my_F"] = b.arrays.pop("REF_forces")
        frames.append(b)
    src = tmp_path / "own.extxyz"
    write(src, frames, format="extxyz")
    # without the options only REF_stress is recognised: energy missing is not silent
    out = tmp_path / "a.h5"
    assert main(["dataset", "import", str(src), "-o", str(out), "--energy-key", "my_E", "--forces-key", "my_F"]) == 0
    with DatasetReader(out) as r:
        assert set(r.label_fields) >= {"energy", "forces"}
    with pytest.raises(
        DatasetError,
        match=r"--energy-key nope: no structure has atoms.info.*REF_stress, REF_virials, config_type, my_E",
    ):
        import_structures([src], tmp_path / "b.h5", label_keys={"energy": "nope"})
    assert not (tmp_path / "b.h5").exists()


def _cu_with_virials(key, voigt=False, n=3):
    """Rattled, strained EMT bulk Cu with only energy, forces and a virial (eV) under ``key``."""
    from ase.build import bulk

    from mlff_distiller.fields import voigt_to_matrix

    rng = np.random.default_rng(7)
    frames, stresses = [], []
    for _ in range(n):
        a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        a.set_cell(a.cell[:] @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))), scale_atoms=True)
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        a.calc = EMT()
        stress = a.get_stress()  # ASE: Voigt xx yy zz yz xz xy, eV/A^3
        assert np.abs(stress[3:]).max() > 1e-4  # shear components present: order and sign are tested
        b = a.copy()
        b.info["REF_energy"] = a.get_potential_energy()
        b.arrays["REF_forces"] = a.get_forces()
        virial = -stress * a.get_volume() if voigt else (-voigt_to_matrix(stress) * a.get_volume()).ravel()
        b.info[key] = virial
        frames.append(b)
        stresses.append(stress)
    return frames, stresses


@pytest.mark.parametrize("key, voigt, option", [("REF_virials", False, None), ("virials", True, None),
                                                 ("my_vir", False, "my_vir")])
def test_mace_virials_become_stress(tmp_path, key, voigt, option, capsys):
    frames, stresses = _cu_with_virials(key, voigt)
    src = tmp_path / "vir.extxyz"
    write(src, frames, format="extxyz")
    out = tmp_path / "v.h5"
    argv = ["dataset", "import", str(src), "-o", str(out)] + (["--virials-key", option] if option else [])
    assert main(argv) == 0
    assert "labels: energy, forces, stress" in capsys.readouterr().out
    with DatasetReader(out) as r:
        for i, stress in enumerate(stresses):
            a = r.get_atoms(i)
            np.testing.assert_allclose(a.get_stress(), stress, rtol=1e-9, atol=1e-12)
            assert key not in a.info


def test_virials_refused_off_3d_periodic_cells_and_with_a_stress_key(tmp_path, capsys):
    frames, _ = _cu_with_virials("REF_virials", n=2)
    frames[1].pbc = (True, True, False)
    src = tmp_path / "vir.extxyz"
    write(src, frames, format="extxyz")
    out = tmp_path / "v.h5"
    assert main(["dataset", "import", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "frame 1" in err and "not periodic in 3-D" in err and "--labels" in err
    assert not out.exists() and not list(tmp_path.glob(".v.h5*"))
    # the fix the message names: import without stress
    assert main(["dataset", "import", str(src), "-o", str(out), "--labels", "energy,forces"]) == 0
    with pytest.raises(DatasetError, match="--stress-key and --virials-key both"):
        import_structures([src], tmp_path / "w.h5", label_keys={"stress": "REF_virials", "virials": "REF_virials"})
    with pytest.raises(DatasetError, match=r"--virials-key nope: .*REF_virials"):
        import_structures([src], tmp_path / "w.h5", label_keys={"virials": "nope"})


def test_import_refuses_existing_output_and_strips_labels(mace_file, tmp_path, capsys):
    path, frames = mace_file
    out = tmp_path / "d.h5"
    assert main(["dataset", "import", str(path), "-o", str(out)]) == 0
    one = tmp_path / "one.extxyz"
    write(one, [frames[0][0]], format="extxyz")
    capsys.readouterr()
    assert main(["dataset", "import", str(one), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with DatasetReader(out) as r:
        assert len(r) == len(frames) and r.label_fields  # untouched
    # --labels none: the labelled file becomes an unlabelled pool (to relabel with a teacher)
    assert main(["dataset", "import", str(path), "-o", str(out), "--labels", "none", "--overwrite"]) == 0
    assert "labels: none" in capsys.readouterr().out
    with DatasetReader(out) as r:
        assert len(r) == len(frames) and r.label_fields == ()
        assert "REF_energy" not in r.get_atoms(0).info


def test_failed_import_leaves_nothing_and_keeps_the_old_file(tmp_path, capsys):
    frames = [b for b, _ in mace_frames(n_roots=2, per_root=1)]
    frames[1].info["REF_energy"] = float("nan")
    bad = tmp_path / "bad.extxyz"
    write(bad, frames, format="extxyz")
    new = tmp_path / "new.h5"
    assert main(["dataset", "import", str(bad), "-o", str(new)]) == 2
    assert not new.exists() and not list(tmp_path.glob("new.h5*")) and not list(tmp_path.glob(".new*"))
    old = tmp_path / "old.h5"
    good = tmp_path / "good.extxyz"
    write(good, frames[:1], format="extxyz")
    assert main(["dataset", "import", str(good), "-o", str(old)]) == 0
    assert main(["dataset", "import", str(bad), "-o", str(old), "--overwrite"]) == 2
    with DatasetReader(old) as r:
        assert len(r) == 1
    assert not list(tmp_path.glob(".old*"))


def test_mace_extxyz_trains_in_two_commands_with_overrides_and_logs(mace_file, tmp_path, capsys):
    path, _ = mace_file
    data = tmp_path / "d.h5"
    assert main(["dataset", "import", str(path), "-o", str(data)]) == 0
    conf = tmp_path / "c.yaml"
    import yaml

    conf.write_text(yaml.safe_dump({"student": dict(TINY), "warmup_steps": 1, "val_fraction": 0.3}))
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", str(data), "-c", str(conf), "-o", str(run), "--max-epochs", "2", "--batch-size", "2",
                 "--seed", "3", "--device", "cpu", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "epoch 0 step" in err and "epoch 1 step" in err  # --no-progress keeps the metric lines
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["max_epochs"] == 2 and saved["batch_size"] == 2 and saved["seed"] == 3 and saved["device"] == "cpu"
    log = (run / "train.log").read_text()
    assert "epoch 1 step" in log and "training and" in log and "INFO" in log


def test_structure_file_where_a_dataset_is_expected_names_the_fix(mace_file, tmp_path, capsys):
    path, _ = mace_file
    for argv in (["train", str(path), "-o", str(tmp_path / "run")], ["dataset", "info", str(path)],
                 ["validate", str(path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "not a dataset file" in err and "dataset import" in err, argv
    assert not (tmp_path / "run").exists()


def test_export_formats_for_ase_db_and_gui(mace_file, tmp_path):
    path, frames = mace_file
    data = tmp_path / "d.h5"
    import_structures([path], data)
    for name in ("out.db", "out.traj", "out.xyz"):
        assert main(["dataset", "export", str(data), "-o", str(tmp_path / name)]) == 0
        back = read(tmp_path / name, ":")
        assert len(back) == len(frames)
        assert back[0].get_potential_energy() == pytest.approx(frames[0][1]["energy"])
    import ase.db

    with ase.db.connect(str(tmp_path / "out.db")) as con:
        row = next(con.select())
        assert row.key_value_pairs["config_type"] == "md" and row.natoms == len(frames[0][0])


@pytest.mark.slow
def test_label_accepts_an_extxyz_pool(mace_file, tmp_path, capsys):
    path, frames = mace_file
    out = tmp_path / "labelled.h5"
    assert main(["label", str(path), "--teacher", "emt", "-o", str(out), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "dashboard: http" in err
    with DatasetReader(out) as r, DatasetReader(tmp_path / "labelled.h5.pool.h5") as pool:
        assert len(r) == len(frames) and pool.label_fields == ()
        a = r.get_atoms(0)
        b = a.copy()
        b.calc = EMT()
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), rel=1e-6)


# -- progress and flags ----------------------------------------------------------------------


def test_progress_off_a_terminal_is_periodic_lines(capsys):
    from mlff_distiller.logs import LineProgress, progress

    bar = progress(total=4, desc="labelling", unit="struct")
    assert isinstance(bar, LineProgress)  # pytest's stderr is not a terminal
    bar.interval = 0.0
    for _ in range(4):
        bar.update(1)
    bar.set_postfix(failed=1)
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("labelling: 1/4 (25 %)") and "struct/s" in lines[0]
    assert lines[-1].startswith("labelling: 4/4 (100 %)") and "done in" in lines[-1] and "failed=1" in lines[-1]
    quiet = progress(total=3, desc="x", enabled=False)
    quiet.update(3)
    quiet.close()
    short = progress(total=3, desc="short")  # finishes within one interval: no line at all
    short.update(3)
    short.close()
    assert capsys.readouterr().err == ""


def test_progress_lines_of_a_long_step_are_bounded(capsys, monkeypatch):
    """A 100 s step with a 1 s interval: a line per 5 % of the total (20), not one per second (100)."""
    from mlff_distiller import logs

    clock = [0.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(logs, "_last_line", [float("-inf")])
    bar = logs.LineProgress(total=1000, desc="labelling", unit="struct", interval=1.0)
    for _ in range(1000):
        clock[0] += 0.1
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert 18 <= len(lines) <= 21, len(lines)
    assert lines[-1].startswith("labelling: 1000/1000 (100 %)") and "done in" in lines[-1]
    assert sum("(100 %)" in line for line in lines) == 1  # the finished bar says so once
    # without a total: one line per interval, and at least one per 10 intervals whatever the count
    bar = logs.LineProgress(desc="steps", interval=1.0)
    for _ in range(50):
        clock[0] += 0.5
        bar.update(1)
    bar.close()
    assert 24 <= len(capsys.readouterr().err.strip().splitlines()) <= 26


def test_progress_is_quiet_while_the_stage_prints_its_own_lines(capsys, monkeypatch):
    """Per-epoch metric lines every 0.5 s are the heartbeat: no periodic progress line between them."""
    from mlff_distiller import logs

    clock = [0.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(logs, "_last_line", [float("-inf")])
    bar = logs.LineProgress(total=100, desc="training", unit="step", interval=1.0)
    for step in range(100):
        clock[0] += 0.1
        bar.update(1)
        if step % 5 == 4:
            logs.say(f"epoch {step // 5}: val loss 1.0")  # another logger's line
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 21 and all(line.startswith("epoch") for line in lines[:-1]), lines
    assert lines[-1].startswith("training: 100/100 (100 %)") and "done in" in lines[-1]  # one closing line
    # the same run with the stage silent after step 50: periodic lines resume
    clock[0] += 10.0
    bar = logs.LineProgress(total=100, desc="training", unit="step", interval=1.0)
    for step in range(100):
        clock[0] += 0.1
        bar.update(1)
        if step < 50 and step % 5 == 4:
            logs.say("epoch line")
    bar.close()
    progress_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("training:")]
    assert 2 <= len(progress_lines) <= 6 and "done in" in progress_lines[-1], progress_lines


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"subcommand {name} has no help"
                assert sub.description or helps.get(name), name
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


# canonical spelling -> the option strings it must carry; old spellings that must be hidden
CANONICAL = {"output": ["-o", "--output"], "no_progress": ["--no-progress"], "config": ["-c", "--config"],
             "json_out": ["--json-out"]}
HIDDEN = {"--out", "--quiet"}


def test_every_subcommand_and_argument_has_help_and_one_spelling():
    parser = build_parser()
    subs = dict(_subparsers(parser))
    assert {"generate", "label", "dataset import", "validate", "train", "bench", "run", "teachers compare"} <= set(subs)
    n_json = 0
    for name, sub in subs.items():
        shown_by_dest: dict = {}
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
            if action.help == argparse.SUPPRESS:
                assert set(action.option_strings) <= HIDDEN, (name, action.option_strings)
                continue
            assert not set(action.option_strings) & HIDDEN, (name, action.option_strings)
            shown_by_dest.setdefault(action.dest, []).extend(action.option_strings)
        for dest, spelling in CANONICAL.items():
            if dest in shown_by_dest:
                assert shown_by_dest[dest] == spelling, (name, dest, shown_by_dest[dest])
        if "json" in shown_by_dest:  # machine-readable output: --json prints, --json-out FILE writes
            n_json += 1
            assert shown_by_dest["json"] == ["--json"] and "json_out" in shown_by_dest, name
            flag = next(a for a in sub._actions if a.dest == "json")
            assert flag.nargs in (0, "?") and flag.default is False, name  # a flag (an old FILE form at most)
        for opt in ("--json-file", "--out-json", "--quiet", "--out", "--progress"):
            assert opt not in sum(shown_by_dest.values(), []), (name, opt)
    assert n_json == 4  # dataset info, teachers list, teachers compare, validate
    # the old spellings still parse, as hidden aliases
    args = parser.parse_args(["bench", "--student", "s.pt", "--out", "b"])
    assert args.output == "b"
    args = parser.parse_args(["generate", "tiny", "-o", "p.h5", "--quiet"])
    assert args.no_progress
    args = parser.parse_args(["run", "tiny", "-o", "proj", "--quiet"])
    assert args.no_progress
    args = parser.parse_args(["validate", "d.h5", "--json", "v.json"])
    assert args.json is False and args.json_out == "v.json"
    args = parser.parse_args(["validate", "d.h5", "--json"])
    assert args.json is True and args.json_out is None
    args = parser.parse_args(["teachers", "compare", "emt", "lj", "s.xyz", "--json", "c.json"])
    assert args.json is False and args.json_out == "c.json"


def test_json_prints_machine_readable_output_and_json_out_writes_it(mace_file, tmp_path, capsys):
    import json

    path, frames = mace_file
    h5 = tmp_path / "d.h5"
    assert main(["dataset", "import", str(path), "-o", str(h5)]) == 0
    capsys.readouterr()
    assert main(["dataset", "info", str(h5), "--json", "--json-out", str(tmp_path / "i.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["structures"] == len(frames) == json.loads((tmp_path / "i.json").read_text())["structures"]
    rc = main(["validate", str(h5), "--checkpoint", "1k", "--json", "--no-progress"])
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"validation", "diversity", "gate"} and rc == (0 if printed["gate"]["passed"] else 1)
    assert main(["teachers", "list", "--json-out", str(tmp_path / "t.json")]) == 0
    assert "emt" in capsys.readouterr().out  # the table
    assert any(r["name"] == "emt" for r in json.loads((tmp_path / "t.json").read_text()))


def test_file_only_lines_reach_the_log_file_but_not_the_console(tmp_path, capsys):
    """A narrow labelling chunk is detail for the log file; a batch job's terminal does not show it."""
    import logging

    from mlff_distiller import logs

    logs.setup_console()  # the command line's stderr handler (installed once per process)
    lg = logging.getLogger("mlff_distiller.quality")
    with logs.log_to_file(tmp_path / "run.log"):
        lg.info("chunk 7 (bulk/rattle): low structural diversity", extra=logs.FILE_ONLY)
        lg.info("gate full: PASSED")
    err = capsys.readouterr().err
    assert "gate full: PASSED" in err and "low structural diversity" not in err
    text = (tmp_path / "run.log").read_text()
    assert "low structural diversity" in text and "gate full: PASSED" in text


def test_console_setup_quiets_matplotlib_font_fallback_warnings():
    import logging

    from mlff_distiller import logs

    logs.setup_console()
    assert logging.getLogger("matplotlib.font_manager").getEffectiveLevel() >= logging.ERROR
