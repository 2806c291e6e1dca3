"""Labeling on a real Dask LocalCluster: results equal a serial loop, failures are tabled,
resume skips committed chunks, the hook sees every new chunk.

One 2-worker LocalCluster is shared by the module (starting one costs seconds here); the
engine's own LocalCluster start-up is exercised once.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from mlff_distiller.data.store import DatasetReader, DatasetWriter
from mlff_distiller.labeling import label_pool
from mlff_distiller.labeling.checkpoint import WorkDir
from mlff_distiller.teachers import build_teacher

pytestmark = pytest.mark.timeout(300)


def _prov(k: int, parent: int = -1) -> dict:
    return {"source": "bulk:Cu-fcc", "sampler": "rattle", "params": {"stdev": 0.05}, "parent": parent,
            "group": f"g{k % 3}", "seed": k, "teacher": ""}


def cu_structures(n: int, repeat=(2, 2, 2)) -> list[Atoms]:
    """Rattled fcc Cu cells plus an isolated Cu cluster every 5th structure (no stress)."""
    out = []
    for k in range(n):
        if k % 5 == 4:
            a = bulk("Cu", "fcc", a=3.6, cubic=True)
            a.pbc = False
            a.cell = np.zeros((3, 3))
        else:
            a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
        a.rattle(0.05, seed=k)
        a.info["provenance"] = _prov(k, parent=0 if k else -1)
        out.append(a)
    return out


def write_pool(path, atoms_list) -> str:
    with DatasetWriter(path, label_fields=()) as w:
        w.append(atoms_list)
    return str(path)


def serial_labels(spec, atoms_list):
    teacher = build_teacher(spec)
    return teacher, teacher.label(atoms_list)


def assert_matches_serial(out_path, pool_atoms, results, teacher, atol=1e-6):
    r = DatasetReader(out_path)
    ok = [i for i, res in enumerate(results) if res.ok]
    assert len(r) == len(ok)
    assert sorted(i for i, _ in r.failures()) == [i for i, res in enumerate(results) if not res.ok]
    for row, i in enumerate(ok):
        got = r.get_atoms(row)
        np.testing.assert_array_equal(got.numbers, pool_atoms[i].numbers)
        np.testing.assert_allclose(got.positions, pool_atoms[i].positions, atol=0, rtol=0)
        assert got.get_potential_energy() == pytest.approx(results[i].energy, abs=atol, rel=1e-7)
        # forces are float32 on disk
        np.testing.assert_allclose(got.get_forces(), results[i].forces, atol=max(atol, 2e-6), rtol=1e-5)
        if results[i].stress is not None:
            np.testing.assert_allclose(got.calc.results["stress"], results[i].stress, atol=atol, rtol=1e-6)
        else:
            assert "stress" not in got.calc.results
        prov = r.provenance(row)
        assert prov["teacher"] == teacher.fingerprint_id
        assert prov["seed"] == pool_atoms[i].info["provenance"]["seed"]
    assert r.attrs["teacher_fingerprint_id"] == teacher.fingerprint_id
    return r


def test_emt_local_cluster_equals_serial_loop(tmp_path, capsys, monkeypatch):
    """The engine starts its own 2-worker LocalCluster; labels equal a plain serial loop."""
    import mlff_distiller.logs

    monkeypatch.setattr(mlff_distiller.logs, "PROGRESS_INTERVAL", 0.0)  # stderr is no terminal: progress lines
    atoms = cu_structures(14)
    pool = write_pool(tmp_path / "pool.h5", atoms)
    out = tmp_path / "data.h5"
    seen = []
    summary = label_pool(pool, "emt", out, n_workers=2, chunk_size=3, progress=True,
                         on_chunk=lambda cid, al, fl: seen.append((cid, len(al), list(fl))))
    bar = capsys.readouterr().err
    assert "labelling: 14/14 (100 %)" in bar and "struct/s" in bar, "progress lines with count and rate"
    assert summary.workers == 2
    assert (summary.labelled, summary.failed, summary.skipped) == (14, 0, 0)
    assert summary.n_chunks == 5 and summary.n_dataset == 14
    assert sorted(c for c, _, _ in seen) == list(range(5))
    assert sum(k for _, k, _ in seen) == 14
    teacher, results = serial_labels("emt", atoms)
    r = assert_matches_serial(out, atoms, results, teacher)
    assert r.attrs["labeling_pool_sha256"]
    assert r.attrs["teacher_fingerprint"]["teacher"] == "emt"
    caps = r.attrs["teacher_capabilities"]  # read by quality's net-force check
    assert caps["forces"] is True and caps["conservative_forces"] == teacher.capabilities["conservative_forces"]
    assert not WorkDir.for_output(out).exists(), "checkpoint directory must be removed after the merge"


def test_chgnet_two_workers_equals_serial_loop(tmp_path, client):
    si = bulk("Si", "diamond", a=5.43)
    atoms = []
    for k in range(6):
        a = si.repeat((1, 1, 2)) if k % 2 else si.copy()
        a.rattle(0.03, seed=k)
        a.info["provenance"] = _prov(k)
        atoms.append(a)
    mol = molecule("H2O")
    mol.info["provenance"] = _prov(6)
    atoms.append(mol)
    pool = write_pool(tmp_path / "pool.h5", atoms)
    out = tmp_path / "data.h5"
    summary = label_pool(pool, "chgnet", out, scheduler=client, chunk_size=3, progress=False)
    assert (summary.labelled, summary.failed) == (7, 0)
    teacher, results = serial_labels("chgnet", atoms)
    assert all(res.ok for res in results)
    # CHGNet runs float32 in batches; chunking changes batch composition -> tiny differences
    assert_matches_serial(out, atoms, results, teacher, atol=1e-4)


def test_grid_pool_is_labelled_on_exactly_its_stored_coordinates(tmp_path, client):
    """A generated pool (positions on the 2^-16 A grid) labelled by the engine: the dataset
    keeps the grid layout, stores the pool's coordinates and cells bit for bit, and its labels
    are the teacher's on exactly those coordinates (stress rounded to float32 only)."""
    import h5py

    from mlff_distiller.data.store import GENERATED_POSITIONS_DTYPE

    pool = tmp_path / "pool.h5"
    with DatasetWriter(pool, label_fields=(), positions_dtype=GENERATED_POSITIONS_DTYPE) as w:
        w.append(cu_structures(6))
    with DatasetReader(pool) as r:
        seen = [r.get_atoms(i) for i in range(len(r))]  # what the teacher is given
    out = tmp_path / "data.h5"
    label_pool(pool, "emt", out, scheduler=client, chunk_size=2, progress=False)
    with h5py.File(out, "r") as h5:
        assert h5["positions"].dtype == np.int32 and h5["stress"].dtype == np.float32
    teacher, results = serial_labels("emt", seen)
    with DatasetReader(out) as r:
        assert len(r) == 6
        for i, (a, res) in enumerate(zip(seen, results)):
            b = r.get_atoms(i)
            assert np.array_equal(b.positions, a.positions) and np.array_equal(b.cell.array, a.cell.array)
            assert b.get_potential_energy() == res.energy
            assert np.array_equal(b.get_forces(), np.asarray(res.forces, np.float32))
            if res.stress is not None:
                assert np.array_equal(b.calc.results["stress"], np.asarray(res.stress, np.float32))


