"""Land-cover labels from a demo world (the optional ``label`` array the probe uses).

A demo world keeps a ``world.json`` and its land-cover truth per year beside its COGs.
:class:`WorldLabeller` gives a chip the majority land-cover class of its footprint in the
chip's year (:func:`terracorpus.catalogs.world.read_truth`; class 0 is the truth's nodata and
never wins; a year outside the world's takes the nearest of its years); chips outside the
truth get -1. ``materialize`` writes labels only when its caller
passes a labeller: the demo and the benchmarks pass this one, ``--world-labels DIR`` on the
command line does; the production pipeline never imports this module.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terracorpus.catalogs.errors import WorldError
from terracorpus.catalogs.scene import SceneRecord
from terracorpus.catalogs.world.truth import WORLD_FILE, read_truth, world_years
from terracorpus.pipelines.corpus.format import NO_LABEL

log = logging.getLogger(__name__)

TRUTH_NODATA = 0


def find_world_dir(scenes: Iterable[SceneRecord]) -> Path | None:
    """The demo world directory holding the scenes' asset files, if they come from one."""
    for scene in scenes:
        for _, ref in scene.bands:
            href = ref.href.removeprefix("file://")
            if "://" in href:
                return None
            for parent in Path(href).resolve().parents:
                if (parent / WORLD_FILE).is_file():
                    return parent
            return None
    return None


@dataclass(frozen=True)
class WorldLabeller:
    """Majority land-cover class of a footprint in a demo world in a year (-1: no truth there).

    ``year`` None is the world's first year.
    """

    world_dir: str

    def __call__(
        self, bounds: tuple[float, float, float, float], crs: str, year: int | None = None
    ) -> int:
        minx, miny, maxx, maxy = (float(v) for v in bounds)
        return _majority_class(
            self.world_dir, (minx, miny, maxx, maxy), crs, _truth_year(self.world_dir, year)
        )


@functools.lru_cache(maxsize=64)
def _world_years(world_dir: str) -> tuple[int, ...]:
    try:
        return tuple(world_years(world_dir))
    except WorldError:
        return ()


def _truth_year(world_dir: str, year: int | None) -> int | None:
    """``year`` itself when the world has a truth for it, else the nearest year it has."""
    years = _world_years(world_dir)
    if year is None or not years or year in years:
        return year
    return min(years, key=lambda y: (abs(y - year), y))


@functools.lru_cache(maxsize=65536)
def _majority_class(
    world_dir: str, bounds: tuple[float, float, float, float], crs: str, year: int | None
) -> int:
    """Cached per process: a group's footprint is asked for by every shard task (one per
    sensor) that a worker runs, and each truth read costs milliseconds (CRS transformers)."""
    try:
        classes = np.asarray(read_truth(world_dir, bounds, crs, year)).ravel()
    except WorldError:
        return NO_LABEL
    classes = classes[classes != TRUTH_NODATA]
    if classes.size == 0:
        return NO_LABEL
    return int(np.bincount(classes.astype("int64")).argmax())


def world_labeller(scenes: Iterable[SceneRecord]) -> WorldLabeller | None:
    """A labeller when the scenes come from a demo world, else None."""
    world = find_world_dir(scenes)
    if world is None:
        return None
    log.info("materialize: scenes come from the demo world %s; writing land-cover labels", world)
    return WorldLabeller(str(world))
