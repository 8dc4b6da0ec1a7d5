"""The one STAC item parser on real provider items and on items that miss optional fields."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
import pytest
from catalog_builders import landsat_item, s2_item

from terracorpus.catalogs.errors import CatalogError, ItemParseError
from terracorpus.catalogs.frames import scenes_from_frame, scenes_to_frame
from terracorpus.catalogs.parse import grid_for_band, scene_from_item
from terracorpus.catalogs.sensors import SensorRegistry

PC = "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
PC_RASTER = "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531_raster_ext.json"
ES_V0 = "S2A_28QCH_20200714_0_L2A.json"
LC08 = "LC08_L2SP_028030_20200114_20200824_02_T1_SR.json"
LE07 = "LE07_L2SP_044033_20210329_20210424_02_T1_SR.json"
DEA = "ga_ls8c_ard_3-1-0_088080_2020-05-25_final.stac-item.json"


def _load(folder: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / name).read_text())
    return data


@pytest.mark.parametrize("name", [PC, PC_RASTER])
def test_planetary_computer_sentinel2(
    shared_stac_items: Path, registry: SensorRegistry, name: str
) -> None:
    scene = scene_from_item(_load(shared_stac_items, name), registry, api_url="https://pc/api")
    assert scene.sensor == "sentinel-2-l2a"
    assert scene.collection == "sentinel-2-l2a"
    assert scene.crs == "EPSG:32606"
    assert [g for g, _ in scene.grids] == [10.0, 20.0, 60.0]
    assert scene.grid(10).shape == (10980, 10980)
    assert scene.grid(20).transform == (20.0, 0.0, 399960.0, 0.0, -20.0, 6800040.0)
    assert scene.grid(60).shape == (1830, 1830)
    assert scene.gsd == 10.0
    assert len(scene.bands) == 12
    assert scene.asset("B04").key == "B04"
    assert scene.asset("B04").href.endswith("T06VVN_20190629T212529_B04_10m.tif")
    assert scene.asset("B8A").href.endswith("_B8A_20m.tif")
    assert scene.qa is not None and scene.qa.key == "SCL"
    assert scene.cloud_cover == pytest.approx(0.314306)
    # No view fields: sun angles come from Sentinel-2's mean solar angles.
    assert scene.sun_elevation == pytest.approx(90 - 37.9128805424161)
    assert scene.sun_azimuth == pytest.approx(170.148039164397)
    assert scene.off_nadir is None
    assert scene.platform == "Sentinel-2B"
    assert scene.datetime == datetime(2019, 6, 29, 21, 25, 29, 24000, tzinfo=UTC)
    assert scene.self_href is not None and scene.self_href.startswith(
        "https://planetarycomputer.microsoft.com/api/stac/v1/collections/sentinel-2-l2a/items/"
    )
    assert scene.api_url == "https://pc/api"
    assert scene.footprint.bounds == pytest.approx(scene.bbox, abs=1e-6)


def test_earth_search_v0_sentinel2(shared_stac_items: Path, registry: SensorRegistry) -> None:
    scene = scene_from_item(_load(shared_stac_items, ES_V0), registry)
    assert scene.sensor == "sentinel-2-l2a"
    assert scene.collection == "sentinel-s2-l2a-cogs"
    assert scene.crs == "EPSG:32628"
    # 9-number proj:transform (with the affine's last row) is cut to 6.
    assert scene.grid(10).transform == (10.0, 0.0, 300000.0, 0.0, -10.0, 2300040.0)
    assert scene.grid(20).shape == (5490, 5490)
    assert scene.grid(60).shape == (1830, 1830)
    assert scene.asset("B02").href.startswith("https://sentinel-cogs.s3.us-west-2.amazonaws.com/")
    assert scene.qa is not None and scene.qa.key == "SCL"
    assert scene.cloud_cover == 2.36
    assert scene.off_nadir == 0.0
    assert scene.sun_elevation is None and scene.sun_azimuth is None
    assert scene.self_href is not None and scene.self_href.startswith("s3://sentinel-cogs/")


@pytest.mark.parametrize(
    ("name", "sensor", "crs", "shape", "cloud", "elevation", "azimuth", "first_band_key"),
    [
        (
            LC08,
            "landsat-oli-c2-l2",
            "EPSG:32615",
            (8041, 7931),
            8.18,
            22.57988462,
            158.45194309,
            "coastal",
        ),
        (
            LE07,
            "landsat-etm-c2-l2",
            "EPSG:32610",
            (7131, 8151),
            0.0,
            43.38653299,
            130.53782366,
            "blue",
        ),
    ],
)
def test_usgs_landsat(
    shared_stac_items: Path,
    registry: SensorRegistry,
    name: str,
    sensor: str,
    crs: str,
    shape: tuple[int, int],
    cloud: float,
    elevation: float,
    azimuth: float,
    first_band_key: str,
) -> None:
    scene = scene_from_item(_load(shared_stac_items, name), registry)
    # landsat-c2l2-sr holds Landsat 7 and 8: the platform picks the instrument.
    assert scene.sensor == sensor
    assert scene.crs == crs
    # USGS has item-level proj fields only: one 30 m grid for every band.
    assert [g for g, _ in scene.grids] == [30.0]
    assert scene.grid().shape == shape
    assert scene.gsd == 30.0
    assert scene.bands[0][1].key == first_band_key
    assert scene.asset("SR_B4").href.startswith("https://landsatlook.usgs.gov/data/collection02/")
    assert scene.qa is not None and scene.qa.key == "qa_pixel"
    assert scene.cloud_cover == cloud
    assert scene.sun_elevation == pytest.approx(elevation)
    assert scene.sun_azimuth == pytest.approx(azimuth)
    assert scene.off_nadir == 0.0


def test_dea_item_without_collection_is_rejected_clearly(
    shared_stac_items: Path, registry: SensorRegistry
) -> None:
    with pytest.raises(ItemParseError, match="no sensor registered for collection") as e:
        scene_from_item(_load(shared_stac_items, DEA), registry)
    assert "2aa69fcf-aa55-4747-9d95-3652f9fe79b0" in str(e.value)


def test_pystac_item_and_dict_agree(shared_stac_items: Path, registry: SensorRegistry) -> None:
    from_dict = scene_from_item(_load(shared_stac_items, LC08), registry)
    from_pystac = scene_from_item(pystac.Item.from_file(str(shared_stac_items / LC08)), registry)
    # pystac knows where it read the item from; that is its self href.
    assert from_pystac.self_href == str(shared_stac_items / LC08)
    assert from_pystac.bands == from_dict.bands
    assert from_pystac.grids == from_dict.grids
    assert from_pystac.datetime == from_dict.datetime


# -- optional fields and variants ----------------------------------------------------------
WHEN = datetime(2022, 6, 1, 17, 0, tzinfo=UTC)


def test_relative_hrefs_resolve_against_self_href(registry: SensorRegistry) -> None:
    item = s2_item("S2_rel", WHEN)
    item["links"] = [{"rel": "self", "href": "/data/world/items/S2_rel.json"}]
    scene = scene_from_item(item, registry)
    assert scene.asset("B04").href == "/data/world/items/S2_rel/red.tif"
    item["links"] = [{"rel": "self", "href": "https://host.test/stac/items/S2_rel.json"}]
    scene = scene_from_item(item, registry)
    assert scene.asset("B04").href == "https://host.test/stac/items/S2_rel/red.tif"
    assert scene.qa is not None and scene.qa.href == "https://host.test/stac/items/S2_rel/scl.tif"


def test_relative_href_without_self_link_is_an_error(registry: SensorRegistry) -> None:
    with pytest.raises(ItemParseError, match="relative and the item has no self link"):
        scene_from_item(s2_item("S2_rel", WHEN), registry)


def test_no_view_fields(shared_stac_items: Path, registry: SensorRegistry) -> None:
    item = _load(shared_stac_items, LC08)
    for key in ("view:sun_azimuth", "view:sun_elevation", "view:off_nadir"):
        del item["properties"][key]
    scene = scene_from_item(item, registry)
    assert (scene.sun_elevation, scene.sun_azimuth, scene.off_nadir) == (None, None, None)
    assert scene.grid().shape == (8041, 7931)


def test_no_per_asset_proj_uses_item_grid_scaled_to_asset_gsd(
    shared_stac_items: Path, registry: SensorRegistry
) -> None:
    item = _load(shared_stac_items, PC)
    for asset in item["assets"].values():
        for key in ("proj:shape", "proj:transform", "proj:bbox"):
            asset.pop(key, None)
    item["properties"]["proj:shape"] = [10980, 10980]
    item["properties"]["proj:transform"] = [10.0, 0.0, 399960.0, 0.0, -10.0, 6800040.0]
    scene = scene_from_item(item, registry)
    # Each asset's own `gsd` says its pixel size; the item grid is scaled to it.
    assert [g for g, _ in scene.grids] == [10.0, 20.0, 60.0]
    assert scene.grid(20).shape == (5490, 5490)
    assert scene.grid(60).transform == (60.0, 0.0, 399960.0, 0.0, -60.0, 6800040.0)


def test_no_grid_anywhere_is_an_error(shared_stac_items: Path, registry: SensorRegistry) -> None:
    item = _load(shared_stac_items, LC08)
    del item["properties"]["proj:transform"]
    with pytest.raises(ItemParseError, match=r"no grid for asset 'coastal'.*proj:transform"):
        scene_from_item(item, registry)


def test_proj_code_instead_of_epsg(shared_stac_items: Path, registry: SensorRegistry) -> None:
    item = _load(shared_stac_items, ES_V0)
    del item["properties"]["proj:epsg"]
    item["properties"]["proj:code"] = "EPSG:32628"
    assert scene_from_item(item, registry).crs == "EPSG:32628"


def test_crs_from_band_asset_when_item_has_none(registry: SensorRegistry) -> None:
    item = s2_item("S2_assetcrs", WHEN)
    item["links"] = [{"rel": "self", "href": "/w/items/x.json"}]
    del item["properties"]["proj:epsg"]
    for asset in item["assets"].values():
        asset["proj:code"] = "EPSG:32615"
    assert scene_from_item(item, registry).crs == "EPSG:32615"


def test_no_crs_is_an_error(shared_stac_items: Path, registry: SensorRegistry) -> None:
    item = _load(shared_stac_items, LC08)
    del item["properties"]["proj:epsg"]
    with pytest.raises(ItemParseError, match=r"LC08_L2SP_028030.*no CRS"):
        scene_from_item(item, registry)


def _as_stac_1_1(item: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a STAC 1.0 item the 1.1 way: ``bands`` for eo:bands/raster:bands, proj:code."""
    item = copy.deepcopy(item)
    item["stac_version"] = "1.1.0"
    item["properties"]["proj:code"] = f"EPSG:{item['properties'].pop('proj:epsg')}"
    renamed = {}
    for i, (key, asset) in enumerate(item["assets"].items()):
        eo = asset.pop("eo:bands", None)
        asset.pop("raster:bands", None)
        if eo:
            asset["bands"] = [
                {"name": b["name"], "eo:center_wavelength": b.get("center_wavelength")} for b in eo
            ]
        # Providers rename keys freely; 1.1 items are found through their band names too.
        renamed[f"asset{i}" if eo else key] = asset
    item["assets"] = renamed
    return item


