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

Everything is deterministic: scenes are ordered by id and ties are broken by a seeded hash.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from numpy.typing import NDArray
from shapely.errors import GEOSException
from shapely.geometry.base import BaseGeometry

from terracorpus.catalogs.scene import Grid, SceneRecord
from terracorpus.curation import geometry as geo
from terracorpus.curation.diversity import (
    CLOUD_PENALTY,
    Candidates,
    Rules,
    Selection,
    select_members,
    time_features,
)
from terracorpus.curation.errors import GroupingError

log = logging.getLogger(__name__)

Role = Literal["anchor", "member"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class GroupParams:
    """The rules of a group.

    Attributes:
        chip_size_m: ground size of a chip side; rounded to whole anchor pixels.
        anchor_sensor: the sensor whose scenes anchor groups; None: finest GSD, with the next
            finest anchoring ground the finer ones do not cover.
        min_coverage: fraction of the chip a scene must cover (anchor and members).
        max_cloud_cover: scene cloud cover limit in percent (scenes without one pass).
        max_members_per_sensor: images per sensor in a group, the anchor included.
        max_members: images per group, the anchor included.
        min_sensors: distinct sensors a group needs (the anchor's included).
        max_chip_overlap: fraction of a chip that may overlap chips anchored before it on
            another lattice (another CRS, pixel phase or sensor).
        seed: seeds the tie-break between equally good candidates.
    """

    chip_size_m: float = 960.0
    anchor_sensor: str | None = None
    min_coverage: float = 0.95
    max_cloud_cover: float = 60.0
    max_members_per_sensor: int = 3
    max_members: int = 8
    min_sensors: int = 2
    max_chip_overlap: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.chip_size_m > 0, "chip_size_m must be > 0"),
            (0 < self.min_coverage <= 1, "min_coverage must be in (0, 1]"),
            (0 <= self.max_cloud_cover <= 100, "max_cloud_cover must be in [0, 100]"),
            (self.max_members_per_sensor >= 1, "max_members_per_sensor must be >= 1"),
            (self.max_members >= 1, "max_members must be >= 1"),
            (self.min_sensors >= 1, "min_sensors must be >= 1"),
            (0 <= self.max_chip_overlap <= 1, "max_chip_overlap must be in [0, 1]"),
        ]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise GroupingError("invalid group parameters: " + "; ".join(bad))


@dataclass(frozen=True, slots=True)
class Member:
    """One image of a group: a scene, and how well and when it sees the footprint.

    ``time_gap_days`` is signed (member minus anchor); ``coverage`` is the fraction of the
    footprint inside the scene's footprint, measured in the anchor's CRS; ``cloud_cover`` is
    the scene's, in percent.
    """

    scene_id: str
    sensor: str
    datetime: datetime
    time_gap_days: float
    coverage: float
    cloud_cover: float | None
    role: Role


@dataclass(frozen=True, slots=True)
class ImageGroup:
    """A chip footprint on an anchor scene's grid and the images that see it.

    ``bounds`` are (minx, miny, maxx, maxy) in ``crs`` (the anchor's); ``window`` is
    (row_off, col_off, height, width) in the anchor's pixels at ``gsd``; ``footprint_wkb`` is
    the footprint in lon/lat (a MultiPolygon split at 180° where it crosses the antimeridian).
    ``members`` start with the anchor, then the others by sensor and date.
    """

    group_id: str
    anchor_scene_id: str
    anchor_sensor: str
    crs: str
    bounds: tuple[float, float, float, float]
    footprint_wkb: bytes
    window: tuple[int, int, int, int]
    gsd: float
    members: tuple[Member, ...]

    @property
    def footprint(self) -> BaseGeometry:
        geom: BaseGeometry = shapely.from_wkb(self.footprint_wkb)
        return geom

    @property
    def sensors(self) -> tuple[str, ...]:
        """Distinct sensors, in member order."""
        return tuple(dict.fromkeys(m.sensor for m in self.members))

    @property
    def chip_size_m(self) -> float:
        return self.window[3] * self.gsd


