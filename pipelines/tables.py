"""Run tables written and read one partition at a time.

A partitioned table is one Parquet file whose row groups are its partitions (a tile of
groups, a batch of chips): a stage streams partitions into it as they are made, and a reader
takes one row group at a time, with only the columns it needs, so neither holds the whole
table. The file is written beside its target and renamed when complete, stamped with the
number of partitions it must hold; an old single-row-group table reads the same way (one
partition). Resuming after a kill is the writing stage's job: it keeps its finished
partitions in its scratch directory and streams them in again.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

META_KEY = b"terracorpus"


class PartitionedWriter:
    """Streams frames into ``target``, one row group each; see :func:`partitioned_writer`."""

    def __init__(self, tmp: Path, meta: dict[str, Any]) -> None:
        self._tmp = tmp
        self._meta = meta
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self.partitions = 0
        self.rows = 0

    def write(self, frame: pd.DataFrame | pa.Table) -> None:
        """Append one partition (an empty frame still counts as one, so none goes missing).

        ``frame`` is a (Geo)DataFrame or an Arrow table; every partition is cast to the
        first one's schema."""
        table = frame if isinstance(frame, pa.Table) else _arrow(frame)
        if self._writer is None:
            self._schema = _stamped(table.schema, self._meta)
            self._writer = pq.ParquetWriter(self._tmp, self._schema)
        assert self._schema is not None  # set with the writer
        self._writer.write_table(table.select(self._schema.names).cast(self._schema))
        self.partitions += 1
        self.rows += table.num_rows

    def close(self) -> None:
        """Finish the file (the caller renames it into place)."""
        if self._writer is None:
            raise ValueError("a partitioned table needs at least one partition")
        self._writer.close()
        self._writer = None


def _arrow(frame: pd.DataFrame) -> pa.Table:
    """A frame as Arrow, GeoParquet metadata included for a GeoDataFrame."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    buf.seek(0)
    return pq.read_table(buf)


def _stamped(schema: pa.Schema, meta: dict[str, Any]) -> pa.Schema:
    md = dict(schema.metadata or {})
    if b"geo" in md:  # the first partition's bounding box is not the table's
        geo = json.loads(md[b"geo"])
        for col in geo.get("columns", {}).values():
            col.pop("bbox", None)
        md[b"geo"] = json.dumps(geo).encode()
    md[META_KEY] = json.dumps(meta, default=str).encode()
    return schema.with_metadata(md)


@contextmanager
def partitioned_writer(
    target: Path, meta: dict[str, Any], partitions: int
) -> Iterator[PartitionedWriter]:
    """Write ``partitions`` row groups to ``target`` atomically; fewer is an error.

    ``meta`` is stamped with ``partitions``; the file appears only when all were written.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    writer = PartitionedWriter(tmp, {**meta, "partitions": partitions})
    try:
        yield writer
        if writer.partitions != partitions:
            raise ValueError(
                f"{target.name}: {writer.partitions} of {partitions} partitions were written"
            )
        writer.close()
        os.replace(tmp, target)
    except BaseException:
        with suppress(ValueError):
            writer.close()
        tmp.unlink(missing_ok=True)
        raise


def partition_count(path: Path) -> int:
    """Row groups (partitions) in a Parquet file."""
    return int(pq.ParquetFile(path).num_row_groups)


def iter_partitions(path: Path, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
    """The partitions of a table, one frame each (a GeoDataFrame for GeoParquet)."""
    pf = pq.ParquetFile(path)
    geo = b"geo" in (pf.schema_arrow.metadata or {})
    cols = list(columns) if columns is not None else None
    for i in range(pf.num_row_groups):
        table = pf.read_row_group(i, columns=cols)
        yield _frame(table, geo)


def _frame(table: pa.Table, geo: bool) -> pd.DataFrame:
    """A GeoDataFrame when the partition holds the table's geometry column, else a frame."""
    md = table.schema.metadata or {}
    if geo and b"geo" in md and json.loads(md[b"geo"])["primary_column"] in table.column_names:
        import geopandas as gpd

        buf = io.BytesIO()
        pq.write_table(table, buf)
        buf.seek(0)
        frame: pd.DataFrame = gpd.read_parquet(buf)
        return frame
    plain: pd.DataFrame = table.to_pandas()
    return plain
