"""Anchor-aware masking of an image group, from token ground geometry.

Every token of every image covers a box of ground in the group's frame (metres from the
anchor's top-left corner, x to the east, y to the south). The anchor's tokens are masked at the
configured ratio; the masks of the other images follow from how their tokens overlap the
anchor's hidden and visible ground. All images of a group share one visible-token budget,
``round((1 - ratio) * total tokens)``.

Policies:

* ``complementary`` (default): other images keep visible the tokens over ground the anchor
  hides, and avoid ground another member already shows, so the masked anchor ground is
  reconstructed from co-located, other-sensor or other-date evidence.
* ``consistent``: the same ground is hidden everywhere (a member token is visible only where
  the anchor ground under it is mostly visible).
* ``independent``: every image is masked at random, ignoring geometry.

Pure numpy: boxes and a ``numpy.random.Generator`` in, boolean ``visible`` arrays out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from terracorpus.training.errors import TrainConfigError

POLICIES = ("complementary", "consistent", "independent")


def token_boxes(
    grid: tuple[int, int], origin_m: tuple[float, float], patch_m: tuple[float, float]
) -> np.ndarray:
    """Ground boxes of an image's tokens, row-major.

    Args:
        grid: (rows, cols) of the token grid.
        origin_m: the image's top-left corner in the group frame, (x, y) in metres.
        patch_m: a patch's ground size (width, height) in metres: patch pixels times GSD.

    Returns:
        (rows * cols, 4) boxes (x0, y0, x1, y1) in metres.
    """
    rows, cols = grid
    yy, xx = np.mgrid[0:rows, 0:cols]
    x0 = origin_m[0] + xx.ravel() * patch_m[0]
    y0 = origin_m[1] + yy.ravel() * patch_m[1]
    return np.stack([x0, y0, x0 + patch_m[0], y0 + patch_m[1]], axis=1).astype(np.float64)


def overlap_fraction(boxes: np.ndarray, anchor_boxes: np.ndarray) -> np.ndarray:
    """(N, Na): the fraction of each token's area that lies over each anchor token."""
    ix = np.clip(
        np.minimum(boxes[:, None, 2], anchor_boxes[None, :, 2])
        - np.maximum(boxes[:, None, 0], anchor_boxes[None, :, 0]),
        0,
        None,
    )
    iy = np.clip(
        np.minimum(boxes[:, None, 3], anchor_boxes[None, :, 3])
        - np.maximum(boxes[:, None, 1], anchor_boxes[None, :, 1]),
        0,
        None,
    )
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return (ix * iy) / area[:, None]  # type: ignore[no-any-return]


def colocated(boxes: np.ndarray, anchor_boxes: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """(N, Na) bool: token n overlaps the ground of anchor token a (touching edges do not count)."""
    return overlap_fraction(boxes, anchor_boxes) > tol


def group_masks(
    boxes: Sequence[np.ndarray],
    ratio: float,
    policy: str,
    rng: np.random.Generator,
    anchor: int = 0,
) -> list[np.ndarray]:
    """Visible-token masks for every image of a group (True = visible to the encoder).

    Args:
        boxes: per image, its (N_i, 4) token boxes in the group frame.
        ratio: fraction of tokens to hide, in [0, 1).
        policy: one of :data:`POLICIES`.
        rng: the generator to draw from (seeded per sample for reproducibility).
        anchor: index of the anchor image in ``boxes``.
    """
    if policy not in POLICIES:
        raise TrainConfigError(f"mask_policy: mask policy {policy!r} is not one of {POLICIES}")
    sizes = [len(b) for b in boxes]
    budget = max(1, round((1.0 - ratio) * sum(sizes)))
    n_anchor = sizes[anchor]
    keep_anchor = min(n_anchor, budget, max(1, round((1.0 - ratio) * n_anchor)))
    visible = [np.zeros(n, dtype=bool) for n in sizes]
    visible[anchor][rng.permutation(n_anchor)[:keep_anchor]] = True
    others = [i for i in range(len(boxes)) if i != anchor]
    shares = _split_budget(budget - keep_anchor, [sizes[i] for i in others])
    if policy == "independent":
        for i, share in zip(others, shares, strict=True):
            visible[i][rng.permutation(sizes[i])[:share]] = True
    elif policy == "consistent":
        for i, share in zip(others, shares, strict=True):
            visible[i] = _consistent(boxes[i], boxes[anchor], visible[anchor], share, rng)
    else:
        _complementary(boxes, anchor, visible, others, shares, rng)
    return visible


def _split_budget(total: int, sizes: list[int]) -> list[int]:
    """Split ``total`` visible tokens over images in proportion to their sizes (largest remainder)."""
    if not sizes or total <= 0:
        return [0] * len(sizes)
    exact = np.asarray(sizes, dtype=np.float64) * total / sum(sizes)
    shares = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - shares))[: total - int(shares.sum())]:
        shares[i] += 1
    return [min(int(s), n) for s, n in zip(shares, sizes, strict=True)]


def _consistent(
    boxes: np.ndarray,
    anchor_boxes: np.ndarray,
    anchor_visible: np.ndarray,
    share: int,
    rng: np.random.Generator,
) -> np.ndarray:
    overlap = overlap_fraction(boxes, anchor_boxes)  # (N, Na)
    hidden = overlap @ (~anchor_visible).astype(np.float64)  # (N,) share of area over hidden ground
    candidates = np.flatnonzero(hidden < 0.5)
    chosen = rng.permutation(candidates)[:share]
    out = np.zeros(len(boxes), dtype=bool)
    out[chosen] = True
    return out


def _complementary(
    boxes: Sequence[np.ndarray],
    anchor: int,
    visible: list[np.ndarray],
    others: list[int],
    shares: list[int],
    rng: np.random.Generator,
) -> None:
    anchor_boxes = boxes[anchor]
    anchor_area = (anchor_boxes[:, 2] - anchor_boxes[:, 0]) * (
        anchor_boxes[:, 3] - anchor_boxes[:, 1]
    )
    hidden = (~visible[anchor]).astype(np.float64)  # (Na,)
    shown = np.zeros(len(anchor_boxes))  # (Na,) fraction of hidden anchor ground already shown
    order = rng.permutation(len(others))
    for k in order:
        i, share = others[k], shares[k]
        overlap = overlap_fraction(boxes[i], anchor_boxes)  # (N, Na)
        gain = overlap @ (hidden * (1.0 - shown))  # (N,) new hidden ground each token would show
        score = gain + 0.05 * rng.random(len(gain))  # random among equals
        chosen = np.argsort(-score, kind="stable")[:share]
        visible[i][chosen] = True
        token_area = (boxes[i][chosen, 2] - boxes[i][chosen, 0]) * (
            boxes[i][chosen, 3] - boxes[i][chosen, 1]
        )
        covered = (overlap[chosen] * token_area[:, None]).sum(0) / anchor_area  # (Na,)
        shown = np.minimum(1.0, shown + covered)
