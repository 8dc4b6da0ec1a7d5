"""Build an evaluation set: labelled groups on ground the pre-training corpus does not hold.

Input: a run directory whose ``group`` stage has run (``scenes.parquet``, ``groups.parquet``),
a :class:`~terracorpus.pipelines.evaluation.truth.TruthSource`, and the pre-training corpora
whose ground is to be left out. Every candidate group whose footprint overlaps a group of those
corpora is dropped; the rest are split train/val/test by area (square blocks of ground, whole
blocks to one split, split sizes balanced by group counts), and a group that overlaps a group
of another split is dropped too, so no ground is seen by two splits.

Output, in ``OUT`` (format in ``docs/evaluation.md``): a corpus of the groups with all their
members (written by the corpus writer, so ``training`` reads it with its corpus reader) and
``evalset.zarr`` with, per group, its split, year, majority class and class map (the
segmentation truth), and per change pair (two images of one sensor from two years of one group)
the true change map.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from distributed import Client
from numpy.typing import NDArray
from pyproj import Transformer

from terracorpus.catalogs.frames import scenes_from_frame
from terracorpus.catalogs.scene import SceneRecord
from terracorpus.catalogs.sensors import load_registry
from terracorpus.curation.groups import ImageGroup, groups_from_frame
from terracorpus.pipelines.access import read_access
from terracorpus.pipelines.config import RunConfig
from terracorpus.pipelines.corpus.format import (
    GROUPS_GROUP,
    check_root_attrs,
    corpus_meta,
    root_attrs,
    values_at,
)
from terracorpus.pipelines.corpus.location import CorpusLocation
from terracorpus.pipelines.corpus.plan import plan_corpus
from terracorpus.pipelines.corpus.scenes import SceneChipReader
from terracorpus.pipelines.corpus.writer import Provenance, write_corpus
from terracorpus.pipelines.evaluation.store import EvalLabels, write_labels
from terracorpus.pipelines.evaluation.truth import EvalSetError, TruthSource, truth_shape
from terracorpus.pipelines.rundir import config_for, read_parquet
from terracorpus.pipelines.stages.materialize import KeptGroup, chip_id, sensor_layouts, specs_of

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class EvalSetParams:
    """How the evaluation set is cut.

    Args:
        truth_res_m: pixel size of the stored class and change maps (metres).
        block_m: side of the square ground blocks that go whole to one split; None: 4 chips.
        fractions: shares of groups for train, val and test.
        max_groups: keep at most this many groups (a stable pseudo-random subset); None: all.
    """

    truth_res_m: float = 10.0
    block_m: float | None = None
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    max_groups: int | None = None


@dataclass
class EvalSetSummary:
    """What was built and what was left out, with counts."""

    out: Path
    groups: dict[str, int] = field(default_factory=dict)
    change_pairs: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        g = ", ".join(f"{k} {v}" for k, v in self.groups.items())
        c = ", ".join(f"{k} {v}" for k, v in self.change_pairs.items())
        d = ", ".join(f"{k} {v}" for k, v in self.dropped.items() if v)
        return f"evaluation set {self.out}: groups {g}; change pairs {c or 'none'}" + (
            f"; left out: {d}" if d else ""
        )


def build_evalset(
    run_dir: str | Path,
    out: str | Path,
    truth: TruthSource,
    *,
    exclude: Sequence[str] = (),
    params: EvalSetParams | None = None,
    client: Client | None = None,
    overwrite: bool = False,
) -> EvalSetSummary:
    """Build the evaluation set of ``run_dir``'s groups into ``out`` (a new directory).

    Args:
        run_dir: a run directory whose ``group`` stage has run.
        out: where to write (local directory); refused if it holds anything, unless ``overwrite``.
        truth: the class maps per year (the demo world's, or a user's labels rasters).
        exclude: corpora (directories or URLs) of pre-training; their ground is left out.
        params: how to cut the set.
        client: a Dask client for reading the pixels (None: in this process).
    """
    params = params or EvalSetParams()
    out = Path(out)
    _prepare_out(out, overwrite)
    cfg = config_for(run_dir, None, needs="groups.parquet")
    scenes = {s.id: s for s in scenes_from_frame(_table(run_dir, "scenes.parquet"))}
    groups = groups_from_frame(_table(run_dir, "groups.parquet"))
    summary = EvalSetSummary(out=out)
    groups = _disjoint_from(groups, exclude, summary)
    groups = _subsample(groups, params.max_groups, summary)
    splits = _split_by_area(groups, params, summary)
    labels = _labels(groups, splits, scenes, truth, params, summary)
    kept = [g for g in groups if g.group_id in set(labels.group_id)]
    _write_pixels(cfg, kept, scenes, out, client)
    write_labels(out, labels)
    return summary


# -- input -----------------------------------------------------------------------------------
def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise EvalSetError(f"{out} is not empty; choose a new --out or pass --overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _table(run_dir: str | Path, name: str) -> pd.DataFrame:
    path = Path(run_dir) / name
    if not path.is_file():
        raise EvalSetError(
            f"{run_dir} has no {name}; run `terracorpus curate --until group` (or the demo) first"
        )
    frame: pd.DataFrame = read_parquet(path)
    return frame


def _corpus_footprints(url: str) -> list[Any]:
    """Lon/lat footprints of a corpus's groups (their anchor-CRS squares, corners projected)."""
    location = CorpusLocation.of(url)
    try:
        root = location.open_group()
        check_root_attrs(root_attrs(root), location.url_of("corpus.zarr"), require_complete=True)
        n = int(corpus_meta(root)["counts"]["groups"])
        bounds = np.asarray(values_at(root, f"{GROUPS_GROUP}/bounds", slice(0, n)), dtype=float)
        crs = [str(c) for c in values_at(root, f"{GROUPS_GROUP}/crs", slice(0, n))]
    except Exception as e:
        raise EvalSetError(f"cannot read the corpus to exclude at {url}: {e}") from None
    out = []
    for c in sorted(set(crs)):
        to_lonlat = Transformer.from_crs(c, "EPSG:4326", always_xy=True)
        for b in bounds[[i for i, x in enumerate(crs) if x == c]]:
            xs, ys = to_lonlat.transform([b[0], b[2], b[2], b[0]], [b[1], b[1], b[3], b[3]])
            out.append(shapely.Polygon(zip(xs, ys, strict=True)))
    return out


