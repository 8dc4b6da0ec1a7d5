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

from terracorpus.catalogs.world.events import (
    ChangeEvent,
    Rotation,
    Stage,
    Window,
    apply_events,
    crop_year,
)
from terracorpus.catalogs.world.fields import F32, fractal_noise, quantile_threshold, smooth_noise

U8 = NDArray[np.uint8]

# Land-cover classes written to truth/<region>/<year>.tif (codes are part of the world's format).
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
    """A region's ground over the years.

    ``material`` (per base pixel) is the first year's; ``events`` rewrite parts of it from
    later years on and ``rotation`` swaps crops on some fields every other crop year.
    ``texture`` is a brightness field (mean ~1) that does not change.
    """

    material: U8
    texture: F32
    years: tuple[int, ...] = ()
    events: tuple[ChangeEvent, ...] = ()
    rotation: Rotation | None = None

    @property
    def first_year(self) -> int | None:
        return self.years[0] if self.years else None

    def material_in(self, year: int | None = None, doy: int | None = None) -> U8:
        """Materials in ``year`` (default: the first) on ``doy`` (crop rotation follows the
        crop year, which starts at sowing; None: before sowing)."""
        first = self.first_year
        if first is None or year is None:
            return self.material
        out = apply_events(self.material, self.events, year)
        if self.rotation is not None:
            out = self.rotation.apply(out, crop_year(year, doy or 1) - first)
        return out

    def classes_in(self, year: int | None = None) -> U8:
        """Land-cover class codes per base pixel in ``year`` (default: the first year)."""
        mat = self.material if year is None else apply_events(self.material, self.events, year)
        out: U8 = MATERIAL_CLASS[mat]
        return out

    @property
    def classes(self) -> U8:
        """Land-cover class codes per base pixel in the first year."""
        return self.classes_in(None)


@dataclass(frozen=True)
class _Canvas:
    """Pixel-centre coordinates in metres from the north-west corner, and a generator."""

    rng: np.random.Generator
    shape: tuple[int, int]
    res: float
    years: tuple[int, ...] = ()

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


@dataclass(frozen=True)
class _Parcels:
    """Rectangular fields: material and brightness per pixel, and which fields rotate crops."""

    material: U8
    bright: F32
    rotates: NDArray[np.bool_]


def _parcels(
    c: _Canvas,
    cell_m: tuple[float, float],
    materials: tuple[int, ...],
    weights: tuple[float, ...],
    angle_deg: float = 0.0,
    rotate_share: float = 0.0,
) -> _Parcels:
    """Fields on a (rotated) grid: a random material and brightness per field; a share
    ``rotate_share`` of them alternates summer and winter crops from year to year."""
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
    rotates = c.rng.uniform(size=(nv, nu)) < rotate_share
    mat: U8 = np.broadcast_to(table[iv, iu], c.shape).copy()
    rot: NDArray[np.bool_] = np.broadcast_to(rotates[iv, iu], c.shape).copy()
    return _Parcels(mat, bright[iv, iu], rot)


def _rotation(c: _Canvas, fields: _Parcels) -> Rotation | None:
    return Rotation(fields.rotates, CROP_SUMMER, CROP_WINTER) if len(c.years) > 1 else None


def _meander_lines(
    c: _Canvas, centre_frac: float, amplitude_m: float, wavelength_m: float, shift_m: float
) -> list[F32]:
    """Row position (m) of a west-east meandering centre line per column, one per year.

    The meanders move downstream (the phase advances) so that the channel shifts by up to
    ``shift_m`` metres a year; the first line is the first year's river.
    """
    h_m, _w_m = c.size_m
    phase = float(c.rng.uniform(0, 2 * np.pi))
    xs = c.xs()[0]
    wobble = c.profile(c.shape[1], wavelength_m / 2) * amplitude_m * 0.3
    step = shift_m / amplitude_m
    return [
        h_m * centre_frac
        + amplitude_m * np.sin(2 * np.pi * xs / wavelength_m + phase + k * step)
        + wobble
        for k in range(max(1, len(c.years)))
    ]


def _blob(c: _Canvas, cy: float, cx: float, radius_m: float, rough_m: float) -> NDArray[np.bool_]:
    """A rounded patch with a noisy edge, centred at (cy, cx) metres."""
    d = np.hypot(c.ys() - cy, c.xs() - cx)
    out: NDArray[np.bool_] = d < radius_m + rough_m * c.noise(radius_m, octaves=3)
    return out


