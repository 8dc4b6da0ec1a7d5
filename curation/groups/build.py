"""STSUD-style image groups: one ground footprint, seen by several sensors at several times.

:func:`build_groups` turns scene records into groups in three steps:

1. **Anchor chips.** Anchor scenes are cut on their own pixel grid into whole chips of
   ``chip_size_m`` (rounded to whole anchor pixels). Chips lie on a CRS-wide lattice of that
   grid (:mod:`terracorpus.curation.geometry`), so the same ground cut from two dates or two
   overlapping tiles is one chip; it is anchored by the best scene covering it (fewest clouds,
   then scene id). Without a configured anchor sensor, sensors are tried finest GSD first
   (ties: more bands, then name); a coarser sensor anchors only ground that finer anchors do
   not (a chip overlapping already-anchored chips of another lattice by more than
   ``max_chip_overlap`` of its area is dropped, which also removes the duplicate ground of
   neighbouring UTM zones).
2. **Candidates.** A spatial index over all scene footprints (lon/lat, split at the
   antimeridian) gives, per chip, the scenes whose footprints touch it.
3. **Members.** Coverage is measured in the anchor's CRS (the member's footprint projected
   there, densified) and chosen by :func:`terracorpus.curation.diversity.select_members`:
   one member of every other sensor first, then dates spread over seasons and years.

   The member rule is pluggable: a name from
   :data:`terracorpus.curation.groups.rules.MEMBER_RULES` or a callable of the
   :class:`~terracorpus.curation.groups.rules.MemberRule` shape (odc-stac's ``groupby`` takes
   a name or a callable the same way).

Scenes grouping cannot use (a repeated id or acquisition, a geographic CRS, a rotated or
non-square grid, an empty footprint) are left out first, never an abort
(:func:`terracorpus.curation.groups.unused.screen_scenes`); :func:`group_scenes` also says
why each scene is in no group.

Everything is deterministic: scenes are ordered by id and ties are broken by a seeded hash.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely

from terracorpus.catalogs.scene import SceneRecord
from terracorpus.curation.groups.anchors import AnchorCutter, Chips, resolve_overlaps
from terracorpus.curation.groups.index import IndexFactory, StrTreeIndex
from terracorpus.curation.groups.members import MemberFinder, Pick
from terracorpus.curation.groups.records import GroupParams, ImageGroup, Member, group_id
from terracorpus.curation.groups.rules import MemberRule, member_rule
from terracorpus.curation.groups.scenes import SceneArrays
from terracorpus.curation.groups.unused import Unused, screen_scenes, unused_scenes

log = logging.getLogger(__name__)


class _GroupMaker:
    """Turns one anchor's chips and picks into groups; equal members are shared objects."""

    def __init__(self, scenes: SceneArrays, chips: Chips, params: GroupParams) -> None:
        self.scenes = scenes
        self.chips = chips
        self.min_sensors = params.min_sensors
        self.sensor = scenes.sensor.tolist()
        self.days = scenes.days.tolist()
        self._members: dict[tuple[int, float], Member] = {}

    def groups(
        self, anchor: int, idx: Sequence[int], picks: Sequence[list[Pick]]
    ) -> list[ImageGroup]:
        self._members = {}  # members are per anchor (their time gap is to the anchor)
        wkbs = shapely.to_wkb(np.array([self.chips.lonlat[c] for c in idx], dtype=object))
        out = []
        for c, chip_picks, wkb in zip(idx, picks, wkbs, strict=True):
            sensors = {self.sensor[anchor], *(self.sensor[k] for k, _ in chip_picks)}
            if len(sensors) >= self.min_sensors:
                out.append(self._group(anchor, c, chip_picks, wkb))
        return out

    def _group(self, anchor: int, c: int, picks: list[Pick], wkb: bytes) -> ImageGroup:
        chips, rec = self.chips, self.scenes.records[anchor]
        picks = sorted(picks, key=lambda p: (self.sensor[p[0]], self.days[p[0]], p[0]))
        members = (
            self._member(anchor, anchor, chips.coverage[c]),
            *(self._member(anchor, k, f) for k, f in picks),
        )
        size = chips.size[c]
        minx, miny, maxx, maxy = chips.box[c].bounds
        return ImageGroup(
            group_id=group_id(rec.id, chips.row_off[c], chips.col_off[c], size, rec.gsd),
            anchor_scene_id=rec.id,
            anchor_sensor=rec.sensor,
            crs=rec.crs,
            bounds=(minx, miny, maxx, maxy),
            footprint_wkb=wkb,
            window=(chips.row_off[c], chips.col_off[c], size, size),
            gsd=rec.gsd,
            members=members,
        )

    def _member(self, anchor: int, k: int, coverage: float) -> Member:
        m = self._members.get((k, coverage))
        if m is None:
            rec = self.scenes.records[k]
            m = Member(
                scene_id=rec.id,
                sensor=rec.sensor,
                datetime=rec.datetime,
                time_gap_days=self.days[k] - self.days[anchor],
                coverage=coverage,
                cloud_cover=rec.cloud_cover,
                role="anchor" if k == anchor else "member",
            )
            self._members[(k, coverage)] = m
        return m


