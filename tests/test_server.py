"""The embedded STAC API: a real rustac process on loopback, queried with pystac-client."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from catalog_builders import landsat_item, series, write_world
from click.testing import CliRunner
from pystac_client import Client

from terracorpus.catalogs import server as server_mod
from terracorpus.catalogs.errors import ServerError
from terracorpus.catalogs.server import StacServer, load_stac_documents
from terracorpus.catalogs.world.build import WorldSummary
from terracorpus.catalogs.world.testing import tiny_world
from terracorpus.pipelines.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldSummary:
    return tiny_world(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """23 Sentinel-2 items 5 days apart plus 3 Landsat items, world layout."""
    items = series(23, datetime(2022, 1, 1)) + [
        landsat_item(f"LC08_{i}", datetime(2022, 2, 1 + i)) for i in range(3)
    ]
    return write_world(tmp_path_factory.mktemp("built"), items)


def _world_items(world: WorldSummary) -> list[dict[str, Any]]:
    return [json.loads(f.read_text()) for f in sorted((world.out / "items").rglob("*.json"))]


def _search_pages(url: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    pages = list(Client.open(url).search(**params).pages_as_dicts())
    return [f for p in pages for f in p["features"]], len(pages)


def test_tiny_world_by_collection_bbox_datetime_across_pages(world: WorldSummary) -> None:
    truth = _world_items(world)
    with StacServer([world.out]) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        client = Client.open(srv.url)
        assert {c.id for c in client.get_collections()} == set(world.collections)

        s2 = [i for i in truth if i["collection"] == "sentinel-2-l2a"]
        found, pages = _search_pages(srv.url, collections=["sentinel-2-l2a"], limit=5)
        assert sorted(f["id"] for f in found) == sorted(i["id"] for i in s2)
        assert pages == -(-len(s2) // 5) and pages >= 2

        # bbox: one item's own bbox finds it, and nothing that misses the bbox.
        target = s2[0]
        w, s, e, n = target["bbox"]
        found, _ = _search_pages(srv.url, bbox=[w, s, e, n], limit=5)
        assert target["id"] in {f["id"] for f in found}
        for f in found:
            fw, fs, fe, fn = f["bbox"]
            assert fw <= e and fe >= w and fs <= n and fn >= s

        # datetime: exactly the items of the first year and a half.
        first_half = {
            i["id"] for i in truth if i["properties"]["datetime"] < "2022-07-01T00:00:00Z"
        }
        found, pages = _search_pages(
            srv.url, datetime="2021-01-01T00:00:00Z/2022-06-30T23:59:59Z", limit=5
        )
        assert {f["id"] for f in found} == first_half
        assert pages >= 2


def test_paging_filters_and_ignored_parameters(built: Path) -> None:
    with StacServer([built]) as srv:
        found, pages = _search_pages(srv.url, collections=["sentinel-2-l2a"], limit=5)
        assert len(found) == 23 and pages == 5
        assert len({f["id"] for f in found}) == 23
        found, _ = _search_pages(
            srv.url,
            collections=["sentinel-2-l2a"],
            datetime="2022-01-01T00:00:00Z/2022-01-31T23:59:59Z",
            limit=5,
        )
        assert len(found) == 7  # days 0, 5, ..., 30
        found, _ = _search_pages(srv.url, bbox=[10, 10, 11, 11], limit=5)
        assert found == []
        found, _ = _search_pages(srv.url, ids=["S2_003", "LC08_1"], limit=5)
        assert sorted(f["id"] for f in found) == ["LC08_1", "S2_003"]
        # GET paging breaks on array parameters (HTTP 500): pystac-client must POST.
        r = requests.get(f"{srv.url}/search?collections=sentinel-2-l2a&limit=5", timeout=10)
        assert r.status_code == 500
        # Relative asset hrefs were made absolute against the item file.
        href = found[0]["assets"][next(iter(found[0]["assets"]))]["href"]
        assert href.startswith(("https://", str(built.resolve())))


def test_stops_cleanly_and_frees_port(built: Path) -> None:
    srv = StacServer([built])
    with srv:
        port = srv.port
        proc = srv._proc
        assert proc is not None and proc.poll() is None
        assert requests.get(f"{srv.url}/", timeout=5).status_code == 200
    assert proc.poll() is not None
    assert srv.port is None
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # nobody listens there any more
    with pytest.raises(ServerError, match="not running"):
        _ = srv.url


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def test_occupied_port_detected_before_start(built: Path, occupied_port: int) -> None:
    with pytest.raises(ServerError, match=f"port {occupied_port} on 127.0.0.1 is already in use"):
        StacServer([built], port=occupied_port).start()


def test_occupied_port_detected_after_start(
    built: Path, occupied_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process may take the port between our check and the server's bind.
    monkeypatch.setattr(server_mod, "_check_port_free", lambda host, port: None)
    with pytest.raises(ServerError, match="already in use; choose another with --port"):
        StacServer([built], port=occupied_port).start()


def test_not_stac_inputs(tmp_path: Path, built: Path) -> None:
    not_stac = tmp_path / "config.json"
    not_stac.write_text(json.dumps({"foo": 1}))
    with pytest.raises(ServerError, match=rf"{not_stac} is not a STAC file.*found type None"):
        load_stac_documents([not_stac])
    text = tmp_path / "notes.json"
    text.write_text("hello")
    with pytest.raises(ServerError, match=rf"{text} is not a STAC file: it is not valid JSON"):
        load_stac_documents([built, text])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.json").write_text("{}")
    with pytest.raises(ServerError, match=f"no STAC items in {empty}"):
        StacServer([empty]).start()
    with pytest.raises(ServerError, match="does not exist"):
        load_stac_documents([tmp_path / "missing"])
    orphan = tmp_path / "orphan.json"
    item = series(1, datetime(2022, 1, 1))[0]
    del item["collection"]
    orphan.write_text(json.dumps(item))
    with pytest.raises(ServerError, match=rf"no STAC items in {orphan}.*1 unusable, e.g. "):
        load_stac_documents([orphan])
    with pytest.raises(ServerError, match=rf"{orphan}: item 'S2_000' names no 'collection'"):
        load_stac_documents([orphan], strict=True)


def test_unusable_items_are_left_out_and_counted(tmp_path: Path) -> None:
    items = series(3, datetime(2022, 3, 1))
    del items[1]["collection"]
    items[2]["collection"] = ["not", "an", "id"]
    folder = tmp_path / "items"
    folder.mkdir()
    for item in items:
        (folder / f"{item['id']}.json").write_text(json.dumps(item))
    with StacServer([folder]) as srv:
        assert [i["id"] for i in srv.documents.items] == [items[0]["id"]]
        assert len(srv.documents.skipped) == 2
        assert "names no 'collection'" in srv.documents.skipped[0]
        assert "not a string id" in srv.documents.skipped[1]
        found = requests.get(f"{srv.url}/search", timeout=10).json()["features"]
        assert [f["id"] for f in found] == [items[0]["id"]]
    with pytest.raises(ServerError, match="names no 'collection'"):
        StacServer([folder], strict=True).start()
    out = CliRunner().invoke(main, ["catalog", "serve", "--strict", str(folder)])
    assert out.exit_code == 2 and "names no 'collection'" in out.output


def test_item_files_ndjson_and_feature_collection(tmp_path: Path) -> None:
    items = series(6, datetime(2022, 3, 1))
    (tmp_path / "a.ndjson").write_text("\n".join(json.dumps(i) for i in items[:3]) + "\n")
    fc = {"type": "FeatureCollection", "features": items[3:]}
    (tmp_path / "b.geojson").write_text(json.dumps(fc))
    with StacServer([tmp_path / "a.ndjson", tmp_path / "b.geojson"]) as srv:
        found, _ = _search_pages(srv.url, limit=2)
        assert sorted(f["id"] for f in found) == [i["id"] for i in items]
        href = found[0]["assets"]["red"]["href"]
        assert href == str((tmp_path / found[0]["id"] / "red.tif").resolve())


def test_own_self_links_are_kept_as_via(tmp_path: Path) -> None:
    item = series(1, datetime(2022, 3, 1))[0]
    item["links"] = [{"rel": "self", "href": "/elsewhere/S2_000.json"}]
    (tmp_path / "a.json").write_text(json.dumps(item))
    with StacServer([tmp_path / "a.json"]) as srv:
        found, _ = _search_pages(srv.url, limit=2)
    rels = {(ln["rel"], ln["href"]) for ln in found[0]["links"]}
    assert ("via", "/elsewhere/S2_000.json") in rels
    assert ("self", _served_self_href(found[0])) in rels


def _served_self_href(item: dict[str, Any]) -> str:
    root = next(ln["href"] for ln in item["links"] if ln["rel"] == "root")
    return f"{root.rstrip('/')}/collections/{item['collection']}/items/{item['id']}"


def test_cli_serve_bad_input_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("[1, 2]")
    result = CliRunner().invoke(main, ["catalog", "serve", str(bad)])
    assert result.exit_code == 2
    assert f"error: {bad} is not a STAC file" in result.output
    assert "Traceback" not in result.output


def test_cli_serve_occupied_port_and_empty_dir(
    built: Path, occupied_port: int, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        main, ["catalog", "serve", str(built), "--port", str(occupied_port)]
    )
    assert result.exit_code == 2
    assert result.output.startswith(f"error: port {occupied_port} on 127.0.0.1 is already in use")
    result = CliRunner().invoke(main, ["catalog", "serve", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: no STAC items in {tmp_path}")


def test_cli_serve_runs_until_ctrl_c(built: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "terracorpus.pipelines.cli", "catalog", "serve", str(built)]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(f"STAC API at http://127.0.0.1:{port} serving 26 items")
        found, _ = _search_pages(f"http://127.0.0.1:{port}", limit=10)
        assert len(found) == 26
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(requests.ConnectionError):  # the server process is gone too
        requests.get(f"http://127.0.0.1:{port}/", timeout=5)


def test_datetime_in_items_is_utc(built: Path) -> None:
    with StacServer([built]) as srv:
        found, _ = _search_pages(srv.url, ids=["S2_000"])
    when = datetime.fromisoformat(found[0]["properties"]["datetime"].replace("Z", "+00:00"))
    assert when == datetime(2022, 1, 1, tzinfo=UTC)
