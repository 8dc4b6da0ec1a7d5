"""Reading a built world back: its summary, the land-cover truth per year and the true cloud
masks."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.warp
from numpy.typing import NDArray
from pyproj import CRS, Transformer
from rasterio.transform import Affine

from terracorpus.catalogs.errors import WorldError
from terracorpus.catalogs.world import atmosphere as atm

WORLD_FILE = "world.json"


def read_world(world_dir: str | Path) -> dict[str, Any]:
    """The ``world.json`` of a built world (raises :class:`WorldError` if there is none)."""
    path = Path(world_dir) / WORLD_FILE
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise WorldError(
            f"{world_dir} is not a demo world (no {WORLD_FILE}); build one with "
            "'terracorpus world create --out DIR'"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise WorldError(f"cannot read {path}: {e}") from None
    return doc


_TRANSFORMERS = threading.local()


def _transformer(src: CRS, epsg: int) -> Transformer:
    """A transformer from ``src`` to ``EPSG:epsg``, cached per thread (pyproj transformers are
    not thread-safe, and building one costs milliseconds: more than the rest of a small read)."""
    cache: dict[tuple[str, int], Transformer] = _TRANSFORMERS.__dict__.setdefault("d", {})
    key = (src.to_wkt(), int(epsg))
    tr = cache.get(key)
    if tr is None:
        tr = cache[key] = Transformer.from_crs(src, CRS.from_epsg(key[1]), always_xy=True)
    return tr


def _overlap(region: dict[str, Any], bounds: tuple[float, float, float, float], crs: CRS) -> float:
    tr = _transformer(crs, region["epsg"])
    b = tr.transform_bounds(*bounds, densify_pts=21)
    r = region["bounds"]
    w = min(b[2], r[2]) - max(b[0], r[0])
    h = min(b[3], r[3]) - max(b[1], r[1])
    return float(max(0.0, w) * max(0.0, h))


def truth_path(region: str, year: int) -> str:
    """Where a region's truth of ``year`` lies, relative to the world: ``truth/<region>/<year>.tif``."""
    return f"truth/{region}/{year}.tif"


def world_years(world_dir: str | Path) -> list[int]:
    """The years a world spans (one truth map per region for each), first to last."""
    return _years(read_world(world_dir))


def _years(world: dict[str, Any]) -> list[int]:
    if "years" in world:
        return [int(y) for y in world["years"]]
    return [int(str(world["start"])[:4])]  # a format-1 world: one year, one truth map


def _truth_file(
    world_dir: str | Path, world: dict[str, Any], region: dict[str, Any], year: int | None
) -> Path:
    years = _years(world)
    year = years[0] if year is None else int(year)
    if year not in years:
        raise WorldError(
            f"the world at {world_dir} has no truth for {year}; its years are "
            + ", ".join(map(str, years))
        )
    truth = region["truth"]
    rel = truth if isinstance(truth, str) else truth.get(str(year))
    path = Path(world_dir) / str(rel)
    if rel is None or not path.is_file():
        raise WorldError(
            f"the truth of {region['name']} for {year} is missing from {world_dir} "
            f"(expected {path}); rebuild the world with 'terracorpus world create'"
        )
    return path


def read_truth(
    world_dir: str | Path,
    bounds: tuple[float, float, float, float],
    crs: str,
    year: int | None = None,
) -> NDArray[np.uint8]:
    """Land-cover class codes over ``bounds`` (minx, miny, maxx, maxy) in ``crs`` in ``year``.

    ``year`` None is the world's first year. The land cover changes between years (see
    ``world.json`` ``"events"``): the change map of a place between two years is
    ``read_truth(..., year=a) != read_truth(..., year=b)``. Every scene acquired in a year
    is rendered from that year's land cover.

    The region that overlaps ``bounds`` most is resampled (nearest) onto a north-up grid over
    ``bounds`` at the region's base resolution (its degree equivalent for a geographic
    ``crs``); pixels outside the region are 0 (nodata). Codes are those of
    ``truth/classes.json``.

    Raises:
        WorldError: no region of the world overlaps ``bounds``, the world has no such year,
            its truth file for the year is missing, or the world is unreadable.
    """
    world = read_world(world_dir)
    try:
        dst_crs = CRS.from_user_input(crs)
    except Exception as e:  # pyproj raises its own CRSError with the reason
        raise WorldError(f"cannot read CRS {crs!r}: {e}") from None
    areas = [(_overlap(r, bounds, dst_crs), i) for i, r in enumerate(world["regions"])]
    area, best = max(areas)
    if area <= 0:
        raise WorldError(
            f"no region of the world at {world_dir} covers {bounds} in {crs}; its regions are "
            + ", ".join(f"{r['name']} {r['bbox']}" for r in world["regions"])
        )
    region = world["regions"][best]
    path = _truth_file(world_dir, world, region, year)
    res = float(region["base_res"])
    if dst_crs.is_geographic:
        res = res / 111_320.0
    width = max(1, math.ceil(round((bounds[2] - bounds[0]) / res, 6)))
    height = max(1, math.ceil(round((bounds[3] - bounds[1]) / res, 6)))
    out = np.zeros((height, width), dtype=np.uint8)
    with rasterio.open(path) as src:
        rasterio.warp.reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=Affine(res, 0.0, bounds[0], 0.0, -res, bounds[3]),
            dst_crs=dst_crs,
            dst_nodata=0,
            resampling=rasterio.warp.Resampling.nearest,
        )
    return out


def cloud_truth_path(world_dir: str | Path, collection: str, item_id: str) -> Path:
    """Where a scene's true cloud/shadow mask is: ``truth/clouds/<collection>/<id>.tif``."""
    return Path(world_dir) / "truth" / "clouds" / collection / f"{item_id}.tif"


def read_cloud_truth(world_dir: str | Path, collection: str, item_id: str) -> NDArray[np.uint8]:
    """A scene's true mask on its QA grid: 0 nodata, 1 clear, 2 opaque cloud, 3 cloud edge,
    4 thin cirrus, 5 cloud shadow (see ``world.json`` ``cloud_mask_codes``).

    Raises:
        WorldError: the scene has no mask (NAIP has no clouds) or does not exist.
    """
    path = cloud_truth_path(world_dir, collection, item_id)
    if not path.exists():
        raise WorldError(
            f"no true cloud mask for {collection}/{item_id} in {world_dir} "
            "(unknown item, or a collection without clouds such as naip)"
        )
    with rasterio.open(path) as src:
        data: NDArray[np.uint8] = src.read(1)
    return data


def truth_cloud_fraction(world_dir: str | Path, collection: str, item_id: str) -> float:
    """The true cloudy share (0-1) of a scene's valid pixels; ``eo:cloud_cover`` is 100x it."""
    codes = read_cloud_truth(world_dir, collection, item_id)
    valid = int(np.count_nonzero(codes != atm.NODATA))
    cloudy = int(np.count_nonzero(np.isin(codes, atm.CLOUD_CODES)))
    return cloudy / valid if valid else 0.0
