"""One run at a time per run directory; artifacts readable by whoever the umask allows."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from terracorpus.pipelines.config import RunConfig
from terracorpus.pipelines.errors import RunDirError
from terracorpus.pipelines.rundir import CONFIG_FILE, RunDir, run_lock

_HOLD = """
import sys, time
from terracorpus.pipelines.rundir import run_lock
with run_lock(sys.argv[1], "curate"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_lock_on_one_run_dir_is_refused_naming_the_holder(tmp_path: Path) -> None:
    with run_lock(tmp_path, "curate"), pytest.raises(RunDirError) as e, run_lock(tmp_path, "x"):
        pass  # pragma: no cover
    msg = str(e.value)
    assert str(tmp_path) in msg and "curate" in msg and f"pid {os.getpid()}" in msg
    assert "wait" in msg  # says what to do
    with run_lock(tmp_path, "describe"):  # released: free again
        pass


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=f"pid {proc.pid}"), run_lock(tmp_path, "curate"):
            pass  # pragma: no cover
    finally:
        proc.kill()  # kill -9: no cleanup code runs, the kernel drops the lock
        proc.wait()
    with run_lock(tmp_path, "curate"):
        pass


def test_the_lock_can_wait_for_the_holder(tmp_path: Path) -> None:
    with (
        run_lock(tmp_path, "curate"),
        pytest.raises(RunDirError, match=r"still in use after 0\.3 s"),
        run_lock(tmp_path, "curate", wait_s=0.3),
    ):
        pass  # pragma: no cover


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_artifacts_respect_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        run = RunDir(tmp_path, RunConfig())
        run.write_table("chips.parquet", pd.DataFrame({"a": [1]}), stage="describe")
        run.record_timing("describe", 1.0)
    finally:
        os.umask(old)
    for name in ("chips.parquet", CONFIG_FILE, "timings.json"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o666 & ~umask, (name, oct(mode))


def test_curate_and_stage_commands_refuse_a_run_dir_in_use(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from terracorpus.pipelines.cli import main
    from terracorpus.pipelines.curate import curate

    cfg = RunConfig(run_dir=str(tmp_path))
    RunDir(tmp_path, cfg)  # a run directory with its config, as a stage command expects
    with run_lock(tmp_path, "curate"):
        with pytest.raises(RunDirError, match="in use by `terracorpus curate`"):
            curate(cfg, echo=lambda s: None)
        for stage in ("group", "describe", "dedup", "materialize"):
            r = CliRunner().invoke(main, [stage, "--run-dir", str(tmp_path)])
            assert r.exit_code == 2, (stage, r.output)
            assert "in use by `terracorpus curate`" in r.output, (stage, r.output)
    assert not (tmp_path / "curate.log").exists()  # the refused curate touched nothing


@pytest.mark.slow
@pytest.mark.integration
def test_two_curates_into_one_run_dir_one_refuses_the_other_finishes_a_valid_corpus(
    tmp_path: Path,
) -> None:
    """The issue's reproduction: `curate R & curate R`. Before the lock, one crashed in the
    other's half-written store and the corpus said complete with arrays missing."""
    import yaml

    from terracorpus.catalogs.server import StacServer
    from terracorpus.catalogs.world.testing import tiny_world
    from terracorpus.pipelines.corpus.validate import validate_corpus
    from terracorpus.pipelines.demo import PRESETS, demo_run_config

    world = tiny_world(tmp_path / "worlds")
    run_dir = tmp_path / "run"
    with StacServer([world.out]) as server:
        cfg = demo_run_config(world, server.url, run_dir, PRESETS["tiny"])
        config = tmp_path / "run.yaml"
        config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        cmd = [sys.executable, "-m", "terracorpus.pipelines.cli", "curate", str(config)]
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            _wait_for_lock_holder(run_dir, first)
            second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            out, _ = first.communicate(timeout=600)
        finally:
            first.kill()
    assert first.returncode == 0, out
    assert second.returncode != 0
    assert "in use by `terracorpus curate`" in second.stderr, second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    report = validate_corpus(str(run_dir))
    assert report.ok, report.problems


def _wait_for_lock_holder(run_dir: Path, proc: subprocess.Popen[str]) -> None:
    """Until the first curate is under way (its log exists: it holds the directory)."""
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the first curate ended before it was seen running"
        if (run_dir / "curate.log").exists():
            return
        time.sleep(0.05)
    raise AssertionError("the first curate never started")
