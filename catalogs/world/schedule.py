"""The acquisition plan: which scenes exist, where, when, how cloudy and how complete.

Planning is separate from rendering: :func:`plan_world` returns frozen :class:`SceneSpec`
records, one per STAC item, from which pixels and metadata are made later. Real-world
structure is imitated on purpose:

* Sentinel-2 revisits every 5 days (2A/2B alternating) on MGRS-named tiles, one tile per UTM
  zone where a region straddles a zone boundary; Landsat 8/9 every 8 days on WRS-2 path/rows;
  NAIP once per year in summer, in quarter-quad tiles; Gaofen-2 at random dates, off-nadir.
* No optical scene while the sun is below 12° (Arctic polar night).
* In each region one summer Sentinel-2 date is repeated 5 days later over *unchanged* ground,
  both cloud-free and complete: a true near-duplicate pair. Landsat also images the first
  date of that pair, cloud-free, so the two sensors can be compared over the same ground.
* About a third of the other scenes stop at a slanted swath edge (nodata beyond it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import shapely
from pyproj import Transformer

from terracorpus.catalogs.world.fields import rng_for
from terracorpus.catalogs.world.presets import Preset
from terracorpus.catalogs.world.regions import (
    ALIGN_M,
    GAOFEN,
    LANDSAT,
    NAIP,
    REGIONS,
    S1,
    S2,
    Region,
)
from terracorpus.catalogs.world.sun import sun_position, utc_at_local_solar_time

Bounds = tuple[float, float, float, float]
Extra = tuple[tuple[str, str | int | float | tuple[str, ...]], ...]
MIN_SUN_ELEVATION = 12.0
SENSOR_OF = {
    S2: "sentinel-2-l2a",
    LANDSAT: "landsat-oli-c2-l2",
    NAIP: "naip",
    GAOFEN: "gaofen-2-pms",
    S1: "sentinel-1-rtc",
}
# Local mean solar time of acquisitions (Sentinel-1 on its descending, dawn pass).
_SOLAR_HOUR = {S2: 10.5, LANDSAT: 10.2, NAIP: 11.5, GAOFEN: 10.8, S1: 6.0}
_NO_CLOUDS = (NAIP, S1)
_MGRS_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_MGRS_COLS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_MGRS_ROWS = "ABCDEFGHJKLMNPQRSTUV"


@dataclass(frozen=True)
class Tile:
    """A scene's pixel-grid extent: a name (MGRS tile, WRS path/row, quad), CRS and bounds."""

    name: str
    epsg: int
    bounds: Bounds


@dataclass(frozen=True)
class SceneSpec:
    """Everything needed to render and describe one scene (one STAC item).

    ``footprint`` is the exterior ring of the valid-data polygon in the tile's CRS.
    ``ground_year`` and ``ground_doy`` say whose ground (land cover of that year, phenology,
    snow) is imaged; they differ from the acquisition day only for the repeat of a
    near-duplicate pair. ``cloud_target`` is the
    share of the *region* that is cloudy that day; the item's ``eo:cloud_cover`` is measured
    from the rendered mask over the scene's valid pixels.
    """

    item_id: str
    collection: str
    sensor: str
    platform: str
    region: str
    tile: Tile
    acquired: datetime
    ground_year: int
    ground_doy: int
    cloud_target: float
    cirrus: bool
    footprint: tuple[tuple[float, float], ...]
    sun_elevation: float
    sun_azimuth: float
    off_nadir: float
    extra: Extra = ()
    duplicate_of: str | None = None
    partial: bool = False

    @property
    def cloud_key(self) -> tuple[str, str, str]:
        """Scenes with the same key see the same clouds (one datatake over several tiles)."""
        return (self.region, self.collection, self.acquired.date().isoformat())


