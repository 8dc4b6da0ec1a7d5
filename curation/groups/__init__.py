"""STSUD-style image groups: one ground footprint, seen by several sensors at several times.

The package does three jobs, one module each:

- :mod:`.records`: the parameters (:class:`GroupParams`) and the records
  (:class:`ImageGroup`, :class:`Member`);
- :mod:`.build`: the grouping algorithm (:func:`build_groups`, in steps :mod:`.anchors` and
  :mod:`.members`, with a pluggable spatial :mod:`.index` and member :mod:`.rules`);
- :mod:`.unused`: the scenes grouping cannot use and every scene in no group, with reasons;
- :mod:`.table`: the groups table codec (:func:`groups_to_frame`, :func:`groups_from_frame`).
"""

from terracorpus.curation.groups.build import GroupingResult, build_groups, group_scenes
from terracorpus.curation.groups.index import (
    AllPairsIndex,
    IndexFactory,
    SpatialIndex,
    StrTreeIndex,
)
from terracorpus.curation.groups.records import GroupParams, ImageGroup, Member, Role, group_id
from terracorpus.curation.groups.rules import MEMBER_RULES, MemberRule, member_rule
from terracorpus.curation.groups.table import FRAME_COLUMNS, groups_from_frame, groups_to_frame
from terracorpus.curation.groups.unused import REFUSALS, Unused, screen_scenes, unused_scenes

__all__ = [
    "FRAME_COLUMNS",
    "MEMBER_RULES",
    "REFUSALS",
    "AllPairsIndex",
    "GroupParams",
    "GroupingResult",
    "ImageGroup",
    "IndexFactory",
    "Member",
    "MemberRule",
    "Role",
    "SpatialIndex",
    "StrTreeIndex",
    "Unused",
    "build_groups",
    "group_id",
    "group_scenes",
    "groups_from_frame",
    "groups_to_frame",
    "member_rule",
    "screen_scenes",
    "unused_scenes",
]
