"""Grouping over spatial tiles gives exactly the one-process groups: across UTM zone edges,
the antimeridian and high latitudes, on a synthetic catalog of many scenes, and as Dask tasks
on one or two workers over the tiny demo world."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from test_groups import S2, _world

from terracorpus.catalogs.frames import scenes_to_frame
from terracorpus.catalogs.parse import scene_from_item
from terracorpus.catalogs.scene import SceneRecord
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.curation.groups import (
    GroupParams,
    ImageGroup,
    build_groups,
    groups_from_frame,
    groups_to_frame,
)
from terracorpus.curation.groups.partition import (
    Overlap,
    build_groups_tiled,
    dropped_chips,
    group_tile,
    plan_tiles,
    tile_index,
)
from terracorpus.curation.groups.scenes import SceneArrays
from terracorpus.pipelines.cluster import dask_client
from terracorpus.pipelines.config import DaskConfig, parse_config
from terracorpus.pipelines.rundir import RunDir, read_parquet
from terracorpus.pipelines.stages.group import run_group, run_tiles, tile_tasks
from terracorpus.pipelines.tables import partition_count
from terracorpus.pipelines.testing.scenes import synthetic_scenes

P960 = GroupParams(chip_size_m=960.0)


@pytest.mark.parametrize(
    ("lon", "lat", "crs"),
    [
        (11.95, 45.0, ("EPSG:32633", "EPSG:32633")),  # zone 32 anchors, zone 33 members
        (179.99, 51.5, ("EPSG:32601", "EPSG:32601")),  # across 180°
        (17.9, 70.0, ("EPSG:32634", "EPSG:32635")),  # 70° N, two more zones
    ],
)
def test_tiles_give_the_one_process_groups(lon: float, lat: float, crs: tuple[str, str]) -> None:
    """Tiles of 0.1° (about 8 km) cut every stack into many tiles; chips on tile edges are
    grouped once, overlaps between lattices are resolved across tiles as in one process."""
    scenes = _world(lon, lat, ls_crs=crs[0], s1_crs=crs[1])
    expected = build_groups(scenes, P960)
    table = SceneArrays(scenes, P960)
    plan = plan_tiles(table, P960, 0.1)
    assert len(plan.tiles) >= 9
    tiled = build_groups_tiled(scenes, P960, 0.1)
    assert tiled == expected
    shuffled = list(scenes)
    random.Random(5).shuffle(shuffled)
    assert build_groups_tiled(shuffled, P960, 0.25) == expected


def test_overlaps_between_zones_are_resolved_across_tiles() -> None:
    """Coarser sensors anchor, in zone 33, the ground around the Sentinel-2 tile of zone 32:
    chips of the lattices overlap (12° E is a tile edge too); some are dropped, by chips of
    other tiles."""
    scenes = _world(11.95, 45.0, ls_crs="EPSG:32633", s1_crs="EPSG:32633")
    params = GroupParams(chip_size_m=960.0, min_sensors=1)
    table = SceneArrays(scenes, params)
    plan = plan_tiles(table, params, 0.1)
    results = [
        group_tile([table.records[k] for k in idx], params, t, plan.sensor_rank, plan.region_m)
        for t, idx in zip(plan.tiles, plan.scenes, strict=True)
    ]
    overlaps = [o for r in results for o in r.overlaps]
    dropped = dropped_chips(overlaps, params.max_chip_overlap)
    assert dropped
    owners = {g.group_id: r.tile for r in results for g in r.groups}
    assert any(owners.get(o.earlier_id) != owners.get(o.later_id) for o in overlaps)
    assert sum(r.chips for r in results) == len(owners)  # min_sensors=1: a group per chip
    assert build_groups_tiled(scenes, params, 0.1) == build_groups(scenes, params)
    assert len({g.anchor_sensor for g in build_groups(scenes, params)} - {S2}) >= 1


def test_a_synthetic_catalog_of_many_scenes() -> None:
    """600 scenes of three sensors over several UTM zones, a year of revisits."""
    scenes = synthetic_scenes(600, seed=4)
    params = GroupParams(chip_size_m=5120.0)
    expected = build_groups(scenes, params)
    assert len(expected) > 2000
    assert build_groups_tiled(scenes, params, 0.7) == expected


def test_overlaps_resolve_in_one_process_order() -> None:
    """A chain: a keeps, so b is dropped, so c (overlapped only by b) stays."""

    def key(name: str) -> tuple[int, float, str, int, int]:
        return (0, 0.0, name, 0, 0)

    chain = [
        Overlap(key("b"), "b", key("c"), "c", 0.5),
        Overlap(key("a"), "a", key("b"), "b", 0.5),
    ]
    assert dropped_chips(chain, 0.2) == {"b"}
    assert dropped_chips(chain, 0.6) == set()


def test_tile_index_wraps_and_is_half_open() -> None:
    col, row = tile_index([179.99, -180.0, 180.0, 0.0], [0.0, 0.0, 0.0, 0.999999], 1.0)
    assert col.tolist() == [359, 0, 0, 180] and row.tolist() == [90, 90, 90, 90]


@pytest.mark.integration
def test_dask_tasks_on_one_and_two_workers(tmp_path: Path) -> None:
    """The group stage on a LocalCluster of 1 and 2 workers writes the one-process groups."""
    from terracorpus.catalogs.world.testing import tiny_world

    world = Path(tiny_world(tmp_path).out)
    reg = builtin_registry()
    scenes: list[SceneRecord] = [
        scene_from_item(json.loads(p.read_text()), reg)
        for p in sorted(world.glob("items/*/*.json"))
    ]
    expected = build_groups(scenes, GroupParams())
    for workers in (1, 2):
        config = parse_config({"run_dir": str(tmp_path / f"run{workers}")})
        run = RunDir(tmp_path / f"run{workers}", config)
        run.write_table("scenes.parquet", scenes_to_frame(scenes), stage="search")
        with dask_client(DaskConfig(workers=workers), quiet=True) as client:
            run_group(config, run, client)
        got = groups_from_frame(run.read_table("groups.parquet", needed_by="test"))
        assert sorted(got, key=_key) == expected


# -- the partitioned groups table, resume ---------------------------------------------------
def _stage_run(tmp_path: Path, scenes: list[SceneRecord]) -> tuple[RunDir, object]:
    config = parse_config({"run_dir": str(tmp_path / "run"), "group": {"chip_size_m": 960.0}})
    run = RunDir(tmp_path / "run", config)
    run.write_table("scenes.parquet", scenes_to_frame(scenes), stage="search")
    return run, config


def _key(g: ImageGroup) -> tuple[str, int, int]:
    return (g.anchor_scene_id, g.window[0], g.window[1])


def test_stage_writes_a_row_group_per_tile_and_resumes(tmp_path: Path) -> None:
    """groups.parquet holds one row group per tile with groups; a run killed after some tiles
    reruns only the others; the table read whole or tile by tile is the one-process result."""
    scenes = _world(11.95, 45.0, ls_crs="EPSG:32633", s1_crs="EPSG:32633")
    expected = build_groups(scenes, P960)
    run, _config = _stage_run(tmp_path, scenes)
    tasks = tile_tasks(scenes, P960, run.scratch("group"), deg=0.1)
    first = run_tiles(tasks[: len(tasks) // 2], None)  # the "killed" run finished these
    stamps = {d.path: Path(d.path).stat().st_mtime_ns for d in first}
    assert not run.path("groups.parquet").exists()

    done = run_tiles(tasks, None)
    assert all(Path(p).stat().st_mtime_ns == t for p, t in stamps.items())  # not redone
    dropped = dropped_chips((o for d in done for o in d.overlaps), P960.max_chip_overlap)
    kept = sorted(
        (
            g
            for d in done
            for g in groups_from_frame(read_parquet(Path(d.path)))
            if g.group_id not in dropped
        ),
        key=_key,
    )
    assert kept == expected


def test_stage_output_is_partitioned_and_streams(tmp_path: Path) -> None:
    scenes = _world(15.0, 45.0)
    expected = build_groups(scenes, P960)
    run, config = _stage_run(tmp_path, scenes)
    summary = run_group(config, run)  # type: ignore[arg-type]
    assert f"{len(expected)} groups" in summary
    parts = list(run.iter_table("groups.parquet", needed_by="test"))
    assert len(parts) == partition_count(run.path("groups.parquet"))
    assert run.table_meta("groups.parquet")["partitions"] == len(parts)
    streamed = [g for p in parts for g in groups_from_frame(p)]
    assert sorted(streamed, key=_key) == expected
    whole = groups_from_frame(run.read_table("groups.parquet", needed_by="test"))
    assert sorted(whole, key=_key) == expected
    ids = next(run.iter_table("groups.parquet", needed_by="test", columns=["group_id"]))
    assert list(ids.columns) == ["group_id"]


def test_a_table_missing_a_partition_never_appears(tmp_path: Path) -> None:
    """Fewer partitions than planned (a tile lost), or an error mid-way: no file at all."""
    config = parse_config({"run_dir": str(tmp_path / "run")})
    run = RunDir(tmp_path / "run", config)
    frame = groups_to_frame(build_groups(_world(15.0, 45.0), P960)[:10])
    with (
        pytest.raises(ValueError, match="1 of 2 partitions"),
        run.partitioned_table("groups.parquet", "group", 2) as w,
    ):
        w.write(frame)
    assert not run.path("groups.parquet").exists()
    assert not list(run.root.glob(".groups.parquet*"))
    with pytest.raises(RuntimeError), run.partitioned_table("groups.parquet", "group", 2) as w:
        w.write(frame)
        raise RuntimeError("killed")
    assert not run.path("groups.parquet").exists()
    # a single-file table of an older run reads as one partition
    run.write_table("groups.parquet", frame, stage="group")
    parts = list(run.iter_table("groups.parquet", needed_by="test"))
    assert len(parts) == 1 and groups_from_frame(parts[0]) == groups_from_frame(frame)