def mgrs_tile(epsg: int, x: float, y: float, lat: float) -> str:
    """The MGRS grid-zone + 100 km square name of point (x, y) of UTM zone ``epsg``."""
    zone = epsg % 100
    band = _MGRS_BANDS[min(len(_MGRS_BANDS) - 1, max(0, int((lat + 80) // 8)))]
    col = _MGRS_COLS[(zone - 1) % 3][int(x // 100000) - 1]
    row = _MGRS_ROWS[(int(y // 100000) + (5 if zone % 2 == 0 else 0)) % 20]
    return f"{zone:02d}{band}{col}{row}"


def _align_in(b: Bounds) -> Bounds:
    """The largest 60 m-aligned box inside ``b``."""
    return (
        float(np.ceil(b[0] / ALIGN_M) * ALIGN_M),
        float(np.ceil(b[1] / ALIGN_M) * ALIGN_M),
        float(np.floor(b[2] / ALIGN_M) * ALIGN_M),
        float(np.floor(b[3] / ALIGN_M) * ALIGN_M),
    )


def inner_tile(region: Region, epsg: int, part: Bounds | None = None) -> Bounds:
    """An aligned box in ``epsg`` lying inside ``part`` (default: all) of the region."""
    part = part or region.bounds
    if epsg == region.spec.epsg:
        return _align_in(part)
    poly = shapely.segmentize(shapely.box(*part), (part[2] - part[0]) / 20)
    tr = Transformer.from_crs(region.spec.epsg, epsg, always_xy=True)
    xs, ys = tr.transform(*np.asarray(poly.exterior.coords).T)
    moved = shapely.Polygon(np.column_stack([xs, ys]))
    b = moved.bounds
    for k in range(1, 40):
        m = k * ALIGN_M / 2
        cand = _align_in((b[0] + m, b[1] + m, b[2] - m, b[3] - m))
        if moved.contains(shapely.box(*cand)):
            return cand
    raise AssertionError(f"no inner tile for {region.name} in EPSG:{epsg}")


def _centre_lonlat(epsg: int, b: Bounds) -> tuple[float, float]:
    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    lon, lat = tr.transform((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    return float(lon), float(lat)


def _s2_tiles(region: Region) -> list[Tile]:
    spec = region.spec
    x0, y0, x1, y1 = region.bounds
    if spec.s2_split_lon is None:
        b = region.bounds
        _lon, lat = _centre_lonlat(spec.epsg, b)
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        return [Tile(mgrs_tile(spec.epsg, cx, cy, lat), spec.epsg, b)]
    to_utm = Transformer.from_crs(4326, spec.epsg, always_xy=True)
    xb, _ = to_utm.transform(spec.s2_split_lon, spec.lat)
    overlap = np.round(0.15 * region.size_m / ALIGN_M) * ALIGN_M
    west = _align_in((x0, y0, min(x1, xb + overlap), y1))
    east_epsg = spec.epsg + 1
    east = inner_tile(region, east_epsg, (max(x0, xb - overlap), y0, x1, y1))
    tiles = []
    for epsg, b in ((spec.epsg, west), (east_epsg, east)):
        _, lat = _centre_lonlat(epsg, b)
        name = mgrs_tile(epsg, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, lat)
        tiles.append(Tile(name, epsg, b))
    return tiles


def _revisits(p: Preset, every: int, phase: int) -> list[date]:
    days = (p.end - p.start).days
    return [p.start + timedelta(days=d) for d in range(phase % every, days + 1, every)]


def _lit(days: list[date], collection: str, lon: float, lat: float) -> list[date]:
    hour = _SOLAR_HOUR[collection]
    out = []
    for d in days:
        t = utc_at_local_solar_time(datetime(d.year, d.month, d.day), lon, hour)
        if sun_position(t, lon, lat)[0] >= MIN_SUN_ELEVATION:
            out.append(d)
    return out


def _spread(rng: np.random.Generator, free: list[date], k: int) -> set[date]:
    """``k`` of ``free`` evenly spread (plus jitter)."""
    if not k or not free:
        return set()
    idx = np.linspace(0, len(free) - 1, k + 2)[1:-1] if k < len(free) else np.arange(len(free))
    out = set()
    for i in idx:
        j = int(np.clip(round(float(i)) + int(rng.integers(-1, 2)), 0, len(free) - 1))
        out.add(free[j])
    return out


def _pick(rng: np.random.Generator, cands: list[date], n: int, must: list[date]) -> list[date]:
    """``n`` dates spread over ``cands`` (plus jitter), always including ``must``.

    The dates are shared out over the candidates' years as evenly as ``must`` allows, then
    spread within each year, so that every year of a multi-year world is imaged.
    """
    chosen = set(must)
    free = [d for d in cands if d not in chosen]
    years = sorted({d.year for d in free})
    k = max(0, n - len(chosen))
    if not years:
        return sorted(chosen)
    have = [sum(d.year == y for d in chosen) for y in years]
    want = [0] * len(years)
    for _ in range(k):  # one at a time to the year with the fewest so far (ties: random)
        load = [h + w for h, w in zip(have, want, strict=True)]
        least = [i for i, v in enumerate(load) if v == min(load)]
        want[least[int(rng.integers(len(least)))]] += 1
    for y, w in zip(years, want, strict=True):
        chosen |= _spread(rng, [d for d in free if d.year == y], w)
    return sorted(chosen)


def _nearest(cands: list[date], doy: int, year: int) -> date:
    target = date(year, 1, 1) + timedelta(days=doy - 1)
    return min(cands, key=lambda d: (abs((d - target).days), d))


def _cloud_target(
    seed: int, key: tuple[str, str, str], odds: tuple[float, float]
) -> tuple[float, bool]:
    rng = rng_for(seed, "clouds", *key)
    u = float(rng.uniform())
    if u < odds[0]:
        return 0.0, False
    cover = float(rng.uniform(0.05, 0.5)) if u < odds[1] else float(rng.uniform(0.5, 0.95))
    return cover, bool(rng.uniform() < 0.25)


def _footprint(
    rng: np.random.Generator, b: Bounds, partial: bool
) -> tuple[tuple[float, float], ...]:
    """The valid-data polygon: the whole tile, or the tile cut by a slanted swath edge."""
    rect = shapely.box(*b)
    if partial:
        theta = np.deg2rad(12.0 + rng.uniform(-4, 4))
        keep = float(rng.uniform(0.35, 0.8))
        side = 1.0 if rng.uniform() < 0.5 else -1.0
        normal = side * np.array([np.cos(theta), -np.sin(theta)])
        along = np.array([np.sin(theta), np.cos(theta)])
        gx, gy = np.meshgrid(np.linspace(b[0], b[2], 41), np.linspace(b[1], b[3], 41))
        proj = gx.ravel() * normal[0] + gy.ravel() * normal[1]
        t = float(np.quantile(proj, 1.0 - keep))
        o = t * normal
        big = 1e7
        half = shapely.Polygon(
            [
                o - big * along,
                o + big * along,
                o + big * along + big * normal,
                o - big * along + big * normal,
            ]
        )
        rect = shapely.intersection(rect, half)
    ring = shapely.geometry.polygon.orient(rect, 1.0).exterior.coords
    return tuple((round(x, 3), round(y, 3)) for x, y in ring)


@dataclass(frozen=True)
class _Ctx:
    preset: Preset
    seed: int
    region: Region


def _scene(
    ctx: _Ctx,
    collection: str,
    tile: Tile,
    day: date,
    item_id: str,
    platform: str,
    *,
    clear: bool = False,
    ground_day: date | None = None,
    off_nadir: float = 0.0,
    extra: Extra = (),
    duplicate_of: str | None = None,
) -> SceneSpec:
    region = ctx.region
    lon, lat = _centre_lonlat(tile.epsg, tile.bounds)
    rng = rng_for(ctx.seed, "scene", item_id)
    hour = _SOLAR_HOUR[collection] + (float(rng.uniform(-0.5, 1.5)) if collection == NAIP else 0.0)
    when = utc_at_local_solar_time(datetime(day.year, day.month, day.day), lon, hour)
    when += timedelta(seconds=int(rng.integers(0, 60)))
    elev, az = sun_position(when, lon, lat)
    key = (region.name, collection, day.isoformat())
    cover, cirrus = (
        (0.0, False)
        if clear or collection in _NO_CLOUDS
        else _cloud_target(ctx.seed, key, ctx.preset.clouds)
    )
    partial = not clear and collection != NAIP and bool(rng.uniform() < 0.3)
    return SceneSpec(
        item_id=item_id,
        collection=collection,
        sensor=SENSOR_OF[collection],
        platform=platform,
        region=region.name,
        tile=tile,
        acquired=when,
        ground_year=(ground_day or day).year,
        ground_doy=(ground_day or day).timetuple().tm_yday,
        cloud_target=cover,
        cirrus=cirrus,
        footprint=_footprint(rng, tile.bounds, partial),
        sun_elevation=round(elev, 6),
        sun_azimuth=round(az, 6),
        off_nadir=off_nadir,
        extra=extra,
        duplicate_of=duplicate_of,
        partial=partial,
    )


def _s2_letter(d: date) -> str:
    return "A" if (d - date(2017, 3, 7)).days // 5 % 2 == 0 else "B"


def _s2_scenes(ctx: _Ctx, clear_day: date) -> list[SceneSpec]:
    spec, p = ctx.region.spec, ctx.preset
    rng = rng_for(ctx.seed, "s2-dates", spec.name)
    cands = _lit(_revisits(p, 5, int(rng.integers(0, 5))), S2, spec.lon, spec.lat)
    repeat = clear_day + timedelta(days=5)
    days = _pick(
        rng, [d for d in cands if d not in (clear_day, repeat)], p.n_s2, [clear_day, repeat]
    )
    orbit = int(rng.integers(1, 144))
    out = []
    for tile in _s2_tiles(ctx.region):
        for d in days:
            letter = _s2_letter(d)
            item_id = f"S2{letter}_{tile.name}_{d:%Y%m%d}_0_L2A"
            dup = f"S2{_s2_letter(clear_day)}_{tile.name}_{clear_day:%Y%m%d}_0_L2A"
            is_repeat = d == repeat
            out.append(
                _scene(
                    ctx,
                    S2,
                    tile,
                    d,
                    item_id,
                    f"sentinel-2{letter.lower()}",
                    clear=d in (clear_day, repeat),
                    ground_day=clear_day if is_repeat else None,
                    extra=(
                        ("mgrs:utm_zone", tile.epsg % 100),
                        ("mgrs:latitude_band", tile.name[2]),
                        ("mgrs:grid_square", tile.name[3:]),
                        ("grid:code", f"MGRS-{tile.name}"),
                        ("sat:relative_orbit", orbit),
                        ("sat:orbit_state", "descending"),
                    ),
                    duplicate_of=dup if is_repeat else None,
                )
            )
    return out


def _landsat_scenes(ctx: _Ctx, clear_day: date) -> list[SceneSpec]:
    spec, p, region = ctx.region.spec, ctx.preset, ctx.region
    rng = rng_for(ctx.seed, "landsat-dates", spec.name)
    cands = _lit(_revisits(p, 8, int(rng.integers(0, 8))), LANDSAT, spec.lon, spec.lat)
    days = _pick(rng, [d for d in cands if d != clear_day], p.n_landsat, [clear_day])
    epsg = spec.landsat_epsg or spec.epsg
    path, row = spec.wrs
    tile = Tile(f"{path:03d}{row:03d}", epsg, inner_tile(region, epsg))
    out = []
    for d in days:
        n = 8 if (d - date(2021, 1, 1)).days // 8 % 2 == 0 else 9
        processed = d + timedelta(days=9)
        item_id = f"LC0{n}_L2SP_{path:03d}{row:03d}_{d:%Y%m%d}_{processed:%Y%m%d}_02_T1"
        extra = (
            ("landsat:wrs_type", "2"),
            ("landsat:wrs_path", f"{path:03d}"),
            ("landsat:wrs_row", f"{row:03d}"),
            ("landsat:collection_category", "T1"),
            ("landsat:collection_number", "02"),
            ("landsat:correction", "L2SP"),
            ("sat:orbit_state", "descending"),
        )
        out.append(
            _scene(
                ctx, LANDSAT, tile, d, item_id, f"landsat-{n}", clear=d == clear_day, extra=extra
            )
        )
    return out


def _naip_scenes(ctx: _Ctx) -> list[SceneSpec]:
    spec, p, region = ctx.region.spec, ctx.preset, ctx.region
    x0, _y0, _x1, y1 = region.bounds
    n = p.naip_quads
    step = region.size_m / n
    out = []
    for year in p.naip_years:
        rng = rng_for(ctx.seed, "naip", spec.name, year)
        day = date(year, 1, 1) + timedelta(days=int(rng.integers(185, 225)))
        for i in range(n):
            for j in range(n):
                b = (x0 + j * step, y1 - (i + 1) * step, x0 + (j + 1) * step, y1 - i * step)
                lon, lat = _centre_lonlat(spec.epsg, b)
                quad = ["nw", "ne", "sw", "se"][(i % 2) * 2 + (j % 2)]
                cell = f"{int(lat):02d}{int(abs(lon)):03d}{i * n + j + 1:02d}"
                zone = spec.epsg % 100
                item_id = f"{spec.naip_state}_m_{cell}_{quad}_{zone}_100_{day:%Y%m%d}"
                tile = Tile(f"{cell}_{quad}", 26900 + zone, b)
                extra = (("naip:state", spec.naip_state or ""), ("naip:year", str(year)))
                out.append(_scene(ctx, NAIP, tile, day, item_id, "naip", clear=True, extra=extra))
    return out


def _gaofen_scenes(ctx: _Ctx) -> list[SceneSpec]:
    spec, p, region = ctx.region.spec, ctx.preset, ctx.region
    rng = rng_for(ctx.seed, "gaofen-dates", spec.name)
    cands = _lit(_revisits(p, 1, 0), GAOFEN, spec.lon, spec.lat)
    days = sorted(
        set(cands[int(i)] for i in rng.choice(len(cands), size=p.n_gaofen, replace=False))
    )
    tile = Tile("pms", spec.epsg, region.bounds)
    out = []
    for k, d in enumerate(days):
        cam = 1 + k % 2
        item_id = f"GF2_PMS{cam}_E{spec.lon:.1f}_N{spec.lat:.1f}_{d:%Y%m%d}_L1A{int(rng.integers(10**9, 10**10))}"
        extra = (("sat:orbit_state", "descending"),)
        off = round(float(rng.uniform(1, 18)), 3)
        out.append(_scene(ctx, GAOFEN, tile, d, item_id, "gaofen-2", off_nadir=off, extra=extra))
    return out


def _s1_scenes(ctx: _Ctx) -> list[SceneSpec]:
    """Sentinel-1A IW GRD scenes made into RTC backscatter (12-day repeat, day or night)."""
    spec, p, region = ctx.region.spec, ctx.preset, ctx.region
    rng = rng_for(ctx.seed, "s1-dates", spec.name)
    days = _pick(rng, _revisits(p, 12, int(rng.integers(0, 12))), p.n_s1, [])
    orbit = int(rng.integers(1, 176))
    tile = Tile("iw", spec.epsg, region.bounds)
    out = []
    for d in days:
        absolute = 46000 + round((d - date(2022, 12, 1)).days * 175 / 12)
        take = int(rng.integers(0x50000, 0x60000))
        extra: Extra = (
            ("sar:instrument_mode", "IW"),
            ("sar:frequency_band", "C"),
            ("sar:center_frequency", 5.405),
            ("sar:polarizations", ("VV", "VH")),
            ("sar:product_type", "GRD"),
            ("sar:resolution_range", 20),
            ("sar:resolution_azimuth", 22),
            ("sar:observation_direction", "right"),
            ("sat:orbit_state", "descending"),
            ("sat:relative_orbit", orbit),
            ("sat:absolute_orbit", absolute),
        )
        lon, _ = _centre_lonlat(tile.epsg, tile.bounds)
        t0 = utc_at_local_solar_time(datetime(d.year, d.month, d.day), lon, _SOLAR_HOUR[S1])
        t1 = t0 + timedelta(seconds=25)
        item_id = (
            f"S1A_IW_GRDH_1SDV_{t0:%Y%m%dT%H%M%S}_{t1:%Y%m%dT%H%M%S}_{absolute:06d}_{take:06X}_rtc"
        )
        out.append(_scene(ctx, S1, tile, d, item_id, "sentinel-1a", extra=extra))
    return out


def plan_world(
    preset: Preset, seed: int, sentinel1: bool = False
) -> tuple[list[Region], list[SceneSpec]]:
    """The regions cut to ``preset``'s sizes and every scene over them, in a stable order.

    Sentinel-1 RTC scenes (every region) only with ``sentinel1``.
    """
    regions = [Region.build(spec, preset.size_of(spec.name)) for spec in REGIONS]
    scenes: list[SceneSpec] = []
    for region in regions:
        ctx = _Ctx(preset, seed, region)
        spec = region.spec
        rng = rng_for(seed, "clear-day", spec.name)
        cands = _lit(
            _revisits(preset, 5, int(rng_for(seed, "s2-dates", spec.name).integers(0, 5))),
            S2,
            spec.lon,
            spec.lat,
        )
        year = preset.start.year + int(rng.integers(0, preset.end.year - preset.start.year + 1))
        in_year = [d for d in cands[:-1] if d.year == year]
        clear_day = _nearest(in_year, spec.clear_doy + int(rng.integers(-10, 11)), year)
        if S2 in spec.collections:
            scenes += _s2_scenes(ctx, clear_day)
        if LANDSAT in spec.collections:
            scenes += _landsat_scenes(ctx, clear_day)
        if NAIP in spec.collections:
            scenes += _naip_scenes(ctx)
        if GAOFEN in spec.collections:
            scenes += _gaofen_scenes(ctx)
        if sentinel1:
            scenes += _s1_scenes(ctx)
    return regions, scenes
