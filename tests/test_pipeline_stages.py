"""The stage table of ``mlff-distill run``: consistency, and the fingerprints projects resume on.

No stage runs here: the table is built from validated recipes, and the fingerprints are
computed from stand-in results of the stages before (each carries only a fingerprint).
"""

from __future__ import annotations

import copy

import pytest

from mlff_distiller.generation.recipe import load_recipe
from mlff_distiller.pipeline.run import plan_recipe
from mlff_distiller.pipeline.stages import StageResult, stage_table

GOLDEN_RECIPE = {
    "name": "golden",
    "seed": 7,
    "teacher": {"name": "ase", "calculator": "ase.calculators.emt:EMT"},
    "generation": {"elements": ["Cu"], "count": 10, "tiers": {"1k": 4, "full": 10}},
    "labeling": {"workers": 1},
    "quality": {"gates": {"full": {"max_flagged_fraction": 0.25}}},
    "training": {"max_epochs": 2},
    "bench": {"test_fraction": 0.2, "systems": ["cu-64"], "n_rounds": 1},
}
TEACHER_FP = "teacher-0123"
BENCH_INFO = {"accuracy": {"force_mae": 0.1}}

# Computed with the pipeline as it was before the stage table (project format 1). A project
# directory records these; if one changes, every existing project re-runs that stage and
# everything after it (or stops and asks for --restart-from).
GOLDEN = {
    "generate:1k": "338c2645e85dfce1",
    "label:1k": "f3451c4906e72957",
    "gate:1k": "2b5a8d390a23b390",
    "generate:full": "6505975e1803d0d5",
    "label:full": "ff25ba884977195e",
    "gate:full": "f8d7a10b8bcba30f",
    "split": "c16056fccf532456",
    "train": "d307b1f2ee993071",
    "export": "f319aba36048250d",
    "bench": "ced5f45f86d76adc",
    "report": "9f96a902844a5c81",
}
REPORT_WITHOUT_BENCH = "095efa02ae1ad8b9"


def _plans():
    tiered = load_recipe("seed-m2")
    active = load_recipe("tiny-active")
    return {
        "tiny": plan_recipe(load_recipe("tiny")),
        "seed-m2": plan_recipe(tiered),
        "seed-m2 --until-tier 10k": plan_recipe(copy.deepcopy(tiered), "10k"),
        "tiny-active": plan_recipe(active),
        "golden": plan_recipe(copy.deepcopy(GOLDEN_RECIPE)),
    }


@pytest.mark.parametrize("which", list(_plans()))
def test_every_input_names_an_earlier_stage(which):
    plan = _plans()[which]
    table = stage_table(plan)
    seen: dict = {}
    for st in table:
        assert st.name not in seen, f"stage {st.name} twice"
        for inp in st.inputs:
            assert inp in seen, f"{st.name} depends on {inp}, which is not an earlier stage"
            # a stage that always runs may not depend on one that --skip can leave out
            assert st.optional or not seen[inp].optional, (st.name, inp)
        seen[st.name] = st
    records = [r for st in table for r in st.record_names]
    assert len(records) == len(set(records))
    # the order --restart-from counts in (and project.json holds), as before the table
    tiers = [t or "all" for t in plan.tiers]
    expected = [f"{s}:{t}" for t in tiers for s in ("generate", "label", "gate")] + ["split", "train"]
    expected += plan.active.stage_names() if plan.active is not None else []
    assert records == expected + ["export", "bench", "report"]
    assert {st.name for st in table if st.optional} == {"bench", "report"}
    # every prefix --restart-from accepts is one the command line's help lists
    listed = {"generate", "label", "gate", "split", "train", "active", "export", "bench", "report"}
    assert {r.split(":")[0] for r in records} <= listed


def _fingerprints(plan, skip=()) -> dict:
    """Each stage's fingerprint, as the driver computes it, with stand-in upstream results."""
    results, fps = {}, {}
    for st in stage_table(plan):
        if st.optional and st.name in skip:
            continue
        fp = st.fingerprint(plan, *(results.get(n) for n in st.inputs))
        fps[st.name] = fp
        results[st.name] = StageResult(BENCH_INFO if st.name == "bench" else {}, fp)
    return fps


def test_fingerprints_are_those_existing_projects_recorded():
    from dataclasses import replace

    plan = replace(plan_recipe(copy.deepcopy(GOLDEN_RECIPE)), teacher_fp=TEACHER_FP)
    assert _fingerprints(plan) == GOLDEN
    assert _fingerprints(plan, skip=("bench",))["report"] == REPORT_WITHOUT_BENCH
    # each input matters: a new teacher relabels, a training change retrains but keeps the data
    other = _fingerprints(replace(plan, teacher_fp="another-teacher"))
    assert other["generate:1k"] == GOLDEN["generate:1k"] and other["label:1k"] != GOLDEN["label:1k"]
    retrain = copy.deepcopy(GOLDEN_RECIPE)
    retrain["training"]["max_epochs"] = 3
    changed = _fingerprints(replace(plan_recipe(retrain), teacher_fp=TEACHER_FP))
    assert changed["split"] == GOLDEN["split"] and changed["train"] != GOLDEN["train"]


def test_first_training_changes_only_the_first_training_fingerprint():
    """``active.first_training`` retrains the first student; an ``active:`` section without it
    keeps the ``train`` fingerprint of the same recipe without rounds (what projects recorded)."""
    from dataclasses import replace

    plain = _fingerprints(replace(plan_recipe(copy.deepcopy(GOLDEN_RECIPE)), teacher_fp=TEACHER_FP))
    with_rounds = copy.deepcopy(GOLDEN_RECIPE)
    with_rounds["active"] = {"max_rounds": 1}
    rounds = _fingerprints(replace(plan_recipe(with_rounds), teacher_fp=TEACHER_FP))
    assert rounds["train"] == plain["train"] == GOLDEN["train"]
    with_rounds["active"]["first_training"] = {"max_steps": 7}
    first = _fingerprints(replace(plan_recipe(with_rounds), teacher_fp=TEACHER_FP))
    assert first["split"] == GOLDEN["split"] and first["train"] != GOLDEN["train"]
