"""The group stage: ``scenes.parquet`` -> ``groups.parquet`` (GeoParquet, one row per group).

Reads the scenes and builds image groups under the config's ``group`` section as one task
per spatial tile (:mod:`terracorpus.curation.groups.partition`), on a Dask client or, without
one, in this process. Each task gets the scenes of its tile and a halo, and writes the groups
of the chips centred in its tile, with their overlaps with chips of other lattices, to
``_scratch/group/tile-*.parquet``; the client resolves the overlaps in the one-process order
and streams the tiles' groups, less the dropped chips', into ``groups.parquet``: one row group
per tile. The groups are the ones :func:`~terracorpus.curation.groups.build_groups` returns,
whatever the number of workers; rows are in tile order, then by anchor scene id, row, col.

Scenes grouping cannot use are screened out first
(:func:`~terracorpus.curation.groups.screen_scenes`); every scene in no group is a row of the
run's failure table (stage ``group``, kind ``scene``, a reason from
:mod:`terracorpus.curation.groups.unused`) and is counted by reason in the summary; in strict
mode a scene refused as unusable stops the stage instead.

A killed stage resumes: finished tiles are kept (their file names hash the tile, its scenes
and the rules) and only the rest run again; a tile whose task failed or whose file is missing
stops the stage naming it, never a table with a tile left out. No group at all is an error
that says which rule to loosen, never an empty table that looks complete.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from terracorpus.catalogs.frames import scenes_from_frame
from terracorpus.catalogs.scene import SceneRecord
from terracorpus.curation.groups import (
    REFUSALS,
    GroupParams,
    Unused,
    groups_to_frame,
    screen_scenes,
)
from terracorpus.curation.groups.partition import (
    Overlap,
    Tile,
    dropped_chips,
    group_tile,
    plan_tiles,
    tile_degrees,
)
from terracorpus.curation.groups.scenes import SceneArrays
from terracorpus.curation.groups.unused import unused_of
from terracorpus.curation.params import project
from terracorpus.pipelines.cluster import run_tasks
from terracorpus.pipelines.config import RunConfig
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.rundir import (
    META_KEY,
    Failure,
    RunDir,
    read_parquet,
    write_parquet_atomic,
)

STAGE = "group"
INPUT = "scenes.parquet"
OUTPUT = "groups.parquet"

if TYPE_CHECKING:
    from distributed import Client


@dataclass(frozen=True)
class TileTask:
    """One tile's work, shipped to a worker: its scenes (tile and halo), the rules, and the
    scratch file its groups go to."""

    tile: Tile
    scenes: tuple[SceneRecord, ...]
    params: GroupParams
    sensor_rank: tuple[str, ...]
    region_m: float
    path: str


@dataclass(frozen=True)
class TileDone:
    """What the client keeps of a finished tile: counts and overlaps, not its groups."""

    tile: Tile
    path: str
    chips: int
    groups: int
    overlaps: tuple[Overlap, ...]


def group_tile_task(task: TileTask) -> TileDone:
    """Run one tile (on a worker) and write its groups to its scratch file."""
    r = group_tile(task.scenes, task.params, task.tile, task.sensor_rank, task.region_m)
    meta = {"chips": r.chips, "overlaps": [_overlap_row(o) for o in r.overlaps]}
    write_parquet_atomic(Path(task.path), groups_to_frame(r.groups), meta)
    return TileDone(task.tile, task.path, r.chips, len(r.groups), r.overlaps)


def _overlap_row(o: Overlap) -> list[object]:
    return [list(o.earlier), o.earlier_id, list(o.later), o.later_id, o.fraction]


def _tile_done(task: TileTask) -> TileDone:
    """A finished tile, read back from its scratch file (a resumed run)."""
    path = Path(task.path)
    meta = json.loads((pq.read_schema(path).metadata or {})[META_KEY])
    overlaps = tuple(Overlap(tuple(a), ai, tuple(b), bi, f) for a, ai, b, bi, f in meta["overlaps"])
    rows = pq.ParquetFile(path).metadata.num_rows
    return TileDone(task.tile, task.path, int(meta["chips"]), int(rows), overlaps)


def tile_tasks(
    scenes: list[SceneRecord], params: GroupParams, scratch: Path, deg: float | None = None
) -> list[TileTask]:
    """One task per tile that can own chips, its scenes chosen by :func:`plan_tiles`.

    ``deg`` is the tile side in degrees (None: :func:`tile_degrees`, at least 1°); the groups
    do not depend on it, only the number and size of the tasks.
    """
    table = SceneArrays(scenes, params)
    plan = plan_tiles(table, params, deg or tile_degrees(table, params))
    tasks = []
    for tile, idx in zip(plan.tiles, plan.scenes, strict=True):
        records = tuple(table.records[k] for k in idx.tolist())
        digest = hashlib.blake2b(digest_size=8)
        for part in (repr(params), repr(plan.sensor_rank), repr(plan.region_m), repr(tile)):
            digest.update(part.encode())
        for r in records:
            digest.update(r.id.encode() + b"\0")
        name = f"tile-{tile.col}_{tile.row}-{digest.hexdigest()}.parquet"
        tasks.append(
            TileTask(tile, records, params, plan.sensor_rank, plan.region_m, str(scratch / name))
        )
    return tasks


def run_tiles(tasks: list[TileTask], client: Client | None) -> list[TileDone]:
    """Run the tiles not finished by an earlier run; all tiles' results, in task order."""
    todo = [t for t in tasks if not Path(t.path).exists()]
    if client is None:
        fresh = [group_tile_task(t) for t in todo]
    else:
        fresh = run_tasks(client, group_tile_task, todo, desc="group", key_prefix="group-tile")
    by_path = {d.path: d for d in fresh}
    return [by_path.get(t.path) or _tile_done(t) for t in tasks]


