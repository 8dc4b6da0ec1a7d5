"""Curation quality without training: how well a selection of groups covers its pool.

Pure functions of the pool's standardised descriptors (one row per group, as dedup sees them),
its classes (any integer label per group, -1 unknown) and information scores, and a boolean
mask of the selected rows. The corpus experiment reports them for every arm and the dedup
benchmark for the run's own selection against random ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]

_ROWS = 4096  # rows per distance pass


def class_entropy(classes: I64) -> float:
    """Shannon entropy (bits) of the class counts; unknown (< 0) left out."""
    known = classes[classes >= 0]
    if not len(known):
        return 0.0
    counts = np.bincount(known)
    q = counts[counts > 0] / counts.sum()
    return float(-(q * np.log2(q)).sum())


def classes_kept(classes: I64) -> int:
    """Number of distinct known classes."""
    return len(np.unique(classes[classes >= 0]))


def residual_duplicate_share(X: F32, radius: float) -> float:
    """Share of the rows (finite ones) within ``radius`` of another row: near-duplicates that
    survived the selection (0 = none)."""
    x = X[np.isfinite(X).all(axis=1)].astype(np.float32)
    if len(x) < 2:
        return 0.0
    sq = (x * x).sum(1)
    dup = np.zeros(len(x), bool)
    for s in range(0, len(x), _ROWS):
        d = sq[s : s + _ROWS, None] - 2 * x[s : s + _ROWS] @ x.T + sq[None, :]
        d[np.arange(len(d)), np.arange(s, s + len(d))] = np.inf
        dup[s : s + _ROWS] = d.min(axis=1) <= radius * radius
    return float(dup.mean())


def coverage_distance(pool: F32, selected: F32) -> float:
    """Mean Euclidean distance from a pool row to its nearest selected row (lower: the
    selection covers the descriptor space better; 0 when it holds the whole pool)."""
    ok = np.isfinite(pool).all(axis=1)
    # float64: a chip's distance to itself must come out 0, not sqrt(float32 cancellation)
    p = pool[ok].astype(np.float64)
    s = selected[np.isfinite(selected).all(axis=1)].astype(np.float64)
    if not len(p) or not len(s):
        return float("nan")
    ss = (s * s).sum(1)
    total = 0.0
    for i in range(0, len(p), _ROWS // 4):
        c = p[i : i + _ROWS // 4]
        d = (c * c).sum(1)[:, None] - 2 * c @ s.T + ss[None, :]
        total += float(np.sqrt(np.maximum(d.min(axis=1), 0)).sum(dtype=np.float64))
    return total / len(p)


@dataclass(frozen=True)
class SelectionQuality:
    """Curation quality of one selection of a pool."""

    groups: int
    classes_kept: int | None  # None: no classes known
    class_entropy: float | None
    residual_duplicates: float  # share of selected groups within duplicate_radius of another
    low_information_share: float | None  # share of selected groups below min_information
    mean_information: float | None
    coverage: float  # mean distance from a pool group to its nearest selected group

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def selection_quality(
    X: F32,
    mask: B,
    *,
    classes: I64 | None,
    information: NDArray[np.float64] | None,
    duplicate_radius: float,
    min_information: float,
) -> SelectionQuality:
    """Every metric of this module for the rows ``mask`` of the pool ``X``."""
    info = None if information is None else information[mask]
    known = None if info is None else info[np.isfinite(info)]
    return SelectionQuality(
        groups=int(mask.sum()),
        classes_kept=None if classes is None else classes_kept(classes[mask]),
        class_entropy=None if classes is None else class_entropy(classes[mask]),
        residual_duplicates=residual_duplicate_share(X[mask], duplicate_radius),
        low_information_share=None
        if known is None or not len(known)
        else float((known < min_information).mean()),
        mean_information=None if known is None or not len(known) else float(known.mean()),
        coverage=coverage_distance(X, X[mask]),
    )