def test_stac_1_1_bands_and_proj_code(shared_stac_items: Path, registry: SensorRegistry) -> None:
    original = scene_from_item(_load(shared_stac_items, PC_RASTER), registry)
    scene = scene_from_item(_as_stac_1_1(_load(shared_stac_items, PC_RASTER)), registry)
    assert scene.crs == "EPSG:32606"
    assert scene.grids == original.grids
    assert [ref.href for _, ref in scene.bands] == [ref.href for _, ref in original.bands]
    assert scene.asset("B04").key.startswith("asset")


def test_missing_band_asset_names_band_and_keys(
    shared_stac_items: Path, registry: SensorRegistry
) -> None:
    item = _load(shared_stac_items, PC)
    del item["assets"]["B04"]
    with pytest.raises(ItemParseError) as e:
        scene_from_item(item, registry)
    msg = str(e.value)
    assert "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531" in msg
    assert "no asset for band B04 under keys ['red', 'B04']" in msg


def test_unknown_collection_and_platform(registry: SensorRegistry) -> None:
    with pytest.raises(ItemParseError, match="no sensor is registered for collection 'modis'"):
        scene_from_item(s2_item("x", WHEN, collection="modis"), registry)
    item = landsat_item("LT05_X", WHEN)
    item["properties"]["platform"] = "landsat-5"
    with pytest.raises(ItemParseError, match=r"LT05_X.*platform 'landsat-5'"):
        scene_from_item(item, registry)


