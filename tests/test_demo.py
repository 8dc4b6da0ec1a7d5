"""The demo's run directory on a second run: reused when made with the same config, else
started over; the demo says which."""

from __future__ import annotations

from pathlib import Path

from terracorpus.pipelines.config import parse_config
from terracorpus.pipelines.demo import _prepare_run_dir
from terracorpus.pipelines.rundir import RunDir


def _config(run_dir: Path, chip_size_m: float):
    return parse_config({"run_dir": str(run_dir), "group": {"chip_size_m": chip_size_m}})


def test_an_earlier_run_of_the_same_config_is_kept_and_said_so(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    RunDir(run_dir, _config(run_dir, 480))  # writes run-config.json
    (run_dir / "scenes.parquet").write_bytes(b"x")
    said: list[str] = []
    _prepare_run_dir(run_dir, _config(run_dir, 480), said.append)
    assert (run_dir / "scenes.parquet").exists()
    assert said and "reused" in said[0]


def test_a_run_of_another_config_is_started_over_and_said_so(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    RunDir(run_dir, _config(run_dir, 960))
    (run_dir / "scenes.parquet").write_bytes(b"x")
    said: list[str] = []
    _prepare_run_dir(run_dir, _config(run_dir, 480), said.append)
    assert not run_dir.exists()
    assert said and "starting it over" in said[0]
    RunDir(run_dir, _config(run_dir, 480))  # and the run directory is usable again
