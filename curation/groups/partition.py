"""Grouping over spatial partitions: the groups of :func:`build_groups`, one tile at a time.

A catalog too large for one process is grouped tile by tile, on a lon/lat grid of ``deg``
degrees. A tile *owns* the anchor chips whose centre lies in it, so every chip belongs to
exactly one tile, wherever the tile edges fall. Its task gets the scenes within a halo
around the tile, wide enough that every decision about its chips sees the same scenes as
the one-process run:

- a lattice cell is anchored by the best scene that covers it (scenes that touch the chip),
  unless its centre lies in a chip of a finer sensor: that chip is one chip away and decided
  the same way, so the dependency reaches one chip further per anchor tier;
- members come from the scenes that touch the chip.

One decision is not local: a chip overlapping earlier chips of other lattices by more than
``max_chip_overlap`` is dropped, but only by earlier chips that are themselves kept, and such
chains run along a UTM zone boundary. Each tile therefore reports the overlaps of its chips
with earlier chips (cut in its halo exactly as in their own tile), and :func:`dropped_chips`
resolves all of them in the one-process order. The result equals ``build_groups``'s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray

from terracorpus.catalogs.scene import SceneRecord
from terracorpus.curation import geometry as geo
from terracorpus.curation.groups.anchors import (
    AnchorCutter,
    CellFilter,
    Chips,
    _anchor_tiers,
    _overlap_fraction,
)
from terracorpus.curation.groups.build import groups_of_chips
from terracorpus.curation.groups.index import IndexFactory, StrTreeIndex
from terracorpus.curation.groups.records import GroupParams, ImageGroup, group_id
from terracorpus.curation.groups.rules import MemberRule, member_rule
from terracorpus.curation.groups.scenes import SceneArrays
from terracorpus.curation.groups.unused import screen_scenes

_M_PER_DEG = 110_000.0  # below the true length of a degree of latitude: halos err wide

ChipKey = tuple[int, float, str, int, int]
"""A chip's place in the one-process order: sensor rank, cloud cover, scene id, row, col."""


@dataclass(frozen=True)
class Tile:
    """One cell of the lon/lat partition grid; it owns the chips whose centre lies in it."""

    col: int  # floor((lon + 180) / deg)
    row: int  # floor((lat + 90) / deg)
    deg: float

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        w, s = -180.0 + self.col * self.deg, -90.0 + self.row * self.deg
        return (w, s, w + self.deg, s + self.deg)


@dataclass(frozen=True)
class Overlap:
    """An earlier chip of another lattice overlapping a tile's chip (fraction of the latter)."""

    earlier: ChipKey
    earlier_id: str
    later: ChipKey
    later_id: str
    fraction: float


@dataclass(frozen=True)
class TileGroups:
    """What one tile's task returns."""

    tile: Tile
    groups: tuple[ImageGroup, ...]  # of the chips the tile owns, before overlap removal
    overlaps: tuple[Overlap, ...]
    chips: int  # anchor chips the tile owns


@dataclass(frozen=True)
class TilePlan:
    """The tiles to group and, per tile, the positions of its scenes (tile plus halo)."""

    tiles: tuple[Tile, ...]
    scenes: tuple[NDArray[np.int64], ...]
    sensor_rank: tuple[str, ...]
    region_m: float  # chips are cut within this distance of the tile
    halo_m: float  # scenes are given within this distance of the tile


