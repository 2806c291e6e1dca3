"""Go/no-go gates (narrow data fails, diverse data passes) and the per-chunk monitor."""

from __future__ import annotations

import json
import logging
import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import pytest

from mlff_distiller.data.store import DatasetWriter
from mlff_distiller.errors import ConfigError
from mlff_distiller.quality import ChunkMonitor, evaluate_gates
from mlff_distiller.quality.synthetic import emt_dataset

SMALL = {"diversity": {"subsample_atoms": 200, "repeats": 2, "pca_structures": 40, "curve_sizes": [50, 100, 200]}}
DIVERSE = ("bulk:Cu-fcc", "cluster:Ag-ico13", "bulk:Ni-bcc", "bulk:CuAu-L12", "bulk:Al-fcc")


@pytest.fixture(scope="module")
def diverse_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gates") / "diverse.h5"
    ds = emt_dataset(DIVERSE, n_per_source=5, amplitude=0.1, include_minimum=True)
    with DatasetWriter(path, attrs={"teacher_fingerprint_id": "emt-test"}) as w:
        w.append(ds)
        w.record_failures([(1000, "teacher raised")])
    return path


@pytest.fixture(scope="module")
def narrow_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gates") / "narrow.h5"
    with DatasetWriter(path) as w:
        w.append(emt_dataset(("bulk:Cu-fcc",), n_per_source=10, amplitude=0.005))
    return path


def test_diverse_dataset_passes_every_checkpoint(diverse_file):
    for cp in ("1k", "10k", "full"):
        gate = evaluate_gates(diverse_file, cp, SMALL)
        assert gate.passed, gate.summary()
        assert {v.metric for v in gate.verdicts} >= {"min_diversity_score", "max_flagged_fraction", "max_failure_rate"}
    rate = {v.metric: v.value for v in gate.verdicts}["max_failure_rate"]
    assert rate == pytest.approx(1 / 26)  # 25 labelled + 1 failure from the file's table


def test_narrow_dataset_fails_the_gate(narrow_file):
    gate = evaluate_gates(narrow_file, "1k", SMALL)
    assert not gate.passed
    failed = {v.metric for v in gate.failed}
    assert {"min_diversity_score", "min_entropy_fraction", "min_compositions"} <= failed
    assert "FAILED" in gate.summary() and "FAIL: diversity score" in gate.summary()
    d = gate.to_dict()
    assert d["passed"] is False and d["diversity"]["score"] == gate.diversity.score
    assert json.loads(json.dumps(d))["validation"]["n_structures"] == 10
    assert [v.name for v in gate.failed] == [v.metric for v in gate.failed] and str(gate.failed[0]).startswith("FAIL")


def test_gate_thresholds_come_from_config(diverse_file, narrow_file):
    loose = {**SMALL, "gates": {"1k": {"min_diversity_score": 0.0, "min_entropy_fraction": None,
                                       "min_compositions": 1}}}
    assert evaluate_gates(narrow_file, "1k", loose).passed
    strict = {**SMALL, "gates": {"full": {"max_failure_rate": 0.0, "min_structures": 1000}}}
    gate = evaluate_gates(diverse_file, "full", strict)
    assert {v.metric for v in gate.failed} == {"max_failure_rate", "min_structures"}
    with pytest.raises(ConfigError, match="unknown gate checkpoint '5k'"):
        evaluate_gates(diverse_file, "5k", SMALL)


def test_flagged_structures_fail_the_gate():
    ds = emt_dataset(DIVERSE[:3], n_per_source=4, amplitude=0.1)
    for a in ds[:2]:
        a.calc.results["energy"] = 0.0  # sentinel energies from a failed code
    gate = evaluate_gates(ds, "full", SMALL)
    assert [v.metric for v in gate.failed] == ["max_flagged_fraction"]
    assert gate.validation.flagged_indices("sentinel_energy") == [0, 1]


# -- ChunkMonitor ---------------------------------------------------------------------------------

MON = {"monitor": {"subsample_atoms": 150, "baseline_chunks": 2, "diversity_drop": 0.3, "drop_chunks": 1,
                   "max_failure_rate": 0.1, "max_flagged_fraction": 0.1, "min_structures": 1}}


@pytest.fixture(scope="module")
def chunks():
    good = [emt_dataset(DIVERSE[:3], n_per_source=2, amplitude=0.1, seed=s) for s in range(3)]
    narrow = emt_dataset(("bulk:Cu-fcc",), n_per_source=6, amplitude=0.003, seed=9)
    return good, narrow


def test_monitor_steady_chunks_raise_no_alert(chunks, tmp_path):
    good, _ = chunks
    events = tmp_path / "events.jsonl"
    mon = ChunkMonitor(MON, events_path=events)
    for k, c in enumerate(good):
        assert mon.on_chunk(k, c, []) == []
    assert mon.events == [] and not events.exists()
    s = mon.summary()
    assert s["chunks"] == 3 and s["labelled"] == 18 and s["failed"] == 0 and s["alerts"] == []
    assert 0.3 < s["entropy_fraction_median"] <= 1.0
    assert s["elements"] == {"Ag": 3 * 2 * 13, "Cu": 3 * 2 * 32, "Ni": 3 * 2 * 54} and s["n_compositions"] == 3