def _overlaps(a: Any, b: Any) -> bool:
    """Whether two lon/lat footprints share ground: more than 1 % of the smaller one (edges
    and reprojection slivers of neighbouring chips are not shared ground)."""
    return bool(a.intersection(b).area > 0.01 * min(a.area, b.area))


def _disjoint_from(
    groups: Sequence[ImageGroup], exclude: Sequence[str], summary: EvalSetSummary
) -> list[ImageGroup]:
    """The groups whose footprint shares no ground with any group of the ``exclude`` corpora."""
    taken = [box for url in exclude for box in _corpus_footprints(url)]
    if not taken:
        return list(groups)
    tree = shapely.STRtree(taken)
    out = [
        g
        for g in groups
        if not any(_overlaps(g.footprint, taken[i]) for i in tree.query(g.footprint))
    ]
    summary.dropped["on pre-training ground"] = len(groups) - len(out)
    if not out:
        raise EvalSetError(
            "every candidate group overlaps the pre-training corpus: no ground is left to "
            "evaluate on; curate the corpus from part of the area, or evaluate on another run"
        )
    return out


def _stable_unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) of ``parts``."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _subsample(
    groups: list[ImageGroup], max_groups: int | None, summary: EvalSetSummary
) -> list[ImageGroup]:
    if max_groups is None or len(groups) <= max_groups:
        return groups
    keep = sorted(groups, key=lambda g: _stable_unit("subsample", g.group_id))[:max_groups]
    summary.dropped["over max_groups"] = len(groups) - max_groups
    return sorted(keep, key=lambda g: g.group_id)


# -- splits by area --------------------------------------------------------------------------
def _block_of(g: ImageGroup, block_m: float) -> tuple[str, int, int]:
    cx, cy = (g.bounds[0] + g.bounds[2]) / 2, (g.bounds[1] + g.bounds[3]) / 2
    return (g.crs, math.floor(cx / block_m), math.floor(cy / block_m))


def _split_by_area(
    groups: list[ImageGroup], params: EvalSetParams, summary: EvalSetSummary
) -> dict[str, str]:
    """Group id -> split: whole blocks of ground per split, blocks in a stable pseudo-random
    order, each to the split furthest below its share (so three blocks fill all three splits);
    then every group overlapping a group of another split is dropped (its ground would be
    seen by both)."""
    if not groups:
        raise EvalSetError("no candidate groups to build an evaluation set from")
    chip = float(np.median([g.chip_size_m for g in groups]))
    block_m = params.block_m or 4 * chip
    blocks: dict[tuple[str, int, int], list[ImageGroup]] = defaultdict(list)
    for g in groups:
        blocks[_block_of(g, block_m)].append(g)
    order = sorted(blocks, key=lambda b: _stable_unit("block", *b))
    share = np.asarray(params.fractions, dtype=float) / sum(params.fractions)
    filled = np.zeros(len(SPLITS))
    split: dict[str, str] = {}
    for b in order:  # each block to the split furthest below its share (ties: train, val, test)
        k = int(np.argmax((share * len(groups) - filled) / np.maximum(share, 1e-9)))
        for g in blocks[b]:
            split[g.group_id] = SPLITS[k]
        filled[k] += len(blocks[b])
    return _drop_straddling(groups, split, summary)


def _drop_straddling(
    groups: list[ImageGroup], split: dict[str, str], summary: EvalSetSummary
) -> dict[str, str]:
    feet = [g.footprint for g in groups]
    tree = shapely.STRtree(feet)
    drop = set()
    for i, g in enumerate(groups):
        for j in tree.query(feet[i]):
            other = groups[int(j)]
            if split[other.group_id] != split[g.group_id] and _overlaps(feet[i], feet[int(j)]):
                # drop the later split's group: test ground stays test ground
                drop.add(min(g.group_id, other.group_id, key=lambda k: SPLITS.index(split[k])))
    summary.dropped["straddling two splits"] = len(drop)
    return {k: v for k, v in split.items() if k not in drop}