def tile_index(
    lon: NDArray[np.float64], lat: NDArray[np.float64], deg: float
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(col, row) of the tile holding each point; longitudes wrap at ±180°."""
    lon = np.mod(np.asarray(lon, dtype=np.float64) + 180.0, 360.0)
    col = np.floor(lon / deg).astype(np.int64)
    row = np.floor((np.asarray(lat, dtype=np.float64) + 90.0) / deg).astype(np.int64)
    return col, row


def plan_tiles(table: SceneArrays, params: GroupParams, deg: float) -> TilePlan:
    """The tiles that can own chips, and the scenes each tile's task needs.

    Raises the errors ``build_groups`` raises for the whole catalog (unknown anchor sensor,
    no clear anchor scene), so a partitioned run fails the same way.
    """
    if not deg > 0:
        raise ValueError(f"tile size must be > 0 degrees, got {deg}")
    _anchor_tiers(table, params)  # the whole catalog's anchor errors, before any task
    side, region_m = _margins(table, params)
    halo_m = region_m + 2 * side
    # Footprints split at the antimeridian count by their parts, not their -180..180 bounds.
    parts, whose = shapely.get_parts(table.lonlat, return_index=True)
    tiles = _tiles_of(shapely.bounds(parts[_anchor_eligible(table, params)[whose]]), side, deg)
    halos = [_grow(t.bounds, halo_m) for t in tiles]
    pieces = [(i, box) for i, h in enumerate(halos) for box in _wrapped(h)]
    boxes = shapely.box(*np.array([b for _, b in pieces]).T) if pieces else np.array([])
    q, part = shapely.STRtree(parts).query(boxes)
    owner = np.array([i for i, _ in pieces], dtype=np.int64)[q]
    k = whose[part]
    per_tile: list[set[int]] = [set() for _ in tiles]
    for i, s in zip(owner.tolist(), np.asarray(k).tolist(), strict=True):
        per_tile[i].add(s)
    return TilePlan(
        tiles=tuple(tiles),
        scenes=tuple(np.array(sorted(s), dtype=np.int64) for s in per_tile),
        sensor_rank=tuple(table.sensors),
        region_m=region_m,
        halo_m=halo_m,
    )


def _margins(table: SceneArrays, params: GroupParams) -> tuple[float, float]:
    """(chip side, cutting region margin) in metres, both upper bounds.

    An owned chip and the chips of other lattices overlapping it lie within two chips of the
    tile; a chip of tier ``t`` is cut as in the one-process run when the finer chips around
    its centre are, so the region reaches one chip further per tier.
    """
    tiers = 1 if params.anchor_sensor is not None else len(table.sensors)
    side = params.chip_size_m + max(r.gsd for r in table.records)
    return side, side * (tiers + 2)


def tile_degrees(table: SceneArrays, params: GroupParams, minimum: float = 1.0) -> float:
    """A tile side (degrees) at least ``minimum`` and ten times the cutting margin, so the
    work repeated in the margins stays under about half of a tile's own."""
    _, region_m = _margins(table, params)
    return max(minimum, math.ceil(10 * region_m / _M_PER_DEG))


def _anchor_eligible(table: SceneArrays, params: GroupParams) -> NDArray[np.bool_]:
    out: NDArray[np.bool_] = table.clear
    if params.anchor_sensor is None:
        return out
    out = table.clear & (table.sensor == table.sensors.index(params.anchor_sensor))
    return out


def _degrees(bounds: tuple[float, float, float, float], m: float) -> tuple[float, float]:
    """(dlon, dlat) that are at least ``m`` metres everywhere in ``bounds``."""
    dlat = m / _M_PER_DEG
    lat = min(90.0, max(abs(bounds[1]), abs(bounds[3])) + dlat)
    if lat >= 89.0:
        return 360.0, dlat
    return m / (_M_PER_DEG * math.cos(math.radians(lat))), dlat


def _grow(b: tuple[float, float, float, float], m: float) -> tuple[float, float, float, float]:
    dlon, dlat = _degrees(b, m)
    return (b[0] - dlon, max(-90.0, b[1] - dlat), b[2] + dlon, min(90.0, b[3] + dlat))


def _wrapped(b: tuple[float, float, float, float]) -> list[tuple[float, float, float, float]]:
    """A lon/lat box as boxes inside [-180, 180]: pieces past ±180° come in from the other side."""
    w, s, e, n = b
    if e - w >= 360.0:
        return [(-180.0, s, 180.0, n)]
    out = [(max(w, -180.0), s, min(e, 180.0), n)]
    if w < -180.0:
        out.append((w + 360.0, s, 180.0, n))
    if e > 180.0:
        out.append((-180.0, s, e - 360.0, n))
    return out


def _tiles_of(bounds: NDArray[np.float64], side_m: float, deg: float) -> list[Tile]:
    """Every tile that a chip of these scenes can be centred in (their bounds grown by a chip)."""
    keys: set[tuple[int, int]] = set()
    for b in bounds.tolist():
        for w, s, e, n in _wrapped(_grow((b[0], b[1], b[2], b[3]), side_m)):
            c0, r0 = tile_index(np.array([w]), np.array([s]), deg)
            c1 = math.floor((e + 180.0) / deg)
            r1 = math.floor((n + 90.0) / deg)
            keys.update(
                (c % math.ceil(360.0 / deg), r)
                for c in range(int(c0[0]), c1 + 1)
                for r in range(int(r0[0]), r1 + 1)
            )
    return [Tile(c, r, deg) for c, r in sorted(keys)]


def group_tile(
    scenes: Sequence[SceneRecord],
    params: GroupParams,
    tile: Tile,
    sensor_rank: Sequence[str],
    region_m: float,
    *,
    index: IndexFactory = StrTreeIndex,
    members: str | MemberRule = "spread",
) -> TileGroups:
    """The groups of the chips ``tile`` owns, from the scenes of the tile and its halo.

    Args:
        scenes: the scenes :func:`plan_tiles` gave the tile.
        params: the group rules.
        tile: the tile.
        sensor_rank: the whole catalog's sensor order (``TilePlan.sensor_rank``).
        region_m: cut chips centred within this distance of the tile (``TilePlan.region_m``).
        index: the spatial index factory.
        members: the member rule, as for ``build_groups``.
    """
    rule = member_rule(members)
    table = SceneArrays(scenes, params, sensor_rank)
    if not _anchor_eligible_any(table, params):
        return TileGroups(tile, (), (), 0)
    chips = AnchorCutter(table, params, index, _region_cells(tile, region_m)).run()
    if not chips.anchor:
        return TileGroups(tile, (), (), 0)
    owned = _owned(table, chips, tile)
    overlaps = _overlaps(table, chips, owned, index, sensor_rank)
    chosen = np.flatnonzero(owned).tolist()
    groups = groups_of_chips(table, chips, chosen, params, index=index, rule=rule)
    return TileGroups(tile, tuple(groups), tuple(overlaps), len(chosen))


def _region_cells(tile: Tile, region_m: float) -> CellFilter | None:
    """The cells centred in the tile grown by ``region_m`` (None: near a pole, all cells)."""
    w, s, e, n = _grow(tile.bounds, region_m)
    if e - w >= 360.0:
        return None

    def inside(lattice: geo.Lattice, cells: geo.ChipCells) -> NDArray[np.bool_]:
        step = cells.size * lattice.gsd
        x = lattice.phase_x + (cells.cj + 0.5) * step
        y = lattice.phase_y - (cells.ci + 0.5) * step
        lon, lat = geo.transformer(lattice.crs, geo.LONLAT).transform(x, y)
        lon = np.mod(np.asarray(lon) - w, 360.0) + w  # east of w, across ±180° too
        out: NDArray[np.bool_] = (lon <= e) & (np.asarray(lat) >= s) & (np.asarray(lat) <= n)
        return out

    return inside


def _anchor_eligible_any(table: SceneArrays, params: GroupParams) -> bool:
    if params.anchor_sensor is not None and params.anchor_sensor not in table.sensors:
        return False
    return bool(_anchor_eligible(table, params).any())


def _owned(table: SceneArrays, chips: Chips, tile: Tile) -> NDArray[np.bool_]:
    """Chips whose centre (in the anchor's CRS, then lon/lat) lies in the tile."""
    crs = np.array([table.records[a].crs for a in chips.anchor], dtype=object)
    centres = shapely.centroid(np.array(chips.box, dtype=object))
    x, y = shapely.get_x(centres), shapely.get_y(centres)
    lon, lat = np.empty_like(x), np.empty_like(y)
    for c in np.unique(crs).tolist():
        m = crs == c
        lon[m], lat[m] = geo.transformer(c, geo.LONLAT).transform(x[m], y[m])
    col, row = tile_index(lon, lat, tile.deg)
    out: NDArray[np.bool_] = (col == tile.col) & (row == tile.row)
    return out


def _overlaps(
    table: SceneArrays,
    chips: Chips,
    owned: NDArray[np.bool_],
    index: IndexFactory,
    sensor_rank: Sequence[str],
) -> list[Overlap]:
    """Earlier chips of other lattices that meet an owned chip, as ``resolve_overlaps`` sees them.

    The cutter's chip order is the one-process order restricted to the tile's scenes, so
    "earlier" is a position comparison here and a :data:`ChipKey` comparison across tiles.
    """
    lattice = np.asarray(chips.lattice, dtype=np.int64)
    own = np.flatnonzero(owned)
    if len(own) == 0 or len(np.unique(lattice)) < 2:
        return []
    lonlat = np.array(chips.lonlat, dtype=object)
    q, a = index(lonlat).query(lonlat[own])
    b = own[q]
    cross = (lattice[a] != lattice[b]) & (a < b)
    a, b = a[cross], b[cross]
    touching = shapely.intersects(lonlat[a], lonlat[b])
    a, b = a[touching], b[touching]
    frac = _overlap_fraction(lonlat, a, b)
    rank = {name: i for i, name in enumerate(sensor_rank)}

    def key(c: int) -> tuple[ChipKey, str]:
        rec = table.records[chips.anchor[c]]
        cloud = 0.0 if rec.cloud_cover is None else float(np.nan_to_num(rec.cloud_cover))
        row, col, size = chips.row_off[c], chips.col_off[c], chips.size[c]
        k = (rank[rec.sensor], cloud, rec.id, row, col)
        return k, group_id(rec.id, row, col, size, rec.gsd)

    out = []
    for ai, bi, f in zip(a.tolist(), b.tolist(), frac.tolist(), strict=True):
        (ka, ida), (kb, idb) = key(ai), key(bi)
        out.append(Overlap(ka, ida, kb, idb, f))
    return out


def dropped_chips(overlaps: Iterable[Overlap], max_overlap: float) -> set[str]:
    """Chips dropped for overlapping kept earlier chips of other lattices by > ``max_overlap``.

    The same walk as ``resolve_overlaps``: later chips in order, each one's overlaps summed
    over its kept earlier chips in order, so the sums and the outcome are the same.
    """
    dropped: set[str] = set()
    total: dict[str, float] = {}
    for o in sorted(overlaps, key=lambda o: (o.later, o.earlier)):
        if o.earlier_id in dropped:
            continue
        total[o.later_id] = total.get(o.later_id, 0.0) + o.fraction
        if total[o.later_id] > max_overlap:
            dropped.add(o.later_id)
    return dropped


def merge_tiles(results: Iterable[TileGroups], max_overlap: float) -> list[ImageGroup]:
    """All tiles' groups without the dropped chips', in ``build_groups``'s order."""
    results = list(results)
    dropped = dropped_chips((o for r in results for o in r.overlaps), max_overlap)
    groups = [g for r in results for g in r.groups if g.group_id not in dropped]
    groups.sort(key=lambda g: (g.anchor_scene_id, g.window[0], g.window[1]))
    return groups


def build_groups_tiled(
    scenes: Sequence[SceneRecord],
    params: GroupParams,
    deg: float,
    *,
    index: IndexFactory = StrTreeIndex,
    members: str | MemberRule = "spread",
) -> list[ImageGroup]:
    """``build_groups`` tile by tile in this process (the reference for a Dask run)."""
    table = SceneArrays(screen_scenes(scenes, params)[0], params)
    plan = plan_tiles(table, params, deg)
    results = [
        group_tile(
            [table.records[k] for k in idx.tolist()],
            params,
            tile,
            plan.sensor_rank,
            plan.region_m,
            index=index,
            members=members,
        )
        for tile, idx in zip(plan.tiles, plan.scenes, strict=True)
    ]
    return merge_tiles(results, params.max_chip_overlap)
