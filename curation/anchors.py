"""Anchor fallback: a group whose anchor could not be described is anchored by its next-best
image of the same ground, instead of being dropped.

A group's anchor is the image it is clustered and selected by (:mod:`curation.selection`).
When the anchor's chip has no row after describe (its scene was unreadable, the chip fell
outside it, its QA was malformed), every other image of the group still sees the same
footprint; the best of those that were described becomes the anchor:

1. an image of the lost anchor's sensor (same GSD and band set: the group stays what the
   group stage built it to be), then any other;
2. the finest native GSD;
3. the most usable pixels (lowest nodata + cloud + shadow fraction);
4. the best coverage of the footprint, then the smallest time gap to the lost anchor;
5. the chip id (a stable tie-break).

The group keeps its id, CRS and bounds (the lost anchor's pixel grid): members are already
read onto that grid at their own GSD, so nothing downstream changes but which image leads.
Every replacement is returned so the caller can record it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from terracorpus.curation.errors import ClusteringError
from terracorpus.curation.groups import ImageGroup, Member

ANCHOR = "anchor"
MEMBER = "member"
F64 = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class DescribedImages:
    """Describe's rows as typed arrays: one described image (chip) of a group per row.

    Attributes:
        chip_id: (N,) unique chip ids.
        group_id: (N,) the group of each chip.
        scene_id: (N,) the scene the chip was read from.
        sensor: (N,) the scene's sensor.
        role: (N,) "anchor" or "member".
        gsd: (N,) the image's native GSD, metres; NaN unknown (ranks last).
        nodata_fraction: (N,) share without data; NaN unknown (counts as 0).
        cloud_fraction: (N,) share under cloud; NaN unknown (counts as 0).
        shadow_fraction: (N,) share in cloud shadow; NaN unknown (counts as 0).
    """

    chip_id: NDArray[np.object_]
    group_id: NDArray[np.object_]
    scene_id: NDArray[np.object_]
    sensor: NDArray[np.object_]
    role: NDArray[np.object_]
    gsd: F64
    nodata_fraction: F64
    cloud_fraction: F64
    shadow_fraction: F64

    def __post_init__(self) -> None:
        n = len(self.chip_id)
        for f in fields(self):
            if len(getattr(self, f.name)) != n:
                raise ClusteringError(
                    f"described images: {n} chip ids but {len(getattr(self, f.name))} {f.name}"
                )

    def __len__(self) -> int:
        return len(self.chip_id)

    @property
    def unusable(self) -> F64:
        """Share of each image without usable pixels (nodata + cloud + shadow)."""
        parts = np.stack([self.nodata_fraction, self.cloud_fraction, self.shadow_fraction])
        total: F64 = np.nansum(parts, axis=0)
        return total


@dataclass(frozen=True)
class AnchorReplacement:
    """A group whose anchor was replaced: the lost scene, and the one that anchors it now."""

    group_id: str
    lost_scene_id: str
    new_scene_id: str
    new_sensor: str


def replace_lost_anchors(
    images: DescribedImages, groups: Sequence[ImageGroup]
) -> tuple[NDArray[np.object_], list[AnchorReplacement]]:
    """Every image's role, with a new anchor for each group whose anchor chip is missing.

    Args:
        images: the described images of ``groups``.
        groups: the groups the chips were described for.

    Returns:
        The roles (a new array, the promoted images' role set to ``anchor``) and the
        replacements, in group order. Groups without any described image stay absent.
    """
    roles = np.array(images.role, dtype=object, copy=True)
    if len(images) == 0:
        return roles, []
    positions = pd.Series(np.arange(len(images)))
    by_group = positions.groupby(images.group_id.astype(str), sort=False).indices
    unusable = images.unusable
    replacements = []
    for g in groups:
        rows = by_group.get(g.group_id)
        if rows is None or (roles[rows] == ANCHOR).any():
            continue
        members = {m.scene_id: m for m in g.members}
        best = min(rows, key=lambda i: _rank(images, int(i), unusable, members, g.anchor_sensor))
        roles[best] = ANCHOR
        replacements.append(
            AnchorReplacement(
                g.group_id, g.anchor_scene_id, str(images.scene_id[best]), str(images.sensor[best])
            )
        )
    return roles, replacements


def _rank(
    images: DescribedImages,
    i: int,
    unusable: F64,
    members: dict[str, Member],
    anchor_sensor: str,
) -> tuple[bool, float, float, float, float, str]:
    """Sort key of image ``i`` as the group's anchor: lower is better (module docstring)."""
    member = members.get(str(images.scene_id[i]))
    coverage = _finite(None if member is None else member.coverage, 0.0)
    gap = abs(_finite(None if member is None else member.time_gap_days, math.inf))
    return (
        str(images.sensor[i]) != anchor_sensor,
        _finite(images.gsd[i], math.inf),
        float(unusable[i]),
        -coverage,
        gap,
        str(images.chip_id[i]),
    )


def _finite(value: float | None, default: float) -> float:
    return default if value is None or not math.isfinite(value) else float(value)
