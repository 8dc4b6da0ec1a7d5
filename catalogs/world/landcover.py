"""Land-cover classes, surface materials, and the procedural land-cover map of each region.

The truth a user scores against is the *class* (water, forest, cropland, ...). Pixels are
rendered from finer *materials* (a maize field and a wheat field are both cropland but green
up at different times), each of which belongs to exactly one class. A recipe draws a material
map on the region's base grid (row 0 is the northern edge) plus a brightness texture that
varies within a material (soil moisture, canopy density, roof colour).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from terracorpus.catalogs.world.fields import F32, fractal_noise, quantile_threshold, smooth_noise

U8 = NDArray[np.uint8]

# Land-cover classes written to truth/<region>.tif (codes are part of the world's format).
CLASSES: dict[int, str] = {
    0: "nodata",
    1: "water",
    2: "forest",
    3: "cropland",
    4: "grassland",
    5: "built-up",
    6: "bare",
    7: "snow/ice",
    8: "tundra",
}

# Materials: what a pixel is made of. Index 0 is unused (nodata).
WATER, BROADLEAF, CONIFER, CROP_SUMMER, CROP_WINTER, RICE, GRASS = 1, 2, 3, 4, 5, 6, 7
ROOF, ROAD, SOIL, ROCK, SNOW, TUNDRA = 8, 9, 10, 11, 12, 13
N_MATERIALS = 14
MATERIAL_NAMES = (
    "nodata",
    "water",
    "broadleaf forest",
    "conifer forest",
    "summer crop",
    "winter crop",
    "rice paddy",
    "grass",
    "roof",
    "road",
    "bare soil",
    "rock",
    "snow/ice",
    "tundra",
)
MATERIAL_CLASS: U8 = np.array([0, 1, 2, 2, 3, 3, 3, 4, 5, 5, 6, 6, 7, 8], dtype=np.uint8)


@dataclass(frozen=True)
class LandCover:
    """A region's ground: material per base pixel and a brightness texture (mean ~1)."""

    material: U8
    texture: F32

    @property
    def classes(self) -> U8:
        """Land-cover class codes per base pixel."""
        out: U8 = MATERIAL_CLASS[self.material]
        return out


@dataclass(frozen=True)
class _Canvas:
    """Pixel-centre coordinates in metres from the north-west corner, and a generator."""

    rng: np.random.Generator
    shape: tuple[int, int]
    res: float

    @property
    def size_m(self) -> tuple[float, float]:
        return (self.shape[0] * self.res, self.shape[1] * self.res)

    def ys(self) -> F32:
        return ((np.arange(self.shape[0], dtype=np.float32) + 0.5) * self.res)[:, None]

    def xs(self) -> F32:
        return ((np.arange(self.shape[1], dtype=np.float32) + 0.5) * self.res)[None, :]

    def noise(self, feature_m: float, octaves: int = 4) -> F32:
        return fractal_noise(self.rng, self.shape, feature_m / self.res, octaves=octaves)

    def profile(self, length_px: int, feature_m: float) -> F32:
        """A smooth 1-D curve (unit variance) along an axis ``length_px`` pixels long."""
        line = smooth_noise(self.rng, (2, length_px), feature_m / self.res)[0]
        std = float(line.std())
        out: F32 = line / std if std > 0 else line
        return out


def _parcels(
    c: _Canvas,
    cell_m: tuple[float, float],
    materials: tuple[int, ...],
    weights: tuple[float, ...],
    angle_deg: float = 0.0,
) -> tuple[U8, F32]:
    """Rectangular fields on a (rotated) grid: a random material and brightness per field."""
    a = np.deg2rad(angle_deg)
    xs, ys = c.xs(), c.ys()
    span = float(sum(c.size_m)) * 2
    if angle_deg == 0:  # separable: index arrays along one axis each, broadcast on lookup
        iu = np.floor((xs + span) / cell_m[1]).astype(np.int64)
        iv = np.floor((ys + span) / cell_m[0]).astype(np.int64)
    else:
        u = xs * np.cos(a) + ys * np.sin(a)
        v = -xs * np.sin(a) + ys * np.cos(a)
        iu = np.floor((u + span) / cell_m[1]).astype(np.int64)
        iv = np.floor((v + span) / cell_m[0]).astype(np.int64)
    nu = int(iu.max()) + 1
    nv = int(iv.max()) + 1
    p = np.asarray(weights) / sum(weights)
    table = c.rng.choice(np.asarray(materials, dtype=np.uint8), size=(nv, nu), p=p)
    bright = (1.0 + 0.08 * c.rng.standard_normal((nv, nu))).astype(np.float32)
    return table[iv, iu], bright[iv, iu]


