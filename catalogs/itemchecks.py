"""Checks of an untrusted item at the parse edge: footprint, bbox, CRS and grids.

A catalog is untrusted input. :mod:`terracorpus.catalogs.parse` runs every item through these
checks, so that nothing downstream meets a non-finite coordinate, an invalid footprint, a
grid that would take the machine's memory or a bbox that contradicts the geometry. Each
check raises :class:`ItemParseError` naming the item and what is wrong; the search records
that as the item's failure row (``--strict`` stops instead). One thing is repaired rather
than refused: a self-intersecting (invalid) footprint is made valid with shapely's
``make_valid`` and the repair is kept on the scene record (``SceneRecord.repairs``).

Limits:

- coordinates finite, latitudes in [-90, 90], longitudes in [-360, 360] (RFC 7946 wants
  [-180, 180]; footprints unwrapped across the antimeridian go beyond 180 and are accepted);
- a footprint with area (a point or a line is no footprint);
- bbox: 4 or 6 finite numbers, south <= north, holding the geometry up to
  :data:`BBOX_TOLERANCE_DEG` (a bbox crossing the antimeridian, west > east, is checked in
  latitude only);
- grids: finite transforms with non-zero pixel sizes, at most :data:`MAX_GRID_SIDE` pixels a
  side (the largest single files of common products are about 30,000 px: Sentinel-1 GRD;
  100,000 leaves room for aerial mosaics and refuses a typo of 10,000,000);
- the CRS known to PROJ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pyproj
import shapely
from pyproj.exceptions import CRSError
from shapely.geometry.base import BaseGeometry

from terracorpus.catalogs.errors import ItemParseError

MAX_GRID_SIDE = 100_000
"""The largest grid side (pixels) an item may declare."""
BBOX_TOLERANCE_DEG = 1e-4
"""How far (degrees) a footprint may stick out of the item's bbox (rounding of published
coordinates), plus 1 % of the bbox's extent."""

BBox = tuple[float, float, float, float]


def checked_footprint(geom: BaseGeometry, item_id: str) -> tuple[BaseGeometry, tuple[str, ...]]:
    """The footprint, valid, and the repairs made to it (none, or the ``make_valid`` one).

    Raises:
        ItemParseError: a coordinate is not finite or not lon/lat; no area before or after
            the repair.
    """
    coords = shapely.get_coordinates(geom)
    if not np.isfinite(coords).all():
        raise ItemParseError(
            f"item {item_id}: geometry has a non-finite coordinate (NaN or infinity); the "
            "item cannot be placed: fix it in the catalog"
        )
    lon, lat = coords[:, 0], coords[:, 1]
    if (np.abs(lat) > 90 + 1e-9).any() or (np.abs(lon) > 360).any():
        raise ItemParseError(
            f"item {item_id}: geometry coordinates {_extent(coords)} are not lon/lat degrees; "
            "a STAC geometry is WGS84 longitude/latitude (RFC 7946)"
        )
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise ItemParseError(
            f"item {item_id}: geometry is a {geom.geom_type}; a scene footprint is a Polygon "
            "or MultiPolygon"
        )
    repairs: tuple[str, ...] = ()
    if not geom.is_valid and lon.max() - lon.min() <= 180:
        # Footprints crossing the antimeridian are unwrapped and repaired when grouped.
        why = shapely.is_valid_reason(geom)
        geom = _polygonal(shapely.make_valid(geom))
        repairs = (f"footprint made valid with make_valid ({why})",)
    if geom.is_empty or geom.area <= 0:
        raise ItemParseError(f"item {item_id}: geometry has no area; a footprint needs one")
    return geom, repairs


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """The polygons of a geometry (make_valid may add lines or points where edges touched)."""
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    if not parts:
        return shapely.Polygon()
    merged: BaseGeometry = shapely.union_all(parts)
    return merged