def _box(c: _Canvas, cy: float, cx: float, half_m: float, half_x_m: float | None = None) -> Window:
    """The window of a box of half sides ``half_m`` (and ``half_x_m`` across, default the
    same) centred at (cy, cx) metres, clipped to the canvas."""
    h, w = c.shape
    hx = half_m if half_x_m is None else half_x_m
    r0 = int(np.clip(round((cy - half_m) / c.res), 0, h - 1))
    c0 = int(np.clip(round((cx - hx) / c.res), 0, w - 1))
    r1 = int(np.clip(round((cy + half_m) / c.res), r0 + 1, h))
    c1 = int(np.clip(round((cx + hx) / c.res), c0 + 1, w))
    return (r0, c0, r1 - r0, c1 - c0)


def _window_noise(c: _Canvas, win: Window, feature_m: float, octaves: int) -> F32:
    return fractal_noise(c.rng, (win[2], win[3]), feature_m / c.res, octaves=octaves)


def _rows_cols(c: _Canvas, win: Window) -> tuple[F32, F32]:
    """Pixel-centre (y, x) metres of a window, as a column and a row vector."""
    r, col, h, w = win
    return c.ys()[r : r + h], c.xs()[:, col : col + w]


def _staged(years: tuple[int, ...], first: int, patches: list[U8]) -> tuple[Stage, ...]:
    """Stages from ``years[first]`` on, one a year, as many as the world has years for."""
    return tuple(
        Stage(years[first + k], p) for k, p in enumerate(patches) if first + k < len(years)
    )


def _event(c: _Canvas, kind: str, win: Window, first: int, patches: list[U8]) -> list[ChangeEvent]:
    stages = _staged(c.years, first, patches)
    return [ChangeEvent(kind, win, stages)] if stages else []


def _town_fabric(c: _Canvas, win: Window, block_m: float, street_m: float) -> U8:
    """Roofs between streets, with some trees and lawns (a built-up district)."""
    ys, xs = _rows_cols(c, win)
    streets = ((xs % block_m) < street_m) | ((ys % block_m) < street_m)
    yard = _window_noise(c, win, 40.0, 2)
    out: U8 = np.where(
        streets, ROAD, np.where(yard > 0.9, BROADLEAF, np.where(yard < -0.4, GRASS, ROOF))
    ).astype(np.uint8)
    return out


def _construction(
    c: _Canvas, mat: U8, cy: float, cx: float, half_m: float, block_m: float
) -> list[ChangeEvent]:
    """Cropland and grassland in a square become a cleared site, then a built-up district."""
    win = _box(c, cy, cx, half_m)
    r, col, h, w = win
    here = mat[r : r + h, col : col + w]
    open_land = np.isin(MATERIAL_CLASS[here], (3, 4))
    ys, xs = _rows_cols(c, win)
    site_roads = ((xs % (2 * block_m)) < 8.0) | ((ys % (2 * block_m)) < 8.0)
    site = np.where(open_land, np.where(site_roads, ROAD, SOIL), 0).astype(np.uint8)
    built = np.where(open_land, _town_fabric(c, win, block_m, 10.0), 0).astype(np.uint8)
    return _event(c, "construction", win, 1, [site, built])


def _channel_stages(
    dists: list[F32], half_width: float, outside: NDArray[np.bool_], old: int, older: int
) -> list[U8]:
    """Per later year: the channel (water) where it is now, ``old`` where it was last year,
    ``older`` where it was before; nothing where ``outside``."""
    out = []
    for k in range(1, len(dists)):
        patch = np.zeros(dists[0].shape, dtype=np.uint8)
        for j in range(k - 1):
            patch[dists[j] < half_width] = older
        patch[dists[k - 1] < half_width] = old
        patch[dists[k] < half_width] = WATER
        patch[outside] = 0
        out.append(patch)
    return out


def _river_window_rows(c: _Canvas, lines: list[F32], reach_m: float) -> Window:
    lo = float(min(line.min() for line in lines)) - reach_m
    hi = float(max(line.max() for line in lines)) + reach_m
    r0 = int(np.clip(lo / c.res, 0, c.shape[0] - 1))
    r1 = int(np.clip(np.ceil(hi / c.res), r0 + 1, c.shape[0]))
    return (r0, 0, r1 - r0, c.shape[1])