def _meander(c: _Canvas, centre_frac: float, amplitude_m: float, wavelength_m: float) -> F32:
    """Distance (m, along rows) from a west-east meandering centre line."""
    h_m, _w_m = c.size_m
    phase = float(c.rng.uniform(0, 2 * np.pi))
    xs = c.xs()[0]
    wobble = c.profile(c.shape[1], wavelength_m / 2) * amplitude_m * 0.3
    centre = h_m * centre_frac + amplitude_m * np.sin(2 * np.pi * xs / wavelength_m + phase)
    out: F32 = np.abs(c.ys() - (centre + wobble)[None, :])
    return out


def _blob(c: _Canvas, cy: float, cx: float, radius_m: float, rough_m: float) -> NDArray[np.bool_]:
    """A rounded patch with a noisy edge, centred at (cy, cx) metres."""
    d = np.hypot(c.ys() - cy, c.xs() - cx)
    out: NDArray[np.bool_] = d < radius_m + rough_m * c.noise(radius_m, octaves=3)
    return out


def prairie(c: _Canvas) -> LandCover:
    """US corn belt: section-grid fields, gravel roads, a river with trees, a town, a reservoir."""
    h_m, w_m = c.size_m
    mat, bright = _parcels(c, (805.0, 201.0), (CROP_SUMMER, CROP_WINTER, GRASS), (0.78, 0.08, 0.14))
    ys, xs = c.ys(), c.xs()
    offset = c.rng.uniform(0, 1609, size=2)
    roads = (((xs + offset[0]) % 1609.0) < 8.0) | (((ys + offset[1]) % 1609.0) < 8.0)
    mat = np.where(roads, ROAD, mat)
    river = _meander(c, 0.62, 0.06 * h_m, 0.9 * w_m)
    riparian = river < 20.0 + 70.0 * (1.0 + 0.6 * c.noise(150.0, 3))
    mat = np.where(riparian, BROADLEAF, mat)
    mat = np.where(river < 14.0, WATER, mat)
    town = _blob(c, 0.2 * h_m, 0.25 * w_m, 0.18 * min(h_m, w_m), 60.0)
    yard = c.noise(40.0, 2)
    streets = ((xs % 90.0) < 10.0) | ((ys % 90.0) < 10.0)
    town_mat = np.where(
        streets, ROAD, np.where(yard > 0.9, BROADLEAF, np.where(yard < -0.4, GRASS, ROOF))
    )
    mat = np.where(town, town_mat, mat)
    lake = _blob(c, 0.8 * h_m, 0.78 * w_m, 0.2 * min(h_m, w_m), 50.0)
    mat = np.where(lake, WATER, mat)
    texture = bright * (1.0 + 0.05 * c.noise(40.0))
    return LandCover(mat.astype(np.uint8), texture.astype(np.float32))


def arctic(c: _Canvas) -> LandCover:
    """North Slope: sea to the north, tundra with thaw lakes, a braided river, an ice field."""
    h_m, w_m = c.size_m
    ys, xs = c.ys(), c.xs()
    mat = np.full(c.shape, TUNDRA, dtype=np.uint8)
    wet = c.noise(500.0) > 0.9
    mat[wet] = GRASS
    elevation = c.noise(0.6 * h_m, 3) + 2.5 * (ys / h_m)
    land = ys > (0.28 * h_m + 0.05 * h_m * c.profile(c.shape[1], 600.0))[None, :]
    ice = elevation > quantile_threshold(elevation, 0.16)
    rock = elevation > quantile_threshold(elevation, 0.24)
    mat[rock] = ROCK
    mat[ice] = SNOW
    n_lakes = max(3, int(h_m * w_m / 4e5))
    for _ in range(n_lakes):
        cy = c.rng.uniform(0.35, 0.75) * h_m
        cx = c.rng.uniform(0, w_m)
        ry, rx = c.rng.uniform(60, 260), c.rng.uniform(40, 160)
        lake = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1.0 + 0.15 * c.noise(200.0, 2)
        mat[lake & ~rock] = WATER
    river_x = w_m * 0.45 + 0.08 * w_m * c.profile(c.shape[0], 400.0)[:, None]
    d = np.abs(xs - river_x)
    mat[(d < 90.0) & ~ice] = SOIL
    mat[(d < 35.0) & ~ice] = WATER
    mat[~land] = WATER
    texture = 1.0 + 0.06 * c.noise(80.0)
    return LandCover(mat, texture.astype(np.float32))


