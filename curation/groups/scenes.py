"""The scenes of one grouping run as arrays: sensor codes, dates, cloud, footprints."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.errors import GEOSException

from terracorpus.catalogs.scene import SceneRecord
from terracorpus.curation import geometry as geo
from terracorpus.curation.diversity import CLOUD_PENALTY, time_features
from terracorpus.curation.errors import GroupingError
from terracorpus.curation.groups.records import GroupParams

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


class SceneArrays:
    """Scene records sorted by id, with the arrays grouping needs.

    ``sensor_rank`` fixes the sensor order (finest first) from outside: a spatial partition
    of a larger catalog ranks its sensors as the whole catalog does.
    """

    def __init__(
        self,
        scenes: Sequence[SceneRecord],
        params: GroupParams,
        sensor_rank: Sequence[str] | None = None,
    ) -> None:
        if not scenes:
            raise GroupingError("no scenes to group; run `terracorpus search` first, or widen it")
        self.records = sorted(scenes, key=lambda s: s.id)
        ids = [s.id for s in self.records]
        dupes = sorted({a for a, b in itertools.pairwise(ids) if a == b})
        if dupes:
            raise GroupingError(f"scene ids must be unique; repeated: {dupes[:5]}")
        self.sensors = rank_sensors(self.records)
        if sensor_rank is not None:
            present = set(self.sensors)
            if present - set(sensor_rank):
                raise GroupingError(
                    f"sensors missing from the ranking: {present - set(sensor_rank)}"
                )
            self.sensors = [n for n in sensor_rank if n in present]
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


def rank_sensors(records: Sequence[SceneRecord]) -> list[str]:
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
