"""The one parser: a STAC item (``pystac.Item`` or its dict) becomes a :class:`SceneRecord`.

Everything downstream reads scene records, never raw item dicts. The parser copes with the
variation of real providers (Earth Search v0/v1, Planetary Computer, USGS, the demo world):

- band assets found through the sensor registry's asset aliases, then through the band names
  an asset declares (``eo:bands`` in STAC 1.0, ``bands`` in STAC 1.1);
- the CRS from ``proj:epsg``, ``proj:code`` or ``proj:wkt2``, on the item or on a band asset;
- one grid per distinct band GSD from per-asset ``proj:transform``/``proj:shape``, else the
  item-level ones (scaled to an asset's declared ``gsd`` where that differs);
- sun angles from the ``view`` extension, else from Sentinel-2's mean solar angles;
- relative asset hrefs resolved against the item's self href;
- each band's scale, offset and nodata: the item's, else the registry's rules, else its
  default (:mod:`terracorpus.catalogs.radiometry`).

A missing required thing raises :class:`ItemParseError` naming the item and the thing.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ParamSpec
from urllib.parse import urljoin

import numpy as np
import pystac
import shapely
from shapely.geometry import shape as shape_from_geojson

from terracorpus.catalogs.errors import ItemParseError, SensorRegistryError
from terracorpus.catalogs.itemchecks import (
    checked_bbox,
    checked_crs,
    checked_footprint,
    checked_shape,
    checked_transform,
)
from terracorpus.catalogs.radiometry import scene_radiometry
from terracorpus.catalogs.scene import Affine6, AssetRef, Grid, SceneRecord
from terracorpus.catalogs.sensors import Sensor, SensorRegistry

Json = Mapping[str, Any]
P = ParamSpec("P")


def _malformed_refused(parse: Callable[P, SceneRecord]) -> Callable[P, SceneRecord]:
    """A field of the wrong type anywhere in an item (a string where a number belongs) is the
    item's :class:`ItemParseError`, never a crash of the run that reads it."""

    @functools.wraps(parse)
    def checked(*args: P.args, **kwargs: P.kwargs) -> SceneRecord:
        try:
            return parse(*args, **kwargs)
        except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as e:
            item_id = _id_of(args[0] if args else kwargs.get("item"))
            raise ItemParseError(
                f"item {item_id}: malformed field ({type(e).__name__}: {str(e)[:200]})"
            ) from None

    return checked


def _id_of(item: Any) -> str:
    try:
        return str(item.id if isinstance(item, pystac.Item) else item.get("id") or "<no id>")
    except AttributeError:
        return "<no id>"


@_malformed_refused
def scene_from_item(
    item: pystac.Item | Json, registry: SensorRegistry, api_url: str | None = None
) -> SceneRecord:
    """Normalise one STAC item into a scene record.

    Args:
        item: a ``pystac.Item`` or the item's GeoJSON dict (as a STAC API returns it).
        registry: the sensors to recognise the item's collection by.
        api_url: the STAC API the item came from, kept on the record.

    Raises:
        ItemParseError: the item's collection has no registered sensor, or a required field
            (geometry, datetime, CRS, a band's asset or grid) is missing or malformed.
    """
    d, self_href = _as_dict(item)
    item_id = str(d.get("id") or "<no id>")
    props: Json = d.get("properties") or {}
    sensor = _sensor_for(d, props, registry, item_id)
    assets: Json = d.get("assets") or {}
    band_keys = {b.name: _band_asset_key(sensor, b.name, assets, item_id) for b in sensor.bands}
    crs = _crs(props, [assets[k] for k in band_keys.values()], item_id)
    band_grids = {
        name: _band_grid(props, assets[key], sensor.band(name).gsd, item_id, key)
        for name, key in band_keys.items()
    }
    grids = _distinct_grids(band_grids.values(), item_id)
    footprint, repairs = _footprint(d, item_id)
    when = _datetime(props, item_id)
    return SceneRecord(
        id=item_id,
        collection=str(d["collection"]),
        sensor=sensor.name,
        datetime=when,
        footprint_wkb=shapely.to_wkb(footprint),
        bbox=checked_bbox(d.get("bbox"), footprint, item_id),
        crs=crs,
        grids=grids,
        gsd=min(g for g, _ in grids),
        bands=tuple(
            (name, _asset_ref(key, assets[key], sensor.band_index.get(name, 1), self_href, item_id))
            for name, key in band_keys.items()
        ),
        qa=_qa_ref(sensor, assets, self_href, item_id),
        cloud_cover=_number(props.get("eo:cloud_cover")),
        sun_elevation=_sun_elevation(props),
        sun_azimuth=_first_number(props, "view:sun_azimuth", "s2:mean_solar_azimuth"),
        off_nadir=_number(props.get("view:off_nadir")),
        platform=_str_or_none(props.get("platform")),
        self_href=self_href,
        api_url=api_url,
        repairs=repairs,
        radiometry=scene_radiometry(sensor, props, assets, band_keys, when, item_id),
    )


