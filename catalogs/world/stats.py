"""What a built world's ground is made of, as a curation run would cut it into chips."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from terracorpus.catalogs.errors import WorldError
from terracorpus.catalogs.world.truth import _truth_file, read_world


@dataclass(frozen=True)
class ChipClasses:
    """Majority land-cover class of every ``chip_size_m`` square chip of every region.

    ``counts`` maps class name -> chips, ``by_region`` region -> (class name -> chips).
    """

    chip_size_m: float
    year: int | None
    counts: dict[str, int]
    by_region: dict[str, dict[str, int]]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def shares(self) -> dict[str, float]:
        """Class name -> share of all chips, largest first."""
        n = max(1, self.total)
        return {k: v / n for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1])}


def _majorities(classes: np.ndarray, px: int) -> list[int]:
    h, w = (classes.shape[0] // px) * px, (classes.shape[1] // px) * px
    if h == 0 or w == 0:
        return []
    blocks = classes[:h, :w].reshape(h // px, px, w // px, px).transpose(0, 2, 1, 3)
    flat = blocks.reshape(-1, px * px).astype(np.int64)
    out = []
    for row in flat:
        counts = np.bincount(row, minlength=16)
        counts[0] = 0  # nodata never wins
        if counts.any():
            out.append(int(counts.argmax()))
    return out


def chip_classes(
    world_dir: str | Path, chip_size_m: float = 480.0, year: int | None = None
) -> ChipClasses:
    """Majority class of every chip on each region's own grid (``year`` None: the first).

    This is the class mix a random sample of a curation run's candidate groups draws from
    (groups anchor each piece of ground once), up to chip edges and zone overlaps.

    Raises:
        WorldError: the world, the year or a truth file is missing, or the chip size is not a
            positive multiple of a region's base resolution.
    """
    world = read_world(world_dir)
    names = {int(k): v for k, v in world["classes"].items()}
    total: Counter[str] = Counter()
    by_region: dict[str, dict[str, int]] = {}
    for region in world["regions"]:
        res = float(region["base_res"])
        px = round(chip_size_m / res)
        if chip_size_m <= 0 or abs(px * res - chip_size_m) > 1e-6:
            raise WorldError(
                f"chip size {chip_size_m} m is not a multiple of {region['name']}'s "
                f"{res} m grid; choose a multiple of 60 m"
            )
        with rasterio.open(_truth_file(world_dir, world, region, year)) as src:
            classes = src.read(1)
        mine = Counter(names[c] for c in _majorities(classes, px))
        by_region[region["name"]] = dict(mine)
        total.update(mine)
    return ChipClasses(chip_size_m, year, dict(total), by_region)
