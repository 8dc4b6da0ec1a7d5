"""Scene records as GeoDataFrame rows and back: the in-memory form of ``scenes.parquet``.

One row per scene; the geometry is the footprint in lon/lat (EPSG:4326). Nested fields are
JSON strings so the table stays flat and readable by any Parquet tool:

- ``grids``: ``[{"gsd": 10.0, "transform": [a, b, c, d, e, f], "shape": [rows, cols]}, ...]``
- ``bands``: ``[{"band": "B04", "key": "red", "href": "...", "band_index": 1}, ...]``
- ``qa``: ``{"key": "scl", "href": "...", "band_index": 1}`` or null
- ``bbox``: ``[west, south, east, north]``
- ``repairs``: ``["footprint made valid with make_valid (...)", ...]`` (optional column:
  tables written before it existed read as no repairs)
- ``radiometry``: ``[{"band": "B04", "scale": 0.0001, "offset": -0.1, "nodata": 0,
  "source": "rule:s2-processing-baseline"}, ...]`` (``source``: ``item``, ``rule:<name>`` or
  ``registry``; optional column: a table written before it existed reads as the registry's
  values)

:func:`scenes_from_frame` is the exact inverse of :func:`scenes_to_frame`. No file I/O here.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely

from terracorpus.catalogs.errors import CatalogError
from terracorpus.catalogs.redact import strip_credentials
from terracorpus.catalogs.scene import AssetRef, BandRadiometry, Grid, SceneRecord

COLUMNS = (
    "id",
    "collection",
    "sensor",
    "datetime",
    "crs",
    "gsd",
    "cloud_cover",
    "sun_elevation",
    "sun_azimuth",
    "off_nadir",
    "platform",
    "self_href",
    "api_url",
    "bbox",
    "grids",
    "bands",
    "qa",
)
OPTIONAL_COLUMNS = ("repairs", "radiometry")
_FLOATS = ("gsd", "cloud_cover", "sun_elevation", "sun_azimuth", "off_nadir")
_STRINGS = ("id", "collection", "sensor", "crs", "platform", "self_href", "api_url")


def scenes_to_frame(scenes: Sequence[SceneRecord]) -> gpd.GeoDataFrame:
    """A GeoDataFrame with one row per scene (geometry: footprint, EPSG:4326)."""
    with _gc_paused():
        rows = [_row(s) for s in scenes]
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *OPTIONAL_COLUMNS])
    frame["datetime"] = pd.to_datetime(frame["datetime"], utc=True)
    for col in _FLOATS:
        frame[col] = frame[col].astype("float64")
    for col in _STRINGS:
        frame[col] = frame[col].astype("object")
    geometry = shapely.from_wkb([s.footprint_wkb for s in scenes])
    return gpd.GeoDataFrame(frame, geometry=geometry, crs="EPSG:4326")


def scenes_from_frame(frame: gpd.GeoDataFrame) -> list[SceneRecord]:
    """The scene records of a frame made by :func:`scenes_to_frame` (or read from Parquet)."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise CatalogError(
            f"a scenes table needs the columns {missing}; it has {list(frame.columns)}"
        )
    wkbs = shapely.to_wkb(frame.geometry.to_numpy())
    times = pd.to_datetime(frame["datetime"], utc=True)
    columns = [*COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in frame.columns)]
    with _gc_paused():
        return [
            _record(row, wkb, ts.to_pydatetime())
            for row, wkb, ts in zip(frame[columns].to_dict("records"), wkbs, times, strict=True)
        ]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many small acyclic objects: it would rescan the
    growing heap again and again (3x the time of 20,000 records)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _row(s: SceneRecord) -> dict[str, Any]:
    return {
        "id": s.id,
        "collection": s.collection,
        "sensor": s.sensor,
        "datetime": s.datetime,
        "crs": s.crs,
        "gsd": s.gsd,
        "cloud_cover": s.cloud_cover,
        "sun_elevation": s.sun_elevation,
        "sun_azimuth": s.sun_azimuth,
        "off_nadir": s.off_nadir,
        "platform": s.platform,
        "self_href": _stored_url(s.self_href),
        "api_url": _stored_url(s.api_url),
        "bbox": json.dumps(list(s.bbox)),
        "grids": json.dumps(
            [
                {"gsd": gsd, "transform": list(g.transform), "shape": list(g.shape)}
                for gsd, g in s.grids
            ]
        ),
        "bands": json.dumps([{"band": name, **_asset_dict(ref)} for name, ref in s.bands]),
        "qa": None if s.qa is None else json.dumps(_asset_dict(s.qa)),
        "repairs": json.dumps(list(s.repairs)) if s.repairs else None,
        "radiometry": json.dumps(
            [{"band": name, **dataclasses.asdict(rad)} for name, rad in s.radiometry]
        ),
    }


