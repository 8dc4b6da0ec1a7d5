"""What a curation run will cost, before it runs (``terracorpus curate --plan``).

From the search results (``scenes.parquet``) and a small sample of real work, measured here:

- **group**: a few tiles (chosen at quantiles of the tiles' scene counts) are grouped; their
  groups, images and CPU seconds per scene scale to every tile's scenes;
- **describe**: a few batches of the sampled groups' chips are read and described, as the
  workers would (same reads, same access); wall seconds per image scale to every image;
- **dedup**: hierarchical affinity propagation on random descriptors of the real width and a
  sample size, scaled linearly to the estimated anchor chips (its blocks are of fixed size);
- **materialize**: a batch of the sampled images is read as materialize reads them (full
  resolution, nearest neighbour, no overviews); seconds per image scale to every image (an
  upper bound: dedup keeps a share of the groups).

Bytes are those of the read windows (pixels x bands x sample size), not the compressed
transfer. Wall time on the cluster is the work divided over ``workers x threads``. The
sample runs in this process, in a temporary directory: the run directory gets ``plan.json``.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from terracorpus.catalogs.frames import scenes_from_frame
from terracorpus.catalogs.sensors import load_registry
from terracorpus.curation.descriptors import descriptor_names
from terracorpus.curation.groups import GroupParams, ImageGroup, groups_from_frame, screen_scenes
from terracorpus.curation.hierarchical import hierarchical_ap
from terracorpus.curation.params import project
from terracorpus.pipelines.access import read_access
from terracorpus.pipelines.config import RunConfig
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.pixels import ChipRequest, read_scene_chips
from terracorpus.pipelines.rundir import RunDir, read_parquet, write_json_atomic
from terracorpus.pipelines.stages.describe import Batch, describe_batch, plan_batches
from terracorpus.pipelines.stages.group import TileTask, group_tile_task, tile_tasks

T = TypeVar("T")


@dataclass(frozen=True)
class StageEstimate:
    """One stage's estimated work on the configured cluster."""

    stage: str
    tasks: int
    items: int  # tiles, images or anchor chips
    item: str
    read_bytes: int
    work_s: float  # seconds of one worker thread
    wall_s: float  # on the cluster
    basis: str  # what was measured