def test_planted_bad_structures_go_to_failures_table(tmp_path, client):
    atoms = cu_structures(9)
    bad_overlap = atoms[2].copy()
    bad_overlap.positions[1] = bad_overlap.positions[0] + [0.05, 0.0, 0.0]  # two atoms 0.05 A apart
    bad_element = atoms[5].copy()
    bad_element.numbers[3] = 92  # uranium: not in EMT
    # one atom in a 0.4 A periodic cube: it overlaps its own periodic image
    image_overlap = Atoms("Cu", positions=[[0.1, 0.1, 0.1]], cell=np.eye(3) * 0.4, pbc=True)
    atoms[2], atoms[5], atoms[7] = bad_overlap, bad_element, image_overlap
    for k in (2, 5, 7):
        atoms[k].info["provenance"] = _prov(k, parent=0)
    atoms[8].info["provenance"] = _prov(8, parent=6)  # parent row shifts once 2 and 5 are dropped
    pool = write_pool(tmp_path / "pool.h5", atoms)
    out = tmp_path / "data.h5"
    hook_failures = []
    summary = label_pool(pool, "emt", out, scheduler=client, chunk_size=4, progress=False,
                         on_chunk=lambda cid, al, fl: hook_failures.extend(fl))
    assert (summary.labelled, summary.failed) == (6, 3)
    r = DatasetReader(out)
    fails = dict(r.failures())
    assert sorted(fails) == [2, 5, 7]
    assert "overlap" in fails[2] and "0.050 A" in fails[2]
    assert "U" in fails[5] and "not supported" in fails[5]
    assert "atoms 0 and 0 overlap" in fails[7] and "0.400 A" in fails[7]
    assert sorted(i for i, _ in hook_failures) == [2, 5, 7]
    seeds = [r.provenance(i)["seed"] for i in range(len(r))]
    assert seeds == [0, 1, 3, 4, 6, 8]
    # structure 8's parent was pool index 6 = dataset row 4 after dropping 2 and 5
    assert r.provenance(5)["parent"] == 4
    assert r.provenance(2)["parent"] == 0
    for i in range(len(r)):
        assert np.all(np.isfinite(r.get_atoms(i).get_forces()))