def test_missing_datetime_and_geometry(registry: SensorRegistry) -> None:
    item = landsat_item("LC08_X", WHEN)
    item["properties"]["datetime"] = None
    with pytest.raises(ItemParseError, match="LC08_X: no 'datetime'"):
        scene_from_item(item, registry)
    item["properties"]["start_datetime"] = "2022-06-01T10:00:00Z"
    assert scene_from_item(item, registry).datetime == datetime(2022, 6, 1, 10, tzinfo=UTC)
    item["geometry"] = None
    with pytest.raises(ItemParseError, match="LC08_X: no geometry"):
        scene_from_item(item, registry)


def test_not_an_item(registry: SensorRegistry) -> None:
    with pytest.raises(ItemParseError, match="not a STAC item"):
        scene_from_item({"type": "Collection", "id": "x"}, registry)


def test_grid_for_band_picks_nearest_grid(
    shared_stac_items: Path, registry: SensorRegistry
) -> None:
    scene = scene_from_item(_load(shared_stac_items, PC), registry)
    assert grid_for_band(scene, 20).gsd == 20
    assert grid_for_band(scene, 60).gsd == 60
    landsat = scene_from_item(_load(shared_stac_items, LC08), registry)
    assert grid_for_band(landsat, 15).gsd == 30  # only grid there is


