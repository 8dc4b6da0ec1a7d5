"""The corpus writer: store layout, one Dask task per shard, resume, and atomic publish.

:func:`write_corpus` turns a :class:`CorpusPlan` into a corpus directory:

1. the store is created under a temporary name (``corpus.zarr.partial`` locally; on object
   storage in place, with ``complete: false`` in its root attributes);
2. each shard is written whole by one task (:func:`shards.write_shard`); the client saves a
   done marker per shard (with the sha256 of the shard objects) in the scratch directory;
3. per-image metadata arrays and group tables (those the plan alone decides while the shard
   tasks run, the rest after), the manifest and the STAC collection follow;
4. the root attributes are rewritten with ``complete: true`` (the commit on object storage)
   and the store is renamed to ``corpus.zarr`` (local).

A rerun after a crash finds the markers and writes only the missing shards; shard bytes are
deterministic, so the result is identical in content to an uninterrupted run. Appending
(``append=True``) grows an existing corpus in place: it is marked incomplete first and
complete again at the end, so an interrupted append is visible and resumable.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import zarr
from distributed import Client

from terracorpus.pipelines.cluster import run_tasks
from terracorpus.pipelines.corpus import tables
from terracorpus.pipelines.corpus.codecs import compressors
from terracorpus.pipelines.corpus.format import (
    ATTRS_KEY,
    BAND_ARRAY_DIMS,
    BAND_ARRAYS,
    FORMAT_NAME,
    FORMAT_VERSION,
    GROUPS_GROUP,
    PIXEL_DIMS,
    SENSORS_GROUP,
    STORE_NAME,
    VALID_DIMS,
    corpus_meta,
    missing_arrays,
)
from terracorpus.pipelines.corpus.location import CorpusLocation
from terracorpus.pipelines.corpus.manifest import build_manifest, read_manifest, write_manifest
from terracorpus.pipelines.corpus.plan import CorpusPlan, SensorLayout, ShardSpec
from terracorpus.pipelines.corpus.shards import ShardReader, ShardResult, ShardTask, write_shard
from terracorpus.pipelines.corpus.stac import build_collection, write_collection
from terracorpus.pipelines.errors import CorpusError
from terracorpus.pipelines.rundir import Failure, write_json_atomic

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
MARKERS_DIR = "shards"
META_CHUNK = 65536
META_LEVEL = 3


@dataclass(frozen=True)
class Provenance:
    """What the corpus records about how it was made."""

    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)
    collection_id: str = "terracorpus-corpus"


@dataclass
class WriteSummary:
    """What a write did: totals after it, shards written now and reused from a prior run."""

    url: str
    images: dict[str, int]
    groups: int
    shards_written: int
    shards_reused: int
    failures: list[Failure]


def write_corpus(
    location: CorpusLocation,
    plan: CorpusPlan,
    reader: ShardReader,
    *,
    scratch: Path,
    provenance: Provenance,
    codec: str = "blosc-zstd",
    level: int = 3,
    client: Client | None = None,
    append: bool = False,
    replace: bool = False,
) -> WriteSummary:
    """Write (or append) the corpus described by ``plan``; resumable through ``scratch``.

    Args:
        location: the corpus directory (local or fsspec URL).
        plan: rows, shards and groups (:func:`plan.plan_corpus`).
        reader: reads a shard's images; runs in the Dask workers.
        scratch: a local directory for the resume state and per-shard done markers.
        provenance: config, config hash and sources for the root attributes.
        codec, level: compression of the pixel and validity arrays (new arrays only).
        client: a Dask client; without one, shards are written in this process.
        append: grow the existing corpus at ``location`` instead of writing a new one.
        replace: rebuild over an existing corpus (it is taken out of the way first, so a
            crash leaves no corpus rather than a stale one that looks current).
    """
    store_name = STORE_NAME if append else location.partial_name
    if replace and not append and location.has_complete_store():
        location.retire()
    if not append and (location.has_complete_store() or (location.is_local and location.exists())):
        raise CorpusError(
            f"a corpus already exists at {location.url_of(STORE_NAME)}; remove it, write to "
            "another place, or append to it with --append-to"
        )
    if not plan.shards:
        raise CorpusError("nothing to write: the plan has no images (no kept groups?)")
    state = _begin(location, store_name, plan, scratch, append)
    _prepare_store(location, store_name, plan, codec, level, append)
    pending = [s for s in plan.shards if not _is_done(location, store_name, scratch, s)]
    log.info("materialize: %d of %d shards to write", len(pending), len(plan.shards))
    tasks = [
        ShardTask(location, store_name, s, plan.layouts[s.sensor], reader.for_images(s.images))
        for s in pending
    ]
    # The arrays the plan alone decides are written while the shard tasks run.
    root = zarr.open_group(location.store(store_name), mode="r+")
    with ThreadPoolExecutor(max_workers=8) as pool:
        early = [pool.submit(_put, *p) for p in _planned_puts(root, plan)]
        _run(tasks, scratch, client)
        for f in early:
            f.result()
    results = [_load_marker(scratch, s) for s in plan.shards]
    root_meta = _finish(location, store_name, plan, results, provenance, state, append)
    if not append:
        location.publish()
        location.drop_retired()
    shutil.rmtree(scratch, ignore_errors=True)
    return WriteSummary(
        url=location.url,
        images=dict(root_meta["counts"]["images"]),
        groups=int(root_meta["counts"]["groups"]),
        shards_written=len(pending),
        shards_reused=len(plan.shards) - len(pending),
        failures=[Failure(**f) for r in results for f in r.failures],
    )


# -- state and markers ---------------------------------------------------------------------
def _begin(
    location: CorpusLocation, store_name: str, plan: CorpusPlan, scratch: Path, append: bool
) -> dict[str, Any]:
    """Load the resume state, or start afresh when there is none or it is for another plan."""
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / STATE_FILE
    fingerprint = plan.fingerprint()
    state = json.loads(path.read_text()) if path.exists() else None
    if state and state.get("fingerprint") == fingerprint and state.get("url") == location.url:
        log.info("materialize: resuming an interrupted write (%s)", path)
        return dict(state)
    shutil.rmtree(scratch / MARKERS_DIR, ignore_errors=True)
    fs = location.fs()
    if not append and fs.exists(location.path(store_name)):
        fs.rm(location.path(store_name), recursive=True)  # a partial store of another plan
    state = {
        "fingerprint": fingerprint,
        "url": location.url,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(path, state)
    return state


def _marker(scratch: Path, shard: ShardSpec) -> Path:
    return scratch / MARKERS_DIR / shard.sensor / f"{shard.index:06d}.json"


def _is_done(location: CorpusLocation, store_name: str, scratch: Path, shard: ShardSpec) -> bool:
    p = _marker(scratch, shard)
    if not p.exists():
        return False
    fs = location.fs()
    for key, obj in json.loads(p.read_text())["objects"].items():
        path = location.path(f"{store_name}/{key}")
        if not fs.exists(path) or fs.size(path) != obj["size"]:
            return False
    return True


def _load_marker(scratch: Path, shard: ShardSpec) -> ShardResult:
    return ShardResult(**json.loads(_marker(scratch, shard).read_text()))


def _run(tasks: list[ShardTask], scratch: Path, client: Client | None) -> None:
    def save(_: int, result: ShardResult) -> None:
        target = scratch / MARKERS_DIR / result.sensor / f"{result.index:06d}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(vars(result), separators=(",", ":")))
        os.replace(tmp, target)  # a marker is whole or absent

    if client is None:
        for i, task in enumerate(tasks):
            save(i, write_shard(task))
        return
    key = f"corpus-shard-{uuid.uuid4().hex[:8]}"
    run_tasks(client, write_shard, tasks, desc="materialize", key_prefix=key, on_result=save)


# -- store layout ----------------------------------------------------------------------------
def _prepare_store(
    location: CorpusLocation,
    store_name: str,
    plan: CorpusPlan,
    codec: str,
    level: int,
    append: bool,
) -> None:
    """Create (or grow) the pixel and validity arrays; mark the store incomplete."""
    root = zarr.open_group(location.store(store_name), mode="a")
    meta = corpus_meta(root) if append else _new_meta()
    if append:
        _check_layouts(meta, plan)
    meta["complete"] = False
    root.attrs[ATTRS_KEY] = meta
    for sensor, layout in plan.layouts.items():
        group = root.require_group(f"{SENSORS_GROUP}/{sensor}")
        total = plan.total_images(sensor)
        k = plan.images_per_shard[sensor]
        h, w = layout.chip_shape
        shapes = {"pixels": (len(layout.bands), h, w), "valid": (h, w)}
        for name, inner in shapes.items():
            dtype = layout.dtype if name == "pixels" else "uint8"
            if name in group:
                arr = group[name]
                assert isinstance(arr, zarr.Array)
                if arr.shape[0] != total:
                    arr.resize((total, *inner))
                continue
            group.create_array(
                name,
                shape=(total, *inner),
                chunks=(1, *inner),
                shards=(k, *inner),
                dtype=dtype,
                fill_value=layout.fill_value if name == "pixels" else 0,
                compressors=compressors(codec, level, itemsize=np.dtype(dtype).itemsize),
                dimension_names=PIXEL_DIMS if name == "pixels" else VALID_DIMS,
                attributes=_pixel_attrs(layout) if name == "pixels" else _valid_attrs(),
            )


def _new_meta() -> dict[str, Any]:
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "complete": False}


def _check_layouts(meta: dict[str, Any], plan: CorpusPlan) -> None:
    for sensor, layout in plan.layouts.items():
        old = meta.get("sensors", {}).get(sensor)
        if old is None:
            continue
        new = json.loads(json.dumps(layout.attrs()))
        for key in ("dtype", "chip_size", "bands"):
            if old.get(key) != new[key]:
                raise CorpusError(
                    f"cannot append: sensor {sensor} has {key} {old.get(key)} in the corpus but "
                    f"{new[key]} in this run; use the same chip size and sensor definition"
                )


def _pixel_attrs(layout: SensorLayout) -> dict[str, Any]:
    def col(key: str) -> list[Any]:
        return [b[key] for b in layout.bands]

    return {
        "coordinates": "image_id",
        "bands": col("name"),
        "common_name": col("common_name"),
        "center_wavelength": col("center_wavelength"),
        "full_width_half_max": col("full_width_half_max"),
        "band_gsd": col("gsd"),
        "scale": col("scale"),
        "offset": col("offset"),
        "nodata": col("nodata"),
    }


def _valid_attrs() -> dict[str, Any]:
    return {"coordinates": "image_id", "description": "1 = usable; 0 = nodata, cloud, shadow"}


# -- finishing -------------------------------------------------------------------------------
def _finish(
    location: CorpusLocation,
    store_name: str,
    plan: CorpusPlan,
    results: list[ShardResult],
    provenance: Provenance,
    state: dict[str, Any],
    append: bool,
) -> dict[str, Any]:
    """Metadata arrays, group tables, manifest, collection; then the commit."""
    facts = {f["image_id"]: f for r in results for f in r.images}
    root = zarr.open_group(location.store(store_name), mode="r+")
    new_cols = tables.image_columns(plan, facts)
    puts = [
        put
        for sensor, cols in new_cols.items()
        for put in _image_arrays(
            root,
            sensor,
            {k: v for k, v in cols.items() if k in tables.FACT_COLUMNS},
            plan.base_images.get(sensor, 0),
        )
    ]
    # Many small arrays: written concurrently, as each is a few round trips to storage.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda p: _put(*p), puts))
    manifest = build_manifest(plan, new_cols, facts)
    if append:
        old = read_manifest(location)
        both = pd.concat([old.to_crs(manifest.crs), manifest], ignore_index=True)
        manifest = gpd.GeoDataFrame(both, geometry="geometry", crs=manifest.crs)
    write_manifest(location, manifest)
    meta = _root_meta(corpus_meta(root), plan, results, provenance, state, append)
    meta["complete"] = False
    write_collection(
        location, build_collection({ATTRS_KEY: meta}, manifest, provenance.collection_id)
    )
    missing = missing_arrays(root, meta["sensors"])
    if missing:  # never commit a corpus a reader would find holes in
        raise CorpusError(
            f"the corpus at {location.url} lacks {missing} after writing; it stays marked "
            "incomplete: rerun the command to finish it"
        )
    meta["complete"] = True
    root.attrs[ATTRS_KEY] = meta  # the commit: root zarr.json rewritten last
    return meta


_Put = tuple[zarr.Group, str, np.ndarray, tuple[str, ...], dict[str, Any]]


def _planned_puts(root: zarr.Group, plan: CorpusPlan) -> list[_Put]:
    """Metadata arrays and group tables that need no pixels."""
    puts = [
        put
        for sensor, cols in tables.image_columns(plan, None).items()
        for put in _image_arrays(root, sensor, cols, plan.base_images.get(sensor, 0))
    ]
    return puts + _group_tables(root, plan)


def _image_arrays(root: zarr.Group, sensor: str, cols: tables.Columns, base: int) -> list[_Put]:
    group = root[f"{SENSORS_GROUP}/{sensor}"]
    assert isinstance(group, zarr.Group)
    puts: list[_Put] = []
    for name, values in cols.items():
        if base:
            values = np.concatenate([_old_column(group, name, base, values), values])
        if name == "label" and not (values >= 0).any():
            continue  # no labels known for this sensor: the optional array is left out
        attrs: dict[str, Any] = {} if name == "image_id" else {"coordinates": "image_id"}
        if name == "datetime":
            attrs.update(units="nanoseconds since 1970-01-01", calendar="proleptic_gregorian")
        dims = ("image",) if values.ndim == 1 else _wide_dims(name)
        puts.append((group, name, values, dims, attrs))
    return puts


def _wide_dims(name: str) -> tuple[str, ...]:
    return BAND_ARRAY_DIMS if name in BAND_ARRAYS else ("image", "affine")


def _old_column(group: zarr.Group, name: str, base: int, like: np.ndarray) -> np.ndarray:
    if name in BAND_ARRAYS and name not in group:  # a format-1 corpus: per-sensor values
        return _sensor_radiometry(group, name, base)
    if name not in group:  # e.g. labels first appear with this append
        return np.full((base, *like.shape[1:]), -1, dtype=like.dtype)
    arr = group[name]
    assert isinstance(arr, zarr.Array)
    old = np.asarray(arr[:base])
    return old.astype(object) if like.dtype == object else old


def _sensor_radiometry(group: zarr.Group, name: str, base: int) -> np.ndarray:
    """A format-1 corpus's per-sensor ``scale``/``offset``/``nodata`` as per-image rows."""
    pixels = group["pixels"]
    assert isinstance(pixels, zarr.Array)
    raw: list[Any] = list(pixels.attrs[name])  # type: ignore[arg-type]
    values = [math.nan if v is None else float(v) for v in raw]
    return np.tile(np.array(values, dtype="float64"), (base, 1))


