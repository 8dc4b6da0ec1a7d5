"""Affinity propagation on one block of (possibly weighted) points, in float32.

The update loop is Frey & Dueck's responsibility/availability message passing with damping,
written with in-place float32 operations on four ``n x n`` matrices (similarity,
responsibility, availability and one scratch), so a block of 500 points needs 4 MB and stays in
cache. A block's points may stand for many chips (upper levels of the hierarchy, or collapsed
duplicates): point ``i`` carries a weight ``n_i`` (how many chips it stands for), a centroid
``mu_i`` (their mean descriptor) and a representative ``e_i`` (a real chip). The weighted
similarity (Zhang et al., "Data streaming with affinity propagation", ECML-PKDD 2008, with the
centroid correction measured in our notes) is::

    s(i, j) = -n_i * ||mu_i - e_j||^2            (i != j)
    s(i, i) = p - n_i * ||mu_i - e_i||^2

so that the objective of a block equals the flat objective over the chips it stands for. With
``n_i = 1`` and ``mu_i = e_i`` it is the textbook negative squared Euclidean similarity.

Everything here is pure: arrays in, arrays and small records out; :func:`solve_blocks` is the
function the pipeline ships to Dask workers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from terracorpus.curation.errors import ClusteringError
from terracorpus.curation.params import check_settings, setting

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]

NOTE_SINGLE = "single point"
NOTE_MEDOID = "preference below the block's similarity range: one cluster, weighted medoid"
NOTE_NOT_CONVERGED = "did not converge at any damping; used the exemplars of the last iteration"
NOTE_NO_EXEMPLAR = "no exemplar emerged at any damping; used the weighted medoid"


@dataclass(frozen=True)
class APParams:
    """Settings of hierarchical affinity propagation (the AP part of the config's ``dedup``).

    Every field is declared once, here, with its default, bounds and description; the config
    boundary validates the same declarations and names the bad key. Notes beyond the
    descriptions: ``preference`` is in squared standardised-distance units; each block's seed
    derives from (``seed``, level, block id). With ``n_clusters`` every level below the top
    summarises its blocks with a block-local preference (the ``level_quantile`` of the block's
    own weighted similarities: a block of 300 keeps roughly 10-30 exemplars, so the levels
    reach ``top_size`` in a few steps; they stop after a shorter convergence window,
    ``level_convergence_iter``, which cuts their iterations by about a quarter) and the top
    level's preference is searched (bisection on log |p|) until it gives about ``n_clusters``
    exemplars; that preference is the one reported. With a fixed preference the cluster count grows with N on overlapping data.
    """

    damping: float = setting(
        0.8, "message damping (0.7-0.9 behaves on descriptor data)", ge=0.5, lt=1.0
    )
    max_iter: int = setting(500, "iteration limit of one AP run", ge=10)
    convergence_iter: int = setting(
        30, "iterations the exemplar set must stay unchanged to have converged", ge=2
    )
    retry_dampings: tuple[float, ...] = setting(
        (0.9, 0.95), "dampings tried, in order, when a block does not converge"
    )
    preference: float | None = setting(
        None, "AP preference (minus a squared distance); default from the quantile", lt=0
    )
    preference_quantile: float = setting(
        0.5,
        "quantile of pairwise similarities used as preference (0.5: the median, "
        "scikit-learn's rule; lower: fewer clusters)",
        ge=0,
        le=1,
    )
    partition_size: int = setting(
        200, "chips per first-level AP block (cost ~ n^2 per iteration)", ge=50
    )
    partitioning: Literal["spatial", "random"] = setting(
        "spatial",
        "spatial: blocks by tile of the chip centre, split along the principal axis; "
        "random: balanced random blocks",
    )
    top_size: int = setting(
        1000,
        "an upper level with at most this many exemplars is solved as one block",
        ge=2,
    )
    collapse_radius: float = setting(
        0.0, "merge chips this close before AP, with weights (0: exact duplicates)", ge=0
    )
    refine_rounds: int = setting(
        1,
        "k-medoid polish rounds of final exemplars (each kept only if the net similarity "
        "improves; 0: off)",
        ge=0,
    )
    seed: int = setting(0, "seeds the blocks and the tie-breaks")
    n_clusters: int | None = setting(
        None,
        "target cluster count: the top level's preference is searched to give it, the levels "
        "below summarise with block-local preferences (instead of preference)",
        ge=1,
    )
    level_quantile: float = setting(
        0.5,
        "with n_clusters: quantile of a block's own similarities used as its preference below "
        "the top",
        ge=0,
        le=1,
    )
    level_convergence_iter: int = setting(
        15,
        "with n_clusters: convergence_iter of the summary levels below the top (their exemplars "
        "only summarise blocks for the level above)",
        ge=2,
    )
    assign_threads: int = setting(
        0,
        "threads of the final nearest-exemplar assignment (0: all cores; the result does not "
        "depend on it)",
        ge=0,
    )

    def __post_init__(self) -> None:
        check_settings(self, ClusteringError)
        if self.n_clusters is not None and self.preference is not None:
            raise ClusteringError(
                "give preference or n_clusters, not both (n_clusters searches the preference)"
            )
        if self.n_clusters is not None and self.n_clusters > self.top_size:
            raise ClusteringError(
                f"n_clusters {self.n_clusters} is larger than top_size {self.top_size}: the top "
                "level clusters at most top_size points; raise top_size or lower n_clusters"
            )


@dataclass(frozen=True)
class BlockInput:
    """One block of points to cluster; ``centroid``/``weight`` None means unweighted chips.

    ``local_quantile`` set: the block's preference is the larger of ``preference`` and that
    quantile of the block's own off-diagonal similarities (a summary level of the hierarchy).
    """

    level: int
    block_id: int
    rep: F32  # (n, D) representative descriptors e_i (real chips)
    preference: float
    centroid: F32 | None = None  # (n, D) mu_i
    weight: F32 | None = None  # (n,) n_i
    local_quantile: float | None = None


@dataclass(frozen=True)
class BlockOutput:
    """Result of one block: exemplars as local indices, each point's exemplar position."""

    level: int
    block_id: int
    exemplars: I64  # (K,) local indices, ascending
    labels: I64  # (n,) index into ``exemplars``
    iterations: int
    converged: bool
    damping: float
    note: str = ""
    dampings_tried: tuple[float, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    preference: float = float("nan")


def block_seed(seed: int, level: int, block_id: int) -> np.random.Generator:
    """The generator of one block: depends on the global seed and the block, not on workers."""
    return np.random.default_rng([seed, level, block_id])


class Workspace:
    """Reusable ``n x n`` float32 matrices for the blocks of one task, by name.

    A block of 300 points needs about ten 360 KB matrices (similarity, messages, scratch).
    Allocated afresh per block they are mapped and unmapped each time: Dask's nanny starts
    workers with ``MALLOC_TRIM_THRESHOLD_`` set, which keeps glibc from recycling them, and a
    first-level block then spent ~1,000 page faults (~25 % of its CPU time) on that. Here
    each name keeps one buffer, grown when a larger block comes; views share its memory, so a
    matrix is valid only until the next ``matrix`` call with the same name.
    """

    def __init__(self) -> None:
        self._flat: dict[str, F32] = {}

    def matrix(self, name: str, n: int, m: int | None = None) -> F32:
        """An uninitialised (n, m) float32 view (m defaults to n)."""
        m = n if m is None else m
        flat = self._flat.get(name)
        if flat is None or len(flat) < n * m:
            flat = self._flat[name] = np.empty(n * m, np.float32)
        return flat[: n * m].reshape(n, m)


def weighted_similarity(
    rep: F32,
    centroid: F32 | None,
    weight: F32 | None,
    preference: float,
    out: F32 | None = None,
) -> F32:
    """The (n, n) float32 similarity of a block, diagonal included (see module docstring).

    ``out``: an (n, n) float32 array to write it into (else a new one).
    """
    mu = rep if centroid is None else centroid
    sq_mu = np.einsum("ij,ij->i", mu, mu)
    sq_e = sq_mu if centroid is None else np.einsum("ij,ij->i", rep, rep)
    S: F32 = np.matmul(mu, rep.T, out=out)  # (n, n)
    S *= np.float32(2.0)
    S -= sq_mu[:, None]
    S -= sq_e[None, :]
    np.minimum(S, 0.0, out=S)  # rounding can make a squared distance slightly negative
    if centroid is None:
        np.fill_diagonal(S, 0.0)
    if weight is not None:
        S *= weight[:, None]
    diag = S.flat[:: len(S) + 1]
    S.flat[:: len(S) + 1] = diag + np.float32(preference)
    return S


def local_preference(S: F32, quantile: float, scratch: F32 | None = None) -> float:
    """The ``quantile`` of the off-diagonal entries of a block's similarity matrix.

    ``scratch``: an (n, n) float32 array it may overwrite (else a copy is made). The diagonal
    is set to +inf there, so the off-diagonal ranks are the first n^2 - n of the whole.
    """
    n = len(S)
    work = _off_diagonal(S, scratch)
    k = round(quantile * (n * n - n - 1))
    flat = work.reshape(-1)
    flat.partition(k)
    return float(flat[k])


def off_diagonal_min(S: F32, scratch: F32 | None = None) -> float:
    """The smallest off-diagonal entry of S (inf for a 1 x 1 matrix)."""
    return float(_off_diagonal(S, scratch).min())


def _off_diagonal(S: F32, scratch: F32 | None) -> F32:
    """A copy of S (into ``scratch`` when given) with +inf on the diagonal."""
    if scratch is None:
        work = S.copy()
    else:
        np.copyto(scratch, S)
        work = scratch
    work.flat[:: len(S) + 1] = np.inf
    return work


def affinity_propagation(
    S: F32,
    *,
    damping: float,
    max_iter: int,
    convergence_iter: int,
    work: Workspace | None = None,
) -> tuple[I64, int, bool]:
    """Run the AP message loop on a similarity matrix (diagonal = preferences).

    Returns the exemplar indices (ascending), the iterations run, and whether the exemplar
    set stayed unchanged for ``convergence_iter`` iterations with at least one exemplar.
    ``S`` is not modified; ``work`` holds the message matrices (its ``"R"``, ``"A"``, ``"T"``
    and ``"S_d1"`` buffers are overwritten).
    """
    n = len(S)
    work = work or Workspace()
    R, A, T, S_d1 = (work.matrix(name, n) for name in ("R", "A", "T", "S_d1"))
    R.fill(0.0)
    A.fill(0.0)
    # numpy's maximum/minimum against a scalar take a slow loop (~4x an array operand here);
    # a zero row broadcast over the rows is as fast as a zero matrix and stays in L1
    Z = np.zeros(n, dtype=S.dtype)
    # writable views of the diagonals (a strided slice: no index arrays per iteration)
    R_diag, A_diag, T_diag = (M.reshape(-1)[:: n + 1] for M in (R, A, T))
    rows = np.arange(n)
    d = np.float32(damping)
    d1 = np.float32(1.0 - damping)
    np.multiply(S, d1, out=S_d1)  # damping folded into the new responsibilities: one pass fewer
    last = b""
    stable = 0
    E = np.zeros(n, dtype=bool)
    for it in range(1, max_iter + 1):
        # responsibilities r(i,k) = s(i,k) - max_{k' != k} (a(i,k') + s(i,k'))
        np.add(A, S, out=T)
        best = np.argmax(T, axis=1)
        first = T[rows, best]
        T[rows, best] = -np.inf
        second = T.max(axis=1)
        np.subtract(S_d1, (first * d1)[:, None], out=T)
        T[rows, best] = (S[rows, best] - second) * d1
        R *= d
        R += T
        # availabilities a(i,k) = min(0, r(k,k) + sum_{i' not in {i,k}} max(0, r(i',k)))
        np.maximum(R, Z, out=T)
        T_diag[:] = R_diag
        colsum = T.sum(axis=0)
        np.subtract(colsum, T, out=T)
        a_diag = T_diag.copy()
        np.minimum(T, Z, out=T)
        T_diag[:] = a_diag
        T *= d1
        A *= d
        A += T
        E = (A_diag + R_diag) > 0
        key = E.tobytes()
        stable = stable + 1 if key == last else 0
        last = key
        if stable >= convergence_iter and E.any():
            return np.flatnonzero(E).astype(np.int64), it, True
    return np.flatnonzero(E).astype(np.int64), max_iter, False


def assign_and_refine(S: F32, exemplars: I64, scratch: F32 | None = None) -> tuple[I64, I64]:
    """Assign points to exemplars, move each exemplar to its cluster's best member, reassign.

    The refinement is scikit-learn's: within each cluster the member with the largest summed
    similarity from the members becomes the exemplar. Returns (exemplars ascending, labels).
    ``scratch``: an (n, n) float32 array it may overwrite (else one is allocated).
    """
    n, k = len(S), len(exemplars)
    labels = np.argmax(S[:, exemplars], axis=1)
    labels[exemplars] = np.arange(k)
    # sums[c, j] = sum of s(i, j) over the members i of cluster c: rows grouped by cluster
    by_cluster = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[by_cluster], np.arange(k))
    grouped = np.take(S, by_cluster, axis=0, out=scratch)
    sums = np.add.reduceat(grouped, starts, axis=0)  # (K, n)
    within = sums[labels, np.arange(n)]  # each point's sum from its own cluster
    order = np.lexsort((-within, labels))  # by cluster, best first (ties: lowest index)
    firsts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    refined = np.unique(order[firsts])
    labels = np.argmax(S[:, refined], axis=1)
    labels[refined] = np.arange(len(refined))
    return refined.astype(np.int64), labels.astype(np.int64)


def weighted_medoid(S: F32) -> int:
    """The point whose column of similarities sums highest: the best single exemplar."""
    return int(np.argmax(S.sum(axis=0, dtype=np.float64)))


def _collapse(rep: F32, radius: float) -> tuple[I64, I64]:
    """Group points within ``radius`` of an earlier point (0: exact duplicates).

    Returns (first member of each group ascending, group index of every point).
    """
    if radius <= 0.0:
        rows = np.ascontiguousarray(rep).view(
            np.dtype((np.void, rep.dtype.itemsize * rep.shape[1]))
        )
        _, first, inverse = np.unique(rows.ravel(), return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # renumber groups by first appearance
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        return np.sort(first).astype(np.int64), rank[inverse.ravel()].astype(np.int64)
    n = len(rep)
    sq = np.einsum("ij,ij->i", rep, rep)
    d2 = sq[:, None] - 2.0 * (rep @ rep.T) + sq[None, :]
    close = d2 <= np.float32(radius * radius)
    group = np.full(n, -1, dtype=np.int64)
    heads: list[int] = []
    for i in range(n):
        if group[i] >= 0:
            continue
        grab = close[i] & (group < 0)
        group[grab] = len(heads)
        heads.append(i)
    return np.asarray(heads, dtype=np.int64), group


def _merge(block: BlockInput, heads: I64, group: I64) -> tuple[F32, F32 | None, F32 | None]:
    """Representatives, centroids and weights of the collapsed points of a block."""
    if len(heads) == len(block.rep):
        return block.rep, block.centroid, block.weight
    n_groups = len(heads)
    w = np.ones(len(group), np.float32) if block.weight is None else block.weight
    mu = block.rep if block.centroid is None else block.centroid
    weight = np.bincount(group, weights=w, minlength=n_groups).astype(np.float32)
    sums = np.zeros((n_groups, mu.shape[1]), np.float64)
    np.add.at(sums, group, mu.astype(np.float64) * w[:, None])
    centroid = (sums / weight[:, None]).astype(np.float32)
    return np.ascontiguousarray(block.rep[heads]), centroid, weight


def _add_noise(S: F32, rng: np.random.Generator, work: Workspace | None = None) -> None:
    """Tiny seeded noise (relative 1e-6) so ties between equal similarities are broken.

    ``work``: its ``"R"`` and ``"A"`` buffers serve as scratch (the AP loop resets them).
    """
    n = len(S)
    work = work or Workspace()
    scale, u = work.matrix("R", n), work.matrix("A", n)
    np.abs(S, out=scale)
    scale *= np.float32(1e-6)
    scale += np.float32(1e-12)
    rng.random(out=u, dtype=np.float32)
    u -= np.float32(0.5)
    scale *= u
    S += scale


def solve_block(block: BlockInput, params: APParams, work: Workspace | None = None) -> BlockOutput:
    """Affinity propagation on one block, with the guards of the notes.

    Duplicates are collapsed first (weights carried); a block whose preference lies below its
    similarity range is one cluster around its weighted medoid; a block that does not
    converge is retried with the higher ``params.retry_dampings`` and, if it still does not,
    keeps the last iteration's exemplars with ``converged=False`` and a note.
    """
    n = len(block.rep)
    heads, group = _collapse(block.rep, params.collapse_radius)
    out = _solve_collapsed(block, params, heads, group, work or Workspace())
    assert len(out.labels) == n
    return out


def _solve_collapsed(
    block: BlockInput, params: APParams, heads: I64, group: I64, work: Workspace
) -> BlockOutput:
    m = len(heads)
    base = (block.level, block.block_id)
    if m == 1:
        zeros = np.zeros(len(group), np.int64)
        return BlockOutput(
            *base,
            exemplars=heads,
            labels=zeros,
            iterations=0,
            converged=True,
            damping=params.damping,
            note=NOTE_SINGLE,
        )
    rep, centroid, weight = _merge(block, heads, group)
    S = weighted_similarity(rep, centroid, weight, 0.0, out=work.matrix("S", m))
    p = block.preference
    if block.local_quantile is not None:
        p = max(p, local_preference(S, block.local_quantile, work.matrix("T", m)))
    S.flat[:: m + 1] += np.float32(p)
    if S.diagonal().max() < off_diagonal_min(S, work.matrix("T", m)):
        k = weighted_medoid(S)
        return _expand(
            base,
            heads,
            group,
            np.array([k]),
            np.zeros(m, np.int64),
            0,
            True,
            params.damping,
            NOTE_MEDOID,
            (),
            p,
        )
    _add_noise(S, block_seed(params.seed, block.level, block.block_id), work)
    tried: list[float] = []
    exemplars = np.zeros(0, np.int64)
    iterations, converged, damping = 0, False, params.damping
    summary = block.local_quantile is not None
    stable_for = params.level_convergence_iter if summary else params.convergence_iter
    for damping in _dampings(params):
        tried.append(damping)
        exemplars, iterations, converged = affinity_propagation(
            S, damping=damping, max_iter=params.max_iter, convergence_iter=stable_for, work=work
        )
        if converged:
            break
    note = "" if converged else NOTE_NOT_CONVERGED
    if len(exemplars) == 0:
        exemplars, note = np.array([weighted_medoid(S)], np.int64), NOTE_NO_EXEMPLAR
    exemplars, labels = assign_and_refine(S, exemplars, work.matrix("T", m))
    return _expand(
        base, heads, group, exemplars, labels, iterations, converged, damping, note, tuple(tried), p
    )


def _dampings(params: APParams) -> list[float]:
    higher = sorted(d for d in params.retry_dampings if d > params.damping)
    return [params.damping, *higher]


def _expand(
    base: tuple[int, int],
    heads: I64,
    group: I64,
    exemplars: I64,
    labels: I64,
    iterations: int,
    converged: bool,
    damping: float,
    note: str,
    tried: tuple[float, ...],
    preference: float,
) -> BlockOutput:
    """Map a result on collapsed points back to the block's original points."""
    return BlockOutput(
        *base,
        exemplars=heads[exemplars],
        labels=labels[group],
        iterations=iterations,
        converged=converged,
        damping=damping,
        note=note,
        dampings_tried=tried,
        preference=preference,
    )


def solve_blocks(blocks: list[BlockInput], params: APParams) -> list[BlockOutput]:
    """Solve several blocks in turn with BLAS pinned to one thread (one Dask task).

    One thread keeps results independent of the machine's thread count, and the update loop
    is memory-bound anyway: parallelism comes from running blocks side by side.
    """
    with threadpool_limits(limits=1):
        out = []
        work = Workspace()  # one set of buffers for all blocks of the task
        for b in blocks:
            t0 = time.perf_counter()
            result = solve_block(b, params, work)
            out.append(replace(result, seconds=time.perf_counter() - t0))
        return out


SEARCH_RUNS = 16  # AP runs at most when searching the preference of a cluster-count target
SEARCH_STEP = 1.5  # bracketing step in ln |p| (a factor of ~4.5)


def solve_for_clusters(block: BlockInput, params: APParams, target: int) -> BlockOutput:
    """AP on one block, its preference searched so that it gives about ``target`` exemplars.

    The number of exemplars falls as the preference falls, so ``ln |p|`` is bracketed from the
    block's median similarity in steps of ``SEARCH_STEP`` and then bisected, at most
    ``SEARCH_RUNS`` AP runs, stopping within 2 % of the target (at least 1). The run closest
    to the target is returned (its ``preference`` set), the most converged one on ties.
    """
    heads, group = _collapse(block.rep, params.collapse_radius)
    rep, centroid, weight = _merge(block, heads, group)
    work = Workspace()
    m = len(heads)
    start = (
        local_preference(
            weighted_similarity(rep, centroid, weight, 0.0, out=work.matrix("S", m)),
            0.5,
            work.matrix("T", m),
        )
        if m > 1
        else -1.0
    )
    t = math.log(max(-start, 1e-6))
    tol = max(1, round(0.02 * target))
    fewer_at: float | None = None  # ln |p| known to give fewer than the target
    more_at: float | None = None  # ln |p| known to give more
    best: BlockOutput | None = None
    for _ in range(SEARCH_RUNS):
        trial = replace(block, preference=-math.exp(t), local_quantile=None)
        out = _solve_collapsed(trial, params, heads, group, work)
        if best is None or _closer(out, best, target):
            best = out
        k = len(out.exemplars)
        if abs(k - target) <= tol or (len(heads) <= target and k == len(heads)):
            break
        if k > target:
            more_at = t
        else:
            fewer_at = t
        if fewer_at is None:
            t += SEARCH_STEP
        elif more_at is None:
            t -= SEARCH_STEP
        else:
            t = (more_at + fewer_at) / 2
    assert best is not None
    return best


def _closer(a: BlockOutput, b: BlockOutput, target: int) -> bool:
    da, db = abs(len(a.exemplars) - target), abs(len(b.exemplars) - target)
    return da < db or (da == db and a.converged and not b.converged)


def sample_preference(X: F32, quantile: float, seed: int, n_pairs: int = 100_000) -> float:
    """The ``quantile`` of -||x_i - x_j||^2 over random pairs i != j (all pairs if few).

    With quantile 0.5 this is scikit-learn's median rule, estimated from a sample so that it
    costs O(n_pairs) whatever N is. Pairs of identical descriptors are left out (exact
    duplicates would otherwise drag the rule to 0); when every pair is identical it returns
    -1.0, and the identical points form one cluster whatever p is.
    """
    n = len(X)
    if n < 2:
        return -1.0
    rng = np.random.default_rng([seed, 7919])
    if n * (n - 1) // 2 <= n_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        i = rng.integers(0, n, n_pairs)
        j = (i + rng.integers(1, n, n_pairs)) % n  # j != i
    diff = X[i] - X[j]
    sims = -np.einsum("ij,ij->i", diff, diff).astype(np.float64)
    sims = sims[sims < 0.0]
    return float(np.quantile(sims, quantile)) if len(sims) else -1.0
