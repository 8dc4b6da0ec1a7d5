"""Affinity propagation: the float32 core, its guards, and the hierarchy against flat AP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sklearn.cluster import AffinityPropagation
from sklearn.metrics import adjusted_rand_score

from terracorpus.curation.ap import (
    NOTE_MEDOID,
    NOTE_NOT_CONVERGED,
    NOTE_SINGLE,
    APParams,
    BlockInput,
    Workspace,
    affinity_propagation,
    assign_and_refine,
    local_preference,
    sample_preference,
    solve_block,
    solve_blocks,
    weighted_similarity,
)
from terracorpus.curation.errors import ClusteringError
from terracorpus.curation.hierarchical import (
    hierarchical_ap,
    make_blocks,
    nearest_exemplar,
    prepare_features,
)


def mixture(
    n: int, k: int = 8, dim: int = 12, seed: int = 0, dup: float = 0.2, spread: float = 4.0
) -> np.ndarray:
    """Standardised Gaussian mixture with a share ``dup`` of near-copies."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, (k, dim))
    n0 = n - int(n * dup)
    x = centres[rng.integers(0, k, n0)] + rng.normal(0, 1, (n0, dim))
    copies = x[rng.integers(0, n0, n - n0)] + rng.normal(0, 0.01, (n - n0, dim))
    X = np.vstack([x, copies])
    return ((X - X.mean(0)) / X.std(0)).astype(np.float32)


def flat_ap(X: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    ap = AffinityPropagation(
        preference=p, damping=0.9, max_iter=500, convergence_iter=30, random_state=0
    ).fit(X)
    return ap.labels_, ap.cluster_centers_indices_


def net_similarity(X: np.ndarray, labels: np.ndarray, exemplars: np.ndarray, p: float) -> float:
    d = ((X - X[exemplars][labels]) ** 2).sum(axis=1)
    return float(-d.sum() + len(exemplars) * p)


def test_similarity_is_negative_squared_distance_with_preference_on_diagonal() -> None:
    X = np.array([[0, 0], [3, 4], [6, 8]], np.float32)
    S = weighted_similarity(X, None, None, -7.0)
    assert S[0, 1] == pytest.approx(-25.0) and S[0, 2] == pytest.approx(-100.0)
    assert np.allclose(np.diag(S), -7.0)


def test_weighted_similarity_uses_centroids_and_counts() -> None:
    rep = np.array([[0, 0], [10, 0]], np.float32)
    centroid = np.array([[1, 0], [10, 0]], np.float32)
    weight = np.array([4, 1], np.float32)
    S = weighted_similarity(rep, centroid, weight, -5.0)
    # s(0,1) = -n_0 ||mu_0 - e_1||^2 ; s(0,0) = p - n_0 ||mu_0 - e_0||^2
    assert S[0, 1] == pytest.approx(-4 * 81.0)
    assert S[0, 0] == pytest.approx(-5.0 - 4 * 1.0)
    assert S[1, 0] == pytest.approx(-100.0)


def test_core_loop_matches_scikit_learn() -> None:
    X = mixture(400, k=5, seed=1)
    p = sample_preference(X, 0.5, 0)
    S = weighted_similarity(X, None, None, p)
    ex, iters, converged = affinity_propagation(S, damping=0.9, max_iter=500, convergence_iter=30)
    ref_labels, ref_ex = flat_ap(X, p)
    assert converged and iters < 500
    ex, labels = assign_and_refine(S, ex)  # scikit-learn refines its exemplars the same way
    assert np.array_equal(ex, np.sort(ref_ex))
    assert adjusted_rand_score(ref_labels, labels) > 0.99


def test_refinement_moves_each_exemplar_to_its_clusters_best_member() -> None:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(120, 3)).astype(np.float32)
    S = weighted_similarity(X, None, None, -4.0)
    start = np.array([3, 40, 41, 90], np.int64)
    ex, labels = assign_and_refine(S, start)
    first = np.argmax(S[:, start], axis=1)
    first[start] = np.arange(len(start))
    best = set()
    for k in range(len(start)):  # brute force: the member with the largest column sum
        members = np.flatnonzero(first == k)
        best.add(int(members[np.argmax(S[np.ix_(members, members)].sum(axis=0))]))
    assert ex.tolist() == sorted(best)
    assert (labels[ex] == np.arange(len(ex))).all()
    assert (labels == np.argmax(S[:, ex], axis=1)).sum() >= len(X) - len(ex)


