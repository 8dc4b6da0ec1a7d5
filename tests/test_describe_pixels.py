"""Pixel reading: overview choice, windowed and warped reads, bad input as failures."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine
from describe_builders import (
    build_scene,
    centres_lonlat,
    ground_reflectance,
    write_cog,
)

from terracorpus.catalogs.scene import AssetRef
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.pipelines.pixels import (
    ChipFailure,
    ChipPixels,
    ChipRequest,
    choose_overview,
    read_scene_chips,
    scene_window,
)
from terracorpus.pipelines.testing.httpserve import RangeServer

GF2 = builtin_registry().get("gaofen-2-pms")
ORIGIN = (500_000.0, 4_600_000.0)


def _req(
    chip_id: str, x0: float, y0: float, size: float, gsd: float, crs: str = "EPSG:32615"
) -> ChipRequest:
    return ChipRequest(chip_id, (x0, y0 - size, x0 + size, y0), crs, gsd)


def _ok(result: ChipPixels | ChipFailure) -> ChipPixels:
    assert isinstance(result, ChipPixels), result
    return result


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return build_scene(tmp_path_factory.mktemp("px"), "gf2-a", nodata_rows=0)


def test_choose_overview_is_coarsest_still_fine_enough() -> None:
    assert choose_overview(10.0, [2, 4, 8], 10.0) is None
    assert choose_overview(10.0, [2, 4, 8], 30.0) == 0
    assert choose_overview(10.0, [2, 4, 8], 40.0) == 1
    assert choose_overview(10.0, [2, 4, 8], 1000.0) == 2
    assert choose_overview(10.0, [], 1000.0) is None


def test_read_uses_the_chosen_overview(tmp_path: Path) -> None:
    # Overviews built with nearest: reading them differs from averaging full resolution.
    rng = np.random.default_rng(0)
    data = rng.integers(1, 10000, (1, 512, 512)).astype(np.uint16)
    t = Affine(4.0, 0, ORIGIN[0], 0, -4.0, ORIGIN[1])
    path = write_cog(tmp_path / "b.tif", data, t, "EPSG:32615", 0, overview_resampling="nearest")
    band = replace(GF2.bands[0], name="X", common_name="blue")
    sensor = replace(GF2, bands=(band,), qa=replace(GF2.qa, kind="none"))
    scene = replace(
        build_scene(tmp_path, "s", sensor=sensor), bands=(("X", AssetRef("X", str(path))),), qa=None
    )
    req = _req("c", ORIGIN[0] + 256, ORIGIN[1] - 256, 512.0, 16.0)
    chip = _ok(read_scene_chips(scene, sensor, [req])[0])
    assert chip.overview_level == 1 and chip.pixels.shape == (1, 32, 32)
    with rasterio.open(path, overview_level=1) as ovr:
        expected = ovr.read(1, window=((16, 48), (16, 48)))
    np.testing.assert_array_equal(chip.pixels[0], expected)
    full = _ok(read_scene_chips(scene, sensor, [req], use_overviews=False)[0])
    assert full.overview_level is None
    block_mean = data[0, 64:192, 64:192].reshape(32, 4, 32, 4).mean(axis=(1, 3))
    assert np.abs(full.pixels[0].astype(float) - block_mean).max() <= 1.0


def test_windowed_reads_land_on_the_ground(scene) -> None:  # type: ignore[no-untyped-def]
    reqs = [_req(f"c{i}", ORIGIN[0] + 96 * i, ORIGIN[1] - 128, 384.0, 8.0) for i in range(3)]
    chips = [_ok(c) for c in read_scene_chips(scene, GF2, reqs)]
    for req, chip in zip(reqs, chips, strict=True):
        assert chip.chip_id == req.chip_id and chip.pixels.shape == (4, 48, 48)
        assert chip.qa is not None and chip.qa.shape == (48, 48)
        lon, lat = centres_lonlat(Affine(*chip.transform), (48, 48), "EPSG:32615")
        refl = chip.pixels[2] * GF2.bands[2].scale
        assert np.abs(refl - ground_reflectance(lon, lat, 2)).mean() < 0.01
    assert scene_window(scene, reqs[1].bounds, reqs[1].crs) == (24, 32, 96, 96)


def test_warped_read_across_utm_zone_boundary(tmp_path: Path) -> None:
    # The scene is in UTM 14N just west of -96°; the chip is cut in the anchor's UTM 15N.
    scene = build_scene(tmp_path, "z14", crs="EPSG:32614", origin=(748_000.0, 4_599_500.0))
    x, y = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32615", always_xy=True).transform(
        -96.02, 41.5
    )
    req = _req("cross", x - 240, y + 240, 480.0, 8.0)
    chip = _ok(read_scene_chips(scene, GF2, [req])[0])
    assert chip.crs == "EPSG:32615" and chip.pixels.shape == (4, 60, 60)
    assert not chip.nodata.any()
    lon, lat = centres_lonlat(Affine(*chip.transform), (60, 60), "EPSG:32615")
    for b in range(4):
        truth = ground_reflectance(lon, lat, b)
        refl = chip.pixels[b] * GF2.bands[b].scale
        assert np.abs(refl - truth).mean() < 0.01
        assert np.corrcoef(refl.ravel(), truth.ravel())[0, 1] > 0.95


def test_chip_outside_and_partly_outside(scene) -> None:  # type: ignore[no-untyped-def]
    far = _req("far", ORIGIN[0] + 50_000, ORIGIN[1], 256.0, 8.0)
    edge = _req("edge", ORIGIN[0] - 128, ORIGIN[1], 256.0, 8.0)  # west half off the scene
    out = read_scene_chips(scene, GF2, [far, edge])
    assert isinstance(out[0], ChipFailure) and out[0].reason == "outside"
    chip = _ok(out[1])
    assert chip.nodata[:, :16].all() and not chip.nodata[:, 16:].any()
    assert chip.qa is not None and (chip.qa[:, :16] == 0).all()


def test_all_nodata_chip_fails(tmp_path: Path) -> None:
    scene = build_scene(tmp_path, "edge", nodata_rows=100)  # top 400 m blank
    out = read_scene_chips(scene, GF2, [_req("blank", ORIGIN[0], ORIGIN[1], 256.0, 8.0)])
    assert isinstance(out[0], ChipFailure) and out[0].reason == "no_data"


def test_missing_and_truncated_cogs_fail_every_chip(tmp_path: Path) -> None:
    scene = build_scene(tmp_path, "bad")
    reqs = [_req(f"c{i}", ORIGIN[0] + 300 * i, ORIGIN[1], 256.0, 8.0) for i in range(2)]
    (tmp_path / "bad" / "MSS1.tif").unlink()
    out = read_scene_chips(scene, GF2, reqs)
    assert all(isinstance(o, ChipFailure) and o.reason == "scene_unreadable" for o in out)
    assert "MSS1.tif" in out[0].detail  # type: ignore[union-attr]

    scene = build_scene(tmp_path, "trunc")
    path = tmp_path / "trunc" / "MSS2.tif"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # header and overviews kept, full res cut
    out = read_scene_chips(scene, GF2, reqs, use_overviews=False)
    assert all(isinstance(o, ChipFailure) for o in out)
    assert {o.reason for o in out} <= {"scene_unreadable", "read_error"}  # type: ignore[union-attr]


def test_assets_open_at_once_and_the_first_failure_in_band_order_is_named(
    tmp_path: Path,
) -> None:
    # The assets of a scene are opened concurrently; which failure is reported must not
    # depend on which open finished first.
    scene = build_scene(tmp_path, "two")
    for name in ("MSS4.tif", "MSS2.tif"):
        (tmp_path / "two" / name).unlink()
    for _ in range(3):
        out = read_scene_chips(scene, GF2, [_req("c", ORIGIN[0], ORIGIN[1], 256.0, 8.0)])
        assert isinstance(out[0], ChipFailure) and out[0].reason == "scene_unreadable"
        assert "MSS2.tif" in out[0].detail and "MSS4.tif" not in out[0].detail


def test_qa_of_wrong_shape_fails_chips(tmp_path: Path) -> None:
    scene = build_scene(tmp_path, "qa")
    t = Affine(4.0, 0, ORIGIN[0], 0, -4.0, ORIGIN[1])
    write_cog(
        tmp_path / "qa" / "qa.tif", np.full((1, 100, 384), 4, np.uint8), t, "EPSG:32615", None
    )
    out = read_scene_chips(scene, GF2, [_req("c", ORIGIN[0], ORIGIN[1], 256.0, 8.0)])
    assert isinstance(out[0], ChipFailure) and out[0].reason == "qa_shape"
    assert "wrong shape" in out[0].detail


def test_multi_band_asset_is_read_in_band_order(tmp_path: Path) -> None:
    naip = builtin_registry().get("naip")
    rng = np.random.default_rng(3)
    data = rng.integers(1, 255, (4, 128, 128)).astype(np.uint8)
    t = Affine(1.0, 0, ORIGIN[0], 0, -1.0, ORIGIN[1])
    path = write_cog(tmp_path / "image.tif", data, t, "EPSG:32615", 0)
    base = build_scene(tmp_path, "n", sensor=naip, size_m=128.0, gsd_scale=1 / 0.6)
    refs = tuple(
        (b.name, AssetRef("image", str(path), naip.band_index[b.name])) for b in naip.bands
    )
    scene = replace(base, bands=refs)
    chip = _ok(
        read_scene_chips(
            scene, naip, [_req("n", ORIGIN[0], ORIGIN[1], 64.0, 1.0)], bands=["N", "R"]
        )[0]
    )
    np.testing.assert_array_equal(chip.pixels, data[[3, 0], :64, :64])


def test_reads_over_http_ranges_match_local_and_errors_fail(tmp_path: Path) -> None:
    local = build_scene(tmp_path, "h")
    reqs = [_req(f"c{i}", ORIGIN[0] + 256 * i, ORIGIN[1] - 256, 512.0, 16.0) for i in range(2)]
    want = [_ok(c) for c in read_scene_chips(local, GF2, reqs)]
    with RangeServer(tmp_path) as server:
        remote = build_scene(tmp_path, "h", href=server.url)
        got = [_ok(c) for c in read_scene_chips(remote, GF2, reqs)]
        for a, b in zip(want, got, strict=True):
            np.testing.assert_array_equal(a.pixels, b.pixels)
            np.testing.assert_array_equal(a.qa, b.qa)  # type: ignore[arg-type]
        full_bytes = sum(p.stat().st_size for p in (tmp_path / "h").glob("*.tif"))
        assert 0 < server.bytes_sent < full_bytes
        for status in (404, 500):
            shutil.copy(tmp_path / "h" / "MSS3.tif", tmp_path / "h" / f"x{status}.tif")
            server.fail(f"h/x{status}.tif", status)
            bands = tuple(
                (n, AssetRef(n, server.url(f"h/x{status}.tif")) if n == "MSS3" else r)
                for n, r in remote.bands
            )
            out = read_scene_chips(replace(remote, bands=bands), GF2, reqs)
            assert all(isinstance(o, ChipFailure) and o.reason == "scene_unreadable" for o in out)
            assert str(status) in out[0].detail  # type: ignore[union-attr]