def temperate(c: _Canvas) -> LandCover:
    """Lorraine/Luxembourg: forest patches, open fields, villages, a river in a valley."""
    h_m, w_m = c.size_m
    ys, xs = c.ys(), c.xs()
    mat, bright = _parcels(
        c,
        (150.0, 260.0),
        (CROP_WINTER, CROP_SUMMER, GRASS),
        (0.4, 0.25, 0.35),
        angle_deg=float(c.rng.uniform(10, 35)),
    )
    woods = c.noise(900.0)
    forest = woods > quantile_threshold(woods, 0.35)
    kind = c.noise(600.0, 2)
    mat = np.where(forest, np.where(kind > 0.3, CONIFER, BROADLEAF), mat)
    for _ in range(max(2, int(h_m * w_m / 5e6))):
        cy, cx = c.rng.uniform(0.1, 0.9) * h_m, c.rng.uniform(0.1, 0.9) * w_m
        village = _blob(c, cy, cx, c.rng.uniform(120, 220), 40.0)
        garden = c.noise(30.0, 2)
        mat = np.where(village, np.where(garden > 0.5, GRASS, ROOF), mat)
        road = np.abs((ys - cy) * np.cos(0.3) - (xs - cx) * np.sin(0.3)) < 5.0
        mat = np.where(road & ~forest, ROAD, mat)
    river = _meander(c, 0.5, 0.1 * h_m, 1.3 * w_m)
    mat = np.where(river < 120.0, np.where(mat == CONIFER, BROADLEAF, mat), mat)
    mat = np.where(river < 28.0, WATER, mat)
    texture = bright * (1.0 + 0.05 * c.noise(50.0))
    return LandCover(mat.astype(np.uint8), texture.astype(np.float32))


def yangtze(c: _Canvas) -> LandCover:
    """Hubei plain: a large lake, a dense city, rice paddies, fish ponds, wooded hills."""
    h_m, w_m = c.size_m
    ys, xs = c.ys(), c.xs()
    mat, bright = _parcels(c, (60.0, 90.0), (RICE, CROP_SUMMER, GRASS), (0.7, 0.2, 0.1), 5.0)
    hills = c.noise(400.0)
    mat = np.where(hills > quantile_threshold(hills, 0.12), BROADLEAF, mat)
    ponds = ((xs % 45.0) < 36.0) & ((ys % 35.0) < 27.0) & (c.noise(300.0, 2) > 0.8)
    mat = np.where(ponds, WATER, mat)
    city = _blob(c, 0.15 * h_m, 0.85 * w_m, 0.45 * min(h_m, w_m), 120.0)
    streets = ((xs % 120.0) < 18.0) | ((ys % 150.0) < 18.0)
    park = c.noise(150.0, 2) > 1.2
    mat = np.where(city, np.where(streets, ROAD, np.where(park, BROADLEAF, ROOF)), mat)
    for _ in range(max(1, int(h_m * w_m / 3e6))):
        y0, x0 = c.rng.uniform(0.3, 0.8) * h_m, c.rng.uniform(0.3, 0.8) * w_m
        site = (np.abs(ys - y0) < 80.0) & (np.abs(xs - x0) < 120.0)
        mat = np.where(site, SOIL, mat)
    lake = _blob(c, 0.85 * h_m, 0.1 * w_m, 0.42 * min(h_m, w_m), 100.0)
    mat = np.where(lake, WATER, mat)
    texture = bright * (1.0 + 0.05 * c.noise(40.0))
    return LandCover(mat.astype(np.uint8), texture.astype(np.float32))


RECIPES: dict[str, Callable[[_Canvas], LandCover]] = {
    "prairie": prairie,
    "arctic": arctic,
    "temperate": temperate,
    "yangtze": yangtze,
}


def make_landcover(
    recipe: str, rng: np.random.Generator, shape: tuple[int, int], res: float
) -> LandCover:
    """The land cover of a region: ``recipe`` drawn on a ``shape`` grid of ``res`` metres."""
    return RECIPES[recipe](_Canvas(rng, shape, res))
