"""Benchmark of the dedup stage: hierarchical AP against flat AP and the cheap alternatives.

Run: ``.venv/bin/python benchmarks/bench_dedup.py [--quick] [--demo-run DIR --world DIR]``

Parts, all measured in this one run (ratios side by side, so machine load cancels out):

* scale: N = 100,000 and 1,000,000 descriptors of 32 dimensions (a 50-cluster Gaussian
  mixture with 20 % planted near-copies) on a 2-worker LocalCluster: wall time and peak memory
  of the whole process tree (this process and every child, RSS summed, sampled in a thread);
* quality at N = 10,000: against scikit-learn's flat AP with the same preference (ARI, net
  similarity, time), recall of planted near-duplicates removed by the selection, planted
  clusters lost; MiniBatchKMeans and radius-threshold dedup beside it for context;
* curation value on a demo run (classes kept, class entropy, low-information chips and residual
  duplicates, against 1,000 random selections of the same size) when ``--demo-run`` and
  ``--world`` are given.

``--quick`` runs quality at 3,000 and scale at 100,000 only.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
from scipy.sparse.csgraph import connected_components
from sklearn.cluster import AffinityPropagation, KMeans, MiniBatchKMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import NearestNeighbors

from terracorpus.curation.ap import APParams, sample_preference
from terracorpus.curation.chips import chip_table
from terracorpus.curation.hierarchical import APResult, hierarchical_ap
from terracorpus.curation.metrics import class_entropy, residual_duplicate_share
from terracorpus.curation.selection import SelectionPolicy, select
from terracorpus.pipelines.cluster import dask_client
from terracorpus.pipelines.config import DaskConfig
from terracorpus.pipelines.stages.dedup import dask_map

K_PLANTED = 50
DIM = 32
DUP_SHARE = 0.2
COPY_NOISE = 0.02  # per dimension, before standardising (~0.04 apart after)
RADIUS = 0.5  # the default duplicate_radius
PROTOTYPE = {  # the notes' first prototype (2-level AP, blocks of 2,000), 2 cores
    10_000: (9.0, 0.26),
    100_000: (45.0, 1.0),
    1_000_000: (330.0, 1.3),
}
FLAT_10K_IDLE_S = 45.0  # the notes: scikit-learn flat AP at 10,000 on an idle 2-core machine
TARGETS = {"ari": 0.9, "net": 0.02, "recall": 0.99, "speedup": 5.0, "time_1m": 180.0, "mem_1m": 2.0}
K_OVERLAP = 200  # planted clusters of the overlapping case
OVERLAP_SPREAD = 0.8  # centre spread per dimension, unit noise: k-means-200 recovers ARI ~0.6
TILE_CHIPS = 1000  # chips per spatial tile of the partition-key case
TILE_CLUSTERS = 8  # planted clusters present in one tile
TIME_1M_OVERLAP = 60.0
CASES = ("separated", "overlapping", "tiles")


# -- data and measurement ------------------------------------------------------------------
@dataclass
class Planted:
    X: np.ndarray  # (N, D) float32, standardised
    truth: np.ndarray  # (N,) planted cluster
    source: np.ndarray  # (N,) the chip each row copies (itself for originals)


def planted_mixture(n: int, seed: int = 0) -> Planted:
    """A 50-cluster mixture in 32-D with 20 % near-copies, standardised, built in float32."""
    rng = np.random.default_rng(seed)
    centres = (rng.normal(0, 1, (K_PLANTED, DIM)) * 4).astype(np.float32)
    n0 = n - int(n * DUP_SHARE)
    truth = rng.integers(0, K_PLANTED, n0)
    X = np.empty((n, DIM), np.float32)
    for s in range(0, n0, 1 << 18):
        e = min(n0, s + (1 << 18))
        X[s:e] = centres[truth[s:e]] + rng.standard_normal((e - s, DIM), dtype=np.float32)
    src = rng.integers(0, n0, n - n0)
    X[n0:] = X[src] + COPY_NOISE * rng.standard_normal((n - n0, DIM), dtype=np.float32)
    X -= X.mean(axis=0)
    X /= X.std(axis=0)
    return Planted(X, np.concatenate([truth, truth[src]]), np.concatenate([np.arange(n0), src]))


def overlapping_mixture(n: int, seed: int = 0, tiles: bool = False) -> tuple[Planted, np.ndarray]:
    """``K_OVERLAP`` overlapping Gaussian clusters in 32-D, uneven sizes, no copies.

    Centres are N(0, ``OVERLAP_SPREAD``^2) per dimension with unit noise: a cluster's radius
    (~5.7) exceeds the typical distance between centres (~4.5), so clusters overlap and a
    fixed AP preference keeps splitting them. ``tiles``: chips sit in spatial tiles of
    ``TILE_CHIPS`` chips, each holding ``TILE_CLUSTERS`` of the clusters (regions hold a few
    land covers); the tile id is returned as partition key (else zeros).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, OVERLAP_SPREAD, (K_OVERLAP, DIM)).astype(np.float32)
    share = rng.dirichlet(np.full(K_OVERLAP, 2.0))
    if tiles:
        n_tiles = max(1, n // TILE_CHIPS)
        keys = np.sort(rng.integers(0, n_tiles, n))
        present = np.stack([rng.choice(K_OVERLAP, TILE_CLUSTERS, replace=False, p=share)
                            for _ in range(n_tiles)])  # fmt: skip
        truth = present[keys, rng.integers(0, TILE_CLUSTERS, n)]
    else:
        keys = np.zeros(n, np.int64)
        truth = rng.choice(K_OVERLAP, n, p=share)
    X = np.empty((n, DIM), np.float32)
    for s in range(0, n, 1 << 18):
        e = min(n, s + (1 << 18))
        X[s:e] = centres[truth[s:e]] + rng.standard_normal((e - s, DIM), dtype=np.float32)
    X -= X.mean(axis=0)
    X /= X.std(axis=0)
    return Planted(X, truth, np.arange(n)), keys


def case_data(case: str, n: int, seed: int) -> tuple[Planted, np.ndarray, APParams]:
    """Data, partition keys and AP settings of one benchmark case."""
    if case == "separated":
        return planted_mixture(n, seed=seed), np.zeros(n, np.int64), ap_params()
    data, keys = overlapping_mixture(n, seed=seed, tiles=case == "tiles")
    return data, keys, ap_params(n_clusters=K_OVERLAP)


class TreeMemory:
    """Peak RSS of this process plus all its children (recursively), sampled in a thread;
    also the CPU seconds the tree used meanwhile (load-independent, unlike wall time)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _tree() -> list[psutil.Process]:
        me = psutil.Process()
        return [me, *me.children(recursive=True)]

    def _sample(self) -> int:
        total = 0
        for p in self._tree():
            with suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def _cpu(self) -> float:
        total = 0.0
        for p in self._tree():
            with suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self.peak = self._sample()
        self._cpu0 = self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())
        self.cpu_s = self._cpu() - self._cpu0

    @property
    def gb(self) -> float:
        return self.peak / 2**30


@contextmanager
def timer() -> Iterator[list[float]]:
    out: list[float] = []
    t0 = time.perf_counter()
    yield out
    out.append(time.perf_counter() - t0)


# -- metrics -------------------------------------------------------------------------------
def net_similarity(X: np.ndarray, labels: np.ndarray, exemplars: np.ndarray, p: float) -> float:
    d = np.einsum("ij,ij->i", X - X[exemplars][labels], X - X[exemplars][labels])
    return float(-d.sum(dtype=np.float64) + len(exemplars) * p)


def duplicate_recall(kept: np.ndarray, source: np.ndarray) -> float:
    """Share of planted copies removed: per family (a chip and its copies) all but one kept
    chip count as surviving duplicates."""
    family_size = np.bincount(source, minlength=len(source))
    kept_per_family = np.bincount(source, weights=kept.astype(float), minlength=len(source))
    planted = (family_size - 1).clip(min=0).sum()
    survived = (kept_per_family - 1).clip(min=0).sum()
    return float(1.0 - survived / planted) if planted else 1.0


def selection_of(data: Planted, res: APResult, policy: SelectionPolicy) -> np.ndarray:
    n = len(data.X)
    ids = np.char.mod("c%08d", np.arange(n))
    chips = chip_table(ids, ids, role=np.full(n, "anchor"))  # one chip per group
    exemplar = np.zeros(n, bool)
    exemplar[res.exemplars] = True
    out = select(chips, res.labels, data.X, policy, exemplar)
    return out["kept"].to_numpy()


def radius_dedup(X: np.ndarray, radius: float) -> np.ndarray:
    """Radius graph + connected components, keep one chip per component (the context baseline)."""
    graph = NearestNeighbors(radius=radius, algorithm="brute").fit(X).radius_neighbors_graph(X)
    _, comp = connected_components(graph, directed=False)
    kept = np.zeros(len(X), bool)
    kept[np.unique(comp, return_index=True)[1]] = True
    return kept


# -- parts ---------------------------------------------------------------------------------
@dataclass
class Row:
    what: str
    value: str
    target: str = ""
    status: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, what: str, value: str, target: str = "", ok: bool | None = None) -> None:
        status = "" if ok is None else ("PASS" if ok else "MISS")
        self.rows.append(Row(what, value, target, status))
        print(f"  {what:<58} {value:>28}  {target:<14} {status}", flush=True)


def ap_params(**kw: Any) -> APParams:
    return APParams(**kw)


def scale_part(n: int, report: Report, case: str = "separated") -> None:
    print(f"\n[scale: {case}] N = {n:,} x {DIM}, 2-worker LocalCluster", flush=True)
    data, keys, params = case_data(case, n, seed=1)
    cfg = DaskConfig(workers=2, threads_per_worker=1)
    with dask_client(cfg, quiet=True) as client, TreeMemory() as mem, timer() as t:
        res = hierarchical_ap(data.X, keys, params, map_fn=dask_map(client))
    levels = " / ".join(f"{lv.points}->{lv.exemplars}" for lv in res.levels)
    big = n == 1_000_000
    limit = TARGETS["time_1m"] if case == "separated" else TIME_1M_OVERLAP
    name = f"{case} {n:,}"
    report.add(f"{name}: wall time (s)", f"{t[0]:.1f}", f"<= {limit:.0f}" if big else "",
               t[0] <= limit if big else None)  # fmt: skip
    block_s = sum(q.seconds for q in res.partitions)
    report.add(
        f"{name}: CPU s of the tree (AP blocks), load avg",
        f"{mem.cpu_s:.0f} ({block_s:.0f}), {psutil.getloadavg()[0]:.1f}",
    )
    report.add(f"{name}: peak memory, process tree (GB)", f"{mem.gb:.2f}",
               f"<= {TARGETS['mem_1m']:.0f}" if big else "",
               mem.gb <= TARGETS["mem_1m"] if big else None)  # fmt: skip
    report.add(f"{name}: clusters, levels (points->exemplars)", f"K={res.n_clusters}; {levels}")
    top_ok = res.levels[-1].points <= max(params.top_size, params.partition_size)
    report.add(f"{name}: levels reach top_size ({params.top_size})",
               str(top_ok), "True", top_ok)  # fmt: skip
    report.add(f"{name}: ARI vs planted clusters, level times (s)",
               f"{adjusted_rand_score(data.truth, res.labels):.3f}; "
               + " / ".join(f"{lv.seconds:.1f}" for lv in res.levels))  # fmt: skip
    report.add(
        f"{name}: blocks not converged",
        f"{len(res.unconverged)} of {len(res.partitions)}",
    )
    first = [q for q in res.partitions if q.level == 1 and q.iterations > 0]
    report.add(f"{name}: first level: blocks with message passing, mean iterations, CPU s",
               f"{len(first)}, {np.mean([q.iterations for q in first] or [0]):.0f}, "
               f"{sum(q.seconds for q in first):.0f}")  # fmt: skip
    if case == "separated":
        ref_t, _ = PROTOTYPE.get(n, (float("nan"), 0.0))
        report.add(f"{name}: speed-up vs notes' prototype ({ref_t:.0f} s)", f"{ref_t / t[0]:.1f}x")
    with timer() as t_sel:
        kept = selection_of(data, res, SelectionPolicy(duplicate_radius=RADIUS))
    report.add(
        f"{name}: selection (sqrt quotas): time (s), kept", f"{t_sel[0]:.1f}, {kept.sum():,}"
    )
    k = K_PLANTED if case == "separated" else K_OVERLAP
    with timer() as t_km:
        km = MiniBatchKMeans(k, batch_size=4096, n_init=1, random_state=0).fit(data.X)
    report.add(f"context: MiniBatchKMeans-{k} {n:,}: time (s), ARI vs planted",
               f"{t_km[0]:.1f}, {adjusted_rand_score(data.truth, km.labels_):.3f}")  # fmt: skip


def overlap_quality_part(n: int, report: Report, case: str = "overlapping") -> None:
    """Cluster-count target against flat scikit-learn AP at the preference it found."""
    print(f"\n[quality: {case}] N = {n:,}, {K_OVERLAP} overlapping clusters, no copies", flush=True)
    data, keys, params = case_data(case, n, seed=0)
    with TreeMemory() as mem_ours, timer() as t_ours:
        res = hierarchical_ap(data.X, keys, params)
    fixed = hierarchical_ap(data.X, keys, ap_params())
    print("  running scikit-learn flat AP once (minutes, GBs) ...", flush=True)
    with TreeMemory() as mem_flat, timer() as t_flat:
        flat = AffinityPropagation(
            preference=res.preference, damping=0.9, max_iter=500, convergence_iter=30,
            random_state=0,
        ).fit(data.X)  # fmt: skip
    flat_ex = flat.cluster_centers_indices_
    flat_net = net_similarity(data.X, flat.labels_, flat_ex, res.preference)
    ari = adjusted_rand_score(flat.labels_, res.labels)
    gap = (flat_net - res.net_similarity()) / abs(flat_net)
    report.add(f"{case} {n:,}: ours (n_clusters={K_OVERLAP}): time (s), memory (GB), K, p",
               f"{t_ours[0]:.1f}, {mem_ours.gb:.2f}, {res.n_clusters}, {res.preference:.1f}")  # fmt: skip
    report.add(f"{case} {n:,}: fixed median preference instead: K, levels",
               f"{fixed.n_clusters}; " + " / ".join(f"{lv.points}->{lv.exemplars}" for lv in fixed.levels))  # fmt: skip
    report.add(f"{case} {n:,}: flat AP at the same p: time (s), memory (GB), K",
               f"{t_flat[0]:.1f}, {mem_flat.gb:.2f}, {len(flat_ex)}")  # fmt: skip
    report.add(f"{case} {n:,}: ARI vs flat AP", f"{ari:.4f}", f">= {TARGETS['ari']}",
               ari >= TARGETS["ari"])  # fmt: skip
    report.add(f"{case} {n:,}: net similarity gap vs flat AP", f"{gap:+.3%}",
               f"<= {TARGETS['net']:.0%}", gap <= TARGETS["net"])  # fmt: skip
    report.add(f"{case} {n:,}: ARI vs planted (ours / flat / fixed p)",
               f"{adjusted_rand_score(data.truth, res.labels):.3f} / "
               f"{adjusted_rand_score(data.truth, flat.labels_):.3f} / "
               f"{adjusted_rand_score(data.truth, fixed.labels):.3f}")  # fmt: skip
    posedness_part(data, res, flat.labels_, ari, report, f"{case} {n:,}")


RESAMPLE_SHARE = 0.9  # share of the chips flat AP is rerun on to see how reproducible it is
RESTARTS = 3  # k-means restarts whose pairwise agreement shows how many partitions are as good


def posedness_part(
    data: Planted, res: APResult, flat_labels: np.ndarray, ari: float, report: Report, name: str
) -> None:
    """How much agreement with flat AP one can ask for on this data.

    Flat AP is deterministic for a given preference, so rerunning it tells nothing; rerunning
    it on a seeded ``RESAMPLE_SHARE`` of the chips (ARI on the shared chips) shows how much its
    partition depends on the sample, and k-means restarts with the same K show how different
    partitions of nearly equal objective can be. ARI against flat AP is read against these.
    """
    n = len(data.X)
    keep = np.sort(np.random.default_rng(1).choice(n, int(RESAMPLE_SHARE * n), replace=False))
    with timer() as t_sub:
        sub = AffinityPropagation(
            preference=res.preference, damping=0.9, max_iter=500, convergence_iter=30,
            random_state=0,
        ).fit(data.X[keep])  # fmt: skip
    ari_sub = adjusted_rand_score(flat_labels[keep], sub.labels_)
    report.add(f"{name}: flat AP on {RESAMPLE_SHARE:.0%} of the chips vs flat AP: ARI, K, s",
               f"{ari_sub:.3f}, {len(sub.cluster_centers_indices_)}, {t_sub[0]:.0f}")  # fmt: skip
    report.add(f"{name}: ARI vs flat AP / flat AP's own resampling ARI", f"{ari / ari_sub:.2f}")
    fits = [KMeans(res.n_clusters, n_init=1, random_state=s).fit(data.X) for s in range(RESTARTS)]
    pairs = [adjusted_rand_score(a.labels_, b.labels_)
             for i, a in enumerate(fits) for b in fits[i + 1:]]  # fmt: skip
    inertia = [f.inertia_ for f in fits]
    report.add(f"context: {name}: KMeans-{res.n_clusters} restarts: pairwise ARI, objective spread",
               f"{min(pairs):.3f}-{max(pairs):.3f}, "
               f"{(max(inertia) - min(inertia)) / min(inertia):.2%}")  # fmt: skip


def quality_part(n: int, report: Report) -> None:
    print(
        f"\n[quality] N = {n:,} x {DIM}, planted {K_PLANTED} clusters + {DUP_SHARE:.0%} near-copies",
        flush=True,
    )
    data = planted_mixture(n, seed=0)
    keys = np.zeros(n, np.int64)
    p = sample_preference(data.X, 0.5, 0)
    with TreeMemory() as mem_ours, timer() as t_ours:
        res = hierarchical_ap(data.X, keys, ap_params())
    with dask_client(DaskConfig(workers=2), quiet=True) as client, timer() as t_dask:
        res_dask = hierarchical_ap(data.X, keys, ap_params(), map_fn=dask_map(client))
    print("  running scikit-learn flat AP once (minutes, GBs) ...", flush=True)
    with TreeMemory() as mem_flat, timer() as t_flat:
        flat = AffinityPropagation(
            preference=p, damping=0.9, max_iter=500, convergence_iter=30, random_state=0
        ).fit(data.X)
    flat_ex = flat.cluster_centers_indices_
    flat_net = net_similarity(data.X, flat.labels_, flat_ex, p)
    ari = adjusted_rand_score(flat.labels_, res.labels)
    gap = (flat_net - res.net_similarity()) / abs(flat_net)
    report.add(
        "flat AP: time (s), CPU s, peak memory (GB), clusters",
        f"{t_flat[0]:.1f}, {mem_flat.cpu_s:.1f}, {mem_flat.gb:.2f}, K={len(flat_ex)}",
    )
    report.add(
        "hierarchical AP (serial): time (s), CPU s, peak memory (GB)",
        f"{t_ours[0]:.2f}, {mem_ours.cpu_s:.1f}, {mem_ours.gb:.2f}",
    )
    report.add("hierarchical AP (2-worker cluster): time (s)", f"{t_dask[0]:.2f}")
    report.add(
        "same clusters serial vs 2 workers",
        str(np.array_equal(res.labels, res_dask.labels)),
        "True",
        bool(np.array_equal(res.labels, res_dask.labels)),
    )
    speedup = t_flat[0] / t_ours[0]
    cpu_speedup = mem_flat.cpu_s / max(mem_ours.cpu_s, 1e-9)
    report.add(
        "speed-up vs flat AP (serial ours): wall, CPU seconds",
        f"{speedup:.1f}x, {cpu_speedup:.1f}x",
        f">= {TARGETS['speedup']:.0f}x",
        min(speedup, cpu_speedup) >= TARGETS["speedup"],
    )
    if n == 10_000:
        report.add(
            f"speed-up vs the notes' flat AP on an idle machine ({FLAT_10K_IDLE_S:.0f} s)",
            f"{FLAT_10K_IDLE_S / t_ours[0]:.1f}x",
        )
    report.add(
        "ARI vs flat AP",
        f"{ari:.4f} (K {res.n_clusters} vs {len(flat_ex)})",
        f">= {TARGETS['ari']}",
        ari >= TARGETS["ari"],
    )
    report.add(
        "net similarity gap vs flat AP",
        f"{gap:+.3%}",
        f"<= {TARGETS['net']:.0%}",
        gap <= TARGETS["net"],
    )
    report.add(
        "ARI vs planted truth (ours / flat)",
        f"{adjusted_rand_score(data.truth, res.labels):.4f} / {adjusted_rand_score(data.truth, flat.labels_):.4f}",
    )
    if n in PROTOTYPE:
        report.add(
            f"speed-up vs notes' prototype ({PROTOTYPE[n][0]:.0f} s)",
            f"{PROTOTYPE[n][0] / t_ours[0]:.1f}x",
        )
    for quota in ("sqrt", "all"):
        kept = selection_of(data, res, SelectionPolicy(duplicate_radius=RADIUS, quota=quota))
        recall = duplicate_recall(kept, data.source)
        lost = K_PLANTED - len(np.unique(data.truth[kept]))
        report.add(
            f"selection quota={quota}: planted copies removed (recall)",
            f"{recall:.4f} (kept {kept.sum():,})",
            f">= {TARGETS['recall']}",
            recall >= TARGETS["recall"],
        )
        report.add(f"selection quota={quota}: planted clusters lost", str(lost), "0", lost == 0)
    for kw in ({"partition_size": 500}, {"partition_size": 1000}, {"collapse_radius": 0.1}):
        with timer() as t_var:
            var = hierarchical_ap(data.X, keys, ap_params(**kw))
        var_gap = (flat_net - var.net_similarity()) / abs(flat_net)
        name = ", ".join(f"{k}={v}" for k, v in kw.items())
        report.add(
            f"variant {name}: time (s), ARI, net gap",
            f"{t_var[0]:.2f}, {adjusted_rand_score(flat.labels_, var.labels):.4f}, {var_gap:+.3%}",
        )
    with timer() as t_km:
        km = MiniBatchKMeans(K_PLANTED, batch_size=4096, n_init=1, random_state=0).fit(data.X)
    report.add(
        f"context: MiniBatchKMeans-{K_PLANTED}: time (s), ARI vs flat AP",
        f"{t_km[0]:.2f}, {adjusted_rand_score(flat.labels_, km.labels_):.4f}",
    )
    with timer() as t_rad:
        kept_rad = radius_dedup(data.X, RADIUS)
    report.add(
        "context: radius-threshold dedup: time (s), recall, kept",
        f"{t_rad[0]:.2f}, {duplicate_recall(kept_rad, data.source):.4f}, {kept_rad.sum():,}",
    )


RANDOM_DRAWS = 1000  # random selections of the same size, for the curation-value baseline


def curation_value(run_dir: Path, world_dir: Path, seed: int = 0) -> dict[str, float]:
    """Class balance, duplicates and low-information chips of the kept groups vs random.

    The land-cover class of a group is the most common truth class under its footprint
    (groups.parquet geometry, lon/lat). A residual duplicate is a kept anchor within the run's
    ``duplicate_radius`` of another kept anchor (standardised descriptors, as dedup sees them).
    A low-information chip is any chip (anchor or member) with ``information`` below
    ``min_information``. The world's planted near-duplicate scenes (``near_duplicates`` of
    world.json: a scene and its repeat over unchanged ground) count as a surviving pair when a
    kept chip of each lies in one group. The baseline is ``RANDOM_DRAWS`` random selections of
    as many groups as ours (every chip of a drawn group kept): their mean, and the share of
    draws that ours beats — one random draw alone swings by several tenths of a bit.
    """
    from terracorpus.catalogs.world.truth import read_truth, read_world
    from terracorpus.pipelines.rundir import RunDir, config_for, read_parquet
    from terracorpus.pipelines.stages.dedup import features, read_chips

    config = config_for(run_dir, None)
    table = read_chips(RunDir(run_dir, config, allow_mixed=True))  # sorted by chip id
    # the whole table (scene ids too) for the analysis, in the chip table's row order
    chips = read_parquet(run_dir / "chips.parquet").sort_values("chip_id", kind="stable")
    selection = read_parquet(run_dir / "selection.parquet")
    groups = read_parquet(run_dir / "groups.parquet")
    chips = chips.reset_index(drop=True).merge(selection[["chip_id", "kept"]], on="chip_id")
    anchor_rows = np.flatnonzero(table.anchor)
    anchors = chips.iloc[anchor_rows].reset_index(drop=True)
    X = features(table.take(anchor_rows), config.dedup)
    classes = {}
    for gid, geom in zip(groups["group_id"], groups.geometry, strict=True):
        codes = read_truth(world_dir, geom.bounds, "EPSG:4326")
        codes = codes[codes > 0]
        classes[gid] = int(np.bincount(codes).argmax()) if codes.size else 0
    cls = anchors["group_id"].map(classes).fillna(0).to_numpy(dtype=np.int64)
    kept = anchors["kept"].to_numpy(dtype=bool)
    rng = np.random.default_rng(seed)
    draws = np.zeros((RANDOM_DRAWS, len(kept)), bool)
    for d in draws:
        d[rng.choice(len(kept), int(kept.sum()), replace=False)] = True
    group_pos = pd.Series(np.arange(len(anchors)), index=anchors["group_id"])
    chip_group = chips["group_id"].map(group_pos).to_numpy()
    low = pd.to_numeric(chips["information"], errors="coerce").to_numpy() < (
        config.dedup.min_information
    )
    in_world = {str(s) for s in chips["scene_id"]}
    planted = [
        (str(a), str(b))
        for a, b in read_world(world_dir).get("near_duplicates", [])
        if str(a) in in_world and str(b) in in_world
    ]

    def entropy(mask: np.ndarray) -> float:
        return class_entropy(cls[mask])

    def dup_rate(mask: np.ndarray) -> float:
        return residual_duplicate_share(X[mask], config.dedup.duplicate_radius)

    def chip_kept(group_mask: np.ndarray | None) -> np.ndarray:
        """Ours (None): the selection's own chip decisions; a draw: every chip of its groups."""
        if group_mask is None:
            return chips["kept"].to_numpy(dtype=bool)
        ok = ~np.isnan(chip_group)
        out = np.zeros(len(chips), bool)
        out[ok] = group_mask[chip_group[ok].astype(np.int64)]
        return out

    def both_kept(chip_mask: np.ndarray) -> float:
        k = chips[chip_mask]
        by_group = k.groupby("group_id")["scene_id"].agg(lambda s: set(map(str, s)))
        return float(sum(any(a in g and b in g for g in by_group) for a, b in planted))

    ent_r = np.array([entropy(d) for d in draws])
    cls_r = np.array([len(np.unique(cls[d])) for d in draws])
    dup_r = np.array([dup_rate(d) for d in draws[:200]])
    low_r = np.array([(low & chip_kept(d)).sum() for d in draws])
    ours_chips = chip_kept(None)
    return {
        "groups": float(len(kept)),
        "kept": float(kept.sum()),
        "classes_all": float(len(np.unique(cls))),
        "classes_kept": float(len(np.unique(cls[kept]))),
        "classes_random": float(cls_r.mean()),
        "classes_random_all": float((cls_r == len(np.unique(cls))).mean()),
        "entropy_ours": entropy(kept),
        "entropy_random": float(ent_r.mean()),
        "entropy_beaten": float((ent_r < entropy(kept)).mean()),
        "entropy_all": entropy(np.ones(len(kept), bool)),
        "dup_rate_ours": dup_rate(kept),
        "dup_rate_random": float(dup_r.mean()),
        "planted_pairs": float(len(read_world(world_dir).get("near_duplicates", []))),
        "planted_pairs_in_chips": float(len(planted)),
        "planted_both_kept_ours": both_kept(ours_chips),
        "planted_both_kept_random": float(np.mean([both_kept(chip_kept(d)) for d in draws[:50]])),
        "low_information": float(low.sum()),
        "low_information_kept": float((low & ours_chips).sum()),
        "low_information_random": float(low_r.mean()),
        "class_counts_all": str(_counts(cls)),
        "class_counts_ours": str(_counts(cls[kept])),
    }