def group_id(anchor_scene_id: str, row_off: int, col_off: int, size: int, gsd: float) -> str:
    """A stable id: the same anchor scene, chip window and chip size give the same id."""
    key = f"{anchor_scene_id}|{row_off}|{col_off}|{size}|{gsd:.6f}"
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


# -- spatial index --------------------------------------------------------------------------
class SpatialIndex(Protocol):
    """Which indexed geometries each query geometry may intersect.

    The answer must hold every intersecting pair; it may hold more (pairs whose bounding
    boxes meet): every use checks the geometry exactly afterwards, only where it matters.
    """

    def query(self, geoms: geo.GeomArray) -> NDArray[np.int64]:
        """(2, n) pairs (query position, indexed position), sorted by both."""
        ...


IndexFactory = Callable[[geo.GeomArray], SpatialIndex]


class StrTreeIndex:
    """A shapely STRtree queried in bulk, in C: the pairs whose bounding boxes meet."""

    def __init__(self, geoms: geo.GeomArray) -> None:
        self._tree = shapely.STRtree(geoms)

    def query(self, geoms: geo.GeomArray) -> NDArray[np.int64]:
        pairs = self._tree.query(geoms).astype(np.int64)
        order = np.lexsort((pairs[1], pairs[0]))
        out: NDArray[np.int64] = pairs[:, order]
        return out


class AllPairsIndex:
    """The straightforward reference: every query geometry tested against every indexed one
    (exact ``intersects``, vectorised per query geometry)."""

    def __init__(self, geoms: geo.GeomArray) -> None:
        self._geoms = geoms

    def query(self, geoms: geo.GeomArray) -> NDArray[np.int64]:
        hits = [np.flatnonzero(shapely.intersects(g, self._geoms)) for g in geoms]
        left = np.repeat(np.arange(len(geoms), dtype=np.int64), [len(h) for h in hits])
        right = np.concatenate(hits).astype(np.int64) if hits else np.zeros(0, np.int64)
        return np.vstack([left, right])


# -- the scenes, as arrays ------------------------------------------------------------------
def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


class _Scenes:
    """Scene records sorted by id, with the arrays grouping needs."""

    def __init__(self, scenes: Sequence[SceneRecord], params: GroupParams) -> None:
        if not scenes:
            raise GroupingError("no scenes to group; run `terracorpus search` first, or widen it")
        self.records = sorted(scenes, key=lambda s: s.id)
        ids = [s.id for s in self.records]
        dupes = sorted({a for a, b in itertools.pairwise(ids) if a == b})
        if dupes:
            raise GroupingError(f"scene ids must be unique; repeated: {dupes[:5]}")
        self.sensors = _rank_sensors(self.records)
        code = {name: k for k, name in enumerate(self.sensors)}
        self.sensor = np.array([code[s.sensor] for s in self.records], dtype=np.int64)
        days = [(_utc(s.datetime) - _EPOCH).total_seconds() / 86400.0 for s in self.records]
        self.days = np.array(days, dtype=np.float64)
        self.features = time_features(self.days)
        cloud = [np.nan if s.cloud_cover is None else s.cloud_cover for s in self.records]
        self.cloud = np.array(cloud, dtype=np.float64)
        self.clear = ~(self.cloud > params.max_cloud_cover)
        self.penalty = CLOUD_PENALTY * np.nan_to_num(self.cloud) / 100.0 + _tie_break(
            ids, params.seed
        )
        self.lonlat = _lonlat_footprints(self.records)

    def __len__(self) -> int:
        return len(self.records)


