"""`config check` refuses up front everything `curate` would refuse later; `curate` checks the
Dask scheduler before it searches."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from terracorpus.catalogs.errors import CatalogError
from terracorpus.catalogs.search import ApiQuery, search_scenes
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.pipelines.cli import main
from terracorpus.pipelines.config import parse_config
from terracorpus.pipelines.curate import curate
from terracorpus.pipelines.errors import ClusterError

GOOD: dict[str, Any] = {
    "search": {
        "apis": [{"url": "http://127.0.0.1:9", "collections": ["sentinel-2-l2a"]}],
        "bbox": [-93.0, 41.0, -92.0, 42.0],
        "start": "2021-01-01",
        "end": "2021-12-31",
    }
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check(tmp_path: Path, data: dict[str, Any], *args: str) -> Any:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return CliRunner().invoke(main, ["config", "check", str(path), *args])


def _with(search: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    return {**GOOD, "search": {**GOOD["search"], **(search or {})}, **top}


def test_a_good_config_passes(tmp_path: Path) -> None:
    r = _check(tmp_path, GOOD)
    assert r.exit_code == 0 and "valid" in r.output, r.output


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ({"start": "2022-01-01", "end": "2021-01-01"}, "search.start 2022-01-01 is after"),
        ({"bbox": [-93.0, 42.0, -92.0, 41.0]}, "bbox [-93.0, 42.0, -92.0, 41.0] is not"),
        ({"bbox": [-93.0, 41.0, -93.0, 42.0]}, "is not (west, south, east, north)"),
        ({"bbox": None}, "exactly one area"),
        ({"apis": []}, "search.apis: empty"),
        ({"apis": [{"url": "http://x", "collections": ["modis"]}]}, "'modis'"),
        ({"sensor_files": ["/nonexistent/sensors.yaml"]}, "search.sensor_files"),
    ],
)
def test_what_curate_refuses_is_refused_up_front(
    tmp_path: Path, search: dict[str, Any], expected: str
) -> None:
    r = _check(tmp_path, _with(search))
    assert r.exit_code == 2, r.output
    assert expected in r.output
    assert "Traceback" not in r.output


def test_every_collection_without_a_sensor_is_listed(tmp_path: Path) -> None:
    apis = [
        {"url": "http://a", "collections": ["modis", "sentinel-2-l2a", "viirs"]},
        {"url": "http://b", "collections": ["aster"]},
    ]
    r = _check(tmp_path, _with({"apis": apis}))
    assert r.exit_code == 2
    assert "3 collection(s)" in r.output
    for c in ("'modis'", "'viirs'", "'aster'"):
        assert c in r.output
    # search itself names them all, not just the first
    with pytest.raises(CatalogError) as e:
        search_scenes(
            [ApiQuery("http://a", ("modis", "viirs"))], (0.0, 0.0, 1.0, 1.0), None, None, 50,
            builtin_registry(),
        )  # fmt: skip
    assert "'modis'" in str(e.value) and "'viirs'" in str(e.value)


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    port = _free_port()
    data = _with(
        {"start": "2022-01-01", "end": "2021-01-01", "bbox": [0.0, 5.0, 1.0, 4.0]},
        dask={"scheduler": f"tcp://127.0.0.1:{port}"},
    )
    r = _check(tmp_path, data)
    assert r.exit_code == 2
    assert "3 problem(s)" in r.output
    assert "search.start" in r.output and "bbox" in r.output
    assert f"dask.scheduler: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in r.output


def test_an_unreachable_scheduler_is_refused_unless_offline(tmp_path: Path) -> None:
    data = _with(dask={"scheduler": f"tcp://127.0.0.1:{_free_port()}"})
    assert _check(tmp_path, data).exit_code == 2
    assert _check(tmp_path, data, "--offline").exit_code == 0


def test_a_listening_scheduler_address_passes(tmp_path: Path) -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        r = _check(tmp_path, _with(dask={"scheduler": f"tcp://127.0.0.1:{port}"}))
    assert r.exit_code == 0, r.output


def test_curate_checks_the_scheduler_before_it_searches(tmp_path: Path) -> None:
    # the API is unreachable too: had search run first, its error would come instead
    cfg = parse_config(
        _with(run_dir=str(tmp_path / "run"), dask={"scheduler": f"tcp://127.0.0.1:{_free_port()}"})
    )
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler"):
        curate(cfg, echo=lambda s: None)
    assert not (tmp_path / "run" / "scenes.parquet").exists()
