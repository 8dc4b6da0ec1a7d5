"""Small builders of STAC items shaped like Earth Search v1 / USGS ones, for catalog tests.

They make what a test needs in a few lines: an item dict with provider-style asset keys,
per-asset ``proj`` fields and relative hrefs, and a directory laid out like a world
(``items/<collection>/<id>.json``, ``collections/<id>.json``).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

S2_ASSETS = {  # Earth Search v1 keys and native GSD
    "coastal": 60,
    "blue": 10,
    "green": 10,
    "red": 10,
    "rededge1": 20,
    "rededge2": 20,
    "rededge3": 20,
    "nir": 10,
    "nir08": 20,
    "nir09": 60,
    "swir16": 20,
    "swir22": 20,
    "scl": 20,
}
LANDSAT_ASSETS = ("coastal", "blue", "green", "red", "nir08", "swir16", "swir22", "qa_pixel")


def _polygon(bbox: tuple[float, float, float, float]) -> dict[str, Any]:
    w, s, e, n = bbox
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def s2_item(
    item_id: str,
    when: datetime,
    bbox: tuple[float, float, float, float] = (-93.7, 41.5, -93.6, 41.6),
    cloud: float | None = 10.0,
    collection: str = "sentinel-2-l2a",
    stac_version: str = "1.0.0",
) -> dict[str, Any]:
    """A Sentinel-2 L2A item in Earth Search v1 style (10980 px at 10 m, UTM 15N)."""
    props: dict[str, Any] = {
        "datetime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "platform": "sentinel-2a",
        "proj:epsg": 32615,
        "view:sun_elevation": 55.0,
        "view:sun_azimuth": 150.0,
    }
    if cloud is not None:
        props["eo:cloud_cover"] = cloud
    assets = {}
    for key, gsd in S2_ASSETS.items():
        n = 10980 * 10 // gsd
        assets[key] = {
            "href": f"./{item_id}/{key}.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "proj:shape": [n, n],
            "proj:transform": [gsd, 0.0, 399960.0, 0.0, -gsd, 4700040.0],
        }
    return {
        "type": "Feature",
        "stac_version": stac_version,
        "stac_extensions": [],
        "id": item_id,
        "collection": collection,
        "geometry": _polygon(bbox),
        "bbox": list(bbox),
        "properties": props,
        "assets": assets,
        "links": [],
    }


def landsat_item(
    item_id: str,
    when: datetime,
    bbox: tuple[float, float, float, float] = (-93.9, 41.3, -93.4, 41.8),
    cloud: float = 5.0,
) -> dict[str, Any]:
    """A Landsat 8 C2 L2 item in USGS style: item-level proj fields only."""
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": item_id,
        "collection": "landsat-c2-l2",
        "geometry": _polygon(bbox),
        "bbox": list(bbox),
        "properties": {
            "datetime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "platform": "landsat-8",
            "eo:cloud_cover": cloud,
            "proj:epsg": 32615,
            "proj:shape": [7801, 7681],
            "proj:transform": [30.0, 0.0, 300000.0, 0.0, -30.0, 4700000.0],
        },
        "assets": {k: {"href": f"https://example.test/{item_id}/{k}.tif"} for k in LANDSAT_ASSETS},
        "links": [],
    }


def series(n: int, start: datetime, days: int = 5, **kw: Any) -> list[dict[str, Any]]:
    """``n`` Sentinel-2 items ``days`` apart, cloud cover cycling 0, 10, ..., 90 %."""
    return [
        s2_item(f"S2_{i:03d}", start + timedelta(days=days * i), cloud=(i * 10) % 100, **kw)
        for i in range(n)
    ]


def write_world(root: Path, items: list[dict[str, Any]]) -> Path:
    """Write items as ``root/items/<collection>/<id>.json`` plus one collection file each."""
    for item in items:
        f = root / "items" / item["collection"] / f"{item['id']}.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(item))
    (root / "collections").mkdir(parents=True, exist_ok=True)
    for cid in sorted({i["collection"] for i in items}):
        collection = {
            "type": "Collection",
            "stac_version": "1.0.0",
            "id": cid,
            "description": f"test collection {cid}",
            "license": "proprietary",
            "extent": {
                "spatial": {"bbox": [[-180, -90, 180, 90]]},
                "temporal": {"interval": [[None, None]]},
            },
            "links": [],
        }
        (root / "collections" / f"{cid}.json").write_text(json.dumps(collection))
    return root
