"""The group stage: ``scenes.parquet`` -> ``groups.parquet`` (GeoParquet, one row per group).

Reads the scenes, builds image groups with :func:`terracorpus.curation.groups.group_scenes`
under the config's ``group`` section, and writes them atomically. Every scene in no group is
a row of the run's failure table (stage ``group``, kind ``scene``, a reason from
:mod:`terracorpus.curation.groups.unused`) and is counted by reason in the summary; in strict
mode a scene refused as unusable (geographic CRS, rotated grid, repeated id, ...) stops the
stage instead. No group at all is an error that says which rule to loosen and why the scenes
gave none, never an empty table that looks complete.
"""

from __future__ import annotations

from collections import Counter

from terracorpus.catalogs.frames import scenes_from_frame
from terracorpus.curation.groups import (
    REFUSALS,
    GroupParams,
    Unused,
    group_scenes,
    groups_to_frame,
)
from terracorpus.curation.params import project
from terracorpus.pipelines.config import RunConfig
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.rundir import Failure, RunDir

STAGE = "group"
INPUT = "scenes.parquet"
OUTPUT = "groups.parquet"


def run_group(config: RunConfig, run: RunDir) -> str:
    """Build image groups from ``scenes.parquet`` and write ``groups.parquet``.

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
    result = group_scenes(scenes, params)
    groups, unused = result.groups, result.unused
    refused = [u for u in unused if u.reason in REFUSALS]
    if config.strict and refused:
        raise StageError(
            f"{len(refused)} scene(s) cannot be grouped, e.g. {refused[0].reason}: "
            f"{refused[0].detail} (strict mode; rerun without --strict to record them as "
            "failures and go on)"
        )
    run.clear_failures(STAGE)
    run.record_failures([Failure(STAGE, "scene", u.scene_id, u.reason, u.detail) for u in unused])
    if not groups:
        run.path(OUTPUT).unlink(missing_ok=True)  # no stale table may pass for this result
        raise StageError(
            f"no image group met the rules from {len(scenes)} scenes "
            f"(group.min_sensors={params.min_sensors}, min_coverage={params.min_coverage}, "
            f"max_cloud_cover={params.max_cloud_cover}); loosen them, or search more "
            f"sensors or dates. {_unused_summary(unused)}"
        )
    run.write_table(OUTPUT, groups_to_frame(groups), stage=STAGE, scenes=len(scenes))
    anchors = Counter(g.anchor_sensor for g in groups)
    images = sum(len(g.members) for g in groups) / len(groups)
    sensors = sum(len(g.sensors) for g in groups) / len(groups)
    return (
        f"{len(groups)} groups from {len(scenes)} scenes "
        f"(anchors: {', '.join(f'{k} {v}' for k, v in sorted(anchors.items()))}; "
        f"{images:.1f} images and {sensors:.1f} sensors per group); {_unused_summary(unused)}"
    )


def _unused_summary(unused: list[Unused]) -> str:
    """How many scenes are in no group, by reason, or that every scene is in one."""
    if not unused:
        return "every scene is in a group"
    by_reason = Counter(u.reason for u in unused)
    counts = ", ".join(f"{n} {reason}" for reason, n in by_reason.most_common())
    return f"{len(unused)} scenes in no group ({counts}; see failures.parquet)"
