"""Searching STAC APIs: tiles, de-duplication, client-side filters, retries, failures, stage."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import yaml
from catalog_builders import landsat_item, s2_item, series, write_world
from click.testing import CliRunner
from shapely.geometry import box

from terracorpus.catalogs.errors import CatalogError, ItemParseError, StacApiError
from terracorpus.catalogs.frames import scenes_from_frame
from terracorpus.catalogs.search import ApiQuery, search_scenes, tiles_for_area
from terracorpus.catalogs.sensors import SensorRegistry
from terracorpus.catalogs.server import StacServer
from terracorpus.catalogs.world.build import WorldSummary
from terracorpus.catalogs.world.testing import tiny_world
from terracorpus.pipelines.cli import main
from terracorpus.pipelines.config import parse_config
from terracorpus.pipelines.errors import ConfigError, StageError
from terracorpus.pipelines.rundir import RunDir
from terracorpus.pipelines.stages.search import run_search

AREA = (-94.0, 41.0, -93.0, 42.0)
S2 = ("sentinel-2-l2a",)
FAST = {"retries": 2, "backoff_s": 0.01, "timeout_s": 5.0}


def _items() -> list[dict[str, Any]]:
    """23 S2 items (cloud 0-90 %), 3 Landsat 8, and three awkward ones."""
    items = series(23, datetime(2022, 1, 1))
    items += [landsat_item(f"LC08_{i}", datetime(2022, 2, 1 + i)) for i in range(3)]
    no_cloud = s2_item("S2_nocloud", datetime(2022, 3, 31, 23, 0), cloud=None)
    broken = s2_item("S2_broken", datetime(2022, 3, 1))
    del broken["assets"]["red"]
    landsat5 = landsat_item("LT05_old", datetime(2022, 2, 10))
    landsat5["properties"]["platform"] = "landsat-5"
    far = s2_item("S2_far", datetime(2022, 3, 2), bbox=(-93.2, 41.8, -93.1, 41.9))
    return [*items, no_cloud, broken, landsat5, far]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = write_world(tmp_path_factory.mktemp("search-world"), _items())
    with StacServer([root]) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def second_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Another API publishing some of the same items (and one of its own)."""
    items = [*series(5, datetime(2022, 1, 1)), s2_item("S2_only_here", datetime(2022, 1, 3))]
    root = write_world(tmp_path_factory.mktemp("search-world-2"), items)
    with StacServer([root]) as srv:
        yield srv.url


def _search(api: str, registry: SensorRegistry, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "area": AREA,
        "start": date(2022, 1, 1),
        "end": date(2022, 3, 31),
        "max_cloud_cover": 50.0,
        "tile_degrees": 0.5,
        "page_size": 5,
        **FAST,
    }
    args.update(kw)
    collections = args.pop("collections", ("sentinel-2-l2a", "landsat-c2-l2"))
    return search_scenes([ApiQuery(api, tuple(collections))], registry=registry, **args)


# -- against the real local API -----------------------------------------------------------
@pytest.mark.integration
def test_search_filters_dedups_and_records_failures(api: str, registry: SensorRegistry) -> None:
    result = _search(api, registry)
    ids = [s.id for s in result.scenes]
    assert len(ids) == len(set(ids))
    # S2 days 0..85 (18 items) of which cloud > 50 %: 6; plus 3 Landsat, the cloudless-unknown
    # one (kept), and the far one inside the bbox.
    s2 = {f"S2_{i:03d}" for i in range(18) if (i * 10) % 100 <= 50}
    assert set(ids) == s2 | {"LC08_0", "LC08_1", "LC08_2", "S2_nocloud", "S2_far"}
    assert result.over_cloud_limit == 6
    assert result.duplicates > 0  # items span all four 0.5 degree tiles
    assert result.matched == result.duplicates + len(set(ids)) + 6 + 2
    assert all(s.cloud_cover is None or s.cloud_cover <= 50 for s in result.scenes)
    assert [s.datetime for s in result.scenes] == sorted(s.datetime for s in result.scenes)
    assert {s.sensor for s in result.scenes} == {"sentinel-2-l2a", "landsat-oli-c2-l2"}
    assert all(s.api_url == api for s in result.scenes)
    # The end date is inclusive: an item at 23:00 on it is found.
    assert "S2_nocloud" in ids
    failures = {f.key: f for f in result.failures}
    assert set(failures) == {"sentinel-2-l2a/S2_broken", "landsat-c2-l2/LT05_old"}
    assert "no asset for band B04" in failures["sentinel-2-l2a/S2_broken"].reason
    assert "platform 'landsat-5'" in failures["landsat-c2-l2/LT05_old"].reason
    assert all(f.stage == "search" and f.kind == "item" for f in result.failures)


