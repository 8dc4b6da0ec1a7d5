"""The change events of a built world as ``world.json`` records, measured on its truth maps."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from pyproj import Transformer

from terracorpus.catalogs.world.events import SOWING_DOY, ChangeEvent
from terracorpus.catalogs.world.landcover import CLASSES, CROP_SUMMER, CROP_WINTER, LandCover
from terracorpus.catalogs.world.regions import Region

ClassMaps = dict[int, NDArray[np.uint8]]


def _bounds(region: Region, ev: ChangeEvent) -> tuple[float, float, float, float]:
    r, c, h, w = ev.window
    res = region.res
    return (
        region.x0 + c * res,
        region.y1 - (r + h) * res,
        region.x0 + (c + w) * res,
        region.y1 - r * res,
    )


def _lonlat(region: Region, b: tuple[float, float, float, float]) -> list[float]:
    tr = Transformer.from_crs(region.spec.epsg, 4326, always_xy=True)
    w, s, e, n = tr.transform_bounds(*b, densify_pts=5)
    return [round(w, 6), round(s, 6), round(e, 6), round(n, 6)]


def _transitions(
    region: Region, ev: ChangeEvent, maps: ClassMaps, years: tuple[int, ...]
) -> list[dict[str, Any]]:
    """Area (m²) per (from class, to class) the event changes in each of its years."""
    r, c, h, w = ev.window
    out = []
    for stage in ev.stages:
        i = years.index(stage.year)
        before = maps[years[i - 1]][r : r + h, c : c + w]
        after = maps[stage.year][r : r + h, c : c + w]
        earlier = ev.patch_in(years[i - 1])
        touched = stage.patch != 0 if earlier is None else (stage.patch != 0) | (earlier != 0)
        moved = touched & (before != after)
        pairs = before[moved].astype(np.int64) * 256 + after[moved]
        codes, counts = np.unique(pairs, return_counts=True)
        for code, n in zip(codes.tolist(), counts.tolist(), strict=True):
            out.append(
                {
                    "year": stage.year,
                    "from": CLASSES[code // 256],
                    "to": CLASSES[code % 256],
                    "area_m2": round(n * region.res**2, 1),
                }
            )
    return out


def _rotation_record(region: Region, cover: LandCover, years: tuple[int, ...]) -> dict[str, Any]:
    crops = np.isin(cover.material, (CROP_SUMMER, CROP_WINTER))
    assert cover.rotation is not None
    share = float((cover.rotation.rotates & crops).sum() / max(1, int(crops.sum())))
    return {
        "kind": "crop-rotation",
        "region": region.name,
        "epsg": region.spec.epsg,
        "bounds": list(region.bounds),
        "bbox": region.lonlat_bbox(),
        "years": list(years[1:]),
        "rotating_share_of_crop_fields": round(share, 3),
        "sowing_doy": SOWING_DOY,
        "transitions": [],
        "note": "summer and winter crops swap every other crop year (from sowing on); "
        "both are cropland, so the truth does not change, the images do",
    }


def describe_events(
    region: Region, cover: LandCover, years: tuple[int, ...], maps: ClassMaps
) -> list[dict[str, Any]]:
    """``world.json`` records of a region's change events: kind, where (region CRS bounds
    and lon/lat bbox), the years its stages begin, and the class transitions it makes."""
    out = []
    for ev in cover.events:
        b = _bounds(region, ev)
        out.append(
            {
                "kind": ev.kind,
                "region": region.name,
                "epsg": region.spec.epsg,
                "bounds": list(b),
                "bbox": _lonlat(region, b),
                "years": list(ev.years),
                "transitions": _transitions(region, ev, maps, years),
            }
        )
    if cover.rotation is not None:
        out.append(_rotation_record(region, cover, years))
    return out
