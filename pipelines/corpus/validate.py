"""``corpus validate``: is a corpus complete, readable and consistent with its manifest?

Every check that fails becomes a :class:`Problem` naming the array, shard or manifest row at
fault; the report is ok only without problems. Every array is decoded in full (pixels unless
``check_pixels`` is off), so each chunk's CRC32C is verified: a flipped bit anywhere, or a
chunk that cannot be decompressed, is a problem, never a traceback. A store that is not a
corpus at all, or of a format version this code cannot read, raises :class:`CorpusError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import zarr

from terracorpus.pipelines.corpus.format import (
    BAND_ARRAYS,
    GROUP_ARRAYS,
    GROUPS_GROUP,
    IMAGE_ARRAYS,
    MEMBER_ARRAYS,
    SENSORS_GROUP,
    array_at,
    check_root_attrs,
    corpus_meta,
    root_attrs,
)
from terracorpus.pipelines.corpus.location import CorpusLocation
from terracorpus.pipelines.corpus.manifest import read_manifest
from terracorpus.pipelines.corpus.shards import image_sha256
from terracorpus.pipelines.errors import CorpusError

ROOT_KEYS = (
    "sensors",
    "config",
    "config_hash",
    "software_version",
    "sources",
    "created",
    "counts",
    "shards",
)


@dataclass(frozen=True)
class Problem:
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class ValidationReport:
    url: str
    problems: list[Problem] = field(default_factory=list)
    images: int = 0
    groups: int = 0
    shards_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, where: str, what: str) -> None:
        self.problems.append(Problem(where, what))


def validate_corpus(
    target: str | CorpusLocation,
    *,
    storage_options: dict[str, Any] | None = None,
    check_pixels: bool = True,
) -> ValidationReport:
    """Check every shard, array and manifest row of the corpus at ``target``.

    Args:
        target: corpus directory (local path or fsspec URL).
        storage_options: fsspec options for remote targets.
        check_pixels: decode every image and compare its digest with the manifest.
    """
    loc = (
        target if isinstance(target, CorpusLocation) else CorpusLocation.of(target, storage_options)
    )
    try:
        root = loc.open_group()
    except CorpusError:
        raise
    except Exception as e:  # a damaged root zarr.json
        raise CorpusError(
            f"{loc.url_of('corpus.zarr')} cannot be opened as a Zarr store "
            f"({type(e).__name__}: {e}); its root metadata is damaged: rebuild the corpus"
        ) from None
    check_root_attrs(root_attrs(root), loc.url_of("corpus.zarr"), require_complete=False)
    meta = corpus_meta(root)
    report = ValidationReport(loc.url)
    if meta.get("complete") is not True:
        report.add("corpus.zarr", "incomplete: the write that made it was interrupted")
    missing = [k for k in ROOT_KEYS if k not in meta]
    if missing:
        report.add("corpus.zarr", f"root attributes lack {missing}")
        return report
    try:
        counts = {str(s): int(n) for s, n in meta["counts"]["images"].items()}
        report.images, report.groups = sum(counts.values()), int(meta["counts"]["groups"])
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        report.add("corpus.zarr", f"root attribute 'counts' is malformed ({type(e).__name__}: {e})")
        return report
    checks: list[tuple[str, Callable[[], None]]] = [
        *(
            (f"{SENSORS_GROUP}/{s}", partial(_check_sensor, root, s, n, _sensor(meta, s), report))
            for s, n in counts.items()
        ),
        *(
            (f"{SENSORS_GROUP}/{s}", partial(_check_image_radiometry, root, s, n, meta, report))
            for s, n in counts.items()
            if meta.get("format_version", 1) >= 2 and _sensor(meta, s) is not None
        ),
        (GROUPS_GROUP, partial(_check_groups, root, counts, report.groups, report)),
        ("corpus.zarr shards", partial(_check_shards, loc, meta["shards"], counts, report)),
        ("manifest.parquet", partial(_check_manifest, loc, root, counts, report, check_pixels)),
    ]
    for where, check in checks:
        try:
            check()
        except Exception as e:  # damaged metadata of a kind no check foresaw: still a problem
            report.add(where, f"could not be checked: {type(e).__name__}: {e}")
    return report


def _sensor(meta: dict[str, Any], sensor: str) -> dict[str, Any] | None:
    sensors = meta.get("sensors")
    desc = sensors.get(sensor) if isinstance(sensors, dict) else None
    return desc if isinstance(desc, dict) else None


def _array(root: zarr.Group, path: str) -> zarr.Array[Any] | None:
    try:
        return array_at(root, path)
    except CorpusError:
        return None
    except Exception:  # unreadable array metadata (zarr.json): the array is as good as missing
        return None


def _decoded(arr: zarr.Array[Any], where: str, report: ValidationReport) -> np.ndarray | None:
    """The whole array, its chunks' checksums verified; None (and a problem) if it fails."""
    try:
        return _plain(np.asarray(arr[:]))
    except Exception as e:  # codec errors come in many types (checksum, zstd, blosc, vlen)
        report.add(
            where,
            "cannot be decoded: a chunk is corrupt (its checksum or compression does not check "
            f"out: {type(e).__name__}: {e}); rerun the materialize that wrote it",
        )
        return None


