"""The describe stage: ``groups.parquet`` + ``scenes.parquet`` -> ``chips.parquet``.

Every image of every group (anchor and members) becomes one chip row: quality fractions from
the sensor's QA and a descriptor vector (:mod:`terracorpus.curation.descriptors`). Work is
cut into batches of one scene and up to ``describe.batch_size`` of its chips, so a COG's
header is read once per batch, not once per chip; batches run as Dask tasks. Each finished
batch is written atomically to ``_scratch/describe/batch-<key>.parquet`` (its failures in the
file's metadata), so a rerun after a kill skips finished batches, and a task retried after a
lost worker rewrites the same file: nothing is lost or counted twice. ``chips.parquet`` is a
partitioned table (:mod:`terracorpus.pipelines.tables`): one row group per batch, in batch
order (scene id, then chip id), streamed from the batch files; readers that need chip order
sort (:func:`terracorpus.pipelines.chips.read_chip_table`).

Its columns are declared once, in :data:`terracorpus.pipelines.chips.SCHEMA` (described
there). The descriptor's names are in the terracorpus metadata (``descriptor_names``,
``descriptor_parts``); read them with :func:`descriptor_layout`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyproj
from distributed import Client

from terracorpus.catalogs.access import ReadAccess
from terracorpus.catalogs.radiometry import scene_arrays
from terracorpus.catalogs.redact import redact_text
from terracorpus.catalogs.scene import SceneRecord
from terracorpus.catalogs.sensors import Sensor, SensorRegistry, load_registry
from terracorpus.curation.anchors import (
    AnchorReplacement,
    DescribedImages,
    replace_lost_anchors,
)
from terracorpus.curation.descriptors import (
    DESCRIPTOR_VERSION,
    ChipMeta,
    brightness,
    describe_chip,
    descriptor_names,
    descriptor_parts,
)
from terracorpus.curation.errors import DescriptorError
from terracorpus.curation.groups import ImageGroup
from terracorpus.curation.quality import chip_quality, decode_qa
from terracorpus.pipelines.access import read_access
from terracorpus.pipelines.chips import NAME as CHIPS
from terracorpus.pipelines.chips import SCHEMA, described_images
from terracorpus.pipelines.cluster import run_tasks
from terracorpus.pipelines.config import DescribeConfig, RunConfig
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.inputs import read_groups, read_scenes
from terracorpus.pipelines.pixels import (
    SCENE_REASONS,
    ChipFailure,
    ChipPixels,
    ChipRequest,
    read_scene_chips,
    scene_window,
)
from terracorpus.pipelines.rundir import META_KEY, Failure, RunDir

log = logging.getLogger(__name__)

STAGE = "describe"
OUTPUT = CHIPS
_FAILURES_KEY = b"terracorpus.failures"


@dataclass(frozen=True)
class ChipJob:
    """One image of one group, to be described: where it is and what it is."""

    chip_id: str
    group_id: str
    role: str
    bounds: tuple[float, float, float, float]
    crs: str
    lon: float
    lat: float


@dataclass(frozen=True)
class Batch:
    """One Dask task: one scene and some of its chips, and where to write the result."""

    key: str
    scene: SceneRecord
    sensor: Sensor
    chips: tuple[ChipJob, ...]
    read_gsd: float
    use_overviews: bool
    path: str
    access: ReadAccess | None = None


@dataclass(frozen=True)
class BatchResult:
    key: str
    rows: int
    failures: tuple[Failure, ...]


def read_gsd(scene: SceneRecord, chip_size_m: float, cfg: DescribeConfig) -> float:
    """The pixel size descriptors are read at: ``chip / descriptor_size``, never finer than
    the scene's own GSD; the scene's GSD with ``full_resolution``."""
    if cfg.full_resolution:
        return scene.gsd
    return max(scene.gsd, chip_size_m / cfg.descriptor_size)


def plan_batches(
    groups: Sequence[ImageGroup],
    scenes: Sequence[SceneRecord],
    registry: SensorRegistry,
    cfg: DescribeConfig,
    scratch: Path,
    access: ReadAccess | None = None,
) -> list[Batch]:
    """Cut every group's images into per-scene batches, in a stable order with stable keys.

    ``access`` (the href policy and per-API auth) travels with each batch to the workers; a
    change of it makes new batch keys, so a rerun with a new auth reads the scenes again.
    """
    by_id = {s.id: s for s in scenes}
    per_scene: dict[str, list[ChipJob]] = {}
    to_lonlat: dict[str, pyproj.Transformer] = {}  # one per CRS: building one takes ms
    for g in groups:
        lon, lat = _centre_lonlat(g, to_lonlat)
        for m in g.members:
            if m.scene_id not in by_id:
                raise StageError(
                    f"group {g.group_id} names scene {m.scene_id}, which scenes.parquet lacks; "
                    "rerun the group stage on these scenes"
                )
            job = ChipJob(
                f"{g.group_id}/{m.scene_id}", g.group_id, m.role, g.bounds, g.crs, lon, lat
            )
            per_scene.setdefault(m.scene_id, []).append(job)
    batches = []
    for scene_id in sorted(per_scene):
        scene = by_id[scene_id]
        sensor = registry.get(scene.sensor)
        jobs = sorted(per_scene[scene_id], key=lambda j: j.chip_id)
        for i in range(0, len(jobs), cfg.batch_size):
            chunk = tuple(jobs[i : i + cfg.batch_size])
            size = chunk[0].bounds[2] - chunk[0].bounds[0]
            gsd = read_gsd(scene, size, cfg)
            key = _batch_key(scene_id, chunk, gsd, cfg, access, scene.api_url)
            path = str(scratch / f"batch-{key}.parquet")
            batches.append(
                Batch(key, scene, sensor, chunk, gsd, not cfg.full_resolution, path, access)
            )
    return batches


def _commonest(failures: Sequence[Failure]) -> str:
    """ "; most (n): <reason>: <a detail>" for the commonest failure reason, or ""."""
    if not failures:
        return ""
    reasons = Counter(f.reason for f in failures)
    reason, n = reasons.most_common(1)[0]
    example = next(f.detail for f in failures if f.reason == reason)
    return f"; most ({n}): {reason}: {redact_text(example)}"


def _centre_lonlat(
    g: ImageGroup, transformers: dict[str, pyproj.Transformer]
) -> tuple[float, float]:
    minx, miny, maxx, maxy = g.bounds
    tr = transformers.get(g.crs)
    if tr is None:
        tr = transformers[g.crs] = pyproj.Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True)
    lon, lat = tr.transform((minx + maxx) / 2, (miny + maxy) / 2)
    return float(lon), float(lat)


def _batch_key(
    scene_id: str,
    chips: Sequence[ChipJob],
    gsd: float,
    cfg: DescribeConfig,
    access: ReadAccess | None,
    api_url: str | None,
) -> str:
    text = "\n".join(
        [
            scene_id,
            *([] if access is None else [access.read_key(api_url)]),
            f"v{DESCRIPTOR_VERSION}",
            f"{gsd:.6f}",
            cfg.model_dump_json(),
            *(c.chip_id for c in chips),
        ]
    )
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


# -- on the workers ------------------------------------------------------------------------
def describe_batch(batch: Batch) -> BatchResult:
    """Read and describe one batch and write its rows atomically (a Dask task).

    A batch whose file already exists is not redone (a retried or resubmitted task).
    """
    if os.path.exists(batch.path):
        return _result_of(batch.key, Path(batch.path))
    requests = [ChipRequest(c.chip_id, c.bounds, c.crs, batch.read_gsd) for c in batch.chips]
    read = read_scene_chips(
        batch.scene,
        batch.sensor,
        requests,
        use_overviews=batch.use_overviews,
        access=batch.access,
    )
    rows: list[dict[str, Any]] = []
    failures: list[Failure] = []
    for job, got in zip(batch.chips, read, strict=True):
        if isinstance(got, ChipFailure):
            kind = "scene" if got.reason in SCENE_REASONS else "chip"
            failures.append(Failure(STAGE, kind, got.chip_id, got.reason, got.detail))
            continue
        try:
            rows.append(_describe(job, got, batch))
        except DescriptorError as e:
            failures.append(Failure(STAGE, "chip", job.chip_id, "descriptor", str(e)))
    _write_batch(Path(batch.path), rows, failures)
    return BatchResult(batch.key, len(rows), tuple(failures))


def _describe(job: ChipJob, chip: ChipPixels, batch: Batch) -> dict[str, Any]:
    scene, sensor = batch.scene, batch.sensor
    bands = sensor.bands
    scales, offsets, _ = scene_arrays(scene, bands)  # the item's own radiometry
    scale = np.array(scales)[:, None, None]
    offset = np.array(offsets)[:, None, None]
    refl = chip.pixels.astype(np.float64) * scale + offset
    qa = None if chip.qa is None else chip.qa.astype(np.int64)
    masks = decode_qa(qa, sensor.qa.kind, chip.nodata.shape)
    saturated = _saturated(chip.pixels)
    quality = chip_quality(brightness(refl, bands), chip.nodata, masks, saturated)
    usable = ~(chip.nodata | masks.nodata | masks.cloud | masks.shadow | saturated)
    meta = ChipMeta(
        datetime=scene.datetime,
        lon=job.lon,
        lat=job.lat,
        gsd=scene.gsd,
        sun_elevation=scene.sun_elevation,
        off_nadir=scene.off_nadir,
        cloud_cover=scene.cloud_cover,
    )
    return {
        "chip_id": job.chip_id,
        "group_id": job.group_id,
        "scene_id": scene.id,
        "sensor": sensor.name,
        "role": job.role,
        "datetime": scene.datetime,
        "lon": job.lon,
        "lat": job.lat,
        "gsd": scene.gsd,
        "read_gsd": batch.read_gsd,
        "window": list(scene_window(scene, job.bounds, job.crs)),
        "overview_level": -1 if chip.overview_level is None else chip.overview_level,
        **asdict(quality),
        "descriptor": describe_chip(refl, bands, usable, meta),
    }


def _saturated(pixels: np.ndarray) -> np.ndarray:
    """Pixels where any band sits at its dtype's maximum (integer sensors only)."""
    if not np.issubdtype(pixels.dtype, np.integer):
        return np.zeros(pixels.shape[1:], dtype=bool)
    out: np.ndarray = (pixels == np.iinfo(pixels.dtype).max).any(axis=0)
    return out


