"""The frozen scene record: what the rest of the project knows of one STAC item.

Only :mod:`terracorpus.catalogs.parse` builds these from ``pystac.Item``; nothing downstream
touches raw item dicts. Records are small, hashable and cheap to ship to Dask workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import shapely
from shapely.geometry.base import BaseGeometry

Affine6 = tuple[float, float, float, float, float, float]
"""A GDAL-order-free affine as STAC ``proj:transform`` writes it: (a, b, c, d, e, f), where
x = a*col + b*row + c and y = d*col + e*row + f, in the scene CRS."""


@dataclass(frozen=True)
class Grid:
    """A pixel grid in the scene CRS: affine transform and (height, width)."""

    transform: Affine6
    shape: tuple[int, int]

    @property
    def gsd(self) -> float:
        return abs(self.transform[0])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the grid in its CRS (north-up grids)."""
        a, _, c, _, e, f = self.transform
        h, w = self.shape
        xs = (c, c + a * w)
        ys = (f, f + e * h)
        return (min(xs), min(ys), max(xs), max(ys))


@dataclass(frozen=True)
class AssetRef:
    """Where one band's pixels are: an href (local path, http(s)://, s3://) and the 1-based
    band index inside that file (NAIP puts four bands in one asset)."""

    key: str
    href: str
    band_index: int = 1


@dataclass(frozen=True)
class BandRadiometry:
    """How one band's stored values become physical ones: physical = value * scale + offset;
    ``nodata`` is the stored value that means no data (None: none).

    ``source`` says where scale and offset came from: ``"item"`` (the item's ``raster:bands``
    / STAC 1.1 ``bands``), ``"rule:<name>"`` (a rule of the sensor registry, e.g.
    Sentinel-2's processing-baseline offset) or ``"registry"`` (the sensor's default).
    """

    scale: float
    offset: float
    nodata: float | None
    source: str


@dataclass(frozen=True)
class SceneRecord:
    """One STAC item, normalised.

    ``footprint_wkb`` is the item geometry in lon/lat (EPSG:4326) as WKB, so the record stays
    hashable; ``grids`` maps each distinct band GSD (metres) to its grid in ``crs``; ``bands``
    maps every band name of the sensor to its asset; ``qa`` is the QA/cloud asset, if any.
    ``radiometry`` maps band names to this item's scale, offset and nodata (records made
    before it existed have none: the registry's values apply, see :meth:`radiometry_of`).
    Angles are degrees; ``cloud_cover`` is a percentage 0-100, as ``eo:cloud_cover``.
    ``repairs`` says what the parser mended in the item (a self-intersecting footprint made
    valid), one sentence each; empty for an item taken as published.
    """

    id: str
    collection: str
    sensor: str
    datetime: datetime
    footprint_wkb: bytes
    bbox: tuple[float, float, float, float]
    crs: str
    grids: tuple[tuple[float, Grid], ...]
    gsd: float
    bands: tuple[tuple[str, AssetRef], ...]
    qa: AssetRef | None = None
    cloud_cover: float | None = None
    sun_elevation: float | None = None
    sun_azimuth: float | None = None
    off_nadir: float | None = None
    platform: str | None = None
    self_href: str | None = None
    api_url: str | None = None
    repairs: tuple[str, ...] = ()
    radiometry: tuple[tuple[str, BandRadiometry], ...] = ()

    def grid(self, gsd: float | None = None) -> Grid:
        """The grid at ``gsd`` (default: the finest)."""
        want = self.gsd if gsd is None else gsd
        for g, grid in self.grids:
            if abs(g - want) < 1e-6:
                return grid
        raise KeyError(
            f"scene {self.id} has no grid at {want} m; it has {[g for g, _ in self.grids]}"
        )

    def asset(self, band: str) -> AssetRef:
        for name, ref in self.bands:
            if name == band:
                return ref
        raise KeyError(f"scene {self.id} has no band {band!r}")

    def radiometry_of(self, band: str) -> BandRadiometry | None:
        """This item's radiometry of ``band``, or None when the record carries none."""
        for name, rad in self.radiometry:
            if name == band:
                return rad
        return None

    @property
    def footprint(self) -> BaseGeometry:
        """The footprint as a shapely geometry (lon/lat)."""
        geom: BaseGeometry = shapely.from_wkb(self.footprint_wkb)
        return geom