def _rank_sensors(records: Sequence[SceneRecord]) -> list[str]:
    """Sensor names, finest GSD first; ties: more bands first, then by name."""
    gsd: dict[str, float] = {}
    bands: dict[str, int] = {}
    for s in records:
        gsd[s.sensor] = min(gsd.get(s.sensor, np.inf), s.gsd)
        bands[s.sensor] = max(bands.get(s.sensor, 0), len(s.bands))
    return sorted(gsd, key=lambda n: (gsd[n], -bands[n], n))


def _tie_break(ids: Sequence[str], seed: int) -> NDArray[np.float64]:
    """A seeded per-scene value far below any real distance difference (< 1e-9)."""
    digests = [hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=4).digest() for i in ids]
    return np.array([int.from_bytes(d, "big") for d in digests], dtype=np.float64) * 2.0**-62


def _lonlat_footprints(records: Sequence[SceneRecord]) -> geo.GeomArray:
    try:
        geoms: geo.GeomArray = shapely.from_wkb([s.footprint_wkb for s in records])
    except GEOSException as e:
        raise GroupingError(f"a scene footprint is not valid WKB: {e}") from None
    bounds = shapely.bounds(geoms)
    odd = (bounds[:, 2] - bounds[:, 0] > 180) | (bounds[:, 0] < -180) | (bounds[:, 2] > 180)
    odd |= ~shapely.is_valid(geoms)
    empty = shapely.is_empty(geoms) | (shapely.area(geoms) <= 0)
    if empty.any():
        bad = [records[k].id for k in np.flatnonzero(empty)[:5]]
        raise GroupingError(f"scenes with an empty footprint cannot be grouped: {bad}")
    for k in np.flatnonzero(odd):
        geoms[k] = geo.normalize_lonlat(geoms[k])
    return geoms


# -- step 1: anchor chips -------------------------------------------------------------------
@dataclass
class _Chips:
    """Candidate anchor chips in priority order (parallel lists, then arrays)."""

    anchor: list[int]
    lattice: list[int]
    row_off: list[int]
    col_off: list[int]
    size: list[int]
    box: list[BaseGeometry]
    lonlat: list[BaseGeometry]
    coverage: list[float]


def _anchor_tiers(scenes: _Scenes, params: GroupParams) -> list[list[int]]:
    """Anchor-eligible scenes by tier (finest sensor first), each best first: cloud, id."""
    if params.anchor_sensor is not None:
        if params.anchor_sensor not in scenes.sensors:
            raise GroupingError(
                f"anchor sensor {params.anchor_sensor!r} has no scenes; the scenes are of "
                f"{scenes.sensors}. Set group.anchor_sensor to one of them, or leave it unset."
            )
        codes = [scenes.sensors.index(params.anchor_sensor)]
    else:
        codes = list(range(len(scenes.sensors)))
    cloud = np.nan_to_num(scenes.cloud)
    tiers = []
    for code in codes:
        members = np.flatnonzero((scenes.sensor == code) & scenes.clear)
        tiers.append(sorted(members.tolist(), key=lambda k: (cloud[k], k)))
    if not any(tiers):
        names = [scenes.sensors[t] for t in codes]
        raise GroupingError(
            f"no scene of the anchor sensor(s) {names} has cloud cover <= "
            f"{params.max_cloud_cover}%; raise group.max_cloud_cover"
        )
    return [t for t in tiers if t]


