"""Image groups: geometry on the anchor grid, real coverage, diversity, CRS edge cases, I/O."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely
from click.testing import CliRunner
from numpy.typing import NDArray

from terracorpus.catalogs.frames import scenes_to_frame
from terracorpus.catalogs.scene import SceneRecord
from terracorpus.curation.diversity import Candidates, Rules, Selection
from terracorpus.curation.errors import GroupingError
from terracorpus.curation.groups import (
    AllPairsIndex,
    GroupParams,
    ImageGroup,
    MemberRule,
    build_groups,
    group_id,
    groups_from_frame,
    groups_to_frame,
)
from terracorpus.curation.testing import scene_at

T0 = datetime(2021, 1, 10, 10, 30, tzinfo=UTC)
S2, LS, S1, NAIP = "sentinel-2-l2a", "landsat-oli-c2-l2", "sentinel-1-rtc", "naip"


def _season(dt: datetime) -> int:
    return (dt.month % 12) // 3  # DJF, MAM, JJA, SON


def _stack(
    prefix: str,
    sensor: str,
    lon: float,
    lat: float,
    size_m: float,
    days: Sequence[int],
    *,
    crs: str | None = None,
    cloud: float | None = 10.0,
) -> list[SceneRecord]:
    return [
        scene_at(
            f"{prefix}-{d:04d}",
            sensor,
            T0 + timedelta(days=d),
            lon,
            lat,
            size_m,
            crs=crs,
            cloud_cover=cloud,
        )
        for d in days
    ]


def _world(
    lon: float,
    lat: float,
    *,
    ls_crs: str | None = None,
    s1_crs: str | None = None,
    s2_crs: str | None = None,
) -> list[SceneRecord]:
    """Two years of Sentinel-2 (10 km tile), Landsat (30 km) and Sentinel-1 (40 km) scenes."""
    return [
        *_stack("s2", S2, lon, lat, 10_000.0, range(0, 730, 15), crs=s2_crs),
        *_stack("ls", LS, lon + 0.01, lat + 0.01, 30_000.0, range(4, 730, 32), crs=ls_crs),
        *_stack("s1", S1, lon - 0.01, lat, 40_000.0, range(7, 730, 36), crs=s1_crs, cloud=None),
    ]


def _whole_chips(scene: SceneRecord, size_m: float) -> int:
    """Chips of size_m that fit whole in the scene's grid, on the CRS-wide lattice."""
    minx, miny, maxx, maxy = scene.grid().bounds
    nx = int(np.floor(maxx / size_m) - np.ceil(minx / size_m))
    ny = int(np.floor(maxy / size_m) - np.ceil(miny / size_m))
    return nx * ny


class _EqualArea:
    """Lon/lat geometries in a local equal-area projection, for checking coverage
    independently of the code under test (PROJ wraps longitudes around lon_0 itself)."""

    def __init__(self, lon: float, lat: float) -> None:
        laea = pyproj.CRS.from_proj4(f"+proj=laea +lat_0={lat} +lon_0={lon} +datum=WGS84")
        self._tr = pyproj.Transformer.from_crs("EPSG:4326", laea, always_xy=True)

    def project(self, geom: shapely.Geometry) -> shapely.Geometry:
        def fn(xy: np.ndarray) -> np.ndarray:
            return np.column_stack(self._tr.transform(xy[:, 0], xy[:, 1]))

        parts = [
            shapely.transform(shapely.segmentize(p, 0.002), fn) for p in shapely.get_parts(geom)
        ]
        return shapely.union_all(parts, grid_size=0.01)

    def fraction(self, geom: shapely.Geometry, other: shapely.Geometry) -> float:
        """Area of geom ∩ other over the area of geom."""
        a, b = self.project(geom), self.project(other)
        return float(shapely.intersection(a, b).area / a.area)


