"""Real provider items with pixels: a sub-window of each item's own grid written as small COGs.

:func:`windowed_item` takes a real STAC item as a provider published it, keeps every field
but narrows its grid to a window (same CRS, pixel size and grid alignment; each band asset at
its own GSD), writes each band asset and the QA asset as a COG with known stored values, and
points the asset hrefs where the caller serves the files (a loopback range server). The
item's geometry and bbox become the window's footprint, so search and grouping see the
window as the scene.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyproj import Transformer
from rasterio.transform import Affine

from terracorpus.catalogs.world.cog import write_cog

SCL_VEGETATION = 4


@dataclass(frozen=True)
class Window:
    """A window of a 10 m grid: pixel offsets (multiples of 6, so 20 m and 60 m grids align)
    and a side in 10 m pixels."""

    col: int
    row: int
    size: int


@dataclass
class Written:
    """What :func:`windowed_item` made: the item, and per band the stored values written and
    the window's affine at that band's GSD."""

    item: dict[str, Any]
    values: dict[str, np.ndarray]
    transforms: dict[str, Affine]


def windowed_item(
    item: Mapping[str, Any],
    window: Window,
    band_assets: Mapping[str, str],
    qa_asset: str,
    folder: Path,
    href: Callable[[Path], str],
    seed: int,
) -> Written:
    """A copy of ``item`` narrowed to ``window``, its band and QA assets written under ``folder``.

    Args:
        item: the real item (not changed).
        window: the window on the item's 10 m grid.
        band_assets: band name -> asset key (e.g. ``{"B02": "blue"}`` for Earth Search v1).
        qa_asset: the SCL asset key; written as vegetation everywhere (no cloud).
        folder: where the COGs go (``<folder>/<asset>.tif``).
        href: the href a written file is served under.
        seed: stored values are random integers 1000-4999 from this seed.
    """
    out = copy.deepcopy(dict(item))
    epsg = int(out["properties"]["proj:epsg"])
    rng = np.random.default_rng(seed)
    values: dict[str, np.ndarray] = {}
    transforms: dict[str, Affine] = {}
    for name, key in [*band_assets.items(), ("SCL", qa_asset)]:
        asset = out["assets"][key]
        a, _, c, _, e, f = (float(v) for v in asset["proj:transform"][:6])
        scale = round(a / 10.0) or 1
        side = window.size // scale
        transform = Affine(a, 0.0, c + window.col * 10.0, 0.0, e, f - window.row * 10.0)
        if name == "SCL":
            data = np.full((1, side, side), SCL_VEGETATION, dtype="uint8")
        else:
            data = rng.integers(1000, 5000, size=(1, side, side), dtype="uint16")
            values[name] = data[0]
            transforms[name] = transform
        path = folder / f"{key}.tif"
        write_cog(path, data, transform, epsg, nodata=0, categorical=name == "SCL")
        asset["href"] = href(path)
        asset["proj:transform"] = list(transform)[:6]
        asset["proj:shape"] = [side, side]
        asset.pop("proj:bbox", None)
    _narrow_footprint(out, epsg, transforms[next(iter(band_assets))], window.size)
    return Written(out, values, transforms)


def _narrow_footprint(item: dict[str, Any], epsg: int, transform: Affine, size: int) -> None:
    x0, y0 = transform.c, transform.f
    x1, y1 = x0 + size * 10.0, y0 - size * 10.0
    to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
    corners = [to_lonlat.transform(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
    ring = [[float(lon), float(lat)] for lon, lat in [*corners, corners[0]]]
    item["geometry"] = {"type": "Polygon", "coordinates": [ring]}
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    item["bbox"] = [min(lons), min(lats), max(lons), max(lats)]
    for key in ("proj:shape", "proj:transform", "proj:bbox", "proj:geometry"):
        item["properties"].pop(key, None)
