"""The pool of a run and its corpora: one per arm, all written by the real corpus writer.

The **pool** is every usable candidate group of a run: its scenes, groups and chips copied
into ``<experiment>/pool`` and deduplicated with ``quota: all`` and ``duplicate_radius: 0``
(only the quality rules drop), then materialized with labels when a labeller is given. It is
the ``all`` arm's corpus and the corpus every encoder is probed on.

An **arm** is a set of the pool's groups: ``ap`` reruns the run's own dedup config with
``target_groups`` = the size on a copy of the tables (so AP curates the very same candidates),
``ap-exemplars`` the same with ``n_clusters`` = the size;
``random``, ``kmeans`` and ``farthest`` pick from the pool's anchor descriptors as dedup sees
them (:mod:`terracorpus.curation.baselines`); ``all`` is the pool. Each arm's corpus is written
by ``run_materialize`` from a selection.parquet in its own run directory; a finished one
holds a ``.done`` marker and is not written again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terracorpus.curation.baselines import (
    farthest_point_selection,
    kmeans_balanced_selection,
    random_selection,
)
from terracorpus.pipelines.config import RunConfig, parse_config
from terracorpus.pipelines.corpus.scenes import Labeller
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.rundir import CONFIG_FILE, RunDir, read_parquet
from terracorpus.pipelines.stages.dedup import features, read_chips, run_dedup
from terracorpus.pipelines.stages.materialize import run_materialize

TABLES = ("scenes.parquet", "groups.parquet", "chips.parquet")
DONE = ".done"
SELECTION = "selection.parquet"


def source_config(run: Path) -> dict[str, Any]:
    """The run config stored in ``run`` (as a dict), or a clear error."""
    stored = run / CONFIG_FILE
    missing = [name for name in TABLES if not (run / name).exists()]
    if not stored.exists() or missing:
        raise StageError(
            f"{run} is not a curated run directory (missing {CONFIG_FILE if not stored.exists() else ', '.join(missing)}); "
            "give the run directory of `terracorpus curate` (or the demo's OUT/run)"
        )
    config: dict[str, Any] = json.loads(stored.read_text())["config"]
    return config


def _run_copy(source: Path, target: Path, dedup: dict[str, Any]) -> RunConfig:
    """``target`` as a run directory with ``source``'s tables and a config whose dedup section
    is updated with ``dedup``; the tables are copied only once."""
    config = source_config(source)
    config["run_dir"] = str(target)
    config["dedup"] = {**config.get("dedup", {}), **dedup}
    config["dask"] = {**config.get("dask", {}), "workers": 1}
    target.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        if not (target / name).exists():
            shutil.copy(source / name, target / name)
    return parse_config(config, source=f"{source / CONFIG_FILE} (experiment copy)")


def is_done(run_dir: Path) -> bool:
    return (run_dir / DONE).exists()


def _materialize(cfg: RunConfig, run: RunDir, labeller: Labeller | None) -> None:
    run_materialize(cfg, run, None, labeller=labeller)
    run.clear_scratch("materialize")
    (run.root / DONE).write_text("complete\n")


def build_pool(
    source: Path, target: Path, labeller: Labeller | None, *, materialize: bool = True
) -> Path:
    """Every usable group of ``source`` as a run directory with its corpus at ``target``
    (without ``materialize``: its selection only)."""
    if is_done(target):
        return target
    cfg = _run_copy(
        source, target, {"quota": "all", "duplicate_radius": 0.0, "target_groups": None}
    )
    run = RunDir(target, cfg, allow_mixed=True)
    if not run.path(SELECTION).exists():
        run_dedup(cfg, run)
    if materialize:
        _materialize(cfg, run, labeller)
    return target


@dataclass(frozen=True)
class PoolView:
    """The pool's usable groups (sorted by group id) with what the arms and metrics need."""

    group_ids: list[str]
    X: NDArray[np.float32]  # (G, D) standardised anchor descriptors, as dedup sees them
    information: NDArray[np.float64] | None  # (G,) anchor information score
    duplicate_radius: float
    min_information: float


