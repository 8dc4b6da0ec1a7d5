"""The groups table codec: :class:`ImageGroup` records to and from a (Geo)DataFrame."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely

from terracorpus.curation.errors import GroupingError
from terracorpus.curation.groups.records import ImageGroup, Member

FRAME_COLUMNS = (
    "group_id",
    "anchor_scene_id",
    "anchor_sensor",
    "crs",
    "minx",
    "miny",
    "maxx",
    "maxy",
    "row_off",
    "col_off",
    "height",
    "width",
    "gsd",
    "n_members",
    "sensors",
    "members",
)


def groups_to_frame(groups: Sequence[ImageGroup]) -> gpd.GeoDataFrame:
    """One row per group; geometry: the lon/lat footprint (EPSG:4326).

    ``members`` is a JSON string (a list of objects with the :class:`Member` fields, datetime
    as ISO 8601), as nested fields are in ``scenes.parquet``; ``sensors`` is a comma-joined
    list for quick filtering.
    """
    rows = [_group_row(g) for g in groups]
    frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    for col in ("minx", "miny", "maxx", "maxy", "gsd"):
        frame[col] = frame[col].astype("float64")
    for col in ("row_off", "col_off", "height", "width", "n_members"):
        frame[col] = frame[col].astype("int64")
    geometry = shapely.from_wkb([g.footprint_wkb for g in groups])
    return gpd.GeoDataFrame(frame, geometry=geometry, crs="EPSG:4326")


def _group_row(g: ImageGroup) -> dict[str, Any]:
    minx, miny, maxx, maxy = g.bounds
    row_off, col_off, height, width = g.window
    return {
        "group_id": g.group_id,
        "anchor_scene_id": g.anchor_scene_id,
        "anchor_sensor": g.anchor_sensor,
        "crs": g.crs,
        "minx": minx,
        "miny": miny,
        "maxx": maxx,
        "maxy": maxy,
        "row_off": row_off,
        "col_off": col_off,
        "height": height,
        "width": width,
        "gsd": g.gsd,
        "n_members": len(g.members),
        "sensors": ",".join(g.sensors),
        "members": json.dumps([_member_dict(m) for m in g.members]),
    }


def _member_dict(m: Member) -> dict[str, Any]:
    return {
        "scene_id": m.scene_id,
        "sensor": m.sensor,
        "datetime": m.datetime.isoformat(),
        "time_gap_days": m.time_gap_days,
        "coverage": m.coverage,
        "cloud_cover": m.cloud_cover,
        "role": m.role,
    }


def groups_from_frame(frame: gpd.GeoDataFrame) -> list[ImageGroup]:
    """The groups of a frame made by :func:`groups_to_frame` (or read from Parquet)."""
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise GroupingError(
            f"a groups table needs the columns {missing}; it has {list(frame.columns)}"
        )
    wkbs = shapely.to_wkb(frame.geometry.to_numpy())
    rows = frame[list(FRAME_COLUMNS)].to_dict("records")
    return [_group(row, bytes(wkb)) for row, wkb in zip(rows, wkbs, strict=True)]


def _group(row: dict[str, Any], wkb: bytes) -> ImageGroup:
    return ImageGroup(
        group_id=str(row["group_id"]),
        anchor_scene_id=str(row["anchor_scene_id"]),
        anchor_sensor=str(row["anchor_sensor"]),
        crs=str(row["crs"]),
        bounds=(float(row["minx"]), float(row["miny"]), float(row["maxx"]), float(row["maxy"])),
        footprint_wkb=wkb,
        window=(int(row["row_off"]), int(row["col_off"]), int(row["height"]), int(row["width"])),
        gsd=float(row["gsd"]),
        members=tuple(_member_from(d) for d in json.loads(row["members"])),
    )


def _member_from(d: dict[str, Any]) -> Member:
    role = d["role"]
    if role not in ("anchor", "member"):
        raise GroupingError(f"a group member has the unknown role {role!r}")
    cloud = d["cloud_cover"]
    return Member(
        scene_id=str(d["scene_id"]),
        sensor=str(d["sensor"]),
        datetime=datetime.fromisoformat(d["datetime"]),
        time_gap_days=float(d["time_gap_days"]),
        coverage=float(d["coverage"]),
        cloud_cover=None if cloud is None else float(cloud),
        role=role,
    )