class _AnchorCutter:
    """Cuts anchor scenes into chips, best scene first, each lattice cell once.

    A scene of a coarser tier only anchors chips whose centre lies outside every chip of
    the finer tiers: the ground those do not cover.
    """

    def __init__(self, scenes: _Scenes, params: GroupParams, index: IndexFactory) -> None:
        self.scenes = scenes
        self.params = params
        self.index = index
        self.chips = _Chips([], [], [], [], [], [], [], [])
        self.lattices: dict[geo.Lattice, int] = {}
        self.claimed: dict[int, set[int]] = {}
        self.full_grids: set[tuple[int, Grid]] = set()
        self.skipped = 0

    def run(self) -> _Chips:
        for tier in _anchor_tiers(self.scenes, self.params):
            lonlat = np.array(self.chips.lonlat, dtype=object)
            finer = _Finer(lonlat, self.index) if len(lonlat) else None
            for k in tier:
                self._cut(k, finer)
        if self.skipped:
            log.warning(
                "%d scene(s) could not anchor groups (rotated or skewed grids)", self.skipped
            )
        return self.chips

    def _cut(self, k: int, finer: _Finer | None) -> None:
        rec = self.scenes.records[k]
        grid = rec.grid()
        try:
            lattice = geo.lattice_of(rec.crs, grid)
        except GroupingError as e:
            self.skipped += 1
            log.warning("scene %s cannot anchor groups: %s", rec.id, e)
            return
        lid = self.lattices.setdefault(lattice, len(self.lattices))
        same_grid = (lid, grid)
        if same_grid in self.full_grids:  # another date of a tile whose chips are all taken
            return
        taken = self.claimed.setdefault(lid, set())
        size = max(1, round(self.params.chip_size_m / grid.gsd))
        cells = geo.chip_cells(lattice, grid, size)
        keys = (cells.ci << 32) + cells.cj
        free = np.flatnonzero(~np.fromiter(map(taken.__contains__, keys.tolist()), bool, len(keys)))
        boxes = geo.chip_boxes(lattice, cells.take(free))
        if finer is not None and len(free):
            inside = finer.covers_centres(boxes, rec.crs)
            taken.update(keys[free[inside]].tolist())  # finer chips hold them, for good
            free, boxes = free[~inside], boxes[~inside]
        if not len(free):
            self.full_grids.add(same_grid)
            return
        valid = shapely.intersection(
            geo.lonlat_to_crs(self.scenes.lonlat[k : k + 1], rec.crs)[0], shapely.box(*grid.bounds)
        )
        shapely.prepare(valid)
        frac = geo.coverage(boxes, np.full(len(boxes), valid, dtype=object))
        ok = frac >= self.params.min_coverage
        if ok.all():
            self.full_grids.add(same_grid)
        if ok.any():
            taken.update(keys[free[ok]].tolist())
            self._add(k, lid, cells.take(free[ok]), boxes[ok], frac[ok], rec.crs, size * grid.gsd)

    def _add(
        self,
        k: int,
        lid: int,
        cells: geo.ChipCells,
        boxes: geo.GeomArray,
        frac: NDArray[np.float64],
        crs: str,
        side_m: float,
    ) -> None:
        n = len(boxes)
        c = self.chips
        c.anchor += [k] * n
        c.lattice += [lid] * n
        c.row_off += cells.row_off.tolist()
        c.col_off += cells.col_off.tolist()
        c.size += [cells.size] * n
        c.box += list(boxes)
        c.lonlat += list(geo.crs_to_lonlat(boxes, crs, densify_m=side_m / 4))
        c.coverage += frac.tolist()


class _Finer:
    """The lon/lat footprints of finer-tier chips, asked which chip centres they hold."""

    def __init__(self, footprints: geo.GeomArray, index: IndexFactory) -> None:
        self.footprints = footprints
        shapely.prepare(footprints)
        self.index = index(footprints)

    def covers_centres(self, boxes: geo.GeomArray, crs: str) -> NDArray[np.bool_]:
        centres = shapely.centroid(boxes)
        x, y = geo.transformer(crs, geo.LONLAT).transform(
            shapely.get_x(centres), shapely.get_y(centres)
        )
        points = shapely.points(x, y)
        i, j = self.index.query(points)
        inside = shapely.intersects(self.footprints[j], points[i])
        covered = np.zeros(len(boxes), dtype=bool)
        covered[i[inside]] = True
        return covered


