"""Searching a corpus by place, time and sensor, and writing a subset of it as a new corpus.

A group matches a query when its lon/lat footprint intersects the bbox and at least one of its
images is of one of the sensors and was taken within the datetime interval (each criterion
only when given). A subset keeps whole groups (every image, the anchor first) and is written
by the corpus writer itself, so it is a corpus like any other: validated, checksummed, with
its own manifest and STAC collection, read by training unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr
from distributed import Client

from terracorpus.pipelines.corpus.format import BAND_ARRAYS, corpus_meta
from terracorpus.pipelines.corpus.location import CorpusLocation
from terracorpus.pipelines.corpus.manifest import read_manifest
from terracorpus.pipelines.corpus.plan import GroupSpec, ImageSpec, SensorLayout, plan_corpus
from terracorpus.pipelines.corpus.shards import ShardPixels
from terracorpus.pipelines.corpus.writer import Provenance, WriteSummary, write_corpus
from terracorpus.pipelines.errors import CorpusError

Bbox = tuple[float, float, float, float]


@dataclass(frozen=True)
class Query:
    """What to look for; None matches everything. ``start``/``end`` are inclusive UTC."""

    bbox: Bbox | None = None
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    sensors: tuple[str, ...] = ()


def parse_datetime(text: str | None) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """A STAC API ``datetime``: one instant or date (a date means the whole day), or
    ``start/end`` with ``..`` or nothing for an open end."""
    if not text:
        return None, None
    parts = text.split("/")
    if len(parts) > 2:
        raise CorpusError(f"datetime {text!r}: give one date/time or start/end")
    try:
        if len(parts) == 1:
            return _instant(parts[0], end=False), _instant(parts[0], end=True)
        return _instant(parts[0], end=False), _instant(parts[1], end=True)
    except ValueError as e:
        raise CorpusError(
            f"datetime {text!r} is not ISO 8601 ({e}); e.g. 2023-06-01/2023-08-31"
        ) from None


def _instant(text: str, *, end: bool) -> pd.Timestamp | None:
    if text in ("", ".."):
        return None
    ts = pd.Timestamp(text)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    is_date = len(text) <= 10  # YYYY-MM-DD: the whole day
    return ts + pd.Timedelta(days=1) - pd.Timedelta(1, "ns") if end and is_date else ts


def search_groups(location: CorpusLocation, query: Query) -> pd.DataFrame:
    """One row per matching group, in group order: ``group_index, group_id, split, images,
    sensors, start, end, west, south, east, north``."""
    root = location.open_group()
    groups = _group_frame(root)
    images = read_manifest(location)
    _check_sensors(query, images)
    hit = _image_matches(images, query)
    matching = set(images.loc[hit, "group_id"])
    keep = groups["group_id"].isin(matching)
    if query.bbox is not None:
        w, s, e, n = query.bbox
        keep &= (groups["west"] <= e) & (groups["east"] >= w)
        keep &= (groups["south"] <= n) & (groups["north"] >= s)
    out = groups[keep]
    per_group = images[images["group_id"].isin(out["group_id"])].groupby("group_id")
    summary = pd.DataFrame(
        {
            "images": per_group.size(),
            "sensors": per_group["sensor"].agg(lambda s: ",".join(sorted(set(s)))),
            "start": per_group["datetime"].min(),
            "end": per_group["datetime"].max(),
        }
    )
    out = out.join(summary, on="group_id")
    columns = ["group_index", "group_id", "split", "images", "sensors", "start", "end"]
    return out[[*columns, "west", "south", "east", "north"]].reset_index(drop=True)


def _group_frame(root: zarr.Group) -> pd.DataFrame:
    bounds = _values(root, "groups/lonlat_bounds")
    return pd.DataFrame(
        {
            "group_index": np.arange(len(bounds)),
            "group_id": _values(root, "groups/group_id"),
            "split": _values(root, "groups/split"),
            "west": bounds[:, 0],
            "south": bounds[:, 1],
            "east": bounds[:, 2],
            "north": bounds[:, 3],
        }
    )


def _check_sensors(query: Query, images: pd.DataFrame) -> None:
    unknown = sorted(set(query.sensors) - set(images["sensor"]))
    if unknown:
        raise CorpusError(
            f"the corpus has no sensor {', '.join(unknown)}; it has "
            f"{', '.join(sorted(set(images['sensor'])))}"
        )


def _image_matches(images: pd.DataFrame, query: Query) -> pd.Series:
    hit = pd.Series(True, index=images.index)
    if query.sensors:
        hit &= images["sensor"].isin(query.sensors)
    times = pd.to_datetime(images["datetime"], utc=True)
    if query.start is not None:
        hit &= times >= query.start
    if query.end is not None:
        hit &= times <= query.end
    return hit


# -- subset -----------------------------------------------------------------------------------


def write_subset(
    source: CorpusLocation,
    target: CorpusLocation,
    group_ids: Sequence[str],
    *,
    scratch: Path,
    client: Client | None = None,
) -> WriteSummary:
    """Write the groups ``group_ids`` of ``source`` as a new corpus at ``target``.

    Pixels and validity are copied as stored (no decoding to physical values and back); the
    codec is the source's default. Raises :class:`CorpusError` when no group is given or
    ``target`` already holds a corpus.
    """
    if not group_ids:
        raise CorpusError("the subset is empty: no group matches; nothing written")
    root = source.open_group()
    meta = corpus_meta(root)
    layouts = {name: _layout(name, spec) for name, spec in meta["sensors"].items()}
    groups, images, rows = _specs(root, set(group_ids))
    digests = read_manifest(source).set_index("image_id")["sha256"]
    sources = {i: (sensor, row, str(digests.get(i, ""))) for i, (sensor, row) in rows.items()}
    plan = plan_corpus(groups, images, layouts, 64.0, max_images_per_shard=256)
    provenance = Provenance(
        config=meta.get("config", {}),
        config_hash=str(meta.get("config_hash", "")),
        sources=list(meta.get("sources", [])),
        collection_id=f"terracorpus-subset-{_digest(sorted(group_ids))}",
    )
    reader = CorpusShardReader(source.url, source.storage_options, sources)
    return write_corpus(target, plan, reader, scratch=scratch, provenance=provenance, client=client)


def _digest(group_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(group_ids).encode()).hexdigest()[:12]


def _layout(name: str, spec: dict[str, Any]) -> SensorLayout:
    bands = tuple(dict(b) for b in spec["bands"])
    nodata = bands[0].get("nodata") if bands else None
    return SensorLayout(
        name=name,
        bands=bands,
        dtype=str(spec["dtype"]),
        chip_shape=(int(spec["chip_size"][0]), int(spec["chip_size"][1])),
        gsd=float(spec["gsd"]),
        fill_value=0 if nodata is None else nodata,
    )


def _values(root: zarr.Group, path: str) -> np.ndarray:
    node = root[path]
    if not isinstance(node, zarr.Array):
        raise CorpusError(f"{path} is not an array in the corpus")
    values = np.asarray(node[:])
    # Zarr's variable-length strings come as numpy's StringDType: make them plain str.
    return values.astype(object).astype(str) if values.dtype.kind in "OT" else values


def _specs(
    root: zarr.Group, wanted: set[str]
) -> tuple[list[GroupSpec], list[ImageSpec], dict[str, tuple[str, int]]]:
    """The wanted groups and their images as the writer's specs, and each image's source row."""
    gid = _values(root, "groups/group_id")
    offsets = _values(root, "groups/member_offsets")
    m_sensor = _values(root, "groups/member_sensor")
    m_index = _values(root, "groups/member_index")
    cols = {
        "crs": _values(root, "groups/crs"),
        "bounds": _values(root, "groups/bounds"),
        "lonlat": _values(root, "groups/lonlat_bounds"),
        "cluster": _values(root, "groups/cluster_id"),
        "split": _values(root, "groups/split"),
    }
    tables: dict[str, dict[str, np.ndarray]] = {}
    groups, images, rows = [], [], {}
    for g in np.flatnonzero(np.isin(gid, list(wanted))):
        members = []
        for k in range(int(offsets[g]), int(offsets[g + 1])):
            sensor, row = str(m_sensor[k]), int(m_index[k])
            table = tables.setdefault(sensor, _image_table(root, sensor))
            image = _image_spec(table, sensor, row, str(gid[g]))
            images.append(image)
            rows[image.image_id] = (sensor, row)
            members.append((sensor, image.image_id))
        groups.append(
            GroupSpec(
                group_id=str(gid[g]),
                members=tuple(members),
                crs=str(cols["crs"][g]),
                bounds=_bbox(cols["bounds"][g]),
                lonlat_bounds=_bbox(cols["lonlat"][g]),
                cluster_id=int(cols["cluster"][g]),
                split=str(cols["split"][g]),
            )
        )
    missing = wanted - {g.group_id for g in groups}
    if missing:
        raise CorpusError(f"the corpus has no group {', '.join(sorted(missing)[:5])}")
    return groups, images, rows


_IMAGE_COLUMNS = (
    "image_id",
    "datetime",
    "crs",
    "transform",
    "gsd",
    "lon",
    "lat",
    "cloud_cover",
    "sun_elevation",
    "off_nadir",
    "source_item",
    "source_href",
)


def _image_table(root: zarr.Group, sensor: str) -> dict[str, np.ndarray]:
    table = {name: _values(root, f"sensors/{sensor}/{name}") for name in _IMAGE_COLUMNS}
    group = root[f"sensors/{sensor}"]
    for name in BAND_ARRAYS:  # format 2: per image; format 1: the sensor's, the layout's
        if name in group:  # type: ignore[operator]
            table[name] = _values(root, f"sensors/{sensor}/{name}")
    return table


def _image_spec(table: dict[str, np.ndarray], sensor: str, row: int, group_id: str) -> ImageSpec:
    image_id = str(table["image_id"][row])
    return ImageSpec(
        image_id=image_id,
        sensor=sensor,
        group_id=group_id,
        scene_id=image_id.split("/", 1)[-1],
        datetime_ns=int(table["datetime"][row]),
        crs=str(table["crs"][row]),
        transform=_affine(table["transform"][row]),
        gsd=float(table["gsd"][row]),
        lon=float(table["lon"][row]),
        lat=float(table["lat"][row]),
        cloud_cover=float(table["cloud_cover"][row]),
        sun_elevation=float(table["sun_elevation"][row]),
        off_nadir=float(table["off_nadir"][row]),
        source_item=str(table["source_item"][row]),
        source_href=str(table["source_href"][row]),
        **{name: _floats(table[name][row]) for name in BAND_ARRAYS if name in table},
    )


def _floats(v: np.ndarray) -> tuple[float, ...]:
    return tuple(float(x) for x in v)


def _bbox(v: np.ndarray) -> tuple[float, float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]), float(v[3]))


def _affine(v: np.ndarray) -> tuple[float, float, float, float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]), float(v[3]), float(v[4]), float(v[5]))


@dataclass(frozen=True)
class CorpusShardReader:
    """Reads a shard's images from another corpus (stored values, as they are), checking each
    against the source manifest's sha256 (a missing shard reads as fill values in Zarr)."""

    url: str
    storage_options: dict[str, Any]
    rows: dict[str, tuple[str, int, str]]  # image id -> (sensor, row, sha256) in the source

    def __call__(self, images: Sequence[ImageSpec], layout: SensorLayout) -> ShardPixels:
        root = CorpusLocation.of(self.url, self.storage_options).open_group()
        sensor = layout.name
        src_rows = [self.rows[i.image_id][1] for i in images]
        pixels = root[f"sensors/{sensor}/pixels"]
        valid = root[f"sensors/{sensor}/valid"]
        assert isinstance(pixels, zarr.Array) and isinstance(valid, zarr.Array)
        chip_cloud = _values(root, f"sensors/{sensor}/chip_cloud")[src_rows]
        labels = (
            [int(v) for v in _values(root, f"sensors/{sensor}/label")[src_rows]]
            if "label" in root[f"sensors/{sensor}"]  # type: ignore[operator]
            else None
        )
        raw = [np.asarray(pixels[r]) for r in src_rows]
        for image, values in zip(images, raw, strict=True):
            if hashlib.sha256(values.tobytes()).hexdigest() != self.rows[image.image_id][2]:
                raise CorpusError(
                    f"corpus {self.url}: image {image.image_id} does not match its manifest "
                    "sha256 (a missing or damaged shard); run `terracorpus corpus validate` on it"
                )
        return ShardPixels(
            pixels=np.stack(raw),
            valid=np.stack([np.asarray(valid[r]) for r in src_rows]).astype("uint8"),
            transforms=[None] * len(images),
            chip_cloud=[float(v) for v in chip_cloud],
            labels=labels,
        )

    def for_images(self, images: Sequence[ImageSpec]) -> CorpusShardReader:
        return replace(self, rows={i.image_id: self.rows[i.image_id] for i in images})
