"""The demo world over several years: truth per year, change events, images of each year."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from terracorpus.catalogs.errors import WorldError
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.catalogs.world import (
    WorldSummary,
    read_truth,
    read_world,
    truth_path,
    world_years,
)
from terracorpus.catalogs.world import landcover as lc
from terracorpus.catalogs.world.events import SOWING_DOY
from terracorpus.catalogs.world.presets import PRESETS
from terracorpus.catalogs.world.regions import REGIONS, Region
from terracorpus.catalogs.world.schedule import plan_world
from terracorpus.catalogs.world.sensors_render import RegionGround, SceneRenderer
from terracorpus.catalogs.world.testing import tiny_world
from terracorpus.pipelines.corpus.labels import WorldLabeller

YEARS = (2021, 2022, 2023)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldSummary:
    return tiny_world(tmp_path_factory.getbasetemp())


def _region(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in doc["regions"] if r["name"] == name)


def _truth(world: WorldSummary, region: dict[str, Any], year: int | None) -> np.ndarray:
    return read_truth(world.out, tuple(region["bounds"]), f"EPSG:{region['epsg']}", year)


def _ground(name: str, seed: int = 0) -> RegionGround:
    spec = next(r for r in REGIONS if r.name == name)
    return RegionGround.build(Region.build(spec, PRESETS["tiny"].size_of(name)), seed, YEARS)


def test_every_event_kind_is_written_with_its_transitions(world: WorldSummary) -> None:
    doc = read_world(world.out)
    assert doc["years"] == list(YEARS) == world_years(world.out)
    kinds = {e["kind"] for e in doc["events"]}
    assert kinds == {
        "construction",
        "clear-cut",
        "regrowth",
        "reservoir-filling",
        "river-migration",
        "crop-rotation",
    }
    moves = {(t["from"], t["to"]) for e in doc["events"] for t in e["transitions"]}
    for pair in [
        ("cropland", "bare"),  # a construction site is cleared ...
        ("bare", "built-up"),  # ... and built up
        ("forest", "bare"),  # clear-cut
        ("bare", "grassland"),  # regrowth of the young stand
        ("grassland", "forest"),  # an older clearing's canopy closes
        ("cropland", "water"),  # the reservoir fills
        ("water", "bare"),  # the river leaves its old channel
    ]:
        assert pair in moves, pair
    for e in doc["events"]:
        assert set(e["years"]) <= set(YEARS[1:]) and e["region"] in world.regions
        west, south, east, north = e["bbox"]
        assert west < east and south < north


def test_truth_per_year_changes_only_where_events_are(world: WorldSummary) -> None:
    doc = read_world(world.out)
    for region in doc["regions"]:
        first = _truth(world, region, None)
        assert np.array_equal(first, _truth(world, region, 2021))
        events = [e for e in doc["events"] if e["region"] == region["name"]]
        inside = np.zeros(first.shape, dtype=bool)
        x0, _y0, _x1, y1 = region["bounds"]
        res = region["base_res"]
        for e in events:
            if e["kind"] == "crop-rotation":
                continue
            b = e["bounds"]
            r0, r1 = round((y1 - b[3]) / res), round((y1 - b[1]) / res)
            c0, c1 = round((b[0] - x0) / res), round((b[2] - x0) / res)
            inside[r0:r1, c0:c1] = True
        for year in YEARS[1:]:
            changed = _truth(world, region, year) != _truth(world, region, year - 1)
            assert changed.any(), (region["name"], year)
            assert not (changed & ~inside).any(), region["name"]
            moved = sum(t["area_m2"] for e in events for t in e["transitions"] if t["year"] == year)
            # Overlapping events (the reservoir over the river) count some pixels twice.
            assert changed.sum() * res**2 <= moved + 1e-6


def test_read_truth_year_errors_name_the_years(world: WorldSummary, tmp_path: Path) -> None:
    region = _region(read_world(world.out), "hubei-lakes")
    with pytest.raises(WorldError, match=r"no truth for 2019.*2021, 2022, 2023"):
        _truth(world, region, 2019)
    copy = tmp_path / "copy"
    shutil.copytree(world.out, copy, ignore=shutil.ignore_patterns("cogs", "items"))
    (copy / truth_path("hubei-lakes", 2022)).unlink()
    with pytest.raises(WorldError, match="truth of hubei-lakes for 2022 is missing"):
        read_truth(copy, tuple(region["bounds"]), f"EPSG:{region['epsg']}", 2022)


def test_every_year_is_imaged_by_each_sentinel2_tile() -> None:
    _, scenes = plan_world(PRESETS["tiny"], 0)
    tiles: dict[str, set[int]] = {}
    for s in scenes:
        if s.collection == "sentinel-2-l2a":
            tiles.setdefault(s.tile.name, set()).add(s.ground_year)
            assert s.ground_year == s.acquired.year
    assert tiles and all(years == set(YEARS) for years in tiles.values())


def test_scenes_render_the_land_cover_of_their_year() -> None:
    """One clear scene, rendered as of 2021 and as of 2023: the pixels differ exactly where
    the truth changed (the reservoir, the river, the new district)."""
    regions, scenes = plan_world(PRESETS["tiny"], 0)
    region = next(r for r in regions if r.name == "iowa-prairie")
    ground = _ground(region.name)
    s2 = next(s for s in scenes if s.region == region.name and s.collection == "sentinel-2-l2a")
    spec = dataclasses.replace(s2, cloud_target=0.0, cirrus=False, ground_doy=200)
    renderer = SceneRenderer(ground, 0)
    sensor = builtin_registry().get("sentinel-2-l2a")
    red = {}
    for year in (2021, 2023):
        r = renderer.render(dataclasses.replace(spec, ground_year=year), sensor)
        red[year] = r.assets["nir"].data[0].astype(np.float64)
    f = 10  # 10 m pixels over the 1 m truth: a pixel changed if any of its ground did
    a, b = ground.cover.classes_in(2021), ground.cover.classes_in(2023)
    h, w = a.shape[0] // f, a.shape[1] // f
    diff = (a != b)[: h * f, : w * f].reshape(h, f, w, f).any(axis=(1, 3))
    valid = (red[2021] > 0) & (red[2023] > 0)
    delta = np.abs(red[2021] - red[2023]) * 1e-4  # DN to reflectance
    assert diff[valid].mean() > 0.02
    assert np.median(delta[valid & diff]) > 0.05  # ground changed: fields became water, roofs
    # Elsewhere only noise and crop rotation (2021 and 2023 are the same crop year parity).
    assert np.median(delta[valid & ~diff]) < 0.01


def test_crop_rotation_follows_the_crop_year() -> None:
    cover = _ground("moselle-utm31-32").cover
    crops = (lc.CROP_SUMMER, lc.CROP_WINTER)
    y21, y22 = cover.material_in(2021, 200), cover.material_in(2022, 200)
    swapped = (y21 != y22) & np.isin(y21, crops)
    assert 0.3 < swapped.sum() / np.isin(y21, crops).sum() < 0.9
    assert np.all(np.isin(y22[swapped], crops)) and np.all(y21[swapped] != y22[swapped])
    fields = np.isin(y21, crops) & np.isin(y22, crops)  # not built over or cut in between
    sown = cover.material_in(2021, SOWING_DOY)  # from sowing on, next year's crops
    assert np.array_equal(sown[fields], y22[fields])
    assert np.array_equal(cover.material_in(2023, 200)[fields], y21[fields])  # two-year cycle
    assert np.array_equal(cover.classes_in(2021), lc.MATERIAL_CLASS[y21])
    assert (lc.MATERIAL_CLASS[y22][swapped] == 3).all()  # a rotated field is still cropland


def test_naip_of_two_years_shows_the_new_district(world: WorldSummary) -> None:
    """Real files: the 2021 and 2023 NAIP tiles over the prairie's construction event."""
    doc = read_world(world.out)
    event = next(
        e for e in doc["events"] if e["kind"] == "construction" and e["region"] == "iowa-prairie"
    )
    items = sorted((world.out / "items" / "naip").glob("*.json"))
    assert len(items) == 2
    ndvi = {}
    for path in items:
        item = json.loads(path.read_text())
        with rasterio.open(item["assets"]["image"]["href"]) as src:
            win = rasterio.windows.from_bounds(*event["bounds"], transform=src.transform)
            r, nir = (src.read(i, window=win).astype(np.float64) for i in (1, 4))
        ndvi[item["properties"]["naip:year"]] = (nir - r) / (nir + r + 1e-9)
    region = _region(doc, "iowa-prairie")
    truth = {
        y: read_truth(world.out, tuple(event["bounds"]), f"EPSG:{region['epsg']}", y)
        for y in (2021, 2023)
    }
    built = (truth[2021] == 3) & (truth[2023] == 5)  # cropland -> built-up
    assert built.mean() > 0.2
    shape = ndvi["2021"].shape
    built = built[: shape[0], : shape[1]]
    assert np.median(ndvi["2023"][built]) < np.median(ndvi["2021"][built]) - 0.2