def _reservoir(
    c: _Canvas, cy: float, cx: float, radius_m: float, rough_m: float
) -> list[ChangeEvent]:
    """A dam closes: the basin is half full (the rest cleared, bare) one year, full the next."""
    win = _box(c, cy, cx, radius_m + 3 * rough_m)
    ys, xs = _rows_cols(c, win)
    edge = radius_m + rough_m * _window_noise(c, win, radius_m, 3)
    depth = edge - np.hypot(ys - cy, xs - cx)
    basin = depth > 0
    half = np.where(basin, np.where(depth > 0.5 * radius_m, WATER, SOIL), 0).astype(np.uint8)
    full = np.where(basin, WATER, 0).astype(np.uint8)
    return _event(c, "reservoir-filling", win, 1, [half, full])


def prairie(c: _Canvas) -> LandCover:
    """US corn belt: section-grid fields, gravel roads, a river with trees, a town; over the
    years a reservoir fills, the river migrates, the town grows and crops rotate."""
    h_m, w_m = c.size_m
    fields = _parcels(
        c, (805.0, 201.0), (CROP_SUMMER, CROP_WINTER, GRASS), (0.78, 0.08, 0.14), rotate_share=0.4
    )
    mat = fields.material
    ys, xs = c.ys(), c.xs()
    offset = c.rng.uniform(0, 1609, size=2)
    roads = (((xs + offset[0]) % 1609.0) < 8.0) | (((ys + offset[1]) % 1609.0) < 8.0)
    mat = np.where(roads, ROAD, mat)
    lines = _meander_lines(c, 0.62, 0.06 * h_m, 0.9 * w_m, shift_m=30.0)
    river = np.abs(ys - lines[0][None, :])
    riparian = river < 20.0 + 70.0 * (1.0 + 0.6 * c.noise(150.0, 3))
    mat = np.where(riparian, BROADLEAF, mat)
    mat = np.where(river < 14.0, WATER, mat)
    town_r = 0.18 * min(h_m, w_m)
    town = _blob(c, 0.2 * h_m, 0.25 * w_m, town_r, 60.0)
    yard = c.noise(40.0, 2)
    streets = ((xs % 90.0) < 10.0) | ((ys % 90.0) < 10.0)
    town_mat = np.where(
        streets, ROAD, np.where(yard > 0.9, BROADLEAF, np.where(yard < -0.4, GRASS, ROOF))
    )
    mat = np.where(town, town_mat, mat).astype(np.uint8)
    win = _river_window_rows(c, lines, 40.0)
    wys = ys[win[0] : win[0] + win[2]]
    dists = [np.abs(wys - line[None, :]) for line in lines]
    keep = np.zeros(dists[0].shape, dtype=bool)
    events = _event(c, "river-migration", win, 1, _channel_stages(dists, 14.0, keep, SOIL, GRASS))
    half = 0.1 * min(h_m, w_m)
    events += _construction(c, mat, 0.2 * h_m, 0.25 * w_m + town_r + half + 40.0, half, 90.0)
    events += _reservoir(c, 0.8 * h_m, 0.78 * w_m, 0.2 * min(h_m, w_m), 50.0)
    texture = fields.bright * (1.0 + 0.05 * c.noise(40.0))
    return LandCover(mat, texture.astype(np.float32), c.years, tuple(events), _rotation(c, fields))