def _asset_dict(ref: AssetRef) -> dict[str, Any]:
    return {"key": ref.key, "href": strip_credentials(ref.href), "band_index": ref.band_index}


def _stored_url(url: str | None) -> str | None:
    """A URL as the table stores it: without credentials (a catalog's hrefs may carry a
    user:password or a token; secrets come from a netrc file or the environment)."""
    return None if url is None else strip_credentials(url)


def _record(row: dict[str, Any], wkb: bytes, when: Any) -> SceneRecord:
    w, s, e, n = (float(v) for v in json.loads(row["bbox"]))
    grids = tuple(
        (
            float(g["gsd"]),
            Grid(
                transform=(
                    float(g["transform"][0]),
                    float(g["transform"][1]),
                    float(g["transform"][2]),
                    float(g["transform"][3]),
                    float(g["transform"][4]),
                    float(g["transform"][5]),
                ),
                shape=(int(g["shape"][0]), int(g["shape"][1])),
            ),
        )
        for g in json.loads(row["grids"])
    )
    bands = tuple((str(b["band"]), _asset_ref(b)) for b in json.loads(row["bands"]))
    qa = _opt_str(row["qa"])
    return SceneRecord(
        id=str(row["id"]),
        collection=str(row["collection"]),
        sensor=str(row["sensor"]),
        datetime=when,
        footprint_wkb=bytes(wkb),
        bbox=(w, s, e, n),
        crs=str(row["crs"]),
        grids=grids,
        gsd=float(row["gsd"]),
        bands=bands,
        qa=None if qa is None else _asset_ref(json.loads(qa)),
        cloud_cover=_opt_float(row["cloud_cover"]),
        sun_elevation=_opt_float(row["sun_elevation"]),
        sun_azimuth=_opt_float(row["sun_azimuth"]),
        off_nadir=_opt_float(row["off_nadir"]),
        platform=_opt_str(row["platform"]),
        self_href=_opt_str(row["self_href"]),
        api_url=_opt_str(row["api_url"]),
        repairs=_repairs(row.get("repairs")),
        radiometry=_radiometry(row.get("radiometry")),
    )


def _radiometry(raw: Any) -> tuple[tuple[str, BandRadiometry], ...]:
    text = _opt_str(raw)
    if text is None:
        return ()
    return tuple(
        (
            str(r["band"]),
            BandRadiometry(
                scale=float(r["scale"]),
                offset=float(r["offset"]),
                nodata=None if r["nodata"] is None else float(r["nodata"]),
                source=str(r["source"]),
            ),
        )
        for r in json.loads(text)
    )


def _repairs(v: Any) -> tuple[str, ...]:
    text = _opt_str(v)
    return () if text is None else tuple(str(r) for r in json.loads(text))


def _asset_ref(d: dict[str, Any]) -> AssetRef:
    return AssetRef(key=str(d["key"]), href=str(d["href"]), band_index=int(d["band_index"]))


def _opt_float(v: Any) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


def _opt_str(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return str(v)
