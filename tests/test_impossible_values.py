"""A GeoTIFF that decodes into impossible reflectance is a recorded failure, in describe and
materialize alike, not pixels in the corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from describe_builders import build_scene, write_cog

from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.curation.physical import impossible_reflectance
from terracorpus.pipelines.pixels import ChipFailure, ChipPixels, ChipRequest, read_scene_chips

GF2 = "gaofen-2-pms"
CHIP = (500_000.0, 4_599_744.0, 500_256.0, 4_600_000.0)


def _check(values: list[float], wavelengths: tuple[float, ...] = (0.66,)) -> str | None:
    px = np.array(values, dtype=np.float32).reshape(len(wavelengths), 1, -1)
    valid = np.ones(px.shape[1:], dtype=bool)
    n = len(wavelengths)
    return impossible_reflectance(px, [1.0] * n, [0.0] * n, wavelengths, valid)


def test_real_reflectance_passes_and_impossible_values_are_named() -> None:
    assert _check([0.0, 0.1, 0.5, 1.2, -0.05] * 40) is None  # snow, cloud, dark water
    assert _check([0.1] * 199 + [5.0]) is None  # one odd pixel in 200: under 1 %
    why = _check([0.1] * 150 + [3.5] * 50)
    assert why is not None and "50 of 200" in why and "[-0.5, 2]" in why and "max 3.5" in why
    assert "-0.9" in (_check([-0.9] * 10) or "")


def test_thermal_and_radar_bands_are_not_reflectance() -> None:
    assert _check([300.0] * 10, (10.9,)) is None  # Kelvin
    assert _check([-25.0] * 10, (55465.76,)) is None  # dB


def test_nodata_pixels_are_not_judged() -> None:
    px = np.full((1, 1, 10), 9.0, dtype=np.float32)
    assert impossible_reflectance(px, [1.0], [0.0], [0.66], np.zeros((1, 10), bool)) is None


@pytest.mark.parametrize(
    ("resampling", "overviews"),
    [("average", True), ("nearest", False)],
    ids=["describe", "materialize"],
)
def test_a_corrupt_but_decodable_geotiff_fails_as_impossible_values(
    tmp_path: Path, resampling: str, overviews: bool
) -> None:
    scene = build_scene(tmp_path, "corrupt")
    band = tmp_path / "corrupt" / "MSS3.tif"
    with rasterio.open(band) as src:
        data, transform, crs, nodata = src.read(), src.transform, src.crs.to_string(), src.nodata
    # stored 40,000: reflectance 4.0 (scale 1e-4): a valid uint16, decodes fine, cannot be real
    write_cog(band, np.full_like(data, 40_000), transform, crs, nodata)
    sensor = builtin_registry().get(GF2)
    (got,) = read_scene_chips(
        scene, sensor, [ChipRequest("g/corrupt", CHIP, "EPSG:32615", 4.0)],
        resampling=resampling, use_overviews=overviews,
    )  # fmt: skip
    assert isinstance(got, ChipFailure), got
    assert got.reason == "impossible_values" and "MSS3" in got.detail and "4" in got.detail
    # the same scene without the damage reads as before
    (ok,) = read_scene_chips(
        build_scene(tmp_path / "fine", "fine"), sensor,
        [ChipRequest("g/fine", CHIP, "EPSG:32615", 4.0)],
    )  # fmt: skip
    assert isinstance(ok, ChipPixels)
