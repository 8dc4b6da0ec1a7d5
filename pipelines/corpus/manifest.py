"""The corpus manifest: GeoParquet, one row per image chip, geometry in EPSG:4326.

It lets users find images with geopandas without opening the store, and it holds each
image's pixel digest, which ``corpus validate`` checks against the arrays.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from terracorpus.pipelines.corpus.location import CorpusLocation
from terracorpus.pipelines.corpus.plan import CorpusPlan
from terracorpus.pipelines.corpus.shards import shard_object
from terracorpus.pipelines.corpus.tables import Columns
from terracorpus.pipelines.errors import CorpusError

COLUMNS = (
    "image_id",
    "group_id",
    "group_index",
    "sensor",
    "row",
    "datetime",
    "crs",
    "gsd",
    "cloud_cover",
    "chip_cloud",
    "cluster_id",
    "split",
    "source_item",
    "source_href",
    "shard",
    "sha256",
    "label",
)


def build_manifest(
    plan: CorpusPlan, columns: Mapping[str, Columns], facts: Mapping[str, Mapping[str, Any]]
) -> gpd.GeoDataFrame:
    """Manifest rows of the plan's new images (``columns`` from :func:`image_columns`)."""
    group_of = {g.group_id: g for g in plan.groups}
    frames = []
    for sensor, cols in columns.items():
        imgs = plan.images[sensor]
        base = plan.base_images.get(sensor, 0)
        k = plan.images_per_shard[sensor]
        rows = base + np.arange(len(imgs))
        h, w = plan.layouts[sensor].chip_shape
        frames.append(
            pd.DataFrame(
                {
                    "image_id": cols["image_id"].astype(str),
                    "group_id": [i.group_id for i in imgs],
                    "group_index": cols["group_index"],
                    "sensor": sensor,
                    "row": rows.astype("int64"),
                    "datetime": pd.to_datetime(cols["datetime"], unit="ns", utc=True),
                    "crs": cols["crs"].astype(str),
                    "gsd": cols["gsd"],
                    "cloud_cover": cols["cloud_cover"],
                    "chip_cloud": cols["chip_cloud"],
                    "cluster_id": [group_of[i.group_id].cluster_id for i in imgs],
                    "split": [group_of[i.group_id].split for i in imgs],
                    "source_item": cols["source_item"].astype(str),
                    "source_href": cols["source_href"].astype(str),
                    "shard": [shard_object(sensor, "pixels", int(r) // k, 4) for r in rows],
                    "sha256": [facts[i.image_id]["sha256"] for i in imgs],
                    "label": cols["label"],
                    "geometry": _footprints(cols["transform"], cols["crs"], h, w),
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    return gpd.GeoDataFrame(frame, geometry="geometry", crs="EPSG:4326")


def write_manifest(location: CorpusLocation, frame: gpd.GeoDataFrame) -> None:
    """Write the manifest in one put (a temporary file and a rename on local disks)."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    fs = location.fs()
    if location.is_local:
        tmp = location.manifest + ".tmp"
        fs.pipe_file(tmp, buf.getvalue())
        fs.mv(tmp, location.manifest)
    else:
        fs.pipe_file(location.manifest, buf.getvalue())


def read_manifest(location: CorpusLocation) -> gpd.GeoDataFrame:
    fs = location.fs()
    if not fs.exists(location.manifest):
        raise CorpusError(f"corpus {location.url} has no manifest ({location.manifest})")
    try:
        with fs.open(location.manifest, "rb") as f:
            return gpd.read_parquet(f)
    except Exception as e:  # pyarrow raises many kinds for a damaged file
        raise CorpusError(f"manifest {location.manifest} cannot be read: {e}") from None


def _footprints(transforms: np.ndarray, crs: np.ndarray, h: int, w: int) -> np.ndarray:
    """Chip outlines in lon/lat: each grid's four corners projected, one call per CRS."""
    cols = np.array([0, w, w, 0], dtype="float64")
    rows = np.array([0, 0, h, h], dtype="float64")
    a, b, x0, d, e, y0 = (transforms[:, i : i + 1] for i in range(6))
    xs, ys = x0 + a * cols + b * rows, y0 + d * cols + e * rows  # (n, 4) each
    lon, lat = np.empty_like(xs), np.empty_like(ys)
    crs = crs.astype(str)
    for c in np.unique(crs):
        sel = crs == c
        lon[sel], lat[sel] = _to_lonlat(str(c)).transform(xs[sel], ys[sel])
    return np.asarray(shapely.polygons(np.stack([lon, lat], axis=-1)))


@lru_cache(maxsize=64)
def _to_lonlat(crs: str) -> Transformer:
    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
