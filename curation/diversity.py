"""Which scenes join a group: every other sensor first, then dates spread over seasons and years.

Dates are points in a small space: the day of year on a circle of radius 1 (so 31 December is
next to 1 January and opposite seasons are 2 apart) and the time in years along a third axis,
weighted by :data:`YEAR_WEIGHT` (one year apart, same season: 0.25 apart; eight years apart:
as far as opposite seasons). Members are picked by greedy farthest-point selection: each pick
is the candidate farthest from every date already in the group (the anchor included). That
spreads a group over seasons before years, and never piles up the N nearest dates. One
acquisition joins a group once: a candidate of the same sensor as the anchor or as a picked
member, dated within :data:`SAME_PASS_S` of it (another tile of the same pass, e.g. the
neighbouring UTM zone's tile over the same ground), is set aside untested.

Coverage is checked lazily: a candidate is only tested against the footprint when it would be
picked, and a failing one is set aside. The order of tests depends only on the candidates and
the outcomes, which lets the caller reuse one chip's selection for chips with the same
candidates (see :class:`Selection`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

YEAR_WEIGHT = 0.25
DAYS_PER_YEAR = 365.2425
CLOUD_PENALTY = 1e-3
"""Score lost per 100 % cloud: breaks near-ties in favour of clearer scenes."""
SAME_PASS_S = 1.0
"""Scenes of one sensor dated this close (seconds) are one acquisition: one per group."""


def time_features(days: NDArray[np.float64]) -> NDArray[np.float64]:
    """(K, 3) points for dates given as days since 1970-01-01: season circle and years."""
    years = days / DAYS_PER_YEAR
    angle = 2.0 * np.pi * (years - np.floor(years))
    return np.column_stack([np.cos(angle), np.sin(angle), YEAR_WEIGHT * years])


@dataclass(frozen=True)
class Candidates:
    """The scenes that may join one group, as aligned arrays (one entry per candidate).

    ``penalty`` is subtracted from the distance score (cloud and the seeded tie-break).
    """

    sensor: NDArray[np.int64]
    features: NDArray[np.float64]
    penalty: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.sensor)


@dataclass(frozen=True)
class Rules:
    """How many members, and what coverage a member needs."""

    max_members: int
    max_members_per_sensor: int
    min_coverage: float


@dataclass(frozen=True)
class Selection:
    """The picks for one chip, and the trace that produced them.

    ``picked`` holds (candidate position, coverage) in pick order. ``tested`` holds each
    candidate position that was tested for coverage, in order, with whether it passed. Another
    chip whose possible candidates are among this one's, and whose outcomes on the tested
    positions are the same, gets the same picks.
    """

    picked: tuple[tuple[int, float], ...]
    tested: tuple[tuple[int, bool], ...]

    @property
    def outcomes(self) -> NDArray[np.bool_]:
        return np.array([ok for _, ok in self.tested], dtype=bool)


def select_members(
    anchor_sensor: int,
    anchor_features: NDArray[np.float64],
    candidates: Candidates,
    sensor_order: Sequence[int],
    rules: Rules,
    cover: Callable[[int], float],
    possible: NDArray[np.bool_] | None = None,
) -> Selection:
    """Greedy farthest-point selection of members for one group.

    Args:
        anchor_sensor: the anchor's sensor code (the anchor counts as one of its images).
        anchor_features: the anchor date's point, shape (3,).
        candidates: the scenes that may join (anchor excluded).
        sensor_order: sensor codes in the order to give each its first member.
        rules: group size limits and minimum coverage.
        cover: coverage fraction of the footprint by candidate ``k`` (called lazily).
        possible: candidates that may pass at all (default: all); the others are never
            tested, so the caller must know that they fail.
    """
    sel = _Greedy(anchor_sensor, anchor_features, candidates, rules, cover)
    if possible is not None:
        sel.alive &= possible
    for s in sensor_order:
        if s != anchor_sensor:
            sel.pick_one(candidates.sensor == s)
    while sel.pick_one(None):
        pass
    return Selection(picked=tuple(sel.picked), tested=tuple(sel.tested))


class _Greedy:
    def __init__(
        self,
        anchor_sensor: int,
        anchor_features: NDArray[np.float64],
        candidates: Candidates,
        rules: Rules,
        cover: Callable[[int], float],
    ) -> None:
        self.c = candidates
        self.rules = rules
        self.cover = cover
        self.alive = np.ones(len(candidates), dtype=bool)
        self.min_dist = _distance(candidates.features, anchor_features)
        self.count = np.zeros(max(anchor_sensor, *candidates.sensor.tolist(), 0) + 1, np.int64)
        self.count[anchor_sensor] = 1
        self.total = 1
        self.picked: list[tuple[int, float]] = []
        self.tested: list[tuple[int, bool]] = []
        self._same_pass(anchor_sensor, self.min_dist)

    def _open_sensors(self) -> NDArray[np.bool_]:
        open_: NDArray[np.bool_] = (self.count < self.rules.max_members_per_sensor)[self.c.sensor]
        return open_

    def pick_one(self, among: NDArray[np.bool_] | None) -> bool:
        """Pick the best covering candidate (of ``among``, if given); False if none is left."""
        while self.total < self.rules.max_members:
            mask = self.alive & self._open_sensors()
            if among is not None:
                mask &= among
            if not mask.any():
                return False
            score = np.where(mask, self.min_dist - self.c.penalty, -np.inf)
            k = int(np.argmax(score))
            self.alive[k] = False
            frac = self.cover(k)
            ok = frac >= self.rules.min_coverage
            self.tested.append((k, ok))
            if ok:
                self._accept(k, frac)
                return True
        return False

    def _accept(self, k: int, frac: float) -> None:
        self.picked.append((k, frac))
        self.count[self.c.sensor[k]] += 1
        self.total += 1
        dist = _distance(self.c.features, self.c.features[k])
        self.min_dist = np.minimum(self.min_dist, dist)
        self._same_pass(int(self.c.sensor[k]), dist)

    def _same_pass(self, sensor: int, dist: NDArray[np.float64]) -> None:
        """Set aside the candidates of ``sensor`` dated within a second of an image taken."""
        self.alive &= ~((self.c.sensor == sensor) & (dist <= _SAME_PASS_DISTANCE))


def _distance(points: NDArray[np.float64], p: NDArray[np.float64]) -> NDArray[np.float64]:
    d: NDArray[np.float64] = np.sqrt(((points - p) ** 2).sum(axis=1))
    return d


# The date-space distance of SAME_PASS_S (about 2e-7; float64 dates resolve 1e-14).
_SAME_PASS_DISTANCE = float(
    _distance(time_features(np.array([0.0])), time_features(np.array([SAME_PASS_S / 86400.0])))[0]
)