def _check_sensor(
    root: zarr.Group, sensor: str, n: int, desc: dict[str, Any] | None, report: ValidationReport
) -> None:
    base = f"{SENSORS_GROUP}/{sensor}"
    if desc is None:
        report.add(base, "sensor has images but no entry in the root 'sensors' attribute")
        return
    h, w = desc["chip_size"]
    want = {
        "pixels": ((n, len(desc["bands"]), h, w), desc["dtype"]),
        "valid": ((n, h, w), "uint8"),
        **{k: ((n, *shape), dt) for k, (dt, shape) in IMAGE_ARRAYS.items()},
    }
    for name, (shape, dtype) in want.items():
        arr = _array(root, f"{base}/{name}")
        if arr is None:
            report.add(f"{base}/{name}", "missing array")
        elif arr.shape != shape:
            report.add(f"{base}/{name}", f"shape {arr.shape}, expected {shape} ({n} images)")
        elif dtype != "str" and arr.dtype != np.dtype(dtype):
            report.add(f"{base}/{name}", f"dtype {arr.dtype}, expected {dtype}")
        elif name not in ("pixels", "valid"):  # pixels: checked shard by shard, below
            _decoded(arr, f"{base}/{name}", report)
    label = _array(root, f"{base}/label")
    if label is not None:
        _decoded(label, f"{base}/label", report)


def _check_image_radiometry(
    root: zarr.Group, sensor: str, n: int, meta: dict[str, Any], report: ValidationReport
) -> None:
    desc = _sensor(meta, sensor)
    if desc is not None:
        _check_band_arrays(root, sensor, n, len(desc["bands"]), report)


def _check_band_arrays(
    root: zarr.Group, sensor: str, n: int, bands: int, report: ValidationReport
) -> None:
    """Format 2: each image's scale, offset and nodata, (image, band) float64, finite scale
    and offset."""
    for name, dtype in BAND_ARRAYS.items():
        path = f"{SENSORS_GROUP}/{sensor}/{name}"
        arr = _array(root, path)
        if arr is None:
            report.add(path, "missing array")
        elif arr.shape != (n, bands) or arr.dtype != np.dtype(dtype):
            report.add(path, f"{arr.shape} {arr.dtype}, expected {(n, bands)} {dtype}")
        elif name != "nodata":
            values = _decoded(arr, path, report)
            if values is not None and not np.isfinite(values).all():
                report.add(path, "holds values that are not finite numbers")


def _check_groups(
    root: zarr.Group, counts: dict[str, int], n: int, report: ValidationReport
) -> None:
    cols: dict[str, np.ndarray] = {}
    for name in [*GROUP_ARRAYS, *MEMBER_ARRAYS, "member_offsets"]:
        arr = _array(root, f"{GROUPS_GROUP}/{name}")
        if arr is None:
            report.add(f"{GROUPS_GROUP}/{name}", "missing array")
            continue
        values = _decoded(arr, f"{GROUPS_GROUP}/{name}", report)
        if values is not None:
            cols[name] = values
    if len(cols) < len(GROUP_ARRAYS) + len(MEMBER_ARRAYS) + 1:
        return  # the consistency checks below need every table
    for name in GROUP_ARRAYS:
        if len(cols[name]) != n:
            report.add(f"{GROUPS_GROUP}/{name}", f"{len(cols[name])} rows, expected {n} groups")
    off = cols["member_offsets"]
    m = len(cols["member_index"])
    if len(off) != n + 1 or off[0] != 0 or off[-1] != m or (np.diff(off) <= 0).any():
        report.add(
            f"{GROUPS_GROUP}/member_offsets", f"not valid CSR offsets for {n} groups, {m} members"
        )
        return
    for s, i in zip(cols["member_sensor"], cols["member_index"], strict=True):
        if not 0 <= int(i) < counts.get(str(s), 0):
            report.add(f"{GROUPS_GROUP}/member_index", f"row {i} of sensor {s} does not exist")
            return
    first = off[:-1]
    if (cols["member_sensor"][first] != cols["anchor_sensor"]).any() or (
        cols["member_index"][first] != cols["anchor_index"]
    ).any():
        report.add(f"{GROUPS_GROUP}/anchor_index", "an anchor is not its group's first member")