# -- frames --------------------------------------------------------------------------------
def test_frame_round_trip_exact(
    shared_stac_items: Path, registry: SensorRegistry, tmp_path: Path
) -> None:
    import geopandas as gpd

    scenes = [
        scene_from_item(_load(shared_stac_items, n), registry, api_url="http://api")
        for n in (PC, ES_V0, LC08, LE07)
    ]
    frame = scenes_to_frame(scenes)
    assert list(frame.columns[:4]) == ["id", "collection", "sensor", "datetime"]
    assert str(frame.crs) == "EPSG:4326"
    assert str(frame["datetime"].dtype).startswith("datetime64") and frame["datetime"].dt.tz
    assert frame["sun_elevation"].isna().sum() == 1  # Earth Search v0 has no sun angles
    assert json.loads(frame.loc[0, "grids"])[1]["gsd"] == 20.0
    assert scenes_from_frame(frame) == scenes
    frame.to_parquet(tmp_path / "scenes.parquet")
    assert scenes_from_frame(gpd.read_parquet(tmp_path / "scenes.parquet")) == scenes


def test_frame_of_no_scenes_and_bad_frame() -> None:
    frame = scenes_to_frame([])
    assert len(frame) == 0 and "grids" in frame.columns
    assert scenes_from_frame(frame) == []
    with pytest.raises(CatalogError, match="needs the columns"):
        scenes_from_frame(frame.drop(columns=["grids"]))