def _counts(cls: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(cls, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def demo_part(run_dir: Path | None, world_dir: Path | None, report: Report) -> None:
    print("\n[curation value] demo world", flush=True)
    if run_dir is None or world_dir is None:
        report.add("curation value on the demo world", "skipped: pass --demo-run and --world")
        return
    v = curation_value(run_dir, world_dir)
    n = RANDOM_DRAWS
    print(
        f"  {v['kept']:.0f} of {v['groups']:.0f} groups kept; anchors per class "
        f"{v['class_counts_all']}, kept {v['class_counts_ours']}"
    )
    report.add(
        "land-cover classes kept / present (random: mean)",
        f"{v['classes_kept']:.0f} / {v['classes_all']:.0f} ({v['classes_random']:.2f})",
        "all",
        v["classes_kept"] == v["classes_all"],
    )
    report.add(
        f"class entropy (bits): ours vs random (mean of {n})",
        f"{v['entropy_ours']:.3f} vs {v['entropy_random']:.3f}",
        "ours higher",
        v["entropy_ours"] > v["entropy_random"],
    )
    report.add(
        "  share of random selections with lower entropy",
        f"{v['entropy_beaten']:.3f}",
    )
    report.add(
        "planted repeat pairs both kept: ours vs random",
        f"{v['planted_both_kept_ours']:.0f} vs {v['planted_both_kept_random']:.2f} "
        f"of {v['planted_pairs_in_chips']:.0f}",
        "ours 0",
        v["planted_both_kept_ours"] == 0,
    )
    if v["planted_pairs_in_chips"] < v["planted_pairs"]:
        report.add(
            "  planted pairs with both scenes among the chips",
            f"{v['planted_pairs_in_chips']:.0f} of {v['planted_pairs']:.0f} "
            "(grouping kept one scene of the others)",
        )
    report.add(
        "low-information chips kept: ours vs random",
        f"{v['low_information_kept']:.0f} vs {v['low_information_random']:.1f} "
        f"of {v['low_information']:.0f}",
        "ours 0",
        v["low_information_kept"] == 0,
    )
    report.add(
        "residual duplicate rate: ours vs random",
        f"{v['dup_rate_ours']:.3f} vs {v['dup_rate_random']:.3f}",
        "ours lower (or 0)",
        v["dup_rate_ours"] < v["dup_rate_random"] or v["dup_rate_ours"] == 0,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="quality at 3,000, scale at 100,000 only")
    ap.add_argument("--demo-run", type=Path, help="a curated demo run directory")
    ap.add_argument("--world", type=Path, help="the demo world it was made from")
    ap.add_argument("--skip-flat", action="store_true", help="skip the quality part (flat AP)")
    ap.add_argument("--sizes", type=int, nargs="*", help="scale sizes (default 100000 1000000)")
    ap.add_argument("--cases", nargs="*", choices=CASES, default=list(CASES),
                    help="data of the scale part (and the overlapping quality part)")  # fmt: skip
    args = ap.parse_args(argv)
    report = Report()
    print(f"bench_dedup: {psutil.cpu_count()} cores, {'quick' if args.quick else 'full'} run")
    sizes = (
        args.sizes if args.sizes is not None else [100_000] if args.quick else [100_000, 1_000_000]
    )
    print(f"load average before: {' '.join(f'{x:.1f}' for x in psutil.getloadavg())}")
    for case in args.cases:
        for n in sizes:
            scale_part(n, report, case)
    if not args.skip_flat:
        if "separated" in args.cases:
            quality_part(3_000 if args.quick else 10_000, report)
        if "overlapping" in args.cases:
            overlap_quality_part(3_000 if args.quick else 10_000, report)
    demo_part(args.demo_run, args.world, report)
    misses = [r for r in report.rows if r.status == "MISS"]
    print(f"\n{len([r for r in report.rows if r.status == 'PASS'])} PASS, {len(misses)} MISS")
    return 0 if not misses else 1


if __name__ == "__main__":
    sys.exit(main())
