"""Per-item radiometry on real provider items: the item first, then registry rules, then the
registry default; the scene record (and scenes.parquet) says which; impossible item values
are refused naming the item and what to set."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from terracorpus.catalogs.errors import ItemParseError
from terracorpus.catalogs.frames import scenes_from_frame, scenes_to_frame
from terracorpus.catalogs.parse import scene_from_item
from terracorpus.catalogs.scene import BandRadiometry
from terracorpus.catalogs.sensors import SensorRegistry, load_registry

PC_2019 = "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
PC_2019_RASTER = "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531_raster_ext.json"
ES_V0 = "S2A_28QCH_20200714_0_L2A.json"
LC08 = "LC08_L2SP_028030_20200114_20200824_02_T1_SR.json"


def _item(folder: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / name).read_text())
    return data


def _pc(folder: Path, name: str, k: int = 0) -> dict[str, Any]:
    features: list[dict[str, Any]] = _item(folder / "planetary-computer", name)["features"]
    return copy.deepcopy(features[k])


def _rad(item: dict[str, Any], registry: SensorRegistry, band: str) -> BandRadiometry:
    rad = scene_from_item(item, registry).radiometry_of(band)
    assert rad is not None
    return rad


def test_pc_sentinel2_before_baseline_0400_has_no_offset(
    shared_stac_items: Path, registry: SensorRegistry
) -> None:
    # 2019, s2:processing_baseline 02.12, no raster:bands: the baseline rule decides.
    rad = _rad(_item(shared_stac_items, PC_2019), registry, "B04")
    assert rad == BandRadiometry(0.0001, 0.0, 0.0, "rule:s2-processing-baseline")


def test_pc_sentinel2_raster_bands_without_scale_keep_the_rule(
    shared_stac_items: Path, registry: SensorRegistry
) -> None:
    # The raster-extension variant declares only nodata and data_type: nodata is the item's,
    # scale and offset still the rule's.
    item = _item(shared_stac_items, PC_2019_RASTER)
    item["assets"]["B04"]["raster:bands"][0]["nodata"] = 65535
    rad = _rad(item, registry, "B04")
    assert rad == BandRadiometry(0.0001, 0.0, 65535.0, "rule:s2-processing-baseline")


def test_pc_sentinel2_baseline_0510_has_the_offset(
    shared_stac_items: Path, registry: SensorRegistry
) -> None:
    item = _pc(shared_stac_items, "sentinel-2-l2a-pc.json")
    assert item["properties"]["s2:processing_baseline"] == "05.10"
    scene = scene_from_item(item, registry)
    assert {r.source for _, r in scene.radiometry} == {"rule:s2-processing-baseline"}
    assert all(r.offset == -0.1 and r.scale == 0.0001 for _, r in scene.radiometry)


@pytest.mark.parametrize(
    ("key", "value", "offset"),
    [("processing:version", "04.00", -0.1), ("processing:version", "N0301", 0.0)],
)
def test_processing_version_is_read_too(
    shared_stac_items: Path, registry: SensorRegistry, key: str, value: str, offset: float
) -> None:
    item = _pc(shared_stac_items, "sentinel-2-l2a-pc.json")
    del item["properties"]["s2:processing_baseline"]
    item["properties"][key] = value
    assert _rad(item, registry, "B02").offset == offset


def test_earth_search_v0_without_baseline_is_placed_by_its_date(
    shared_stac_items: Path, registry: SensorRegistry
) -> None:
    item = _item(shared_stac_items, ES_V0)  # 2020-07-14, no baseline, no raster:bands
    assert _rad(item, registry, "B04") == BandRadiometry(
        0.0001, 0.0, 0.0, "rule:s2-processing-baseline-date"
    )
    later = copy.deepcopy(item)
    later["properties"]["datetime"] = "2023-07-14T11:55:52Z"
    assert _rad(later, registry, "B04").offset == -0.1
    applied = copy.deepcopy(later)  # Earth Search already added the offset to the values
    applied["properties"]["sentinel:boa_offset_applied"] = True
    assert _rad(applied, registry, "B04") == BandRadiometry(
        0.0001, 0.0, 0.0, "rule:s2-boa-offset-applied"
    )


def test_item_raster_bands_win(shared_stac_items: Path, registry: SensorRegistry) -> None:
    # Earth Search v1 style: raster:bands with scale and offset on a pre-baseline item.
    item = _item(shared_stac_items, PC_2019)
    item["assets"]["B04"]["raster:bands"] = [
        {"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}
    ]
    assert _rad(item, registry, "B04") == BandRadiometry(0.0001, -0.1, 0.0, "item")
    assert _rad(item, registry, "B03").source == "rule:s2-processing-baseline"


def test_earth_search_offset_applied_flag_wins_over_its_raster_bands(
    shared_stac_items: Path, registry: SensorRegistry
) -> None:
    # Earth Search v1 declares offset -0.1 on every item, also where it already shifted the
    # stored values back (earthsearch:boa_offset_applied: true): the flag decides.
    item = _item(shared_stac_items, ES_V0)
    item["properties"].update(
        {"datetime": "2023-07-14T11:55:52Z", "earthsearch:boa_offset_applied": True}
    )
    item["assets"]["B04"]["raster:bands"] = [{"nodata": 0, "scale": 0.0001, "offset": -0.1}]
    assert _rad(item, registry, "B04") == BandRadiometry(
        0.0001, 0.0, 0.0, "rule:s2-boa-offset-applied"
    )
    item["properties"]["earthsearch:boa_offset_applied"] = False
    assert _rad(item, registry, "B04") == BandRadiometry(0.0001, -0.1, 0.0, "item")


def test_stac_1_1_bands(shared_stac_items: Path, registry: SensorRegistry) -> None:
    item = _pc(shared_stac_items, "sentinel-2-l2a-pc.json")
    item["stac_version"] = "1.1.0"
    item["assets"]["B04"]["bands"] = [
        {
            "name": "B04",
            "nodata": 0,
            "data_type": "uint16",
            "raster:scale": 0.0001,
            "raster:offset": 0.0,
        }
    ]
    item["assets"]["B03"]["raster:scale"] = 0.0001  # single-band asset: on the asset itself
    item["assets"]["B03"]["raster:offset"] = -0.1
    assert _rad(item, registry, "B04") == BandRadiometry(0.0001, 0.0, 0.0, "item")
    assert _rad(item, registry, "B03") == BandRadiometry(0.0001, -0.1, 0.0, "item")


def test_pc_landsat_item_scale_offset(shared_stac_items: Path, registry: SensorRegistry) -> None:
    scene = scene_from_item(_pc(shared_stac_items, "landsat-c2-l2-pc.json"), registry)
    assert scene.sensor == "landsat-oli-c2-l2"
    assert scene.radiometry_of("SR_B4") == BandRadiometry(2.75e-05, -0.2, 0.0, "item")


def test_usgs_landsat_without_raster_bands_uses_the_registry(
    shared_stac_items: Path, registry: SensorRegistry
) -> None:
    scene = scene_from_item(_item(shared_stac_items, LC08), registry)
    assert scene.radiometry_of("SR_B2") == BandRadiometry(2.75e-05, -0.2, 0.0, "registry")


def test_sentinel1_rtc_and_naip(shared_stac_items: Path, registry: SensorRegistry) -> None:
    s1 = scene_from_item(_pc(shared_stac_items, "sentinel-1-rtc-pc.json"), registry)
    assert s1.sensor == "sentinel-1-rtc"
    assert s1.radiometry_of("vv") == BandRadiometry(1.0, 0.0, -32768.0, "registry")
    naip = scene_from_item(_pc(shared_stac_items, "naip-pc.json"), registry)
    assert naip.sensor == "naip"
    assert naip.radiometry_of("N") == BandRadiometry(0.002, 0.0, 0.0, "registry")


def test_multiband_asset_reads_its_band_entry(
    shared_stac_items: Path, registry: SensorRegistry
) -> None:
    item = _pc(shared_stac_items, "naip-pc.json")
    item["assets"]["image"]["raster:bands"] = [
        {"nodata": 0},
        {"nodata": 0},
        {"nodata": 0},
        {"nodata": 0, "scale": 0.004},
    ]
    scene = scene_from_item(item, registry)
    assert scene.radiometry_of("N") == BandRadiometry(0.004, 0.0, 0.0, "item")
    assert scene.radiometry_of("R") == BandRadiometry(0.002, 0.0, 0.0, "registry")


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("scale", 1.0, "scale 1"),
        ("scale", 2.75e-07, "scale 2.75e-07"),
        ("offset", -1000.0, "offset"),
    ],
)
def test_impossible_item_values_are_refused(
    shared_stac_items: Path, registry: SensorRegistry, field: str, value: float, says: str
) -> None:
    item = _pc(shared_stac_items, "landsat-c2-l2-pc.json")
    item["assets"]["red"]["raster:bands"][0][field] = value
    with pytest.raises(ItemParseError) as e:
        scene_from_item(item, registry)
    msg = str(e.value)
    assert item["id"] in msg and "band SR_B4" in msg and says in msg
    assert "item_radiometry: false" in msg


def test_item_radiometry_false_lets_the_rule_decide(
    shared_stac_items: Path, tmp_path: Path
) -> None:
    sensors = tmp_path / "sensors.yaml"
    sensors.write_text("sensors:\n  sentinel-2-l2a: {extends: builtin, item_radiometry: false}\n")
    registry = load_registry(sensors)
    item = _item(shared_stac_items, PC_2019)
    item["assets"]["B04"]["raster:bands"] = [{"scale": 0.0001, "offset": -0.1, "nodata": 7}]
    # The item's raster:bands are ignored whole, nodata included.
    assert _rad(item, registry, "B04") == BandRadiometry(
        0.0001, 0.0, 0.0, "rule:s2-processing-baseline"
    )


def test_scenes_table_keeps_radiometry(shared_stac_items: Path, registry: SensorRegistry) -> None:
    scenes = [
        scene_from_item(_item(shared_stac_items, PC_2019), registry),
        scene_from_item(_pc(shared_stac_items, "sentinel-2-l2a-pc.json"), registry),
        scene_from_item(_pc(shared_stac_items, "sentinel-1-rtc-pc.json"), registry),
    ]
    frame = scenes_to_frame(scenes)
    assert scenes_from_frame(frame) == scenes
    assert "rule:s2-processing-baseline" in frame["radiometry"].iloc[0]
    # A table written before the column existed still reads: the registry's values apply.
    old = scenes_from_frame(frame.drop(columns=["radiometry"]))
    assert old[0].radiometry == () and old[0].radiometry_of("B04") is None


def test_search_records_an_impossible_item_as_a_failure(
    shared_stac_items: Path, registry: SensorRegistry, tmp_path: Path
) -> None:
    from terracorpus.catalogs.search import ApiQuery, search_scenes
    from terracorpus.catalogs.server import StacServer

    items = [_pc(shared_stac_items, "landsat-c2-l2-pc.json", k) for k in range(4)]
    bad = items[1]["id"]
    items[1]["assets"]["nir08"]["raster:bands"][0]["scale"] = 1.0  # DN taken for reflectance
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    area = (
        min(i["bbox"][0] for i in items),
        min(i["bbox"][1] for i in items),
        max(i["bbox"][2] for i in items),
        max(i["bbox"][3] for i in items),
    )
    with StacServer([path]) as api:
        query = [ApiQuery(api.url, ("landsat-c2-l2",))]
        result = search_scenes(query, area, None, None, 100, registry, tile_degrees=10)
        with pytest.raises(ItemParseError, match=bad):
            search_scenes(query, area, None, None, 100, registry, tile_degrees=10, strict=True)
    assert sorted(s.id for s in result.scenes) == sorted(i["id"] for i in items if i["id"] != bad)
    [failure] = result.failures
    assert failure.key == f"landsat-c2-l2/{bad}" and "band SR_B5" in failure.reason
    assert "item_radiometry: false" in failure.reason