def _check_members_cover(
    groups: Sequence[ImageGroup], scenes: Sequence[SceneRecord], min_coverage: float
) -> None:
    """Every member's coverage is right and enough, checked in an equal-area projection."""
    first = shapely.get_parts(groups[0].footprint)[0].centroid
    ea = _EqualArea(first.x, first.y)
    fp = {s.id: ea.project(s.footprint) for s in scenes}
    for g in groups:
        chip = ea.project(g.footprint)
        for m in g.members:
            truth = shapely.intersection(chip, fp[m.scene_id]).area / chip.area
            assert m.coverage >= min_coverage
            assert truth >= min_coverage - 0.01, (g.group_id, m.scene_id, truth)
            assert m.coverage == pytest.approx(truth, abs=0.01)


# -- geometry on the anchor grid ------------------------------------------------------------
def test_footprints_lie_on_the_anchor_pixel_grid() -> None:
    scenes = _world(15.0, 45.0)
    params = GroupParams(chip_size_m=1000.0, anchor_sensor=LS, min_sensors=1)
    groups = build_groups(scenes, params)
    assert groups
    by_id = {s.id: s for s in scenes}
    for g in groups:
        a, _, c, _, e, f = by_id[g.anchor_scene_id].grid().transform
        row, col, h, w = g.window
        assert (h, w) == (33, 33) and g.gsd == 30.0  # 1000 m rounds to 33 Landsat pixels
        assert g.bounds == pytest.approx(
            (c + col * a, f + (row + h) * e, c + (col + w) * a, f + row * e)
        )
        assert row >= 0 and row + h <= by_id[g.anchor_scene_id].grid().shape[0]
        assert g.crs == by_id[g.anchor_scene_id].crs


def test_each_piece_of_ground_is_one_group() -> None:
    """Forty-nine S2 dates of one tile give one group per chip, not one per date."""
    scenes = _world(15.0, 45.0)
    groups = build_groups(scenes, GroupParams(chip_size_m=960.0))
    s2 = [g for g in groups if g.anchor_sensor == S2]
    assert len(s2) == _whole_chips(scenes[0], 960.0) >= 81  # not one per date
    assert len({g.bounds for g in s2}) == len(s2)
    fps = shapely.from_wkb([g.footprint_wkb for g in groups])
    tree = shapely.STRtree(fps)
    a, b = tree.query(fps, predicate="overlaps")
    overlap = shapely.area(shapely.intersection(fps[a], fps[b])) / shapely.area(fps[b])
    assert (overlap <= 0.2 + 1e-6).all()


def test_anchor_is_the_finest_sensor_with_fall_back() -> None:
    naip = _stack("naip", NAIP, 15.0, 45.0, 3_000.0, [100])
    scenes = _world(15.0, 45.0) + naip
    groups = build_groups(scenes, GroupParams(chip_size_m=960.0))
    anchors = {g.anchor_sensor for g in groups}
    assert NAIP in anchors and S2 in anchors  # NAIP where it is, S2 around it
    naip_chips = shapely.union_all([g.footprint for g in groups if g.anchor_sensor == NAIP])
    ea = _EqualArea(15.0, 45.0)
    for g in groups:
        if g.anchor_sensor == S2:  # ground that NAIP anchors is not anchored again
            assert ea.fraction(g.footprint, naip_chips) <= 0.2 + 1e-3
    assert groups[0].members[0].role == "anchor"
    assert all(m.role == "member" for g in groups for m in g.members[1:])


# -- members --------------------------------------------------------------------------------
def test_members_cover_the_footprint_and_three_sensors_join() -> None:
    scenes = _world(15.0, 45.0)
    params = GroupParams(chip_size_m=960.0, min_coverage=0.95)
    groups = build_groups(scenes, params)
    s2 = [g for g in groups if g.anchor_sensor == S2]
    assert s2 and all(len(g.sensors) == 3 for g in s2)
    _check_members_cover(groups, scenes, 0.95)
    for g in groups:
        counts = {s: sum(m.sensor == s for m in g.members) for s in g.sensors}
        assert max(counts.values()) <= params.max_members_per_sensor
        assert len(g.members) <= params.max_members
        assert len({m.scene_id for m in g.members}) == len(g.members)


