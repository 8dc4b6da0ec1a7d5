"""Run tables read one partition at a time into the records a stage needs.

A stage that needs only some groups (materialize: the kept ones) or some scenes (those its
groups name) keeps only those: each partition of the table is read, filtered and turned into
records before the next is read, so the whole table is never one frame in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import pandas as pd

from terracorpus.catalogs.frames import scenes_from_frame
from terracorpus.catalogs.scene import SceneRecord
from terracorpus.curation.groups import ImageGroup, groups_from_frame
from terracorpus.pipelines.rundir import RunDir

GROUPS = "groups.parquet"
SCENES = "scenes.parquet"


def read_groups(
    run: RunDir, *, needed_by: str, keep: Callable[[pd.Series], pd.Series] | None = None
) -> list[ImageGroup]:
    """The groups of ``run``, partition by partition; ``keep`` maps a partition's
    ``group_id`` column to a boolean mask of the rows to keep (default: all)."""
    out: list[ImageGroup] = []
    for part in run.iter_table(GROUPS, needed_by=needed_by):
        if keep is not None:
            part = part[keep(part["group_id"].astype(str)).to_numpy(dtype=bool)]
        out += groups_from_frame(part)
    return out


def read_scenes(
    run: RunDir, *, needed_by: str, ids: Collection[str] | None = None
) -> list[SceneRecord]:
    """The scene records of ``run`` (only those in ``ids``, if given), partition by partition."""
    wanted = None if ids is None else set(ids)
    out: list[SceneRecord] = []
    for part in run.iter_table(SCENES, needed_by=needed_by):
        if wanted is not None:
            part = part[part["id"].astype(str).isin(wanted).to_numpy(dtype=bool)]
        out += scenes_from_frame(part)
    return out