@pytest.mark.integration
def test_strict_mode_raises_on_unusable_item(api: str, registry: SensorRegistry) -> None:
    with pytest.raises(ItemParseError, match=r"S2_broken|LT05_old"):
        _search(api, registry, strict=True)


@pytest.mark.integration
def test_geometry_area_is_applied_client_side(api: str, registry: SensorRegistry) -> None:
    # A triangle whose north-east tile holds S2_far, which the triangle itself misses.
    from shapely.geometry import Polygon

    area = Polygon([(-94.0, 41.0), (-93.0, 41.0), (-93.3, 42.0)])
    result = _search(api, registry, area=area, collections=S2)
    ids = {s.id for s in result.scenes}
    assert "S2_far" not in ids and "S2_000" in ids
    assert result.outside_area == 1


@pytest.mark.integration
def test_dedup_across_apis(api: str, second_api: str, registry: SensorRegistry) -> None:
    result = search_scenes(
        [ApiQuery(api, S2), ApiQuery(second_api, S2)],
        AREA,
        date(2022, 1, 1),
        date(2022, 1, 31),
        100.0,
        registry,
        tile_degrees=1.0,
        page_size=5,
        **FAST,
    )
    ids = [s.id for s in result.scenes]
    assert len(ids) == len(set(ids))
    assert "S2_only_here" in ids
    by_id = {s.id: s for s in result.scenes}
    assert by_id["S2_000"].api_url == api  # the first API that has it wins
    assert by_id["S2_only_here"].api_url == second_api
    assert result.duplicates == 5
    assert result.per_api == {api: 7, second_api: 1}  # January: days 0, 5, ..., 30


@pytest.mark.integration
def test_tiny_world_search(
    tmp_path_factory: pytest.TempPathFactory, registry: SensorRegistry
) -> None:
    world: WorldSummary = tiny_world(tmp_path_factory.getbasetemp())
    with StacServer([world.out]) as srv:
        result = search_scenes(
            [ApiQuery(srv.url, world.collections)],
            world.bbox,
            world.start,
            world.end,
            100.0,
            registry,
            tile_degrees=10.0,
            page_size=5,
            **FAST,
        )
    assert result.failures == []
    counts: dict[str, int] = {}
    for s in result.scenes:
        counts[s.collection] = counts.get(s.collection, 0) + 1
    assert counts == world.n_items
    for s in result.scenes:
        assert all(Path(ref.href).exists() for _, ref in s.bands)


def test_unknown_collection_is_refused_up_front(registry: SensorRegistry) -> None:
    with pytest.raises(CatalogError, match="no sensor is registered for collection 'modis'"):
        search_scenes([ApiQuery("http://127.0.0.1:9", ("modis",))], AREA, None, None, 50, registry)


def test_tiles_for_area() -> None:
    assert tiles_for_area((0.0, 0.0, 1.0, 1.0), 1.0) == [(0.0, 0.0, 1.0, 1.0)]
    tiles = tiles_for_area((0.0, 0.0, 2.5, 1.0), 1.0)
    assert len(tiles) == 3 and all(t[2] - t[0] <= 1.0 for t in tiles)
    assert tiles[0][0] == 0.0 and tiles[-1][2] == 2.5
    # Across the antimeridian: west > east becomes two ordinary boxes.
    tiles = tiles_for_area((179.5, 10.0, -179.5, 11.0), 5.0)
    assert tiles == [(179.5, 10.0, 180.0, 11.0), (-180.0, 10.0, -179.5, 11.0)]
    # A geometry keeps only the tiles it touches.
    from shapely.geometry import Polygon

    triangle = Polygon([(0, 0), (3, 0), (0, 3)])
    assert len(tiles_for_area(triangle, 1.0)) == 6
    # A list of tiles is searched as given (split when larger than tile_degrees).
    assert tiles_for_area([(0.0, 0.0, 0.5, 0.5), (5.0, 5.0, 5.5, 5.5)], 1.0) == [
        (0.0, 0.0, 0.5, 0.5),
        (5.0, 5.0, 5.5, 5.5),
    ]
    with pytest.raises(CatalogError, match="south < north"):
        tiles_for_area((0.0, 2.0, 1.0, 1.0), 1.0)


