"""One acquisition, one scene (#12.3), on real provider items.

Earth Search v0 (``sentinel-s2-l2a-cogs``) and v1 (``sentinel-2-l2a``) publish one
acquisition under one id; Planetary Computer publishes it under another. The v1 and
Earth-Search renderings here are made from the real items by renaming what those providers
name differently (collection, asset keys, id, platform spelling, datetime precision).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from test_search import FakeApi

from terracorpus.catalogs.search import SAME_ACQUISITION, ApiQuery, search_scenes
from terracorpus.catalogs.sensors import SensorRegistry

ES_V0 = "S2A_28QCH_20200714_0_L2A.json"
PC = "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
V1_KEYS = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B11": "swir16",
    "B12": "swir22",
    "SCL": "scl",
}
FAST = {"retries": 1, "backoff_s": 0.01, "timeout_s": 5.0}


def _load(folder: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / name).read_text())
    return data


def _es_v1(v0: dict[str, Any]) -> dict[str, Any]:
    """The Earth Search v1 rendering of a v0 item: same id, collection ``sentinel-2-l2a``,
    common-name asset keys, a datetime with milliseconds."""
    v1 = copy.deepcopy(v0)
    v1["collection"] = "sentinel-2-l2a"
    v1["assets"] = {V1_KEYS.get(k, k): a for k, a in v0["assets"].items()}
    v1["properties"]["datetime"] = v0["properties"]["datetime"].replace("Z", ".412Z")
    return v1


def _es_from_pc(pc: dict[str, Any]) -> dict[str, Any]:
    """Planetary Computer's item as Earth Search v0 publishes the same acquisition."""
    es = copy.deepcopy(pc)
    es["id"] = "S2B_6VVN_20190629_0_L2A"
    es["collection"] = "sentinel-s2-l2a-cogs"
    es["properties"]["platform"] = "sentinel-2b"  # PC: "Sentinel-2B"
    es["properties"]["datetime"] = "2019-06-29T21:25:29Z"  # PC: .024000Z
    for key, asset in es["assets"].items():
        asset["href"] = f"https://sentinel-cogs.s3.us-west-2.amazonaws.com/{es['id']}/{key}.tif"
    return es


@pytest.fixture
def apis() -> Iterator[Any]:
    made: list[FakeApi] = []

    def make(items: list[dict[str, Any]]) -> str:
        made.append(FakeApi(items, {}))
        return made[-1].url

    yield make
    for api in made:
        api.close()


def _search(
    queries: list[ApiQuery], bbox: tuple[float, ...], day: date, registry: SensorRegistry
) -> Any:
    return search_scenes(queries, bbox, day, day, 100.0, registry, tile_degrees=10.0, **FAST)  # type: ignore[arg-type]


ES_BBOX = (-17.0, 20.0, -16.7, 20.8)
ES_DAY = date(2020, 7, 14)


@pytest.mark.parametrize(
    ("collections", "kept"),
    [
        (("sentinel-2-l2a", "sentinel-s2-l2a-cogs"), "sentinel-2-l2a"),
        (("sentinel-s2-l2a-cogs", "sentinel-2-l2a"), "sentinel-s2-l2a-cogs"),
    ],
)
def test_one_id_in_two_collections_is_one_scene(
    shared_stac_items: Path,
    registry: SensorRegistry,
    apis: Any,
    collections: tuple[str, str],
    kept: str,
) -> None:
    v0 = _load(shared_stac_items, ES_V0)
    url = apis([v0, _es_v1(v0)])
    result = _search([ApiQuery(url, collections)], ES_BBOX, ES_DAY, registry)
    assert [(s.id, s.collection) for s in result.scenes] == [("S2A_28QCH_20200714_0_L2A", kept)]
    assert result.failures == []
    (twice,) = result.same_acquisition
    dropped = next(c for c in collections if c != kept)
    assert twice.key == f"{dropped}/S2A_28QCH_20200714_0_L2A"
    assert twice.reason == SAME_ACQUISITION
    assert f"same acquisition as {kept}/S2A_28QCH_20200714_0_L2A" in twice.detail


