"""Generation on Dask workers: the same pool as in this process, structure by structure, whatever
the number of workers or the speculation window; one-line errors for a teacher that cannot load
on a worker and for bad --workers values."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from mlff_distiller.cli import main
from mlff_distiller.data.store import DatasetReader
from mlff_distiller.errors import ConfigError, TeacherError
from mlff_distiller.generation import generate, iter_structures, validate_recipe
from mlff_distiller.generation.sources import SkipLog

EMT = {"name": "ase", "calculator": "ase.calculators.emt:EMT"}


def md_rattle_recipe() -> dict:
    """EMT teacher; an md entry (teacher on the workers), rattle entries (no teacher), roots kept,
    an invalid SMILES (skipped, in the summary)."""
    return {"name": "workers", "seed": 5, "teacher": dict(EMT), "generation": {
        "size": {"min": 3, "max": 40}, "elements": ["H", "C", "N", "O", "Cu", "Ni", "Al"],
        "sources": {"alloy": {"kind": "alloy", "elements": ["Cu", "Ni"]},
                    "metal": {"kind": "bulk", "crystals": ["Cu-fcc", "Al-fcc"]},
                    "mols": {"kind": "molecules", "smiles": ["CCO", "c1ccccc1", "C1CC"],
                             "conformers": 2}},
        "mix": [{"source": "alloy", "sampler": "md", "count": 7, "size": {"min": 4, "max": 16},
                 "params": {"per_root": 3, "equil_steps": 3, "interval": 2, "timestep": 2.0, "include_root": True}},
                {"source": "metal", "sampler": "rattle", "count": 5, "params": {"per_root": 2, "include_root": True}},
                {"source": "mols", "sampler": "rattle", "count": 6, "size": {"max": 14}, "params": {"per_root": 2}}],
    }}


def read_pool(path):
    r = DatasetReader(path)
    try:
        return [r.get_atoms(i) for i in range(len(r))], [r.provenance(i) for i in range(len(r))]
    finally:
        r.close()


def assert_same_structures(a_atoms, a_prov, b_atoms, b_prov):
    assert len(a_atoms) == len(b_atoms) and a_prov == b_prov
    for x, y in zip(a_atoms, b_atoms):
        np.testing.assert_array_equal(x.numbers, y.numbers)
        np.testing.assert_array_equal(x.positions, y.positions)
        np.testing.assert_array_equal(x.cell.array, y.cell.array)
        np.testing.assert_array_equal(x.pbc, y.pbc)


def test_two_workers_write_the_serial_pool(tmp_path, client):
    serial = generate(md_rattle_recipe(), tmp_path / "serial.h5", progress=False)
    parallel = generate(md_rattle_recipe(), tmp_path / "dask.h5", progress=False, scheduler=client)
    assert serial["workers"] == 1 and parallel["workers"] == 2
    assert serial["n_structures"] == parallel["n_structures"] == 18
    a, pa = read_pool(tmp_path / "serial.h5")
    b, pb = read_pool(tmp_path / "dask.h5")
    assert_same_structures(a, pa, b, pb)
    assert {p["sampler"] for p in pa} == {"md", "rattle", "none"}
    assert any(p["parent"] >= 0 for p in pa)  # samples of kept roots point to them
    strip = [{k: v for k, v in st.items() if k != "seconds"} for st in serial["entries"]]
    assert strip == [{k: v for k, v in st.items() if k != "seconds"} for st in parallel["entries"]]
    assert serial["skipped"] == parallel["skipped"] and serial["n_skipped_smiles"] == 1  # C1CC
    # the consumer took the same roots from either executor; each was timed where it ran
    kept = sum(st["roots"] for st in serial["entries"])  # roots that gave structures
    assert serial["roots"]["taken"] == parallel["roots"]["taken"] >= kept > 0
    assert serial["roots"]["taken_s"] > 0 and parallel["roots"]["taken_s"] > 0
    assert serial["roots"]["discarded"] == serial["roots"]["cancelled"] == 0  # nothing runs ahead in-process
    from mlff_distiller.generation.engine import format_summary

    assert f"on the {parallel['roots']['taken']} roots taken" in format_summary(parallel)
    assert "roots taken" not in format_summary(serial)


@pytest.mark.parametrize("window", [1, 2, 7])
def test_any_speculation_window_gives_the_serial_structures(client, window):
    from mlff_distiller.generation.parallel import DaskRoots

    cfg = validate_recipe(md_rattle_recipe())
    from mlff_distiller.generation.engine import teacher_calculator
    from mlff_distiller.generation.roots import InProcessRoots

    ref_stats, ref_skips = [], SkipLog()
    ref_roots = InProcessRoots(teacher_calculator(md_rattle_recipe()))
    ref = list(iter_structures(cfg, None, None, ref_skips, ref_stats, roots=ref_roots))
    stats, skips = [], SkipLog()
    roots = DaskRoots(client, EMT, 1, window=window)
    got = list(iter_structures(cfg, None, None, skips, stats, roots=roots))
    assert_same_structures(ref, [a.info["provenance"] for a in ref], got, [a.info["provenance"] for a in got])
    assert [st["roots"] for st in stats] == [st["roots"] for st in ref_stats]
    assert skips.items == ref_skips.items
    # the consumer took exactly the roots it takes in-process; every other root started was either
    # finished and not needed or cancelled, and nothing is left held or running
    assert roots.usage.taken == ref_roots.usage.taken > 0
    assert roots.usage.discarded + roots.usage.cancelled == sum(roots.next_r.values()) - roots.usage.taken
    assert not roots.futures and not roots.ready


def test_teacher_that_cannot_load_on_a_worker_is_one_line(tmp_path, client):
    recipe = md_rattle_recipe()
    recipe["teacher"] = {"name": "ase", "calculator": "no_such_module_xyz:Calc"}
    with pytest.raises(TeacherError) as info:
        generate(recipe, tmp_path / "p.h5", progress=False, scheduler=client)
    msg = str(info.value)
    assert "on worker" in msg and "no_such_module_xyz" in msg and "\n" not in msg
    assert not (tmp_path / "p.h5").exists()
    # in this process the same spec is refused before anything is written
    with pytest.raises(TeacherError, match="no_such_module_xyz"):
        generate(recipe, tmp_path / "p.h5", progress=False)


def test_calculator_with_workers_and_bad_worker_counts_are_refused(tmp_path):
    from ase.calculators.emt import EMT as EMTCalc

    with pytest.raises(ConfigError, match="calculator= runs in this process"):
        generate(md_rattle_recipe(), tmp_path / "p.h5", progress=False, calculator=EMTCalc(), workers=2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="workers: must be an integer >= 1"):
            generate(md_rattle_recipe(), tmp_path / "p.h5", progress=False, workers=bad)
    assert not (tmp_path / "p.h5").exists()


@pytest.mark.parametrize("value", ["0", "-3"])
def test_cli_workers_below_one_is_one_line(tmp_path, capsys, value):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(md_rattle_recipe())))
    rc = main(["generate", str(path), "-o", str(tmp_path / "p.h5"), "--workers", value, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--workers must be an integer >= 1" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p.h5").exists()


def test_teacher_free_recipe_with_workers_runs_in_this_process(tmp_path, monkeypatch):
    """--workers 2 on a recipe of teacher-free samplers starts no cluster (it would only cost)."""
    import mlff_distiller.labeling.cluster as cluster

    def no_cluster(*a, **k):
        raise AssertionError("a Dask cluster was started")

    monkeypatch.setattr(cluster, "connect", no_cluster)
    recipe = md_rattle_recipe()
    recipe["generation"]["mix"] = recipe["generation"]["mix"][1:]  # rattle entries only
    del recipe["generation"]["sources"]["alloy"]
    summary = generate(recipe, tmp_path / "pool.h5", progress=False, workers=2)
    assert summary["workers"] == 1 and summary["n_structures"] == 11


def test_speculation_starts_from_the_samplers_per_root():
    """Before any root of an entry returns, the roots kept in flight for it follow the sampler's
    nominal per_root (not the whole window); after, the structures the roots really gave."""
    import math
    from types import SimpleNamespace

    from mlff_distiller.generation.parallel import DaskRoots

    roots = DaskRoots.__new__(DaskRoots)  # the estimate needs no cluster
    job = SimpleNamespace(want=16, params={"per_root": 8}, include_root=False)
    roots.jobs, roots.seen = {0: job}, {0: [0, 0]}
    assert roots._expected_roots(0) == 2
    job.include_root = True  # the root itself is one more structure per root
    assert roots._expected_roots(0) == 2  # ceil(16 / 9)
    job.params = {}
    assert roots._expected_roots(0) == math.inf  # no nominal yield: as many as the window holds
    roots.seen = {0: [1, 4]}  # one root returned with 4 structures: 1 + ceil(12 / 4)
    assert roots._expected_roots(0) == 4
    roots.seen = {0: [2, 0]}  # roots returned and gave nothing: keep going
    assert roots._expected_roots(0) == math.inf
    job.params = {"per_root": 8}  # ... but with a nominal yield, the failed roots come on top of it
    assert roots._expected_roots(0) == 2 + 2


class _FakeFuture:
    def __init__(self, key):
        self.key, self.finished = key, False

    def done(self):
        return self.finished

    def result(self):
        from mlff_distiller.generation.roots import RootResult

        return RootResult("ok", 0, samples=[(None, {}, -1, True)])


class _FakeClient:
    def __init__(self):
        self.submitted, self.cancelled = [], []

    def submit(self, fn, spec, threads, ref, r, **kw):
        fut = _FakeFuture((ref, r))
        self.submitted.append(fut)
        return fut

    def scatter(self, obj, **kw):
        return obj.index

    def cancel(self, futs):
        self.cancelled.extend(futs)


def test_a_long_root_at_the_head_does_not_idle_the_other_workers():
    """A root that finishes while the consumer still waits on an earlier one frees its place in the
    window at once: the next root starts, and the finished one is held until the consumer takes it."""
    from types import SimpleNamespace

    from mlff_distiller.generation.parallel import DaskRoots
    from mlff_distiller.generation.roots import RootUsage

    client = _FakeClient()
    roots = DaskRoots.__new__(DaskRoots)
    roots.client, roots.spec, roots.threads, roots.workers, roots.window, roots.max_ready = client, None, 1, 2, 2, 8
    roots.futures, roots.ready, roots.usage = {}, {}, RootUsage()
    job = SimpleNamespace(index=0, want=6, params={"per_root": 1}, include_root=False, max_roots=100,
                          needs_teacher=False, portable=lambda: SimpleNamespace(index=0))
    roots.start([job])
    assert [f.key for f in client.submitted] == [(0, 0), (0, 1)]
    client.submitted[1].finished = True  # root 1 finishes while root 0 (the head) still runs
    waits = []

    def wait_any():  # the head keeps running until three later roots have finished
        waits.append(len(roots.futures))
        running = [f for f in client.submitted if not f.finished]
        (running[-1] if len(waits) < 3 else running[0]).finished = True

    roots._wait_any = wait_any
    res = roots.result(job, 0)
    assert res.status == "ok"
    # while root 0 ran, roots 2, 3 and 4 started in the places of those that finished
    assert [f.key for f in client.submitted][:5] == [(0, r) for r in range(5)]
    assert all(n == 2 for n in waits)  # two roots running at every wait: no worker left idle
    assert set(roots.ready) == {(0, 1), (0, 2), (0, 3)} and roots.seen[0] == [4, 4]
    assert roots.result(job, 1) is not None and (0, 1) not in roots.ready
    running = len(roots.futures)
    roots.finish(job)  # the entry is full: its held and running roots are dropped
    assert not roots.ready and not roots.futures
    assert (roots.usage.taken, roots.usage.discarded, roots.usage.cancelled) == (2, 2, running) and running == 2


def test_an_entry_without_an_estimate_keeps_at_most_a_window_of_roots_untaken():
    """Finished roots leave the window, but an entry with no estimate (no per_root, its roots so
    far gave nothing) gets no more than a window of roots started and not taken by the consumer."""
    from types import SimpleNamespace

    from mlff_distiller.generation.parallel import DaskRoots
    from mlff_distiller.generation.roots import RootResult, RootUsage

    class EmptyFuture(_FakeFuture):
        def result(self):
            return RootResult("ok", 0)  # a root that gave no structure

    client = _FakeClient()
    client.submit = lambda fn, spec, threads, ref, r, **kw: client.submitted.append(EmptyFuture((ref, r))) or \
        client.submitted[-1]
    roots = DaskRoots.__new__(DaskRoots)
    roots.client, roots.spec, roots.threads, roots.workers, roots.window, roots.max_ready = client, None, 1, 2, 3, 64
    roots.futures, roots.ready, roots.usage = {}, {}, RootUsage()
    job = SimpleNamespace(index=0, want=6, params={}, include_root=False, max_roots=100,
                          needs_teacher=False, portable=lambda: SimpleNamespace(index=0))
    roots.start([job])
    assert len(client.submitted) == 3
    for fut in client.submitted:
        fut.finished = True
    roots._collect()
    roots._fill()
    assert len(client.submitted) == 3 and len(roots.ready) == 3  # finished, untaken: no more started
    assert roots.result(job, 0).status == "ok"
    assert len(client.submitted) == 4  # the consumer took one: one more starts
