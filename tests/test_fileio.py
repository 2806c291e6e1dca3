"""fileio: atomic writes (temp + fsync + rename), temporary names, stale temporaries."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlff_distiller.fileio import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    is_temp_path,
    stale_temp_paths,
    temp_path,
)


def test_atomic_write_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_text(p, "old")
    atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new"
    assert [q.name for q in tmp_path.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("committed")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert p.read_text() == "committed"
    assert [q.name for q in tmp_path.iterdir()] == ["a.txt"]


def test_temp_names_keep_the_suffix_on_request_and_stale_ones_are_found(tmp_path):
    target = tmp_path / "plot.png"
    t = temp_path(target, keep_suffix=True)
    assert t.parent == tmp_path and t.suffix == ".png" and is_temp_path(t) and not is_temp_path(target)
    assert not temp_path(target).name.endswith(".png")
    # a temporary of a process that has exited is stale; one of a live process is not
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".plot.png.{pid}.0123abcd.tmp"
    stale_journal = tmp_path / f".plot.png.{pid}.0123abcd.tmp.journal"
    stale.write_text("x")
    stale_journal.mkdir()
    t.write_text("live")  # this process
    (tmp_path / f".other.png.{pid}.0123abcd.tmp").write_text("another target")
    assert stale_temp_paths(target) == sorted([stale, stale_journal])


def test_load_yaml_refuses_a_key_given_twice_at_any_depth():
    import yaml

    from mlff_distiller.fileio import load_yaml, yaml_error_text

    assert load_yaml("a: 1\nb: {c: 2}\n") == {"a": 1, "b": {"c": 2}}
    assert load_yaml("x: &x {p: 1}\ny: {<<: *x, q: 2}\n")["y"] == {"p": 1, "q": 2}  # merge keys still work
    for text, line in [("a: 1\nb:\n  c: 2\n  c: 3\n", 4), ("{a: 1, a: 2}", 1), ("- {k: 1}\n- k: 1\n  k: 2\n", 3)]:
        with pytest.raises(yaml.YAMLError) as info:
            load_yaml(text)
        words = yaml_error_text(info.value)
        assert words.startswith(f"line {line}: key ") and "is given twice" in words, words


def test_read_settings_file_takes_the_section_of_a_recipe_or_the_fields_themselves(tmp_path):
    from mlff_distiller.errors import ConfigError
    from mlff_distiller.fileio import read_mapping_file, read_settings_file

    recipe, fields, empty, js = (tmp_path / n for n in ("r.yaml", "f.yaml", "e.yaml", "j.json"))
    recipe.write_text("name: x\ntraining: {max_steps: 7}\nbench: {n_rounds: 2}\n")
    fields.write_text("max_steps: 9\n")
    empty.write_text("")
    js.write_text('{"training": {"max_steps": 3}}')
    assert read_settings_file(recipe, "training") == {"max_steps": 7}
    assert read_settings_file(recipe, "bench") == {"n_rounds": 2}
    assert read_settings_file(fields, "training") == {"max_steps": 9}
    assert read_settings_file(empty, "training") == {} and read_settings_file(js, "training") == {"max_steps": 3}
    assert read_mapping_file(recipe)["name"] == "x"
    for text, words in [("- 1\n", "holds a list, not a mapping"), ("a: 1\na: 2\n", "given twice"),
                        ("a: [1\n", "not valid YAML")]:
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(ConfigError, match=words) as info:
            read_settings_file(tmp_path / "bad.yaml", "training", "--config")
        assert str(info.value).startswith("--config ") and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="does not exist"):
        read_settings_file(tmp_path / "none.yaml", "training")
