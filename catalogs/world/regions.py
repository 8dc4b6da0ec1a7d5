"""The world's regions: where they are, what grows there, which sensors see them.

A :class:`RegionSpec` is the fixed geography; a :class:`Region` is that geography cut to a
preset's size on a base grid aligned to 60 m (so every sensor grid of 1, 2, 4, 10, 20, 30
or 60 m nests in it). Row 0 of a region's grids is its northern edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyproj import Transformer

ALIGN_M = 60.0

S2 = "sentinel-2-l2a"
LANDSAT = "landsat-c2-l2"
NAIP = "naip"
GAOFEN = "gaofen-2-pms"
S1 = "sentinel-1-rtc"
COLLECTIONS = (S2, LANDSAT, NAIP, GAOFEN, S1)
NAIP_GSD = 1.0


@dataclass(frozen=True)
class RegionSpec:
    """A region's geography.

    ``snow`` gives (day of year, share of land under seasonal snow) keypoints; water freezes
    when that share reaches 0.9. ``s2_split_lon``, when set, is a UTM zone boundary the region
    straddles: Sentinel-2 then has one tile per zone, overlapping like MGRS tiles, and
    ``landsat_epsg`` puts Landsat scenes in the other zone.
    """

    name: str
    title: str
    lon: float
    lat: float
    epsg: int
    base_res: float
    recipe: str
    collections: tuple[str, ...]
    snow: tuple[tuple[int, float], ...]
    wrs: tuple[int, int]
    clear_doy: int
    landsat_epsg: int | None = None
    s2_split_lon: float | None = None
    naip_state: str | None = None


REGIONS: tuple[RegionSpec, ...] = (
    RegionSpec(
        name="iowa-prairie",
        title="Corn belt near Ames, Iowa (UTM 15N): fields, roads, a river, a town, a reservoir",
        lon=-93.55,
        lat=42.03,
        epsg=32615,
        base_res=1.0,
        recipe="prairie",
        collections=(S2, LANDSAT, NAIP),
        snow=((1, 0.7), (50, 0.6), (80, 0.0), (330, 0.0), (350, 0.5), (366, 0.7)),
        wrs=(26, 31),
        clear_doy=205,
        naip_state="ia",
    ),
    RegionSpec(
        name="north-slope",
        title="Arctic coast near Prudhoe Bay, Alaska (UTM 6N): sea, tundra, thaw lakes, ice",
        lon=-148.6,
        lat=69.75,
        epsg=32606,
        base_res=10.0,
        recipe="arctic",
        collections=(S2, LANDSAT),
        snow=(
            (1, 1.0),
            (135, 1.0),
            (152, 0.85),
            (168, 0.35),
            (185, 0.03),
            (245, 0.03),
            (262, 0.5),
            (280, 1.0),
        ),
        wrs=(73, 11),
        clear_doy=200,
    ),
    RegionSpec(
        name="moselle-utm31-32",
        title="Moselle valley at 6°E (UTM 31N/32N boundary): forest, fields, villages, a river",
        lon=6.0,
        lat=49.55,
        epsg=32631,
        base_res=10.0,
        recipe="temperate",
        collections=(S2, LANDSAT),
        snow=((1, 0.3), (35, 0.2), (55, 0.0), (340, 0.0), (360, 0.3)),
        wrs=(197, 26),
        clear_doy=215,
        landsat_epsg=32632,
        s2_split_lon=6.0,
    ),
    RegionSpec(
        name="hubei-lakes",
        title="Yangtze plain near Wuhan, China (UTM 50N): a lake, a city, rice paddies, ponds",
        lon=114.35,
        lat=30.45,
        epsg=32650,
        base_res=2.0,
        recipe="yangtze",
        collections=(S2, LANDSAT, GAOFEN),
        snow=((1, 0.0),),
        wrs=(123, 39),
        clear_doy=210,
    ),
)


@dataclass(frozen=True)
class Region:
    """A region cut to a size: its base grid in its UTM CRS."""

    spec: RegionSpec
    size_m: float
    x0: float
    y1: float

    @classmethod
    def build(cls, spec: RegionSpec, size_m: float) -> Region:
        to_utm = Transformer.from_crs(4326, spec.epsg, always_xy=True)
        cx, cy = to_utm.transform(spec.lon, spec.lat)
        x0 = np.floor((cx - size_m / 2) / ALIGN_M) * ALIGN_M
        y1 = np.floor((cy + size_m / 2) / ALIGN_M) * ALIGN_M
        return cls(spec=spec, size_m=size_m, x0=float(x0), y1=float(y1))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def crs(self) -> str:
        return f"EPSG:{self.spec.epsg}"

    @property
    def res(self) -> float:
        return self.spec.base_res

    @property
    def shape(self) -> tuple[int, int]:
        n = round(self.size_m / self.res)
        return (n, n)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y1 - self.size_m, self.x0 + self.size_m, self.y1)

    def lonlat_bbox(self) -> tuple[float, float, float, float]:
        to_ll = Transformer.from_crs(self.spec.epsg, 4326, always_xy=True)
        w, s, e, n = to_ll.transform_bounds(*self.bounds, densify_pts=21)
        return (round(w, 6), round(s, 6), round(e, 6), round(n, 6))
