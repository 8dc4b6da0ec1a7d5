"""The dedup stage: chips.parquet -> selection.parquet.

Reads the chips and their descriptor layout, clusters the anchor chips (one per group) by
hierarchical affinity propagation with the blocks run as Dask tasks, applies the selection
policy, and writes one row per chip with its cluster, exemplar flag, decision and reason.
Chips whose descriptor has NaN or infinite values are dropped (``invalid_descriptor``) and
recorded in the failure table; blocks that did not converge are recorded there too.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from distributed import Client
from numpy.typing import NDArray

from terracorpus.curation.ap import BlockInput, BlockOutput
from terracorpus.curation.errors import ClusteringError
from terracorpus.curation.hierarchical import (
    APResult,
    MapFn,
    TaskFn,
    hierarchical_ap,
    prepare_features,
)
from terracorpus.curation.selection import select, summarize
from terracorpus.pipelines.cluster import run_tasks
from terracorpus.pipelines.config import DedupConfig, RunConfig
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.rundir import Failure, RunDir

log = logging.getLogger(__name__)

CHIPS = "chips.parquet"
SELECTION = "selection.parquet"
NAMES_KEY = b"terracorpus.descriptor_names"
REQUIRED = ("chip_id", "group_id", "descriptor")
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
    chips, names = read_chips(run)
    X = features(chips, names, cfg)
    anchor = _anchor_mask(chips)
    valid = np.asarray(np.isfinite(X).all(axis=1), dtype=np.bool_)
    messages = _invalid_messages(run, chips, anchor, valid)
    rows = np.flatnonzero(anchor & valid)
    labels = np.full(len(chips), -1, dtype=np.int64)
    exemplar = np.zeros(len(chips), dtype=bool)
    result = None
    if len(rows):
        keys = spatial_keys(chips.iloc[rows], cfg.partition_tile_degrees)
        on_dask = client is not None and len(rows) >= cfg.dask_min_chips
        map_fn = dask_map(client) if on_dask and client is not None else None
        where = "on the Dask cluster" if on_dask else "in this process"
        messages.append(f"affinity propagation ran {where} ({len(rows)} anchor chips)")
        result = hierarchical_ap(X[rows], keys, cfg.ap, map_fn=map_fn)
        labels[rows] = result.labels
        exemplar[rows[result.exemplars]] = True
        messages += _convergence_messages(run, result)
    else:
        messages.append(
            "no anchor chip has a valid descriptor: nothing to cluster, every group dropped"
        )
    selection = select(chips, labels, X, cfg.policy, exemplar)
    messages += _outcome_messages(selection, cfg)
    run.write_table(
        SELECTION,
        selection,
        stage=STAGE,
        preference=None if result is None else result.preference,
        clusters=0 if result is None else result.n_clusters,
        partitions=[] if result is None else [p.__dict__ for p in result.unconverged],
    )
    summary = _summary(chips, anchor, selection, result, messages, time.perf_counter() - t0)
    log.info("dedup: %s", summary)
    return summary


def require_chips(run: RunDir) -> None:
    """Refuse early when the run directory has no chips.parquet."""
    if not run.path(CHIPS).exists():
        raise StageError(
            f"dedup needs {run.path(CHIPS)}, which does not exist; run the stage that makes it "
            "first (terracorpus describe, or terracorpus curate)"
        )


def read_chips(run: RunDir) -> tuple[pd.DataFrame, list[str]]:
    """chips.parquet sorted by chip id, and its descriptor names."""
    chips = run.read_table(CHIPS, needed_by="dedup")
    missing = [c for c in REQUIRED if c not in chips.columns]
    if missing:
        raise StageError(f"{run.path(CHIPS)} lacks the columns {missing}; rerun describe")
    if len(chips) == 0:
        raise StageError(f"{run.path(CHIPS)} has no chips; check the describe stage's failures")
    chips = chips.sort_values("chip_id", kind="stable").reset_index(drop=True)
    width = _descriptor_width(chips)
    found = _stored_names(run)
    names = found if found is not None else [f"desc.{i}" for i in range(width)]
    if found is None:
        log.warning("%s names no descriptor values; all weigh equally", CHIPS)
    if len(names) != width:
        raise StageError(
            f"{run.path(CHIPS)} names {len(names)} descriptor values but its descriptors hold {width}; rerun describe"
        )
    return chips, list(names)


def _stored_names(run: RunDir) -> list[str] | None:
    """Descriptor names: describe's artifact metadata (``descriptor_names``), or the schema
    metadata key ``terracorpus.descriptor_names`` (a JSON list)."""
    meta = run.table_meta(CHIPS) or {}
    if meta.get("descriptor_names"):
        return [str(n) for n in meta["descriptor_names"]]
    raw = (pq.read_schema(run.path(CHIPS)).metadata or {}).get(NAMES_KEY)
    return [str(n) for n in json.loads(raw)] if raw else None


def _descriptor_width(chips: pd.DataFrame) -> int:
    lengths = {len(d) for d in chips["descriptor"] if d is not None}
    if len(lengths) > 1:
        raise StageError(
            f"descriptors of chips.parquet have different lengths {sorted(lengths)}; rerun describe"
        )
    return lengths.pop() if lengths else 0


def features(chips: pd.DataFrame, names: list[str], cfg: DedupConfig) -> NDArray[np.float32]:
    """Standardised, part-weighted descriptors; rows with a missing descriptor are NaN."""
    width = len(names)
    D = np.full((len(chips), width), np.nan, dtype=np.float64)
    for i, d in enumerate(chips["descriptor"]):
        if d is not None:
            D[i] = np.asarray(d, dtype=np.float64)
    try:
        return prepare_features(D, names, cfg.descriptor_weights)
    except ClusteringError as e:
        raise StageError(f"dedup.descriptor_weights: {e}") from None


def spatial_keys(chips: pd.DataFrame, tile_degrees: float) -> NDArray[np.int64]:
    """Row-major tile index of each chip centre (lon/lat); chips without a centre share -1."""
    if "lon" not in chips or "lat" not in chips:
        return np.full(len(chips), -1, dtype=np.int64)
    lon = pd.to_numeric(chips["lon"], errors="coerce").to_numpy(dtype=np.float64)
    lat = pd.to_numeric(chips["lat"], errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(lon) & np.isfinite(lat)
    row = np.floor((np.where(ok, lat, 0.0) + 90.0) / tile_degrees).astype(np.int64)
    col = np.floor((np.where(ok, lon, 0.0) + 180.0) / tile_degrees).astype(np.int64)
    return np.where(ok, row * 1_000_000 + col, -1)


def _anchor_mask(chips: pd.DataFrame) -> NDArray[np.bool_]:
    if "role" not in chips:
        return np.ones(len(chips), dtype=bool)
    mask: NDArray[np.bool_] = chips["role"].astype(str).to_numpy() == "anchor"
    return mask


def _invalid_messages(
    run: RunDir, chips: pd.DataFrame, anchor: NDArray[np.bool_], valid: NDArray[np.bool_]
) -> list[str]:
    bad = np.flatnonzero(~valid)
    if len(bad) == 0:
        return []
    run.record_failures(
        [
            Failure(
                STAGE,
                "chip",
                str(chips["chip_id"].iat[int(i)]),
                "invalid_descriptor",
                "descriptor has NaN or infinite values (or is missing)",
            )
            for i in bad
        ]
    )
    n_anchor = int((anchor & ~valid).sum())
    return [
        f"{len(bad)} chip(s) have NaN/inf descriptors ({n_anchor} anchors: their groups are dropped "
        "as invalid_descriptor); listed in failures.parquet"
    ]


def _convergence_messages(run: RunDir, result: APResult) -> list[str]:
    bad = result.unconverged
    if not bad:
        return []
    run.record_failures(
        [
            Failure(
                STAGE,
                "partition",
                f"level{p.level}/block{p.block_id}",
                "not_converged",
                f"{p.points} points, {p.iterations} iterations at damping {p.damping}: {p.note}",
            )
            for p in bad
        ]
    )
    return [
        f"{len(bad)} AP block(s) did not converge even at the highest retry damping; their last "
        "exemplars were used (listed in failures.parquet); raise dedup.max_iter or dedup.damping"
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
    chips: pd.DataFrame,
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
