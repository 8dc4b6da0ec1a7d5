"""The selection policy: quality rules, near-duplicates, quotas, targets, groups."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from terracorpus.curation.chips import ChipTable, chip_table
from terracorpus.curation.errors import ClusteringError
from terracorpus.curation.selection import SelectionPolicy, select, summarize


def frame(n: int, **cols: Any) -> ChipTable:
    """``n`` groups of one anchor chip each, with the given columns (others unknown)."""
    return chip_table([f"g{i}/a" for i in range(n)], [f"g{i}" for i in range(n)], **cols)


def test_quality_rules_drop_anchors_with_their_reason() -> None:
    chips = frame(
        5,
        nodata_fraction=[0.0, 0.5, 0.0, 0.0, np.nan],
        cloud_fraction=[0.0, 0.0, 0.9, 0.0, 0.0],
        information=[1.0, 1.0, 1.0, 0.01, 1.0],
    )
    X = np.arange(10, dtype=np.float32).reshape(5, 2) * 10
    labels = np.zeros(5, np.int64)
    out = select(chips, labels, X, SelectionPolicy(quota="all"), np.eye(5, dtype=bool)[0])
    assert out["reason"].tolist() == ["exemplar", "nodata", "cloud", "low_information", "quota"]
    assert out["kept"].tolist() == [True, False, False, False, True]


def test_invalid_descriptors_and_unclustered_rows_are_explained() -> None:
    chips = frame(3)
    X = np.array([[0, 0], [np.nan, 1], [5, 5]], np.float32)
    out = select(chips, np.array([0, -1, -1]), X, SelectionPolicy())
    assert out["reason"].tolist()[1:] == ["invalid_descriptor", "invalid_descriptor"]
    assert out["cluster_id"].tolist() == [0, -1, -1]


def test_near_duplicates_of_kept_chips_are_dropped() -> None:
    X = np.array([[0, 0], [0.1, 0], [5, 5], [5.05, 5], [10, 0]], np.float32)
    chips = frame(5)
    out = select(
        chips, np.zeros(5, np.int64), X, SelectionPolicy(duplicate_radius=0.5, quota="all")
    )
    assert out["reason"].tolist() == ["quota", "near_duplicate", "quota", "near_duplicate", "quota"]


def test_ranking_prefers_exemplar_then_information() -> None:
    X = np.array([[0, 0], [0.1, 0], [0.2, 0]], np.float32)
    chips = frame(3, information=[0.2, 0.9, 0.5])
    ex = np.array([False, False, True])
    out = select(chips, np.zeros(3, np.int64), X, SelectionPolicy(duplicate_radius=1.0), ex)
    assert out["reason"].tolist() == ["near_duplicate", "near_duplicate", "exemplar"]


def test_sqrt_quota_downweights_big_clusters_and_keeps_small_ones() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [400, 25, 1])
    X = rng.normal(0, 10, (426, 4)).astype(np.float32)
    out = select(frame(426), labels, X, SelectionPolicy(duplicate_radius=0.0))
    kept = out.groupby("cluster_id")["kept"].sum().tolist()
    assert kept == [20, 5, 1]
    assert set(out.loc[~out["kept"], "reason"]) == {"over_quota"}


def test_target_is_shared_and_unused_quota_moves_to_other_clusters() -> None:
    rng = np.random.default_rng(1)
    # cluster 0: 100 distinct chips; cluster 1: 100 copies of one chip (one non-duplicate)
    X = np.vstack([rng.normal(0, 10, (100, 3)), np.zeros((100, 3))]).astype(np.float32)
    labels = np.repeat([0, 1], 100)
    out = select(frame(200), labels, X, SelectionPolicy(target_groups=30, duplicate_radius=0.5))
    kept = out.groupby("cluster_id")["kept"].sum().tolist()
    assert kept == [29, 1] and out["kept"].sum() == 30


def test_fewer_chips_than_target_keeps_every_eligible_group() -> None:
    X = np.arange(20, dtype=np.float32).reshape(10, 2) * 10
    out = select(frame(10), np.zeros(10, np.int64), X, SelectionPolicy(target_groups=1000))
    assert out["kept"].all()


def test_target_below_cluster_count_keeps_one_of_the_largest() -> None:
    labels = np.repeat([0, 1, 2], [5, 10, 2])
    X = np.arange(34, dtype=np.float32).reshape(17, 2) * 10
    out = select(frame(17), labels, X, SelectionPolicy(target_groups=2))
    assert out.groupby("cluster_id")["kept"].sum().tolist() == [1, 1, 0]


def test_members_follow_their_anchor_and_fail_their_own_quality() -> None:
    chips = chip_table(
        ["a/1", "a/2", "a/3", "b/1", "b/2", "c/2"],
        ["a", "a", "a", "b", "b", "c"],
        role=["anchor", "member", "member", "anchor", "member", "member"],
        cloud_fraction=[0.0, 0.0, 0.9, 0.9, 0.0, 0.0],
    )
    X = np.arange(12, dtype=np.float32).reshape(6, 2) * 10  # no two chips alike
    labels = np.array([0, -1, -1, 0, -1, -1])
    out = select(chips, labels, X, SelectionPolicy())
    assert out["reason"].tolist() == [
        "quota",
        "member_of_kept_group",
        "cloud",
        "cloud",
        "member_of_dropped_group",
        "no_anchor",
    ]
    assert out["cluster_id"].tolist() == [0, 0, 0, 0, 0, -1]
    assert summarize(out)["cloud"] == 2


def test_a_member_repeating_its_group_is_a_near_duplicate() -> None:
    chips = chip_table(
        ["a/1", "a/2", "a/3", "a/4"],
        ["a"] * 4,
        role=["anchor", "member", "member", "member"],
        information=[0.5, 0.9, 0.1, 0.8],
    )
    # a/3 repeats the anchor; a/4 repeats a/2, which ranks first (more information)
    X = np.array([[0, 0], [5, 5], [0.05, 0], [5, 5.1]], np.float32)
    out = select(chips, np.array([0, -1, -1, -1]), X, SelectionPolicy(duplicate_radius=0.5))
    assert out["reason"].tolist() == [
        "quota",
        "member_of_kept_group",
        "near_duplicate",
        "near_duplicate",
    ]


def test_bad_tables_are_refused() -> None:
    with pytest.raises(ClusteringError, match="unique"):
        chip_table(["x", "x"], ["a", "b"])
    with pytest.raises(ClusteringError, match="more than one anchor"):
        chip_table(["x", "y"], ["a", "a"])
    with pytest.raises(ClusteringError, match="role must be one of anchor, member, not 'Anchor'"):
        chip_table(["x", "y"], ["a", "a"], role=["Anchor", "member"])
    with pytest.raises(ClusteringError, match="2 chip ids but 3 cloud_fraction values"):
        chip_table(["x", "y"], ["a", "b"], cloud_fraction=[0.0, 0.1, 0.2])
    with pytest.raises(ClusteringError, match="2 chips but 2 labels and 3 descriptor rows"):
        select(frame(2), np.zeros(2, np.int64), np.zeros((3, 2), np.float32), SelectionPolicy())
    with pytest.raises(ClusteringError, match="quota"):
        SelectionPolicy(quota="most")


def test_farthest_fill_spreads_the_quota_over_the_cluster() -> None:
    # eleven chips on a line, the exemplar in the middle, no information score
    X = np.stack([np.arange(11.0), np.zeros(11)], axis=1).astype(np.float32)
    ex = np.arange(11) == 5
    out = select(frame(11), np.zeros(11, np.int64), X, SelectionPolicy(quota="equal"), ex)
    assert out["kept"].sum() == 1
    policy = SelectionPolicy(target_groups=3, duplicate_radius=0.1)
    out = select(frame(11), np.zeros(11, np.int64), X, policy, ex)
    # both ends are 5 away; the tie goes to the earlier row
    assert np.flatnonzero(out["kept"]).tolist() == [0, 5, 10]
    assert out["reason"][[0, 5, 10]].tolist() == ["quota", "exemplar", "quota"]


def test_a_rare_sub_mode_of_a_big_cluster_survives_the_quota() -> None:
    rng = np.random.default_rng(3)
    dense = rng.normal(0, 1, (60, 4))  # a big, richly textured mode
    rare = rng.normal(0, 0.3, (3, 4)) + 8  # another land cover merged into the cluster
    X = np.vstack([dense, rare]).astype(np.float32)
    info = np.r_[rng.uniform(0.8, 1.0, 60), [0.55, 0.6, 0.5]]
    chips = frame(63, information=info)
    labels = np.zeros(63, np.int64)
    ex = np.arange(63) == 0
    spread = select(chips, labels, X, SelectionPolicy(duplicate_radius=0.1), ex)
    ranked = select(chips, labels, X, SelectionPolicy(duplicate_radius=0.1, fill="information"), ex)
    assert spread["kept"].sum() == ranked["kept"].sum() == 8  # ceil(sqrt(63))
    assert spread["kept"].iloc[60:].any()  # the rare mode has a place
    assert not ranked["kept"].iloc[60:].any()  # ranking by information alone leaves it out


def test_information_weight_keeps_the_fill_off_flat_outliers() -> None:
    # a flat chip far out, an informative one half as far: the informative one is chosen
    X = np.array([[0, 0], [0.5, 0], [10, 0], [0, 5]], np.float32)
    info = [0.9, 0.9, 0.06, 0.8]
    policy = SelectionPolicy(target_groups=2, duplicate_radius=0.1)
    ex = np.array([True, False, False, False])
    out = select(frame(4, information=info), np.zeros(4, np.int64), X, policy, ex)
    assert np.flatnonzero(out["kept"]).tolist() == [0, 3]
    plain = select(frame(4), np.zeros(4, np.int64), X, policy, ex)  # no scores: distance alone
    assert np.flatnonzero(plain["kept"]).tolist() == [0, 2]


def test_farthest_fill_never_keeps_a_near_duplicate() -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(0, 5, (30, 3))
    X = np.vstack([base, base[:10] + 0.01]).astype(np.float32)  # ten planted copies
    labels = np.zeros(40, np.int64)
    for quota in ("sqrt", "log", "all"):
        out = select(frame(40), labels, X, SelectionPolicy(duplicate_radius=0.2, quota=quota))
        kept = np.flatnonzero(out["kept"])
        pairs = [(i, i + 30) for i in range(10)]
        assert not any(a in kept and b in kept for a, b in pairs)
        dropped_dups = set(np.flatnonzero(out["reason"] == "near_duplicate"))
        assert all((a in kept) == (b in dropped_dups) for a, b in pairs)
    with pytest.raises(ClusteringError, match="fill"):
        SelectionPolicy(fill="random")