def _braided_river(
    c: _Canvas, mat: U8, ice: NDArray[np.bool_], sea: NDArray[np.bool_]
) -> tuple[U8, list[ChangeEvent]]:
    """A north-south braided river on gravel bars whose channel shifts every year."""
    _h_m, w_m = c.size_m
    xs = c.xs()
    base_x = w_m * 0.45 + 0.08 * w_m * c.profile(c.shape[0], 400.0)
    drift = c.profile(c.shape[0], 800.0)
    lines = [base_x + 50.0 * k * drift for k in range(max(1, len(c.years)))]
    d = np.abs(xs - lines[0][:, None])
    mat = mat.copy()
    mat[(d < 90.0) & ~ice] = SOIL
    mat[(d < 35.0) & ~ice] = WATER
    lo = float(min(line.min() for line in lines)) - 100.0
    hi = float(max(line.max() for line in lines)) + 100.0
    c0 = int(np.clip(lo / c.res, 0, c.shape[1] - 1))
    c1 = int(np.clip(np.ceil(hi / c.res), c0 + 1, c.shape[1]))
    win = (0, c0, c.shape[0], c1 - c0)
    wxs = xs[:, c0:c1]
    dists = [np.abs(wxs - line[:, None]) for line in lines]
    fixed = (ice | sea)[:, c0:c1]
    patches = _channel_stages(dists, 35.0, fixed, SOIL, SOIL)
    for k, patch in enumerate(patches, start=1):  # the gravel bars move with the channel
        patch[(dists[k] < 90.0) & (patch == 0) & ~fixed] = SOIL
    return mat, _event(c, "river-migration", win, 1, patches)


def arctic(c: _Canvas) -> LandCover:
    """North Slope: sea to the north, tundra with thaw lakes, an ice field, and a braided
    river whose channel moves from year to year."""
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
    mat, events = _braided_river(c, mat, ice, ~land)
    mat[~land] = WATER
    texture = 1.0 + 0.06 * c.noise(80.0)
    return LandCover(mat, texture.astype(np.float32), c.years, tuple(events))