def test_partial_cover_and_clouds_are_respected() -> None:
    scenes = _world(15.0, 45.0)
    # A Landsat scene with no usable cover (centred 12 km away: covers only part of the tile).
    scenes += _stack("edge", LS, 15.16, 45.0, 30_000.0, [180])
    scenes += _stack("cloudy", LS, 15.0, 45.0, 30_000.0, [181], cloud=90.0)
    groups = build_groups(scenes, GroupParams(chip_size_m=960.0, max_members_per_sensor=5))
    _check_members_cover(groups, scenes, 0.95)
    used = {m.scene_id for g in groups for m in g.members}
    assert "cloudy-0181" not in used
    assert "edge-0180" in used  # it covers the tile's eastern chips fully
    by_id = {s.id: s for s in scenes}
    ea = _EqualArea(15.0, 45.0)
    for g in groups:
        if any(m.scene_id == "edge-0180" for m in g.members):
            assert ea.fraction(g.footprint, by_id["edge-0180"].footprint) >= 0.95


def test_dates_spread_over_seasons_not_nearest() -> None:
    scenes = _world(15.0, 45.0)
    params = GroupParams(chip_size_m=960.0, max_members_per_sensor=3, max_members=9)
    groups = [g for g in build_groups(scenes, params) if g.anchor_sensor == S2]
    by_id = {s.id: s for s in scenes}
    for g in groups:
        seasons = {_season(m.datetime) for m in g.members}
        assert len(seasons) >= 3
        # The nearest-date choice would stay within a few weeks of the anchor.
        anchor = g.members[0]
        same_sensor = sorted(
            (s for s in scenes if s.sensor == anchor.sensor and s.id != anchor.scene_id),
            key=lambda s: abs((s.datetime - anchor.datetime).total_seconds()),
        )[:2]
        nearest_seasons = {_season(anchor.datetime)} | {_season(s.datetime) for s in same_sensor}
        picked = {_season(m.datetime) for m in g.members if m.sensor == anchor.sensor}
        assert len(picked) > len(nearest_seasons) or len(picked) == 3
        years = {m.datetime.year for m in g.members}
        assert len(years) >= 2
        for m in g.members:
            gap = (m.datetime - by_id[anchor.scene_id].datetime).total_seconds() / 86400
            assert m.time_gap_days == pytest.approx(gap)


def test_min_sensors_drops_groups() -> None:
    scenes = _stack("s2", S2, 15.0, 45.0, 10_000.0, range(0, 365, 30))
    assert build_groups(scenes, GroupParams(chip_size_m=960.0, min_sensors=2)) == []
    one = build_groups(scenes, GroupParams(chip_size_m=960.0, min_sensors=1))
    assert len(one) == _whole_chips(scenes[0], 960.0) and all(g.sensors == (S2,) for g in one)


# -- CRS edge cases -------------------------------------------------------------------------
def test_utm_zone_boundary() -> None:
    """Anchor in zone 32 at its eastern edge; Landsat in zone 33, Sentinel-1 in zone 33."""
    scenes = _world(11.95, 45.0, ls_crs="EPSG:32633", s1_crs="EPSG:32633")
    assert {s.crs for s in scenes} == {"EPSG:32632", "EPSG:32633"}
    groups = build_groups(scenes, GroupParams(chip_size_m=960.0))
    s2 = [g for g in groups if g.anchor_sensor == S2]
    assert len(s2) == _whole_chips(scenes[0], 960.0) and all(g.crs == "EPSG:32632" for g in s2)
    assert all(len(g.sensors) == 3 for g in s2)
    _check_members_cover(groups, scenes, 0.95)


def test_arctic_high_latitude() -> None:
    """70° N: members from two neighbouring zones, one of them far from its central meridian."""
    scenes = _world(17.9, 70.0, ls_crs="EPSG:32634", s1_crs="EPSG:32635")
    groups = build_groups(scenes, GroupParams(chip_size_m=960.0))
    s2 = [g for g in groups if g.anchor_sensor == S2]
    assert len(s2) == _whole_chips(scenes[0], 960.0) and all(len(g.sensors) == 3 for g in s2)
    _check_members_cover(groups, scenes, 0.95)


