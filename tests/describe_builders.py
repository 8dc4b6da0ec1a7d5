"""Builders of small real COG scenes with a known ground truth, for the describe tests.

The ground is a pair of functions of lon/lat: a reflectance pattern and a cloud mask. Every
scene samples them at its own pixel centres in its own CRS, so chips read across CRSs or at
overview levels can be checked against the truth. Files are real COGs (GDAL's COG driver,
internal overviews), one per band plus a QA raster, like Earth Search publishes them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import rasterio
import shapely
from affine import Affine

from terracorpus.catalogs.access import origin_pattern
from terracorpus.catalogs.scene import AssetRef, Grid, SceneRecord
from terracorpus.catalogs.sensors import Sensor, builtin_registry

SCL_CLEAR, SCL_WATER, SCL_CLOUD = 4, 6, 9


def ground_reflectance(lon: np.ndarray, lat: np.ndarray, band: int) -> np.ndarray:
    """A smooth, band-dependent reflectance field (0.03-0.5) over lon/lat."""
    k = 1.0 + 0.15 * band
    v = 0.25 + 0.12 * np.sin(lon * 900 * k) * np.cos(lat * 700) + 0.08 * np.sin(lat * 2300)
    return np.clip(v + 0.02 * band, 0.03, 0.5)


def ground_cloud(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """The true cloud mask: blobs covering roughly a third of the ground."""
    return (np.sin(lon * 1500) + np.cos(lat * 1900 + 0.7 * np.sin(lon * 600))) > 0.8


def ground_water(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    return np.sin(lat * 1100 - lon * 400) > 0.9


def centres_lonlat(transform: Affine, shape: tuple[int, int], crs: str) -> tuple[Any, Any]:
    h, w = shape
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    xs, ys = transform @ (cols, rows)
    tr = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return tr.transform(xs, ys)


def write_cog(
    path: Path,
    data: np.ndarray,
    transform: Affine,
    crs: str,
    nodata: float | None,
    *,
    blocksize: int = 128,
    overview_resampling: str = "average",
) -> Path:
    """Write (band, y, x) ``data`` as a COG with internal overviews."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "COG",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "blocksize": blocksize,
        "overview_resampling": overview_resampling,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def build_scene(
    root: Path,
    scene_id: str,
    *,
    sensor: str | Sensor = "gaofen-2-pms",
    crs: str = "EPSG:32615",
    origin: tuple[float, float] = (500_000.0, 4_600_000.0),
    size_m: float = 1536.0,
    when: datetime = datetime(2021, 6, 1, 17, 0),
    gsd_scale: float = 1.0,
    href: Any = None,
    blocksize: int = 128,
    nodata_rows: int = 0,
) -> SceneRecord:
    """Write one scene's band and QA COGs under ``root/scene_id`` and return its record.

    ``origin`` is the upper-left corner in ``crs``; the scene is ``size_m`` square. Band
    pixels sample :func:`ground_reflectance`, QA pixels :func:`ground_cloud` (SCL-coded, for
    ``scl`` and ``demo_mask`` sensors). ``href`` maps a local path to the href to record
    (e.g. a URL on a range server). ``nodata_rows`` blanks the top rows of every band (and
    QA) at the finest GSD, as a swath edge would.
    """
    s = builtin_registry().get(sensor) if isinstance(sensor, str) else sensor
    href = href or (lambda p: str(p))
    x0, y0 = origin
    grids: dict[float, Grid] = {}
    bands: list[tuple[str, AssetRef]] = []
    for i, band in enumerate(s.bands):
        g = band.gsd * gsd_scale
        n = round(size_m / g)
        transform = Affine(g, 0, x0, 0, -g, y0)
        lon, lat = centres_lonlat(transform, (n, n), crs)
        refl = ground_reflectance(lon, lat, i)
        dn = np.round((refl - band.offset) / band.scale).astype(band.dtype)
        if nodata_rows:
            dn[: max(1, round(nodata_rows * s.gsd * gsd_scale / g))] = band.nodata or 0
        path = write_cog(
            root / scene_id / f"{band.name}.tif",
            dn[None],
            transform,
            crs,
            band.nodata,
            blocksize=blocksize,
        )
        grids[g] = Grid(tuple(transform)[:6], (n, n))  # type: ignore[arg-type]
        bands.append((band.name, AssetRef(band.name, href(path), s.band_index.get(band.name, 1))))
    qa = None
    if s.qa.kind in ("scl", "demo_mask"):
        g = (s.qa.gsd or s.gsd) * gsd_scale
        n = round(size_m / g)
        transform = Affine(g, 0, x0, 0, -g, y0)
        lon, lat = centres_lonlat(transform, (n, n), crs)
        scl = np.where(ground_water(lon, lat), SCL_WATER, SCL_CLEAR).astype(np.uint8)
        scl[ground_cloud(lon, lat)] = SCL_CLOUD
        if nodata_rows:
            scl[: max(1, round(nodata_rows * s.gsd * gsd_scale / g))] = 0
        qpath = write_cog(
            root / scene_id / "qa.tif",
            scl[None],
            transform,
            crs,
            None,
            blocksize=blocksize,
            overview_resampling="nearest",
        )
        grids[g] = Grid(tuple(transform)[:6], (n, n))  # type: ignore[arg-type]
        qa = AssetRef(s.qa.assets[0], href(qpath))
    footprint = shapely.box(x0, y0 - size_m, x0 + size_m, y0)
    tr = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    footprint_ll = shapely.transform(
        shapely.segmentize(footprint, 64.0),
        lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1])),
    )
    return SceneRecord(
        id=scene_id,
        collection=s.collections[0],
        sensor=s.name,
        datetime=when,
        footprint_wkb=shapely.to_wkb(footprint_ll),
        bbox=tuple(footprint_ll.bounds),  # type: ignore[arg-type]
        crs=crs,
        grids=tuple(sorted(grids.items())),
        gsd=min(grids),
        bands=tuple(bands),
        qa=qa,
        cloud_cover=30.0,
        sun_elevation=55.0,
        off_nadir=None,
        platform=None,
    )


def truth_cloud_fraction(bounds: Sequence[float], crs: str, n: int = 200) -> float:
    """The true cloud share of a footprint, from the ground mask on a fine grid."""
    minx, miny, maxx, maxy = bounds
    g = (maxx - minx) / n
    lon, lat = centres_lonlat(Affine(g, 0, minx, 0, -(maxy - miny) / n, maxy), (n, n), crs)
    return float(ground_cloud(lon, lat).mean())


TEST_API = "http://stac.test/api/v1"


def trusted_access(scenes: Sequence[SceneRecord]) -> tuple[list[SceneRecord], dict[str, Any]]:
    """Scenes tagged as found by one test API, and the run-config sections that let a run
    read exactly their assets: the API with each remote asset origin declared, and the
    directories of their local files as roots (the href policy refuses everything else)."""
    hrefs = [r.href for s in scenes for _, r in (*s.bands, *([("qa", s.qa)] if s.qa else []))]
    local = [h for h in hrefs if "://" not in h]
    origins = sorted({origin_pattern(h) for h in hrefs if "://" in h})
    roots = [os.path.commonpath([os.path.dirname(h) for h in local])] if local else []
    api = {"url": TEST_API, "collections": ["any"], "asset_hosts": origins}
    sections = {"search": {"apis": [api]}, "access": {"local_roots": roots}}
    return [replace(s, api_url=TEST_API) for s in scenes], sections
