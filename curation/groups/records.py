"""The records of grouping: its parameters, an image group and its members."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import shapely
from shapely.geometry.base import BaseGeometry

from terracorpus.curation.errors import GroupingError
from terracorpus.curation.params import setting, setting_problems

Role = Literal["anchor", "member"]


@dataclass(frozen=True)
class GroupParams:
    """The rules of a group: the run config's ``group`` section (``pipelines.config``).

    Every field is declared once, here, with its default, bounds and description; the config
    boundary validates the same declarations and names the bad key.
    """

    chip_size_m: float = setting(
        960.0, "ground size of a chip footprint (rounded to whole anchor pixels)", gt=0
    )
    anchor_sensor: str | None = setting(
        None,
        "sensor whose scenes anchor groups; default: the finest GSD, then the next finest for "
        "ground the finer ones do not cover",
    )
    min_coverage: float = setting(
        0.95, "share of a chip a scene must cover to join (anchor and members)", gt=0, le=1
    )
    max_cloud_cover: float = setting(
        60.0, "scene cloud cover limit, percent (scenes without one pass)", ge=0, le=100
    )
    max_members_per_sensor: int = setting(
        3, "images per sensor in a group, the anchor included", ge=1
    )
    max_members: int = setting(8, "images per group, the anchor included", ge=1)
    min_sensors: int = setting(2, "distinct sensors a group needs to be kept", ge=1)
    max_chip_overlap: float = setting(
        0.2,
        "share of a chip that may overlap chips anchored on another grid (a neighbouring UTM "
        "zone, a finer sensor) before it is dropped",
        ge=0,
        le=1,
    )
    seed: int = setting(0, "tie-break between equally good members")

    def __post_init__(self) -> None:
        problems = setting_problems(self)
        if problems:
            raise GroupingError("invalid group parameters: " + "; ".join(problems))


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
