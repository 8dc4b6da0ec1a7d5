"""Dask cluster handling for the pixel-touching stages.

:func:`dask_client` gives a ``distributed.Client``: on a ``LocalCluster`` of worker processes
by default, or on an existing cluster when a scheduler address is given. GDAL settings for
cloud reads are applied on every worker (a worker plugin), not only in the client, because
environment variables and GDAL config set in the client process never reach the workers.
:func:`run_tasks` maps a function over task inputs with one progress bar per stage, retries
for tasks lost with a worker, and results in input order.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from distributed import Client, LocalCluster, WorkerPlugin, as_completed
from tqdm import tqdm

from terracorpus.pipelines.config import DaskConfig
from terracorpus.pipelines.errors import ClusterError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

GDAL_CLOUD_ENV: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_VERSION": "2",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    "VSI_CACHE": "TRUE",
    "GDAL_CACHEMAX": "256",
    # One BLAS / OpenMP thread per worker process: the stages parallelise over tasks.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


# What reads need from the client's environment: GDAL settings, AWS credentials, the
# Planetary Computer subscription key, the netrc file (secrets live here, never in a config).
_FORWARDED = ("GDAL_", "CPL_", "AWS_")
_NAMES = ("PC_SDK_SUBSCRIPTION_KEY", "NETRC")


class GdalEnvPlugin(WorkerPlugin):
    """Sets GDAL (and BLAS thread) environment on each worker when it starts."""

    name = "terracorpus-gdal-env"

    def __init__(self, env: dict[str, str]) -> None:
        self.env = dict(env)

    def setup(self, worker: Any) -> None:
        os.environ.update(self.env)


def worker_env() -> dict[str, str]:
    """Environment read by worker tasks; the user's own GDAL_* settings win."""
    env = dict(GDAL_CLOUD_ENV)
    env.update({k: v for k, v in os.environ.items() if k.startswith(_FORWARDED) or k in _NAMES})
    return env


@contextmanager
def dask_client(cfg: DaskConfig, *, quiet: bool = False) -> Iterator[Client]:
    """A Dask client on an existing scheduler (``cfg.scheduler``) or a new LocalCluster.

    The LocalCluster runs ``cfg.workers`` worker *processes* with ``cfg.threads_per_worker``
    threads each, bound to loopback; it is closed on exit. The dashboard link is printed.
    """
    env = worker_env()
    if cfg.scheduler:
        try:
            client = Client(cfg.scheduler, timeout="5s")
        except (OSError, TimeoutError) as e:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {cfg.scheduler}: {e}. Check the address "
                "(tcp://host:port) and that the scheduler is running, or drop --scheduler to "
                "start a local cluster"
            ) from None
        cluster = None
    else:
        try:
            cluster = LocalCluster(
                n_workers=cfg.workers,
                threads_per_worker=cfg.threads_per_worker,
                processes=True,
                memory_limit=cfg.memory_limit,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                env=env,
                silence_logs=logging.ERROR,
            )
        except Exception as e:  # distributed raises a variety of errors here
            raise ClusterError(f"cannot start a local Dask cluster: {e}") from e
        client = Client(cluster)
    try:
        client.register_plugin(GdalEnvPlugin(env))
        if not quiet:
            n = len(client.scheduler_info().get("workers", {}))
            where = cfg.scheduler or "a local cluster"
            print(
                f"dask: {n} workers on {where}; dashboard {client.dashboard_link}", file=sys.stderr
            )
        yield client
    finally:
        client.close()
        if cluster is not None:
            _close(cluster)


def _close(cluster: LocalCluster) -> None:
    """Shut the local cluster down; on an overloaded machine its nannies can miss distributed's
    kill timeout after the work is done, which must not fail the stage that finished."""
    try:
        cluster.close()
    except TimeoutError:
        log.warning("the local Dask cluster did not shut down within its timeout; moving on")


def run_tasks(
    client: Client,
    fn: Callable[..., R],
    items: Sequence[T],
    *,
    desc: str,
    key_prefix: str,
    retries: int = 2,
    on_result: Callable[[int, R], None] | None = None,
) -> list[R]:
    """Run ``fn(item)`` for every item on the cluster; results in input order.

    Tasks get stable keys (``key_prefix`` plus the item's position), so reruns are readable in
    the dashboard; ``retries`` resubmits tasks whose worker died. ``on_result`` is called in
    the client as each task finishes (e.g. to record progress).
    """
    futures = [
        client.submit(fn, item, key=f"{key_prefix}-{i}", retries=retries, pure=False)
        for i, item in enumerate(items)
    ]
    index = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    disable = not sys.stderr.isatty() and os.environ.get("TERRACORPUS_PROGRESS") != "1"
    with tqdm(total=len(futures), desc=desc, unit="task", disable=disable) as bar:
        for fut in as_completed(futures):
            i = index[fut.key]
            results[i] = fut.result()
            fut.release()
            if on_result is not None:
                on_result(i, results[i])
            bar.update(1)
    return results
