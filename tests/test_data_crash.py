"""Crash safety of the dataset writer: SIGKILL at random moments, then reopen and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mlff_distiller.data.store import DatasetReader, DatasetWriter, journal_dir

# The child appends deterministic structures (structure k is a function of k only) in
# batches, finalizing now and then, with a tiny journal limit so that kills also land in
# journal compaction and in finalize. After each append returns it prints the new length.
CHILD = r"""
import sys
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
import mlff_distiller.data.store as store

store.writer.MAX_JOURNAL_SEGMENTS = 3

def make(k):
    rng = np.random.default_rng(k)
    n = 3 + k % 7
    a = Atoms(numbers=1 + (np.arange(n) + k) % 30, positions=rng.normal(size=(n, 3)) * 3,
              cell=np.eye(3) * (8 + k % 3), pbc=k % 2 == 0)
    res = dict(energy=float(k) + 0.5, forces=rng.normal(size=(n, 3)))
    if k % 2 == 0:
        res["stress"] = rng.normal(size=6)
    a.calc = SinglePointCalculator(a, **res)
    a.info["provenance"] = {"source": f"test:{k % 5}", "sampler": "rattle", "params": {"k": k},
                            "parent": k - 1, "group": f"g{k // 10}", "seed": k, "teacher": "t"}
    return a

path = sys.argv[1]
w = store.DatasetWriter(path, label_fields=("energy", "forces", "stress"), finalize_on_close=False)
k = len(w)
step = 0
while True:
    batch = [make(j) for j in range(k, k + 1 + step % 4)]
    idx = w.append(batch)
    assert idx == list(range(k, k + len(batch))), (idx, k)
    k += len(batch)
    print(k, flush=True)
    step += 1
    if step % 5 == 0:
        w.finalize()
        print("finalized", flush=True)
"""


def _make_expected():
    ns = {}
    exec(CHILD.split("path = sys.argv[1]")[0], ns)
    return ns["make"]


def _check_dataset(path, at_least: int, at_most: int, make):
    r = DatasetReader(path)
    try:
        n = len(r)
        assert at_least <= n <= at_most, (at_least, n, at_most)
        for i in range(n):
            got, want = r.get_atoms(i), make(i)
            assert np.array_equal(got.numbers, want.numbers)
            assert np.array_equal(got.positions, want.positions)
            assert got.get_potential_energy() == want.get_potential_energy()
            np.testing.assert_allclose(got.get_forces(), want.get_forces(), rtol=1e-6, atol=1e-6)
            assert got.info["provenance"]["seed"] == i
            assert ("stress" in got.calc.results) == (i % 2 == 0)
        return n
    finally:
        r.close()


def _random_kills(tmp_path, n_kills: int, seed: int):
    path = tmp_path / "crash.h5"
    make = _make_expected()
    rng = np.random.default_rng(seed)
    returned = 0
    kills = 0
    for _ in range(n_kills):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        first = proc.stdout.readline()  # wait until the child is inside its append loop
        assert first.strip(), "child died before its first append"
        returned = max(returned, int(first))
        time.sleep(float(rng.uniform(0.0, 0.4)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += proc.returncode == -signal.SIGKILL
        for line in proc.stdout.read().split():
            if line.isdigit():
                returned = max(returned, int(line))
        proc.stdout.close()
        # Every append that returned is there; at most the in-flight batch (<= 4) more.
        n = _check_dataset(path, returned, returned + 4, make)
        returned = n
    assert kills >= n_kills - 1
    # Appending resumes after the last kill, and finalize leaves one compact file.
    with DatasetWriter(path, label_fields=("energy", "forces", "stress")) as w:
        start = len(w)
        assert w.append([make(start), make(start + 1)]) == [start, start + 1]
    assert not journal_dir(path).exists()
    _check_dataset(path, start + 2, start + 2, make)
    assert DatasetReader(path).n_segments == 0


def test_sigkill_at_random_moments_keeps_every_returned_append(tmp_path):
    _random_kills(tmp_path, n_kills=6, seed=1234)


@pytest.mark.slow
def test_sigkill_many_random_moments(tmp_path):
    _random_kills(tmp_path, n_kills=40, seed=99)


# Deterministic kill points: the child kills itself right before or right after its N-th
# atomic rename (segment commit, journal compaction, finalize of the main file).
KILL_HOOK = r"""
import os, signal
_real_replace = os.replace
_calls = [0]
_when, _nth = os.environ["KILL_AT"].split(":")
def _replace(src, dst):
    _calls[0] += 1
    if _calls[0] == int(_nth) and _when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    _real_replace(src, dst)
    if _calls[0] == int(_nth) and _when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = _replace  # the store renames through mlff_distiller.fileio (os.replace)
"""


@pytest.mark.parametrize(
    "kill_at", ["before:1", "after:2", "after:5", "before:6", "after:6", "before:8", "after:8"]
)
def test_sigkill_around_atomic_renames(tmp_path, kill_at):
    # Rename calls of the child: 1 creates the empty main file, 2-5 commit segments 1-4,
    # 6 compacts the journal (more than MAX_JOURNAL_SEGMENTS = 3 segments) into one, 7 commits
    # segment 5 and 8 is the finalize that replaces the main file (then deletes the journal).
    path = tmp_path / "k.h5"
    make = _make_expected()
    child = CHILD.replace("path = sys.argv[1]", KILL_HOOK + "\npath = sys.argv[1]")
    proc = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "KILL_AT": kill_at})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    lines = [int(x) for x in proc.stdout.split() if x.isdigit()]
    returned = max(lines, default=0)
    if path.exists():
        n = _check_dataset(path, returned, returned + 4, make)
    else:  # killed before the empty file was in place: no append can have returned
        assert returned == 0
        n = 0
    with DatasetWriter(path, label_fields=("energy", "forces", "stress")) as w:
        assert len(w) == n
        w.append([make(n)])
    _check_dataset(path, n + 1, n + 1, make)
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_readers_see_consistent_snapshots_while_a_writer_appends_and_finalizes(tmp_path):
    path = tmp_path / "live.h5"
    make = _make_expected()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline().strip()
        sizes = []
        t_end = time.time() + 3.0
        while time.time() < t_end:
            r = DatasetReader(path)
            try:
                n = len(r)
                for i in {0, n // 2, n - 1}:  # spot checks: complete structures only
                    got = r.get_atoms(i)
                    assert np.array_equal(got.positions, make(i).positions)
                    assert got.info["provenance"]["seed"] == i
            finally:
                r.close()
            sizes.append(n)
        assert sizes == sorted(sizes) and sizes[-1] > sizes[0]  # never goes back, and it grew
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