def _resolve_overlaps(chips: _Chips, index: IndexFactory, max_overlap: float) -> NDArray[np.bool_]:
    """Keep chips that overlap higher-priority chips of other lattices by <= max_overlap."""
    n = len(chips.anchor)
    keep = np.ones(n, dtype=bool)
    lattice = np.array(chips.lattice, dtype=np.int64)
    if n == 0 or len(np.unique(lattice)) < 2:
        return keep
    lonlat = np.array(chips.lonlat, dtype=object)
    a, b = index(lonlat).query(lonlat)
    cross = (lattice[a] != lattice[b]) & (a < b)
    a, b = a[cross], b[cross]
    touching = shapely.intersects(lonlat[a], lonlat[b])
    a, b = a[touching], b[touching]
    if len(a) == 0:
        return keep
    frac = _overlap_fraction(lonlat, a, b)
    order = np.argsort(b, kind="stable")
    overlap = np.zeros(n, dtype=np.float64)
    for ai, bi, f in zip(a[order].tolist(), b[order].tolist(), frac[order].tolist(), strict=True):
        if keep[ai]:
            overlap[bi] += f
            if overlap[bi] > max_overlap:
                keep[bi] = False
    return keep


def _overlap_fraction(
    lonlat: geo.GeomArray, a: NDArray[np.int64], b: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Area of chip ``a`` ∩ chip ``b`` over the area of ``b``, per pair.

    Chips are small, so their lon/lat bounding boxes stand in for them (a few per cent off
    where two UTM grids meet at an angle); pairs with a chip split at the antimeridian are
    intersected exactly.
    """
    box = shapely.bounds(lonlat)
    lo = np.maximum(box[a, :2], box[b, :2])
    hi = np.minimum(box[a, 2:], box[b, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=1)
    frac = inter / np.prod(box[b, 2:] - box[b, :2], axis=1)
    split = (box[a, 2] - box[a, 0] > 180) | (box[b, 2] - box[b, 0] > 180)
    if split.any():
        ga, gb = lonlat[a[split]], lonlat[b[split]]
        frac[split] = shapely.area(shapely.intersection(ga, gb)) / shapely.area(gb)
    out: NDArray[np.float64] = frac
    return out


# -- step 2 and 3: candidates and members ---------------------------------------------------
class _ProjectedFootprints:
    """Scene footprints projected into one CRS at a time, prepared for fast predicates."""

    def __init__(self, scenes: _Scenes) -> None:
        self._scenes = scenes
        self._crs: str | None = None
        self._cache: dict[int, BaseGeometry] = {}

    def get(self, crs: str, idx: NDArray[np.int64]) -> geo.GeomArray:
        if crs != self._crs:
            self._crs, self._cache = crs, {}
        missing = [int(k) for k in np.unique(idx) if int(k) not in self._cache]
        if missing:
            projected = geo.lonlat_to_crs(self._scenes.lonlat[missing], crs)
            shapely.prepare(projected)
            self._cache.update(zip(missing, projected, strict=True))
        return np.array([self._cache[int(k)] for k in idx], dtype=object)


_Pick = tuple[int, float]
"""A member other than the anchor: (scene index, coverage)."""


class _MemberFinder:
    """Members for the chips of one anchor scene at a time."""

    def __init__(self, scenes: _Scenes, params: GroupParams, index: IndexFactory) -> None:
        self.scenes = scenes
        self.params = params
        self.rules = Rules(params.max_members, params.max_members_per_sensor, params.min_coverage)
        self.index = index(scenes.lonlat)
        self.footprints = _ProjectedFootprints(scenes)
        self.order = list(range(len(scenes.sensors)))

    def for_anchor(
        self, anchor: int, boxes: geo.GeomArray, lonlat: geo.GeomArray
    ) -> list[list[_Pick]]:
        """Picks (members other than the anchor) for each chip of ``anchor``."""
        s = self.scenes
        chip, scene = self.index.query(lonlat)
        keep = s.clear[scene] & (scene != anchor)
        chip, scene = chip[keep], scene[keep]
        out: list[list[_Pick]] = [[] for _ in range(len(boxes))]
        # All chips share the anchor's candidates: a scene that misses a chip simply covers
        # none of it, so one selection replays on every chip with the same outcomes.
        cand = np.unique(scene)
        if len(cand) == 0:
            return out
        fps = self.footprints.get(s.records[anchor].crs, cand)
        for c, picks in self._select_shared(anchor, cand, fps, boxes):
            out[c] = picks
        return out

    def _select(
        self, anchor: int, cand: NDArray[np.int64], fps: geo.GeomArray, box: BaseGeometry
    ) -> Selection:
        s = self.scenes
        c = Candidates(sensor=s.sensor[cand], features=s.features[cand], penalty=s.penalty[cand])
        cover = _cover_fn(box, fps)
        return select_members(
            int(s.sensor[anchor]), s.features[anchor], c, self.order, self.rules, cover
        )

    def _select_shared(
        self, anchor: int, cand: NDArray[np.int64], fps: geo.GeomArray, boxes: geo.GeomArray
    ) -> list[tuple[int, list[_Pick]]]:
        """Select for one chip, then replay that selection on every chip where it is valid.

        A scene whose bounding box covers less than ``min_coverage`` of a chip cannot pass
        there and is never tested. A selection replays on another chip when that chip's
        possible scenes are among the selecting chip's and every tested scene has the same
        outcome there; the other chips start a new selection, replayed in turn.
        """
        possible = _bbox_possible(boxes, fps, self.params.min_coverage)
        results: list[tuple[int, list[_Pick]]] = []
        # Chips with the most possible scenes first: their selections replay on more chips.
        left = np.argsort(-possible.sum(axis=1), kind="stable")
        while len(left):
            first, rest = left[0], left[1:]
            sub = np.flatnonzero(possible[first])  # positions in cand
            sel = self._select(anchor, cand[sub], fps[sub], boxes[first])
            tested = [(int(sub[k]), ok) for k, ok in sel.tested]
            picked = [(int(sub[k]), f) for k, f in sel.picked]
            results.append((int(first), [(int(cand[k]), f) for k, f in picked]))
            candidates = rest[~(possible[rest] & ~possible[first]).any(axis=1)]
            frac, replays = self._replay(tested, fps, boxes[candidates])
            column = {k: col for col, (k, _) in enumerate(tested)}
            for row in np.flatnonzero(replays).tolist():
                picks = [(int(cand[k]), float(frac[row, column[k]])) for k, _ in picked]
                results.append((int(candidates[row]), picks))
            left = rest[~np.isin(rest, candidates[replays])]
        return results

    def _replay(
        self, tested: Sequence[tuple[int, bool]], fps: geo.GeomArray, boxes: geo.GeomArray
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Coverages of the tested candidates on each chip, and where the outcomes agree.

        Tested candidates are checked one at a time over the chips still agreeing, so a
        chip drops out at its first different outcome.
        """
        frac = np.zeros((len(boxes), len(tested)), dtype=np.float64)
        rows = np.arange(len(boxes))
        for col, (k, ok) in enumerate(tested):
            if not len(rows):
                break
            f = geo.coverage(boxes[rows], np.full(len(rows), fps[k], dtype=object))
            frac[rows, col] = f
            rows = rows[(f >= self.params.min_coverage) == ok]
        replays = np.zeros(len(boxes), dtype=bool)
        replays[rows] = True
        return frac, replays


def _cover_fn(box: BaseGeometry, fps: geo.GeomArray) -> Callable[[int], float]:
    """Coverage of one chip by candidate ``k``."""
    bounds = box.bounds
    area = float(box.area)

    def cover(k: int) -> float:
        if fps[k].contains_properly(box):
            return 1.0
        return min(1.0, float(shapely.area(shapely.clip_by_rect(fps[k], *bounds))) / area)

    return cover


def _bbox_possible(
    boxes: geo.GeomArray, fps: geo.GeomArray, min_coverage: float
) -> NDArray[np.bool_]:
    """(chips, scenes): True where the scene's bounding box covers >= min_coverage of the chip."""
    cb, fb = shapely.bounds(boxes), shapely.bounds(fps)
    lo = np.maximum(cb[:, None, :2], fb[None, :, :2])
    hi = np.minimum(cb[:, None, 2:], fb[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    area = np.prod(cb[:, 2:] - cb[:, :2], axis=1)
    out: NDArray[np.bool_] = inter >= min_coverage * area[:, None] * (1 - 1e-9)
    return out


class _GroupMaker:
    """Turns one anchor's chips and picks into groups; equal members are shared objects."""

    def __init__(self, scenes: _Scenes, chips: _Chips, params: GroupParams) -> None:
        self.scenes = scenes
        self.chips = chips
        self.min_sensors = params.min_sensors
        self.sensor = scenes.sensor.tolist()
        self.days = scenes.days.tolist()
        self._members: dict[tuple[int, float], Member] = {}

    def groups(
        self, anchor: int, idx: Sequence[int], picks: Sequence[list[_Pick]]
    ) -> list[ImageGroup]:
        self._members = {}  # members are per anchor (their time gap is to the anchor)
        wkbs = shapely.to_wkb(np.array([self.chips.lonlat[c] for c in idx], dtype=object))
        out = []
        for c, chip_picks, wkb in zip(idx, picks, wkbs, strict=True):
            sensors = {self.sensor[anchor], *(self.sensor[k] for k, _ in chip_picks)}
            if len(sensors) >= self.min_sensors:
                out.append(self._group(anchor, c, chip_picks, wkb))
        return out

    def _group(self, anchor: int, c: int, picks: list[_Pick], wkb: bytes) -> ImageGroup:
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


def build_groups(
    scenes: Sequence[SceneRecord], params: GroupParams, *, index: IndexFactory = StrTreeIndex
) -> list[ImageGroup]:
    """Build image groups from scene records.

    Args:
        scenes: the scenes (any order; ids must be unique).
        params: the group rules.
        index: the spatial index factory (:class:`StrTreeIndex`; :class:`AllPairsIndex` is
            the brute-force reference the benchmark compares against).

    Returns:
        Groups sorted by anchor scene id, then chip row and column. Chips whose groups have
        fewer than ``min_sensors`` sensors are left out; the list may be empty.

    Raises:
        GroupingError: no scenes, an unknown anchor sensor, no anchor scene clear enough,
            bad parameters or unusable footprints.
    """
    table = _Scenes(scenes, params)
    chips = _AnchorCutter(table, params, index).run()
    keep = _resolve_overlaps(chips, index, params.max_chip_overlap)
    finder = _MemberFinder(table, params, index)
    maker = _GroupMaker(table, chips, params)
    groups: list[ImageGroup] = []
    kept = np.flatnonzero(keep)
    by_anchor: dict[int, list[int]] = {}
    for c in kept.tolist():
        by_anchor.setdefault(chips.anchor[c], []).append(c)
    # One CRS at a time, so projected footprints are cached while they are useful.
    for anchor in sorted(by_anchor, key=lambda k: (table.records[k].crs, k)):
        idx = by_anchor[anchor]
        boxes = np.array([chips.box[c] for c in idx], dtype=object)
        lonlat = np.array([chips.lonlat[c] for c in idx], dtype=object)
        groups += maker.groups(anchor, idx, finder.for_anchor(anchor, boxes, lonlat))
    groups.sort(key=lambda g: (g.anchor_scene_id, g.window[0], g.window[1]))
    log.info(
        "%d groups from %d scenes (%d anchor chips, %d after overlap removal)",
        len(groups),
        len(table),
        len(chips.anchor),
        len(kept),
    )
    return groups


# -- tables ---------------------------------------------------------------------------------
FRAME_COLUMNS = (
    "group_id",
    "anchor_scene_id",
    "anchor_sensor",
    "crs",
    "minx",
    "miny",
    "maxx",
    "maxy",
    "row_off",
    "col_off",
    "height",
    "width",
    "gsd",
    "n_members",
    "sensors",
    "members",
)


def groups_to_frame(groups: Sequence[ImageGroup]) -> gpd.GeoDataFrame:
    """One row per group; geometry: the lon/lat footprint (EPSG:4326).

    ``members`` is a JSON string (a list of objects with the :class:`Member` fields, datetime
    as ISO 8601), as nested fields are in ``scenes.parquet``; ``sensors`` is a comma-joined
    list for quick filtering.
    """
    rows = [_group_row(g) for g in groups]
    frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    for col in ("minx", "miny", "maxx", "maxy", "gsd"):
        frame[col] = frame[col].astype("float64")
    for col in ("row_off", "col_off", "height", "width", "n_members"):
        frame[col] = frame[col].astype("int64")
    geometry = shapely.from_wkb([g.footprint_wkb for g in groups])
    return gpd.GeoDataFrame(frame, geometry=geometry, crs="EPSG:4326")


def _group_row(g: ImageGroup) -> dict[str, Any]:
    minx, miny, maxx, maxy = g.bounds
    row_off, col_off, height, width = g.window
    return {
        "group_id": g.group_id,
        "anchor_scene_id": g.anchor_scene_id,
        "anchor_sensor": g.anchor_sensor,
        "crs": g.crs,
        "minx": minx,
        "miny": miny,
        "maxx": maxx,
        "maxy": maxy,
        "row_off": row_off,
        "col_off": col_off,
        "height": height,
        "width": width,
        "gsd": g.gsd,
        "n_members": len(g.members),
        "sensors": ",".join(g.sensors),
        "members": json.dumps([_member_dict(m) for m in g.members]),
    }


def _member_dict(m: Member) -> dict[str, Any]:
    return {
        "scene_id": m.scene_id,
        "sensor": m.sensor,
        "datetime": m.datetime.isoformat(),
        "time_gap_days": m.time_gap_days,
        "coverage": m.coverage,
        "cloud_cover": m.cloud_cover,
        "role": m.role,
    }


def groups_from_frame(frame: gpd.GeoDataFrame) -> list[ImageGroup]:
    """The groups of a frame made by :func:`groups_to_frame` (or read from Parquet)."""
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise GroupingError(
            f"a groups table needs the columns {missing}; it has {list(frame.columns)}"
        )
    wkbs = shapely.to_wkb(frame.geometry.to_numpy())
    rows = frame[list(FRAME_COLUMNS)].to_dict("records")
    return [_group(row, bytes(wkb)) for row, wkb in zip(rows, wkbs, strict=True)]


def _group(row: dict[str, Any], wkb: bytes) -> ImageGroup:
    return ImageGroup(
        group_id=str(row["group_id"]),
        anchor_scene_id=str(row["anchor_scene_id"]),
        anchor_sensor=str(row["anchor_sensor"]),
        crs=str(row["crs"]),
        bounds=(float(row["minx"]), float(row["miny"]), float(row["maxx"]), float(row["maxy"])),
        footprint_wkb=wkb,
        window=(int(row["row_off"]), int(row["col_off"]), int(row["height"]), int(row["width"])),
        gsd=float(row["gsd"]),
        members=tuple(_member_from(d) for d in json.loads(row["members"])),
    )


def _member_from(d: dict[str, Any]) -> Member:
    role = d["role"]
    if role not in ("anchor", "member"):
        raise GroupingError(f"a group member has the unknown role {role!r}")
    cloud = d["cloud_cover"]
    return Member(
        scene_id=str(d["scene_id"]),
        sensor=str(d["sensor"]),
        datetime=datetime.fromisoformat(d["datetime"]),
        time_gap_days=float(d["time_gap_days"]),
        coverage=float(d["coverage"]),
        cloud_cover=None if cloud is None else float(cloud),
        role=role,
    )
