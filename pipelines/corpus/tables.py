"""Per-image metadata arrays and group tables: built from the plan and the shard results.

Pure functions from the plan (and digests the shard tasks returned) to numpy columns; the
writer stores them. Kept apart so appending can concatenate old and new columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from terracorpus.pipelines.corpus.format import BAND_ARRAYS, NO_LABEL
from terracorpus.pipelines.corpus.plan import CorpusPlan, ImageSpec, SensorLayout

Columns = dict[str, np.ndarray]


FACT_COLUMNS = ("transform", "chip_cloud", "label")
"""Columns known only once the shard tasks have read the pixels."""


def image_columns(
    plan: CorpusPlan, facts: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Columns]:
    """Per-sensor metadata columns of the plan's new images, in row order.

    ``facts`` maps image id to what its shard task returned (transform, chip_cloud, label);
    without it, only the columns the plan alone decides are returned.
    """
    if facts is None:
        dummy = {"transform": [0.0] * 6, "chip_cloud": None, "label": None}
        full = image_columns(plan, {i.image_id: dummy for v in plan.images.values() for i in v})
        return {s: {k: v for k, v in c.items() if k not in FACT_COLUMNS} for s, c in full.items()}
    group_index = {g.group_id: plan.base_groups + i for i, g in enumerate(plan.groups)}
    out: dict[str, Columns] = {}
    for sensor, imgs in plan.images.items():
        f = [facts[img.image_id] for img in imgs]
        out[sensor] = {
            "image_id": np.array([i.image_id for i in imgs], dtype=object),
            "group_index": np.array([group_index[i.group_id] for i in imgs], dtype="int64"),
            "datetime": np.array([i.datetime_ns for i in imgs], dtype="int64"),
            "crs": np.array([i.crs for i in imgs], dtype=object),
            "transform": np.array([x["transform"] for x in f], dtype="float64").reshape(-1, 6),
            "gsd": np.array([i.gsd for i in imgs], dtype="float32"),
            "lon": np.array([i.lon for i in imgs], dtype="float64"),
            "lat": np.array([i.lat for i in imgs], dtype="float64"),
            "cloud_cover": np.array([i.cloud_cover for i in imgs], dtype="float32"),
            "chip_cloud": np.array([_nan(x["chip_cloud"]) for x in f], dtype="float32"),
            "sun_elevation": np.array([i.sun_elevation for i in imgs], dtype="float32"),
            "off_nadir": np.array([i.off_nadir for i in imgs], dtype="float32"),
            "source_item": np.array([i.source_item for i in imgs], dtype=object),
            "source_href": np.array([i.source_href for i in imgs], dtype=object),
            "label": np.array([_label(x.get("label")) for x in f], dtype="int16"),
            **_radiometry_columns(plan.layouts[sensor], imgs),
        }
    return out


def _radiometry_columns(layout: SensorLayout, imgs: list[ImageSpec]) -> Columns:
    """``scale``, ``offset`` and ``nodata`` (NaN: none), each (image, band) float64."""
    rows = [layout.radiometry(img) for img in imgs]
    n = len(layout.bands)
    return {
        name: np.array([r[k] for r in rows], dtype="float64").reshape(-1, n)
        for k, name in enumerate(BAND_ARRAYS)
    }


def group_columns(plan: CorpusPlan, member_base: int = 0) -> Columns:
    """The plan's new rows of the group tables; CSR offsets start at ``member_base``."""
    row_of = plan.row_of()
    groups = plan.groups
    members = [m for g in groups for m in g.members]
    sizes = np.array([len(g.members) for g in groups], dtype="int64")
    offsets = member_base + np.concatenate([[0], np.cumsum(sizes)]).astype("int64")
    return {
        "group_id": np.array([g.group_id for g in groups], dtype=object),
        "anchor_sensor": np.array([g.anchor[0] for g in groups], dtype=object),
        "anchor_index": np.array([row_of[g.anchor[1]][1] for g in groups], dtype="int64"),
        "member_offsets": offsets,
        "member_sensor": np.array([s for s, _ in members], dtype=object),
        "member_index": np.array([row_of[i][1] for _, i in members], dtype="int64"),
        "crs": np.array([g.crs for g in groups], dtype=object),
        "bounds": np.array([g.bounds for g in groups], dtype="float64").reshape(-1, 4),
        "lonlat_bounds": np.array([g.lonlat_bounds for g in groups], dtype="float64").reshape(
            -1, 4
        ),
        "cluster_id": np.array([g.cluster_id for g in groups], dtype="int64"),
        "split": np.array([g.split for g in groups], dtype=object),
    }


def concat_groups(old: Columns, new: Columns) -> Columns:
    """Old group tables followed by new ones (``new`` offsets already shifted)."""
    out = {}
    for name, arr in new.items():
        if name == "member_offsets":
            out[name] = np.concatenate([old[name], arr[1:]])
        else:
            out[name] = np.concatenate([old[name], arr])
    return out


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _label(v: Any) -> int:
    return NO_LABEL if v is None else int(v)
