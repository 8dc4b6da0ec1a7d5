"""Anchor-aware masking: token ground geometry across GSDs, policies and the group budget."""

from __future__ import annotations

import numpy as np
import pytest

from terracorpus.training.errors import TrainConfigError
from terracorpus.training.masking import colocated, group_masks, overlap_fraction, token_boxes

# Anchor: 10 m GSD, 4-pixel patches -> 40 m tokens on a 6 x 6 grid (240 m footprint).
ANCHOR = token_boxes((6, 6), (0.0, 0.0), (40.0, 40.0))
# A 30 m sensor with 4-pixel patches -> 120 m tokens on a 2 x 2 grid over the same ground.
COARSE = token_boxes((2, 2), (0.0, 0.0), (120.0, 120.0))
# Another date of the anchor sensor, on the same grid.
SAME = token_boxes((6, 6), (0.0, 0.0), (40.0, 40.0))


def test_coarse_token_is_colocated_with_the_anchor_ground_it_covers() -> None:
    hits = colocated(COARSE, ANCHOR)  # (4, 36)
    grid = hits[0].reshape(6, 6)  # the top-left 120 m token
    assert grid[:3, :3].all() and grid.sum() == 9  # exactly the 3 x 3 anchor tokens under it
    assert hits.sum(1).tolist() == [9, 9, 9, 9]
    np.testing.assert_allclose(overlap_fraction(COARSE, ANCHOR).sum(1), 1.0)
    # Bottom-right coarse token covers anchor rows 3-5, cols 3-5.
    assert set(np.flatnonzero(hits[3])) == {r * 6 + c for r in (3, 4, 5) for c in (3, 4, 5)}


def test_fine_token_lies_inside_one_anchor_token_and_shifted_grids_split_overlap() -> None:
    fine = token_boxes((24, 24), (0.0, 0.0), (10.0, 10.0))  # 2.5 m GSD, 4-pixel patches
    frac = overlap_fraction(fine, ANCHOR)
    assert (frac.max(1) == 1.0).all()  # every 10 m token lies in one 40 m anchor token
    assert np.flatnonzero(frac[4 * 24 + 5])[0] == 1 * 6 + 1  # row 4, col 5 -> anchor (1, 1)
    shifted = token_boxes((2, 2), (15.0, 15.0), (120.0, 120.0))  # half a 30 m pixel off
    frac = overlap_fraction(shifted, ANCHOR)
    assert colocated(shifted, ANCHOR)[0].sum() == 16  # straddles a 4 x 4 block of anchor tokens
    np.testing.assert_allclose(frac[0].sum(), 1.0)
    np.testing.assert_allclose(frac[0, 0], (25 * 25) / 120**2)


def test_touching_edges_are_not_colocated() -> None:
    right = token_boxes((1, 1), (240.0, 0.0), (40.0, 40.0))  # beyond the anchor's east edge
    assert not colocated(right, ANCHOR).any()


@pytest.mark.parametrize("policy", ["complementary", "consistent", "independent"])
def test_one_budget_per_group_and_anchor_ratio(policy: str) -> None:
    masks = group_masks([ANCHOR, SAME, COARSE], 0.75, policy, np.random.default_rng(0))
    total = sum(len(m) for m in masks)
    assert sum(int(m.sum()) for m in masks) <= round(0.25 * total)
    assert masks[0].sum() == 9  # anchor: 25 % of 36
    if policy != "consistent":
        assert sum(int(m.sum()) for m in masks) == round(0.25 * total)


def test_complementary_shows_ground_the_anchor_hides() -> None:
    masks = group_masks([ANCHOR, SAME], 0.75, "complementary", np.random.default_rng(1))
    assert masks[1].sum() == 9
    assert not (masks[0] & masks[1]).any()  # the second date shows only hidden anchor ground


def test_complementary_members_avoid_showing_the_same_ground_twice() -> None:
    third = token_boxes((6, 6), (0.0, 0.0), (40.0, 40.0))
    masks = group_masks([ANCHOR, SAME, third], 0.75, "complementary", np.random.default_rng(2))
    assert not (masks[1] & masks[2]).any() and not (masks[0] & masks[2]).any()


def test_consistent_hides_the_same_ground_everywhere() -> None:
    masks = group_masks([ANCHOR, SAME, COARSE], 0.5, "consistent", np.random.default_rng(3))
    assert not (masks[1] & ~masks[0]).any()  # same grid: visible only where the anchor is
    hidden_share = overlap_fraction(COARSE, ANCHOR) @ (~masks[0]).astype(float)
    assert (hidden_share[masks[2]] < 0.5).all()


def test_masks_are_reproducible_and_policy_checked() -> None:
    a = group_masks([ANCHOR, COARSE], 0.75, "complementary", np.random.default_rng(7))
    b = group_masks([ANCHOR, COARSE], 0.75, "complementary", np.random.default_rng(7))
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    with pytest.raises(TrainConfigError, match="mask_policy: mask policy 'bogus'"):
        group_masks([ANCHOR], 0.75, "bogus", np.random.default_rng(0))