def test_teacher_nan_goes_to_failures_table(tmp_path, client):
    """With the geometry check off, coincident atoms make the real LJ teacher return NaN/inf."""
    good = Atoms("Ar3", positions=[[0, 0, 0], [3.4, 0, 0], [0, 3.4, 0]])
    coincident = Atoms("Ar3", positions=[[0, 0, 0], [0, 0, 0], [0, 3.4, 0]])
    atoms = [good, coincident, good.copy()]
    pool = write_pool(tmp_path / "pool.h5", atoms)
    out = tmp_path / "data.h5"
    summary = label_pool(pool, "lj", out, scheduler=client, chunk_size=2, min_distance=0.0, progress=False)
    assert (summary.labelled, summary.failed) == (2, 1)
    fails = dict(DatasetReader(out).failures())
    assert list(fails) == [1]
    assert "non-finite" in fails[1] or "nan" in fails[1].lower() or "inf" in fails[1].lower()


class _StopAfter(Exception):
    pass


def test_resume_skips_committed_chunks_and_matches_uninterrupted(tmp_path, client):
    atoms = cu_structures(12)
    pool = write_pool(tmp_path / "pool.h5", atoms)
    ref = tmp_path / "ref.h5"
    label_pool(pool, "emt", ref, scheduler=client, chunk_size=2, progress=False)

    out = tmp_path / "data.h5"
    committed = []

    def stop_after_two(cid, al, fl):
        committed.append(cid)
        if len(committed) == 2:
            raise _StopAfter()

    with pytest.raises(_StopAfter):
        label_pool(pool, "emt", out, scheduler=client, chunk_size=2, progress=False, on_chunk=stop_after_two,
                   max_in_flight=1)
    assert not out.exists()
    work = WorkDir.for_output(out)
    assert sorted(work.committed(6)) == sorted(committed)
    resumed = []
    summary = label_pool(pool, "emt", out, scheduler=client, chunk_size=2, progress=False,
                         on_chunk=lambda cid, al, fl: resumed.append(cid))
    assert summary.resumed and summary.skipped == 4 and summary.labelled == 8
    assert sorted(resumed) == sorted(set(range(6)) - set(committed)), "committed chunks must not be relabelled"
    assert_same_dataset(ref, out)
    # a third run finds the finished output and does nothing, except dropping the
    # checkpoint a kill between the final rename and the clean-up would leave behind
    attrs = DatasetReader(out).attrs
    work.write_plan(
        {"pool_sha256": attrs["labeling_pool_sha256"], "teacher_fingerprint_id": attrs["teacher_fingerprint_id"]}
    )
    again = label_pool(pool, "emt", out, scheduler=client, progress=False)
    assert again.already_complete and again.skipped == 12 and again.labelled == 0
    assert not work.exists()


def assert_same_dataset(a, b):
    ra, rb = DatasetReader(a), DatasetReader(b)
    assert len(ra) == len(rb)
    assert ra.failures() == rb.failures()
    for i in range(len(ra)):
        xa, xb = ra.get_arrays(i), rb.get_arrays(i)
        assert sorted(xa) == sorted(xb)
        for k in xa:
            np.testing.assert_array_equal(xa[k], xb[k], err_msg=f"structure {i} field {k}")
        assert ra.provenance(i) == rb.provenance(i)
    for key in ("teacher_fingerprint_id", "labeling_pool_sha256", "teacher_fingerprint"):
        assert ra.attrs[key] == rb.attrs[key]


