"""The selection policy: which image groups enter the corpus, and why every other one does not.

Decisions are per group and made on its anchor chip (the chip that was clustered):

1. Quality rules drop an anchor whose descriptor is not finite or that was not clustered
   (``invalid_descriptor``), whose ``nodata_fraction`` exceeds ``max_nodata`` (``nodata``),
   whose ``cloud_fraction`` exceeds ``max_cloud`` (``cloud``) or whose ``information`` is
   below ``min_information`` (``low_information``). An unknown (NaN) value does not fail its rule.
   The chips come as a :class:`~terracorpus.curation.chips.ChipTable`, parsed at the edge.
2. Within each cluster the remaining anchors are ranked: the exemplar first, then by
   ``information`` (highest first), then by row order. The exemplar is kept first; the quota is
   then filled by **information-weighted farthest-point** order (``fill="farthest"``, default):
   each next place goes to the anchor with the largest distance to its nearest kept anchor of
   the cluster times its ``information`` (clipped to [0, 1]; unknown counts 0; when no
   chip has a score, distance alone), ties broken by the ranking. The places thus cover the cluster's
   spread (a rare sub-mode, another land cover merged into a big cluster) instead of crowding
   around its densest, most textured part, and the weight keeps them from chasing flat
   outliers (plain farthest-point picks the flattest chips first: low texture is what sets
   them apart). ``fill="information"`` walks the ranking instead. Either way an anchor within
   ``duplicate_radius`` of a kept anchor of its cluster is a ``near_duplicate`` (never kept),
   kept anchors are ``exemplar`` or ``quota``, the rest ``over_quota``. When the quota covers
   every anchor of the cluster the ranking is walked (the same outcome up to which copy of a
   duplicate survives, and linear instead of quadratic).
3. Quotas: ``f(m)`` of the cluster's eligible anchors ``m`` — ``sqrt`` (default), ``log``
   (log2(1 + m)), ``equal`` (1) or ``all`` (m, i.e. only duplicates and quality drop).
   Without a target each cluster keeps ``ceil(f(m))``; with ``target_groups`` the target is
   shared in proportion to ``f(m)``, at least one per cluster while the target allows (the
   largest clusters first when it does not), and what a cluster cannot use (too few
   non-duplicates) goes to the others.

Members follow their anchor (``member_of_kept_group`` / ``member_of_dropped_group``), except
that a member of a kept group failing a quality rule (or with a non-finite descriptor) is
dropped alone with that rule's reason, and so is a member within ``duplicate_radius`` of a chip
of its group ranked before it (the anchor, then members by information: ``near_duplicate``);
members of a group without an anchor row are dropped as ``no_anchor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from terracorpus.curation.chips import ChipTable
from terracorpus.curation.errors import ClusteringError
from terracorpus.curation.params import check_settings, setting

I64 = NDArray[np.int64]
F32 = NDArray[np.float32]

KEPT_REASONS = ("exemplar", "quota", "member_of_kept_group")
_CHUNK = 256
_FARTHEST_ROWS = 16_384  # rows per distance pass of the farthest-point fill


@dataclass(frozen=True)
class SelectionPolicy:
    """Quality limits, the duplicate radius and the quota rule (see the module docstring): the
    selection part of the config's ``dedup`` section, every field declared once, here."""

    max_nodata: float = setting(0.2, "an anchor with a larger nodata share is dropped", ge=0, le=1)
    max_cloud: float = setting(0.4, "an anchor with a larger cloud share is dropped", ge=0, le=1)
    min_information: float = setting(
        0.05, "an anchor with less information (texture) is dropped", ge=0
    )
    duplicate_radius: float = setting(
        0.5, "near-duplicate radius in standardised descriptor space", ge=0
    )
    quota: Literal["sqrt", "log", "equal", "all"] = setting(
        "sqrt", "groups kept per cluster of m eligible anchors: sqrt(m), log2(1 + m), 1 or m"
    )
    target_groups: int | None = setting(
        None, "groups to keep in all, shared between clusters by their quota", ge=1
    )
    fill: Literal["farthest", "information"] = setting(
        "farthest",
        "how a cluster's quota is filled after its exemplar: information-weighted "
        "farthest-point (spread) or by information rank",
    )

    def __post_init__(self) -> None:
        check_settings(self, ClusteringError)


