"""Reading an evaluation set (docs/evaluation.md): a corpus plus ``evalset.zarr`` of labels.

The corpus holds the pixels of every labelled group with all its members (read with
:class:`~terracorpus.training.corpus.CorpusReader`); ``evalset.zarr`` holds, per group, its split
(train/val/test, by area), year, majority class and class map, and per change pair the two
images and the true change map. ``terracorpus evalset build`` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from terracorpus.training.corpus import CorpusReader, open_corpus
from terracorpus.training.errors import CorpusFormatError, EvaluationError

EVALSET_FORMAT = "terracorpus-evalset"
EVALSET_VERSIONS = (1,)
LABELS_STORE = "evalset.zarr"
ATTRS_KEY = "terracorpus_evalset"
UNKNOWN = 255


@dataclass(frozen=True)
class ChangePairs:
    """Change pairs: index of the pair's group in the evaluation set, the two images as
    (sensor, row) of the corpus, their years, and the maps (P, S, S): 0 same, 1 changed,
    255 unknown."""

    group: np.ndarray  # (P,) int64
    image_a: list[tuple[str, int]]
    image_b: list[tuple[str, int]]
    year_a: np.ndarray  # (P,)
    year_b: np.ndarray  # (P,)
    change: np.ndarray  # (P, S, S) uint8

    def __len__(self) -> int:
        return len(self.group)


@dataclass(frozen=True)
class EvalSet:
    """An opened evaluation set. Arrays are per labelled group, in the labels' order."""

    path: str
    reader: CorpusReader
    corpus_group: np.ndarray  # (G,) row of each group in the corpus's group tables
    split: np.ndarray  # (G,) str: train, val, test
    year: np.ndarray  # (G,) int
    label: np.ndarray  # (G,) int, majority class code
    truth: np.ndarray  # (G, S, S) uint8 class codes, 0 nodata
    pairs: ChangePairs
    classes: dict[int, str]
    chip_size_m: float
    truth_res_m: float

    def __len__(self) -> int:
        return len(self.split)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)


def open_evalset(path: str | Path) -> EvalSet:
    """Open the evaluation set in directory ``path``; raises :class:`EvaluationError` (or
    :class:`CorpusFormatError` for its corpus) naming what is wrong."""
    root = _labels_root(str(path))
    attrs = _check_attrs(root, str(path))
    try:
        reader = open_corpus(path)
    except CorpusFormatError as e:
        raise EvaluationError(f"{path} holds no readable corpus of the evaluation set: {e}") from e
    group_rows = _group_rows(reader, _strings(root, "groups/group_id"), str(path))
    pair_groups = _strings(root, "change/group_id")
    where = {str(reader.groups.group_id[r]): i for i, r in enumerate(group_rows)}
    rows_of = _image_rows(reader)
    pairs = ChangePairs(
        group=np.array([where[g] for g in pair_groups], dtype=np.int64),
        image_a=[_image(rows_of, i, str(path)) for i in _strings(root, "change/image_a")],
        image_b=[_image(rows_of, i, str(path)) for i in _strings(root, "change/image_b")],
        year_a=_values(root, "change/year_a"),
        year_b=_values(root, "change/year_b"),
        change=_values(root, "change/map"),
    )
    return EvalSet(
        path=str(path),
        reader=reader,
        corpus_group=group_rows,
        split=_strings(root, "groups/split"),
        year=_values(root, "groups/year").astype(np.int64),
        label=_values(root, "groups/label").astype(np.int64),
        truth=_values(root, "groups/truth"),
        pairs=pairs,
        classes={int(k): str(v) for k, v in attrs["classes"].items()},
        chip_size_m=float(attrs["chip_size_m"]),
        truth_res_m=float(attrs["truth_res_m"]),
    )


def _labels_root(path: str) -> zarr.Group:
    store = f"{path.rstrip('/')}/{LABELS_STORE}"
    try:
        return zarr.open_group(store, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
        raise EvaluationError(
            f"{path} is not an evaluation set (no {LABELS_STORE}); build one with "
            "`terracorpus evalset build --run RUN --world WORLD --exclude CORPUS --out DIR`"
        ) from e


def _check_attrs(root: zarr.Group, path: str) -> dict[str, Any]:
    attrs = root.attrs.asdict().get(ATTRS_KEY)
    if not isinstance(attrs, dict) or attrs.get("format") != EVALSET_FORMAT:
        raise EvaluationError(f"{path}/{LABELS_STORE} is not a terracorpus evaluation set")
    version = attrs.get("format_version")
    if version not in EVALSET_VERSIONS:
        raise EvaluationError(
            f"{path}: evaluation-set format version {version!r}; this reader reads "
            f"{list(EVALSET_VERSIONS)}: rebuild it with this version of terracorpus"
        )
    return attrs


def _values(root: zarr.Group, key: str) -> np.ndarray:
    node = root[key]
    if not isinstance(node, zarr.Array):
        raise EvaluationError(f"{key} in {LABELS_STORE} is not an array; rebuild the set")
    return np.asarray(node[:])


def _strings(root: zarr.Group, key: str) -> np.ndarray:
    return _values(root, key).astype(object).astype(str)


def _group_rows(reader: CorpusReader, ids: np.ndarray, path: str) -> np.ndarray:
    rows = {str(g): i for i, g in enumerate(reader.groups.group_id)}
    missing = [g for g in ids if g not in rows]
    if missing:
        raise EvaluationError(
            f"{path}: {len(missing)} labelled groups are not in its corpus (e.g. {missing[0]}); "
            "the labels and the corpus come from different builds: rebuild the set"
        )
    return np.array([rows[g] for g in ids], dtype=np.int64)


def _image_rows(reader: CorpusReader) -> dict[str, tuple[str, int]]:
    return {
        image_id: (sensor, row)
        for sensor in reader.sensors
        for row, image_id in enumerate(reader.image_ids(sensor))
    }


def _image(rows: dict[str, tuple[str, int]], image_id: str, path: str) -> tuple[str, int]:
    if image_id not in rows:
        raise EvaluationError(
            f"{path}: change image {image_id} is not in its corpus; rebuild the set"
        )
    return rows[image_id]