def test_antimeridian() -> None:
    """An S2 tile across 180° in zone 60; Landsat in zone 1, also across 180°."""
    scenes = _world(179.99, 51.5, ls_crs="EPSG:32601", s1_crs="EPSG:32601")
    s2 = next(s for s in scenes if s.sensor == S2)
    assert s2.footprint.geom_type == "MultiPolygon"  # split at 180° as RFC 7946 asks
    groups = build_groups(scenes, GroupParams(chip_size_m=960.0))
    s2_groups = [g for g in groups if g.anchor_sensor == S2]
    assert len(s2_groups) == _whole_chips(scenes[0], 960.0) and all(
        len(g.sensors) == 3 for g in s2_groups
    )
    crossing = [g for g in s2_groups if g.footprint.geom_type == "MultiPolygon"]
    assert crossing  # chips astride 180° are kept, as two lon/lat pieces
    for g in crossing:
        west, east = sorted(shapely.get_parts(g.footprint), key=lambda p: p.bounds[0])
        assert west.bounds[0] == pytest.approx(-180.0, abs=0.02) and east.bounds[2] == 180.0
    _check_members_cover(groups, scenes, 0.95)
    assert groups_from_frame(groups_to_frame(groups)) == groups


# -- ids, index, tables ---------------------------------------------------------------------
def test_ids_are_stable_and_input_order_does_not_matter() -> None:
    scenes = _world(15.0, 45.0)
    params = GroupParams(chip_size_m=960.0)
    first = build_groups(scenes, params)
    shuffled = list(scenes)
    random.Random(3).shuffle(shuffled)
    assert build_groups(shuffled, params) == first
    ids = [g.group_id for g in first]
    assert len(set(ids)) == len(ids)
    g = first[0]
    assert g.group_id == group_id(g.anchor_scene_id, g.window[0], g.window[1], g.window[2], g.gsd)
    other = build_groups(scenes, GroupParams(chip_size_m=1920.0))
    assert not set(ids) & {h.group_id for h in other}


def test_all_pairs_reference_gives_the_same_groups() -> None:
    scenes = _world(11.95, 45.0, ls_crs="EPSG:32633")
    params = GroupParams(chip_size_m=960.0)
    assert build_groups(scenes, params, index=AllPairsIndex) == build_groups(scenes, params)


def _nearest_date(
    anchor_sensor: int,
    anchor_features: NDArray[np.float64],
    candidates: Candidates,
    sensor_order: Sequence[int],
    rules: Rules,
    cover: Callable[[int], float],
) -> Selection:
    """A user's member rule: per other sensor, the nearest date that covers the chip."""
    dist = np.linalg.norm(candidates.features - anchor_features, axis=1)
    picked: list[tuple[int, float]] = []
    tested: list[tuple[int, bool]] = []
    for s in sensor_order:
        ks = np.flatnonzero(candidates.sensor == s) if s != anchor_sensor else []
        for k in sorted(ks, key=lambda k: (dist[k], k)):
            f = cover(int(k))
            tested.append((int(k), f >= rules.min_coverage))
            if f >= rules.min_coverage:
                picked.append((int(k), f))
                break
    return Selection(picked=tuple(picked), tested=tuple(tested))


def test_member_rule_is_a_name_or_a_callable() -> None:
    scenes = _world(15.0, 45.0)
    params = GroupParams(chip_size_m=960.0)
    spread = build_groups(scenes, params)
    assert build_groups(scenes, params, members="spread") == spread
    rule: MemberRule = _nearest_date
    nearest = [g for g in build_groups(scenes, params, members=rule) if g.anchor_sensor == S2]
    assert nearest and nearest != [g for g in spread if g.anchor_sensor == S2]
    for g in nearest:
        assert g.members[0].sensor == S2 and sorted(g.sensors[1:]) == sorted([LS, S1])
        assert len(g.members) == 3
        for m in g.members[1:]:
            # Any scene of that sensor holding the whole chip would pass: none is nearer.
            holding = [
                s for s in scenes if s.sensor == m.sensor and s.footprint.contains(g.footprint)
            ]
            best = min(abs((s.datetime - g.members[0].datetime).total_seconds()) for s in holding)
            assert abs(m.time_gap_days * 86400) <= best + 1
    with pytest.raises(GroupingError, match=r"unknown member rule 'nearest'.*spread"):
        build_groups(scenes, params, members="nearest")