def test_single_point_and_identical_points_are_one_cluster() -> None:
    params = APParams()
    one = solve_block(BlockInput(1, 0, np.ones((1, 3), np.float32), -1.0), params)
    assert one.note == NOTE_SINGLE and list(one.exemplars) == [0]
    same = solve_block(BlockInput(1, 0, np.ones((50, 3), np.float32), -1.0), params)
    assert list(same.exemplars) == [0] and (same.labels == 0).all()


def test_blocks_sharing_a_workspace_match_blocks_solved_alone() -> None:
    # one task reuses its buffers across blocks of different sizes (large, small, large again,
    # weighted, summary): every result must equal a fresh solve of that block
    big, small = mixture(240, k=5, seed=1), mixture(70, k=3, seed=2)
    w = np.linspace(1.0, 3.0, 240).astype(np.float32)
    blocks = [
        BlockInput(1, 0, big, sample_preference(big, 0.5, 0)),
        BlockInput(1, 1, small, sample_preference(small, 0.5, 0)),
        BlockInput(1, 2, big, -np.inf, local_quantile=0.5),
        BlockInput(2, 3, big, sample_preference(big, 0.5, 0), centroid=big * 0.9, weight=w),
    ]
    params = APParams()
    shared = solve_blocks(blocks, params)
    assert any(o.iterations > 0 for o in shared)
    for b, out in zip(blocks, shared, strict=True):
        alone = solve_block(b, params, Workspace())
        assert np.array_equal(out.exemplars, alone.exemplars)
        assert np.array_equal(out.labels, alone.labels)
        assert out.iterations == alone.iterations


def test_preference_below_similarity_range_gives_the_medoid() -> None:
    X = np.array([[0.0], [1.0], [2.0], [10.0]], np.float32)
    out = solve_block(BlockInput(1, 0, X, -1000.0), APParams())
    assert out.note == NOTE_MEDOID
    assert list(out.exemplars) == [2]  # sum of squared distances 4+1+0+64 is the smallest
    assert (out.labels == 0).all()


def test_non_convergence_is_retried_then_reported() -> None:
    X = mixture(120, k=4, seed=3)
    p = sample_preference(X, 0.5, 0)
    params = APParams(max_iter=80, convergence_iter=200)  # cannot converge in 80 iterations
    out = solve_block(BlockInput(1, 0, X, p), params)
    assert not out.converged
    assert out.note == NOTE_NOT_CONVERGED
    assert out.dampings_tried == (0.8, 0.9, 0.95)
    assert len(out.exemplars) >= 1 and out.labels.max() < len(out.exemplars)


def test_collapsed_duplicates_solve_the_same_problem_as_flat_ap() -> None:
    X = mixture(200, k=4, seed=5, dup=0.0)
    doubled = np.vstack([X, X[:60]])  # exact copies are merged with weight 2 before AP
    p = sample_preference(X, 0.5, 0)
    out = solve_block(BlockInput(1, 0, doubled, p), APParams(damping=0.9))
    ref_labels, ref_ex = flat_ap(doubled, p)
    assert len(out.exemplars) == len(ref_ex)
    assert adjusted_rand_score(ref_labels, out.labels) > 0.95
    assert (out.labels[200:] == out.labels[:60]).all()


