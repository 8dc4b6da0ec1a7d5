"""Per-item validation at the parse edge (#13.3): a bad item is a failure row, never a crash.

Each case is a real provider item (or a builder item shaped like one) with one thing broken
the way an untrusted catalog may break it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pytest
from catalog_builders import landsat_item, s2_item
from test_search import FakeApi

from terracorpus.catalogs.errors import ItemParseError
from terracorpus.catalogs.frames import scenes_from_frame, scenes_to_frame
from terracorpus.catalogs.parse import scene_from_item
from terracorpus.catalogs.search import ApiQuery, search_scenes
from terracorpus.catalogs.sensors import SensorRegistry

ES_V0 = "S2A_28QCH_20200714_0_L2A.json"
LC08 = "LC08_L2SP_028030_20200114_20200824_02_T1_SR.json"
AREA = (-94.0, 41.0, -93.0, 42.0)
FAST = {"retries": 1, "backoff_s": 0.01, "timeout_s": 5.0}


def _real(folder: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / name).read_text())
    return data


def _bowtie(item: dict[str, Any]) -> dict[str, Any]:
    """The item with its footprint ring drawn as a self-intersecting bow tie."""
    w, s, e, n = item["bbox"]
    item["geometry"] = {
        "type": "Polygon",
        "coordinates": [[[w, s], [e, n], [e, s], [w, n], [w, s]]],
    }
    return item


def _served(item: dict[str, Any]) -> dict[str, Any]:
    """The item with the self link an API gives it (its relative hrefs resolve against it)."""
    href = f"https://example.test/items/{item['id']}.json"
    item["links"] = [{"rel": "self", "href": href}]
    return item


# -- the parser ---------------------------------------------------------------------------
def test_nan_coordinate_is_refused(shared_stac_items: Path, registry: SensorRegistry) -> None:
    item = _real(shared_stac_items, ES_V0)
    item["geometry"]["coordinates"][0][1][0] = math.nan
    with pytest.raises(ItemParseError, match=r"S2A_28QCH.*non-finite coordinate"):
        scene_from_item(item, registry)


def test_projected_coordinates_are_refused(registry: SensorRegistry) -> None:
    item = _served(s2_item("S2_utm", datetime(2022, 1, 1)))
    item["geometry"]["coordinates"] = [
        [[400000.0, 4600000.0], [500000.0, 4600000.0], [500000.0, 4700000.0], [400000.0, 4600000.0]]
    ]
    del item["bbox"]
    with pytest.raises(ItemParseError, match="not lon/lat degrees"):
        scene_from_item(item, registry)


def test_self_intersecting_footprint_is_repaired_and_recorded(
    shared_stac_items: Path, registry: SensorRegistry
) -> None:
    item = _bowtie(_real(shared_stac_items, ES_V0))
    scene = scene_from_item(item, registry)
    assert scene.footprint.is_valid and scene.footprint.area > 0
    assert len(scene.repairs) == 1 and "make_valid" in scene.repairs[0]
    assert "Self-intersection" in scene.repairs[0]
    # The repair survives the scenes table.
    back = scenes_from_frame(scenes_to_frame([scene]))[0]
    assert back.repairs == scene.repairs
    # A valid item has none.
    assert scene_from_item(_real(shared_stac_items, ES_V0), registry).repairs == ()


def test_footprint_without_area_is_refused(registry: SensorRegistry) -> None:
    item = _served(s2_item("S2_line", datetime(2022, 1, 1)))
    item["geometry"] = {"type": "LineString", "coordinates": [[-93.7, 41.5], [-93.6, 41.6]]}
    with pytest.raises(ItemParseError, match="LineString"):
        scene_from_item(item, registry)
    flat = _served(s2_item("S2_flat", datetime(2022, 1, 1)))
    flat["geometry"]["coordinates"] = [
        [[-93.7, 41.5], [-93.6, 41.5], [-93.65, 41.5], [-93.7, 41.5]]
    ]
    with pytest.raises(ItemParseError, match="no area"):
        scene_from_item(flat, registry)


@pytest.mark.parametrize("side", [10_000_000, 0, -5, 10.5])
def test_grid_size_out_of_limits_is_refused(
    shared_stac_items: Path, registry: SensorRegistry, side: float
) -> None:
    item = _real(shared_stac_items, LC08)
    item["properties"]["proj:shape"] = [side, side]
    for asset in item["assets"].values():
        asset.pop("proj:shape", None)
    with pytest.raises(ItemParseError, match=r"proj:shape.*1 to 100,000 pixels"):
        scene_from_item(item, registry)


def test_rescaled_grid_out_of_limits_is_refused(registry: SensorRegistry) -> None:
    # An asset declaring a tiny gsd blows the item grid up to a huge one.
    item = _served(landsat_item("LC08_tiny_gsd", datetime(2022, 1, 1)))
    item["assets"]["red"]["gsd"] = 0.001
    with pytest.raises(ItemParseError, match="proj:shape"):
        scene_from_item(item, registry)


@pytest.mark.parametrize(
    ("bbox", "match"),
    [
        ([math.nan, 20.05, -16.72, 20.79], "not a finite number"),
        (["west", 20.05, -16.72, 20.79], "not a finite number"),
        ([-16.92, 20.79, -16.72, 20.05], "not \\(west, south, east, north\\)"),
        ([10.0, 20.05, 10.2, 20.79], "does not hold its geometry"),
        ([-16.92, 20.05, -16.72], "needs 4"),
    ],
)
def test_bad_bbox_is_refused(
    shared_stac_items: Path, registry: SensorRegistry, bbox: list[Any], match: str
) -> None:
    item = _real(shared_stac_items, ES_V0)
    item["bbox"] = bbox
    with pytest.raises(ItemParseError, match=match):
        scene_from_item(item, registry)


def test_bbox_larger_than_geometry_is_accepted(
    shared_stac_items: Path, registry: SensorRegistry
) -> None:
    # Planetary Computer's Landsat bbox is the WRS scene, larger than the data footprint.
    pc = json.loads((shared_stac_items / "planetary-computer/landsat-c2-l2-pc.json").read_text())
    for item in pc["features"]:
        if item["properties"].get("platform") in ("landsat-8", "landsat-9"):
            scene = scene_from_item(item, registry)
            assert scene.bbox == tuple(item["bbox"])


@pytest.mark.parametrize(
    ("field", "value"),
    [("proj:epsg", "utm"), ("proj:epsg", 999999), ("proj:transform", ["a"] * 6)],
)
def test_malformed_proj_fields_are_refused(
    shared_stac_items: Path, registry: SensorRegistry, field: str, value: Any
) -> None:
    item = _real(shared_stac_items, LC08)
    item["properties"][field] = value
    for asset in item["assets"].values():
        asset.pop(field, None)
    with pytest.raises(ItemParseError, match="LC08_L2SP_028030"):
        scene_from_item(item, registry)


# -- through search: failure rows, not crashes ----------------------------------------------
def _bad_items() -> list[dict[str, Any]]:
    good = s2_item("S2_good", datetime(2022, 1, 5))
    nan_geom = s2_item("S2_nan_geometry", datetime(2022, 1, 6))
    nan_geom["geometry"]["coordinates"][0][2][1] = math.nan
    bowtie = _bowtie(s2_item("S2_bowtie", datetime(2022, 1, 7)))
    huge = landsat_item("LC08_huge", datetime(2022, 1, 8))
    huge["properties"]["proj:shape"] = [10_000_000, 10_000_000]
    nan_bbox = s2_item("S2_nan_bbox", datetime(2022, 1, 9))
    nan_bbox["bbox"] = [math.nan] * 4
    text_epsg = s2_item("S2_text_epsg", datetime(2022, 1, 10))
    text_epsg["properties"]["proj:epsg"] = "EPSG:32615"
    return [_served(i) for i in (good, nan_geom, bowtie, huge, nan_bbox, text_epsg)]


@pytest.fixture
def bad_api() -> Iterator[str]:
    api = FakeApi(_bad_items(), {})  # Python's json writes NaN; requests reads it back
    yield api.url
    api.close()


def _search(url: str, registry: SensorRegistry, strict: bool = False) -> Any:
    return search_scenes(
        [ApiQuery(url, ("sentinel-2-l2a", "landsat-c2-l2"))],
        AREA,
        date(2022, 1, 1),
        date(2022, 1, 31),
        100.0,
        registry,
        tile_degrees=5.0,
        strict=strict,
        **FAST,
    )


@pytest.mark.integration
def test_search_records_each_bad_item(bad_api: str, registry: SensorRegistry) -> None:
    result = _search(bad_api, registry)
    assert sorted(s.id for s in result.scenes) == ["S2_bowtie", "S2_good"]
    bowtie = next(s for s in result.scenes if s.id == "S2_bowtie")
    assert bowtie.repairs and bowtie.footprint.is_valid
    reasons = {f.key.split("/")[1]: f.reason for f in result.failures}
    assert set(reasons) == {"S2_nan_geometry", "LC08_huge", "S2_nan_bbox", "S2_text_epsg"}
    assert "non-finite coordinate" in reasons["S2_nan_geometry"]
    assert "proj:shape" in reasons["LC08_huge"]
    assert "bbox" in reasons["S2_nan_bbox"]
    assert "malformed field" in reasons["S2_text_epsg"]
    assert result.repaired == 1


@pytest.mark.integration
def test_search_strict_stops_at_a_bad_item(bad_api: str, registry: SensorRegistry) -> None:
    with pytest.raises(ItemParseError):
        _search(bad_api, registry, strict=True)


def test_stage_stores_repairs_and_summary(tmp_path: Path, bad_api: str) -> None:
    from terracorpus.pipelines.config import parse_config
    from terracorpus.pipelines.rundir import RunDir
    from terracorpus.pipelines.stages.search import run_search

    cfg = parse_config(
        {
            "run_dir": str(tmp_path / "run"),
            "search": {
                "apis": [{"url": bad_api, "collections": ["sentinel-2-l2a", "landsat-c2-l2"]}],
                "bbox": list(AREA),
                "start": "2022-01-01",
                "end": "2022-01-31",
                "max_cloud_cover": 100,
                "retries": 1,
                "backoff_s": 0.01,
            },
        }
    )
    run = RunDir(cfg.run_dir, cfg)
    summary = run_search(cfg, run)
    assert "4 unusable" in summary and "1 footprint repaired" in summary
    frame = gpd.read_parquet(run.path("scenes.parquet"))
    repaired = dict(zip(frame["id"], frame["repairs"], strict=True))
    assert pd.isna(repaired["S2_good"]) and "make_valid" in repaired["S2_bowtie"]
    assert len(run.failures("search")) == 4


def test_old_scenes_table_without_repairs_reads(registry: SensorRegistry) -> None:
    scene = scene_from_item(_served(s2_item("S2_a", datetime(2022, 1, 1, tzinfo=UTC))), registry)
    frame = scenes_to_frame([scene]).drop(columns=["repairs"])
    assert scenes_from_frame(frame)[0] == scene