def test_frame_round_trip_through_parquet(tmp_path: Path) -> None:
    scenes = _world(15.0, 45.0)
    scenes[0] = scene_at("zz-nocloud", S2, T0, 15.0, 45.0, 10_000.0, cloud_cover=None)
    groups = build_groups(scenes, GroupParams(chip_size_m=960.0, anchor_sensor=S2))
    assert any(m.cloud_cover is None for g in groups for m in g.members)
    frame = groups_to_frame(groups)
    assert len(frame) == len(groups) and frame.crs.to_epsg() == 4326
    path = tmp_path / "groups.parquet"
    frame.to_parquet(path)
    back = groups_from_frame(gpd.read_parquet(path))
    assert back == groups
    assert groups_from_frame(groups_to_frame([])) == []


# -- bad input ------------------------------------------------------------------------------
def test_bad_input_gives_clear_errors() -> None:
    scenes = _world(15.0, 45.0)
    with pytest.raises(GroupingError, match="no scenes"):
        build_groups([], GroupParams())
    with pytest.raises(GroupingError, match="anchor sensor 'naip' has no scenes"):
        build_groups(scenes, GroupParams(anchor_sensor=NAIP))
    with pytest.raises(GroupingError, match="min_coverage"):
        GroupParams(min_coverage=0.0)
    with pytest.raises(GroupingError, match="cloud cover"):
        build_groups(scenes, GroupParams(anchor_sensor=S2, max_cloud_cover=5.0))
    # A repeated scene id is left out (group_scenes says so), never a crash (#12.3).
    assert build_groups(scenes + scenes[:1], GroupParams()) == build_groups(scenes, GroupParams())
    with pytest.raises(GroupingError, match="columns"):
        groups_from_frame(gpd.GeoDataFrame({"group_id": ["x"]}, geometry=[shapely.Point(0, 0)]))


# -- stage and command ----------------------------------------------------------------------
def _write_scenes(run_dir: Path, scenes: Sequence[SceneRecord], config: object) -> None:
    from terracorpus.pipelines.rundir import RunDir

    run = RunDir(run_dir, config)  # type: ignore[arg-type]
    run.write_table("scenes.parquet", scenes_to_frame(scenes), stage="search")