def test_blocks_are_coherent_balanced_and_cover_every_point() -> None:
    X = mixture(1000, seed=2)
    keys = np.repeat([3, 1, 2], [700, 150, 150])
    blocks = make_blocks(keys, X, 200, "spatial", 0, 1)
    assert sorted(np.concatenate(blocks).tolist()) == list(range(1000))
    assert max(len(b) for b in blocks) <= 200
    for b in blocks:  # small keys are packed, never split; a large key is cut into parts
        assert len(set(keys[b].tolist())) == 1 or set(keys[b].tolist()) == {1, 2}
    again = make_blocks(keys, X, 200, "spatial", 0, 1)
    assert all(np.array_equal(x, y) for x, y in zip(blocks, again, strict=True))
    random_blocks = make_blocks(keys, X, 200, "random", 0, 1)
    assert [len(b) for b in random_blocks] == [200] * 5


def test_hierarchy_agrees_with_flat_ap() -> None:
    # well-separated clusters: where flat AP itself splits planted clusters arbitrarily, the
    # two find different (equally good) splits; see docs/curation.md
    X = mixture(1500, k=12, dim=16, seed=4, spread=6.0)
    params = APParams(partition_size=200, top_size=150)
    res = hierarchical_ap(X, np.zeros(len(X), np.int64), params)
    assert len(res.levels) >= 2 and res.levels[0].blocks >= 8
    ref_labels, ref_ex = flat_ap(X, res.preference)
    assert adjusted_rand_score(ref_labels, res.labels) >= 0.9
    flat = net_similarity(X, ref_labels, ref_ex, res.preference)
    assert res.net_similarity() >= flat * 1.02  # within 2 % (both negative)
    assert (res.labels[res.exemplars] == np.arange(res.n_clusters)).all()


def test_result_does_not_depend_on_how_tasks_are_run() -> None:
    X = mixture(1200, seed=6)
    keys = np.arange(len(X)) // 300
    params = APParams(partition_size=150, top_size=100, seed=3)

    def threaded(fn, tasks):  # type: ignore[no-untyped-def]
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(fn, tasks))

    a = hierarchical_ap(X, keys, params)
    b = hierarchical_ap(X, keys, params, map_fn=threaded)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.exemplars, b.exemplars)


def test_bad_input_is_refused_with_a_message() -> None:
    X = mixture(50)
    X[3, 1] = np.nan
    with pytest.raises(ClusteringError, match="NaN or inf"):
        hierarchical_ap(X, np.zeros(50), APParams())
    with pytest.raises(ClusteringError, match=r"preference must be < 0, got 1.0"):
        APParams(preference=1.0)  # the field's bound, checked when the record is made
    with pytest.raises(ClusteringError, match=r"damping must be in \[0.5, 1\), got 1.2"):
        APParams(damping=1.2)
    with pytest.raises(ClusteringError, match="partitioning must be one of 'spatial', 'random'"):
        APParams(partitioning="tiles")  # type: ignore[arg-type]


def test_features_are_standardised_and_weighted_by_part() -> None:
    rng = np.random.default_rng(0)
    D = rng.normal(5, 3, (100, 4))
    D[:, 3] = 2.0  # constant column
    names = ["spec.a", "spec.b", "meta.c", "meta.d"]
    X = prepare_features(D, names, {"meta": 4.0})
    assert np.allclose(X[:, 0].std(), 1.0, atol=1e-5) and np.allclose(X[:, 2].std(), 2.0, atol=1e-5)
    assert (X[:, 3] == 0).all()
    with pytest.raises(ClusteringError, match="unknown part"):
        prepare_features(D, names, {"tex": 1.0})


def overlapping(n: int, k: int = 40, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Overlapping Gaussian clusters (radius larger than the distance between centres)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.8, (k, dim))
    X = centres[rng.integers(0, k, n)] + rng.normal(0, 1, (n, dim))
    return ((X - X.mean(0)) / X.std(0)).astype(np.float32)


def test_fixed_preference_stalls_where_a_cluster_count_target_reaches_the_top() -> None:
    X = overlapping(3000)
    keys = np.zeros(len(X), np.int64)
    fixed = hierarchical_ap(X, keys, APParams(partition_size=100, top_size=60))
    assert fixed.n_clusters > 60 and "stopped" in fixed.levels[-1].note
    res = hierarchical_ap(X, keys, APParams(partition_size=100, top_size=60, n_clusters=20))
    assert res.levels[-1].points <= 60 and not res.levels[-1].note
    assert abs(res.n_clusters - 20) <= 1
    assert res.preference < 0 and np.isfinite(res.preference)
    assert res.net_similarity() == pytest.approx(
        net_similarity(X, res.labels, res.exemplars, res.preference), rel=1e-4
    )


