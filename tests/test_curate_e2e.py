"""`curate` end to end on the tiny demo world, through the real local STAC API.

Once on a LocalCluster of worker processes; once on a Dask scheduler and two workers started
as separate processes (as on a real cluster), with one worker killed mid-describe. Both runs
must produce the same corpus.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from terracorpus.catalogs.server import StacServer
from terracorpus.catalogs.world.build import WorldSummary
from terracorpus.catalogs.world.testing import tiny_world
from terracorpus.pipelines.config import RunConfig
from terracorpus.pipelines.corpus.validate import validate_corpus
from terracorpus.pipelines.curate import SET_ASIDE, STAGE_NAMES, curate
from terracorpus.pipelines.demo import PRESETS, demo_run_config
from terracorpus.pipelines.report import write_report

pytestmark = pytest.mark.integration
ARTIFACTS = (
    "scenes.parquet",
    "groups.parquet",
    "chips.parquet",
    "selection.parquet",
    "corpus.zarr",
    "manifest.parquet",
    "collection.json",
)


@pytest.fixture(scope="module")
def served_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorldSummary, str]]:
    world = tiny_world(tmp_path_factory.getbasetemp() / "worlds")
    with StacServer([world.out]) as server:
        yield world, server.url


def _config(world: WorldSummary, url: str, run_dir: Path, **dask: object) -> RunConfig:
    cfg = demo_run_config(world, url, run_dir, PRESETS["tiny"])
    # Small describe batches: many tasks, so a worker can be killed while some are pending.
    return cfg.model_copy(
        update={
            "describe": cfg.describe.model_copy(update={"batch_size": 4}),
            "dask": cfg.dask.model_copy(update=dask),
        }
    )


def _corpus_content(run_dir: Path) -> pd.DataFrame:
    manifest = pd.read_parquet(run_dir / "manifest.parquet")
    return (
        manifest[["image_id", "group_id", "sensor", "sha256"]]
        .sort_values("image_id")
        .reset_index(drop=True)
    )


@pytest.fixture(scope="module")
def local_run(
    served_world: tuple[WorldSummary, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    world, url = served_world
    run_dir = tmp_path_factory.mktemp("local") / "run"
    result = curate(_config(world, url, run_dir, workers=2), echo=lambda s: None)
    assert [s.name for s in result.stages] == list(STAGE_NAMES)
    # Scenes the group rules set aside are recorded, but not counted as failures.
    reasons = pd.read_parquet(run_dir / "failures.parquet")["reason"]
    assert result.set_aside == reasons.isin(SET_ASIDE).sum() > 0
    assert result.failures == len(reasons) - result.set_aside
    return run_dir


def test_curate_writes_every_artifact_and_a_valid_corpus(local_run: Path) -> None:
    for name in ARTIFACTS:
        assert (local_run / name).exists(), name
    assert not (local_run / "_scratch").exists()  # a finished run keeps no partial outputs
    report = validate_corpus(str(local_run))
    assert report.ok, report
    content = _corpus_content(local_run)
    assert len(content) > 0 and content["sensor"].nunique() >= 2
    page = write_report(local_run).read_text()
    assert "Sample groups" in page and "Clusters and selection" in page


def test_second_curate_skips_every_stage(
    served_world: tuple[WorldSummary, str], local_run: Path
) -> None:
    world, url = served_world
    result = curate(_config(world, url, local_run, workers=1), echo=lambda s: None)
    assert {s.status for s in result.stages} == {"skipped"}


def test_the_same_catalog_at_another_address_reuses_every_stage(
    served_world: tuple[WorldSummary, str], local_run: Path
) -> None:
    world, url = served_world
    with StacServer([world.out]) as again:  # the demo's situation: a new port each run
        assert again.url != url
        cfg = _config(world, again.url, local_run, workers=1)
        result = curate(cfg, echo=lambda s: None)
    assert {s.status for s in result.stages} == {"skipped"}


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_scheduler_and_worker_processes_survive_a_killed_worker(
    served_world: tuple[WorldSummary, str], local_run: Path, tmp_path: Path
) -> None:
    world, url = served_world
    dask_bin = str(Path(sys.executable).parent / "dask")
    sched_file = tmp_path / "scheduler.json"
    common = ["--no-dashboard"]
    procs = [
        _start(
            [
                dask_bin,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--scheduler-file",
                str(sched_file),
                *common,
            ],
            tmp_path / "scheduler.log",
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = yaml.safe_load(sched_file.read_text())["address"]
        for i in range(2):
            procs.append(
                _start(
                    [
                        dask_bin,
                        "worker",
                        address,
                        "--nworkers",
                        "1",
                        "--nthreads",
                        "1",
                        "--host",
                        "127.0.0.1",
                        *common,
                    ],
                    tmp_path / f"worker{i}.log",
                )
            )
        run_dir = tmp_path / "run"
        cfg = _config(world, url, run_dir)
        config_file = tmp_path / "run.yaml"
        config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        curate_proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "terracorpus.pipelines.cli",
                "curate",
                str(config_file),
                "--scheduler",
                address,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        # Kill one worker (its nanny and process, SIGKILL) once describe has finished a batch.
        batches = run_dir / "_scratch" / "describe"
        killed_mid_describe = False
        deadline = time.monotonic() + 300
        while curate_proc.poll() is None and time.monotonic() < deadline:
            if (
                batches.is_dir()
                and any(batches.glob("*.parquet"))
                and not (run_dir / "chips.parquet").exists()
            ):
                os.killpg(procs[1].pid, signal.SIGKILL)
                killed_mid_describe = True
                break
            time.sleep(0.05)
        out, _ = curate_proc.communicate(timeout=300)
        assert curate_proc.returncode == 0, out.decode()[-3000:]
        assert killed_mid_describe, "describe finished before a worker could be killed"
        pd.testing.assert_frame_equal(_corpus_content(run_dir), _corpus_content(local_run))
    finally:
        for p in reversed(procs):
            _stop(p)
