"""Credentials never reach an artifact, a log or the report (issue #13.5).

A user:password or a token in a URL — in the config's API URL, in an asset href a catalog
publishes, in a GDAL message about a signed read — is stripped before it is stored
(scenes.parquet, failures.parquet, run-config.json, corpus.zarr/zarr.json), logged or
rendered (report.html, ``config check``); secrets come from a netrc file or the environment.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from catalog_builders import s2_item, write_world
from click.testing import CliRunner

from terracorpus.catalogs.frames import scenes_to_frame
from terracorpus.catalogs.redact import RedactingFilter, redact_text, strip_credentials
from terracorpus.catalogs.server import StacServer
from terracorpus.curation.testing import make_scene
from terracorpus.pipelines.cli import main
from terracorpus.pipelines.config import RunConfig, parse_config
from terracorpus.pipelines.errors import ConfigError
from terracorpus.pipelines.report import write_report
from terracorpus.pipelines.rundir import Failure, RunDir, write_parquet_atomic
from terracorpus.pipelines.stages.search import run_search

SECRETS = ("hunter2", "s3cr3t", "c2lnbmF0dXJl")
SAS = "st=2026-01-01T00%3A00%3A00Z&se=2026-01-02T00%3A00%3A00Z&sp=rl&sv=2021-06-08&sig=c2lnbmF0dXJl"


def _assert_clean(text: str | bytes, where: str) -> None:
    data = text.decode(errors="replace") if isinstance(text, bytes) else text
    for secret in SECRETS:
        assert secret not in data, f"{secret!r} leaked into {where}"


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("https://alice:hunter2@h.test/a/b.tif", "https://h.test/a/b.tif"),
        (f"https://acct.blob.core.windows.net/c/b.tif?{SAS}", "https://acct.blob.core.windows.net/c/b.tif"),
        ("https://h.test/b.tif?format=tif&X-Amz-Signature=abc&x=1", "https://h.test/b.tif?format=tif&x=1"),
        ("https://h.test/b.tif?token=abc#frag", "https://h.test/b.tif#frag"),
        ("s3://bucket/key.tif", "s3://bucket/key.tif"),
        ("/data/scene/B04.tif", "/data/scene/B04.tif"),
        ("https://h.test:8443/path?a=1", "https://h.test:8443/path?a=1"),
    ],
)  # fmt: skip
def test_strip_credentials(url: str, want: str) -> None:
    assert strip_credentials(url) == want


def test_redact_text_cleans_urls_and_bare_query_strings() -> None:
    gdal = f"Read failed: B04.tif?{SAS}, band 1: got 0 bytes; /vsicurl/https://u:s3cr3t@h.test/x"
    clean = redact_text(gdal)
    _assert_clean(clean, "a GDAL message")
    assert "B04.tif, band 1" in clean and "https://h.test/x" in clean


def test_log_records_are_redacted() -> None:
    record = logging.LogRecord(
        "t", logging.WARNING, "f", 1, "open %s", (f"https://a:hunter2@h/x?{SAS}",), None
    )
    assert RedactingFilter().filter(record)
    _assert_clean(record.getMessage(), "a log record")
    assert "https://h/x" in record.getMessage()


def test_config_with_credentials_is_refused_without_echoing_them(tmp_path: Path) -> None:
    raw = {
        "search": {"apis": [{"url": "https://alice:hunter2@stac.test/v1", "collections": ["c"]}]}
    }
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    _assert_clean(str(e.value), "the config error")
    assert "search.apis.0.url" in str(e.value) and "netrc" in str(e.value)
    # So nothing downstream (run-config.json, corpus.zarr/zarr.json) can be written with it.
    path = tmp_path / "run.yaml"
    path.write_text(
        "search:\n  apis:\n    - url: https://alice:hunter2@stac.test/v1\n      collections: [c]\n"
    )
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 2
    _assert_clean(result.output, "`config check` output")


def test_config_check_of_a_broken_yaml_line_does_not_echo_it(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("search:\n  apis: [{url: https://alice:hunter2@stac.test/v1, : }\n")
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 2 and "not valid YAML" in result.output
    _assert_clean(result.output, "`config check` output")


def _credentialed_item(item_id: str) -> dict:  # type: ignore[type-arg]
    item = s2_item(item_id, datetime(2022, 1, 5))
    for key, asset in item["assets"].items():
        asset["href"] = f"https://alice:hunter2@blobs.test/c/{item_id}/{key}.tif?{SAS}"
    return item


@pytest.mark.integration
def test_scenes_parquet_keeps_hrefs_without_credentials(tmp_path: Path) -> None:
    root = write_world(tmp_path / "catalog", [_credentialed_item("S2_creds")])
    with StacServer([root]) as server:
        cfg = parse_config(
            {
                "run_dir": str(tmp_path / "run"),
                "search": {
                    "apis": [{"url": server.url, "collections": ["sentinel-2-l2a"]}],
                    "bbox": [-93.7, 41.4, -93.3, 41.8],
                    "start": "2022-01-01",
                    "end": "2022-01-31",
                    "retries": 0,
                },
            }
        )
        run = RunDir(cfg.run_dir, cfg)
        assert run_search(cfg, run).startswith("1 scenes")
    data = run.path("scenes.parquet").read_bytes()
    _assert_clean(data, "scenes.parquet")
    assert b"https://blobs.test/c/S2_creds/" in data  # the href itself is kept
    _assert_clean(run.path("run-config.json").read_text(), "run-config.json")


def test_failures_table_and_report_hold_no_credentials(tmp_path: Path) -> None:
    run = RunDir(tmp_path, RunConfig())
    scene = make_scene(
        "s", "sentinel-2-l2a", datetime(2022, 1, 5), "EPSG:32615", (5e5, 4.6e6), 960.0
    )
    run.write_table("scenes.parquet", scenes_to_frame([scene]), stage="search")
    href = f"https://alice:hunter2@h.test/c/B04.tif?{SAS}"
    run.record_failures(
        [
            Failure("describe", "scene", "g/s", "scene_unreadable", f"cannot open {href}: 404"),
            Failure("describe", "chip", f"g/{href}", "read_error", f"B04.tif?{SAS}: got 0 bytes"),
        ]
    )
    _assert_clean(run.path("failures.parquet").read_bytes(), "failures.parquet")
    assert "https://h.test/c/B04.tif" in run.failures()["detail"].iloc[0]
    _assert_clean(write_report(tmp_path).read_text(), "report.html")
    # A failure table written before credentials were stripped is cleaned when rendered.
    raw = pd.DataFrame([{**asdict(Failure("describe", "scene", "k", "x", href))}])
    write_parquet_atomic(run.path("failures.parquet"), raw, {"stage": "failures"})
    _assert_clean(write_report(tmp_path).read_text(), "report.html")
