"""The run directory: atomic, config-stamped artifacts and the failure table."""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from pyarrow.lib import ArrowException

from terracorpus.pipelines.config import RunConfig, parse_config
from terracorpus.pipelines.errors import RunDirError, StageError
from terracorpus.pipelines.rundir import Failure, RunDir


def _frame() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"id": ["a", "b"]}, geometry=[shapely.box(0, 0, 1, 1), shapely.box(1, 1, 2, 2)], crs=4326
    )


def test_tables_round_trip_with_geometry_and_stamp(tmp_path: Path) -> None:
    run = RunDir(tmp_path, RunConfig())
    run.write_table("groups.parquet", _frame(), stage="group")
    back = run.read_table("groups.parquet", needed_by="test")
    assert isinstance(back, gpd.GeoDataFrame) and back.crs.to_epsg() == 4326
    assert list(back["id"]) == ["a", "b"]
    meta = run.table_meta("groups.parquet")
    assert meta is not None and meta["stage"] == "group" and meta["config_hash"] == run.config_hash
    assert run.is_current("groups.parquet")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_another_config_is_refused_unless_allowed(tmp_path: Path) -> None:
    RunDir(tmp_path, RunConfig()).write_table("scenes.parquet", _frame(), stage="search")
    other = parse_config({"group": {"chip_size_m": 100}})
    with pytest.raises(RunDirError, match="another config"):
        RunDir(tmp_path, other)
    mixed = RunDir(tmp_path, other, allow_mixed=True)
    assert not mixed.is_current("scenes.parquet")
    assert len(mixed.read_table("scenes.parquet", needed_by="test")) == 2


def test_missing_input_names_the_file(tmp_path: Path) -> None:
    run = RunDir(tmp_path, RunConfig())
    with pytest.raises(StageError, match=r"chips\.parquet.*does not exist"):
        run.read_table("chips.parquet", needed_by="dedup")


def test_failed_write_leaves_no_artifact(tmp_path: Path) -> None:
    run = RunDir(tmp_path, RunConfig())
    bad = pd.DataFrame({"x": [object()]})  # not serialisable by pyarrow
    with pytest.raises((TypeError, ValueError, ArrowException)):
        run.write_table("chips.parquet", bad, stage="describe")
    assert not run.path("chips.parquet").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".chips")]


def test_failure_table_grows_across_stages(tmp_path: Path) -> None:
    run = RunDir(tmp_path, RunConfig())
    run.record_failures([Failure("search", "scene", "S2_x", "unknown collection")])
    run.record_failures([Failure("describe", "chip", "g/S2_y", "truncated COG", "read error")])
    df = run.failures()
    assert list(df["stage"]) == ["search", "describe"]
    assert len(run.failures("describe")) == 1
    run.clear_failures("describe")
    assert list(run.failures()["stage"]) == ["search"]


def test_unwritable_run_dir(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(RunDirError, match="not writable"):
        RunDir(target / "run", RunConfig())