def grid_for_band(scene: SceneRecord, band_gsd: float) -> Grid:
    """The scene grid a band of native GSD ``band_gsd`` lies on.

    Grids are keyed by their actual pixel size; where a provider publishes a band at another
    resolution than the registry's native GSD (NAIP at 1 m instead of 0.6 m, or every band
    resampled to 10 m), the nearest grid is the band's.
    """
    return min(scene.grids, key=lambda gg: abs(math.log(gg[0] / band_gsd)))[1]


# -- item level ---------------------------------------------------------------------------
def _as_dict(item: pystac.Item | Json) -> tuple[Json, str | None]:
    """The item as a dict, and its (first) self href: what relative hrefs are relative to."""
    if isinstance(item, pystac.Item):
        return item.to_dict(include_self_link=False, transform_hrefs=False), item.get_self_href()
    if not isinstance(item, Mapping) or item.get("type") != "Feature":
        raise ItemParseError(f"not a STAC item (a GeoJSON Feature): {str(item)[:120]!r}")
    links = item.get("links") or []
    self_href = next((str(ln["href"]) for ln in links if ln.get("rel") == "self"), None)
    return item, self_href


def _sensor_for(d: Json, props: Json, registry: SensorRegistry, item_id: str) -> Sensor:
    collection = d.get("collection")
    if not collection:
        raise ItemParseError(
            f"item {item_id}: no sensor registered for collection None: the item names no "
            "'collection'; add it to the item or register the sensor (docs/sensors.md)"
        )
    try:
        return registry.for_collection(str(collection), _str_or_none(props.get("platform")))
    except SensorRegistryError as e:
        raise ItemParseError(f"item {item_id}: {e}") from None


def _datetime(props: Json, item_id: str) -> datetime:
    raw = props.get("datetime") or props.get("start_datetime")
    if not raw:
        raise ItemParseError(f"item {item_id}: no 'datetime' nor 'start_datetime' property")
    try:
        dt = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise ItemParseError(f"item {item_id}: datetime {raw!r} is not ISO 8601") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _footprint(d: Json, item_id: str) -> tuple[Any, tuple[str, ...]]:
    geometry = d.get("geometry")
    if not geometry:
        raise ItemParseError(f"item {item_id}: no geometry (a footprint is required)")
    try:
        with np.errstate(invalid="ignore"):  # a NaN coordinate is refused just below
            geom = shape_from_geojson(geometry)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ItemParseError(f"item {item_id}: geometry is not valid GeoJSON: {e}") from None
    if geom.is_empty:
        raise ItemParseError(f"item {item_id}: geometry is empty")
    return checked_footprint(geom, item_id)


def _crs(props: Json, band_assets: list[Json], item_id: str) -> str:
    for source in (props, *band_assets):
        if source.get("proj:epsg") is not None:
            return checked_crs(f"EPSG:{int(source['proj:epsg'])}", item_id)
        if source.get("proj:code"):
            return checked_crs(str(source["proj:code"]), item_id)
        if source.get("proj:wkt2"):
            return checked_crs(str(source["proj:wkt2"]), item_id)
    raise ItemParseError(
        f"item {item_id}: no CRS (neither proj:epsg, proj:code nor proj:wkt2 on the item "
        "or its band assets)"
    )


# -- bands, assets and grids --------------------------------------------------------------
def _declared_band_names(asset: Json) -> set[str]:
    """Band names an asset declares: STAC 1.0 ``eo:bands``, STAC 1.1 ``bands``."""
    names: set[str] = set()
    for key in ("eo:bands", "bands"):
        for b in asset.get(key) or []:
            if isinstance(b, Mapping) and b.get("name"):
                names.add(str(b["name"]))
    return names


def _band_asset_key(sensor: Sensor, band: str, assets: Json, item_id: str) -> str:
    aliases = sensor.aliases(band)
    for key in aliases:
        if key in assets:
            return key
    # An asset that declares this band alone (never a composite such as "visual").
    matches = [k for k, a in assets.items() if _declared_band_names(a) == {band}]
    if len(matches) == 1:
        return matches[0]
    raise ItemParseError(
        f"item {item_id}: no asset for band {band} under keys {list(aliases)} "
        f"(the item's assets are {sorted(assets)})"
    )


