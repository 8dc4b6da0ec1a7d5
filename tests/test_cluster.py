"""Dask cluster handling: local worker processes, GDAL env on workers, clear errors."""

from __future__ import annotations

import os
import socket

import pytest

from terracorpus.pipelines.cluster import dask_client, run_tasks
from terracorpus.pipelines.config import DaskConfig
from terracorpus.pipelines.errors import ClusterError

pytestmark = pytest.mark.integration


def _env_and_pid(i: int) -> tuple[int, str | None, str | None, int]:
    return (
        i * i,
        os.environ.get("GDAL_DISABLE_READDIR_ON_OPEN"),
        os.environ.get("OMP_NUM_THREADS"),
        os.getpid(),
    )


def test_local_cluster_runs_tasks_in_worker_processes_with_gdal_env() -> None:
    with dask_client(DaskConfig(workers=2), quiet=True) as client:
        out = run_tasks(client, _env_and_pid, list(range(8)), desc="t", key_prefix="square")
    assert [o[0] for o in out] == [i * i for i in range(8)]  # input order
    assert {o[1] for o in out} == {"EMPTY_DIR"}
    assert {o[2] for o in out} == {"1"}
    assert os.getpid() not in {o[3] for o in out}  # worker processes, not threads of ours


def test_unreachable_scheduler_is_a_clear_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        pytest.raises(
            ClusterError, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"
        ),
        dask_client(DaskConfig(scheduler=f"tcp://127.0.0.1:{port}")),
    ):
        pass


def test_a_cluster_that_misses_its_shutdown_timeout_does_not_fail_the_finished_stage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from terracorpus.pipelines.cluster import _close

    class Slow:
        def close(self) -> None:
            raise TimeoutError  # what distributed raises when a nanny misses its kill timeout

    _close(Slow())  # type: ignore[arg-type]
    assert "did not shut down within its timeout" in caplog.text
