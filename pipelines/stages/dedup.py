"""The dedup stage: chips.parquet -> selection.parquet.

Reads the chips once, strictly, into a typed chip table (:mod:`terracorpus.pipelines.chips`),
clusters the anchor chips (one per group) by
hierarchical affinity propagation with the blocks run as Dask tasks, applies the selection
policy, and writes one row per chip with its cluster, exemplar flag, decision and reason.
Chips whose descriptor has NaN or infinite values are dropped (``invalid_descriptor``) and
recorded in the failure table; blocks that did not converge are recorded there too.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from distributed import Client
from numpy.typing import NDArray

from terracorpus.curation.ap import BlockInput, BlockOutput
from terracorpus.curation.chips import ChipTable
from terracorpus.curation.errors import ClusteringError
from terracorpus.curation.hierarchical import (
    APResult,
    MapFn,
    TaskFn,
    hierarchical_ap,
    prepare_features,
)
from terracorpus.curation.selection import select, summarize
from terracorpus.pipelines.chips import read_chip_table
from terracorpus.pipelines.cluster import run_tasks
from terracorpus.pipelines.config import DedupConfig, RunConfig
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.rundir import Failure, RunDir

log = logging.getLogger(__name__)

CHIPS = "chips.parquet"
SELECTION = "selection.parquet"
STAGE = "dedup"


@dataclass(frozen=True)
class DedupSummary:
    """What dedup did, for the CLI and the curate log."""

    chips: int
    anchors: int
    clustered: int
    clusters: int
    preference: float
    kept_groups: int
    kept_chips: int
    reasons: dict[str, int]
    cluster_sizes: list[int]  # anchors per cluster, largest first
    kept_per_cluster: list[int]  # in the order of cluster_sizes
    unconverged: int
    levels: list[str]
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"{self.clusters} clusters over {self.clustered} anchor chips; kept {self.kept_groups} "
            f"groups ({self.kept_chips} of {self.chips} chips); unconverged blocks: {self.unconverged}"
        )

    def table(self) -> str:
        """A multi-line cluster summary: levels, cluster sizes, kept and dropped by reason."""
        lines = [f"dedup: {self}", f"  preference {self.preference:.4g}"]
        lines += [f"  {line}" for line in self.levels]
        if self.cluster_sizes:
            sizes = np.asarray(self.cluster_sizes)
            lines.append(
                f"  cluster sizes: min {sizes.min()}, median {int(np.median(sizes))}, "
                f"max {sizes.max()}"
            )
            top = ", ".join(
                f"{s}->{k}"
                for s, k in zip(self.cluster_sizes[:8], self.kept_per_cluster[:8], strict=True)
            )
            lines.append(f"  largest clusters (anchors->kept): {top}")
        lines.append("  chips by reason:")
        lines += [f"    {reason:<24} {count}" for reason, count in self.reasons.items()]
        lines += [f"  note: {m}" for m in self.messages]
        return "\n".join(lines)


def dask_map(client: Client) -> MapFn:
    """A ``map_fn`` that runs AP tasks on the cluster; block data is scattered, not in the graph."""

    def run(fn: TaskFn, tasks: list[list[BlockInput]]) -> list[list[BlockOutput]]:
        if not tasks:
            return []
        data = client.scatter(tasks, hash=False)
        token = uuid.uuid4().hex[:8]
        return run_tasks(
            client, fn, data, desc="dedup: affinity propagation", key_prefix=f"dedup-ap-{token}"
        )

    return run


def run_dedup(config: RunConfig, run: RunDir, client: Client | None = None) -> DedupSummary:
    """Cluster the chips of ``run`` and write its selection.parquet.

    Args:
        config: the run config (its ``dedup`` section is used).
        run: the run directory holding chips.parquet.
        client: a Dask client for the AP blocks; None runs them in this process.
    """
    t0 = time.perf_counter()
    cfg = config.dedup
    run.clear_failures(STAGE)
    chips = read_chips(run)
    X = features(chips, cfg)
    anchor = chips.anchor
    valid = np.asarray(np.isfinite(X).all(axis=1), dtype=np.bool_)
    run.record_failures(invalid_descriptor_failures(chips, valid))
    messages = _invalid_note(anchor, valid)
    rows = np.flatnonzero(anchor & valid)
    labels = np.full(len(chips), -1, dtype=np.int64)
    exemplar = np.zeros(len(chips), dtype=bool)
    result = None
    if len(rows):
        keys = spatial_keys(chips.lon[rows], chips.lat[rows], cfg.partition_tile_degrees)
        on_dask = client is not None and len(rows) >= cfg.dask_min_chips
        map_fn = dask_map(client) if on_dask and client is not None else None
        where = "on the Dask cluster" if on_dask else "in this process"
        messages.append(f"affinity propagation ran {where} ({len(rows)} anchor chips)")
        result = hierarchical_ap(X[rows], keys, cfg.ap, map_fn=map_fn)
        labels[rows] = result.labels
        exemplar[rows[result.exemplars]] = True
        run.record_failures(unconverged_failures(result))
        messages += _convergence_note(result)
    else:
        messages.append(
            "no anchor chip has a valid descriptor: nothing to cluster, every group dropped"
        )
    selection = select(chips, labels, X, cfg.policy, exemplar)
    messages += _outcome_messages(selection, cfg)
    _write_selection(run, selection, result)
    summary = _summary(chips, anchor, selection, result, messages, time.perf_counter() - t0)
    log.info("dedup: %s", summary)
    return summary


SELECTION_ROWS = 100_000  # rows per partition (row group) of selection.parquet


def _write_selection(run: RunDir, selection: pd.DataFrame, result: APResult | None) -> None:
    """selection.parquet in partitions of :data:`SELECTION_ROWS` chips, so its readers take
    a partition at a time."""
    n = max(1, -(-len(selection) // SELECTION_ROWS))
    with run.partitioned_table(
        SELECTION,
        stage=STAGE,
        partitions=n,
        preference=None if result is None else result.preference,
        clusters=0 if result is None else result.n_clusters,
        unconverged=[] if result is None else [p.__dict__ for p in result.unconverged],
    ) as out:
        for i in range(n):
            out.write(selection.iloc[i * SELECTION_ROWS : (i + 1) * SELECTION_ROWS])


def require_chips(run: RunDir) -> None:
    """Refuse early when the run directory has no chips.parquet."""
    if not run.path(CHIPS).exists():
        raise StageError(
            f"dedup needs {run.path(CHIPS)}, which does not exist; run the stage that makes it "
            "first (terracorpus describe, or terracorpus curate)"
        )


def read_chips(run: RunDir) -> ChipTable:
    """chips.parquet as a typed chip table, sorted by chip id (strict schema)."""
    return read_chip_table(run, needed_by="dedup")


def features(chips: ChipTable, cfg: DedupConfig) -> NDArray[np.float32]:
    """Standardised, part-weighted descriptors; rows with a missing descriptor are NaN."""
    try:
        return prepare_features(chips.descriptor, chips.descriptor_names, cfg.descriptor_weights)
    except ClusteringError as e:
        raise StageError(f"dedup.descriptor_weights: {e}") from None


def spatial_keys(
    lon: NDArray[np.float64], lat: NDArray[np.float64], tile_degrees: float
) -> NDArray[np.int64]:
    """Row-major tile index of each chip centre (lon/lat); chips without a centre share -1."""
    ok = np.isfinite(lon) & np.isfinite(lat)
    row = np.floor((np.where(ok, lat, 0.0) + 90.0) / tile_degrees).astype(np.int64)
    col = np.floor((np.where(ok, lon, 0.0) + 180.0) / tile_degrees).astype(np.int64)
    return np.where(ok, row * 1_000_000 + col, -1)


def invalid_descriptor_failures(chips: ChipTable, valid: NDArray[np.bool_]) -> list[Failure]:
    """One failure row per chip whose descriptor has NaN or infinite values (or is missing)."""
    return [
        Failure(
            STAGE,
            "chip",
            str(chips.chip_id[i]),
            "invalid_descriptor",
            "descriptor has NaN or infinite values (or is missing)",
        )
        for i in np.flatnonzero(~valid)
    ]


def _invalid_note(anchor: NDArray[np.bool_], valid: NDArray[np.bool_]) -> list[str]:
    bad = int((~valid).sum())
    if bad == 0:
        return []
    n_anchor = int((anchor & ~valid).sum())
    return [
        f"{bad} chip(s) have NaN/inf descriptors ({n_anchor} anchors: their groups are dropped "
        "as invalid_descriptor); listed in failures.parquet"
    ]


def unconverged_failures(result: APResult) -> list[Failure]:
    """One failure row per AP block that did not converge even at the highest damping."""
    return [
        Failure(
            STAGE,
            "partition",
            f"level{p.level}/block{p.block_id}",
            "not_converged",
            f"{p.points} points, {p.iterations} iterations at damping {p.damping}: {p.note}",
        )
        for p in result.unconverged
    ]


def _convergence_note(result: APResult) -> list[str]:
    if not result.unconverged:
        return []
    return [
        f"{len(result.unconverged)} AP block(s) did not converge even at the highest retry "
        "damping; their last exemplars were used (listed in failures.parquet); raise "
        "dedup.max_iter or dedup.damping"
    ]


def _outcome_messages(selection: pd.DataFrame, cfg: DedupConfig) -> list[str]:
    anchors = selection[selection["role"] == "anchor"]
    kept = int(anchors["kept"].sum())
    out = []
    if kept == 0:
        reasons = Counter(anchors["reason"])
        out.append(
            f"no group was kept: anchors dropped by {dict(reasons)}; loosen the quality limits"
        )
    if cfg.target_groups is not None and kept < cfg.target_groups:
        out.append(
            f"kept {kept} groups, fewer than target_groups {cfg.target_groups}: every eligible, "
            "non-duplicate group is kept"
        )
    return out


def _summary(
    chips: ChipTable,
    anchor: NDArray[np.bool_],
    selection: pd.DataFrame,
    result: APResult | None,
    messages: list[str],
    seconds: float,
) -> DedupSummary:
    anchors = selection[anchor]
    clustered = anchors[anchors["cluster_id"] >= 0]
    sizes = clustered.groupby("cluster_id").size().sort_values(ascending=False, kind="stable")
    kept = clustered.groupby("cluster_id")["kept"].sum().reindex(sizes.index)
    levels = (
        []
        if result is None
        else [
            f"level {lv.level}: {lv.points} points in {lv.blocks} block(s) -> {lv.exemplars} exemplars "
            f"({lv.seconds:.1f} s){' ' + lv.note if lv.note else ''}"
            for lv in result.levels
        ]
    )
    return DedupSummary(
        chips=len(chips),
        anchors=int(anchor.sum()),
        clustered=len(clustered),
        clusters=0 if result is None else result.n_clusters,
        preference=float("nan") if result is None else result.preference,
        kept_groups=int(anchors["kept"].sum()),
        kept_chips=int(selection["kept"].sum()),
        reasons=summarize(selection),
        cluster_sizes=[int(s) for s in sizes],
        kept_per_cluster=[int(k) for k in kept],
        unconverged=0 if result is None else len(result.unconverged),
        levels=levels,
        messages=messages,
        seconds=seconds,
    )
