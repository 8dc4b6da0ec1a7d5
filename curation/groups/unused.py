"""Scenes that give no group, and why: plain records the group stage counts and records.

:func:`screen_scenes` refuses, before grouping, the scenes grouping cannot use (a refusal
never aborts the run: the scene is left out with its reason). :func:`unused_scenes` then
says, for every scene that is in no group, the first reason that applies. Reasons:

========================  ====================================================================
``duplicate_id``          another scene has the same id (the first in the given order stays)
``same_acquisition``      another scene is the same acquisition (same platform, datetime within
                          1 s, same ground: :mod:`terracorpus.catalogs.acquisitions`)
``unknown_crs``           PROJ does not know the scene's CRS
``geographic_crs``        the CRS counts in degrees (EPSG:4326): chips are cut in metres on a
                          projected grid; reproject the data or leave the collection out
``grid_not_square``       the grid is rotated, or its pixels are not square to a relative
                          :data:`~terracorpus.curation.geometry.SQUARE_TOLERANCE`
``empty_footprint``       the footprint is empty or has no area
``too_many_chips``        the grid holds more than :data:`MAX_CHIPS_PER_SCENE` chips
``over_cloud_limit``      cloud cover above ``group.max_cloud_cover``
``smaller_than_chip``     no whole chip fits the scene's grid on its lattice, or its footprint
                          is smaller than one chip: it can neither anchor nor cover a chip
``not_chosen``            usable, but its ground was anchored by better scenes and the member
                          rules chose others (``max_members``, ``min_sensors``, coverage)
========================  ====================================================================

The first seven are :data:`REFUSALS` (the input is unusable; strict mode stops on them); the
others are choices of the rules. Everything here is a pure function of records, so the
records can be computed per partition and concatenated.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.errors import GEOSException

from terracorpus.catalogs.acquisitions import one_per_acquisition
from terracorpus.catalogs.scene import SceneRecord
from terracorpus.curation import geometry as geo
from terracorpus.curation.errors import GroupingError
from terracorpus.curation.groups.records import GroupParams, ImageGroup

MAX_CHIPS_PER_SCENE = 4_000_000
"""The most chips one scene may be cut into (a 100,000-pixel grid in 50-pixel chips)."""

REFUSALS = frozenset(
    {
        "duplicate_id",
        "unknown_crs",
        "geographic_crs",
        "grid_not_square",
        "empty_footprint",
        "too_many_chips",
    }
)
"""Reasons that say a scene is unusable for grouping (not a choice of the rules)."""

CHOICES = frozenset({"over_cloud_limit", "smaller_than_chip", "not_chosen"})
"""Reasons that record a choice of the rules about a usable scene, not a failure."""


@dataclass(frozen=True)
class Unused:
    """A scene in no group: its id, a reason code and a sentence saying why and what to do."""

    scene_id: str
    reason: str
    detail: str


def screen_scenes(
    scenes: Sequence[SceneRecord], params: GroupParams
) -> tuple[list[SceneRecord], list[Unused]]:
    """The scenes grouping can use (given order kept), and the refused ones with why."""
    unique, refused = _unique(scenes)
    usable: list[SceneRecord] = []
    for s in unique:
        why = _refusal(s, params)
        if why is None:
            usable.append(s)
        else:
            refused.append(Unused(s.id, *why))
    return usable, refused


def _unique(scenes: Sequence[SceneRecord]) -> tuple[list[SceneRecord], list[Unused]]:
    """One scene per id and per acquisition; the first in order stays."""
    first: dict[str, int] = {}
    out: list[Unused] = []
    for k, s in enumerate(scenes):
        if first.setdefault(s.id, k) != k:
            other = scenes[first[s.id]]
            out.append(
                Unused(
                    s.id,
                    "duplicate_id",
                    f"scene {s.id} of {s.collection} has the id of a scene of "
                    f"{other.collection}; scene ids must be unique, the first one is kept",
                )
            )
    ids = [s for k, s in enumerate(scenes) if first[s.id] == k]
    position = {id(s): k for k, s in enumerate(ids)}
    kept, dropped = one_per_acquisition(ids, lambda s: position[id(s)])
    out += [Unused(d.dropped.id, "same_acquisition", d.describe()) for d in dropped]
    return kept, out


def _refusal(s: SceneRecord, params: GroupParams) -> tuple[str, str] | None:
    try:
        geographic = geo.is_geographic(s.crs)
    except GroupingError as e:
        return "unknown_crs", f"scene {s.id}: {e}"
    if geographic:
        return "geographic_crs", (
            f"scene {s.id} is in {s.crs}, a geographic CRS (pixels of {s.gsd:g} degrees); "
            "chips are cut in metres on projected grids: reproject the data to a projected "
            "CRS (UTM) or leave the collection out of the search"
        )
    try:
        lattice = geo.lattice_of(s.crs, s.grid())
    except GroupingError as e:
        return "grid_not_square", f"scene {s.id}: {e}"
    if _no_area(s):
        return "empty_footprint", f"scene {s.id} has an empty footprint (or one without area)"
    chips = geo.chip_count(lattice, s.grid(), _chip_pixels(s, params))
    if chips > MAX_CHIPS_PER_SCENE:
        return "too_many_chips", (
            f"scene {s.id} would be cut into {chips:,} chips of {params.chip_size_m:g} m (more "
            f"than {MAX_CHIPS_PER_SCENE:,}); raise group.chip_size_m"
        )
    return None


def _no_area(s: SceneRecord) -> bool:
    try:
        fp = s.footprint
    except GEOSException:
        return True
    return bool(fp.is_empty or fp.area <= 0)


def _chip_pixels(s: SceneRecord, params: GroupParams) -> int:
    return max(1, round(params.chip_size_m / s.gsd))


def unused_scenes(
    scenes: Sequence[SceneRecord], groups: Sequence[ImageGroup], params: GroupParams
) -> list[Unused]:
    """Every scene of ``scenes`` (screened: :func:`screen_scenes`) that is in no group."""
    return unused_of(scenes, {m.scene_id for g in groups for m in g.members}, params)


def unused_of(
    scenes: Sequence[SceneRecord], used: Collection[str], params: GroupParams
) -> list[Unused]:
    """Every scene of ``scenes`` whose id is not in ``used`` (the scene ids of the groups,
    e.g. gathered while the groups stream through a partitioned stage)."""
    return [Unused(s.id, *_why_unused(s, params)) for s in scenes if s.id not in used]


def _why_unused(s: SceneRecord, params: GroupParams) -> tuple[str, str]:
    if s.cloud_cover is not None and s.cloud_cover > params.max_cloud_cover:
        return "over_cloud_limit", (
            f"scene {s.id} has {s.cloud_cover:g}% cloud cover, above group.max_cloud_cover="
            f"{params.max_cloud_cover:g}"
        )
    small = _smaller_than_chip(s, params)
    if small is not None:
        return "smaller_than_chip", small
    return "not_chosen", (
        f"scene {s.id} is usable, but its ground was anchored by other scenes and the member "
        f"rules chose others (group.max_members={params.max_members}, "
        f"max_members_per_sensor={params.max_members_per_sensor}, min_sensors="
        f"{params.min_sensors}, min_coverage={params.min_coverage:g})"
    )


def _smaller_than_chip(s: SceneRecord, params: GroupParams) -> str | None:
    grid = s.grid()
    size = _chip_pixels(s, params)
    side_m = size * s.gsd
    h, w = grid.shape
    if geo.chip_count(geo.lattice_of(s.crs, grid), grid, size) == 0:
        return (
            f"scene {s.id}: its grid of {w}x{h} pixels at {s.gsd:g} m holds no whole chip of "
            f"{size} pixels ({side_m:g} m) on the chip lattice; lower group.chip_size_m"
        )
    area = float(shapely.area(geo.lonlat_to_crs(np.array([s.footprint], dtype=object), s.crs)[0]))
    if area < params.min_coverage * side_m**2:
        return (
            f"scene {s.id}: its footprint ({area / 1e6:.3g} km²) is smaller than "
            f"group.min_coverage of one chip of {side_m:g} m; lower group.chip_size_m"
        )
    return None