# -- labels ------------------------------------------------------------------------------------
def _year(scene: SceneRecord) -> int:
    return int(pd.Timestamp(scene.datetime).year)


def _majority(codes: NDArray[np.uint8]) -> int:
    known = codes[codes != 0]
    return int(np.bincount(known).argmax()) if known.size else -1


def _labels(
    groups: list[ImageGroup],
    splits: dict[str, str],
    scenes: dict[str, SceneRecord],
    truth: TruthSource,
    params: EvalSetParams,
    summary: EvalSetSummary,
) -> EvalLabels:
    rows: list[tuple[str, str, int, int, NDArray[np.uint8]]] = []
    pairs: list[tuple[str, str, str, int, int, NDArray[np.uint8]]] = []
    no_truth = 0
    chip = float(np.median([g.chip_size_m for g in groups]))
    shape = truth_shape(chip, params.truth_res_m)
    cache: dict[tuple[str, int], NDArray[np.uint8]] = {}

    def truth_of(g: ImageGroup, year: int) -> NDArray[np.uint8]:
        key = (g.group_id, year)
        if key not in cache:
            cache[key] = truth(g.bounds, g.crs, year, shape)
        return cache[key]

    for g in groups:
        if g.group_id not in splits:
            continue
        year = _year(scenes[g.anchor_scene_id])
        codes = truth_of(g, year)
        cls = _majority(codes)
        if cls < 0:
            no_truth += 1
            continue
        rows.append((g.group_id, splits[g.group_id], year, cls, codes))
        pair = _change_pair(g, scenes)
        if pair is not None:
            (a, ya), (b, yb) = pair
            ta, tb = truth_of(g, ya), truth_of(g, yb)
            change = np.where((ta == 0) | (tb == 0), 255, (ta != tb).astype(np.uint8))
            pairs.append(
                (g.group_id, chip_id(g.group_id, a), chip_id(g.group_id, b), ya, yb,
                 change.astype(np.uint8))
            )  # fmt: skip
    summary.dropped["without truth"] = no_truth
    if not rows:
        raise EvalSetError("no group has any truth: is the truth source for this area?")
    summary.groups = dict(Counter(r[1] for r in rows))
    pair_split = {r[0]: r[1] for r in rows}
    summary.change_pairs = dict(Counter(pair_split[p[0]] for p in pairs))
    summary.classes = {
        str(truth.classes.get(c, c)): n for c, n in sorted(Counter(r[3] for r in rows).items())
    }
    return EvalLabels.of(rows, pairs, truth.classes, chip, params.truth_res_m)


def _change_pair(
    g: ImageGroup, scenes: dict[str, SceneRecord]
) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """Two images of one sensor from the group's earliest and latest year: of the finest
    sensor that has two years, the least cloudy scene of each year."""
    by_sensor: dict[str, dict[int, list[SceneRecord]]] = defaultdict(lambda: defaultdict(list))
    for m in g.members:
        s = scenes[m.scene_id]
        by_sensor[s.sensor][_year(s)].append(s)
    options = [(min(s.gsd for ys in years.values() for s in ys), name, years)
               for name, years in by_sensor.items() if len(years) >= 2]  # fmt: skip
    if not options:
        return None
    _, _, years = min(options, key=lambda o: (o[0], o[1]))
    first, last = min(years), max(years)

    def clearest(ss: list[SceneRecord]) -> str:
        best = min(ss, key=lambda s: (100.0 if s.cloud_cover is None else s.cloud_cover, s.id))
        return str(best.id)

    return (clearest(years[first]), first), (clearest(years[last]), last)


# -- pixels ------------------------------------------------------------------------------------
def _write_pixels(
    cfg: RunConfig,
    groups: list[ImageGroup],
    scenes: dict[str, SceneRecord],
    out: Path,
    client: Client | None,
) -> None:
    """The groups with every member, written by the corpus writer into ``out``."""
    kept = [KeptGroup(g, [m.scene_id for m in g.members], -1) for g in groups]
    registry = load_registry(*cfg.search.sensor_files)
    layouts = sensor_layouts(kept, scenes, registry)
    group_specs, image_specs = specs_of(kept, scenes, layouts, 0.0)
    plan = plan_corpus(
        group_specs, image_specs, layouts, cfg.corpus.shard_mb,
        max_images_per_shard=cfg.corpus.max_images_per_shard,
    )  # fmt: skip
    reader = SceneChipReader(
        {s.scene_id: scenes[s.scene_id] for s in image_specs},
        {s: registry.get(s) for s in layouts},
        strict=cfg.strict,
        access=read_access(cfg),
    )
    write_corpus(
        CorpusLocation.of(str(out)),
        plan,
        reader,
        scratch=out / "_scratch",
        provenance=Provenance(
            config=cfg.model_dump(mode="json"),
            config_hash="",
            collection_id="terracorpus-evalset",
        ),
        codec=cfg.corpus.codec,
        level=cfg.corpus.codec_level,
        client=client,
    )
