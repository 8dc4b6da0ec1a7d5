"""The corpus's own STAC Collection (``collection.json``), so the corpus is discoverable.

It names the sensors and bands, the spatial and temporal extent of the images, the counts,
and links the Zarr store and the manifest as assets. Only STAC core fields are used, so it
validates against the core schema without fetching extension schemas.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import geopandas as gpd
import pandas as pd
import pystac

from terracorpus.pipelines.corpus.format import (
    ATTRS_KEY,
    FORMAT_VERSION,
    MANIFEST_NAME,
    STORE_NAME,
)
from terracorpus.pipelines.corpus.location import CorpusLocation

ZARR_MEDIA_TYPE = "application/vnd+zarr"
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"


def build_collection(
    root_attrs: dict[str, Any], manifest: gpd.GeoDataFrame, collection_id: str
) -> pystac.Collection:
    """A STAC Collection describing the corpus whose root attributes and manifest are given."""
    meta = root_attrs[ATTRS_KEY]
    sensors = meta["sensors"]
    bbox = [float(v) for v in manifest.total_bounds] if len(manifest) else [-180.0, -90, 180, 90]
    times = pd.to_datetime(manifest["datetime"], utc=True) if len(manifest) else None
    interval: list[datetime | None] = (
        [times.min().to_pydatetime(), times.max().to_pydatetime()]
        if times is not None
        else [None, None]
    )
    counts = meta["counts"]
    collection = pystac.Collection(
        id=collection_id,
        title=f"terracorpus corpus {collection_id}",
        description=(
            f"Pre-training corpus of {counts['groups']} co-located image groups "
            f"({sum(counts['images'].values())} images from {len(sensors)} sensors), written "
            f"by terracorpus {meta.get('software_version', '?')} in corpus format "
            f"v{FORMAT_VERSION}."
        ),
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([interval])),
        license="other",
        summaries=pystac.Summaries(
            {
                "terracorpus:sensors": sorted(sensors),
                "gsd": sorted({float(s["gsd"]) for s in sensors.values()}),
                "bands": [
                    {
                        "name": f"{name}:{b['name']}",
                        "center_wavelength": b["center_wavelength"],
                        "full_width_half_max": b["full_width_half_max"],
                        "gsd": b["gsd"],
                    }
                    for name, s in sorted(sensors.items())
                    for b in s["bands"]
                ],
            }
        ),
        extra_fields={
            "terracorpus:format_version": FORMAT_VERSION,
            "terracorpus:counts": counts,
            "terracorpus:config_hash": meta.get("config_hash"),
        },
    )
    collection.add_asset(
        "corpus",
        pystac.Asset(
            f"./{STORE_NAME}", title="Zarr v3 store", media_type=ZARR_MEDIA_TYPE, roles=["data"]
        ),
    )
    collection.add_asset(
        "manifest",
        pystac.Asset(
            f"./{MANIFEST_NAME}",
            title="GeoParquet manifest, one row per image",
            media_type=PARQUET_MEDIA_TYPE,
            roles=["metadata"],
        ),
    )
    return collection


def write_collection(location: CorpusLocation, collection: pystac.Collection) -> None:
    doc = collection.to_dict(include_self_link=False, transform_hrefs=False)
    data = json.dumps(doc, indent=2).encode()
    fs = location.fs()
    if location.is_local:
        fs.pipe_file(location.collection + ".tmp", data)
        fs.mv(location.collection + ".tmp", location.collection)
    else:
        fs.pipe_file(location.collection, data)