def _group_tables(root: zarr.Group, plan: CorpusPlan) -> list[_Put]:
    group = root.require_group(GROUPS_GROUP)
    member_base = 0
    old: tables.Columns = {}
    if plan.base_groups:
        for name in group.array_keys():
            arr = group[name]
            assert isinstance(arr, zarr.Array)
            old[name] = np.asarray(arr[:])
        member_base = int(old["member_offsets"][-1])
    cols = tables.group_columns(plan, member_base)
    if old:
        cols = tables.concat_groups(old, cols)
    dims = {
        "member_offsets": ("group_offset",),
        "member_sensor": ("member",),
        "member_index": ("member",),
        "bounds": ("group", "bbox"),
        "lonlat_bounds": ("group", "bbox"),
    }
    return [(group, name, values, dims.get(name, ("group",)), {}) for name, values in cols.items()]


def _put(
    group: zarr.Group, name: str, values: np.ndarray, dims: tuple[str, ...], attrs: dict[str, Any]
) -> None:
    is_str = values.dtype == object or values.dtype.kind == "U"
    chunks = (min(max(len(values), 1), META_CHUNK), *values.shape[1:])
    arr = group.create_array(
        name,
        shape=values.shape,
        dtype=str if is_str else values.dtype,
        chunks=chunks,
        # zstd, then a CRC32C of each chunk: a flipped bit in a coordinate or a date fails
        # to decode instead of changing the value (zstd alone checks nothing by default)
        compressors=compressors("zstd", META_LEVEL),
        dimension_names=dims,
        attributes=attrs,
        overwrite=True,
    )
    if len(values):
        arr[...] = values.astype(str) if is_str else values


