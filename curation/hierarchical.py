"""Hierarchical affinity propagation: blocks, levels, and the final assignment of every chip.

Flat affinity propagation needs ``N x N`` matrices; here the chips are split into coherent
blocks of ``partition_size`` (by partition key — a spatial tile, say — with large keys split
along their principal axis, and small consecutive keys packed together), AP runs on every block
(in parallel through ``map_fn``), and the block exemplars, each carrying the number of chips and
the centroid of its cluster, become the points of the next level. Levels repeat until at most
``top_size`` points remain, which are solved as one block. Every chip is then assigned to its
nearest final exemplar (chunked, float32).

Determinism: blocks depend only on the keys, the descriptors and the settings (stable sorts,
members in index order), each block's random tie-breaking noise is seeded from (seed, level,
block id), and workers run with one BLAS thread, so the result does not depend on how many
workers ran the blocks. Sort chips by a stable id before calling.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from terracorpus.curation.ap import (
    F32,
    I64,
    APParams,
    BlockInput,
    BlockOutput,
    sample_preference,
    solve_blocks,
    solve_for_clusters,
)
from terracorpus.curation.errors import ClusteringError

F64 = NDArray[np.float64]
TaskFn = Callable[[list[BlockInput]], list[BlockOutput]]
MapFn = Callable[[TaskFn, list[list[BlockInput]]], list[list[BlockOutput]]]

STALL_RATIO = 0.7  # a level that keeps more than this share of its points has stalled
RESUMMARISE = 4  # at most this many reruns of a summary level that kept fewer than n_clusters
TASK_COST = 4_000_000  # sum of n^2 over the blocks of one task (~16 blocks of 500)
MIN_TASKS = 16  # split a level into at least this many tasks when it has enough blocks
_AXIS_SAMPLE = 20_000  # points used to fit a block's principal axis
_CHUNK = 65_536  # rows per chunk of the final assignment


@dataclass(frozen=True)
class PartitionReport:
    """What happened in one block: sizes, iterations, convergence, the damping that was used."""

    level: int
    block_id: int
    points: int
    chips: int
    exemplars: int
    iterations: int
    converged: bool
    damping: float
    note: str
    seconds: float = 0.0


@dataclass(frozen=True)
class LevelReport:
    """One level of the hierarchy: points in, blocks, exemplars out, wall time."""

    level: int
    points: int
    blocks: int
    exemplars: int
    seconds: float
    note: str = ""


@dataclass(frozen=True)
class APResult:
    """Clusters of every chip.

    Attributes:
        labels: (N,) cluster id of every chip, 0..K-1 in the order of ``exemplars``.
        exemplars: (K,) chip index of each cluster's exemplar, ascending.
        sqdist: (N,) squared distance of every chip to its exemplar.
        preference: the preference p that was used.
        levels: one report per level.
        partitions: one report per block of every level.
    """

    labels: I64
    exemplars: I64
    sqdist: F32
    preference: float
    levels: tuple[LevelReport, ...]
    partitions: tuple[PartitionReport, ...]

    @property
    def n_clusters(self) -> int:
        return len(self.exemplars)

    @property
    def unconverged(self) -> list[PartitionReport]:
        """Blocks that did not converge even at the highest retry damping."""
        return [p for p in self.partitions if not p.converged]

    def net_similarity(self) -> float:
        """The AP objective: -sum of squared distances to exemplars + K * preference."""
        return float(-self.sqdist.sum(dtype=np.float64) + self.n_clusters * self.preference)


def serial_map(fn: TaskFn, tasks: list[list[BlockInput]]) -> list[list[BlockOutput]]:
    """The default ``map_fn``: run the tasks one after another in this process."""
    return [fn(t) for t in tasks]


# -- descriptors ---------------------------------------------------------------------------
def descriptor_part(name: str) -> str:
    """The part of a descriptor name: ``"spec.b04_mean"`` -> ``"spec"``."""
    return name.split(".", 1)[0] if "." in name else name


def prepare_features(
    descriptors: NDArray[np.floating], names: Sequence[str], weights: Mapping[str, float]
) -> F32:
    """Standardise descriptors per column and weight them per part, as float32.

    Each column is z-scored over the rows whose descriptor is finite (constant columns
    become 0). Part weights (keys ``"spec"``, ``"index"``, ``"tex"``, ``"meta"`` or the same with
    a trailing dot; default 1) multiply the squared distance: columns are scaled by
    ``sqrt(weight)``. Rows with NaN or infinite values stay non-finite, for the caller to drop.
    """
    D = np.asarray(descriptors, dtype=np.float64)
    if D.ndim != 2 or D.shape[1] != len(names):
        raise ClusteringError(
            f"descriptors have shape {D.shape} but {len(names)} descriptor names were given"
        )
    col_w = _column_weights(names, weights)
    finite = np.isfinite(D).all(axis=1)
    ref = D[finite] if finite.any() else np.zeros((1, D.shape[1]))
    mean = ref.mean(axis=0)
    std = ref.std(axis=0)
    scale = np.divide(np.sqrt(col_w), std, out=np.zeros_like(std), where=std > 1e-12)
    X: F32 = ((D - mean) * scale).astype(np.float32)
    return X


def _column_weights(names: Sequence[str], weights: Mapping[str, float]) -> F64:
    parts = [descriptor_part(n) for n in names]
    known = sorted(set(parts))
    norm = {k.rstrip("."): float(v) for k, v in weights.items()}
    unknown = sorted(set(norm) - set(known))
    if unknown:
        raise ClusteringError(
            f"descriptor weights name unknown part(s) {unknown}; the descriptor parts are {known}"
        )
    bad = {k: v for k, v in norm.items() if not (v >= 0 and math.isfinite(v))}
    if bad:
        raise ClusteringError(f"descriptor weights must be finite and >= 0: {bad}")
    col = np.array([norm.get(p, 1.0) for p in parts], dtype=np.float64)
    if not (col > 0).any():
        raise ClusteringError("every descriptor part has weight 0; give at least one a weight > 0")
    return col


# -- partitions ----------------------------------------------------------------------------
def make_blocks(
    keys: NDArray[np.generic], X: F32, size: int, mode: str, seed: int, level: int
) -> list[I64]:
    """Split points into blocks of at most ``size`` (ascending index arrays).

    ``"spatial"``: points of one key stay together; keys are visited in sorted order, small
    consecutive keys are packed into one block, a key larger than ``size`` is split into
    balanced parts along its principal axis (recursive bisection), so the parts are coherent in
    descriptor space. ``"random"``: a seeded permutation cut into balanced blocks.
    """
    n = len(X)
    if mode == "random":
        perm = np.random.default_rng([seed, level, 104729]).permutation(n)
        return [np.sort(b) for b in np.array_split(perm, max(1, math.ceil(n / size)))]
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    cuts = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    blocks: list[I64] = []
    pack: list[I64] = []
    pack_n = 0
    for members in np.split(order.astype(np.int64), cuts):
        if len(members) > size:
            blocks.extend(_pca_split(members, X, math.ceil(len(members) / size)))
            continue
        if pack_n + len(members) > size:
            blocks.append(np.sort(np.concatenate(pack)))
            pack, pack_n = [], 0
        pack.append(members)
        pack_n += len(members)
    if pack:
        blocks.append(np.sort(np.concatenate(pack)))
    return blocks


def _pca_split(idx: I64, X: F32, parts: int, rows: F32 | None = None) -> list[I64]:
    """Balanced recursive bisection of ``idx`` along the principal axis of its points.

    ``rows``: ``X[idx]`` when the caller already has it. Below ``_CHUNK`` points each part's
    rows are gathered once and handed down, so the recursion reads a small contiguous copy
    instead of scattered rows of ``X``.
    """
    if parts <= 1:
        return [idx]
    if rows is None and len(idx) <= _CHUNK:
        rows = X[idx]
    step = max(1, len(idx) // _AXIS_SAMPLE)
    sample = X[idx[::step]] if rows is None else rows[::step]
    # float32 products with a float64 mean: the axis only has to be a good direction, and
    # float64 copies of every part were most of the splitting time
    centred = sample - sample.mean(axis=0, dtype=np.float64).astype(np.float32)
    _, vecs = np.linalg.eigh((centred.T @ centred).astype(np.float64))
    axis = vecs[:, -1]
    axis *= np.sign(axis[np.argmax(np.abs(axis))])  # eigenvectors have no sign of their own
    axis32 = axis.astype(np.float32)
    if rows is None:
        proj = np.concatenate([X[idx[i : i + _CHUNK]] @ axis32 for i in range(0, len(idx), _CHUNK)])
    else:
        proj = rows @ axis32
    left = parts // 2
    n_left = round(len(idx) * left / parts)
    # a selection, not a sort: O(n) per split, and deterministic for the same input
    order = np.argpartition(proj, n_left - 1) if 0 < n_left < len(idx) else np.arange(len(idx))
    # positions ascending keep every part's members in index order (idx is ascending)
    in_lo = np.zeros(len(idx), dtype=bool)
    in_lo[order[:n_left]] = True
    lo, hi = np.flatnonzero(in_lo), np.flatnonzero(~in_lo)
    sub_lo = None if rows is None else rows[lo]
    sub_hi = None if rows is None else rows[hi]
    return _pca_split(idx[lo], X, left, sub_lo) + _pca_split(idx[hi], X, parts - left, sub_hi)


def _tasks(blocks: list[BlockInput]) -> list[list[BlockInput]]:
    """Consecutive blocks grouped into tasks of similar cost (fewer, larger Dask tasks)."""
    costs = [len(b.rep) ** 2 for b in blocks]
    budget = min(TASK_COST, max(1, sum(costs) // MIN_TASKS))
    tasks: list[list[BlockInput]] = []
    current: list[BlockInput] = []
    spent = 0
    for block, cost in zip(blocks, costs, strict=True):
        if current and spent + cost > budget:
            tasks.append(current)
            current, spent = [], 0
        current.append(block)
        spent += cost
    if current:
        tasks.append(current)
    return tasks


# -- the hierarchy -------------------------------------------------------------------------
@dataclass
class _Level:
    """The points of one level: each stands for ``weight`` chips with centroid ``sums/weight``.

    The first level (``weight`` None) is the chips themselves: no copies of ``X`` are made.
    """

    rep_index: I64  # (n,) chip index of each point's representative
    keys: NDArray[np.generic]
    weight: F64 | None = None  # None: every point is one chip, rep_index is 0..N-1
    sums: F64 | None = None

    def centroids(self, X: F32) -> F32:
        if self.weight is None or self.sums is None:
            return X
        return (self.sums / self.weight[:, None]).astype(np.float32)


def hierarchical_ap(
    X: F32,
    partition_keys: NDArray[np.generic],
    params: APParams,
    map_fn: MapFn | None = None,
) -> APResult:
    """Cluster N chips by hierarchical affinity propagation.

    Args:
        X: (N, D) float32 standardised, weighted descriptors (see :func:`prepare_features`),
            rows in a stable order (e.g. sorted by chip id); all finite.
        partition_keys: (N,) sortable keys of the first-level partitions (e.g. a spatial tile
            id); ignored by ``partitioning="random"``.
        params: the settings.
        map_fn: ``map_fn(fn, tasks)`` runs ``fn`` on every task and returns the results in
            order (e.g. on Dask); default: one after another in this process.

    Returns:
        The labels of every chip, the exemplars and per-level and per-block reports.
    """
    X = _check_input(X, partition_keys)
    # One BLAS thread here too: small LAPACK calls (32 x 32 eigh) crawl when threads fight
    # over busy cores, and results must not depend on the machine's thread count.
    with threadpool_limits(limits=1):
        return _hierarchy(X, partition_keys, params, map_fn or serial_map)


def _hierarchy(
    X: F32, partition_keys: NDArray[np.generic], params: APParams, run: MapFn
) -> APResult:
    target = params.n_clusters
    # with a cluster-count target the levels below the top summarise with block-local
    # preferences and the top searches the global one; otherwise one p everywhere
    preference = -math.inf if target is not None else _preference(X, params)
    level_q: float | None = params.level_quantile if target is not None else None
    state = _Level(rep_index=np.arange(len(X), dtype=np.int64), keys=np.asarray(partition_keys))
    size = params.partition_size
    levels: list[LevelReport] = []
    partitions: list[PartitionReport] = []
    level = 0
    while True:
        level += 1
        t0 = time.perf_counter()
        n = len(state.rep_index)
        last = n <= (params.partition_size if level == 1 else params.top_size)
        mu = state.centroids(X)
        blocks = (
            [np.arange(n, dtype=np.int64)]
            if last
            else make_blocks(state.keys, mu, size, params.partitioning, params.seed, level)
        )
        inputs = _inputs(X, state, mu, blocks, level, preference, None if last else level_q)
        note = ""
        if last and target is not None:
            outputs = [solve_for_clusters(inputs[0], params, target)]
            preference = outputs[0].preference
        else:
            outputs = _solve_level(run, params, inputs)
        if not last and target is not None and level_q is not None:
            outputs, level_q, note = _keep_enough(run, params, inputs, outputs, level_q, target)
        parent, exemplar_pos = _parents(blocks, outputs, n)
        partitions.extend(_reports(blocks, outputs, state))
        state = _carry_up(state, mu, parent, exemplar_pos)
        k = len(exemplar_pos)
        if not last and k > params.top_size and k > STALL_RATIO * n:
            if level_q is not None:
                level_q /= 2  # block-local preferences: summarise harder
            elif size >= params.top_size:
                note = (
                    f"stopped: {k} exemplars remain (> top_size {params.top_size}) and a level "
                    "no longer reduces them; lower the preference (quantile) or set n_clusters"
                )
                last = True
            size = min(2 * size, params.top_size)
        levels.append(LevelReport(level, n, len(blocks), k, time.perf_counter() - t0, note))
        if last:
            break
    exemplars = np.sort(state.rep_index)
    threads = params.assign_threads or len(os.sched_getaffinity(0))
    labels, sqdist = nearest_exemplar(X, exemplars, threads)
    for _ in range(params.refine_rounds):
        moved = _medoid_step(X, labels, len(exemplars))
        new_labels, new_sqdist = nearest_exemplar(X, moved, threads)
        if new_sqdist.sum(dtype=np.float64) >= sqdist.sum(dtype=np.float64):
            break
        exemplars, labels, sqdist = moved, new_labels, new_sqdist
    return APResult(labels, exemplars, sqdist, preference, tuple(levels), tuple(partitions))


def _solve_level(run: MapFn, params: APParams, inputs: list[BlockInput]) -> list[BlockOutput]:
    tasks = run(partial(solve_blocks, params=params), _tasks(inputs))
    return [out for task in tasks for out in task]


def _keep_enough(
    run: MapFn,
    params: APParams,
    inputs: list[BlockInput],
    outputs: list[BlockOutput],
    level_q: float,
    target: int,
) -> tuple[list[BlockOutput], float, str]:
    """Redo a summary level that kept fewer points than the cluster target, summarising less.

    The top can only choose among the points the levels below carry up: a summary that keeps
    fewer than ``n_clusters`` would cap the result below the target. The level is solved
    again with the block-local quantile raised halfway to 1 (more exemplars per block), at
    most ``RESUMMARISE`` times; the raised quantile stays for the levels above.
    """
    kept = sum(len(o.exemplars) for o in outputs)
    first = kept
    for _ in range(RESUMMARISE):
        if kept >= target:
            break
        level_q = (1.0 + level_q) / 2
        outputs = _solve_level(run, params, [replace(b, local_quantile=level_q) for b in inputs])
        kept = sum(len(o.exemplars) for o in outputs)
    note = (
        f"summarised again at level_quantile {level_q:.3g}: {first} exemplars were fewer than "
        f"n_clusters {target}"
    )
    return outputs, level_q, note if kept != first else ""


def _check_input(X: F32, keys: NDArray[np.generic]) -> F32:
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) == 0:
        raise ClusteringError(f"descriptors must be a non-empty (N, D) array, got shape {X.shape}")
    if len(keys) != len(X):
        raise ClusteringError(f"{len(keys)} partition keys for {len(X)} descriptors")
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X).all(axis=1)).sum())
        raise ClusteringError(
            f"{bad} descriptor rows contain NaN or inf; drop them before clustering"
        )
    return X


def _preference(X: F32, params: APParams) -> float:
    if params.preference is None:
        return sample_preference(X, params.preference_quantile, params.seed)
    if not params.preference < 0:
        raise ClusteringError(
            f"preference must be negative (a similarity is minus a squared distance), got {params.preference}"
        )
    return float(params.preference)


def _inputs(
    X: F32,
    state: _Level,
    mu: F32,
    blocks: list[I64],
    level: int,
    preference: float,
    local_quantile: float | None,
) -> list[BlockInput]:
    weighted = state.weight is not None
    return [
        BlockInput(
            level=level,
            block_id=b,
            rep=np.ascontiguousarray(X[state.rep_index[idx]]),
            preference=preference,
            centroid=mu[idx] if weighted else None,
            weight=state.weight[idx].astype(np.float32) if state.weight is not None else None,
            local_quantile=local_quantile,
        )
        for b, idx in enumerate(blocks)
    ]


def _parents(blocks: list[I64], outputs: list[BlockOutput], n: int) -> tuple[I64, I64]:
    """Each point's exemplar as a position among the level's exemplars, and their positions."""
    parent = np.empty(n, dtype=np.int64)
    exemplar_pos: list[I64] = []
    offset = 0
    for idx, out in zip(blocks, outputs, strict=True):
        parent[idx] = out.labels + offset
        exemplar_pos.append(idx[out.exemplars])
        offset += len(out.exemplars)
    return parent, np.concatenate(exemplar_pos)


def _reports(blocks: list[I64], outputs: list[BlockOutput], state: _Level) -> list[PartitionReport]:
    chips = [len(idx) if state.weight is None else int(state.weight[idx].sum()) for idx in blocks]
    return [
        PartitionReport(
            out.level,
            out.block_id,
            len(idx),
            c,
            len(out.exemplars),
            out.iterations,
            out.converged,
            out.damping,
            out.note,
            out.seconds,
        )
        for idx, out, c in zip(blocks, outputs, chips, strict=True)
    ]


def _carry_up(state: _Level, mu: F32, parent: I64, exemplar_pos: I64) -> _Level:
    """The next level's points: exemplars with their clusters' chip counts and centroid sums.

    Column by column, so no (N, D) float64 temporary is made at the first level.
    """
    k = len(exemplar_pos)
    w = None if state.weight is None else state.weight
    weight = np.bincount(parent, weights=w, minlength=k).astype(np.float64)
    sums = np.empty((k, mu.shape[1]), dtype=np.float64)
    for j in range(mu.shape[1]):
        if state.sums is not None:
            col = state.sums[:, j]
        else:
            col = mu[:, j].astype(np.float64)
            if w is not None:
                col *= w
        sums[:, j] = np.bincount(parent, weights=col, minlength=k)
    return _Level(state.rep_index[exemplar_pos], state.keys[exemplar_pos], weight, sums)


def _medoid_step(X: F32, labels: I64, k: int) -> I64:
    """Each cluster's member nearest its centroid (ascending chip indices).

    For squared Euclidean distance sum_i ||x_i - e||^2 = sum_i ||x_i - mu||^2 + n ||mu - e||^2,
    so this member is the cluster's best exemplar (its exact medoid).
    """
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    cent = np.empty((k, X.shape[1]), dtype=np.float32)
    for j in range(X.shape[1]):
        cent[:, j] = np.bincount(labels, weights=X[:, j], minlength=k) / counts
    dist = np.empty(len(X), dtype=np.float32)
    for start in range(0, len(X), _CHUNK):
        diff = X[start : start + _CHUNK] - cent[labels[start : start + _CHUNK]]
        dist[start : start + len(diff)] = np.einsum("ij,ij->i", diff, diff)
    order = np.lexsort((dist, labels))  # by cluster, then distance, then index (stable)
    firsts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    return np.sort(order[firsts]).astype(np.int64)


def nearest_exemplar(X: F32, exemplars: I64, threads: int = 1) -> tuple[I64, F32]:
    """Every chip's nearest exemplar (position in ``exemplars``) and squared distance.

    Chunked over rows so each chunk's (rows x K) block stays in cache; chunks run on
    ``threads`` threads (numpy releases the GIL in the products; the chunks do not depend on
    the thread count, so neither does the result). An exemplar is its own cluster's member
    even when another exemplar has the same descriptor.
    """
    E2 = X[exemplars] * np.float32(2.0)  # (K, D)
    sq_e = np.einsum("ij,ij->i", E2, E2) * np.float32(0.25)
    labels = np.empty(len(X), dtype=np.int64)
    sqdist = np.empty(len(X), dtype=np.float32)
    rows = max(256, (1 << 19) // max(1, len(exemplars)))  # ~2 MB of float32 per chunk
    starts = range(0, len(X), rows)

    def chunk(start: int) -> None:
        x = X[start : start + rows]
        g = x @ E2.T  # 2 x.e
        np.subtract(sq_e[None, :], g, out=g)  # ||e||^2 - 2 x.e = ||x - e||^2 - ||x||^2
        best = np.argmin(g, axis=1)
        labels[start : start + len(x)] = best
        d = g[np.arange(len(x)), best] + np.einsum("ij,ij->i", x, x)
        sqdist[start : start + len(x)] = np.maximum(d, 0.0)

    if threads <= 1 or len(starts) == 1:
        for start in starts:
            chunk(start)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(chunk, starts))
    labels[exemplars] = np.arange(len(exemplars))
    sqdist[exemplars] = 0.0
    return labels, sqdist
