"""The records of grouping: its parameters, an image group and its members."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import shapely
from shapely.geometry.base import BaseGeometry

from terracorpus.curation.errors import GroupingError

Role = Literal["anchor", "member"]


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
