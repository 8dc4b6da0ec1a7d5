"""The group stage: ``scenes.parquet`` -> ``groups.parquet`` (GeoParquet, one row per group).

Reads the scenes, builds image groups with :func:`terracorpus.curation.groups.build_groups`
under the config's ``group`` section, and writes them atomically. No group at all is an
error that says which rule to loosen, never an empty table that looks complete.
"""

from __future__ import annotations

from collections import Counter

from terracorpus.catalogs.frames import scenes_from_frame
from terracorpus.curation.groups import GroupParams, build_groups, groups_to_frame
from terracorpus.pipelines.config import GroupConfig, RunConfig
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.rundir import RunDir

STAGE = "group"
INPUT = "scenes.parquet"
OUTPUT = "groups.parquet"


def group_params(cfg: GroupConfig) -> GroupParams:
    """The curation rules from the validated config section."""
    return GroupParams(
        chip_size_m=cfg.chip_size_m,
        anchor_sensor=cfg.anchor_sensor,
        min_coverage=cfg.min_coverage,
        max_cloud_cover=cfg.max_cloud_cover,
        max_members_per_sensor=cfg.max_members_per_sensor,
        max_members=cfg.max_members,
        min_sensors=cfg.min_sensors,
        max_chip_overlap=cfg.max_chip_overlap,
        seed=cfg.seed,
    )


def run_group(config: RunConfig, run: RunDir) -> str:
    """Build image groups from ``scenes.parquet`` and write ``groups.parquet``.

    Returns:
        A one-line summary (groups, anchors by sensor, mean images per group).

    Raises:
        StageError: no scenes table, or no group met the rules.
        GroupingError: the scenes cannot be grouped under the rules (the message says why).
    """
    scenes = scenes_from_frame(run.read_table(INPUT, needed_by="the group stage"))
    params = group_params(config.group)
    groups = build_groups(scenes, params)
    if not groups:
        run.path(OUTPUT).unlink(missing_ok=True)  # no stale table may pass for this result
        raise StageError(
            f"no image group met the rules from {len(scenes)} scenes "
            f"(group.min_sensors={params.min_sensors}, min_coverage={params.min_coverage}, "
            f"max_cloud_cover={params.max_cloud_cover}); loosen them, or search more "
            "sensors or dates"
        )
    run.write_table(OUTPUT, groups_to_frame(groups), stage=STAGE, scenes=len(scenes))
    anchors = Counter(g.anchor_sensor for g in groups)
    images = sum(len(g.members) for g in groups) / len(groups)
    sensors = sum(len(g.sensors) for g in groups) / len(groups)
    return (
        f"{len(groups)} groups from {len(scenes)} scenes "
        f"(anchors: {', '.join(f'{k} {v}' for k, v in sorted(anchors.items()))}; "
        f"{images:.1f} images and {sensors:.1f} sensors per group)"
    )
