"""Which ground the arms may pre-train on, and the evaluation set on the rest.

An encoder scored on ground it pre-trained on is scored on its own training data; the ``all``
arm holds the whole pool, so scoring on the pool favours it. The experiment therefore cuts
the run's ground in two before anything is curated: square blocks of ground (lon/lat, a few
chips a side) in a stable pseudo-random order go whole to the **held-out** share until it
holds ``holdout`` of the groups; the run's tables without the held-out groups are the
**source** every arm curates from (:func:`holdout_source`). The evaluation set is then built
by :func:`~terracorpus.pipelines.evaluation.build.build_evalset` from the original run with
the pool's corpus excluded, so no group of it shares ground with any arm's corpus
(:func:`build_experiment_evalset`).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.evaluation.build import EvalSetParams, build_evalset
from terracorpus.pipelines.evaluation.truth import TruthSource
from terracorpus.pipelines.rundir import CONFIG_FILE, read_parquet

DONE = ".done"
HELD_OUT = "held-out.json"
METRES_PER_DEGREE = 111_320.0


def _stable_unit(*parts: object) -> float:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_out_groups(run: Path, holdout: float, block_chips: int = 4) -> list[str]:
    """Group ids of whole lon/lat blocks of ground (``block_chips`` chips a side) in a stable
    pseudo-random order, taken until they hold ``holdout`` of the run's groups."""
    if not 0 < holdout < 1:
        raise StageError(f"--holdout must be in (0, 1), got {holdout}")
    groups = read_parquet(run / "groups.parquet")
    ids = groups["group_id"].astype(str).to_numpy()
    b = np.asarray(groups.geometry.bounds, dtype=float).reshape(-1, 4)  # lon/lat
    lon, lat = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    chip_m = float(np.median(groups["maxx"] - groups["minx"])) if len(ids) else 0.0  # metres
    side_lat = max(block_chips * chip_m, 1.0) / METRES_PER_DEGREE
    side_lon = side_lat / max(
        math.cos(math.radians(float(np.median(lat)) if len(ids) else 0.0)), 0.1
    )
    blocks: dict[tuple[int, int], list[str]] = {}
    for g, x, y in zip(ids, lon, lat, strict=True):
        blocks.setdefault((math.floor(x / side_lon), math.floor(y / side_lat)), []).append(g)
    out: list[str] = []
    for key in sorted(blocks, key=lambda b: _stable_unit("holdout", *b)):
        if len(out) >= holdout * len(ids):
            break
        out += blocks[key]
    if not out or len(out) == len(ids):
        raise StageError(
            f"cannot hold out {holdout:.0%} of {run}'s {len(ids)} groups by blocks of ground "
            f"({len(blocks)} blocks); use a run over more ground or another --holdout"
        )
    return sorted(out)


def holdout_source(run: Path, target: Path, holdout: float) -> Path:
    """``target``: a copy of ``run``'s config and tables without the held-out groups (the run
    every arm curates from); written once."""
    if (target / DONE).exists():
        return target
    held = set(held_out_groups(run, holdout))
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / CONFIG_FILE, target / CONFIG_FILE)
    shutil.copy(run / "scenes.parquet", target / "scenes.parquet")
    for name in ("groups.parquet", "chips.parquet"):
        _filtered(run / name, target / name, held)
    (target / HELD_OUT).write_text(json.dumps(sorted(held)))
    (target / DONE).write_text("complete\n")
    return target


def _filtered(source: Path, target: Path, drop: set[str]) -> None:
    """``source`` without the rows of the groups in ``drop``; its metadata kept."""
    table = pq.read_table(source)
    keep = pc.invert(pc.is_in(table["group_id"].cast(pa.string()), pa.array(sorted(drop))))
    tmp = target.with_suffix(".tmp")
    pq.write_table(table.filter(keep), tmp)
    tmp.replace(target)


def build_experiment_evalset(
    run: Path, target: Path, pool: Path, truth: TruthSource, max_groups: int | None
) -> Path:
    """The evaluation set of ``run``'s groups off the ``pool`` corpus's ground; built once
    (a half-built one is rebuilt)."""
    if (target / DONE).exists():
        return target
    summary = build_evalset(
        run, target, truth, exclude=[str(pool)],
        params=EvalSetParams(max_groups=max_groups), overwrite=True,
    )  # fmt: skip
    (target / DONE).write_text(summary.describe() + "\n")
    return target
