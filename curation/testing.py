"""Builders of synthetic scene records on real pixel grids, for tests and benchmarks.

A scene is a north-up grid in a projected CRS (usually UTM); its lon/lat footprint is the
grid's rectangle projected to EPSG:4326 (densified, split at the antimeridian), exactly as
a STAC item of such a scene would carry it. Bands, GSDs and QA come from the sensor registry.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import shapely

from terracorpus.catalogs.scene import AssetRef, Grid, SceneRecord
from terracorpus.catalogs.sensors import SensorRegistry, builtin_registry
from terracorpus.curation import geometry as geo

_REGISTRY: SensorRegistry | None = None


def _registry() -> SensorRegistry:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = builtin_registry()
    return _REGISTRY


def utm_crs(lon: float, lat: float) -> str:
    """The EPSG code of the UTM zone (north or south) holding lon/lat."""
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def make_scene(
    scene_id: str,
    sensor: str,
    when: datetime,
    crs: str,
    origin: tuple[float, float],
    size_m: float | tuple[float, float],
    *,
    cloud_cover: float | None = 10.0,
    footprint_shrink_m: float = 0.0,
    registry: SensorRegistry | None = None,
) -> SceneRecord:
    """A scene record of ``sensor`` whose grid's top-left corner is ``origin`` in ``crs``.

    Args:
        scene_id: the record id.
        sensor: a sensor name of the registry (bands and GSDs come from it).
        when: acquisition time (timezone-aware).
        crs: the scene CRS, e.g. ``"EPSG:32633"``.
        origin: (x, y) of the grid's top-left corner; snapped to the sensor's coarsest GSD.
        size_m: ground width (and height) of the grid; rounded to whole coarsest pixels.
        cloud_cover: percent, or None.
        footprint_shrink_m: valid-data footprint inset from the grid edge (nodata border).
        registry: defaults to the built-in one.
    """
    reg = registry or _registry()
    spec = reg.get(sensor)
    gsds = sorted({b.gsd for b in spec.bands})
    coarse = gsds[-1]
    width, height = (size_m, size_m) if isinstance(size_m, float | int) else size_m
    x0 = round(origin[0] / coarse) * coarse
    y0 = round(origin[1] / coarse) * coarse
    cols, rows = round(width / coarse), round(height / coarse)
    grids = tuple(
        (
            g,
            Grid(
                transform=(g, 0.0, x0, 0.0, -g, y0),
                shape=(round(rows * coarse / g), round(cols * coarse / g)),
            ),
        )
        for g in gsds
    )
    box = shapely.box(x0, y0 - rows * coarse, x0 + cols * coarse, y0)
    if footprint_shrink_m:
        box = box.buffer(-footprint_shrink_m, join_style="mitre")
    footprint = geo.crs_to_lonlat(np.array([box]), crs, densify_m=2000.0)[0]
    return SceneRecord(
        id=scene_id,
        collection=spec.collections[0],
        sensor=sensor,
        datetime=when,
        footprint_wkb=shapely.to_wkb(footprint),
        bbox=_stac_bbox(footprint),
        crs=crs,
        grids=grids,
        gsd=gsds[0],
        bands=tuple(
            (b.name, AssetRef(key=b.name, href=f"memory://{scene_id}/{b.name}.tif"))
            for b in spec.bands
        ),
        qa=(
            AssetRef(key=spec.qa.assets[0], href=f"memory://{scene_id}/qa.tif")
            if spec.qa.assets
            else None
        ),
        cloud_cover=cloud_cover,
        platform=None,
    )


def _stac_bbox(footprint: shapely.Geometry) -> tuple[float, float, float, float]:
    """STAC bbox: west > east when the footprint crosses the antimeridian."""
    parts = shapely.get_parts(footprint)
    if len(parts) > 1:
        bounds = shapely.bounds(parts)
        east_part = bounds[:, 0] > 0
        west = float(bounds[east_part, 0].min())
        east = float(bounds[~east_part, 2].max())
        return (west, float(bounds[:, 1].min()), east, float(bounds[:, 3].max()))
    minx, miny, maxx, maxy = footprint.bounds
    return (float(minx), float(miny), float(maxx), float(maxy))


def scene_at(
    scene_id: str,
    sensor: str,
    when: datetime,
    lon: float,
    lat: float,
    size_m: float,
    *,
    crs: str | None = None,
    cloud_cover: float | None = 10.0,
    footprint_shrink_m: float = 0.0,
) -> SceneRecord:
    """A scene centred on lon/lat, in ``crs`` (default: the point's UTM zone)."""
    crs = crs or utm_crs(lon, lat)
    x, y = geo.transformer(geo.LONLAT, crs).transform(lon, lat)
    origin = (x - size_m / 2, y + size_m / 2)
    return make_scene(
        scene_id,
        sensor,
        when,
        crs,
        origin,
        size_m,
        cloud_cover=cloud_cover,
        footprint_shrink_m=footprint_shrink_m,
    )