def select(
    chips: ChipTable,
    labels: I64,
    X: F32,
    policy: SelectionPolicy,
    exemplars: NDArray[np.bool_] | None = None,
) -> pd.DataFrame:
    """Decide, for every chip, whether it is kept and why.

    Args:
        chips: the chips (ids, groups, roles, quality fractions).
        labels: (len(chips),) cluster id of every clustered anchor, -1 for rows not clustered
            (members, invalid descriptors).
        X: (len(chips), D) standardised descriptors (rows of non-clustered chips unused).
        policy: the selection policy.
        exemplars: (len(chips),) True for cluster exemplars.

    Returns:
        One row per chip, in input order: chip_id, group_id, role, cluster_id, is_exemplar,
        kept, reason.
    """
    n = len(chips)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != n or len(X) != n:
        raise ClusteringError(f"{n} chips but {len(labels)} labels and {len(X)} descriptor rows")
    is_ex = np.zeros(n, bool) if exemplars is None else np.asarray(exemplars, dtype=bool)
    role = chips.role
    anchor = chips.anchor
    quality = _quality_reasons(chips, policy)
    quality[~np.isfinite(X).all(axis=1)] = "invalid_descriptor"
    reason = np.full(n, "", dtype=object)
    bad_desc = anchor & ((labels < 0) | (quality == "invalid_descriptor"))
    reason[bad_desc] = "invalid_descriptor"
    reason[anchor & ~bad_desc] = quality[anchor & ~bad_desc]
    eligible = anchor & (reason == "")
    priority = _priority(chips)
    _decide_clusters(reason, eligible, labels, X, is_ex, priority, policy)
    kept = np.isin(reason, KEPT_REASONS)
    _follow_anchors(chips.group_id, role, reason, kept, quality)
    _drop_member_repeats(chips.group_id, role, reason, X, priority, policy.duplicate_radius)
    cluster_of = _anchor_cluster(chips.group_id, role, labels)
    return pd.DataFrame(
        {
            "chip_id": chips.chip_id,
            "group_id": chips.group_id,
            "role": role,
            "cluster_id": cluster_of,
            "is_exemplar": is_ex & anchor,
            "kept": np.isin(reason, KEPT_REASONS),
            "reason": reason.astype(str),
        }
    )


def _quality_reasons(chips: ChipTable, policy: SelectionPolicy) -> NDArray[np.object_]:
    """The first failed quality rule of every row ("" when it passes them all); an unknown
    (NaN) value passes its rule."""
    reason = np.full(len(chips), "", dtype=object)
    rules = (  # checked in this order
        ("nodata", chips.nodata_fraction > policy.max_nodata),
        ("cloud", chips.cloud_fraction > policy.max_cloud),
        ("low_information", chips.information < policy.min_information),
    )
    for name, fails in rules:
        reason[(reason == "") & fails] = name
    return reason


def _priority(chips: ChipTable) -> NDArray[np.float64]:
    """Higher first: information, unknown (NaN) last."""
    out: NDArray[np.float64] = np.nan_to_num(chips.information, nan=-np.inf)
    return out


def _information_weight(priority: NDArray[np.float64]) -> NDArray[np.float64]:
    """Information clipped to [0, 1] for the farthest-point fill (unknown: 0); 1 everywhere
    when no chip has an information score."""
    if not np.isfinite(priority).any() or (priority == 0).all():
        return np.ones_like(priority)
    out: NDArray[np.float64] = np.clip(np.nan_to_num(priority, neginf=0.0), 0.0, 1.0)
    return out


def _decide_clusters(
    reason: NDArray[np.object_],
    eligible: NDArray[np.bool_],
    labels: I64,
    X: F32,
    is_ex: NDArray[np.bool_],
    priority: NDArray[np.float64],
    policy: SelectionPolicy,
) -> None:
    """Fill ``reason`` for the eligible anchors: kept by quota, near duplicate or over quota."""
    rows = np.flatnonzero(eligible)
    if len(rows) == 0:
        return
    clusters, ranked = _ranked_by_cluster(rows, labels, is_ex, priority)
    weight = _information_weight(priority)
    sizes = np.array([len(ranked[c]) for c in clusters])
    caps = sizes.copy()
    quotas = _quotas(sizes, caps, policy)
    status: dict[int, NDArray[np.int8]] = {}
    for _ in range(len(clusters) + 1):  # each round fixes at least one cluster's capacity
        status = {
            c: _fill(X[ranked[c]], int(q), policy.duplicate_radius, policy.fill, weight[ranked[c]])
            for c, q in zip(clusters, quotas, strict=True)
        }
        kept = np.array([(status[c] == _KEEP).sum() for c in clusters])
        short = kept < quotas
        if policy.target_groups is None or not short.any():
            break
        caps = np.where(short, kept, caps)
        new = _quotas(sizes, caps, policy)
        if np.array_equal(new, quotas):
            break
        quotas = new
    for c in clusters:
        rows_c = ranked[c]
        st = status[c]
        reason[rows_c[st == _DUP]] = "near_duplicate"
        reason[rows_c[st == _OVER]] = "over_quota"
        kept_rows = rows_c[st == _KEEP]
        reason[kept_rows] = np.where(is_ex[kept_rows], "exemplar", "quota")