def test_auto_chunk_size_from_probe(tmp_path, client):
    atoms = cu_structures(10)
    pool = write_pool(tmp_path / "pool.h5", atoms)
    out = tmp_path / "data.h5"
    summary = label_pool(pool, "emt", out, scheduler=client, progress=False)
    # EMT is fast: the probe asks for big chunks, capped so each worker gets >= 2 chunks
    assert summary.chunk_size == 3 and summary.n_chunks == 4
    assert summary.labelled == 10


def test_teacher_that_cannot_load_fails_fast_with_worker_error(tmp_path, client):
    import time

    from mlff_distiller.errors import TeacherError

    pool = write_pool(tmp_path / "pool.h5", cu_structures(3))
    spec = {"name": "ase", "calculator": "no_such_module_xyz:Calc"}
    t0 = time.perf_counter()
    with pytest.raises(TeacherError) as info:
        label_pool(pool, spec, tmp_path / "data.h5", scheduler=client, progress=False)
    msg = str(info.value)
    assert "on worker" in msg and "no_such_module_xyz" in msg
    assert "\n" not in msg
    assert time.perf_counter() - t0 < 60, "must fail fast, not hang"
    assert not (tmp_path / "data.h5").exists()


def _wait_for(pred, proc, timeout=120.0):
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


@pytest.mark.parametrize(
    "moments",
    [
        pytest.param(("mid-run", "merge"), id="mid-run+merge"),
        pytest.param(("start-up", "mid-run", "mid-run", "mid-run", "merge"), id="five-kills", marks=pytest.mark.slow),
    ],
)
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted_run(tmp_path, client, moments):
    """``mlff-distill label`` is SIGKILLed at random moments (start-up, mid-run after a random
    number of committed chunks, during the final merge) and restarted; the final dataset is
    identical to an uninterrupted run's: nothing lost, nothing duplicated."""
    import os
    import random
    import signal
    import subprocess
    import sys

    n_chunks = 24
    atoms = cu_structures(2 * n_chunks, repeat=(3, 3, 3))
    pool = write_pool(tmp_path / "pool.h5", atoms)
    ref = tmp_path / "ref.h5"
    label_pool(pool, "emt", ref, scheduler=client, chunk_size=2, progress=False)

    out = tmp_path / "data.h5"
    parts = WorkDir.for_output(out).path
    # `python -m mlff_distiller.labeling` is `mlff-distill label` without importing the other stages
    cmd = [sys.executable, "-m", "mlff_distiller.labeling", pool, "-o", str(out), "--teacher", "emt",
           "--scheduler", client.scheduler.address, "--chunk-size", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(1234)
    import time

    def n_shards():
        return len(list(parts.glob("chunk-*.npz"))) if parts.exists() else 0

    kills = []
    for moment in moments:
        before = n_shards()
        if moment == "merge":
            pred = lambda: any(out.parent.glob(f".{out.name}.*.tmp*"))  # noqa: E731  (fileio.temp_path)
        elif moment == "mid-run":
            target = rng.randint(before + 1, before + max(1, (n_chunks - before) // 2))
            pred = lambda target=target: n_shards() >= target  # noqa: E731
        else:  # start-up: a random moment, but before the first chunk of this run is committed
            # (a fixed delay let a quick run commit 22 of 24 chunks "at start-up")
            deadline = time.monotonic() + rng.uniform(0.2, 2.0)
            pred = lambda before=before, deadline=deadline: (  # noqa: E731
                time.monotonic() > deadline or n_shards() > before)
        # niced, so that on a busy machine this test's poller still sees the shards appear
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=lambda: os.nice(10))
        _wait_for(pred, proc)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills.append((moment, before, n_shards()))
        else:
            assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
        # a committed chunk is never lost: the shard count never goes down
        assert n_shards() >= before or out.exists()
    print("kills (moment, shards before, shards at kill):", kills)
    assert len(kills) >= len(moments) - 1, f"the process finished before the kills landed: {kills}"
    assert any(m == "mid-run" for m, _, _ in kills), kills
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    assert "labelled" in final.stdout
    assert_same_dataset(ref, out)
    assert not parts.exists()
    assert not list(tmp_path.glob(".data.h5.*.tmp*"))


class ExitingEMT:
    """EMT, except that a structure of exactly 3 atoms kills the worker process outright
    (like a segfault in a compiled teacher). Importable by workers as
    ``test_labeling_engine:ExitingEMT``."""

    def __new__(cls, **kwargs):
        from ase.calculators.emt import EMT

        class _Exiting(EMT):
            def calculate(self, atoms=None, properties=("energy",), system_changes=None):
                if atoms is not None and len(atoms) == 3:
                    os._exit(13)
                return super().calculate(atoms, properties, system_changes or [])

        return _Exiting(**kwargs)


@pytest.mark.slow
def test_worker_that_dies_is_retried_then_isolated(tmp_path):
    """A structure that kills its worker: Dask restarts the worker and retries; after the
    allowed failures (2 deaths on the labelling cluster) the chunk is split and only that
    structure lands in the failures table."""
    from distributed import Client

    from mlff_distiller.labeling.cluster import local_cluster

    atoms = cu_structures(6)
    killer = Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0]])
    killer.info["provenance"] = _prov(99)
    atoms.insert(3, killer)
    pool = write_pool(tmp_path / "pool.h5", atoms)
    cluster = local_cluster(2, 1)
    c = Client(cluster, set_as_default=False)
    try:
        assert cluster.scheduler.allowed_failures == 1
        spec = {"name": "ase", "calculator": "test_labeling_engine:ExitingEMT",
                "elements": ["Cu"], "conservative_forces": True}
        summary = label_pool(pool, spec, tmp_path / "data.h5", scheduler=c, chunk_size=4, progress=False)
    finally:
        c.close()
        cluster.close()
    assert (summary.labelled, summary.failed) == (6, 1)
    fails = dict(DatasetReader(tmp_path / "data.h5").failures())
    assert list(fails) == [3] and "worker process died" in fails[3]