def _clear_cuts(c: _Canvas, forest: NDArray[np.bool_]) -> list[ChangeEvent]:
    """Forest stands cut (bare) and regrowing (grassland, young stand) the year after; the
    cuts are spread over the years so that every later year has fresh ones."""
    h_m, w_m = c.size_m
    n = len(c.years)
    events: list[ChangeEvent] = []
    rows, cols = np.nonzero(forest[:: max(1, c.shape[0] // 64), :: max(1, c.shape[1] // 64)])
    if n < 2 or rows.size == 0:
        return events
    step = max(1, c.shape[0] // 64), max(1, c.shape[1] // 64)
    for i in range(max(2, int(h_m * w_m / 3e6))):
        k = int(c.rng.integers(rows.size))
        cy, cx = (rows[k] * step[0] + 0.5) * c.res, (cols[k] * step[1] + 0.5) * c.res
        radius = float(c.rng.uniform(100.0, 200.0))
        win = _box(c, cy, cx, radius)
        ys, xs = _rows_cols(c, win)
        stand = forest[win[0] : win[0] + win[2], win[1] : win[1] + win[3]]
        cut = stand & (np.abs(ys - cy) + 0.5 * np.abs(xs - cx) < radius)  # a lozenge, as logged
        bare = np.where(cut, SOIL, 0).astype(np.uint8)
        young = np.where(cut, GRASS, 0).astype(np.uint8)
        events += _event(c, "clear-cut", win, 1 + i % (n - 1), [bare, young])
    return events


def _regrowth(c: _Canvas, mat: U8, forest: NDArray[np.bool_]) -> tuple[U8, list[ChangeEvent]]:
    """An older clearing inside the forest (grassland in the first year) whose young stand
    closes its canopy, turning to forest, in the world's last year."""
    rows, cols = np.nonzero(forest)
    if rows.size == 0 or len(c.years) < 2:
        return mat, []
    k = int(c.rng.integers(rows.size))
    cy, cx = (rows[k] + 0.5) * c.res, (cols[k] + 0.5) * c.res
    win = _box(c, cy, cx, 150.0)
    r, col, h, w = win
    ys, xs = _rows_cols(c, win)
    stand = forest[r : r + h, col : col + w] & (np.hypot(ys - cy, xs - cx) < 150.0)
    trees = np.where(stand, mat[r : r + h, col : col + w], 0).astype(np.uint8)
    mat = mat.copy()
    mat[r : r + h, col : col + w][stand] = GRASS
    return mat, _event(c, "regrowth", win, len(c.years) - 1, [trees])


def temperate(c: _Canvas) -> LandCover:
    """Lorraine/Luxembourg: forest patches, open fields, villages, a river in a valley; over
    the years stands are clear-cut and regrow, and crops rotate."""
    h_m, w_m = c.size_m
    ys, xs = c.ys(), c.xs()
    fields = _parcels(
        c,
        (150.0, 260.0),
        (CROP_WINTER, CROP_SUMMER, GRASS),
        (0.4, 0.25, 0.35),
        angle_deg=float(c.rng.uniform(10, 35)),
        rotate_share=0.6,
    )
    mat = fields.material
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
    river = np.abs(ys - _meander_lines(c, 0.5, 0.1 * h_m, 1.3 * w_m, 0.0)[0][None, :])
    mat = np.where(river < 120.0, np.where(mat == CONIFER, BROADLEAF, mat), mat)
    mat = np.where(river < 28.0, WATER, mat).astype(np.uint8)
    stands = np.isin(mat, (BROADLEAF, CONIFER)) & forest
    mat, events = _regrowth(c, mat, stands)
    events += _clear_cuts(c, np.isin(mat, (BROADLEAF, CONIFER)) & forest)
    texture = fields.bright * (1.0 + 0.05 * c.noise(50.0))
    return LandCover(mat, texture.astype(np.float32), c.years, tuple(events), _rotation(c, fields))


def _site_completion(c: _Canvas, mat: U8, sites: list[Window]) -> list[ChangeEvent]:
    """Construction sites (bare in the first year) built up the year after."""
    events = []
    for win in sites:
        r, col, h, w = win
        bare = mat[r : r + h, col : col + w] == SOIL
        built = np.where(bare, _town_fabric(c, win, 60.0, 12.0), 0).astype(np.uint8)
        events += _event(c, "construction", win, 1, [built])
    return events


def yangtze(c: _Canvas) -> LandCover:
    """Hubei plain: a large lake, a dense city, rice paddies, fish ponds, wooded hills; over
    the years the city spreads over paddies, sites are built up and crops rotate."""
    h_m, w_m = c.size_m
    ys, xs = c.ys(), c.xs()
    fields = _parcels(
        c, (60.0, 90.0), (RICE, CROP_SUMMER, GRASS), (0.7, 0.2, 0.1), 5.0, rotate_share=0.5
    )
    mat = fields.material
    hills = c.noise(400.0)
    mat = np.where(hills > quantile_threshold(hills, 0.12), BROADLEAF, mat)
    ponds = ((xs % 45.0) < 36.0) & ((ys % 35.0) < 27.0) & (c.noise(300.0, 2) > 0.8)
    mat = np.where(ponds, WATER, mat)
    city = _blob(c, 0.15 * h_m, 0.85 * w_m, 0.45 * min(h_m, w_m), 120.0)
    streets = ((xs % 120.0) < 18.0) | ((ys % 150.0) < 18.0)
    park = c.noise(150.0, 2) > 1.2
    mat = np.where(city, np.where(streets, ROAD, np.where(park, BROADLEAF, ROOF)), mat)
    sites = []
    for _ in range(max(1, int(h_m * w_m / 3e6))):
        y0, x0 = c.rng.uniform(0.3, 0.8) * h_m, c.rng.uniform(0.3, 0.8) * w_m
        site = (np.abs(ys - y0) < 80.0) & (np.abs(xs - x0) < 120.0)
        mat = np.where(site, SOIL, mat)
        sites.append(_box(c, y0, x0, 80.0, 120.0))
    lake = _blob(c, 0.85 * h_m, 0.1 * w_m, 0.42 * min(h_m, w_m), 100.0)
    mat = np.where(lake, WATER, mat).astype(np.uint8)
    events = _site_completion(c, mat, sites)
    half = 0.12 * min(h_m, w_m)
    events += _construction(c, mat, 0.5 * h_m, 0.55 * w_m, half, 60.0)
    texture = fields.bright * (1.0 + 0.05 * c.noise(40.0))
    return LandCover(mat, texture.astype(np.float32), c.years, tuple(events), _rotation(c, fields))


RECIPES: dict[str, Callable[[_Canvas], LandCover]] = {
    "prairie": prairie,
    "arctic": arctic,
    "temperate": temperate,
    "yangtze": yangtze,
}


def make_landcover(
    recipe: str,
    rng: np.random.Generator,
    shape: tuple[int, int],
    res: float,
    years: tuple[int, ...] = (),
) -> LandCover:
    """The land cover of a region over ``years``: ``recipe`` drawn on a ``shape`` grid of
    ``res`` metres, with its change events (none with fewer than two years)."""
    return RECIPES[recipe](_Canvas(rng, shape, res, tuple(years)))