@dataclass(frozen=True)
class Plan:
    scenes: int
    tiles: int
    groups: int
    images: int
    slots: int  # workers x threads
    stages: tuple[StageEstimate, ...]

    @property
    def wall_s(self) -> float:
        return sum(s.wall_s for s in self.stages)

    def table(self) -> str:
        """The plan as an aligned text table."""
        head = f"{'stage':<12}{'tasks':>9}{'items':>12}  {'item':<12}{'read':>10}{'work':>10}{'wall':>10}"
        lines = [
            f"plan: {self.scenes} scenes, {self.tiles} tiles -> ~{self.groups} groups, "
            f"~{self.images} images; cluster of {self.slots} worker thread(s)",
            head,
        ]
        for s in self.stages:
            lines.append(
                f"{s.stage:<12}{s.tasks:>9}{s.items:>12}  {s.item:<12}"
                f"{_bytes(s.read_bytes):>10}{_secs(s.work_s):>10}{_secs(s.wall_s):>10}"
            )
        lines.append(
            f"{'total':<12}{'':>9}{'':>12}  {'':<12}{'':>10}{'':>10}{_secs(self.wall_s):>10}"
        )
        lines += [f"  {s.stage}: {s.basis}" for s in self.stages]
        return "\n".join(lines)


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def _secs(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """fn(), its wall seconds and its process CPU seconds."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def _sample(items: Sequence[T], sizes: Sequence[int], k: int) -> list[T]:
    """Up to ``k`` items at quantiles of ``sizes`` (deterministic)."""
    order = sorted(range(len(items)), key=lambda i: (sizes[i], i))
    picks = sorted({order[round(q * (len(order) - 1))] for q in np.linspace(0.2, 0.8, k)})
    return [items[i] for i in picks]


def make_plan(
    config: RunConfig, run: RunDir, *, tiles: int = 3, batches: int = 4, ap_sample: int = 3000
) -> Plan:
    """Estimate the run from its scenes and a measured sample (see the module doc)."""
    scenes = scenes_from_frame(run.read_table("scenes.parquet", needed_by="the plan"))
    params = project(config.group, GroupParams)
    scenes = screen_scenes(scenes, params)[0]
    slots = config.dask.workers * config.dask.threads_per_worker
    with tempfile.TemporaryDirectory(prefix="terracorpus-plan-") as tmp:
        tasks = tile_tasks(scenes, params, Path(tmp) / "group")
        group, groups = _group_estimate(tasks, tiles, slots)
        n_groups, images = group.items, _images(groups, group)
        sample = (config, scenes, groups, images)
        describe = _read_estimate(*sample, batches, Path(tmp), slots, full=False)
        materialize = _read_estimate(*sample, 1, Path(tmp), slots, full=True)
    dedup = _dedup_estimate(config, n_groups, ap_sample, slots)
    group = replace(group, items=len(tasks), item="tiles")
    plan = Plan(
        scenes=len(scenes),
        tiles=len(tasks),
        groups=n_groups,
        images=images,
        slots=slots,
        stages=(group, describe, dedup, materialize),
    )
    write_json_atomic(run.path("plan.json"), {**asdict(plan), "wall_s": plan.wall_s})
    return plan


def _group_estimate(
    tasks: list[TileTask], k: int, slots: int
) -> tuple[StageEstimate, list[ImageGroup]]:
    sizes = [len(t.scenes) for t in tasks]
    sample = _sample(tasks, sizes, k)
    groups: list[ImageGroup] = []
    cpu = 0.0
    n = 0
    for t in sample:
        c0 = time.process_time()
        done = group_tile_task(t)
        cpu += time.process_time() - c0
        n += done.groups
        groups += groups_from_frame(read_parquet(Path(t.path)))
    scale = sum(sizes) / max(1, sum(len(t.scenes) for t in sample))
    work = cpu * scale
    est = StageEstimate(
        stage="group",
        tasks=len(tasks),
        items=round(n * scale),
        item="groups",
        read_bytes=0,
        work_s=work,
        wall_s=_wall(work, len(tasks), slots),
        basis=f"{len(sample)} of {len(tasks)} tiles grouped: {cpu:.2f} CPU s for {n} groups, "
        f"scaled by scenes per tile (x{scale:.1f})",
    )
    return est, groups


def _images(groups: Sequence[ImageGroup], group: StageEstimate) -> int:
    if not groups:
        return 0
    return round(group.items * sum(len(g.members) for g in groups) / len(groups))


def _wall(work_s: float, tasks: int, slots: int) -> float:
    """Work spread over the slots, but no faster than the rounds of tasks allow."""
    if tasks == 0:
        return 0.0
    rounds = math.ceil(tasks / slots)
    return max(work_s / slots, work_s / tasks * rounds)


def _read_sample(
    config: RunConfig,
    scenes: Sequence[Any],
    groups: Sequence[ImageGroup],
    k: int,
    scratch: Path,
    full: bool,
) -> tuple[list[Batch], float, int]:
    """Describe ``k`` batches of the sample (at full resolution if ``full``): the batches,
    wall seconds, images read."""
    cfg = config.describe.model_copy(update={"full_resolution": full})
    scratch.mkdir(parents=True, exist_ok=True)
    registry = load_registry(*config.search.sensor_files)
    planned = plan_batches(groups, scenes, registry, cfg, scratch, read_access(config))
    if not planned:
        return [], 0.0, 0
    chosen = _sample(planned, [len(b.chips) for b in planned], k)
    work = _materialize_read if full else describe_batch
    _, wall, _ = _timed(lambda: [work(b) for b in chosen])
    return planned, wall, sum(len(b.chips) for b in chosen)


def _materialize_read(batch: Batch) -> None:
    """Read a batch's chips as materialize's shard reader does (its corpus grid is the
    sensor's finest pixel size: the scene's GSD)."""
    reqs = [ChipRequest(c.chip_id, c.bounds, c.crs, batch.read_gsd) for c in batch.chips]
    read_scene_chips(
        batch.scene,
        batch.sensor,
        reqs,
        resampling="nearest",
        use_overviews=False,
        access=batch.access,
    )


def _window_bytes(batches: Sequence[Batch], size_m: float) -> float:
    """Bytes of the read windows per image, over the batches' images."""
    total = n = 0.0
    for b in batches:
        side = size_m / b.read_gsd
        total += len(b.chips) * side * side * len(b.sensor.bands) * 2  # mostly 16-bit
        n += len(b.chips)
    return total / max(1.0, n)


def _read_estimate(
    config: RunConfig,
    scenes: Sequence[Any],
    groups: Sequence[ImageGroup],
    images: int,
    k: int,
    tmp: Path,
    slots: int,
    *,
    full: bool,
) -> StageEstimate:
    """describe (``full=False``, ``k`` batches) or materialize (``full=True``) from reads of
    the sample's images, timed."""
    stage = "materialize" if full else "describe"
    planned, wall, read = _read_sample(config, scenes, groups, k, tmp / stage, full)
    if not read:
        raise StageError("the plan found no image to read in its sample of tiles")
    work = wall / read * images
    tasks = round(images * len(planned) / max(1, sum(len(b.chips) for b in planned)))
    how = (
        "as materialize reads them; every group kept (an upper bound)" if full else "and described"
    )
    return StageEstimate(
        stage=stage,
        tasks=max(1, tasks),
        items=images,
        item="images",
        read_bytes=round(images * _window_bytes(planned, config.group.chip_size_m)),
        work_s=work,
        wall_s=_wall(work, tasks, slots),
        basis=f"{read} images of {k} batch(es) read {how} in {wall:.2f} s wall",
    )


def _dedup_estimate(config: RunConfig, anchors: int, sample: int, slots: int) -> StageEstimate:
    n = max(2, min(anchors, sample))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, len(descriptor_names())), dtype=np.float32)
    keys = rng.integers(0, max(1, n // config.dedup.ap.partition_size), n)
    _, _, cpu = _timed(lambda: hierarchical_ap(X, keys, config.dedup.ap))
    work = cpu * anchors / n
    tasks = max(1, math.ceil(anchors / config.dedup.ap.partition_size))
    return StageEstimate(
        stage="dedup",
        tasks=tasks,
        items=anchors,
        item="anchor chips",
        read_bytes=0,
        work_s=work,
        wall_s=_wall(work, tasks, slots),
        basis=f"AP on {n} random {X.shape[1]}-value descriptors: {cpu:.2f} CPU s, scaled linearly",
    )