def test_empty_pool_gives_empty_dataset(tmp_path, client):
    pool = write_pool(tmp_path / "pool.h5", [])
    out = tmp_path / "data.h5"
    summary = label_pool(pool, "emt", out, scheduler=client, progress=False)
    assert (summary.labelled, summary.failed, summary.n_chunks) == (0, 0, 0)
    r = DatasetReader(out)
    assert len(r) == 0 and r.failures() == [] and r.attrs["teacher_fingerprint_id"].startswith("emt-")


def test_quality_chunk_monitor_plugs_into_the_hook(tmp_path, client):
    """The quality stage's ChunkMonitor, used as ``on_chunk``, sees every chunk and failure."""
    from mlff_distiller.quality import ChunkMonitor

    atoms = cu_structures(8)
    atoms[1] = Atoms("U2", positions=[[0, 0, 0], [2.5, 0, 0]])  # not an EMT element
    pool = write_pool(tmp_path / "pool.h5", atoms)
    monitor = ChunkMonitor()
    label_pool(pool, "emt", tmp_path / "data.h5", scheduler=client, chunk_size=4, on_chunk=monitor, progress=False)
    s = monitor.summary()
    assert s["chunks"] == 2 and s["labelled"] == 7 and s["failed"] == 1


def test_overwrite_replaces_output_from_another_pool(tmp_path, client):
    from mlff_distiller.errors import UserError

    pool_a = write_pool(tmp_path / "a.h5", cu_structures(4))
    pool_b = write_pool(tmp_path / "b.h5", cu_structures(6))
    out = tmp_path / "data.h5"
    label_pool(pool_a, "emt", out, scheduler=client, progress=False)
    with pytest.raises(UserError, match="another pool"):
        label_pool(pool_b, "emt", out, scheduler=client, progress=False)
    assert len(DatasetReader(out)) == 4
    summary = label_pool(pool_b, "emt", out, scheduler=client, progress=False, overwrite=True)
    assert summary.labelled == 6
    r = DatasetReader(out)
    assert len(r) == 6 and r.attrs["labeling_pool_path"].endswith("b.h5")
