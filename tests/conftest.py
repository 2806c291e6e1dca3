"""Shared test fixtures: deterministic seeds, one thread, tolerances by dtype."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

# Absolute tolerances keyed by dtype, used by physics tests (finite differences etc.).
FLOAT_TOLERANCE = {"float32": 1e-4, "float64": 1e-8}


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    yield


@pytest.fixture(scope="module")
def client():
    """A 2-worker local Dask cluster (one thread each) shared by a test module's Dask tests."""
    from distributed import Client

    from mlff_distiller.labeling.cluster import local_cluster

    cluster = local_cluster(2, 1)
    c = Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def load_benchmark(script: str):
    """Import ``benchmarks/<script>.py`` from its file (under a ``bench_`` name, so that
    benchmarks/ never shadows a package module), with its sibling ``_results.py`` importable."""
    import importlib.util
    import sys

    sys.path.insert(0, BENCHMARKS)
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{script}", os.path.join(BENCHMARKS, f"{script}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(BENCHMARKS)