def test_one_id_for_two_acquisitions_is_recorded_not_a_crash(
    shared_stac_items: Path, registry: SensorRegistry, apis: Any
) -> None:
    v0 = _load(shared_stac_items, ES_V0)
    other = _es_v1(v0)
    other["properties"]["datetime"] = "2020-07-14T18:00:00Z"  # not the same acquisition
    url = apis([v0, other])
    result = _search(
        [ApiQuery(url, ("sentinel-s2-l2a-cogs", "sentinel-2-l2a"))], ES_BBOX, ES_DAY, registry
    )
    assert [s.collection for s in result.scenes] == ["sentinel-s2-l2a-cogs"]
    (failure,) = result.failures
    assert failure.key == "sentinel-2-l2a/S2A_28QCH_20200714_0_L2A"
    assert "scene ids must be unique" in failure.reason


@pytest.mark.parametrize("pc_first", [True, False])
def test_one_acquisition_from_two_apis_is_one_scene(
    shared_stac_items: Path, registry: SensorRegistry, apis: Any, pc_first: bool
) -> None:
    pc_item = _load(shared_stac_items, PC)
    pc = ApiQuery(apis([pc_item]), ("sentinel-2-l2a",))
    es = ApiQuery(apis([_es_from_pc(pc_item)]), ("sentinel-s2-l2a-cogs",))
    order = [pc, es] if pc_first else [es, pc]
    result = _search(order, (-149.0, 60.3, -146.8, 61.4), date(2019, 6, 29), registry)
    (scene,) = result.scenes
    assert scene.api_url == order[0].url
    assert scene.id == (pc_item["id"] if pc_first else "S2B_6VVN_20190629_0_L2A")
    assert len(result.same_acquisition) == 1 and result.failures == []
    assert result.per_api == {order[0].url: 1}


def test_tiles_of_one_pass_stay_apart(
    shared_stac_items: Path, registry: SensorRegistry, apis: Any
) -> None:
    # Four tiles of one Sentinel-2B pass (same datetime, same platform), two of them in two
    # UTM zones over 93 % of the same ground: the provider's own tiles, all kept.
    items = _load(shared_stac_items, "planetary-computer/sentinel-2-l2a-pc.json")["features"]
    url = apis(items)
    result = _search(
        [ApiQuery(url, ("sentinel-2-l2a",))], (92.0, 80.0, 98.0, 83.0), date(2024, 4, 19), registry
    )
    assert len(result.scenes) == 4 and result.same_acquisition == []


def test_stage_counts_and_records_the_same_acquisition(
    shared_stac_items: Path, apis: Any, tmp_path: Path
) -> None:
    from terracorpus.pipelines.config import parse_config
    from terracorpus.pipelines.rundir import RunDir
    from terracorpus.pipelines.stages.search import run_search

    v0 = _load(shared_stac_items, ES_V0)
    url = apis([v0, _es_v1(v0)])
    cfg = parse_config(
        {
            "run_dir": str(tmp_path / "run"),
            "search": {
                "apis": [{"url": url, "collections": ["sentinel-2-l2a", "sentinel-s2-l2a-cogs"]}],
                "bbox": list(ES_BBOX),
                "start": "2020-07-14",
                "end": "2020-07-14",
                "max_cloud_cover": 100,
                "retries": 1,
                "backoff_s": 0.01,
            },
        }
    )
    run = RunDir(cfg.run_dir, cfg)
    summary = run_search(cfg, run)
    assert summary.startswith("1 scenes") and "1 the same acquisition as another" in summary
    failures = run.failures("search")
    assert list(failures["reason"]) == [SAME_ACQUISITION]
    assert list(failures["key"]) == ["sentinel-s2-l2a-cogs/S2A_28QCH_20200714_0_L2A"]
