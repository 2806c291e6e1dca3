"""Project-directory bookkeeping: resume, recipe-change detection, refusal of foreign dirs, disk check."""

from __future__ import annotations

import pytest

from mlff_distiller.errors import ConfigError, UserError
from mlff_distiller.pipeline.project import Project, fingerprint
from mlff_distiller.pipeline.run import _tiers, check_disk, estimate_disk_bytes


def test_fingerprint_is_stable_and_sensitive():
    a = fingerprint({"x": 1, "y": [1, 2]}, "s")
    assert a == fingerprint({"y": [1, 2], "x": 1}, "s")  # key order does not matter
    assert a != fingerprint({"x": 2, "y": [1, 2]}, "s")


def test_resume_skips_done_stage_and_detects_changed_inputs(tmp_path):
    p = Project(tmp_path / "proj", "quickstart")
    p.mark("generate:all", "fp1", info={"n": 3})
    p2 = Project(tmp_path / "proj", "quickstart")  # reopen from disk
    assert p2.is_done("generate:all", "fp1")
    assert not p2.is_done("label:all", "fp2")
    with pytest.raises(UserError, match="recipe changed since stage 'generate:all'"):
        p2.is_done("generate:all", "other")


def test_forget_from_drops_stage_and_later(tmp_path):
    p = Project(tmp_path / "proj", "r")
    order = ["generate:1k", "label:1k", "gate:1k", "train"]
    for n in order:
        p.mark(n, "fp")
    p.forget_from(order, "label")
    assert p.stage("generate:1k") is not None
    assert all(p.stage(n) is None for n in order[1:])


def test_refuses_directory_of_another_project(tmp_path):
    Project(tmp_path / "proj", "quickstart").mark("x", "fp")
    with pytest.raises(UserError, match="holds project 'quickstart'"):
        Project(tmp_path / "proj", "seed-m2")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds no mlff-distill project"):
        Project(tmp_path / "other", "quickstart")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"  # nothing touched


def test_tiers_and_until_tier():
    recipe = {"name": "r", "generation": {"tiers": {"1k": 1000, "10k": 10000, "full": 120000}}}
    assert _tiers(recipe, None) == ["1k", "10k", "full"]
    assert _tiers(recipe, "10k") == ["1k", "10k"]
    with pytest.raises(ConfigError, match="allowed: 1k, 10k, full"):
        _tiers(recipe, "5k")
    assert _tiers({"name": "q", "generation": {}}, None) == [None]


def test_disk_estimate_scales_and_refuses(tmp_path):
    small = estimate_disk_bytes({"generation": {"tiers": {"1k": 1000}}}, ["1k"])
    big = estimate_disk_bytes({"generation": {"tiers": {"1k": 1000, "full": 10**9}}}, ["1k", "full"])
    assert big > 100 * small
    check_disk(tmp_path, small)  # fits
    with pytest.raises(UserError, match="not enough disk for the planned dataset"):
        check_disk(tmp_path, big)


def test_grouped_split_keeps_one_of_a_kind_chemistry_in_training():
    from mlff_distiller.data.split import grouped_split

    # 10 molecule groups sharing one element set, and one crystal group of its own chemistry.
    groups = [f"mol{k}" for k in range(10) for _ in range(3)] + ["SiC"] * 12
    chem = ["1-6-8"] * 30 + ["6-14"] * 12
    for seed in range(20):
        train, val, kind = grouped_split(groups, 0.3, seed, chem)
        assert kind == "grouped"
        assert not {groups[i] for i in train} & {groups[i] for i in val}
        assert all(groups[i] != "SiC" for i in val)  # never held out: nothing else has Si-C
        assert len(val) >= round(0.3 * len(groups))
    # without the chemistry rule some seed does hold SiC out
    assert any(any(groups[i] == "SiC" for i in grouped_split(groups, 0.3, s)[1]) for s in range(20))
