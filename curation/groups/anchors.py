"""Step 1 of grouping: anchor scenes cut into chips, each piece of ground anchored once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from terracorpus.catalogs.scene import Grid
from terracorpus.curation import geometry as geo
from terracorpus.curation.errors import GroupingError
from terracorpus.curation.groups.index import IndexFactory
from terracorpus.curation.groups.records import GroupParams
from terracorpus.curation.groups.scenes import SceneArrays

log = logging.getLogger(__name__)


@dataclass
class Chips:
    """Candidate anchor chips in priority order (parallel lists, then arrays)."""

    anchor: list[int]
    lattice: list[int]
    row_off: list[int]
    col_off: list[int]
    size: list[int]
    box: list[BaseGeometry]
    lonlat: list[BaseGeometry]
    coverage: list[float]


def _anchor_tiers(scenes: SceneArrays, params: GroupParams) -> list[list[int]]:
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


CellFilter = Callable[[geo.Lattice, geo.ChipCells], NDArray[np.bool_]]
"""Which cells of a scene to consider (a spatial partition cuts only its region)."""


class AnchorCutter:
    """Cuts anchor scenes into chips, best scene first, each lattice cell once.

    A scene of a coarser tier only anchors chips whose centre lies outside every chip of
    the finer tiers: the ground those do not cover. ``cells`` (optional) limits the cutting
    to some cells; each cell's outcome does not change, as it depends only on the scenes
    that touch it and on the finer chips around its centre.
    """

    def __init__(
        self,
        scenes: SceneArrays,
        params: GroupParams,
        index: IndexFactory,
        cells: CellFilter | None = None,
    ) -> None:
        self.scenes = scenes
        self.params = params
        self.index = index
        self.cell_filter = cells
        self.chips = Chips([], [], [], [], [], [], [], [])
        self.lattices: dict[geo.Lattice, int] = {}
        self.claimed: dict[int, set[int]] = {}
        self.full_grids: set[tuple[int, Grid]] = set()
        self.skipped = 0

    def run(self) -> Chips:
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
        if self.cell_filter is not None:
            cells = cells.take(np.flatnonzero(self.cell_filter(lattice, cells)))
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


def resolve_overlaps(chips: Chips, index: IndexFactory, max_overlap: float) -> NDArray[np.bool_]:
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
