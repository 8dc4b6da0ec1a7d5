"""Cheaper selections to compare affinity-propagation curation against, at equal size.

Each takes the pool's standardised descriptors (one row per candidate group, as dedup sees
them) and returns the sorted row indices of ``size`` groups:

* :func:`random_selection`: uniform random, without replacement.
* :func:`kmeans_balanced_selection`: hierarchical k-means with balanced sampling, after Vo et
  al. 2024 ("Automatic Data Curation for Self-Supervised Learning: A Clustering-Based
  Approach"): k-means on the points, then k-means on the level's centroids, and so on; the
  budget is shared as evenly as the clusters allow among the top clusters, then within each
  among its child clusters, down to the finest clusters, where the points are drawn at random.
  (The paper's resampling step between levels is left out: at a few hundred to a few thousand
  groups it changes little.)
* :func:`farthest_point_selection`: greedy farthest-point (k-center), no clustering: start at
  the point nearest the pool's mean, then always add the point farthest from everything chosen.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sklearn.cluster import KMeans

from terracorpus.curation.errors import ClusteringError

I64 = NDArray[np.int64]
F32 = NDArray[np.float32]

POINTS_PER_CLUSTER = (8, 40)  # pool points per cluster of each k-means level, finest first
_ROWS = 8192  # rows per distance pass


def _check(n: int, size: int) -> None:
    if size < 1:
        raise ClusteringError(f"selection size must be at least 1, got {size}")
    if size > n:
        raise ClusteringError(f"cannot select {size} groups from a pool of {n}")


def random_selection(n: int, size: int, seed: int) -> I64:
    """``size`` of ``n`` rows drawn uniformly at random (sorted)."""
    _check(n, size)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size, replace=False)).astype(np.int64)


def balanced_counts(capacity: I64, budget: int, rng: np.random.Generator) -> I64:
    """Share ``budget`` over bins as evenly as their ``capacity`` allows (water filling);
    the remainder that does not divide evenly goes to randomly chosen open bins."""
    alloc = np.zeros(len(capacity), np.int64)
    while budget > 0:
        open_bins = np.flatnonzero(alloc < capacity)
        if not len(open_bins):
            break
        share = budget // len(open_bins)
        if share == 0:
            alloc[rng.choice(open_bins, budget, replace=False)] += 1
            break
        add = np.minimum(share, capacity[open_bins] - alloc[open_bins])
        alloc[open_bins] += add
        budget -= int(add.sum())
    return alloc


def kmeans_levels(
    X: F32, seed: int, points_per_cluster: tuple[int, ...] = POINTS_PER_CLUSTER
) -> list[I64]:
    """Hierarchical k-means: for each level (finest first) the cluster of every pool point.

    Level ``l`` has about ``n / points_per_cluster[l]`` clusters (at least 2, and fewer than
    the level below); it clusters the centroids of the level below.
    """
    n = len(X)
    points = X.astype(np.float64)
    of_point = np.arange(n, dtype=np.int64)  # pool point -> point of the current level
    levels: list[I64] = []
    for per in points_per_cluster:
        k = max(2, n // per)
        if k >= len(points):
            continue
        km = KMeans(k, n_init=3, random_state=seed).fit(points)
        labels = km.labels_.astype(np.int64)
        of_point = labels[of_point]
        levels.append(of_point.copy())
        points = km.cluster_centers_
    if not levels:
        levels.append(np.zeros(n, np.int64))
    return levels


def kmeans_balanced_selection(
    X: F32, size: int, seed: int, points_per_cluster: tuple[int, ...] = POINTS_PER_CLUSTER
) -> I64:
    """``size`` rows by hierarchical k-means and balanced sampling (sorted); see the module."""
    _check(len(X), size)
    rng = np.random.default_rng(seed)
    levels = kmeans_levels(X, seed, points_per_cluster)
    chosen = _draw(np.arange(len(X), dtype=np.int64), levels[::-1], size, rng)
    return np.sort(chosen)


def _draw(rows: I64, levels: list[I64], budget: int, rng: np.random.Generator) -> I64:
    """``budget`` of ``rows``, balanced over the clusters of ``levels[0]`` (coarsest first)."""
    if not levels:
        return rng.choice(rows, budget, replace=False).astype(np.int64)
    clusters, counts = np.unique(levels[0][rows], return_counts=True)
    alloc = balanced_counts(counts.astype(np.int64), budget, rng)
    parts = [
        _draw(rows[levels[0][rows] == c], levels[1:], int(a), rng)
        for c, a in zip(clusters, alloc, strict=True)
        if a > 0
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def farthest_point_selection(X: F32, size: int) -> I64:
    """``size`` rows by greedy farthest-point (k-center) order (sorted); deterministic."""
    _check(len(X), size)
    x = X.astype(np.float32)
    first = int(np.argmin(_sq_dist(x, x.mean(axis=0, keepdims=True))[:, 0]))
    nearest = _sq_dist(x, x[first : first + 1])[:, 0]
    chosen = [first]
    for _ in range(size - 1):
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        np.minimum(nearest, _sq_dist(x, x[nxt : nxt + 1])[:, 0], out=nearest)
    return np.sort(np.asarray(chosen, np.int64))


def _sq_dist(a: F32, b: F32) -> F32:
    """(len(a), len(b)) squared Euclidean distances, clipped at 0."""
    d = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    out: F32 = np.maximum(d, 0).astype(np.float32)
    return out
