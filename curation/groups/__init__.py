"""STSUD-style image groups: one ground footprint, seen by several sensors at several times.

The package does three jobs, one module each:

- :mod:`.records`: the parameters (:class:`GroupParams`) and the records
  (:class:`ImageGroup`, :class:`Member`);
- :mod:`.build`: the grouping algorithm (:func:`build_groups`, in steps :mod:`.anchors` and
  :mod:`.members`, with a pluggable spatial :mod:`.index` and member :mod:`.rules`);
- :mod:`.table`: the groups table codec (:func:`groups_to_frame`, :func:`groups_from_frame`).
"""

from terracorpus.curation.groups.build import build_groups
from terracorpus.curation.groups.index import (
    AllPairsIndex,
    IndexFactory,
    SpatialIndex,
    StrTreeIndex,
)
from terracorpus.curation.groups.records import GroupParams, ImageGroup, Member, Role, group_id
from terracorpus.curation.groups.rules import MEMBER_RULES, MemberRule, member_rule
from terracorpus.curation.groups.table import FRAME_COLUMNS, groups_from_frame, groups_to_frame

__all__ = [
    "FRAME_COLUMNS",
    "MEMBER_RULES",
    "AllPairsIndex",
    "GroupParams",
    "ImageGroup",
    "IndexFactory",
    "Member",
    "MemberRule",
    "Role",
    "SpatialIndex",
    "StrTreeIndex",
    "build_groups",
    "group_id",
    "groups_from_frame",
    "groups_to_frame",
    "member_rule",
]
