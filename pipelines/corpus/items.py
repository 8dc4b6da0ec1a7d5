"""The corpus as STAC Items (stac-geoparquet), so users search it with the STAC tools they have.

One Item per image: its chip footprint and time, the group and sensor it belongs to, the
projection of its pixel grid (``proj:code``, ``proj:transform``, ``proj:shape``), and two
assets pointing into the Zarr store (``pixels`` and ``valid``: the array path and the image's
index along its first axis) with the ``eo:bands`` and ``raster:bands`` a provider would give.
Written with rustac, it reads back with ``rustac.read_sync``/``search_sync``, DuckDB, geopandas,
and serves with ``terracorpus catalog serve``.
"""

from __future__ import annotations

import json
import math
import tempfile
from datetime import UTC
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rustac
import zarr

from terracorpus.pipelines.corpus.format import (
    BAND_ARRAYS,
    COLLECTION_NAME,
    STORE_NAME,
    corpus_meta,
)
from terracorpus.pipelines.corpus.location import CorpusLocation
from terracorpus.pipelines.corpus.manifest import read_manifest
from terracorpus.pipelines.errors import CorpusError

ITEMS_NAME = "items.parquet"
EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
]
# Per-image arrays the manifest lacks but an Item carries.
_EXTRA_ARRAYS = ("transform", "sun_elevation", "off_nadir", "lon", "lat")


def item_id(image_id: str) -> str:
    """The Item id of an image: its ``<group_id>/<scene_id>`` with ``/`` as ``~`` (an id is a
    path segment of a STAC API's item URL)."""
    return image_id.replace("/", "~")


def corpus_items(location: CorpusLocation) -> list[dict[str, Any]]:
    """Every image of the corpus at ``location`` as a STAC Item (dicts, STAC 1.1)."""
    root = location.open_group()
    meta = corpus_meta(root)
    manifest = read_manifest(location)
    collection = _collection_id(location, meta)
    store_href = f"./{STORE_NAME}"
    items: list[dict[str, Any]] = []
    for sensor, frame in manifest.groupby("sensor", sort=True):
        spec = meta["sensors"][sensor]
        extra = {name: _array(root, f"sensors/{sensor}/{name}") for name in _EXTRA_ARRAYS}
        group = root[f"sensors/{sensor}"]
        for name in BAND_ARRAYS:  # format 2: each image's own radiometry
            if name in group:  # type: ignore[operator]
                extra[name] = _array(root, f"sensors/{sensor}/{name}")
        for rec in frame.itertuples(index=False):
            items.append(_item(rec, spec, extra, collection, store_href))
    return items


def write_items(location: CorpusLocation, target: str | None = None) -> str:
    """Write the corpus's Items as stac-geoparquet (default ``CORPUS/items.parquet``); returns
    where. Asset hrefs are relative to the corpus directory (``./corpus.zarr``)."""
    items = corpus_items(location)
    if not items:
        raise CorpusError(f"corpus {location.url} has no images to list")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / ITEMS_NAME
        rustac.write_sync(str(local), items, format="geoparquet")
        data = local.read_bytes()
    fs = location.fs()
    path = target or location.path(ITEMS_NAME)
    if location.is_local:
        fs.pipe_file(path + ".tmp", data)
        fs.mv(path + ".tmp", path)
    else:
        fs.pipe_file(path, data)
    return path if location.is_local or target else location.url_of(ITEMS_NAME)


def _array(root: zarr.Group, path: str) -> np.ndarray:
    node = root[path]
    assert isinstance(node, zarr.Array)
    return np.asarray(node[:])


def _collection_id(location: CorpusLocation, meta: dict[str, Any]) -> str:
    fs = location.fs()
    path = location.path(COLLECTION_NAME)
    if fs.exists(path):
        with fs.open(path, "rb") as f:
            return str(json.load(f)["id"])
    return f"terracorpus-{str(meta.get('config_hash', ''))[:12]}"