def _affine(raw: Any, item_id: str, where: str) -> Affine6:
    if not isinstance(raw, list | tuple) or len(raw) not in (6, 9):
        raise ItemParseError(f"item {item_id}: {where} proj:transform {raw!r} needs 6 or 9 numbers")
    a, b, c, d, e, f = checked_transform(raw, item_id, where)
    return (a, b, c, d, e, f)


def _shape(raw: Any, item_id: str, where: str) -> tuple[int, int]:
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise ItemParseError(f"item {item_id}: {where} proj:shape {raw!r} needs [rows, cols]")
    return checked_shape(raw, item_id, where)


def _asset_gsd(asset: Json) -> float | None:
    """The GSD an asset declares: its own ``gsd``, else that of its (first) band."""
    if _number(asset.get("gsd")) is not None:
        return float(asset["gsd"])
    for key in ("eo:bands", "bands"):
        for b in asset.get(key) or []:
            if isinstance(b, Mapping) and _number(b.get("gsd")) is not None:
                return float(b["gsd"])
    return None


def _band_grid(props: Json, asset: Json, band_gsd: float, item_id: str, key: str) -> Grid:
    if asset.get("proj:transform") is not None and asset.get("proj:shape") is not None:
        where = f"asset {key!r}"
        return Grid(
            _affine(asset["proj:transform"], item_id, where),
            _shape(asset["proj:shape"], item_id, where),
        )
    if props.get("proj:transform") is None or props.get("proj:shape") is None:
        raise ItemParseError(
            f"item {item_id}: no grid for asset {key!r}: neither the asset nor the item has "
            "proj:transform and proj:shape"
        )
    grid = Grid(
        _affine(props["proj:transform"], item_id, "item"),
        _shape(props["proj:shape"], item_id, "item"),
    )
    declared = _asset_gsd(asset)
    if declared is not None and not math.isclose(declared, grid.gsd, rel_tol=1e-6):
        return _rescaled(grid, declared)
    return grid


def _rescaled(grid: Grid, gsd: float) -> Grid:
    """The grid covering the same ground as ``grid`` with pixels of ``gsd``."""
    a, b, c, d, e, f = grid.transform
    factor = gsd / abs(a)
    h, w = grid.shape
    shape = (max(1, math.ceil(h / factor - 1e-9)), max(1, math.ceil(w / factor - 1e-9)))
    return Grid((a * factor, b * factor, c, d * factor, e * factor, f), shape)


def _distinct_grids(grids: Any, item_id: str) -> tuple[tuple[float, Grid], ...]:
    by_gsd: dict[float, Grid] = {}
    for grid in grids:
        gsd = round(grid.gsd, 6)
        if gsd <= 0:
            raise ItemParseError(f"item {item_id}: a band grid has pixel size {grid.gsd}")
        checked_shape(grid.shape, item_id, f"{gsd:g} m band grid")  # rescaled to the band GSD
        by_gsd.setdefault(gsd, grid)
    return tuple(sorted(by_gsd.items()))


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")  # 2+ letters: not a Windows drive


def _absolute_href(href: str, base: str | None, item_id: str, key: str) -> str:
    if _SCHEME.match(href) or os.path.isabs(href):
        return href
    if base is None:
        raise ItemParseError(
            f"item {item_id}: asset {key!r} href {href!r} is relative and the item has no "
            "self link to resolve it against"
        )
    if _SCHEME.match(base):
        return urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(base), href))


def _asset_ref(key: str, asset: Json, index: int, base: str | None, item_id: str) -> AssetRef:
    href = asset.get("href")
    if not href:
        raise ItemParseError(f"item {item_id}: asset {key!r} has no href")
    return AssetRef(key=key, href=_absolute_href(str(href), base, item_id, key), band_index=index)


def _qa_ref(sensor: Sensor, assets: Json, base: str | None, item_id: str) -> AssetRef | None:
    for key in sensor.qa.assets:
        if key in assets:
            return _asset_ref(key, assets[key], 1, base, item_id)
    return None


# -- small value helpers ------------------------------------------------------------------
def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return None if math.isnan(v) else float(v)


def _first_number(props: Json, *keys: str) -> float | None:
    for k in keys:
        v = _number(props.get(k))
        if v is not None:
            return v
    return None


def _sun_elevation(props: Json) -> float | None:
    elevation = _number(props.get("view:sun_elevation"))
    if elevation is not None:
        return elevation
    zenith = _number(props.get("s2:mean_solar_zenith"))
    return None if zenith is None else 90.0 - zenith


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)
