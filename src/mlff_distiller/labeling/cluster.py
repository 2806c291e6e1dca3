"""Where labeling runs: a local Dask cluster, an existing scheduler, or Slurm via dask-jobqueue.

* default: a :class:`distributed.LocalCluster` of ``n_workers`` processes, each running one
  task at a time with ``threads_per_worker`` math (torch/OpenMP) threads;
* ``scheduler="tcp://host:8786"`` (or a :class:`distributed.Client`): an existing cluster;
  its workers need this package and the teacher's dependencies installed;
* ``hpc={...}``: a ``dask_jobqueue.SLURMCluster`` started from the ``labeling.hpc`` recipe
  section (see :class:`HPCConfig` and ``docs/labeling.md``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import field
from typing import Annotated, Any, Iterator, Literal

from ..errors import ConfigError, UserError
from ..settings import Float, Int, Str, build, limits, section

log = logging.getLogger(__name__)


@section("labeling.hpc")
class HPCConfig:
    """``labeling.hpc`` recipe section: a Slurm cluster started by dask-jobqueue.

    ``jobs`` Slurm jobs are submitted, each running ``processes`` worker processes that
    share ``cores`` cores and ``memory``; ``extra`` is passed as-is to
    ``dask_jobqueue.SLURMCluster`` (e.g. ``job_extra_directives``, ``job_script_prologue``,
    ``interface``, ``local_directory``). ``cluster``: the only kind, ``slurm``.
    """

    cluster: Literal["slurm"] = "slurm"
    jobs: Annotated[Int, limits(ge=1)] = 1
    cores: Annotated[Int, limits(ge=1)] = 1
    processes: Annotated[Int, limits(ge=1)] = 1
    memory: Str = "4GB"
    walltime: Str = "01:00:00"
    queue: Str | None = None
    account: Str | None = None
    worker_timeout: Float = 600.0  # seconds to wait for the first worker (queue time)
    extra: Annotated[dict, limits(allowed="a mapping of SLURMCluster keyword arguments")] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None) -> "HPCConfig":
        """The section from a recipe mapping (``None`` = the defaults)."""
        return build(cls, d)

    def cluster_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "cores": self.cores,
            "processes": self.processes,
            "memory": self.memory,
            "walltime": self.walltime,
        }
        if self.queue:
            kw["queue"] = self.queue
        if self.account:
            kw["account"] = self.account
        kw.update(self.extra)
        return kw


# A local cluster may use at most this many threads per CPU of the machine (a typo such as
# --workers 10000 would otherwise start ten thousand processes).
MAX_THREADS_PER_CPU = 4


def check_local_size(n_workers: int, threads_per_worker: int = 1) -> None:
    """Refuse a local cluster far larger than the machine (ConfigError naming both flags)."""
    cpus = os.cpu_count() or 1
    limit = MAX_THREADS_PER_CPU * cpus
    if int(n_workers) * int(threads_per_worker) > limit:
        raise ConfigError(
            f"labeling.workers {n_workers} x threads_per_worker {threads_per_worker} = "
            f"{int(n_workers) * int(threads_per_worker)} threads on a machine with {cpus} CPUs; a local cluster "
            f"may use at most {limit} ({MAX_THREADS_PER_CPU} per CPU): lower them, or give a scheduler or hpc section"
        )


def local_cluster(n_workers: int, threads_per_worker: int = 1):
    """A :class:`distributed.LocalCluster` set up for labelling: ``n_workers`` processes
    running one task at a time, each with ``threads_per_worker`` math threads.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` by default. That
    fixes glibc's malloc thresholds low, so the large, short-lived tensors of a neural
    teacher are mapped and unmapped on every call: measured here, CHGNet ran 2.5x slower
    in a worker than in a plain process. Labelling workers keep glibc's adaptive defaults
    (a value set in the environment still wins).

    A structure too large for the teacher should cost one worker death, soon: the workers
    keep their memory limit (the nanny terminates a worker at 95 % of it) but do not spill or
    pause (a paused worker near its limit runs garbage collection over and over, and a
    teacher call then crawls for many minutes before the limit is reached), and the
    scheduler gives up on a task after 2 worker deaths instead of 4 (a chunk that dies twice
    is split into one task per structure; a structure that dies twice is a failure).
    """
    import dask
    from distributed import LocalCluster

    check_local_size(n_workers, threads_per_worker)
    threads = str(int(threads_per_worker))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    # Read once, in each Nanny's __init__, so it also holds for workers restarted later.
    settings = {
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
        "distributed.worker.memory.target": False,
        "distributed.worker.memory.spill": False,
        "distributed.worker.memory.pause": False,
        "distributed.scheduler.allowed-failures": 1,
    }
    with dask.config.set(settings):
        return LocalCluster(
            n_workers=int(n_workers),
            threads_per_worker=1,  # one task at a time per process; the teacher gets the math threads
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
            env=env,
        )


@contextlib.contextmanager
def connect(
    scheduler=None,
    *,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    hpc: dict | HPCConfig | None = None,
    connect_timeout: float = 10.0,
    worker_timeout: float = 60.0,
) -> Iterator[Any]:
    """Yield a connected :class:`distributed.Client` with at least one worker.

    Raises :class:`UserError` when the scheduler cannot be reached within
    ``connect_timeout`` s or no worker joins within ``worker_timeout`` s. Clusters started
    here are shut down on exit; an existing scheduler is left running.
    """
    from distributed import Client

    cluster = None
    own_client = True
    if scheduler is not None and not isinstance(scheduler, str):
        client = scheduler  # an existing Client, used as-is
        own_client = False
    elif scheduler:
        try:
            client = Client(scheduler, timeout=f"{connect_timeout}s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as err:
            raise UserError(
                f"cannot reach Dask scheduler '{scheduler}' ({type(err).__name__}); check the address "
                f"(tcp://HOST:PORT) and that the scheduler runs, or omit --scheduler to use a local cluster"
            ) from None
    elif hpc is not None:
        cfg = hpc if isinstance(hpc, HPCConfig) else HPCConfig.from_dict(hpc)
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise UserError("labeling.hpc needs dask-jobqueue: pip install 'mlff-distiller[hpc]'") from None
        cluster = SLURMCluster(**cfg.cluster_kwargs())
        cluster.scale(jobs=cfg.jobs)
        worker_timeout = cfg.worker_timeout
        client = Client(cluster, set_as_default=False)
    else:
        cluster = local_cluster(n_workers, threads_per_worker)
        client = Client(cluster, set_as_default=False)
    try:
        try:
            client.wait_for_workers(1, timeout=worker_timeout)
        except (TimeoutError, OSError):
            raise UserError(
                f"no Dask worker joined the scheduler within {worker_timeout:g} s; start workers "
                f"(dask worker {getattr(client, 'scheduler', None) and client.scheduler.address}) or check the cluster"
            ) from None
        yield client
    finally:
        if own_client:
            with contextlib.suppress(Exception):
                client.close(timeout=5)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=10)


def n_workers_of(client) -> int:
    try:
        return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    except TypeError:  # older distributed without the n_workers argument
        return max(1, len(client.scheduler_info()["workers"]))
    except Exception:  # noqa: BLE001 - a best-effort count for sizing
        return 1
