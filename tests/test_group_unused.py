"""Grids and unused scenes (#12.3, #12.4): grouping never crashes on a scene it cannot use;
every scene in no group is counted by reason, in the summary and the failure table."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import shapely
from click.testing import CliRunner

from terracorpus.catalogs.frames import scenes_to_frame
from terracorpus.catalogs.scene import Grid, SceneRecord
from terracorpus.curation.groups import GroupParams, build_groups, group_scenes
from terracorpus.curation.testing import scene_at

T0 = datetime(2021, 1, 10, 10, 30, tzinfo=UTC)
S2, LS, S1 = "sentinel-2-l2a", "landsat-oli-c2-l2", "sentinel-1-rtc"
LON, LAT = 15.0, 45.0


def _world() -> list[SceneRecord]:
    """Sentinel-2 (10 km) every 30 days and Landsat (30 km) every 32 days, one year."""
    s2 = [
        scene_at(f"s2-{d:03d}", S2, T0 + timedelta(days=d), LON, LAT, 10_000.0)
        for d in range(0, 365, 30)
    ]
    ls = [
        scene_at(f"ls-{d:03d}", LS, T0 + timedelta(days=d), LON + 0.01, LAT, 30_000.0)
        for d in range(4, 365, 32)
    ]
    return s2 + ls


def _geographic(scene: SceneRecord) -> SceneRecord:
    """The scene as Earth Search publishes Sentinel-1 GRD: EPSG:4326, degree pixels."""
    w, s, e, n = scene.footprint.bounds
    d = 0.0002
    grid = Grid((d, 0.0, w, 0.0, -d, n), (round((n - s) / d), round((e - w) / d)))
    return dataclasses.replace(scene, crs="EPSG:4326", grids=((d, grid),), gsd=d)


def _reasons(scenes: list[SceneRecord], params: GroupParams) -> dict[str, str]:
    return {u.scene_id: u.reason for u in group_scenes(scenes, params).unused}


# -- curation: refusals and reasons -----------------------------------------------------------
def test_geographic_crs_is_refused_as_anchor_and_member() -> None:
    world = _world()
    s1 = [
        _geographic(
            scene_at(
                f"s1-{d:03d}", S1, T0 + timedelta(days=d), LON, LAT, 40_000.0, cloud_cover=None
            )
        )
        for d in (7, 43)
    ]
    params = GroupParams(chip_size_m=960.0)
    result = group_scenes(world + s1, params)
    assert result.groups == build_groups(world, params)  # as if they were not there
    reasons = _reasons(world + s1, params)
    assert reasons["s1-007"] == reasons["s1-043"] == "geographic_crs"
    detail = next(u.detail for u in result.unused if u.scene_id == "s1-007")
    assert "EPSG:4326" in detail and "projected" in detail
    assert all("s1" not in m.scene_id for g in result.groups for m in g.members)


def test_almost_square_pixels_anchor_groups() -> None:
    # rasterio's RGB.byte.tif: 791 x 718 pixels of 300.0379 x 300.0418 m in UTM 18N.
    base = scene_at("rgb", LS, T0, -78.0, 24.5, 30_000.0, crs="EPSG:32618")
    grid = Grid((300.0379266750948, 0.0, 101985.0, 0.0, -300.041782729805, 2826915.0), (718, 791))
    rgb = dataclasses.replace(
        base,
        grids=((grid.gsd, grid),),
        gsd=grid.gsd,
        footprint_wkb=shapely.to_wkb(_lonlat_box(grid, "EPSG:32618")),
    )
    params = GroupParams(chip_size_m=30_000.0, min_sensors=1)
    groups = build_groups([rgb], params)
    # Whole 100-pixel chips of the 791 x 718 grid on the CRS-wide lattice: 7 x 6.
    assert len(groups) == 42
    assert {g.window[2] for g in groups} == {100}
    # A grid really not square stays refused, with its reason.
    bad = Grid((300.0, 0.0, 101985.0, 0.0, -310.0, 2826915.0), (718, 791))
    skewed = dataclasses.replace(rgb, id="skewed", grids=((300.0, bad),), gsd=300.0)
    assert _reasons([skewed], params) == {"skewed": "grid_not_square"}


def _lonlat_box(grid: Grid, crs: str) -> shapely.Geometry:
    import numpy as np

    from terracorpus.curation import geometry as geo

    return geo.crs_to_lonlat(np.array([shapely.box(*grid.bounds)]), crs, densify_m=5000.0)[0]


def test_every_unused_scene_has_a_reason() -> None:
    world = _world()
    tiny = scene_at("s2-tiny", S2, T0 + timedelta(days=3), LON, LAT, 1_400.0)  # < 2 chips
    cloudy = scene_at("s2-cloudy", S2, T0 + timedelta(days=5), LON, LAT, 10_000.0, cloud_cover=95)
    empty = dataclasses.replace(
        scene_at("s2-empty", S2, T0 + timedelta(days=6), LON, LAT, 10_000.0),
        footprint_wkb=shapely.to_wkb(shapely.Polygon()),
    )
    params = GroupParams(chip_size_m=960.0, max_members=4)
    result = group_scenes([*world, tiny, cloudy, empty], params)
    reasons = {u.scene_id: u.reason for u in result.unused}
    assert reasons["s2-tiny"] == "smaller_than_chip"
    assert reasons["s2-cloudy"] == "over_cloud_limit"
    assert reasons["s2-empty"] == "empty_footprint"
    used = {m.scene_id for g in result.groups for m in g.members}
    every = {s.id for s in [*world, tiny, cloudy, empty]}
    assert used | set(reasons) == every and not used & set(reasons)
    assert "not_chosen" in reasons.values()  # max_members=4 leaves dates out


def test_repeated_id_and_same_acquisition_are_kept_once() -> None:
    world = _world()
    # Earth Search v0 and v1 publish one acquisition under one id; PC under another id.
    v1 = dataclasses.replace(world[0], collection="sentinel-2-l2a")
    v0 = dataclasses.replace(world[0], collection="sentinel-s2-l2a-cogs")
    pc = dataclasses.replace(
        world[0], id="S2B_MSIL2A_other_id", datetime=world[0].datetime + timedelta(seconds=0.4)
    )
    params = GroupParams(chip_size_m=960.0)
    result = group_scenes([v1, v0, pc, *world[1:]], params)
    reasons = Counter(u.reason for u in result.unused)
    assert reasons["duplicate_id"] == 1 and reasons["same_acquisition"] == 1
    assert result.groups == build_groups(world, params)
    for g in result.groups:  # no acquisition joins a group twice
        assert len({(m.sensor, m.datetime) for m in g.members}) == len(g.members)


# -- the stage: summary, failure table, strict mode ------------------------------------------
def _run(tmp_path: Path, scenes: list[SceneRecord], **top: object) -> tuple[object, object]:
    from terracorpus.pipelines.config import parse_config
    from terracorpus.pipelines.rundir import RunDir

    config = parse_config(
        {"run_dir": str(tmp_path / "run"), "group": {"chip_size_m": 960.0}, **top}
    )
    run = RunDir(tmp_path / "run", config)
    run.write_table("scenes.parquet", scenes_to_frame(scenes), stage="search")
    return config, run


def test_stage_counts_and_records_unused_scenes(tmp_path: Path) -> None:
    from terracorpus.pipelines.stages.group import run_group

    world = _world()
    s1 = _geographic(scene_at("s1-geo", S1, T0, LON, LAT, 40_000.0, cloud_cover=None))
    twice = dataclasses.replace(world[0], collection="sentinel-s2-l2a-cogs")
    config, run = _run(tmp_path, [*world, s1, twice])
    summary = run_group(config, run)  # type: ignore[arg-type]
    assert "1 geographic_crs" in summary and "1 duplicate_id" in summary
    failures = run.failures("group")  # type: ignore[attr-defined]
    by_key = dict(zip(failures["key"], failures["reason"], strict=True))
    assert by_key["s1-geo"] == "geographic_crs"
    assert set(failures["kind"]) == {"scene"}
    n = int(summary.split(" scenes in no group")[0].rsplit(" ", 1)[1])
    assert n == len(failures)
    # A rerun replaces the stage's rows.
    run_group(config, run)  # type: ignore[arg-type]
    assert len(run.failures("group")) == n  # type: ignore[attr-defined]


def test_stage_strict_stops_at_a_refused_scene(tmp_path: Path) -> None:
    from terracorpus.pipelines.errors import StageError
    from terracorpus.pipelines.stages.group import run_group

    s1 = _geographic(scene_at("s1-geo", S1, T0, LON, LAT, 40_000.0, cloud_cover=None))
    config, run = _run(tmp_path, [*_world(), s1], strict=True)
    with pytest.raises(StageError, match=r"geographic_crs.*strict"):
        run_group(config, run)  # type: ignore[arg-type]


def test_cli_group_strict_flag(tmp_path: Path) -> None:
    from terracorpus.pipelines.cli import main

    s1 = _geographic(scene_at("s1-geo", S1, T0, LON, LAT, 40_000.0, cloud_cover=None))
    _run(tmp_path, [*_world(), s1])
    (tmp_path / "run.yaml").write_text(
        f"run_dir: {tmp_path / 'run'}\ngroup:\n  chip_size_m: 960.0\n"
    )
    args = ["group", "--run-dir", str(tmp_path / "run"), "--config", str(tmp_path / "run.yaml")]
    ok = CliRunner().invoke(main, args)
    assert ok.exit_code == 0, ok.output
    assert "1 geographic_crs" in ok.output
    strict = CliRunner().invoke(main, [*args, "--strict"])
    assert strict.exit_code != 0 and "geographic_crs" in strict.output


def test_real_geographic_items_are_refused_not_a_crash(
    shared_stac_items: Path, tmp_path: Path
) -> None:
    # Planetary Computer's Copernicus DEM items: EPSG:4326, degree pixels (0.0028 x 0.00028
    # at 89 S), with a user sensor for the collection.
    import json

    from terracorpus.catalogs.parse import scene_from_item
    from terracorpus.catalogs.sensors import load_registry

    sensors = tmp_path / "dem.yaml"
    sensors.write_text(
        "sensors:\n"
        "  - name: cop-dem\n"
        "    title: Copernicus DEM GLO-30\n"
        "    collections: [cop-dem-glo-30]\n"
        "    qa: {assets: [], kind: none}\n"
        "    bands:\n"
        "      - {name: data, common_name: null, center_wavelength: 1.0,"
        " full_width_half_max: 0.1, gsd: 30, dtype: float32}\n"
        "    asset_aliases: {data: [data]}\n"
    )
    registry = load_registry(sensors)
    path = shared_stac_items / "planetary-computer" / "cop-dem-glo-30-pc.json"
    items = json.loads(path.read_text())["features"]
    dems = [scene_from_item(item, registry) for item in items]
    assert {s.crs for s in dems} == {"EPSG:4326"}
    result = group_scenes(dems, GroupParams(chip_size_m=960.0, min_sensors=1))
    assert result.groups == []
    assert {u.reason for u in result.unused} == {"geographic_crs"}
    assert len(result.unused) == 4


def test_huge_grid_in_an_old_scenes_table_is_refused_without_allocating() -> None:
    # #13.3: proj:shape 10,000,000^2 allocated 323 GiB in group; the parser refuses it now,
    # and a scenes table written before that is refused by group, by counting chips.
    s = scene_at("s2-huge", S2, T0, LON, LAT, 10_000.0)
    grid = s.grid()
    huge = dataclasses.replace(s, grids=((s.gsd, Grid(grid.transform, (10_000_000, 10_000_000))),))
    params = GroupParams(chip_size_m=960.0)
    assert _reasons([*_world(), huge], params)["s2-huge"] == "too_many_chips"


@pytest.mark.parametrize("anchor", [None, LS])
def test_tiles_of_one_pass_never_join_a_group_twice(anchor: str | None) -> None:
    # One Sentinel-2 pass published as two tiles, UTM 33 and UTM 32, over the same ground:
    # both are kept by search (a provider's own tiles), but one group takes one of them, as
    # anchor or member, never both (a second "date" 0 days apart).
    when = T0 + timedelta(days=100)
    z33 = scene_at("s2-pass-z33", S2, when, LON, LAT, 10_000.0, crs="EPSG:32633")
    z32 = scene_at("s2-pass-z32", S2, when, LON, LAT, 10_000.0, crs="EPSG:32632")
    landsat = [s for s in _world() if s.sensor == LS][:3]
    params = GroupParams(chip_size_m=960.0, anchor_sensor=anchor, max_members_per_sensor=4)
    groups = build_groups([*landsat, z33, z32], params)
    pass_ids = {"s2-pass-z33", "s2-pass-z32"}
    seen = [len(pass_ids & {m.scene_id for m in g.members}) for g in groups]
    assert groups and max(seen) == 1