def groups_of_chips(
    table: SceneArrays,
    chips: Chips,
    chosen: Sequence[int],
    params: GroupParams,
    *,
    index: IndexFactory,
    rule: MemberRule,
) -> list[ImageGroup]:
    """The groups of the chosen anchor chips, sorted by anchor scene id, then row and column.

    Members are found per anchor scene, one CRS at a time, so projected footprints are
    cached while they are useful. Chips with fewer than ``min_sensors`` sensors give none.
    """
    finder = MemberFinder(table, params, index, rule)
    maker = _GroupMaker(table, chips, params)
    groups: list[ImageGroup] = []
    by_anchor: dict[int, list[int]] = {}
    for c in chosen:
        by_anchor.setdefault(chips.anchor[c], []).append(c)
    for anchor in sorted(by_anchor, key=lambda k: (table.records[k].crs, k)):
        idx = by_anchor[anchor]
        boxes = np.array([chips.box[c] for c in idx], dtype=object)
        lonlat = np.array([chips.lonlat[c] for c in idx], dtype=object)
        groups += maker.groups(anchor, idx, finder.for_anchor(anchor, boxes, lonlat))
    groups.sort(key=lambda g: (g.anchor_scene_id, g.window[0], g.window[1]))
    return groups


@dataclass(frozen=True)
class GroupingResult:
    """The groups, and every scene in none of them with its reason."""

    groups: list[ImageGroup]
    unused: list[Unused]


def group_scenes(
    scenes: Sequence[SceneRecord],
    params: GroupParams,
    *,
    index: IndexFactory = StrTreeIndex,
    members: str | MemberRule = "spread",
) -> GroupingResult:
    """:func:`build_groups`, and why each scene is in no group (:mod:`.unused`).

    Raises:
        GroupingError: as :func:`build_groups`, but not when every scene is refused: then
            there are no groups, and the refusals say why.
    """
    usable, refused = screen_scenes(scenes, params)
    groups = _build(usable, params, index, members) if usable else []
    return GroupingResult(groups, refused + unused_scenes(usable, groups, params))


def build_groups(
    scenes: Sequence[SceneRecord],
    params: GroupParams,
    *,
    index: IndexFactory = StrTreeIndex,
    members: str | MemberRule = "spread",
) -> list[ImageGroup]:
    """Build image groups from scene records.

    Args:
        scenes: the scenes (any order); scenes grouping cannot use are left out
            (:func:`~.unused.screen_scenes`; :func:`group_scenes` says which and why).
        params: the group rules.
        index: the spatial index factory (:class:`StrTreeIndex`; :class:`AllPairsIndex` is
            the brute-force reference the benchmark compares against).
        members: the member rule: a name of :data:`~.rules.MEMBER_RULES` (``"spread"``,
            the default: every other sensor first, then dates spread over seasons and
            years) or a callable of the :class:`~.rules.MemberRule` shape.

    Returns:
        Groups sorted by anchor scene id, then chip row and column. Chips whose groups have
        fewer than ``min_sensors`` sensors are left out; the list may be empty.

    Raises:
        GroupingError: no (usable) scenes, an unknown anchor sensor, no anchor scene clear
            enough, an unknown member rule or bad parameters.
    """
    return _build(screen_scenes(scenes, params)[0], params, index, members)


def _build(
    scenes: Sequence[SceneRecord],
    params: GroupParams,
    index: IndexFactory,
    members: str | MemberRule,
) -> list[ImageGroup]:
    rule = member_rule(members)
    table = SceneArrays(scenes, params)
    chips = AnchorCutter(table, params, index).run()
    keep = resolve_overlaps(chips, index, params.max_chip_overlap)
    kept = np.flatnonzero(keep)
    groups = groups_of_chips(table, chips, kept.tolist(), params, index=index, rule=rule)
    log.info(
        "%d groups from %d scenes (%d anchor chips, %d after overlap removal)",
        len(groups),
        len(table),
        len(chips.anchor),
        len(kept),
    )
    return groups