def test_world_labeller_uses_the_year(world: WorldSummary) -> None:
    doc = read_world(world.out)
    region = _region(doc, "iowa-prairie")
    event = next(e for e in doc["events"] if e["kind"] == "reservoir-filling")
    x0, y0, x1, y1 = event["bounds"]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    core = (cx - 60.0, cy - 60.0, cx + 60.0, cy + 60.0)
    label = WorldLabeller(str(world.out))
    crs = f"EPSG:{region['epsg']}"
    assert label(core, crs, 2023) == 1  # water once the reservoir is full
    assert label(core, crs, 2021) != 1  # fields before the dam closed
    assert label(core, crs, None) == label(core, crs, 2021)
    assert label(core, crs, 2030) == label(core, crs, 2023)  # nearest year the world has


def test_chip_classes_count_every_chip_of_every_region(world: WorldSummary) -> None:
    from terracorpus.catalogs.world.stats import chip_classes

    doc = read_world(world.out)
    cc = chip_classes(world.out, 480.0)
    expected = sum(int((r["bounds"][2] - r["bounds"][0]) // 480.0) ** 2 for r in doc["regions"])
    assert cc.total == expected and set(cc.by_region) == set(world.regions)
    assert abs(sum(cc.shares().values()) - 1.0) < 1e-9
    later = chip_classes(world.out, 480.0, 2023)
    assert later.total == cc.total and later.counts != cc.counts  # the ground changed
    with pytest.raises(WorldError, match="not a multiple"):
        chip_classes(world.out, 25.0)


def test_redundant_preset_is_mostly_repetitive_ground_and_clouds() -> None:
    """The plan of the ``redundant`` preset (its build is a benchmark, not a test): the
    Arctic coast is most of the ground and most optical scenes are overcast."""
    preset = PRESETS["redundant"]
    regions, scenes = plan_world(preset, 0)
    area = {r.name: r.size_m**2 for r in regions}
    assert area["north-slope"] / sum(area.values()) > 0.8
    optical = [s for s in scenes if s.collection in ("sentinel-2-l2a", "landsat-c2-l2")]
    overcast = [s for s in optical if s.cloud_target >= 0.5]
    assert len(overcast) / len(optical) > 0.35
    tiny = [s for s in plan_world(PRESETS["tiny"], 0)[1] if s.collection in ("sentinel-2-l2a",)]
    assert sum(s.cloud_target >= 0.5 for s in tiny) / len(tiny) < len(overcast) / len(optical)
    assert preset.years == YEARS


def test_cli_classes_prints_the_proportions(world: WorldSummary) -> None:
    from click.testing import CliRunner

    from terracorpus.pipelines.cli import main

    result = CliRunner().invoke(main, ["world", "classes", str(world.out), "--year", "2023"])
    assert result.exit_code == 0, result.output
    assert "chips of 480 m, truth of 2023" in result.output and "north-slope:" in result.output
    bad = CliRunner().invoke(main, ["world", "classes", str(world.out), "--year", "1999"])
    assert bad.exit_code != 0 and "no truth for 1999" in bad.output
    assert "Traceback" not in bad.output


def test_a_world_of_the_older_format_is_reused_with_a_warning(
    world: WorldSummary, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from terracorpus.catalogs.world import create_world

    old = tmp_path / "old"
    old.mkdir()
    doc = read_world(world.out)
    doc["format_version"] = 1
    del doc["years"]
    for r in doc["regions"]:
        r["truth"] = r["truth"]["2021"]  # format 1: one truth file per region
    (old / "world.json").write_text(json.dumps(doc))
    shutil.copytree(world.out / "truth", old / "truth")
    with caplog.at_level("WARNING"):
        assert create_world(old, preset="tiny", seed=0).preset == "tiny"
    assert "older terracorpus" in caplog.text and "delete it to rebuild" in caplog.text
    assert world_years(old) == [2021]  # a format-1 world reads as its one year
    region = _region(doc, "hubei-lakes")
    assert np.array_equal(
        _truth(world, region, None),
        read_truth(old, tuple(region["bounds"]), f"EPSG:{region['epsg']}"),
    )
