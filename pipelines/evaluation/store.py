"""The labels of an evaluation set: ``evalset.zarr`` beside its corpus (docs/evaluation.md).

``training.evaluation_set`` reads what this writes; ``tests/test_evaluation.py`` holds the two
together (training imports nothing of ours, so the format is written down twice).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

EVALSET_FORMAT = "terracorpus-evalset"
EVALSET_VERSION = 1
LABELS_STORE = "evalset.zarr"
ATTRS_KEY = "terracorpus_evalset"
UNKNOWN = 255  # change maps: truth missing on either date


@dataclass(frozen=True)
class EvalLabels:
    """Per group: id, split, year, majority class, class map; per change pair: group, the two
    image ids, their years and the change map (0 same, 1 changed, 255 unknown)."""

    group_id: NDArray[Any]
    split: NDArray[Any]
    year: NDArray[np.int32]
    label: NDArray[np.int16]
    truth: NDArray[np.uint8]  # (G, S, S)
    pair_group: NDArray[Any]
    image_a: NDArray[Any]
    image_b: NDArray[Any]
    year_a: NDArray[np.int32]
    year_b: NDArray[np.int32]
    change: NDArray[np.uint8]  # (P, S, S)
    classes: Mapping[int, str]
    chip_size_m: float
    truth_res_m: float

    @classmethod
    def of(
        cls,
        rows: Sequence[tuple[str, str, int, int, NDArray[np.uint8]]],
        pairs: Sequence[tuple[str, str, str, int, int, NDArray[np.uint8]]],
        classes: Mapping[int, str],
        chip_size_m: float,
        truth_res_m: float,
    ) -> EvalLabels:
        shape = rows[0][4].shape
        return cls(
            group_id=np.array([r[0] for r in rows], dtype=object),
            split=np.array([r[1] for r in rows], dtype=object),
            year=np.array([r[2] for r in rows], dtype=np.int32),
            label=np.array([r[3] for r in rows], dtype=np.int16),
            truth=np.stack([r[4] for r in rows]).astype(np.uint8),
            pair_group=np.array([p[0] for p in pairs], dtype=object),
            image_a=np.array([p[1] for p in pairs], dtype=object),
            image_b=np.array([p[2] for p in pairs], dtype=object),
            year_a=np.array([p[3] for p in pairs], dtype=np.int32),
            year_b=np.array([p[4] for p in pairs], dtype=np.int32),
            change=(
                np.stack([p[5] for p in pairs]).astype(np.uint8)
                if pairs
                else np.zeros((0, *shape), dtype=np.uint8)
            ),
            classes=dict(classes),
            chip_size_m=float(chip_size_m),
            truth_res_m=float(truth_res_m),
        )


def _array(group: zarr.Group, name: str, values: NDArray[Any], dims: tuple[str, ...]) -> None:
    is_str = values.dtype == object or values.dtype.kind == "U"
    shape = values.shape
    chunks = (max(1, min(len(values), 4096)), *shape[1:]) if len(shape) else ()
    arr = group.create_array(
        name, shape=shape, dtype=str if is_str else values.dtype, chunks=chunks,
        dimension_names=dims,
    )  # fmt: skip
    if len(values):
        arr[...] = values.astype(str) if is_str else values


def write_labels(out: Path, labels: EvalLabels) -> Path:
    """Write ``evalset.zarr`` into ``out`` under a temporary name, then rename it into place
    (a store that exists is complete)."""
    final = out / LABELS_STORE
    partial = out / (LABELS_STORE + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    root = zarr.open_group(str(partial), mode="w", zarr_format=3)
    _array(root, "groups/group_id", labels.group_id, ("group",))
    _array(root, "groups/split", labels.split, ("group",))
    _array(root, "groups/year", labels.year, ("group",))
    _array(root, "groups/label", labels.label, ("group",))
    _array(root, "groups/truth", labels.truth, ("group", "y", "x"))
    _array(root, "change/group_id", labels.pair_group, ("pair",))
    _array(root, "change/image_a", labels.image_a, ("pair",))
    _array(root, "change/image_b", labels.image_b, ("pair",))
    _array(root, "change/year_a", labels.year_a, ("pair",))
    _array(root, "change/year_b", labels.year_b, ("pair",))
    _array(root, "change/map", labels.change, ("pair", "y", "x"))
    root.attrs[ATTRS_KEY] = {
        "format": EVALSET_FORMAT,
        "format_version": EVALSET_VERSION,
        "classes": {str(k): v for k, v in sorted(labels.classes.items())},
        "chip_size_m": labels.chip_size_m,
        "truth_res_m": labels.truth_res_m,
        "counts": {
            "groups": {s: int((labels.split == s).sum()) for s in ("train", "val", "test")},
            "change_pairs": len(labels.pair_group),
        },
    }
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return final
