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
from dataclasses import dataclass

import numpy as np
import pandas as pd

from terracorpus.curation.groups import ImageGroup, Member

ANCHOR = "anchor"
MEMBER = "member"
_UNUSABLE = ("nodata_fraction", "cloud_fraction", "shadow_fraction")


@dataclass(frozen=True)
class AnchorReplacement:
    """A group whose anchor was replaced: the lost scene, and the one that anchors it now."""

    group_id: str
    lost_scene_id: str
    new_scene_id: str
    new_sensor: str


def replace_lost_anchors(
    chips: pd.DataFrame, groups: Sequence[ImageGroup]
) -> tuple[pd.DataFrame, list[AnchorReplacement]]:
    """``chips`` with a new anchor for every group whose anchor chip is missing.

    Args:
        chips: describe's rows (``chip_id``, ``group_id``, ``scene_id``, ``sensor``,
            ``role`` and, if known, ``gsd`` and the quality fractions).
        groups: the groups the chips were described for.

    Returns:
        The chips (a copy, the promoted rows' ``role`` set to ``anchor``) and the
        replacements, in group order. Groups without any described image stay absent.
    """
    out = chips.copy()
    if out.empty:
        return out, []
    roles = out["role"].astype(str).to_numpy()
    by_group = out.groupby(out["group_id"].astype(str), sort=False).indices
    replacements = []
    for g in groups:
        rows = by_group.get(g.group_id)
        if rows is None or (roles[rows] == ANCHOR).any():
            continue
        best = _best(out.iloc[rows], g)
        roles[rows[best]] = ANCHOR
        row = out.iloc[rows[best]]
        replacements.append(
            AnchorReplacement(
                g.group_id, g.anchor_scene_id, str(row["scene_id"]), str(row["sensor"])
            )
        )
    out["role"] = roles
    return out, replacements


def _best(rows: pd.DataFrame, group: ImageGroup) -> int:
    """Position (within ``rows``) of the image that should anchor ``group`` now."""
    members = {m.scene_id: m for m in group.members}
    keys = [
        _rank(r, members.get(str(r["scene_id"])), group.anchor_sensor) for _, r in rows.iterrows()
    ]
    return int(min(range(len(keys)), key=keys.__getitem__))


def _rank(
    row: pd.Series, member: Member | None, anchor_sensor: str
) -> tuple[bool, float, float, float, float, str]:
    unusable = sum(_num(row.get(c), 0.0) for c in _UNUSABLE)
    coverage = _num(None if member is None else member.coverage, 0.0)
    gap = abs(_num(None if member is None else member.time_gap_days, math.inf))
    return (
        str(row["sensor"]) != anchor_sensor,
        _num(row.get("gsd"), math.inf),
        unusable,
        -coverage,
        gap,
        str(row["chip_id"]),
    )


def _num(value: object, default: float) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return v if np.isfinite(v) else default