def test_cluster_count_target_agrees_with_flat_ap_at_the_preference_it_found() -> None:
    X = mixture(1500, k=12, dim=16, seed=4, spread=6.0)
    res = hierarchical_ap(
        X, np.zeros(len(X), np.int64), APParams(partition_size=200, top_size=150, n_clusters=12)
    )
    ref_labels, ref_ex = flat_ap(X, res.preference)
    assert adjusted_rand_score(ref_labels, res.labels) >= 0.9
    assert res.net_similarity() >= net_similarity(X, ref_labels, ref_ex, res.preference) * 1.02


def test_block_local_preference_is_a_quantile_of_the_block() -> None:
    X = mixture(200, seed=2)
    S = weighted_similarity(X, None, None, 0.0)
    p = local_preference(S, 0.5)
    off = S[~np.eye(len(S), dtype=bool)]
    assert np.quantile(off, 0.49) <= p <= np.quantile(off, 0.51)
    out = solve_block(BlockInput(1, 0, X, -np.inf, local_quantile=0.5), APParams())
    assert out.preference == pytest.approx(p) and 1 < len(out.exemplars) < len(X)
    floor = solve_block(BlockInput(1, 0, X, -1.0, local_quantile=0.5), APParams())
    assert floor.preference == -1.0  # the larger of the two


def test_summary_levels_stop_after_their_own_convergence_window() -> None:
    X = overlapping(300, seed=3)
    summary = BlockInput(1, 0, X, -np.inf, local_quantile=0.5)
    short = solve_block(summary, APParams(level_convergence_iter=5, convergence_iter=60))
    long = solve_block(summary, APParams(level_convergence_iter=60, convergence_iter=5))
    assert short.converged and long.converged
    assert long.iterations - short.iterations >= 40  # the window, not the answer, differs
    # a block with one global preference (the top, or no cluster target) keeps convergence_iter
    top = BlockInput(1, 0, X, short.preference)
    assert solve_block(top, APParams(level_convergence_iter=5, convergence_iter=60)).iterations == (
        solve_block(top, APParams(level_convergence_iter=60, convergence_iter=60)).iterations
    )


def test_threaded_assignment_equals_serial() -> None:
    X = overlapping(70_000, dim=8)
    ex = np.arange(0, len(X), 97, dtype=np.int64)
    a = nearest_exemplar(X, ex, threads=1)
    b = nearest_exemplar(X, ex, threads=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    d = ((X[:500, None, :] - X[ex][None]) ** 2).sum(-1)
    assert np.array_equal(a[0][:500], np.argmin(d, axis=1)) or np.allclose(
        a[1][:500], d.min(axis=1), rtol=1e-4, atol=1e-4
    )


def test_cluster_target_settings_are_checked() -> None:
    with pytest.raises(ClusteringError, match="not both"):
        APParams(preference=-1.0, n_clusters=5)
    with pytest.raises(ClusteringError, match="n_clusters"):
        APParams(n_clusters=0)
    with pytest.raises(ClusteringError, match="n_clusters 70 is larger than top_size 60"):
        APParams(n_clusters=70, top_size=60)


def test_a_summary_level_keeps_at_least_the_cluster_target() -> None:
    # blocks of 100 summarise 3000 -> ~330 -> ~35 points: fewer than 40, so the second level
    # is summarised again with a higher block-local quantile instead of capping K at ~35
    X = overlapping(3000)
    params = APParams(partition_size=100, top_size=60, n_clusters=40)
    res = hierarchical_ap(X, np.zeros(len(X), np.int64), params)
    redone = [lv for lv in res.levels if "summarised again" in lv.note]
    assert redone and all(lv.exemplars >= 40 for lv in redone)
    assert abs(res.n_clusters - 40) <= 1 and res.levels[-1].points <= 60