def _ranked_by_cluster(
    rows: I64, labels: I64, is_ex: NDArray[np.bool_], priority: NDArray[np.float64]
) -> tuple[I64, dict[int, I64]]:
    """Each cluster's rows ranked: exemplar first, then information (high first), then row."""
    order = np.lexsort((rows, -priority[rows], ~is_ex[rows], labels[rows]))
    ranked_rows = rows[order]
    lab = labels[ranked_rows]
    cuts = np.flatnonzero(lab[1:] != lab[:-1]) + 1
    parts = np.split(ranked_rows, cuts)
    clusters = lab[np.r_[0, cuts]].astype(np.int64)
    return clusters, {int(c): p for c, p in zip(clusters, parts, strict=True)}


def _quota_weights(sizes: I64, rule: str) -> NDArray[np.float64]:
    m = sizes.astype(np.float64)
    if rule == "sqrt":
        return np.sqrt(m)
    if rule == "log":
        return np.log2(1.0 + m)
    if rule == "equal":
        return np.ones_like(m)
    return m


def _quotas(sizes: I64, caps: I64, policy: SelectionPolicy) -> I64:
    """Per-cluster quotas, capped by what each cluster can give (see the module docstring)."""
    f = _quota_weights(sizes, policy.quota)
    if policy.target_groups is None:
        return np.minimum(caps, np.ceil(f - 1e-9).astype(np.int64))
    target = min(policy.target_groups, int(caps.sum()))
    if target < np.count_nonzero(caps):
        quota = np.zeros(len(caps), np.int64)
        order = np.lexsort((np.arange(len(caps)), -sizes))
        quota[[i for i in order if caps[i] > 0][:target]] = 1
        return quota
    lo, hi = 0.0, float(target) / max(f.min(), 1e-12) + 1.0
    for _ in range(100):  # largest scale whose floors fit the target
        mid = (lo + hi) / 2
        if _floors(f, caps, mid).sum() <= target:
            lo = mid
        else:
            hi = mid
    quota = _floors(f, caps, lo)
    spare = target - int(quota.sum())
    room = np.flatnonzero(quota < caps)
    frac = lo * f[room] - np.floor(lo * f[room])
    for i in room[np.lexsort((room, -frac))][:spare]:
        quota[i] += 1
    return quota


def _floors(f: NDArray[np.float64], caps: I64, scale: float) -> I64:
    q = np.maximum(1, np.floor(scale * f)).astype(np.int64)
    return np.minimum(q, caps)


_KEEP, _DUP, _OVER = np.int8(1), np.int8(2), np.int8(3)


def _fill(
    X: F32, quota: int, radius: float, fill: str, info: NDArray[np.float64]
) -> NDArray[np.int8]:
    """One cluster's decisions (rows ranked, the exemplar first); see the module docstring."""
    if fill == "information" or quota >= len(X):
        return _greedy(X, quota, radius)
    return _farthest(X, quota, radius, info)


def _farthest(X: F32, quota: int, radius: float, info: NDArray[np.float64]) -> NDArray[np.int8]:
    """Keep the first row, then repeatedly the row with the largest distance to its nearest
    kept row times its information weight ``info`` (in [0, 1]).

    ``gap`` holds each row's squared distance to its nearest kept row, updated with one
    chunked (m, D) pass per kept row: O(quota * m * D) time, O(m) memory. A row with
    ``gap <= radius^2`` is a near duplicate and never picked; when every candidate weighs 0
    the plain distance decides; ties go to the earlier (higher ranked) row.
    """
    n = len(X)
    r2 = np.float32(radius * radius)
    gap = np.full(n, np.inf, dtype=np.float32)
    status = np.full(n, _OVER, dtype=np.int8)
    pick = 0
    for _ in range(quota):
        status[pick] = _KEEP
        for start in range(0, n, _FARTHEST_ROWS):
            diff = X[start : start + _FARTHEST_ROWS] - X[pick]
            part = gap[start : start + len(diff)]
            np.minimum(part, np.einsum("ij,ij->i", diff, diff), out=part)
        gap[pick] = -np.inf  # never picked again
        open_ = gap > r2
        if not open_.any():
            break
        score = np.where(open_, np.sqrt(np.maximum(gap, 0.0)) * info, -1.0)
        pick = int(np.argmax(score)) if score.max() > 0 else int(np.argmax(gap))
    status[(status != _KEEP) & (gap <= r2)] = _DUP
    return status