def test_stage_and_cli_write_groups(tmp_path: Path) -> None:
    from terracorpus.pipelines.cli import main
    from terracorpus.pipelines.config import parse_config
    from terracorpus.pipelines.rundir import RunDir
    from terracorpus.pipelines.stages.group import run_group

    scenes = _world(15.0, 45.0)
    config = parse_config({"run_dir": str(tmp_path / "run"), "group": {"chip_size_m": 960.0}})
    _write_scenes(tmp_path / "run", scenes, config)
    run = RunDir(tmp_path / "run", config)
    summary = run_group(config, run)
    assert "groups" in summary
    frame = run.read_table("groups.parquet", needed_by="test")
    groups = groups_from_frame(frame)  # in tile order: one row group per grouping tile
    groups.sort(key=lambda g: (g.anchor_scene_id, g.window[0], g.window[1]))
    assert groups == build_groups(scenes, GroupParams(chip_size_m=960.0))
    assert run.table_meta("groups.parquet")["stage"] == "group"

    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("group:\n  chip_size_m: 960.0\n")
    res = CliRunner().invoke(
        main, ["group", "--run-dir", str(tmp_path / "run2"), "--config", str(cfg_file)]
    )
    assert res.exit_code == 2 and "scenes.parquet" in res.output  # nothing searched yet
    cfg2 = parse_config({"run_dir": str(tmp_path / "run2"), "group": {"chip_size_m": 960.0}})
    _write_scenes(tmp_path / "run2", scenes, cfg2)
    res = CliRunner().invoke(
        main, ["group", "--run-dir", str(tmp_path / "run2"), "--config", str(cfg_file)]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run2" / "groups.parquet").exists()

    lonely = parse_config({"run_dir": str(tmp_path / "run3"), "group": {"min_sensors": 4}})
    _write_scenes(tmp_path / "run3", scenes, lonely)
    res = CliRunner().invoke(main, ["group", "--run-dir", str(tmp_path / "run3")])
    assert res.exit_code == 2 and "no image group met the rules" in res.output
    assert not (tmp_path / "run3" / "groups.parquet").exists()


# -- the demo world -------------------------------------------------------------------------
@pytest.mark.integration
def test_demo_world_groups_are_true(tmp_path_factory: pytest.TempPathFactory) -> None:
    """On the demo world's real items and COGs: every sensor that covers a chip joins its
    group, dates spread over seasons, and each member's pixels are valid over the chip."""
    import json

    import rasterio

    from terracorpus.catalogs.parse import scene_from_item
    from terracorpus.catalogs.sensors import builtin_registry
    from terracorpus.catalogs.world.testing import tiny_world

    world = tiny_world(tmp_path_factory.getbasetemp())
    reg = builtin_registry()
    items = sorted((world.out / "items").glob("*/*.json"))
    scenes = [scene_from_item(json.loads(p.read_text()), reg) for p in items]
    params = GroupParams(chip_size_m=480.0, min_sensors=1)
    groups = build_groups(scenes, params)
    assert len(groups) >= 20
    _check_members_cover(groups, scenes, params.min_coverage)
    by_id = {s.id: s for s in scenes}
    clear = [s for s in scenes if (s.cloud_cover or 0) <= params.max_cloud_cover]
    local: dict[str, tuple[_EqualArea, list[SceneRecord], list[shapely.Geometry]]] = {}
    three = 0
    for g in groups:
        if g.crs not in local:  # one projection per region (each has its own UTM zone)
            ea = _EqualArea(*shapely.get_parts(g.footprint)[0].centroid.coords[0])
            near = [s for s in clear if s.footprint.distance(g.footprint) < 1.0]
            local[g.crs] = (ea, near, [ea.project(s.footprint) for s in near])
        ea, near, projected = local[g.crs]
        chip = ea.project(g.footprint)
        covering = [
            s
            for s, fp in zip(near, projected, strict=True)
            if shapely.intersection(chip, fp).area / chip.area >= 0.96
        ]
        assert {s.sensor for s in covering} <= set(g.sensors)  # every sensor that covers it
        three += len(g.sensors) >= 3
        if len({_season(s.datetime) for s in covering}) >= 2:
            assert len({_season(m.datetime) for m in g.members}) >= 2
        _check_pixels(g, [by_id[m.scene_id] for m in g.members], rasterio)
    assert three > 0  # the regions with three sensors give three-sensor groups


def _check_pixels(g: ImageGroup, members: Sequence[SceneRecord], rasterio: object) -> None:
    """Sample a 5 x 5 lattice of the chip in each member's first band: no nodata."""
    minx, miny, maxx, maxy = g.bounds
    xs, ys = np.meshgrid(np.linspace(minx, maxx, 7)[1:-1], np.linspace(miny, maxy, 7)[1:-1])
    for rec in members:
        tr = pyproj.Transformer.from_crs(g.crs, rec.crs, always_xy=True)
        x, y = tr.transform(xs.ravel(), ys.ravel())
        ref = rec.bands[0][1]
        with rasterio.open(ref.href) as src:  # type: ignore[attr-defined]
            values = np.array([v[ref.band_index - 1] for v in src.sample(zip(x, y, strict=True))])
            nodata = src.nodata if src.nodata is not None else 0
        assert (values != nodata).mean() >= 0.95, (g.group_id, rec.id)
