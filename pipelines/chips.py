"""``chips.parquet``: its schema, declared once, and its strict reading into a chip table.

The describe stage writes the table with :data:`SCHEMA`; the dedup stage (and anyone curating
from it) reads it once with :func:`read_chip_table`, which checks the columns curation needs
against that schema — a missing or mistyped column is an error naming it — and returns
:class:`~terracorpus.curation.chips.ChipTable`, typed arrays in which curation never looks up
a column by name.

Columns: chip_id, group_id, scene_id, sensor, role ("anchor" | "member"), datetime, lon, lat
(chip centre, degrees), gsd (the member's native GSD), read_gsd (pixel size read for the
descriptors), window (col_off, row_off, width, height on the scene's finest grid),
overview_level (-1: full resolution), nodata_fraction, cloud_fraction, shadow_fraction,
snow_fraction, water_fraction, information, valid_pixels, descriptor (list<float32>).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import fields

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from terracorpus.curation.anchors import DescribedImages
from terracorpus.curation.chips import ChipTable
from terracorpus.curation.errors import ClusteringError
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.rundir import RunDir

log = logging.getLogger(__name__)

NAME = "chips.parquet"
NAMES_KEY = b"terracorpus.descriptor_names"

SCHEMA = pa.schema(
    [
        ("chip_id", pa.string()),
        ("group_id", pa.string()),
        ("scene_id", pa.string()),
        ("sensor", pa.string()),
        ("role", pa.string()),
        ("datetime", pa.timestamp("us", tz="UTC")),
        ("lon", pa.float64()),
        ("lat", pa.float64()),
        ("gsd", pa.float64()),
        ("read_gsd", pa.float64()),
        ("window", pa.list_(pa.int64(), 4)),
        ("overview_level", pa.int64()),
        ("nodata_fraction", pa.float64()),
        ("cloud_fraction", pa.float64()),
        ("shadow_fraction", pa.float64()),
        ("snow_fraction", pa.float64()),
        ("water_fraction", pa.float64()),
        ("information", pa.float64()),
        ("valid_pixels", pa.int64()),
        ("descriptor", pa.list_(pa.float32())),
    ]
)

# The columns curation reads: the chip table's array fields, each a column of SCHEMA.
COLUMNS = tuple(f.name for f in fields(ChipTable) if f.name != "descriptor_names")
_READ = list(COLUMNS)


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_floating(t) or pa.types.is_integer(t))


def _is_float_list(t: pa.DataType) -> bool:
    listed = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    return bool(listed and _is_number(t.value_type))


def _kind(t: pa.DataType) -> tuple[str, Callable[[pa.DataType], bool]]:
    """What a column of SCHEMA type ``t`` may hold when read: its family, not its width."""
    if _is_text(t):
        return "text", _is_text
    if _is_number(t):
        return "a number", _is_number
    return "a list of numbers", _is_float_list


def check_schema(schema: pa.Schema, source: str) -> None:
    """Refuse a chips table whose columns curation reads are missing or of the wrong kind."""
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise StageError(
            f"{source} lacks the column(s) {', '.join(missing)} that curation reads; rerun describe"
        )
    for name in COLUMNS:
        kind, ok = _kind(SCHEMA.field(name).type)
        found = schema.field(name).type
        if not ok(found):
            raise StageError(
                f"{source}: column {name} is {found}, not {kind} (describe writes "
                f"{SCHEMA.field(name).type}); rerun describe"
            )


def read_chip_table(run: RunDir, *, needed_by: str) -> ChipTable:
    """``chips.parquet`` of ``run`` as a chip table, rows sorted by chip id.

    Read one partition (row group) at a time, only the columns curation needs, each
    partition's descriptors turned into an array before the next is read.

    Raises:
        StageError: no table, a table made with another config, a missing or mistyped
            column, no chip, a missing id or role, or descriptors of several lengths.
    """
    path = run.path(NAME)
    parts = run.iter_table(NAME, needed_by=needed_by, columns=_READ)  # checks the stamp
    check_schema(pq.read_schema(path), str(path))
    frames, descriptors = [], []
    for part in parts:
        descriptors.append(_descriptors(part["descriptor"], str(path)))
        frames.append(part.drop(columns="descriptor"))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=_READ)
    if len(frame) == 0:
        raise StageError(f"{path} has no chips; check the describe stage's failures")
    for name in ("chip_id", "group_id", "role"):
        if frame[name].isna().any():
            raise StageError(f"{path}: column {name} has missing values; rerun describe")
    order = np.argsort(frame["chip_id"].to_numpy(dtype=object), kind="stable")
    frame = frame.iloc[order].reset_index(drop=True)
    descriptor = _stacked(descriptors, str(path))[order]
    names = _descriptor_names(run, descriptor.shape[1])
    try:
        return ChipTable(
            chip_id=frame["chip_id"].to_numpy(dtype=object),
            group_id=frame["group_id"].to_numpy(dtype=object),
            role=frame["role"].to_numpy(dtype=object),
            nodata_fraction=_floats(frame["nodata_fraction"]),
            cloud_fraction=_floats(frame["cloud_fraction"]),
            information=_floats(frame["information"]),
            lon=_floats(frame["lon"]),
            lat=_floats(frame["lat"]),
            descriptor=descriptor,
            descriptor_names=tuple(names),
        )
    except ClusteringError as e:
        raise StageError(f"{path}: {e}; rerun describe") from None


def described_images(frame: pd.DataFrame) -> DescribedImages:
    """Describe's rows (columns of :data:`SCHEMA`) as the arrays the anchor fallback ranks."""
    arrays = {
        f.name: frame[f.name].to_numpy(dtype=object)
        if _is_text(SCHEMA.field(f.name).type)
        else _floats(frame[f.name])
        for f in fields(DescribedImages)
    }
    return DescribedImages(**arrays)