def _write_batch(path: Path, rows: list[dict[str, Any]], failures: list[Failure]) -> None:
    columns = {f.name: [r[f.name] for r in rows] for f in SCHEMA}
    table = pa.table(columns, schema=SCHEMA)
    meta = {_FAILURES_KEY: json.dumps([asdict(f) for f in failures]).encode()}
    table = table.replace_schema_metadata(meta)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _result_of(key: str, path: Path) -> BatchResult:
    meta = pq.read_schema(path).metadata or {}
    failures = tuple(Failure(**f) for f in json.loads(meta.get(_FAILURES_KEY, b"[]")))
    return BatchResult(key, pq.read_metadata(path).num_rows, failures)


# -- in the client -------------------------------------------------------------------------
def run_describe(config: RunConfig, run: RunDir, client: Client) -> str:
    """Describe every image of every group; write ``chips.parquet`` and the failures.

    Finished batches (from an interrupted earlier run) are kept; the rest run on ``client``.
    In strict mode (``config.strict``) the first failed chip stops the stage.

    Raises:
        StageError: a missing input, no chip described at all, or a failure in strict mode.
    """
    registry = load_registry(*config.search.sensor_files)
    groups = read_groups(run, needed_by="the describe stage")
    needed = {m.scene_id for g in groups for m in g.members}
    scenes = read_scenes(run, needed_by="the describe stage", ids=needed)
    batches = plan_batches(
        groups, scenes, registry, config.describe, run.scratch(STAGE), read_access(config)
    )
    done = [b for b in batches if os.path.exists(b.path)]
    todo = [b for b in batches if not os.path.exists(b.path)]
    log.info("describe: %d batches, %d already done", len(batches), len(done))

    def check(_: int, result: BatchResult) -> None:
        if config.strict and result.failures:
            f = result.failures[0]
            raise StageError(
                f"describe failed on {f.kind} {f.key}: {f.reason}: {f.detail} "
                "(strict mode; rerun without --strict to record failures and go on)"
            )

    for i, b in enumerate(done):
        check(i, _result_of(b.key, Path(b.path)))
    results = run_tasks(
        client, describe_batch, todo, desc="describe", key_prefix="describe", on_result=check
    )
    results = [_result_of(b.key, Path(b.path)) for b in done] + results
    failures = [f for r in results for f in r.failures]
    described = sum(r.rows for r in results)
    run.clear_failures(STAGE)
    if described == 0:
        run.record_failures(failures)
        raise StageError(
            f"describe could not read any of the {sum(len(b.chips) for b in batches)} chips; "
            f"the reasons are in {run.path('failures.parquet')}{_commonest(failures)}"
        )
    promoted, replaced = _lost_anchors(batches, groups)
    run.record_failures([*failures, *_replacement_rows(replaced, failures)])
    _write_chips(run, batches, promoted)
    fallback = f"; {len(replaced)} groups re-anchored (anchor_replaced)" if replaced else ""
    return (
        f"{described} chips described, {len(failures)} failed, in {len(batches)} batches" + fallback
    )