def _check_shards(
    loc: CorpusLocation,
    shards: list[dict[str, Any]],
    counts: dict[str, int],
    report: ValidationReport,
) -> None:
    fs = loc.fs()
    for sensor, n in counts.items():
        pix = [s for s in shards if s["path"].startswith(f"{SENSORS_GROUP}/{sensor}/pixels/")]
        covered = sum(s["rows"][1] - s["rows"][0] for s in pix)
        if covered != n:
            report.add(
                f"{SENSORS_GROUP}/{sensor}/pixels", f"shards listed cover {covered} of {n} images"
            )
    for s in shards:
        path = loc.path(f"corpus.zarr/{s['path']}")
        where = f"shard {s['path']} (rows {s['rows'][0]}-{s['rows'][1]})"
        report.shards_checked += 1
        if not fs.exists(path):
            report.add(where, "missing")
            continue
        blob = fs.cat_file(path)
        if len(blob) != s["size"]:
            report.add(where, f"truncated or rewritten: {len(blob)} bytes, expected {s['size']}")
        elif hashlib.sha256(blob).hexdigest() != s["sha256"]:
            report.add(where, "corrupt: sha256 differs from the one recorded at write time")


def _check_manifest(
    loc: CorpusLocation,
    root: zarr.Group,
    counts: dict[str, int],
    report: ValidationReport,
    check_pixels: bool,
) -> None:
    try:
        manifest = read_manifest(loc)
    except CorpusError as e:
        report.add("manifest.parquet", str(e))
        return
    if len(manifest) != sum(counts.values()):
        report.add(
            "manifest.parquet",
            f"{len(manifest)} rows, but the store holds {sum(counts.values())} images",
        )
    for sensor, rows in manifest.groupby("sensor"):
        ids = _array(root, f"{SENSORS_GROUP}/{sensor}/image_id")
        pixels = _array(root, f"{SENSORS_GROUP}/{sensor}/pixels")
        if ids is None or pixels is None:
            report.add("manifest.parquet", f"names sensor {sensor}, which the store lacks")
            continue
        rows = rows.sort_values("row")
        try:
            stored = np.asarray(ids[:]).astype(object)
        except Exception:  # already reported by the sensor's checks
            continue
        idx = rows["row"].to_numpy()
        if (idx >= len(stored)).any() or (stored[idx] != rows["image_id"].to_numpy()).any():
            report.add(
                "manifest.parquet",
                f"image ids of sensor {sensor} disagree with {SENSORS_GROUP}/{sensor}/image_id",
            )
            continue
        if check_pixels:
            _check_pixels(pixels, rows, report)


def _check_pixels(pixels: zarr.Array[Any], rows: Any, report: ValidationReport) -> None:
    k = pixels.shards[0] if pixels.shards else pixels.chunks[0]
    digests = dict(zip(rows["row"].to_numpy(), rows["sha256"].to_numpy(), strict=True))
    for start in range(0, pixels.shape[0], k):
        stop = min(start + k, pixels.shape[0])
        shard = f"{pixels.path}/c/{start // k}/0/0/0 (rows {start}-{stop})"
        try:
            block = np.asarray(pixels[start:stop])
        except Exception as e:  # codec errors come in many types
            report.add(f"shard {shard}", f"cannot be decoded: {type(e).__name__}: {e}")
            continue
        bad = [r for r in range(start, stop) if image_sha256(block[r - start]) != digests.get(r)]
        if bad:
            report.add(
                f"shard {shard}",
                f"{len(bad)} image(s) differ from the manifest digest "
                f"(rows {bad[:5]}{'...' if len(bad) > 5 else ''})",
            )


def _plain(values: np.ndarray) -> np.ndarray:
    """numpy StringDType columns as object arrays (comparable with pandas columns)."""
    return values.astype(object) if values.dtype.kind == "T" else values
