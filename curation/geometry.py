"""Footprint geometry: lon/lat normalisation at the antimeridian, CRS transforms, chip lattices.

Lon/lat geometries follow RFC 7946: a footprint that crosses the antimeridian is stored as a
MultiPolygon split at ±180°, every longitude in [-180, 180]. For projecting, the same footprint
is *unwrapped* first (longitudes made continuous, possibly beyond 180°), so that its pieces
become one polygon in any projected CRS. Edges are densified before every transform, so a
straight edge in one CRS stays right (curved) in the other.

Chips are cut on a *lattice* of the anchor's pixel grid: pixel columns and rows counted from
the CRS origin, shifted by the grid's sub-pixel phase. Every scene of a CRS whose pixels line
up (all Sentinel-2 tiles of a UTM zone, for example) shares one lattice, so the same ground
gets the same chip whichever of those scenes it is cut from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyproj
import shapely
import shapely.affinity
from numpy.typing import NDArray
from pyproj.exceptions import CRSError
from shapely.geometry.base import BaseGeometry

from terracorpus.catalogs.scene import Grid
from terracorpus.curation.errors import GroupingError

LONLAT = "EPSG:4326"
DENSIFY_DEGREES = 0.05
"""Longest lon/lat edge before projecting (about 5.5 km of latitude)."""

_WORLD = shapely.box(-180.0, -90.0, 180.0, 90.0)
_EAST_OF_180 = shapely.box(180.0, -90.0, 540.0, 90.0)

GeomArray = NDArray[np.object_]


@lru_cache(maxsize=256)
def transformer(src: str, dst: str) -> pyproj.Transformer:
    """A cached x/y-ordered transformer between two CRSs (raises GroupingError if unknown)."""
    try:
        return pyproj.Transformer.from_crs(src, dst, always_xy=True)
    except CRSError as e:
        raise GroupingError(f"cannot transform between {src!r} and {dst!r}: {e}") from None


def _shift_west_longitudes(coords: NDArray[np.float64]) -> NDArray[np.float64]:
    out = coords.copy()
    out[:, 0] = np.where(out[:, 0] < 0.0, out[:, 0] + 360.0, out[:, 0])
    return out


def unwrap_lonlat(geom: BaseGeometry) -> BaseGeometry:
    """Make longitudes continuous across the antimeridian (values may then exceed 180).

    A geometry whose longitude extent exceeds 180° is taken to cross the antimeridian (no
    scene footprint is half the world wide): its western-hemisphere longitudes get +360, and
    the split pieces of an RFC 7946 MultiPolygon merge back into one polygon.
    """
    minx, _, maxx, _ = geom.bounds
    if maxx - minx <= 180.0:
        return geom
    shifted = shapely.transform(geom, _shift_west_longitudes)
    if isinstance(shifted, shapely.MultiPolygon):
        merged: BaseGeometry = shapely.union_all(shapely.get_parts(shifted), grid_size=1e-9)
        return merged
    return shifted


def split_antimeridian(geom: BaseGeometry) -> BaseGeometry:
    """Cut an unwrapped lon/lat geometry at 180° into pieces with longitudes in [-180, 180]."""
    minx, _, maxx, _ = geom.bounds
    if minx >= -180.0 and maxx <= 180.0:
        return geom
    west = shapely.intersection(geom, _WORLD)
    east = shapely.affinity.translate(shapely.intersection(geom, _EAST_OF_180), xoff=-360.0)
    parts = [p for g in (west, east) for p in shapely.get_parts(g) if p.area > 0]
    if len(parts) == 1:
        single: BaseGeometry = parts[0]
        return single
    return shapely.MultiPolygon(parts)


def normalize_lonlat(geom: BaseGeometry) -> BaseGeometry:
    """The RFC 7946 form of a lon/lat footprint: valid, split at the antimeridian."""
    geom = unwrap_lonlat(geom)
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    return split_antimeridian(geom)


def lonlat_to_crs(geoms: GeomArray, crs: str) -> GeomArray:
    """Project lon/lat footprints (any form) into ``crs``, densified, in one batch."""
    unwrapped = np.array([unwrap_lonlat(g) for g in geoms], dtype=object)
    dense = shapely.segmentize(unwrapped, DENSIFY_DEGREES)
    tr = transformer(LONLAT, crs)

    def project(coords: NDArray[np.float64]) -> NDArray[np.float64]:
        x, y = tr.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    out: GeomArray = shapely.make_valid(shapely.transform(dense, project))
    return out


def crs_to_lonlat(geoms: GeomArray, crs: str, densify_m: float) -> GeomArray:
    """Project footprints from ``crs`` to normalised lon/lat (split at the antimeridian)."""
    dense = shapely.segmentize(geoms, densify_m)
    tr = transformer(crs, LONLAT)

    def project(coords: NDArray[np.float64]) -> NDArray[np.float64]:
        x, y = tr.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    lonlat: GeomArray = shapely.transform(dense, project)
    bounds = shapely.bounds(lonlat)
    odd = np.flatnonzero((bounds[:, 2] - bounds[:, 0] > 180.0) | ~shapely.is_valid(lonlat))
    for k in odd.tolist():
        lonlat[k] = normalize_lonlat(lonlat[k])
    return lonlat


@dataclass(frozen=True)
class Lattice:
    """A CRS-wide pixel lattice: pixel size and the sub-pixel phase of the grid origin.

    Lattice column ``X`` spans x in [phase_x + X*gsd, phase_x + (X+1)*gsd); lattice row ``Y``
    spans y in (phase_y - (Y+1)*gsd, phase_y - Y*gsd]: rows count downwards, as in rasters.
    """

    crs: str
    gsd: float
    phase_x: float
    phase_y: float


def _phase(v: float, gsd: float) -> float:
    p = round(math.fmod(v, gsd), 6)
    if p < 0:
        p += gsd
    return 0.0 if abs(p - gsd) < 1e-6 else p


SQUARE_TOLERANCE = 1e-4
"""Relative difference of pixel width and height still taken as square: rasterio's classic
``RGB.byte.tif`` has 300.0379 x 300.0418 m pixels (1.3e-5); over a chip of 1000 pixels the
difference stays under a tenth of a pixel."""


def lattice_of(crs: str, grid: Grid) -> Lattice:
    """The lattice a north-up grid lies on (GroupingError for rotated grids)."""
    a, b, c, d, e, f = grid.transform
    if b != 0 or d != 0 or a <= 0 or e >= 0 or abs(a + e) > SQUARE_TOLERANCE * a:
        raise GroupingError(
            f"grid {grid.transform} is not north-up with square pixels (to a relative "
            f"{SQUARE_TOLERANCE:g}); anchors need such grids"
        )
    return Lattice(crs=crs, gsd=a, phase_x=_phase(c, a), phase_y=_phase(f, a))


@lru_cache(maxsize=256)
def is_geographic(crs: str) -> bool:
    """The CRS counts in degrees (EPSG:4326 and the like); GroupingError if PROJ knows no such
    CRS."""
    try:
        return bool(pyproj.CRS.from_user_input(crs).is_geographic)
    except CRSError as e:
        raise GroupingError(f"unknown CRS {crs[:80]!r}: {e}") from None


@dataclass(frozen=True)
class ChipCells:
    """The whole chips of one grid on its lattice: lattice chip indices and grid windows.

    ``ci``/``cj`` are chip row/column indices on the lattice (chip ``(ci, cj)`` starts at
    lattice row ``ci*size`` and column ``cj*size``); ``row_off``/``col_off`` are the same
    chips' offsets in the grid's own pixels; ``size`` is the chip side in pixels.
    """

    ci: NDArray[np.int64]
    cj: NDArray[np.int64]
    row_off: NDArray[np.int64]
    col_off: NDArray[np.int64]
    size: int

    def take(self, idx: NDArray[np.int64]) -> ChipCells:
        """The chips at positions ``idx``."""
        return ChipCells(
            self.ci[idx], self.cj[idx], self.row_off[idx], self.col_off[idx], self.size
        )


def _chip_ranges(lattice: Lattice, grid: Grid, size: int) -> tuple[int, int, range, range]:
    """The grid origin on the lattice (ox, oy) and the lattice chip rows and columns inside."""
    _, _, c, _, _, f = grid.transform
    h, w = grid.shape
    ox = round((c - lattice.phase_x) / lattice.gsd)
    oy = round((lattice.phase_y - f) / lattice.gsd)
    return ox, oy, range(-(-oy // size), (oy + h) // size), range(-(-ox // size), (ox + w) // size)


def chip_count(lattice: Lattice, grid: Grid, size: int) -> int:
    """How many chips :func:`chip_cells` gives, without making them."""
    _, _, rows, cols = _chip_ranges(lattice, grid, size)
    return len(rows) * len(cols)


def chip_cells(lattice: Lattice, grid: Grid, size: int) -> ChipCells:
    """Every chip of ``size`` pixels that lies wholly inside ``grid``, on the lattice."""
    ox, oy, rows, cols = _chip_ranges(lattice, grid, size)
    i = np.arange(rows.start, rows.stop, dtype=np.int64)
    j = np.arange(cols.start, cols.stop, dtype=np.int64)
    ci, cj = (a.ravel() for a in np.meshgrid(i, j, indexing="ij"))
    return ChipCells(ci=ci, cj=cj, row_off=ci * size - oy, col_off=cj * size - ox, size=size)


def chip_boxes(lattice: Lattice, cells: ChipCells) -> GeomArray:
    """The chips as boxes in the lattice CRS."""
    step = cells.size * lattice.gsd
    x0 = lattice.phase_x + cells.cj * step
    y1 = lattice.phase_y - cells.ci * step
    boxes: GeomArray = shapely.box(x0, y1 - step, x0 + step, y1)
    return boxes


def coverage(chips: GeomArray, footprints: GeomArray) -> NDArray[np.float64]:
    """Fraction of each chip's area inside the paired footprint (element-wise, same CRS).

    Chips are axis-aligned boxes in the CRS. Those wholly inside their footprint (the common
    case; footprints should be prepared) skip the clipping; the others are clipped.
    """
    chips = np.asarray(chips, dtype=object)
    footprints = np.asarray(footprints, dtype=object)
    out = np.ones(len(chips), dtype=np.float64)
    if len(chips) == 0:
        return out
    cb, fb = shapely.bounds(chips), shapely.bounds(footprints)
    apart = (
        (cb[:, 0] >= fb[:, 2])
        | (cb[:, 2] <= fb[:, 0])
        | (cb[:, 1] >= fb[:, 3])
        | (cb[:, 3] <= fb[:, 1])
    )
    out[apart] = 0.0
    near = np.flatnonzero(~apart)
    edge = near[~shapely.contains_properly(footprints[near], chips[near])]
    if len(edge):
        bounds = cb[edge]
        areas = (bounds[:, 2] - bounds[:, 0]) * (bounds[:, 3] - bounds[:, 1])
        clipped = [
            shapely.area(shapely.clip_by_rect(fp, *b))
            for fp, b in zip(footprints[edge], bounds.tolist(), strict=True)
        ]
        out[edge] = np.asarray(clipped, dtype=np.float64) / areas
    return np.clip(out, 0.0, 1.0)
