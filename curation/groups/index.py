"""Spatial indexes for grouping: which footprints may meet which."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import shapely
from numpy.typing import NDArray

from terracorpus.curation import geometry as geo


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
