"""One acquisition, one scene: an acquisition published twice is kept once.

Providers publish the same acquisition more than once: Earth Search under its v0 collection
``sentinel-s2-l2a-cogs`` and its v1 collection ``sentinel-2-l2a`` with the same item id,
Planetary Computer and Earth Search under different ids. Two scene records are **one
acquisition** when

- their sensors (the registry's) are the same, and so are their platforms (case, ``-``,
  ``_`` and spaces ignored: ``Sentinel-2B`` is ``sentinel-2b``; a record without a platform
  matches any);
- their datetimes are at most :data:`SAME_TIME_S` (1 s) apart;
- they show the same ground: the same tile (same CRS, finest grids overlapping by at least
  :data:`SAME_GROUND` of their union) or, for records of two collections or two APIs,
  footprints overlapping by at least :data:`SAME_GROUND` of their union. Neighbouring
  tiles of one pass (same time, same platform) overlap by about a tenth and stay apart; so
  do one collection's tiles of two UTM zones over the same ground (Planetary Computer's
  47XML and 46XER of one pass overlap by 93 % in lon/lat: the provider's own tiling, both
  kept).

Of each acquisition the record that ranks first under the caller's preference is kept; the
others come back as :class:`Duplicate` (dropped, kept). The search's preference is the order
of ``search.apis``, then of each API's ``collections``, then the item id
(:func:`terracorpus.catalogs.search.search_scenes`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import shapely

from terracorpus.catalogs.scene import SceneRecord

SAME_TIME_S = 1.0
"""Largest datetime difference (seconds) of one acquisition published twice."""
SAME_GROUND = 0.9
"""Smallest overlap (intersection over union) of one acquisition's grids or footprints."""


@dataclass(frozen=True)
class Duplicate:
    """A record dropped because ``kept`` is the same acquisition and is preferred."""

    dropped: SceneRecord
    kept: SceneRecord

    def describe(self) -> str:
        k = self.kept
        where = f" from {k.api_url}" if k.api_url else ""
        return (
            f"same acquisition as {k.collection}/{k.id}{where} (same platform, datetime "
            f"within {SAME_TIME_S:g} s, same ground), which is preferred"
        )


def one_per_acquisition(
    scenes: Sequence[SceneRecord], rank: Callable[[SceneRecord], Any]
) -> tuple[list[SceneRecord], list[Duplicate]]:
    """The scenes with every acquisition once (input order kept), and the ones dropped.

    Args:
        scenes: scene records, any order.
        rank: the preference: of one acquisition, the record with the smallest rank stays.
    """
    parent = list(range(len(scenes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in _same_acquisition_pairs(scenes):
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    members: dict[int, list[int]] = {}
    for i in range(len(scenes)):
        members.setdefault(root(i), []).append(i)
    best = {r: min(idx, key=lambda k: rank(scenes[k])) for r, idx in members.items()}
    kept = [s for i, s in enumerate(scenes) if best[root(i)] == i]
    dropped = [
        Duplicate(dropped=s, kept=scenes[best[root(i)]])
        for i, s in enumerate(scenes)
        if best[root(i)] != i
    ]
    return kept, dropped


def _same_acquisition_pairs(scenes: Sequence[SceneRecord]) -> list[tuple[int, int]]:
    """Index pairs of one acquisition: a sweep over each sensor's records in time order."""
    order = sorted(range(len(scenes)), key=lambda k: (scenes[k].sensor, scenes[k].datetime))
    footprints: dict[int, Any] = {}
    pairs = []
    for pos, i in enumerate(order):
        a = scenes[i]
        for j in order[pos + 1 :]:
            b = scenes[j]
            if b.sensor != a.sensor or (b.datetime - a.datetime).total_seconds() > SAME_TIME_S:
                break
            if _same_platform(a, b) and _same_ground(a, b, i, j, footprints):
                pairs.append((i, j))
    return pairs


_PLATFORM_NOISE = re.compile(r"[\s_-]+")


def _platform(s: SceneRecord) -> str | None:
    return None if s.platform is None else _PLATFORM_NOISE.sub("", s.platform.lower())


def _same_platform(a: SceneRecord, b: SceneRecord) -> bool:
    pa, pb = _platform(a), _platform(b)
    return pa is None or pb is None or pa == pb


def _same_ground(a: SceneRecord, b: SceneRecord, i: int, j: int, cache: dict[int, Any]) -> bool:
    if not _boxes_meet(a.bbox, b.bbox):
        return False
    if a.crs == b.crs and _iou_boxes(a.grid().bounds, b.grid().bounds) >= SAME_GROUND:
        return True
    if a.collection == b.collection and a.api_url == b.api_url:
        return False  # one publisher's own tiles: two UTM zones' tiles of one pass stay
    fa = cache.setdefault(i, a.footprint)
    fb = cache.setdefault(j, b.footprint)
    union = float(shapely.area(shapely.union(fa, fb)))
    return union > 0 and float(shapely.area(shapely.intersection(fa, fb))) / union >= SAME_GROUND


def _boxes_meet(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Lon/lat bboxes meet (a bbox crossing the antimeridian, west > east, meets any)."""
    if a[0] > a[2] or b[0] > b[2]:
        return a[1] <= b[3] and b[1] <= a[3]
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _iou_boxes(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union
