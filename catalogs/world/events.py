"""Land-cover change over the years: the events a region's ground goes through.

A region's land cover is drawn once, for the world's first year. A :class:`ChangeEvent`
then rewrites a window of it from a given year on, in stages (a construction site is cleared
one year and built up the next; a clear-cut is bare, then regrows). Events are applied in
order, so a later one (a reservoir) may cover an earlier one (a migrating river). Crop
rotation is not an event: it swaps summer and winter crops on some fields every crop year
(:class:`Rotation`), which changes the images but not the class (both are cropland).

Changes take effect on 1 January of their year, so every scene of a year sees the ground of
that year's truth (``truth/<region>/<year>.tif``). The crop year starts at sowing
(:data:`SOWING_DOY`): from then on a field shows next year's crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

U8 = NDArray[np.uint8]
Window = tuple[int, int, int, int]
"""(row, col, height, width) on a region's base grid."""

SOWING_DOY = 280
"""Day of year winter crops are sown: from here on a field shows the next crop year."""

KINDS = ("construction", "clear-cut", "regrowth", "reservoir-filling", "river-migration")


@dataclass(frozen=True)
class Stage:
    """From 1 January of ``year`` on, ``patch`` holds over the event's window (0: unchanged)."""

    year: int
    patch: U8


@dataclass(frozen=True)
class ChangeEvent:
    """One land-cover change in a window of a region's base grid, in stages by year."""

    kind: str
    window: Window
    stages: tuple[Stage, ...]

    def patch_in(self, year: int) -> U8 | None:
        """The patch holding in ``year`` (the latest stage not after it), None before."""
        out = None
        for stage in self.stages:
            if stage.year <= year:
                out = stage.patch
        return out

    @property
    def years(self) -> tuple[int, ...]:
        return tuple(s.year for s in self.stages)


def apply_events(material: U8, events: tuple[ChangeEvent, ...], year: int) -> U8:
    """``material`` (the first year's) with every event's stage of ``year`` applied."""
    out = material
    for ev in events:
        patch = ev.patch_in(year)
        if patch is None:
            continue
        if out is material:
            out = material.copy()
        r, c, h, w = ev.window
        view = out[r : r + h, c : c + w]
        np.copyto(view, patch, where=patch != 0)
    return out


@dataclass(frozen=True)
class Rotation:
    """Crop rotation: fields marked in ``rotates`` alternate summer and winter crop yearly.

    ``rotates`` is a per-pixel flag (the field's), so the rotation needs no field ids.
    """

    rotates: NDArray[np.bool_]
    summer: int
    winter: int

    def apply(self, material: U8, offset: int) -> U8:
        """Crops of the crop year ``offset`` years after the first (odd years swap)."""
        if offset % 2 == 0:
            return material
        swap = self.rotates & ((material == self.summer) | (material == self.winter))
        other = np.where(material == self.summer, self.winter, self.summer).astype(np.uint8)
        out: U8 = np.where(swap, other, material).astype(np.uint8)
        return out


def crop_year(year: int, doy: int) -> int:
    """The crop year whose fields show on ``doy`` of ``year`` (the next one after sowing)."""
    return year + 1 if doy >= SOWING_DOY else year
