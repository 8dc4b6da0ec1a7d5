"""Errors a user reads (issue #13.6): one line for an unreachable API, the real cause of a
failed read."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from describe_builders import build_scene

from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.pipelines.pixels import ChipFailure, ChipRequest, read_scene_chips

GF2 = builtin_registry().get("gaofen-2-pms")
X0, Y0 = 500_000.0, 4_600_000.0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_api_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        f"run_dir: {tmp_path / 'run'}\n"
        "search:\n"
        f"  apis: [{{url: 'http://127.0.0.1:{_closed_port()}/stac', collections: [sentinel-2-l2a]}}]\n"
        "  bbox: [10, 45, 10.1, 45.1]\n"
        "  retries: 2\n"
        "  backoff_s: 0.01\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "terracorpus.pipelines.cli", "search", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # no urllib3 "Retrying ..." warnings before it
    assert lines[0].startswith("error: STAC API") and "connection refused" in lines[0]


def test_truncated_geotiff_failure_says_why(tmp_path: Path) -> None:
    scene = build_scene(tmp_path, "t")
    path = tmp_path / "t" / "MSS1.tif"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    x, y = X0 + 1024, Y0 - 1024  # a tile past the cut
    req = ChipRequest("c", (x, y - 256, x + 256, y), "EPSG:32615", 4.0)
    (out,) = read_scene_chips(scene, GF2, [req], use_overviews=False)
    assert isinstance(out, ChipFailure) and out.reason == "read_error"
    assert "See previous exception" not in out.detail
    assert "MSS1.tif" in out.detail and "bytes, expected" in out.detail
    assert "truncated" in out.detail


def test_item_crs_contradicting_its_file_is_a_recorded_failure(tmp_path: Path) -> None:
    # #13.3: the item says UTM 16N (proj:epsg 32616), its files are in UTM 15N.
    import dataclasses

    from rasterio.crs import CRS

    from terracorpus.pipelines.pixels import SCENE_REASONS

    scene = dataclasses.replace(build_scene(tmp_path, "c"), crs="EPSG:32616")
    req = ChipRequest("c0", (X0, Y0 - 256, X0 + 256, Y0), "EPSG:32616", 4.0)
    (out,) = read_scene_chips(scene, GF2, [req], use_overviews=False)
    assert isinstance(out, ChipFailure) and out.reason == "crs_mismatch"
    assert "EPSG:32615" in out.detail and "EPSG:32616" in out.detail and "MSS1.tif" in out.detail
    assert "crs_mismatch" in SCENE_REASONS  # the whole scene's failure row, not each chip's
    # The same CRS written another way (WKT instead of an EPSG code) is no contradiction.
    wkt = dataclasses.replace(scene, crs=CRS.from_epsg(32615).to_wkt())
    req = ChipRequest("c1", (X0, Y0 - 256, X0 + 256, Y0), "EPSG:32615", 4.0)
    (ok,) = read_scene_chips(wkt, GF2, [req], use_overviews=False)
    assert not isinstance(ok, ChipFailure), ok