def _item(
    rec: Any,
    spec: dict[str, Any],
    extra: dict[str, np.ndarray],
    collection: str,
    store_href: str,
) -> dict[str, Any]:
    row = int(rec.row)
    geometry = rec.geometry
    a, b, c, d, e, f = (float(v) for v in extra["transform"][row])
    h, w = (int(v) for v in spec["chip_size"])
    props: dict[str, Any] = {
        "datetime": _iso(rec.datetime),
        "gsd": float(rec.gsd),
        "proj:code": str(rec.crs),
        "proj:transform": [a, b, c, d, e, f],
        "proj:shape": [h, w],
        "proj:centroid": {"lon": float(extra["lon"][row]), "lat": float(extra["lat"][row])},
        "terracorpus:image_id": str(rec.image_id),
        "terracorpus:group_id": str(rec.group_id),
        "terracorpus:group_index": int(rec.group_index),
        "terracorpus:sensor": str(rec.sensor),
        "terracorpus:row": row,
        "terracorpus:split": str(rec.split),
        "terracorpus:cluster_id": int(rec.cluster_id),
        "terracorpus:label": int(rec.label),
        "terracorpus:source_item": str(rec.source_item),
    }
    _put_number(props, "eo:cloud_cover", rec.cloud_cover)
    _put_number(props, "terracorpus:chip_cloud", rec.chip_cloud)
    _put_number(props, "view:sun_elevation", extra["sun_elevation"][row])
    _put_number(props, "view:off_nadir", extra["off_nadir"][row])
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": EXTENSIONS,
        "id": item_id(str(rec.image_id)),
        "collection": collection,
        "geometry": geometry.__geo_interface__,
        "bbox": [float(v) for v in geometry.bounds],
        "properties": props,
        "links": [],
        "assets": _assets(str(rec.sensor), row, _image_spec(spec, extra, row), store_href),
    }


def _image_spec(spec: dict[str, Any], extra: dict[str, np.ndarray], row: int) -> dict[str, Any]:
    """The sensor's description with this image's own scale, offset and nodata (format 2)."""
    if not all(name in extra for name in BAND_ARRAYS):
        return spec
    bands = []
    for k, band in enumerate(spec["bands"]):
        nodata = float(extra["nodata"][row][k])
        bands.append(
            {
                **band,
                "scale": float(extra["scale"][row][k]),
                "offset": float(extra["offset"][row][k]),
                "nodata": None if math.isnan(nodata) else nodata,
            }
        )
    return {**spec, "bands": bands}


def _assets(sensor: str, row: int, spec: dict[str, Any], store_href: str) -> dict[str, Any]:
    bands = spec["bands"]
    return {
        "pixels": {
            "href": store_href,
            "type": "application/vnd+zarr",
            "title": f"{sensor} pixels (image, band, y, x)",
            "roles": ["data"],
            "terracorpus:array": f"sensors/{sensor}/pixels",
            "terracorpus:index": row,
            "eo:bands": [_eo_band(band) for band in bands],
            "raster:bands": [_raster_band(band, spec["dtype"]) for band in bands],
        },
        "valid": {
            "href": store_href,
            "type": "application/vnd+zarr",
            "title": "usable-pixel mask (image, y, x): 1 usable, 0 nodata/cloud/shadow",
            "roles": ["data-mask"],
            "terracorpus:array": f"sensors/{sensor}/valid",
            "terracorpus:index": row,
        },
    }


def _eo_band(band: dict[str, Any]) -> dict[str, Any]:
    out = {
        "name": band["name"],
        "center_wavelength": band["center_wavelength"],
        "full_width_half_max": band["full_width_half_max"],
    }
    if band.get("common_name"):
        out["common_name"] = band["common_name"]
    return out


def _raster_band(band: dict[str, Any], dtype: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "data_type": dtype,
        "spatial_resolution": band["gsd"],
        "scale": band.get("scale", 1.0),
        "offset": band.get("offset", 0.0),
    }
    if band.get("nodata") is not None:
        out["nodata"] = band["nodata"]
    return out


def _put_number(props: dict[str, Any], key: str, value: Any) -> None:
    v = float(value)
    if math.isfinite(v):
        props[key] = v


def _iso(value: Any) -> str:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)
    return ts.to_pydatetime().isoformat().replace("+00:00", "Z")


def read_items(location: CorpusLocation) -> gpd.GeoDataFrame:
    """The corpus's stac-geoparquet Items as a GeoDataFrame (for quick looks and tests)."""
    fs = location.fs()
    with fs.open(location.path(ITEMS_NAME), "rb") as f:
        return gpd.read_parquet(f)
