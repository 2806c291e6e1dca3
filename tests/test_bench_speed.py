"""Speed harness: interleaved timing, consistent ratios, no cached calls, memory, ns/day."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from mlff_distiller.bench.models import ModelHandle
from mlff_distiller.bench.speed import ns_per_day, profile_speed, set_threads, speed_ratios


class Counting(EMT):
    """EMT that counts real evaluations and can add a fixed delay (a 'slow teacher')."""

    def __init__(self, delay=0.0):
        super().__init__()
        self.delay = delay
        self.n = 0

    def calculate(self, *args, **kwargs):
        self.n += 1
        if self.delay:
            time.sleep(self.delay)
        super().calculate(*args, **kwargs)


class Hungry(Calculator):
    """Holds a 64 MiB array while it computes: a model with a known memory peak."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        buf = np.ones(8 * 2**20)  # 64 MiB of float64, touched
        time.sleep(0.01)
        self.results = {"energy": float(buf[0]) - 1.0, "forces": np.zeros((len(self.atoms), 3))}


def small_cu():
    return bulk("Cu", "fcc", a=3.61, cubic=True)  # 4 atoms: EMT costs well under a millisecond


def test_ratio_is_teacher_over_student_and_slow_teacher_is_slower():
    teacher, student = Counting(delay=0.02), Counting()
    models = {"teacher": ModelHandle("teacher", lambda: teacher), "student": ModelHandle("student", lambda: student)}
    sp = profile_speed(models, small_cu(), timestep_fs=1.0, n_rounds=2, n_calls=3, n_md_steps=2, warmup=1, memory=False)
    ratio = speed_ratios(sp, "teacher", "student")
    t, s = sp["teacher"], sp["student"]
    assert ratio["force_call"] == t["force_call_ms"]["median"] / s["force_call_ms"]["median"]
    assert ratio["md_step"] == t["md_step_ms"]["median"] / s["md_step_ms"]["median"]
    assert t["force_call_ms"]["median"] >= 20.0  # the 20 ms delay is inside the timed call
    assert ratio["force_call"] > 2.0 and ratio["md_step"] > 2.0
    assert t["force_call_ms"]["n"] == 6 and t["md_step_ms"]["n"] == 2
    assert t["ns_per_day"] == pytest.approx(ns_per_day(t["md_step_ms"]["median"], 1.0))
    # every timed call is a real evaluation (no cache hits): warm-up (1 call + MD start + 1 step), then per
    # round 3 calls + an untimed MD start (the calculator last saw the other copy of the atoms) + 2 steps
    assert student.n == teacher.n == (1 + 1 + 1) + 2 * (3 + 1 + 2)


def test_ns_per_day():
    # 1 fs steps at 1 ms each: 86 400 000 steps a day = 86.4 ns
    assert ns_per_day(1.0, 1.0) == pytest.approx(86.4)
    assert ns_per_day(10.0, 0.5) == pytest.approx(4.32)


def test_memory_peak_of_a_hungry_model_is_seen():
    models = {"hungry": ModelHandle("hungry", Hungry), "emt": ModelHandle("emt", EMT)}
    sp = profile_speed(models, small_cu(), n_rounds=1, n_calls=1, n_md_steps=1, warmup=0, memory=True)
    mem = sp["hungry"]["memory"]
    assert mem["python_peak_mb"] >= 60.0  # numpy buffers are traced by tracemalloc
    assert mem["rss_peak_mb"] > 0
    assert sp["emt"]["memory"]["python_peak_mb"] < 30.0


def test_set_threads_reports_what_is_in_effect():
    import torch

    before = torch.get_num_threads()
    try:
        assert set_threads(1)["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_memory_child_failure_is_reported_not_raised():
    # the success path (student and teacher rebuilt in fresh processes) is covered end to end in
    # test_bench_run.py; here a spec that fails in the child must come back as an entry, not hang
    from mlff_distiller.bench.speed import memory_isolated

    bad = ModelHandle("bad", EMT, rebuild=("teacher", {"name": "no-such-teacher"}))
    out = memory_isolated(bad, small_cu(), timeout_s=120)
    assert out["isolated"] is True
    assert "unknown teacher" in out["error"]
