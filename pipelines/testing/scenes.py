"""A synthetic catalog of many scenes, as a year of real acquisitions looks.

:func:`synthetic_scenes` makes about ``n`` scene records over a mid-latitude region spanning
several UTM zones: Sentinel-2 L2A on 109.8 km tiles spaced 100 km apart (5-day revisit, 15 %
partial tiles at orbit edges), Landsat 8/9 on 185 km scenes (16-day revisit, a few km of
along-track jitter per date) and Sentinel-1 RTC on 250 x 170 km scenes (12-day revisit), each
in its own UTM zone's CRS, cloud cover uniform in 0-100 %. The region grows with the scene
count; the revisit stays the same. The grouping benchmark and the partitioned-grouping tests
use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import shapely

from terracorpus.catalogs.scene import AssetRef, Grid, SceneRecord
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.curation import geometry as geo

START = datetime(2022, 1, 1, tzinfo=UTC)
DAYS = 365
LAT0 = 42.0


@dataclass(frozen=True)
class _Kind:
    sensor: str
    width: float
    height: float
    step_x: float
    step_y: float
    revisit: int
    jitter: float


KINDS = (
    _Kind("sentinel-2-l2a", 109_800.0, 109_800.0, 100_000.0, 100_000.0, 5, 0.0),
    _Kind("landsat-oli-c2-l2", 185_000.0, 180_000.0, 170_000.0, 165_000.0, 16, 3_000.0),
    _Kind("sentinel-1-rtc", 250_000.0, 170_000.0, 230_000.0, 160_000.0, 12, 5_000.0),
)


def _zone_crs(zone: int) -> str:
    return f"EPSG:{32600 + zone}"


def _zone_span(zone: int, lat0: float, rows: int) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) of a zone's 6-degree strip from lat0 over rows*100 km."""
    tr = geo.transformer(geo.LONLAT, _zone_crs(zone))
    lon_w = -180.0 + 6.0 * (zone - 1)
    x_w, y0 = tr.transform(lon_w, lat0)
    x_e, _ = tr.transform(lon_w + 6.0, lat0)
    return x_w, x_e, y0, y0 + rows * 100_000.0


def synthetic_scenes(n: int, seed: int = 0) -> list[SceneRecord]:
    """About ``n`` scene records (stops at n) over as many zones and rows as needed."""
    rng = np.random.default_rng(seed)
    reg = builtin_registry()
    bands = {k.sensor: _bands(reg.get(k.sensor)) for k in KINDS}
    scenes: list[SceneRecord] = []
    rows = max(2, round(math.sqrt(n / 440.0)))
    zone = 31
    while len(scenes) < n:
        scenes += _zone_scenes(zone, rows, rng, bands, n - len(scenes))
        zone += 1
    return scenes[:n]


def _bands(spec: Any) -> tuple[tuple[str, AssetRef], ...]:
    return tuple(
        (b.name, AssetRef(key=b.name, href=f"s3://bench/{b.name}.tif")) for b in spec.bands
    )


def _zone_scenes(
    zone: int, rows: int, rng: np.random.Generator, bands: dict[str, Any], budget: int
) -> list[SceneRecord]:
    crs = _zone_crs(zone)
    x_w, x_e, y0, y1 = _zone_span(zone, LAT0, rows)
    specs: list[tuple[_Kind, float, float, int, float]] = []
    for kind in KINDS:
        for x in np.arange(x_w, x_e, kind.step_x):
            for y in np.arange(y0, y1, kind.step_y):
                first = int(rng.integers(kind.revisit))
                for day in range(first, DAYS, kind.revisit):
                    specs.append((kind, float(x), float(y), day, float(rng.uniform(0, 100))))
    rng.shuffle(specs)  # a budget cut leaves every sensor and date represented
    specs = specs[:budget]
    boxes, partial = [], []
    for kind, x, y, _, _ in specs:
        jx, jy = rng.normal(0.0, kind.jitter + 1e-9, 2)
        x0, y_top = round((x + jx) / 60) * 60, round((y + kind.height + jy) / 60) * 60
        box = shapely.box(x0, y_top - kind.height, x0 + kind.width, y_top)
        cut = kind.sensor == "sentinel-2-l2a" and rng.random() < 0.15
        if cut:  # an orbit-edge tile: only the part east of a diagonal has data
            frac = rng.uniform(0.2, 0.8)
            box = shapely.Polygon(
                [
                    (x0 + frac * kind.width, y_top),
                    (x0 + kind.width, y_top),
                    (x0 + kind.width, y_top - kind.height),
                    (x0 + frac * kind.width / 2, y_top - kind.height),
                ]
            )
        boxes.append((x0, y_top))
        partial.append(box)
    footprints = geo.crs_to_lonlat(np.array(partial, dtype=object), crs, densify_m=10_000.0)
    out: list[SceneRecord] = []
    for (kind, _, _, day, cloud), (x0, y_top), fp in zip(specs, boxes, footprints, strict=True):
        out.append(
            _record(kind, crs, x0, y_top, day, cloud, fp, bands[kind.sensor], len(out), zone)
        )
    return out


def _record(
    kind: _Kind,
    crs: str,
    x0: float,
    y_top: float,
    day: int,
    cloud: float,
    footprint: Any,
    bands: Any,
    k: int,
    zone: int,
) -> SceneRecord:
    gsd = 30.0 if kind.sensor.startswith("landsat") else 10.0
    grid = Grid(
        (gsd, 0.0, x0, 0.0, -gsd, y_top), (round(kind.height / gsd), round(kind.width / gsd))
    )
    minx, miny, maxx, maxy = footprint.bounds
    return SceneRecord(
        id=f"{kind.sensor}-{zone}-{k:07d}",
        collection=kind.sensor,
        sensor=kind.sensor,
        datetime=START + timedelta(days=day, hours=10.5),
        footprint_wkb=shapely.to_wkb(footprint),
        bbox=(minx, miny, maxx, maxy),
        crs=crs,
        grids=((gsd, grid),),
        gsd=gsd,
        bands=bands,
        cloud_cover=round(cloud, 2),
    )