# -- a fake failing API -------------------------------------------------------------------
class _QuietServer(ThreadingHTTPServer):
    """A client that hung up (a request timed out on purpose) prints no traceback: it would land
    in whatever output a later test is capturing."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeApi:
    """A tiny STAC API on loopback that follows a script: per path, a list of answers
    ("503", "garbage", "slow", "ok") used up one request at a time, then "ok"."""

    def __init__(self, items: list[dict[str, Any]], script: dict[str, list[str]]) -> None:
        self.items = items
        self.script = {k: list(v) for k, v in script.items()}
        self.hits: dict[str, int] = {}
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                api.answer(self)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                api.answer(self)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?")[0].rstrip("/") or "/"
        self.hits[path] = self.hits.get(path, 0) + 1
        todo = self.script.get(path, [])
        action = todo.pop(0) if todo else "ok"
        if action == "503":
            self._send(h, 503, b"busy")
        elif action == "garbage":
            self._send(h, 200, b"<html>proxy error</html>")
        elif action == "slow":
            time.sleep(1.0)
            self._send(h, 200, json.dumps(self._body(path)).encode())
        else:
            self._send(h, 200, json.dumps(self._body(path)).encode())

    def _body(self, path: str) -> dict[str, Any]:
        if path == "/search":
            return {"type": "FeatureCollection", "features": self.items, "links": []}
        return {
            "type": "Catalog",
            "id": "fake",
            "stac_version": "1.0.0",
            "description": "fake",
            "conformsTo": [
                "https://api.stacspec.org/v1.0.0/core",
                "https://api.stacspec.org/v1.0.0/item-search",
            ],
            "links": [
                {"rel": "self", "href": f"{self.url}/"},
                {"rel": "root", "href": f"{self.url}/"},
                {
                    "rel": "search",
                    "href": f"{self.url}/search",
                    "method": "POST",
                    "type": "application/geo+json",
                },
            ],
        }

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, body: bytes) -> None:
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _fake_items() -> list[dict[str, Any]]:
    return [landsat_item(f"LC08_{i}", datetime(2022, 2, 1 + i)) for i in range(3)]


@pytest.fixture
def fake() -> Iterator[Any]:
    made: list[FakeApi] = []

    def make(script: dict[str, list[str]]) -> FakeApi:
        made.append(FakeApi(_fake_items(), script))
        return made[-1]

    yield make
    for f in made:
        f.close()


def _one_tile(url: str, registry: SensorRegistry, **kw: Any) -> Any:
    args = {**FAST, **kw}
    return search_scenes(
        [ApiQuery(url, ("landsat-c2-l2",))],
        AREA,
        date(2022, 1, 1),
        date(2022, 12, 31),
        50.0,
        registry,
        tile_degrees=5.0,
        **args,
    )


def test_retries_503_then_succeeds(fake: Any, registry: SensorRegistry) -> None:
    api = fake({"/": ["503"], "/search": ["503", "503"]})
    result = _one_tile(api.url, registry)
    assert [s.id for s in result.scenes] == ["LC08_0", "LC08_1", "LC08_2"]
    assert api.hits["/search"] == 3  # two 503s, then the answer
    assert api.hits["/"] >= 2


def test_retries_malformed_json_then_succeeds(fake: Any, registry: SensorRegistry) -> None:
    api = fake({"/search": ["garbage"]})
    result = _one_tile(api.url, registry)
    assert len(result.scenes) == 3
    assert api.hits["/search"] == 2


def test_retries_timeout_then_succeeds(fake: Any, registry: SensorRegistry) -> None:
    api = fake({"/search": ["slow"]})
    result = _one_tile(api.url, registry, timeout_s=0.3)
    assert len(result.scenes) == 3
    assert api.hits["/search"] >= 2


def test_persistent_503_is_a_clear_error(fake: Any, registry: SensorRegistry) -> None:
    api = fake({"/search": ["503"] * 10})
    with pytest.raises(StacApiError) as e:
        _one_tile(api.url, registry)
    msg = str(e.value)
    assert f"STAC API {api.url}" in msg and "HTTP 503" in msg and "after 2 retries" in msg
    assert "'collections': ['landsat-c2-l2']" in msg and "'bbox': [-94.0, 41.0, -93.0, 42.0]" in msg
    assert api.hits["/search"] == 3  # the first try and two retries


def test_persistent_malformed_json_is_a_clear_error(fake: Any, registry: SensorRegistry) -> None:
    api = fake({"/search": ["garbage"] * 10})
    with pytest.raises(
        StacApiError, match=rf"STAC API {api.url} failed for the search .*malformed"
    ):
        _one_tile(api.url, registry)
    assert api.hits["/search"] == 3


def test_unreachable_api_is_a_clear_error(registry: SensorRegistry) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once the socket is closed
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(StacApiError, match=rf"STAC API {url} failed after 2 retries: unreachable"):
        _one_tile(url, registry)


# -- the stage and the CLI ----------------------------------------------------------------
def _config(tmp_path: Path, api: str, **search: Any) -> dict[str, Any]:
    return {
        "run_dir": str(tmp_path / "run"),
        "search": {
            "apis": [{"url": api, "collections": ["sentinel-2-l2a", "landsat-c2-l2"]}],
            "bbox": list(AREA),
            "start": "2022-01-01",
            "end": "2022-03-31",
            "max_cloud_cover": 50,
            "tile_degrees": 0.5,
            "page_size": 5,
            "retries": 1,
            "backoff_s": 0.01,
            **search,
        },
    }


@pytest.mark.integration
def test_stage_writes_scenes_and_failures(api: str, tmp_path: Path) -> None:
    cfg = parse_config(_config(tmp_path, api))
    run = RunDir(cfg.run_dir, cfg)
    summary = run_search(cfg, run)
    frame = gpd.read_parquet(run.path("scenes.parquet"))
    scenes = scenes_from_frame(frame)
    assert len(scenes) == 17 and summary.startswith("17 scenes")
    assert run.is_current("scenes.parquet")
    assert run.table_meta("scenes.parquet")["stage"] == "search"  # type: ignore[index]
    failures = run.failures("search")
    assert sorted(failures["key"]) == ["landsat-c2-l2/LT05_old", "sentinel-2-l2a/S2_broken"]
    # A rerun replaces the stage's failures instead of piling them up.
    run_search(cfg, run)
    assert len(run.failures("search")) == 2


@pytest.mark.integration
def test_stage_empty_result_is_an_error_and_writes_nothing(api: str, tmp_path: Path) -> None:
    cfg = parse_config(_config(tmp_path, api, start="2030-01-01", end="2030-12-31"))
    run = RunDir(cfg.run_dir, cfg)
    with pytest.raises(StageError, match=r"no scenes found for .*2030-01-01.*returned 0 items"):
        run_search(cfg, run)
    assert not run.path("scenes.parquet").exists()


def test_stage_area_must_be_exactly_one(tmp_path: Path) -> None:
    raw = _config(tmp_path, "http://127.0.0.1:9", tiles=[[0, 0, 1, 1]])
    cfg = parse_config(raw)
    with pytest.raises(ConfigError, match=r"exactly one area.*given: bbox, tiles"):
        run_search(cfg, RunDir(cfg.run_dir, cfg))


@pytest.mark.integration
def test_stage_geojson_area(api: str, tmp_path: Path) -> None:
    area = tmp_path / "area.geojson"
    feature = {
        "type": "Feature",
        "properties": {},
        "geometry": box(-94, 41, -93.5, 41.5).__geo_interface__,
    }
    area.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    raw = _config(tmp_path, api, geojson=str(area))
    del raw["search"]["bbox"]
    cfg = parse_config(raw)
    run = RunDir(cfg.run_dir, cfg)
    assert run_search(cfg, run).startswith("16 scenes")  # all but S2_far


@pytest.mark.integration
def test_cli_search(api: str, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path, api)))
    result = CliRunner().invoke(
        main, ["search", "--config", str(config), "--run-dir", str(tmp_path / "other")]
    )
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'other' / 'scenes.parquet'}: 17 scenes" in result.output
    assert "2 unusable items recorded" in result.output
    strict = CliRunner().invoke(main, ["search", "--config", str(config), "--strict"])
    assert strict.exit_code == 2
    assert strict.output.startswith("error: item ")
    assert "Traceback" not in strict.output


def test_cli_search_unreachable_api(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path, "http://127.0.0.1:9")))
    result = CliRunner().invoke(main, ["search", "--config", str(config)])
    assert result.exit_code == 2
    assert "error: STAC API http://127.0.0.1:9 failed after 1 retries: unreachable" in result.output


def test_datetime_bounds_are_utc_and_inclusive(api: str, registry: SensorRegistry) -> None:
    result = _search(
        api,
        registry,
        start=datetime(2022, 1, 6, tzinfo=UTC),
        end=date(2022, 1, 6),
        max_cloud_cover=100.0,
        collections=S2,
    )
    assert [s.id for s in result.scenes] == ["S2_001"]


@pytest.mark.integration
def test_open_time_range(api: str, registry: SensorRegistry) -> None:
    everything = _search(api, registry, start=None, end=None, max_cloud_cover=100.0)
    assert len(everything.scenes) == 23 + 3 + 2  # all S2 (incl. no-cloud, far), all Landsat 8
    assert "datetime any" in everything.query
    from_march = _search(api, registry, start=date(2022, 3, 1), end=None, max_cloud_cover=100.0)
    assert {s.id for s in from_march.scenes} >= {"S2_nocloud", "S2_far", "S2_022"}
    assert all(s.datetime >= datetime(2022, 3, 1, tzinfo=UTC) for s in from_march.scenes)