def test_monitor_alerts_on_diversity_drop_and_failure_rise(chunks, tmp_path, caplog):
    good, narrow = chunks
    events = tmp_path / "events.jsonl"
    mon = ChunkMonitor(MON, events_path=events)
    mon(0, good[0], [])
    # a drop before ``baseline_chunks`` earlier chunks exist is not judged
    assert mon.on_chunk(1, narrow[:2], []) == []
    mon(2, good[1], [(100, "x")])  # 1 of 7 failed: 14 % > 10 %
    assert [e.kind for e in mon.events] == ["failure_rate"]
    with caplog.at_level(logging.WARNING, logger="mlff_distiller.quality"):
        new = mon.on_chunk(3, narrow, [])
    assert [e.kind for e in new] == ["diversity_drop"]
    assert new[0].chunk_id == 3 and new[0].value < new[0].threshold
    assert "structural diversity dropped" in caplog.text
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert [x["kind"] for x in lines] == [e.kind for e in mon.events]
    assert mon.failure_rate == pytest.approx(1 / (len(good[0]) + 2 + len(good[1]) + 1 + 6))


def test_monitor_alerts_on_flagged_structures():
    bad = emt_dataset(DIVERSE[:3], n_per_source=2, amplitude=0.1, seed=7)
    for a in bad[:2]:
        a.calc.results["forces"][0] = [500.0, 0, 0]
    mon = ChunkMonitor(MON)
    new = mon.on_chunk(0, bad, [])
    assert [e.kind for e in new] == ["flagged_fraction"]
    assert mon.flagged_fraction == pytest.approx(2 / 6)


def test_monitor_pools_small_chunks_before_judging_the_flagged_fraction():
    """One flagged structure in a chunk of 6 is 17 %: noise until enough structures are pooled."""
    chunks = [emt_dataset(DIVERSE[:3], n_per_source=2, amplitude=0.1, seed=s) for s in (11, 12, 13)]
    chunks[0][0].calc.results["forces"][0] = [500.0, 0, 0]
    mon = ChunkMonitor({"monitor": {**MON["monitor"], "min_structures": 18, "max_flagged_fraction": 0.1}})
    assert mon.on_chunk(0, chunks[0], []) == [] and mon.on_chunk(1, chunks[1], []) == []
    assert mon.on_chunk(2, chunks[2], []) == []  # 1 of 18 = 5.6 % <= 10 %: no alert
    chunks[1][0].calc.results["forces"][0] = [500.0, 0, 0]
    chunks[1][1].calc.results["forces"][0] = [500.0, 0, 0]
    mon.on_chunk(3, chunks[0], []), mon.on_chunk(4, chunks[1], [])
    new = mon.on_chunk(5, chunks[2], [])  # 3 of 18 = 16.7 % > 10 %
    assert [e.kind for e in new] == ["flagged_fraction"] and "chunks 3-5: 3 of 18 structures" in new[0].message


def test_monitor_chunk_with_only_failures():
    mon = ChunkMonitor(MON)
    new = mon.on_chunk(0, [], [(0, "a"), (1, "b")])
    assert [e.kind for e in new] == ["failure_rate"] and mon.failure_rate == 1.0


@pytest.mark.slow
def test_monitor_as_label_pool_hook(tmp_path):
    """End to end with helper D's Dask labelling: the monitor sees every chunk."""
    from mlff_distiller.labeling import label_pool

    pool = tmp_path / "pool.h5"
    structures = emt_dataset(DIVERSE[:3], n_per_source=4, amplitude=0.1)
    for a in structures:
        a.calc = None
    with DatasetWriter(pool, label_fields=()) as w:
        w.append(structures)
    mon = ChunkMonitor(MON)
    summary = label_pool(pool, "emt", tmp_path / "out.h5", n_workers=1, chunk_size=4, on_chunk=mon, progress=False)
    assert summary.labelled == 12
    assert len(mon.chunks) == 3 and mon.n_labelled == 12
    assert evaluate_gates(tmp_path / "out.h5", "1k", SMALL).passed


def test_monitor_compares_a_chunk_with_earlier_chunks_of_its_own_kind(chunks):
    """Pools are written entry by entry: a narrow chunk of another source/sampler is not judged
    against a baseline of other kinds, only against earlier chunks of its own kind."""
    good, narrow = chunks

    def as_kind(atoms, source, sampler):
        out = []
        for a in atoms:
            b = a.copy()
            b.calc = a.calc  # keep the labels
            b.info["provenance"] = dict(a.info.get("provenance") or {}, source=source, sampler=sampler)
            out.append(b)
        return out

    mon = ChunkMonitor(MON)
    for k, c in enumerate(good):
        mon(k, as_kind(c, "smiles:CCO", "rattle"), [])
    assert mon.on_chunk(3, as_kind(narrow, "liquid:O", "md"), []) == []  # first of its kind
    assert mon.chunks[-1].kind == "liquid/md"
    mon(4, as_kind(good[0], "liquid:O", "md"), [])
    mon(5, as_kind(good[1], "liquid:O", "md"), [])
    new = mon.on_chunk(6, as_kind(narrow, "liquid:O", "md"), [])
    assert [e.kind for e in new] == ["diversity_drop"] and "(liquid/md)" in new[0].message


def test_monitor_alerts_once_per_run_of_low_diversity_chunks(chunks, caplog):
    """Default ``drop_chunks`` 2: one narrow chunk is logged at INFO; two in a row alert, once."""
    good, narrow = chunks
    mon = ChunkMonitor({"monitor": {**MON["monitor"], "drop_chunks": 2}})
    for k, c in enumerate(good):
        mon(k, c, [])
    with caplog.at_level(logging.INFO, logger="mlff_distiller.quality"):
        assert mon.on_chunk(3, narrow, []) == []
    assert "low structural diversity" in caplog.text
    new = mon.on_chunk(4, narrow, [])
    assert [e.kind for e in new] == ["diversity_drop"] and "2 consecutive" in new[0].message
    assert mon.on_chunk(5, narrow, []) == []  # the same run: no second alert
    mon(6, good[0], [])  # recovered
    assert mon.on_chunk(7, narrow, []) == [] and len(mon.on_chunk(8, narrow, [])) == 1
