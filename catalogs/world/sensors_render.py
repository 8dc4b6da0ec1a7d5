"""Rendering a scene's pixels from the region's ground truth.

The base reflectance field of a region is ``spectrum[material(x), band] * texture(x)`` on the
base grid (1-10 m). A sensor pixel is the exact area average of that field over its footprint,
computed as the material fractions of the pixel (texture-weighted) times the material spectra:
so a 30 m Landsat pixel equals the mean of the nine 10 m Sentinel-2 pixels it covers, up to
band differences and noise. Scenes in another UTM zone than their region are rendered on the
region's grid and warped (bilinear for reflectance, nearest for classes and masks).

Per scene the order is: ground reflectance, clouds/cirrus/shadow veil, warp if needed,
footprint (nodata outside), sensor noise, quantisation to the registry's dtype/scale/offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import rasterio.features
import rasterio.warp
import shapely
from numpy.typing import NDArray
from pyproj import Transformer
from rasterio.transform import Affine

from terracorpus.catalogs.sensors import Band, Sensor
from terracorpus.catalogs.world import atmosphere as atm
from terracorpus.catalogs.world import events as evt
from terracorpus.catalogs.world import landcover as lc
from terracorpus.catalogs.world import qa as qa_codes
from terracorpus.catalogs.world import spectra
from terracorpus.catalogs.world.fields import (
    F32,
    block_mean,
    fractal_noise,
    quantile_levels,
    rng_for,
)
from terracorpus.catalogs.world.regions import ALIGN_M, NAIP, NAIP_GSD, Region
from terracorpus.catalogs.world.schedule import Bounds, SceneSpec

U8 = NDArray[np.uint8]
SNOW_LEVELS = 20
ENL = 4.4
"""Equivalent number of looks of the speckle of Sentinel-1 GRD-based RTC backscatter."""
NOISE_SIGMA = {
    "sentinel-2-l2a": 0.004,
    "landsat-oli-c2-l2": 0.004,
    "gaofen-2-pms": 0.006,
    "naip": 0.008,
}


When = tuple[int, int] | None
"""Whose ground: (year, day of year), or None for the first year before sowing."""


@dataclass
class RegionGround:
    """A region's truth over the years and the caches of its derived maps and fractions."""

    region: Region
    cover: lc.LandCover
    snow_level: U8
    _fractions: dict[tuple[tuple[int, int, int, int], int, tuple[int, int], When], F32] = field(
        default_factory=dict, repr=False
    )
    _materials: dict[tuple[int, int], U8] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, region: Region, seed: int, years: tuple[int, ...] = ()) -> RegionGround:
        """The ground of ``region`` over ``years`` (its change events need two or more)."""
        rng = rng_for(seed, "landcover", region.name)
        cover = lc.make_landcover(region.spec.recipe, rng, region.shape, region.res, years)
        snow_field = fractal_noise(
            rng_for(seed, "snow", region.name), region.shape, 400.0 / region.res
        )
        return cls(region, cover, quantile_levels(snow_field, SNOW_LEVELS))

    def snow_state(self, doy: int) -> tuple[int, int]:
        """(land, water) snow thresholds on ``doy``: levels below them are snow-covered."""
        days, shares = zip(*self.region.spec.snow, strict=True)
        share = float(
            np.interp(
                doy,
                [d - 365 for d in days] + list(days) + [d + 365 for d in days],
                list(shares) * 3,
            )
        )
        return round(share * SNOW_LEVELS), SNOW_LEVELS if share >= 0.9 else 0

    def _state(self, when: When) -> When:
        """``when`` reduced to what the material map depends on: year and crop year."""
        if when is None or self.cover.first_year is None:
            return None
        year, doy = when
        return (year, evt.SOWING_DOY if doy >= evt.SOWING_DOY else 1)

    def materials(self, when: When) -> U8:
        """Material per base pixel of the whole region ``when`` (cached: a change of year or
        of crop year changes the map)."""
        if when is None or self.cover.first_year is None:
            return self.cover.material
        year, doy = when
        key = (year, evt.crop_year(year, doy))
        if key not in self._materials:
            if len(self._materials) >= 3:
                self._materials.pop(next(iter(self._materials)))
            self._materials[key] = self.cover.material_in(year, doy)
        return self._materials[key]

    def effective(
        self, window: tuple[int, int, int, int], snow: tuple[int, int], when: When = None
    ) -> U8:
        """Material per base pixel of ``window`` (row, col, h, w) ``when``, seasonal snow
        included."""
        r, c, h, w = window
        mat = self.materials(when)[r : r + h, c : c + w]
        level = self.snow_level[r : r + h, c : c + w]
        thr = np.where(mat == lc.WATER, snow[1], snow[0])
        out: U8 = np.where(level < thr, lc.SNOW, mat).astype(np.uint8)
        return out

    def texture(self, window: tuple[int, int, int, int]) -> F32:
        r, c, h, w = window
        return self.cover.texture[r : r + h, c : c + w]

    def fractions(
        self, window: tuple[int, int, int, int], f: int, snow: tuple[int, int], when: When = None
    ) -> F32:
        """(h, w, materials) texture-weighted material fractions of ``f`` x ``f`` base blocks."""
        when = self._state(when)
        key = (window, f, snow, when)
        if key in self._fractions:
            return self._fractions[key]
        finer = [
            g
            for (wd, g, s, t) in self._fractions
            if wd == window and s == snow and t == when and 1 < g < f and f % g == 0
        ]
        if finer:
            g = max(finer)
            out = block_mean(self._fractions[(window, g, snow, when)], f // g)
        else:
            eff = self.effective(window, snow, when)
            h, w = eff.shape[0] // f, eff.shape[1] // f
            block = (np.arange(eff.shape[0]) // f)[:, None] * w + (np.arange(eff.shape[1]) // f)[
                None, :
            ]
            idx = (block * lc.N_MATERIALS + eff).ravel()
            sums = np.bincount(
                idx, weights=self.texture(window).ravel(), minlength=h * w * lc.N_MATERIALS
            )
            out = (sums / (f * f)).astype(np.float32).reshape(h, w, lc.N_MATERIALS)
        if len(self._fractions) > 64:
            self._fractions.clear()
        self._fractions[key] = out
        return out


@dataclass(frozen=True)
class Raster:
    """One asset's pixels on its grid."""

    data: NDArray[np.generic]  # (bands, h, w)
    transform: Affine
    epsg: int
    nodata: float | None
    bands: tuple[Band, ...]


@dataclass(frozen=True)
class RenderedScene:
    """A scene's assets, its truth cloud mask (on the QA grid) and summary numbers."""

    assets: dict[str, Raster]
    cloud_truth: Raster | None
    cloud_cover: float | None
    percentages: dict[str, float]


def same_crs(epsg_a: int, epsg_b: int) -> bool:
    """Whether two EPSG codes give the same coordinates here.

    NAD83 and WGS 84 UTM zones (269zz, 326zz) differ by far less than a pixel (PROJ applies
    no datum shift between them without grids), so NAIP's EPSG:269zz tiles share the grid of
    the region's EPSG:326zz.
    """
    if epsg_a == epsg_b:
        return True
    zones = {
        e - 26900 if 26901 <= e <= 26923 else e - 32600 if 32601 <= e <= 32660 else -e
        for e in (epsg_a, epsg_b)
    }
    return len(zones) == 1


def _grid(b: Bounds, gsd: float) -> tuple[Affine, tuple[int, int]]:
    shape = (round((b[3] - b[1]) / gsd), round((b[2] - b[0]) / gsd))
    return Affine(gsd, 0.0, b[0], 0.0, -gsd, b[3]), shape


def _source_bounds(region: Region, spec: SceneSpec) -> Bounds:
    """The region-CRS box (aligned to 60 m) the scene is rendered on before any warp."""
    if same_crs(spec.tile.epsg, region.spec.epsg):
        return spec.tile.bounds
    tr = Transformer.from_crs(spec.tile.epsg, region.spec.epsg, always_xy=True)
    b = tr.transform_bounds(*spec.tile.bounds, densify_pts=21)
    rb = region.bounds
    m = 2 * ALIGN_M
    return (
        max(rb[0], float(np.floor((b[0] - m) / ALIGN_M) * ALIGN_M)),
        max(rb[1], float(np.floor((b[1] - m) / ALIGN_M) * ALIGN_M)),
        min(rb[2], float(np.ceil((b[2] + m) / ALIGN_M) * ALIGN_M)),
        min(rb[3], float(np.ceil((b[3] + m) / ALIGN_M) * ALIGN_M)),
    )


def _window(region: Region, b: Bounds) -> tuple[int, int, int, int]:
    res = region.res
    return (
        round((region.y1 - b[3]) / res),
        round((b[0] - region.x0) / res),
        round((b[3] - b[1]) / res),
        round((b[2] - b[0]) / res),
    )


def _surface_table(doy: int) -> NDArray[np.int64]:
    """SCL surface class (index into qa.SURFACE_SCL) of every material on ``doy``."""
    out = np.zeros(lc.N_MATERIALS, dtype=np.int64)
    for m in range(1, lc.N_MATERIALS):
        w = spectra.endmember_weights(m, doy)
        if m == lc.SNOW:
            out[m] = 3
        elif w.get("water", 0.0) >= 0.5:
            out[m] = 2
        elif m == lc.CONIFER or w.get("green", 0.0) >= spectra.VEGETATED_GREEN:
            out[m] = 0
        else:
            out[m] = 1
    return out


class SceneRenderer:
    """Renders scenes of one region; holds the region's ground and the datatake cloud masks."""

    def __init__(self, ground: RegionGround, seed: int) -> None:
        self.ground = ground
        self.seed = seed
        self._clouds: dict[tuple[object, ...], U8] = {}

    @property
    def region(self) -> Region:
        return self.ground.region

    def region_clouds(self, spec: SceneSpec, res: float) -> U8:
        """The datatake's mask codes over the whole region at ``res`` metres."""
        key = (*spec.cloud_key, res)
        if key not in self._clouds:
            n = round(self.region.size_m / res)
            rng = rng_for(self.seed, "cloud-mask", *spec.cloud_key)
            self._clouds.clear()
            self._clouds[key] = atm.cloud_mask(
                rng,
                (n, n),
                res,
                spec.cloud_target,
                spec.cirrus,
                spec.sun_elevation,
                spec.sun_azimuth,
            )
        return self._clouds[key]

    def _codes_on(self, spec: SceneSpec, sb: Bounds, res: float) -> U8:
        codes = self.region_clouds(spec, res)
        r0 = round((self.region.y1 - sb[3]) / res)
        c0 = round((sb[0] - self.region.x0) / res)
        h, w = round((sb[3] - sb[1]) / res), round((sb[2] - sb[0]) / res)
        return codes[r0 : r0 + h, c0 : c0 + w]

    def _ground(self, spec: SceneSpec, sb: Bounds, gsd: float, bands: Sequence[Band]) -> F32:
        """(bands, h, w) clear-sky surface reflectance on the source box at ``gsd``."""
        f = round(gsd / self.region.res)
        window = _window(self.region, sb)
        snow = self.ground.snow_state(spec.ground_doy)
        when = (spec.ground_year, spec.ground_doy)
        spec_m = spectra.material_response(bands, spec.ground_doy).astype(np.float32)
        if f == 1:
            eff = self.ground.effective(window, snow, when)
            refl = spec_m[eff] * self.ground.texture(window)[..., None]
        else:
            refl = self.ground.fractions(window, f, snow, when) @ spec_m
        return np.ascontiguousarray(np.moveaxis(refl, -1, 0))

    def _surface(self, spec: SceneSpec, sb: Bounds, gsd: float) -> U8:
        """SCL surface class (4, 5, 6 or 11) of the dominant material group per pixel."""
        f = round(gsd / self.region.res)
        window = _window(self.region, sb)
        snow = self.ground.snow_state(spec.ground_doy)
        table = _surface_table(spec.ground_doy)
        when = (spec.ground_year, spec.ground_doy)
        if f == 1:
            group = table[self.ground.effective(window, snow, when)]
        else:
            onehot = np.zeros((lc.N_MATERIALS, 4), dtype=np.float32)
            onehot[np.arange(1, lc.N_MATERIALS), table[1:]] = 1.0
            group = np.argmax(self.ground.fractions(window, f, snow, when) @ onehot, axis=-1)
        out: U8 = np.asarray(qa_codes.SURFACE_SCL, dtype=np.uint8)[group]
        return out

    def _veiled(
        self, spec: SceneSpec, sensor: Sensor, sb: Bounds, gsd: float, bands: Sequence[Band]
    ) -> F32:
        """Reflectance at ``gsd`` on the source box with clouds, cirrus and shadows applied."""
        refl = self._ground(spec, sb, gsd, bands)
        q = sensor.qa.gsd
        if spec.collection == NAIP or q is None or spec.cloud_target <= 0:
            return refl
        codes = self._codes_on(spec, sb, q)
        up = round(q / gsd) if q > gsd else 1
        down = round(gsd / q) if gsd > q else 1
        a_cloud, a_cirrus, shade = atm.veil(codes, up, down)
        cloud_b, cirrus_b = spectra.atmosphere_spectra(bands)
        out: F32 = (
            refl * (shade * (1.0 - a_cloud - a_cirrus))[None]
            + a_cloud[None] * cloud_b.astype(np.float32)[:, None, None]
            + a_cirrus[None] * cirrus_b.astype(np.float32)[:, None, None]
        )
        return out

    def _to_tile(
        self, spec: SceneSpec, arr: NDArray[np.generic], sb: Bounds, gsd: float, nearest: bool
    ) -> NDArray[np.generic]:
        """``arr`` (bands, h, w) on the source box moved onto the tile's grid."""
        if same_crs(spec.tile.epsg, self.region.spec.epsg):
            return arr
        src_t, _ = _grid(sb, gsd)
        dst_t, shape = _grid(spec.tile.bounds, gsd)
        dst = np.zeros((arr.shape[0], *shape), dtype=np.float32)
        rasterio.warp.reproject(
            arr.astype(np.float32),
            dst,
            src_transform=src_t,
            src_crs=self.region.crs,
            dst_transform=dst_t,
            dst_crs=f"EPSG:{spec.tile.epsg}",
            resampling=rasterio.warp.Resampling.nearest
            if nearest
            else rasterio.warp.Resampling.bilinear,
        )
        return dst.astype(arr.dtype)

    def _valid(self, spec: SceneSpec, gsd: float) -> NDArray[np.bool_]:
        t, shape = _grid(spec.tile.bounds, gsd)
        poly = shapely.Polygon(spec.footprint)
        mask: NDArray[np.bool_] = rasterio.features.geometry_mask([poly], shape, t, invert=True)
        return mask

    def _encode(
        self,
        spec: SceneSpec,
        sensor: Sensor,
        refl: F32,
        valid: NDArray[np.bool_],
        bands: Sequence[Band],
    ) -> NDArray[np.generic]:
        """Noise, then stored values in the registry's dtype; nodata outside ``valid``."""
        sigma = NOISE_SIGMA.get(sensor.name, 0.005)
        out = np.zeros(refl.shape, dtype=np.dtype(bands[0].dtype))
        for i, b in enumerate(bands):
            rng = rng_for(self.seed, "noise", spec.item_id, b.name)
            if np.issubdtype(out.dtype, np.floating):  # radar: multiplicative speckle
                speckle = rng.gamma(ENL, 1.0 / ENL, refl[i].shape).astype(np.float32)
                out[i] = np.where(
                    valid, refl[i] * speckle, b.nodata if b.nodata is not None else np.nan
                )
                continue
            noisy = refl[i] + sigma * rng.standard_normal(refl[i].shape, dtype=np.float32)
            dn = (noisy - b.offset) / b.scale  # NAIP: the registry's 1/500, as real NAIP DNs
            hi = float(np.iinfo(out.dtype).max)
            out[i] = np.where(valid, np.clip(np.round(dn), 1, hi), b.nodata or 0)
        return out

    def render(self, spec: SceneSpec, sensor: Sensor) -> RenderedScene:
        """All assets of ``spec`` as the registry describes ``sensor``'s bands and QA."""
        sb = _source_bounds(self.region, spec)
        tile_epsg = spec.tile.epsg
        by_gsd: dict[float, list[Band]] = {}
        for b in sensor.bands:
            by_gsd.setdefault(b.gsd, []).append(b)
        if spec.collection == NAIP:
            by_gsd = {NAIP_GSD: list(sensor.bands)}
        assets: dict[str, Raster] = {}
        for gsd in sorted(by_gsd):
            bands = by_gsd[gsd]
            veiled = self._veiled(spec, sensor, sb, gsd, bands)
            refl = np.asarray(self._to_tile(spec, veiled, sb, gsd, False), dtype=np.float32)
            data = self._encode(spec, sensor, refl, self._valid(spec, gsd), bands)
            t, _ = _grid(spec.tile.bounds, gsd)
            if spec.collection == NAIP:
                assets["image"] = Raster(data, t, tile_epsg, None, tuple(bands))
                continue
            for i, b in enumerate(bands):
                key = sensor.aliases(b.name)[0]
                assets[key] = Raster(data[i : i + 1], t, tile_epsg, b.nodata, (b,))
        if sensor.qa.kind == "none" or sensor.qa.gsd is None:
            return RenderedScene(assets, None, None, {})
        return self._with_qa(spec, sensor, sb, assets)

    def _with_qa(
        self, spec: SceneSpec, sensor: Sensor, sb: Bounds, assets: dict[str, Raster]
    ) -> RenderedScene:
        q = float(sensor.qa.gsd or 0)
        codes = self._codes_on(spec, sb, q)
        surface = self._surface(spec, sb, q)
        stack = self._to_tile(spec, np.stack([codes, surface]), sb, q, True)
        codes, surface = stack[0].astype(np.uint8), stack[1].astype(np.uint8)
        valid = self._valid(spec, q)
        codes = np.where(valid, codes, atm.NODATA).astype(np.uint8)
        t, _ = _grid(spec.tile.bounds, q)
        key = sensor.qa.assets[0]
        if sensor.qa.kind == "qa_pixel":
            assets[key] = Raster(qa_codes.qa_pixel(surface, codes)[None], t, spec.tile.epsg, 1, ())
        else:
            assets[key] = Raster(qa_codes.scl(surface, codes)[None], t, spec.tile.epsg, 0, ())
        n_valid = int(valid.sum())
        cloudy = int(np.isin(codes, atm.CLOUD_CODES).sum())
        cover = 100.0 * cloudy / n_valid if n_valid else 0.0
        scl = qa_codes.scl(surface, codes)
        pct = {"nodata": 100.0 * (1 - n_valid / codes.size)}
        for name, c in (
            ("vegetation", 4),
            ("not_vegetated", 5),
            ("water", 6),
            ("snow_ice", 11),
            ("cloud_shadow", 3),
            ("medium_proba_clouds", 8),
            ("high_proba_clouds", 9),
            ("thin_cirrus", 10),
        ):
            pct[name] = 100.0 * int((scl == c).sum()) / n_valid if n_valid else 0.0
        truth = Raster(codes[None], t, spec.tile.epsg, None, ())
        return RenderedScene(assets, truth, cover, pct)
