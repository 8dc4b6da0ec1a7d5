"""Writing a corpus from arrays already in memory (tests, benchmarks, custom pipelines).

:func:`write_arrays` takes per-image pixel and validity arrays plus their metadata and
writes a corpus through exactly the same writer as ``materialize``; only the reader differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client

from terracorpus.pipelines.corpus.location import CorpusLocation
from terracorpus.pipelines.corpus.plan import (
    GroupSpec,
    ImageSpec,
    SensorLayout,
    plan_corpus,
)
from terracorpus.pipelines.corpus.shards import ShardPixels
from terracorpus.pipelines.corpus.writer import Provenance, WriteSummary, write_corpus


@dataclass(frozen=True)
class MemoryImage:
    """An image's pixels ``(band, H, W)``, validity ``(H, W)`` and optional extras."""

    pixels: np.ndarray
    valid: np.ndarray
    chip_cloud: float = float("nan")
    label: int | None = None


@dataclass(frozen=True)
class MemoryReader:
    """A shard reader over a dict of in-memory images (pickled to workers with the task)."""

    images: Mapping[str, MemoryImage]

    def __call__(self, images: Sequence[ImageSpec], layout: SensorLayout) -> ShardPixels:
        got = [self.images[i.image_id] for i in images]
        labels = [g.label for g in got]
        return ShardPixels(
            pixels=np.stack([g.pixels for g in got]),
            valid=np.stack([g.valid for g in got]).astype("uint8"),
            transforms=[None] * len(got),
            chip_cloud=[g.chip_cloud for g in got],
            labels=None
            if all(v is None for v in labels)
            else [-1 if v is None else v for v in labels],
        )

    def for_images(self, images: Sequence[ImageSpec]) -> MemoryReader:
        return MemoryReader({i.image_id: self.images[i.image_id] for i in images})


def write_arrays(
    target: str | Path | CorpusLocation,
    groups: Sequence[GroupSpec],
    images: Sequence[ImageSpec],
    arrays: Mapping[str, MemoryImage],
    layouts: Mapping[str, SensorLayout],
    *,
    scratch: Path,
    shard_mb: float = 64.0,
    max_images_per_shard: int | None = 256,
    codec: str = "blosc-zstd",
    level: int = 3,
    provenance: Provenance | None = None,
    client: Client | None = None,
    storage_options: dict[str, Any] | None = None,
) -> WriteSummary:
    """Write a new corpus at ``target`` from in-memory arrays, keyed by image id."""
    location = (
        target if isinstance(target, CorpusLocation) else CorpusLocation.of(target, storage_options)
    )
    plan = plan_corpus(groups, images, layouts, shard_mb, max_images_per_shard=max_images_per_shard)
    return write_corpus(
        location,
        plan,
        MemoryReader(arrays),
        scratch=scratch,
        provenance=provenance or Provenance(),
        codec=codec,
        level=level,
        client=client,
    )