def _extent(coords: Any) -> list[float]:
    return [round(float(v), 4) for v in (*coords.min(axis=0)[:2], *coords.max(axis=0)[:2])]


def checked_bbox(raw: Any, footprint: BaseGeometry, item_id: str) -> BBox:
    """The item's bbox as (west, south, east, north), or the footprint's bounds if it has none.

    Raises:
        ItemParseError: not 4 or 6 finite numbers, south above north, or the footprint
            sticks out of it.
    """
    if raw is None:
        w, s, e, n = (float(v) for v in footprint.bounds)
        return (w, s, e, n)
    if not isinstance(raw, Sequence) or isinstance(raw, str) or len(raw) not in (4, 6):
        raise ItemParseError(f"item {item_id}: bbox {raw!r} needs 4 (or 6, 3-D) numbers")
    vals = [_finite(v, item_id, "bbox") for v in raw]
    if len(vals) == 6:  # 3-D bbox: (w, s, zmin, e, n, zmax)
        vals = [vals[0], vals[1], vals[3], vals[4]]
    w, s, e, n = vals
    if s > n or abs(s) > 90 or abs(n) > 90:
        raise ItemParseError(
            f"item {item_id}: bbox {vals} is not (west, south, east, north) lon/lat degrees"
        )
    _check_holds(vals, footprint, item_id)
    return (w, s, e, n)


def _check_holds(bbox: list[float], footprint: BaseGeometry, item_id: str) -> None:
    w, s, e, n = bbox
    fw, fs, fe, fn = footprint.bounds
    tol_y = BBOX_TOLERANCE_DEG + 0.01 * (n - s)
    out = fs < s - tol_y or fn > n + tol_y
    if w <= e and fe - fw <= 180:  # neither crosses the antimeridian: check longitudes too
        tol_x = BBOX_TOLERANCE_DEG + 0.01 * (e - w)
        out = out or fw < w - tol_x or fe > e + tol_x
    if out:
        got = [round(v, 6) for v in (fw, fs, fe, fn)]
        raise ItemParseError(
            f"item {item_id}: bbox {[round(v, 6) for v in bbox]} does not hold its geometry "
            f"(bounds {got}); one of them is wrong: fix the item in the catalog"
        )


def _finite(v: Any, item_id: str, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ItemParseError(f"item {item_id}: {what} holds {v!r}, not a finite number")
    return float(v)


def checked_transform(raw: Sequence[Any], item_id: str, where: str) -> list[float]:
    """The first six numbers of a ``proj:transform``, finite, with non-zero pixel sizes."""
    vals = [_finite(v, item_id, f"{where} proj:transform") for v in raw[:6]]
    if vals[0] == 0 or vals[4] == 0:
        raise ItemParseError(f"item {item_id}: {where} proj:transform {vals} has a zero pixel size")
    return vals


def checked_shape(raw: Sequence[Any], item_id: str, where: str) -> tuple[int, int]:
    """``proj:shape`` as (rows, cols): whole numbers from 1 to :data:`MAX_GRID_SIDE`."""
    out = []
    for v in raw:
        f = _finite(v, item_id, f"{where} proj:shape")
        if f != int(f) or not 1 <= f <= MAX_GRID_SIDE:
            raise ItemParseError(
                f"item {item_id}: {where} proj:shape {list(raw)} is not rows and columns of "
                f"1 to {MAX_GRID_SIDE:,} pixels; the grid cannot be right"
            )
        out.append(int(f))
    return (out[0], out[1])


def checked_crs(crs: str, item_id: str) -> str:
    """The CRS string, if PROJ knows it."""
    if not _known_crs(crs):
        raise ItemParseError(f"item {item_id}: CRS {crs[:80]!r} is not a CRS PROJ knows")
    return crs


@lru_cache(maxsize=1024)
def _known_crs(crs: str) -> bool:
    try:
        pyproj.CRS.from_user_input(crs)
    except CRSError:
        return False
    return True
