"""Land-cover labels for demo-world corpora (the optional ``label`` array the probe uses).

A demo world keeps its truth beside its items (``<world>/truth/``). When the scenes' asset
hrefs are files inside such a world, each chip gets the majority land-cover class of its
footprint from :func:`terracorpus.catalogs.world.read_truth`; otherwise no labels are written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terracorpus.catalogs.scene import SceneRecord
from terracorpus.pipelines.corpus.format import NO_LABEL

log = logging.getLogger(__name__)

TRUTH_DIR = "truth"


def find_world_dir(scenes: Iterable[SceneRecord]) -> Path | None:
    """The demo world directory holding the scenes' asset files, if they come from one."""
    for scene in scenes:
        for _, ref in scene.bands:
            href = ref.href.removeprefix("file://")
            if "://" in href:
                continue
            for parent in Path(href).resolve().parents:
                if (parent / TRUTH_DIR).is_dir():
                    return parent
        break  # one scene tells where the world is
    return None


@dataclass(frozen=True)
class WorldLabeller:
    """Majority land-cover class of a footprint in a demo world (-1: no truth there)."""

    world_dir: str

    def __call__(self, bounds: tuple[float, float, float, float], crs: str) -> int:
        from terracorpus.catalogs.world import read_truth

        classes = np.asarray(read_truth(self.world_dir, bounds, crs))
        classes = classes[classes >= 0]
        if classes.size == 0:
            return NO_LABEL
        return int(np.bincount(classes.astype("int64").ravel()).argmax())


def world_labeller(scenes: Iterable[SceneRecord]) -> WorldLabeller | None:
    """A labeller when the scenes come from a demo world with truth, else None."""
    world = find_world_dir(scenes)
    if world is None:
        return None
    try:
        from terracorpus.catalogs.world import read_truth  # noqa: F401
    except ImportError:
        log.warning("scenes come from the demo world %s, but read_truth is unavailable", world)
        return None
    return WorldLabeller(str(world))