def _root_meta(
    meta: dict[str, Any],
    plan: CorpusPlan,
    results: list[ShardResult],
    provenance: Provenance,
    state: dict[str, Any],
    append: bool,
) -> dict[str, Any]:
    sensors = dict(meta.get("sensors", {}))
    sensors.update({s: layout.attrs() for s, layout in plan.layouts.items()})
    shards = {s["path"]: s for s in meta.get("shards", [])}
    for r in results:
        for key, obj in r.objects.items():
            k = plan.images_per_shard[r.sensor]
            shards[key] = {"path": key, "rows": [r.start, r.stop], "images_per_shard": k, **obj}
    images = {s: plan.total_images(s) for s in plan.layouts}
    images = {**meta.get("counts", {}).get("images", {}), **images}
    run = {
        "config_hash": provenance.config_hash,
        "created": state["created"],
        "groups": len(plan.groups),
        "images": {s: len(v) for s, v in plan.images.items()},
    }
    sources = list(meta.get("sources", [])) if append else []
    sources += [s for s in provenance.sources if s not in sources]
    meta.update(
        format_version=FORMAT_VERSION,  # an append to a format-1 corpus adds the v2 arrays
        sensors=sensors,
        config=provenance.config if not append else meta.get("config", provenance.config),
        config_hash=provenance.config_hash if not append else meta.get("config_hash"),
        software_version=_software_version(),
        sources=sources,
        created=meta["created"] if append and "created" in meta else state["created"],
        counts={"groups": plan.base_groups + len(plan.groups), "images": images},
        shards=sorted(shards.values(), key=lambda s: str(s["path"])),
        runs=[*meta.get("runs", []), run] if append else [run],
    )
    return meta


def _software_version() -> str:
    try:
        return version("terracorpus")
    except PackageNotFoundError:
        return "unknown"
