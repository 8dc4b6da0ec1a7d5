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


def synthetic_inputs(
    n_groups: int,
    sensors: Sequence[str] = ("sentinel-2-l2a", "landsat-oli-c2-l2"),
    *,
    chip_size_m: float = 320.0,
    members_per_sensor: int = 2,
    seed: int = 0,
) -> tuple[list[GroupSpec], list[ImageSpec], dict[str, MemoryImage], dict[str, SensorLayout]]:
    """Groups, images and arrays of a small made-up corpus (smooth fields plus noise).

    Groups sit on a UTM 15N grid; the anchor is the first sensor's first member. Pixels are
    spatially smooth (like land cover) so codec ratios on them mean something.
    """
    from terracorpus.catalogs.sensors import builtin_registry

    reg = builtin_registry()
    layouts = {s: SensorLayout.from_sensor(reg.get(s), chip_size_m) for s in sensors}
    rng = np.random.default_rng(seed)
    groups, images, arrays = [], [], {}
    for g in range(n_groups):
        gid = f"g{g:05d}"
        x0, y0 = 500_000.0 + (g % 50) * chip_size_m, 4_000_000.0 - (g // 50) * chip_size_m
        bounds = (x0, y0 - chip_size_m, x0 + chip_size_m, y0)
        members = []
        for s in sensors:
            lay = layouts[s]
            for m in range(members_per_sensor):
                scene = f"{s}-scene-{(g // 10) * 10 + m}"
                spec = ImageSpec(
                    image_id=f"{gid}/{scene}",
                    sensor=s,
                    group_id=gid,
                    scene_id=scene,
                    datetime_ns=int(1.6e18) + m * 86_400 * 10**9 * 40,
                    crs="EPSG:32615",
                    transform=(lay.gsd, 0.0, x0, 0.0, -lay.gsd, y0),
                    gsd=lay.gsd,
                    lon=-93.0 + g * 0.003,
                    lat=36.1,
                    cloud_cover=float(m * 10),
                    source_item=scene,
                    source_href=f"http://127.0.0.1/collections/x/items/{scene}",
                )
                images.append(spec)
                members.append((s, spec.image_id))
                arrays[spec.image_id] = _smooth_image(rng, lay, label=g % 5)
        lon0 = -93.0 + g * 0.003
        groups.append(
            GroupSpec(
                gid, tuple(members), "EPSG:32615", bounds, (lon0, 36.1, lon0 + 0.003, 36.103), g % 7
            )
        )
    return groups, images, arrays, layouts


def _smooth_image(rng: np.random.Generator, layout: SensorLayout, label: int) -> MemoryImage:
    h, w = layout.chip_shape
    nb = len(layout.bands)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = 1500 + 1200 * np.sin(6 * xx + rng.uniform(0, 6)) * np.cos(4 * yy + rng.uniform(0, 6))
    gains = rng.uniform(0.6, 1.6, size=(nb, 1, 1))
    noise = rng.normal(0, 40, size=(nb, h, w))
    info = np.iinfo(layout.dtype) if np.dtype(layout.dtype).kind in "iu" else None
    pix = base[None] * gains + noise
    if info is not None:
        pix = np.clip(pix, info.min + 1, info.max)
    valid = np.ones((h, w), dtype="uint8")
    valid[: h // 8] = 0
    return MemoryImage(pix.astype(layout.dtype), valid, chip_cloud=0.125, label=label)
