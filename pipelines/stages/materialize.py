"""The materialize stage: kept groups -> ``corpus.zarr`` + ``manifest.parquet`` + ``collection.json``.

Reads ``scenes.parquet``, ``groups.parquet`` and ``selection.parquet``, turns the kept
groups into image and group specs, plans shards, and hands them to the corpus writer
(:mod:`terracorpus.pipelines.corpus.writer`), which writes each shard in one Dask task and
publishes the store only when everything is written. Rerunning after a crash resumes.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence, Set
from typing import Any

import pandas as pd
from distributed import Client

from terracorpus.catalogs.redact import strip_credentials
from terracorpus.catalogs.scene import SceneRecord
from terracorpus.catalogs.sensors import SensorRegistry, load_registry
from terracorpus.curation.groups import ImageGroup
from terracorpus.pipelines.access import read_access
from terracorpus.pipelines.config import RunConfig
from terracorpus.pipelines.corpus.format import (
    GROUPS_GROUP,
    SENSORS_GROUP,
    array_at,
    check_root_attrs,
    corpus_meta,
    root_attrs,
    values_at,
)
from terracorpus.pipelines.corpus.location import CorpusLocation
from terracorpus.pipelines.corpus.plan import (
    CorpusPlan,
    GroupSpec,
    ImageSpec,
    SensorLayout,
    plan_corpus,
    split_of,
)
from terracorpus.pipelines.corpus.scenes import Labeller, SceneChipReader
from terracorpus.pipelines.corpus.writer import Provenance, WriteSummary, write_corpus
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.inputs import read_groups, read_scenes
from terracorpus.pipelines.rundir import RunDir

log = logging.getLogger(__name__)

STAGE = "materialize"
INPUTS = ("scenes.parquet", "groups.parquet", "selection.parquet")


def run_materialize(
    config: RunConfig,
    run: RunDir,
    client: Client | None = None,
    *,
    out: str | None = None,
    append_to: str | None = None,
    storage_options: dict[str, Any] | None = None,
    labeller: Labeller | None = None,
) -> str:
    """Write the corpus of the run's kept groups; returns a one-line summary.

    Args:
        config: the run config (``corpus`` section: shard size, codec, val fraction).
        run: the run directory holding the input tables and the resume state.
        client: Dask client for the shard tasks (None: write in this process).
        out: where to write the corpus directory (default: the run directory); any fsspec URL.
        append_to: an existing corpus to grow with this run's groups instead.
        storage_options: fsspec options for ``out`` / ``append_to``.
        labeller: gives each group a class label (the corpus's optional ``label`` array),
            e.g. the demo world's :class:`~terracorpus.pipelines.corpus.labels.WorldLabeller`;
            None: no labels.
    """
    target = append_to or out or str(run.root)
    location = CorpusLocation.of(target, storage_options)
    scratch = run.scratch(STAGE + ("-append" if append_to else ""))
    selection = _selection(run)
    chosen = set(selection.loc[selection["kept"].astype(bool), "group_id"].astype(str))
    groups = read_groups(run, needed_by=STAGE, keep=lambda ids: ids.isin(chosen))
    needed = {m.scene_id for g in groups for m in g.members}
    scenes = {s.id: s for s in read_scenes(run, needed_by=STAGE, ids=needed)}
    base = _append_base(location, resuming=(scratch / "state.json").exists()) if append_to else None
    kept = kept_groups(groups, selection, skip=base.group_ids if base else set())
    if not kept:
        raise StageError(
            f"no kept groups to materialize in {run.path(INPUTS[2])}"
            + (" that the corpus does not already hold" if base else "")
        )
    registry = load_registry(*config.search.sensor_files)
    layouts = sensor_layouts(kept, scenes, registry)
    sensors = set(layouts)
    group_specs, image_specs = specs_of(kept, scenes, layouts, config.corpus.val_fraction)
    plan = plan_corpus(
        group_specs,
        image_specs,
        layouts,
        config.corpus.shard_mb,
        base_images=base.images if base else None,
        base_groups=base.groups if base else 0,
        base_images_per_shard=base.images_per_shard if base else None,
        max_images_per_shard=config.corpus.max_images_per_shard,
    )
    run.clear_failures(STAGE)
    reader = SceneChipReader(
        {s.scene_id: scenes[s.scene_id] for s in image_specs},
        {s: registry.get(s) for s in sensors},
        strict=config.strict,
        labeller=labeller,
        access=read_access(config),
    )
    summary = write_corpus(
        location,
        plan,
        reader,
        scratch=scratch,
        provenance=_provenance(config, run),
        codec=config.corpus.codec,
        level=config.corpus.codec_level,
        client=client,
        append=append_to is not None,
        replace=out is None and append_to is None,  # the run directory's own, stale, corpus
    )
    run.record_failures(summary.failures)
    return _describe(summary, plan)


# -- which groups and images ---------------------------------------------------------------
_SELECTION_COLUMNS = ("chip_id", "group_id", "kept", "cluster_id", "role")


def _selection(run: RunDir) -> pd.DataFrame:
    """The columns of selection.parquet that choose groups, a partition at a time; only
    groups with a kept chip are read from groups.parquet, and only their scenes."""
    names = set(run.table_columns(INPUTS[2], needed_by=STAGE))
    missing = {"chip_id", "group_id", "kept", "cluster_id"} - names
    if missing:
        raise StageError(f"selection.parquet lacks the columns {sorted(missing)}; rerun dedup")
    columns = [c for c in _SELECTION_COLUMNS if c in names]
    frames = list(run.iter_table(INPUTS[2], needed_by=STAGE, columns=columns))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


class KeptGroup:
    """A kept group with the members that stay in it and its anchor chip's cluster."""

    def __init__(self, group: ImageGroup, members: Sequence[str], cluster_id: int) -> None:
        self.group = group
        self.member_scenes = tuple(members)
        self.cluster_id = cluster_id


def chip_id(group_id: str, scene_id: str) -> str:
    """The chip id of a group member, as describe and dedup name chips."""
    return f"{group_id}/{scene_id}"


def kept_groups(
    groups: Sequence[ImageGroup], selection: pd.DataFrame, *, skip: Set[str] = frozenset()
) -> list[KeptGroup]:
    """Groups whose anchor chip is kept; members whose own chip was dropped are left out.

    The anchor row is the one with ``role == "anchor"`` (or, without a role column, the chip
    ``<group_id>/<anchor scene>``); its cluster is the group's, and its scene leads the
    group. When describe re-anchored the group (its anchor scene was unreadable,
    :mod:`terracorpus.curation.anchors`), the lost anchor is left out. Member chips are named
    ``<group_id>/<scene_id>``; members the selection does not list stay in.
    """
    missing = {"chip_id", "group_id", "kept", "cluster_id"} - set(selection.columns)
    if missing:
        raise StageError(f"selection.parquet lacks the columns {sorted(missing)}; rerun dedup")
    kept = dict(zip(selection["chip_id"].astype(str), selection["kept"].astype(bool), strict=True))
    anchors = _anchor_rows(selection)
    out = []
    for g in groups:
        row = anchors.get(g.group_id)
        if row is None:
            row = anchors.get(chip_id(g.group_id, g.anchor_scene_id))
        if g.group_id in skip or row is None or not row[0]:
            continue
        lead = _scene_of(g, row[2])
        others = [
            m.scene_id
            for m in g.members
            if m.scene_id not in (lead, g.anchor_scene_id)
            and kept.get(chip_id(g.group_id, m.scene_id), True)
        ]
        c = row[1]
        out.append(KeptGroup(g, [lead, *others], -1 if pd.isna(c) else int(c)))
    return out


def _scene_of(group: ImageGroup, anchor_chip: str) -> str:
    """The scene of a group's anchor chip (``<group_id>/<scene_id>``)."""
    prefix = f"{group.group_id}/"
    return anchor_chip[len(prefix) :] if anchor_chip.startswith(prefix) else group.anchor_scene_id


def _anchor_rows(selection: pd.DataFrame) -> dict[str, tuple[bool, Any, str]]:
    """(kept, cluster_id, chip_id) of each group's anchor chip, by group id (or by chip id)."""
    if "role" in selection.columns:
        a = selection[selection["role"].astype(str) == "anchor"]
        keys = a["group_id"].astype(str)
    else:
        a, keys = selection, selection["chip_id"].astype(str)
    rows = zip(a["kept"].astype(bool), a["cluster_id"], a["chip_id"].astype(str), strict=True)
    return dict(zip(keys, rows, strict=True))


def sensor_layouts(
    kept: Sequence[KeptGroup], scenes: Mapping[str, SceneRecord], registry: SensorRegistry
) -> dict[str, SensorLayout]:
    """One layout per sensor of the kept images, at the native GSD of their scenes.

    The registry's GSD is nominal; a scene's own finest grid is what its pixels are, and
    they are written at that pixel size (nothing is upsampled to a nominal size). When one
    sensor's scenes differ (NAIP at 0.6 m and 1 m), the finest wins, as the corpus holds one
    chip size per sensor, so no pixel is lost; the coarser scenes are repeated onto it with
    nearest neighbour, and a warning names them.
    """
    chip_m = _chip_size_m(kept)
    native: dict[str, Counter[float]] = {}
    for k in kept:
        for scene_id in k.member_scenes:
            scene = scenes.get(scene_id)
            if scene is None:
                raise StageError(
                    f"group {k.group.group_id}: scene {scene_id} is not in scenes.parquet"
                )
            if math.isfinite(scene.gsd) and scene.gsd > 0:
                native.setdefault(scene.sensor, Counter())[round(scene.gsd, 6)] += 1
            else:
                native.setdefault(scene.sensor, Counter())
    layouts = {}
    for s in sorted(native):
        gsds = native[s]
        if len(gsds) > 1:
            log.warning(
                "%s scenes have native GSDs %s (m: images); the corpus stores %s at the finest, "
                "%s m, and repeats coarser pixels onto it (nearest neighbour)",
                s,
                dict(sorted(gsds.items())),
                s,
                min(gsds),
            )
        layouts[s] = SensorLayout.from_sensor(registry.get(s), chip_m, min(gsds) if gsds else None)
    return layouts


def _chip_size_m(kept: Sequence[KeptGroup]) -> float:
    """The ground size shared by the groups' chips (the most common one, if they differ)."""
    sizes = Counter(round(k.group.chip_size_m, 6) for k in kept)
    if len(sizes) > 1:
        log.warning("groups have chip sizes %s m; the corpus uses the most common", dict(sizes))
    return float(sizes.most_common(1)[0][0])


def specs_of(
    kept: Sequence[KeptGroup],
    scenes: dict[str, SceneRecord],
    layouts: dict[str, SensorLayout],
    val_fraction: float,
) -> tuple[list[GroupSpec], list[ImageSpec]]:
    """Group and image specs of the kept groups; each member on the anchor's CRS at its GSD."""
    groups, images = [], []
    for k in kept:
        g = k.group
        fp = g.footprint
        lon, lat = fp.centroid.x, fp.centroid.y
        members = []
        for scene_id in k.member_scenes:
            scene = scenes.get(scene_id)
            if scene is None:
                raise StageError(f"group {g.group_id}: scene {scene_id} is not in scenes.parquet")
            lay = layouts[scene.sensor]
            img = ImageSpec(
                image_id=chip_id(g.group_id, scene_id),
                sensor=scene.sensor,
                group_id=g.group_id,
                scene_id=scene_id,
                datetime_ns=int(pd.Timestamp(scene.datetime).value),
                crs=g.crs,
                transform=(lay.gsd, 0.0, g.bounds[0], 0.0, -lay.gsd, g.bounds[3]),
                gsd=lay.gsd,
                lon=lon,
                lat=lat,
                cloud_cover=_num(scene.cloud_cover),
                sun_elevation=_num(scene.sun_elevation),
                off_nadir=_num(scene.off_nadir),
                source_item=scene.id,
                source_href=_href(scene),
                **_radiometry(scene, lay),
            )
            images.append(img)
            members.append((scene.sensor, img.image_id))
        groups.append(
            GroupSpec(
                group_id=g.group_id,
                members=tuple(members),
                crs=g.crs,
                bounds=g.bounds,
                lonlat_bounds=tuple(float(v) for v in fp.bounds),  # type: ignore[arg-type]
                cluster_id=k.cluster_id,
                split=split_of(g.group_id, val_fraction),
            )
        )
    return groups, images


def _radiometry(scene: SceneRecord, layout: SensorLayout) -> dict[str, tuple[float, ...]]:
    """The scene's own scale, offset and nodata per layout band (none: the layout's apply)."""
    if not scene.radiometry:
        return {}
    rads = [scene.radiometry_of(str(b["name"])) for b in layout.bands]
    if any(r is None for r in rads):
        missing = [b["name"] for b, r in zip(layout.bands, rads, strict=True) if r is None]
        raise StageError(f"scene {scene.id} has no radiometry for bands {missing}")
    return {
        "scale": tuple(r.scale for r in rads if r),
        "offset": tuple(r.offset for r in rads if r),
        "nodata": tuple(math.nan if r.nodata is None else r.nodata for r in rads if r),
    }


def _num(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _href(scene: SceneRecord) -> str:
    if scene.self_href:
        return strip_credentials(scene.self_href)
    if scene.api_url:
        api = strip_credentials(scene.api_url).rstrip("/")
        return f"{api}/collections/{scene.collection}/items/{scene.id}"
    return ""


# -- appending -------------------------------------------------------------------------------
class _Base:
    def __init__(
        self, meta: dict[str, Any], group_ids: set[str], per_shard: dict[str, int]
    ) -> None:
        self.images = {s: int(n) for s, n in meta["counts"]["images"].items()}
        self.groups = int(meta["counts"]["groups"])
        self.group_ids = group_ids
        self.images_per_shard = per_shard


def _append_base(location: CorpusLocation, *, resuming: bool) -> _Base:
    """What the corpus to append to holds (its attributes still describe the old corpus)."""
    root = location.open_group()
    check_root_attrs(
        root_attrs(root), location.url_of("corpus.zarr"), require_complete=not resuming
    )
    meta = corpus_meta(root)
    n = int(meta["counts"]["groups"])
    group_ids = {str(v) for v in values_at(root, f"{GROUPS_GROUP}/group_id", slice(0, n))}
    per_shard = {}
    for s in meta["sensors"]:
        arr = array_at(root, f"{SENSORS_GROUP}/{s}/pixels")
        per_shard[s] = int((arr.shards or arr.chunks)[0])
    return _Base(meta, group_ids, per_shard)


def _provenance(config: RunConfig, run: RunDir) -> Provenance:
    s = config.search
    query = {
        "bbox": list(s.bbox) if s.bbox else None,
        "start": s.start.isoformat() if s.start else None,
        "end": s.end.isoformat() if s.end else None,
        "max_cloud_cover": s.max_cloud_cover,
    }
    return Provenance(
        config=config.model_dump(mode="json"),
        config_hash=run.config_hash,
        sources=[
            {"api": strip_credentials(a.url), "collections": list(a.collections), "query": query}
            for a in s.apis
        ],
        collection_id=f"terracorpus-{run.config_hash[:12]}",
    )


def _describe(summary: WriteSummary, plan: CorpusPlan) -> str:
    imgs = ", ".join(f"{s} {n}" for s, n in sorted(summary.images.items()))
    text = (
        f"{summary.groups} groups, images {imgs}; {summary.shards_written} shards written"
        + (
            f", {summary.shards_reused} reused from an interrupted run"
            if summary.shards_reused
            else ""
        )
        + f" -> {summary.url}"
    )
    if summary.failures:
        text += (
            f"; {len(summary.failures)} unreadable images written as unusable (failures.parquet)"
        )
    return text