def pool_view(pool: Path, source: Path) -> PoolView:
    """Read the pool's usable anchors; the radius and rule come from ``source``'s config."""
    cfg = _run_copy(source, pool, {"quota": "all", "duplicate_radius": 0.0, "target_groups": None})
    run = RunDir(pool, cfg, allow_mixed=True)
    chips = read_chips(run)
    X = features(chips, cfg.dedup)
    selection = read_parquet(pool / SELECTION)
    kept = set(selection.loc[selection["kept"], "group_id"].astype(str))
    gid = [str(g) for g in chips.group_id]
    rows = sorted(
        (int(i) for i in np.flatnonzero(chips.anchor) if gid[i] in kept), key=gid.__getitem__
    )
    info = chips.information[rows]
    original = parse_config(source_config(source), source=str(source)).dedup
    return PoolView(
        group_ids=[gid[i] for i in rows],
        X=X[rows],
        information=info,
        duplicate_radius=original.duplicate_radius,
        min_information=original.min_information,
    )


def baseline_groups(arm: str, view: PoolView, size: int, seed: int) -> list[str]:
    """The group ids an arm other than ``ap`` picks from the pool."""
    n = len(view.group_ids)
    pick: Callable[[], NDArray[np.int64]] = {
        "random": lambda: random_selection(n, size, seed),
        "kmeans": lambda: kmeans_balanced_selection(view.X, size, seed),
        "farthest": lambda: farthest_point_selection(view.X, size),
        "all": lambda: np.arange(n, dtype=np.int64),
    }[arm]
    return [view.group_ids[i] for i in pick()]


def ap_overrides(arm: str, source: Path, size: int) -> dict[str, Any]:
    """The dedup settings an AP arm changes in the run's config: ``ap`` only the target;
    ``ap-exemplars`` also ``n_clusters`` = the size (capped at ``top_size``, which the top
    level cannot exceed), so AP forms about one cluster per place and nearly every pick is
    an exemplar instead of the per-cluster quota fill."""
    if arm == "ap":
        return {"target_groups": size}
    if arm == "ap-exemplars":
        dedup = parse_config(source_config(source), source=str(source)).dedup
        return {"target_groups": size, "n_clusters": min(size, dedup.top_size)}
    raise StageError(f"{arm!r} is not an AP arm")


def build_ap_arm(
    source: Path, target: Path, size: int, *, materialize: bool = True, arm: str = "ap"
) -> list[str]:
    """The run's own dedup (with ``arm``'s overrides, :func:`ap_overrides`) on a copy of its
    tables; its corpus."""
    cfg = _run_copy(source, target, ap_overrides(arm, source, size))
    run = RunDir(target, cfg, allow_mixed=True)
    if not run.path(SELECTION).exists():
        run_dedup(cfg, run)
    if materialize and not is_done(target):
        _materialize(cfg, run, None)
    return kept_groups(target)


def build_subset_arm(pool: Path, source: Path, target: Path, groups: list[str], arm: str) -> None:
    """A corpus of the pool's ``groups``: the pool's selection, every other group dropped."""
    if is_done(target):
        return
    cfg = _run_copy(
        source, target, {"quota": "all", "duplicate_radius": 0.0, "target_groups": None}
    )
    run = RunDir(target, cfg, allow_mixed=True)
    table = read_parquet(pool / SELECTION)
    chosen = table["group_id"].astype(str).isin(set(groups))
    table["reason"] = np.where(table["kept"] & ~chosen, f"not_in_{arm}", table["reason"])
    table["kept"] = table["kept"] & chosen
    run.write_table(SELECTION, table, stage="dedup", experiment_arm=arm)
    _materialize(cfg, run, None)


def kept_groups(run_dir: Path) -> list[str]:
    table = read_parquet(run_dir / SELECTION)
    return sorted(set(table.loc[table["kept"], "group_id"].astype(str)))