def _greedy(X: F32, quota: int, radius: float) -> NDArray[np.int8]:
    """Walk ranked rows: keep non-duplicates until the quota is full, classify the rest.

    Chunked: each chunk is compared with the kept rows at once, and within itself through
    its own small distance matrix, so the Python loop only touches booleans.
    """
    n = len(X)
    status = np.zeros(n, np.int8)
    r2 = np.float32(radius * radius)
    kept: list[int] = []
    pos = 0
    while pos < n and len(kept) < quota:
        # a chunk a little larger than the places left: duplicates may be skipped in it
        size = min(_CHUNK, 2 * (quota - len(kept)) + 8)
        chunk = X[pos : pos + size]
        dup = _near(chunk, X[kept], r2) if kept else np.zeros(len(chunk), bool)
        inner = _sqdist(chunk, chunk) <= r2
        stop = len(chunk)
        for i in range(len(chunk)):
            if dup[i]:
                continue
            if len(kept) >= quota:
                stop = i
                break
            kept.append(pos + i)
            dup[i + 1 :] |= inner[i, i + 1 :]
        status[pos : pos + stop] = np.where(dup[:stop], _DUP, _KEEP)
        pos += stop
    status[kept] = _KEEP
    for start in range(pos, n, 4096):
        rest = X[start : start + 4096]
        near = _near(rest, X[kept], r2) if kept else np.zeros(len(rest), bool)
        status[start : start + len(rest)] = np.where(near, _DUP, _OVER)
    return status


def _sqdist(a: F32, b: F32) -> F32:
    d: F32 = (
        np.einsum("ij,ij->i", a, a)[:, None]
        - 2.0 * (a @ b.T)
        + np.einsum("ij,ij->i", b, b)[None, :]
    )
    return d


def _near(a: F32, b: F32, r2: np.float32) -> NDArray[np.bool_]:
    """Rows of ``a`` within sqrt(r2) of any row of ``b``."""
    out = np.zeros(len(a), bool)
    for start in range(0, len(b), 4096):
        out |= (_sqdist(a, b[start : start + 4096]) <= r2).any(axis=1)
    return out


def _follow_anchors(
    groups: NDArray[np.object_],
    role: NDArray[np.object_],
    reason: NDArray[np.object_],
    kept: NDArray[np.bool_],
    quality: NDArray[np.object_],
) -> None:
    """Members take their anchor's decision; a member of a kept group failing a quality
    rule is dropped alone, with that rule's reason."""
    anchor = role == "anchor"
    group_kept = pd.Series(kept[anchor], index=groups[anchor])
    members = ~anchor
    decision = pd.Series(groups[members]).map(group_kept).to_numpy()
    own = quality[members]
    reason[members] = np.where(
        pd.isna(decision),
        "no_anchor",
        np.where(
            decision != True,  # noqa: E712  (object array of bools)
            "member_of_dropped_group",
            np.where(own == "", "member_of_kept_group", own),
        ),
    )


def _drop_member_repeats(
    groups: NDArray[np.object_],
    role: NDArray[np.object_],
    reason: NDArray[np.object_],
    X: F32,
    priority: NDArray[np.float64],
    radius: float,
) -> None:
    """Inside each kept group, a member within ``radius`` of a chip ranked before it (the
    anchor, then members by information) adds nothing: ``near_duplicate``."""
    rows = np.flatnonzero(reason == "member_of_kept_group")
    if radius <= 0 or len(rows) == 0:
        return
    with_members = np.isin(groups, np.unique(groups[rows]))
    rows = np.flatnonzero(with_members & np.isin(reason, KEPT_REASONS))
    g = groups[rows]
    order = np.lexsort((rows, -priority[rows], role[rows] != "anchor", g))
    rows, g = rows[order], g[order]
    r2 = np.float32(radius * radius)
    for members in np.split(rows, np.flatnonzero(g[1:] != g[:-1]) + 1):
        close = _sqdist(X[members], X[members]) <= r2
        kept = [0]
        for i in range(1, len(members)):
            if close[i, kept].any():
                reason[members[i]] = "near_duplicate"
            else:
                kept.append(i)


def _anchor_cluster(groups: NDArray[np.object_], role: NDArray[np.object_], labels: I64) -> I64:
    anchor = role == "anchor"
    by_group = pd.Series(labels[anchor], index=groups[anchor])
    out = pd.Series(groups).map(by_group).fillna(-1).to_numpy(dtype=np.int64, copy=True)
    out[anchor] = labels[anchor]
    return out


def summarize(selection: pd.DataFrame) -> dict[str, int]:
    """Counts of chips per reason (kept reasons included)."""
    counts = selection["reason"].value_counts()
    return {str(k): int(v) for k, v in sorted(counts.items())}