def _floats(column: pd.Series) -> np.ndarray:
    return column.to_numpy(dtype=np.float64, na_value=np.nan)


def _stacked(parts: list[np.ndarray], source: str) -> np.ndarray:
    """The partitions' descriptors as one (N, D) array; a partition with no descriptor at all
    (width 0) is NaN rows of the others' width."""
    widths = {p.shape[1] for p in parts if p.shape[1] > 0}
    if len(widths) > 1:
        raise StageError(
            f"descriptors of {source} have different lengths {sorted(widths)}; rerun describe"
        )
    width = widths.pop() if widths else 0
    return np.concatenate(
        [p if p.shape[1] == width else np.full((len(p), width), np.nan) for p in parts]
    )


def _descriptors(column: pd.Series, source: str) -> np.ndarray:
    """(N, D) float64 descriptors; a chip without one is a NaN row."""
    lengths = {len(d) for d in column if d is not None}
    if len(lengths) > 1:
        raise StageError(
            f"descriptors of {source} have different lengths {sorted(lengths)}; rerun describe"
        )
    width = lengths.pop() if lengths else 0
    out = np.full((len(column), width), np.nan, dtype=np.float64)
    for i, d in enumerate(column):
        if d is not None:
            out[i] = np.asarray(d, dtype=np.float64)
    return out


def _descriptor_names(run: RunDir, width: int) -> list[str]:
    """Descriptor names: describe's artifact metadata (``descriptor_names``), or the schema
    metadata key ``terracorpus.descriptor_names`` (a JSON list); ``desc.<i>`` without."""
    meta = run.table_meta(NAME) or {}
    raw = (pq.read_schema(run.path(NAME)).metadata or {}).get(NAMES_KEY)
    if meta.get("descriptor_names"):
        names = [str(n) for n in meta["descriptor_names"]]
    elif raw:
        names = [str(n) for n in json.loads(raw)]
    else:
        log.warning("%s names no descriptor values; all weigh equally", NAME)
        return [f"desc.{i}" for i in range(width)]
    if len(names) != width:
        raise StageError(
            f"{run.path(NAME)} names {len(names)} descriptor values but its descriptors hold "
            f"{width}; rerun describe"
        )
    return names