def run_group(config: RunConfig, run: RunDir, client: Client | None = None) -> str:
    """Build image groups from ``scenes.parquet`` and write ``groups.parquet``.

    Args:
        config: the run config.
        run: the run directory.
        client: run the tiles as Dask tasks on it (None: in this process).

    Returns:
        A one-line summary (groups, anchors by sensor, mean images per group, scenes in no
        group by reason).

    Raises:
        StageError: no scenes table; no group met the rules; in strict mode, a scene
            refused as unusable.
        GroupingError: the scenes cannot be grouped under the rules (the message says why).
    """
    scenes = scenes_from_frame(run.read_table(INPUT, needed_by="the group stage"))
    params = project(config.group, GroupParams)
    usable, refused = screen_scenes(scenes, params)
    bad = [u for u in refused if u.reason in REFUSALS]
    if config.strict and bad:
        raise StageError(
            f"{len(bad)} scene(s) cannot be grouped, e.g. {bad[0].reason}: "
            f"{bad[0].detail} (strict mode; rerun without --strict to record them as "
            "failures and go on)"
        )
    run.clear_failures(STAGE)
    run.path(OUTPUT).unlink(missing_ok=True)  # no stale table may pass for this result
    done = run_tiles(tile_tasks(usable, params, run.scratch(STAGE)), client) if usable else []
    dropped = dropped_chips((o for d in done for o in d.overlaps), params.max_chip_overlap)
    parts = [d for d in done if d.groups]
    used: set[str] = set()
    tally = _Tally()
    try:
        if not parts:
            raise _NoGroups
        with run.partitioned_table(
            OUTPUT, STAGE, len(parts), scenes=len(scenes), tiles=len(done)
        ) as writer:
            for d in parts:
                frame = read_parquet(Path(d.path))
                frame = frame[~frame["group_id"].isin(dropped)]
                writer.write(frame)
                tally.add(frame, used)
            if tally.n == 0:  # every group dropped: the file is never renamed into place
                raise _NoGroups
    except _NoGroups:
        unused = refused + unused_of(usable, used, params)
        _record(run, unused)
        raise StageError(
            f"no image group met the rules from {len(scenes)} scenes "
            f"(group.min_sensors={params.min_sensors}, min_coverage={params.min_coverage}, "
            f"max_cloud_cover={params.max_cloud_cover}); loosen them, or search more "
            f"sensors or dates. {_unused_summary(unused)}"
        ) from None
    unused = refused + unused_of(usable, used, params)
    _record(run, unused)
    return f"{tally.summary(len(scenes), len(done))}; {_unused_summary(unused)}"


class _NoGroups(Exception):
    """No group met the rules (turned into the stage's error, with the reasons)."""


class _Tally:
    """The summary's counts, gathered as the tiles' groups stream through."""

    def __init__(self) -> None:
        self.anchors: Counter[str] = Counter()
        self.images = self.sensors = self.n = 0

    def add(self, frame: Any, used: set[str]) -> None:
        self.anchors.update(frame["anchor_sensor"].tolist())
        self.images += int(frame["n_members"].sum())
        self.sensors += sum(len(s.split(",")) for s in frame["sensors"])
        self.n += len(frame)
        for members in frame["members"]:
            used.update(m["scene_id"] for m in json.loads(members))

    def summary(self, scenes: int, tiles: int) -> str:
        anchors = ", ".join(f"{k} {v}" for k, v in sorted(self.anchors.items()))
        return (
            f"{self.n} groups from {scenes} scenes in {tiles} tiles (anchors: {anchors}; "
            f"{self.images / self.n:.1f} images and {self.sensors / self.n:.1f} sensors per "
            "group)"
        )


def _record(run: RunDir, unused: list[Unused]) -> None:
    run.record_failures([Failure(STAGE, "scene", u.scene_id, u.reason, u.detail) for u in unused])


def _unused_summary(unused: list[Unused]) -> str:
    """How many scenes are in no group, by reason, or that every scene is in one."""
    if not unused:
        return "every scene is in a group"
    by_reason = Counter(u.reason for u in unused)
    counts = ", ".join(f"{n} {reason}" for reason, n in by_reason.most_common())
    return f"{len(unused)} scenes in no group ({counts}; see failures.parquet)"