# -- a sensor added without code ----------------------------------------------------------
DEA_YAML = """
sensors:
  - name: dea-landsat-8-ard
    title: Digital Earth Australia Landsat 8 ARD (NBART)
    collections: [ga_ls8c_ard_3]
    platforms: [landsat-8]
    qa: {assets: [], kind: none}
    bands:
      - {name: nbart_blue, common_name: blue, center_wavelength: 0.482, full_width_half_max: 0.060, gsd: 30, dtype: int16, scale: 0.0001, nodata: -999}
      - {name: nbart_green, common_name: green, center_wavelength: 0.561, full_width_half_max: 0.057, gsd: 30, dtype: int16, scale: 0.0001, nodata: -999}
      - {name: nbart_red, common_name: red, center_wavelength: 0.655, full_width_half_max: 0.037, gsd: 30, dtype: int16, scale: 0.0001, nodata: -999}
      - {name: nbart_nir, common_name: nir08, center_wavelength: 0.865, full_width_half_max: 0.028, gsd: 30, dtype: int16, scale: 0.0001, nodata: -999}
"""

DEA_TOML = """
[[sensors]]
name = "dea-landsat-8-ard"
title = "Digital Earth Australia Landsat 8 ARD (NBART)"
collections = ["ga_ls8c_ard_3"]
platforms = ["landsat-8"]
qa = { assets = [], kind = "none" }
asset_aliases = { red = ["nbart_red"] }
bands = [
  { name = "red", common_name = "red", center_wavelength = 0.655, full_width_half_max = 0.037, gsd = 30, dtype = "int16", scale = 0.0001, nodata = -999 },
  { name = "nir08", center_wavelength = 0.865, full_width_half_max = 0.028, gsd = 30, dtype = "int16", asset_key = "x" },
]
"""


@pytest.mark.parametrize(("suffix", "text"), [(".yaml", DEA_YAML), (".toml", DEA_TOML)])
def test_sensor_added_in_a_file_parses_dea_items(
    shared_stac_items: Path, tmp_path: Path, suffix: str, text: str
) -> None:
    from terracorpus.catalogs.errors import SensorRegistryError
    from terracorpus.catalogs.sensors import load_registry

    sensors = tmp_path / f"dea{suffix}"
    if suffix == ".toml":
        # `asset_key` is not a band key: the file is refused with the reason.
        sensors.write_text(text)
        with pytest.raises(SensorRegistryError, match=r"dea\.toml.*unknown keys \['asset_key'\]"):
            load_registry(sensors)
        text = text.replace(', asset_key = "x"', "").replace(
            'asset_aliases = { red = ["nbart_red"] }',
            'asset_aliases = { red = ["nbart_red"], nir08 = ["nbart_nir"] }',
        )
    sensors.write_text(text)
    registry = load_registry(sensors)
    item = _load(shared_stac_items, DEA)
    item["collection"] = "ga_ls8c_ard_3"  # DEA publishes it as odc:product only
    scene = scene_from_item(item, registry)
    assert scene.sensor == "dea-landsat-8-ard"
    assert scene.crs == "EPSG:32656"
    assert [g for g, _ in scene.grids] == [30.0]
    assert scene.grid().shape == (7841, 7781)
    assert scene.asset(scene.bands[0][0]).href.startswith("http://dea-public-data-dev")
    red = dict(scene.bands)["nbart_red" if suffix == ".yaml" else "red"]
    assert red.key == "nbart_red" and red.href.endswith("_band04.tif")
    assert scene.cloud_cover == pytest.approx(42.42102985910952)
    assert scene.sun_elevation == pytest.approx(31.7895917)
    assert scene.qa is None
