"""The range server moves a GeoTIFF (its tiepoint) on the fly, and adds latency."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from terracorpus.pipelines.testing.httpserve import RangeServer


def _cog(path: Path) -> np.ndarray:
    data = np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64)
    profile = {
        "driver": "GTiff",
        "width": 64,
        "height": 64,
        "count": 1,
        "dtype": "uint16",
        "crs": "EPSG:32615",
        "transform": Affine(10.0, 0, 450_000.0, 0, -10.0, 4_650_000.0),
        "tiled": True,
        "blockxsize": 32,
        "blockysize": 32,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return data[0]


def test_shifted_geotiff_and_latency(tmp_path: Path) -> None:
    data = _cog(tmp_path / "a.tif")
    (tmp_path / "b.txt").write_text("not a tiff")
    with RangeServer(tmp_path) as server:
        url = server.shifted_url("a.tif", 1000.0, -2000.0)
        with rasterio.open(f"/vsicurl/{url}") as ds:
            assert (ds.transform.c, ds.transform.f) == (451_000.0, 4_648_000.0)
            assert (ds.read(1) == data).all()
        with rasterio.open(f"/vsicurl/{server.url('a.tif')}") as ds:
            assert ds.transform.c == 450_000.0  # the file itself is untouched
        server.configure(latency_s=0.3)
        t0 = time.perf_counter()
        with rasterio.open(f"/vsicurl/{server.shifted_url('a.tif', 1, 1)}") as ds:
            ds.read(1, window=((0, 4), (0, 4)))
        assert time.perf_counter() - t0 >= 0.3
    # a file without a tiepoint cannot be moved: 404, not wrong bytes
    with RangeServer(tmp_path) as server:
        from urllib.error import HTTPError
        from urllib.request import urlopen

        try:
            urlopen(server.shifted_url("b.txt", 1, 1), timeout=10)
            raise AssertionError("expected 404")
        except HTTPError as e:
            assert e.code == 404