# The columns :func:`replace_lost_anchors` ranks a group's images by.
_ANCHOR_COLUMNS = [f.name for f in fields(DescribedImages)]


def _lost_anchors(
    batches: Sequence[Batch], groups: Sequence[ImageGroup]
) -> tuple[set[str], list[AnchorReplacement]]:
    """The chip ids that now anchor a group whose anchor was lost, and the replacements.

    Reads only the few columns the choice needs from every batch (not the descriptors)."""
    light = pa.concat_tables(
        [pq.read_table(b.path, columns=list(_ANCHOR_COLUMNS)) for b in batches]
    ).replace_schema_metadata(None)
    frame = light.sort_by("chip_id").to_pandas()
    roles, replaced = replace_lost_anchors(described_images(frame), groups)
    promoted = frame["chip_id"][(roles == "anchor") & (frame["role"].to_numpy() != "anchor")]
    return set(promoted.astype(str)), replaced


def _write_chips(run: RunDir, batches: Sequence[Batch], promoted: set[str]) -> None:
    """``chips.parquet`` streamed one batch (row group) at a time, in batch order, with the
    promoted chips' role set to ``anchor``."""
    with run.partitioned_table(
        OUTPUT,
        stage=STAGE,
        partitions=len(batches),
        descriptor_names=list(descriptor_names()),
        descriptor_parts={k: list(v) for k, v in descriptor_parts().items()},
        descriptor_version=DESCRIPTOR_VERSION,
    ) as out:
        for b in batches:
            table = pq.read_table(b.path, schema=SCHEMA).replace_schema_metadata(None)
            if promoted:
                ids = table.column("chip_id").to_pylist()
                roles = [
                    "anchor" if c in promoted else r
                    for c, r in zip(ids, table.column("role").to_pylist(), strict=True)
                ]
                table = table.set_column(
                    SCHEMA.get_field_index("role"), "role", pa.array(roles, pa.string())
                )
            out.write(table)


def _replacement_rows(
    replaced: Sequence[AnchorReplacement], failures: Sequence[Failure]
) -> list[Failure]:
    """One failure row per re-anchored group, naming the lost anchor, why, and its heir."""
    why = {f.key: f.reason for f in failures}
    return [
        Failure(
            STAGE,
            "group",
            r.group_id,
            "anchor_replaced",
            f"anchor scene {r.lost_scene_id} could not be described "
            f"({why.get(f'{r.group_id}/{r.lost_scene_id}', 'no chip')}); scene "
            f"{r.new_scene_id} ({r.new_sensor}) anchors the group instead",
        )
        for r in replaced
    ]


def descriptor_layout(path: str | Path) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """The descriptor names and part ranges stored in a ``chips.parquet``."""
    meta = json.loads((pq.read_schema(path).metadata or {})[META_KEY])
    names = list(meta["descriptor_names"])
    parts = {k: (int(v[0]), int(v[1])) for k, v in meta["descriptor_parts"].items()}
    return names, parts
