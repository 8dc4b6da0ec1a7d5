"""Steps 2 and 3 of grouping: the candidate scenes of each chip, and its members."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from terracorpus.curation import geometry as geo
from terracorpus.curation.diversity import Candidates, Rules, Selection
from terracorpus.curation.groups.index import IndexFactory
from terracorpus.curation.groups.records import GroupParams
from terracorpus.curation.groups.rules import MemberRule
from terracorpus.curation.groups.scenes import SceneArrays


class _ProjectedFootprints:
    """Scene footprints projected into one CRS at a time, prepared for fast predicates."""

    def __init__(self, scenes: SceneArrays) -> None:
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


Pick = tuple[int, float]
"""A member other than the anchor: (scene index, coverage)."""


class MemberFinder:
    """Members for the chips of one anchor scene at a time."""

    def __init__(
        self, scenes: SceneArrays, params: GroupParams, index: IndexFactory, rule: MemberRule
    ) -> None:
        self.scenes = scenes
        self.rule = rule
        self.params = params
        self.rules = Rules(params.max_members, params.max_members_per_sensor, params.min_coverage)
        self.index = index(scenes.lonlat)
        self.footprints = _ProjectedFootprints(scenes)
        self.order = list(range(len(scenes.sensors)))

    def for_anchor(
        self, anchor: int, boxes: geo.GeomArray, lonlat: geo.GeomArray
    ) -> list[list[Pick]]:
        """Picks (members other than the anchor) for each chip of ``anchor``."""
        s = self.scenes
        chip, scene = self.index.query(lonlat)
        keep = s.clear[scene] & (scene != anchor)
        chip, scene = chip[keep], scene[keep]
        out: list[list[Pick]] = [[] for _ in range(len(boxes))]
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
        return self.rule(
            int(s.sensor[anchor]), s.features[anchor], c, self.order, self.rules, cover
        )

    def _select_shared(
        self, anchor: int, cand: NDArray[np.int64], fps: geo.GeomArray, boxes: geo.GeomArray
    ) -> list[tuple[int, list[Pick]]]:
        """Select for one chip, then replay that selection on every chip where it is valid.

        A scene whose bounding box covers less than ``min_coverage`` of a chip cannot pass
        there and is never tested. A selection replays on another chip when that chip's
        possible scenes are among the selecting chip's and every tested scene has the same
        outcome there; the other chips start a new selection, replayed in turn.
        """
        possible = _bbox_possible(boxes, fps, self.params.min_coverage)
        results: list[tuple[int, list[Pick]]] = []
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
