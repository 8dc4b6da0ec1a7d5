"""The built-in sensors on each provider's real items, and extending a built-in sensor from a
user's sensors file without copying its entry."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from terracorpus.catalogs.errors import ItemParseError, SensorRegistryError
from terracorpus.catalogs.parse import scene_from_item
from terracorpus.catalogs.sensors import SensorRegistry, builtin_registry, load_registry

ES_V0 = "S2A_28QCH_20200714_0_L2A.json"
ES_V1_KEYS = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
    "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
    "B11": "swir16", "B12": "swir22", "SCL": "scl",
}  # fmt: skip


def _json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _pc_items(folder: Path, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = _json(folder / "planetary-computer" / name)["features"]
    return items


def _earth_search_v1(folder: Path, collection: str) -> dict[str, Any]:
    """The Earth Search v0 item as v1 publishes the same scene: common-name asset keys,
    ``raster:bands`` with scale and offset, another collection id."""
    item = copy.deepcopy(_json(folder / ES_V0))
    item["collection"] = collection
    item["assets"] = {ES_V1_KEYS.get(k, k): a for k, a in item["assets"].items()}
    for key in ES_V1_KEYS.values():
        if key != "scl":
            item["assets"][key]["raster:bands"] = [
                {"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": 0.0}
            ]
    return item


@pytest.mark.parametrize(
    ("name", "sensor", "qa"),
    [
        ("sentinel-2-l2a-pc.json", "sentinel-2-l2a", "SCL"),
        ("landsat-c2-l2-pc.json", "landsat-oli-c2-l2", "qa_pixel"),
        ("sentinel-1-rtc-pc.json", "sentinel-1-rtc", None),
        ("naip-pc.json", "naip", None),
    ],
)
def test_planetary_computer_items(
    shared_stac_items: Path, registry: SensorRegistry, name: str, sensor: str, qa: str | None
) -> None:
    for item in _pc_items(shared_stac_items, name):
        scene = scene_from_item(item, registry)
        assert scene.sensor == sensor
        assert (scene.qa.key if scene.qa else None) == qa
        assert all(ref.href.startswith("https://") for _, ref in scene.bands)
        assert len(scene.radiometry) == len(registry.get(sensor).bands)


def test_planetary_computer_older_landsat_collection(
    shared_stac_items: Path, registry: SensorRegistry
) -> None:
    # PC's landsat-8-c2-l2 publishes Landsat 8 items under their USGS asset names.
    item = copy.deepcopy(_pc_items(shared_stac_items, "landsat-c2-l2-pc.json")[0])
    item["collection"] = "landsat-8-c2-l2"
    item["properties"]["platform"] = "landsat-8"
    names = {"coastal": "SR_B1", "blue": "SR_B2", "green": "SR_B3", "red": "SR_B4",
             "nir08": "SR_B5", "swir16": "SR_B6", "swir22": "SR_B7", "qa_pixel": "QA_PIXEL"}  # fmt: skip
    item["assets"] = {names.get(k, k): a for k, a in item["assets"].items()}
    scene = scene_from_item(item, registry)
    assert scene.sensor == "landsat-oli-c2-l2"
    assert scene.asset("SR_B4").key == "SR_B4" and scene.qa is not None
    assert scene.radiometry_of("SR_B4") is not None


@pytest.mark.parametrize("collection", ["sentinel-2-l2a", "sentinel-2-c1-l2a"])
def test_earth_search_v1_items(
    shared_stac_items: Path, registry: SensorRegistry, collection: str
) -> None:
    scene = scene_from_item(_earth_search_v1(shared_stac_items, collection), registry)
    assert scene.sensor == "sentinel-2-l2a"
    assert scene.asset("B05").key == "rededge1" and scene.qa is not None
    rad = scene.radiometry_of("B04")
    assert rad is not None and (rad.offset, rad.source) == (0.0, "item")


@pytest.mark.parametrize(
    ("name", "sensor"),
    [
        (ES_V0, "sentinel-2-l2a"),
        ("LC08_L2SP_028030_20200114_20200824_02_T1_SR.json", "landsat-oli-c2-l2"),
        ("LE07_L2SP_044033_20210329_20210424_02_T1_SR.json", "landsat-etm-c2-l2"),
    ],
)
def test_earth_search_v0_and_usgs_items(
    shared_stac_items: Path, registry: SensorRegistry, name: str, sensor: str
) -> None:
    assert scene_from_item(_json(shared_stac_items / name), registry).sensor == sensor


def _sensors_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sensors.yaml"
    path.write_text(text)
    return path


def test_extend_a_builtin_with_a_collection_and_an_alias(
    shared_stac_items: Path, tmp_path: Path
) -> None:
    sensors = _sensors_file(
        tmp_path,
        "sensors:\n"
        "  sentinel-2-l2a:\n"
        "    extends: builtin\n"
        "    collections: [my-s2-mirror]\n"
        "    asset_aliases: {B04: [red_10m]}\n",
    )
    registry = load_registry(sensors)
    s2 = registry.get("sentinel-2-l2a")
    builtin = builtin_registry().get("sentinel-2-l2a")
    assert s2.collections == (*builtin.collections, "my-s2-mirror")
    assert s2.aliases("B04")[0] == "red_10m" and "red" in s2.aliases("B04")
    assert s2.bands == builtin.bands and s2.radiometry_rules == builtin.radiometry_rules
    assert [s.name for s in registry] == [s.name for s in builtin_registry()]
    item = copy.deepcopy(_json(shared_stac_items / ES_V0))
    item["collection"] = "my-s2-mirror"
    item["assets"]["red_10m"] = item["assets"].pop("B04")
    scene = scene_from_item(item, registry)
    assert scene.sensor == "sentinel-2-l2a" and scene.asset("B04").key == "red_10m"
    with pytest.raises(ItemParseError, match="my-s2-mirror"):
        scene_from_item(item, builtin_registry())


def test_extend_in_list_form_under_a_new_name_and_a_band_change(tmp_path: Path) -> None:
    sensors = _sensors_file(
        tmp_path,
        "sensors:\n"
        "  - name: s2-harmonised\n"
        "    extends: sentinel-2-l2a\n"
        "    collections: [s2-harmonised]\n"
        "    bands: [{name: B04, nodata: 65535}]\n",
    )
    registry = load_registry(sensors)
    new = registry.get("s2-harmonised")
    assert new.collections == ("s2-harmonised",)
    assert new.band("B04").nodata == 65535 and new.band("B03").nodata == 0
    assert registry.for_collection("sentinel-2-l2a").name == "sentinel-2-l2a"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("sensors:\n  nope: {extends: builtin}\n", "no sensor 'nope' to extend"),
        ("sensors:\n  x: {extends: naip}\n", "needs its own 'collections'"),
        ("sensors:\n  naip: {extends: builtin, gsd: 1}\n", "unknown keys ['gsd']"),
        ("sensors:\n  naip: {extends: builtin, bands: [{name: Q}]}\n", "names none of"),
        ("sensors:\n  naip: {extends: builtin, collections: naip2}\n", "must be a list"),
        ("sensors:\n  naip: {extends: builtin, radiometry_rules: [x]}\n", "unknown radiometry"),
        ("sensors:\n  naip: {extends: builtin, item_radiometry: no-thanks}\n", "true or false"),
        ("sensors: 3\n", "top-level 'sensors' list"),
    ],
)
def test_bad_extensions_say_what_is_wrong(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(SensorRegistryError) as e:
        load_registry(_sensors_file(tmp_path, text))
    assert says in str(e.value) and "sensors.yaml" in str(e.value)
