"""Labeling: bad input gives one-line errors, the checkpoint protocol, configs. No cluster
is started here (every case fails or finishes before one would be)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from ase.build import bulk

from mlff_distiller.data.store import DatasetWriter
from mlff_distiller.errors import ConfigError, DatasetError, UserError
from mlff_distiller.labeling import HPCConfig, LabelingConfig, label_pool, parse_teacher_spec
from mlff_distiller.labeling.checkpoint import MANIFEST, WorkDir, shard_name
from mlff_distiller.labeling.engine import _auto_chunk_size


def _pool(path, n=3, seed=0):
    atoms = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.6, cubic=True)
        a.rattle(0.05, seed=seed + k)
        atoms.append(a)
    with DatasetWriter(path, label_fields=()) as w:
        w.append(atoms)
    return path


def _one_line(err: Exception) -> str:
    msg = str(err)
    assert msg and "\n" not in msg
    return msg


# -- bad input ------------------------------------------------------------------------------
def test_missing_pool(tmp_path):
    with pytest.raises(DatasetError) as info:
        label_pool(tmp_path / "nope.h5", "emt", tmp_path / "out.h5", progress=False)
    assert "nope.h5" in _one_line(info.value) and "does not exist" in str(info.value)


def test_corrupt_pool(tmp_path):
    bad = tmp_path / "pool.h5"
    bad.write_bytes(b"this is not an HDF5 file" * 100)
    with pytest.raises(DatasetError) as info:
        label_pool(bad, "emt", tmp_path / "out.h5", progress=False)
    _one_line(info.value)
    assert not (tmp_path / "out.h5").exists()


def test_unreachable_scheduler_fails_fast(tmp_path):
    pool = _pool(tmp_path / "pool.h5")
    t0 = time.perf_counter()
    with pytest.raises(UserError) as info:
        label_pool(pool, "emt", tmp_path / "out.h5", scheduler="tcp://127.0.0.1:9", connect_timeout=2,
                   progress=False)
    msg = _one_line(info.value)
    assert "tcp://127.0.0.1:9" in msg and "scheduler" in msg
    assert time.perf_counter() - t0 < 30
    assert not (tmp_path / "out.h5").exists()


def _fake_output(path, pool_sha: str):
    """A labelled dataset that claims to come from the pool with ``pool_sha``."""
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    from ase.calculators.singlepoint import SinglePointCalculator

    a.calc = SinglePointCalculator(a, energy=-1.0, forces=np.zeros((4, 3)), stress=np.zeros(6))
    with DatasetWriter(path, attrs={"labeling_pool_sha256": pool_sha, "labeling_pool_path": "/elsewhere/pool.h5"}) as w:
        w.append([a])


def test_existing_output_from_another_pool_is_refused(tmp_path):
    pool = _pool(tmp_path / "pool.h5")
    out = tmp_path / "out.h5"
    _fake_output(out, "0" * 64)
    before = out.read_bytes()
    with pytest.raises(UserError) as info:
        label_pool(pool, "emt", out, progress=False)
    msg = _one_line(info.value)
    assert "another pool" in msg and "--overwrite" in msg and "/elsewhere/pool.h5" in msg
    assert out.read_bytes() == before, "the existing output must be left untouched"


def test_existing_non_dataset_output_is_refused(tmp_path):
    pool = _pool(tmp_path / "pool.h5")
    out = tmp_path / "out.h5"
    out.write_text("my notes, not a dataset")
    with pytest.raises(UserError) as info:
        label_pool(pool, "emt", out, progress=False)
    assert "--overwrite" in _one_line(info.value)
    assert out.read_text() == "my notes, not a dataset"


def test_checkpoint_from_another_pool_is_refused(tmp_path):
    pool = _pool(tmp_path / "pool.h5")
    out = tmp_path / "out.h5"
    work = WorkDir.for_output(out)
    work.write_plan({"pool_sha256": "f" * 64, "pool_path": "/other/pool.h5"})
    with pytest.raises(UserError) as info:
        label_pool(pool, "emt", out, progress=False)
    assert "checkpoint" in _one_line(info.value) and "/other/pool.h5" in str(info.value)
    assert work.read_plan()["pool_sha256"] == "f" * 64


def test_output_equal_to_pool_is_refused(tmp_path):
    pool = _pool(tmp_path / "pool.h5")
    with pytest.raises(UserError, match="pool itself"):
        label_pool(pool, "emt", pool, progress=False)


@pytest.mark.parametrize(
    "kwargs, field",
    [({"n_workers": 0}, "n_workers"), ({"threads_per_worker": -1}, "threads_per_worker"),
     ({"chunk_size": 0}, "chunk_size"), ({"min_distance": -0.1}, "min_distance")],
)
def test_bad_options(tmp_path, kwargs, field):
    pool = _pool(tmp_path / "pool.h5")
    with pytest.raises(ConfigError, match=field):
        label_pool(pool, "emt", tmp_path / "out.h5", progress=False, **kwargs)


def test_teacher_spec_parsing(tmp_path):
    assert parse_teacher_spec("emt") == "emt"
    assert parse_teacher_spec('{"name": "chgnet", "batch_size": 4}') == {"name": "chgnet", "batch_size": 4}
    assert parse_teacher_spec("{name: orb, weights_path: x.ckpt}") == {"name": "orb", "weights_path": "x.ckpt"}
    f = tmp_path / "t.yaml"
    f.write_text("teacher:\n  name: emt\nlabeling:\n  workers: 2\n")
    assert parse_teacher_spec(str(f)) == {"name": "emt"}
    for bad in ("{name: [", "{batch_size: 3}", "", "  "):
        with pytest.raises(ConfigError) as info:
            parse_teacher_spec(bad)
        _one_line(info.value)


# -- CLI ------------------------------------------------------------------------------------
def _cli(*args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mlff_distiller.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_cli_missing_pool_is_one_line_exit_2(tmp_path):
    res = _cli("label", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "o.h5"), "--teacher", "emt")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlff-distill: error:") and "missing.h5" in lines[0]


def test_cli_bad_config_names_the_field(tmp_path):
    pool = _pool(tmp_path / "pool.h5")
    cfg = tmp_path / "r.yaml"
    cfg.write_text("labeling:\n  wokers: 3\n")
    res = subprocess.run([sys.executable, "-m", "mlff_distiller.labeling", str(pool), "-o", str(tmp_path / "o.h5"),
                          "--config", str(cfg)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "labeling: unknown key 'wokers'" in res.stderr and "allowed" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


# -- configs --------------------------------------------------------------------------------
def test_labeling_config_validation():
    cfg = LabelingConfig.from_dict({"workers": 4, "chunk_size": 16, "min_distance": 0.3,
                                    "hpc": {"jobs": 2, "cores": 8, "queue": "cpu", "extra": {"interface": "ib0"}}})
    assert cfg.workers == 4 and cfg.chunk_size == 16 and cfg.hpc.jobs == 2
    kw = cfg.hpc.cluster_kwargs()
    assert kw["cores"] == 8 and kw["queue"] == "cpu" and kw["interface"] == "ib0"
    for bad, field in [({"workers": 0}, "workers"), ({"chunk_size": 1.5}, "chunk_size"),
                       ({"min_distance": "x"}, "min_distance"), ({"scheduler": 5}, "scheduler"),
                       ({"hpc": {"jobs": 0}}, "hpc.jobs"), ({"hpc": {"cluster": "pbs"}}, "hpc.cluster"),
                       ({"hpc": {"quue": "x"}}, "hpc: unknown key 'quue'"),
                       ({"scheduler": "tcp://a:1", "hpc": {}}, "hpc")]:
        with pytest.raises(ConfigError) as info:
            LabelingConfig.from_dict(bad)
        assert f"labeling.{field}" in _one_line(info.value)


def test_slurm_cluster_kwargs_are_accepted_by_dask_jobqueue():
    """The documented hpc example produces a valid SLURM job script (nothing is submitted)."""
    pytest.importorskip("dask_jobqueue")
    from dask_jobqueue import SLURMCluster

    cfg = HPCConfig.from_dict({"jobs": 2, "cores": 4, "processes": 2, "memory": "8GB", "walltime": "00:30:00",
                               "queue": "cpu", "account": "proj42",
                               "extra": {"job_extra_directives": ["--exclusive"]}})
    cluster = SLURMCluster(**cfg.cluster_kwargs(), scheduler_options={"dashboard_address": ":0"})
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p cpu" in script and "#SBATCH -A proj42" in script and "--exclusive" in script
    assert "#SBATCH -t 00:30:00" in script and "--nworkers 2" in script


# -- checkpoint protocol --------------------------------------------------------------------
def _result(cid, idx, fail=()):
    k = len(idx)
    return {"chunk_id": cid, "indices": idx, "energy": np.arange(k, dtype=float), "n_atoms": [2] * k,
            "forces": np.ones((2 * k, 3)), "stress": np.zeros((k, 6)), "stress_mask": [True] * k,
            "failures": list(fail)}


def test_commit_round_trip_and_resume_scan(tmp_path):
    work = WorkDir(tmp_path / "w.parts")
    work.write_plan({"x": 1})
    work.commit(_result(0, [0, 1], fail=[(2, "bad thing")]))
    work.commit(_result(2, [6, 7, 8]))
    data = work.load(0)
    assert list(data["indices"]) == [0, 1] and data["failures"] == [(2, "bad thing")]
    assert data["forces"].shape == (4, 3)
    assert work.committed(4) == {0: {"labelled": 2, "failed": 1}, 2: {"labelled": 3, "failed": 0}}
    assert set(work.manifest()) == {0, 2}
    assert work.read_plan() == {"x": 1}


def test_torn_manifest_line_and_stray_temp_files(tmp_path):
    work = WorkDir(tmp_path / "w.parts")
    work.write_plan({})
    work.commit(_result(0, [0]))
    work.commit(_result(1, [1]))
    # killed mid-append: a torn last line; killed mid-write: a temporary shard
    with open(work.path / MANIFEST, "a") as fh:
        fh.write('{"chunk": 2, "lab')
    (work.path / (shard_name(2) + ".tmp-999")).write_bytes(b"partial")
    # killed between the rename and the manifest append: a shard with no manifest line
    lines = (work.path / MANIFEST).read_text().splitlines()
    (work.path / MANIFEST).write_text(lines[0] + "\n" + lines[2])
    assert set(work.manifest()) == {0}
    done = work.committed(3)
    assert sorted(done) == [0, 1], "the shard is the truth: chunk 1 is committed, chunk 2 is not"
    assert not list(work.path.glob("*.tmp-*"))
    assert set(work.manifest()) == {0, 1}


def test_damaged_shard_is_relabelled_not_trusted(tmp_path):
    work = WorkDir(tmp_path / "w.parts")
    work.commit(_result(0, [0, 1]))
    work.commit(_result(1, [2, 3]))
    p = work.shard_path(1)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    assert sorted(work.committed(2)) == [0]
    assert not p.exists()


def test_auto_chunk_size():
    # 2 s of work per task at 0.1 s/structure = 20, unless that leaves < 2 chunks per worker
    assert _auto_chunk_size(0.1, 1000, 2, 2.0) == 20
    assert _auto_chunk_size(0.1, 40, 2, 2.0) == 10
    assert _auto_chunk_size(5.0, 1000, 2, 2.0) == 1
    assert _auto_chunk_size(None, 10_000_000, 1, 2.0) == 2_000
    assert _auto_chunk_size(1e-4, 1, 4, 2.0) == 1


def test_cli_unreachable_scheduler_is_one_line(tmp_path):
    pool = _pool(tmp_path / "pool.h5")
    res = subprocess.run([sys.executable, "-m", "mlff_distiller.labeling", str(pool), "-o", str(tmp_path / "o.h5"),
                          "--teacher", "emt", "--scheduler", "tcp://127.0.0.1:9"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Dask scheduler 'tcp://127.0.0.1:9'" in lines[0]


def test_unknown_teacher_fails_before_any_cluster(tmp_path):
    from mlff_distiller.errors import TeacherError

    pool = _pool(tmp_path / "pool.h5")
    t0 = time.perf_counter()
    with pytest.raises(TeacherError) as info:
        label_pool(pool, "chgnett", tmp_path / "out.h5", progress=False)
    assert "chgnett" in _one_line(info.value) and "known teachers" in str(info.value)
    assert time.perf_counter() - t0 < 10
