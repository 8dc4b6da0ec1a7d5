"""Writing one shard: the Dask task of the corpus writer.

A task gets a :class:`ShardTask` (where the store is, which rows, which images, and a reader
that turns image specs into pixels), writes the pixel shard and the validity shard whole,
and returns a :class:`ShardResult` with the sha256 of each shard object and of each image's
raw pixel bytes. Tasks never write the same shard twice and never touch metadata arrays.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import zarr

from terracorpus.pipelines.corpus.format import SENSORS_GROUP
from terracorpus.pipelines.corpus.location import CorpusLocation
from terracorpus.pipelines.corpus.plan import Affine6, ImageSpec, SensorLayout, ShardSpec
from terracorpus.pipelines.errors import CorpusError
from terracorpus.pipelines.rundir import Failure


@dataclass
class ShardPixels:
    """What a reader returns for a shard's images, in their order.

    ``pixels`` is ``(n, band, H, W)`` in the sensor dtype, ``valid`` ``(n, H, W)`` uint8.
    ``transforms`` are the grids actually read (``None``: keep the planned one);
    ``chip_cloud`` the cloud + shadow fraction (NaN if unknown); ``labels`` the majority
    land-cover class per image (``None`` when the source has no labels).
    """

    pixels: np.ndarray
    valid: np.ndarray
    transforms: list[Affine6 | None]
    chip_cloud: list[float]
    labels: list[int] | None = None
    failures: list[Failure] = field(default_factory=list)


class ShardReader(Protocol):
    """Reads the pixels of a shard's images (picklable: it travels to Dask workers).

    ``for_images`` returns a reader holding only what those images need (their scene
    records, say), so each task ships little.
    """

    def __call__(self, images: Sequence[ImageSpec], layout: SensorLayout) -> ShardPixels: ...

    def for_images(self, images: Sequence[ImageSpec]) -> ShardReader: ...


@dataclass(frozen=True)
class ShardTask:
    location: CorpusLocation
    store_name: str
    shard: ShardSpec
    layout: SensorLayout
    reader: ShardReader


@dataclass
class ShardResult:
    """Digests and per-image facts of a written shard (saved as its done marker)."""

    sensor: str
    index: int
    start: int
    stop: int
    objects: dict[str, dict[str, Any]]
    images: list[dict[str, Any]]
    failures: list[dict[str, Any]] = field(default_factory=list)


def shard_object(sensor: str, array: str, index: int, ndim: int) -> str:
    """Store-relative key of shard ``index`` of ``array`` (zarr v3 default key encoding)."""
    return f"{SENSORS_GROUP}/{sensor}/{array}/c/{index}" + "/0" * (ndim - 1)


def write_shard(task: ShardTask) -> ShardResult:
    """Read a shard's images, write its pixel and validity shards whole, and digest them."""
    shard, layout = task.shard, task.layout
    data = task.reader(shard.images, layout)
    _check_shapes(data, shard, layout)
    root = zarr.open_group(task.location.store(name=task.store_name), mode="r+")
    pixels_arr = root[f"{SENSORS_GROUP}/{shard.sensor}/pixels"]
    valid_arr = root[f"{SENSORS_GROUP}/{shard.sensor}/valid"]
    assert isinstance(pixels_arr, zarr.Array) and isinstance(valid_arr, zarr.Array)
    pixels, valid = data.pixels, data.valid
    with ThreadPoolExecutor(max_workers=1) as pool:  # digests overlap the zarr write
        facts = pool.submit(_image_facts, shard, data)
        _write_rows(pixels_arr, valid_arr, shard, pixels, valid)
        objects = _digest_objects(task)
        return ShardResult(
            sensor=shard.sensor,
            index=shard.index,
            start=shard.start,
            stop=shard.stop,
            objects=objects,
            images=facts.result(),
            failures=[f.__dict__ for f in data.failures],
        )


def _write_rows(
    pixels_arr: zarr.Array[Any],
    valid_arr: zarr.Array[Any],
    shard: ShardSpec,
    pixels: np.ndarray,
    valid: np.ndarray,
) -> None:
    if shard.keep >= 0:  # appending into a partial shard: rewrite it whole, old rows first
        pixels = np.concatenate([pixels_arr[shard.start : shard.keep], pixels])
        valid = np.concatenate([valid_arr[shard.start : shard.keep], valid])
    pixels_arr[shard.start : shard.stop] = pixels
    valid_arr[shard.start : shard.stop] = valid


def _digest_objects(task: ShardTask) -> dict[str, dict[str, Any]]:
    """sha256 and size of the shard objects as stored (read back: the codec's output)."""
    fs = task.location.fs()
    objects = {}
    for name, ndim in (("pixels", 4), ("valid", 3)):
        key = shard_object(task.shard.sensor, name, task.shard.index, ndim)
        blob = fs.cat_file(task.location.path(f"{task.store_name}/{key}"))
        objects[key] = {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
    return objects


def image_sha256(pixels: np.ndarray) -> str:
    """Digest of one image's raw pixel bytes (C order, native dtype)."""
    return hashlib.sha256(np.ascontiguousarray(pixels).data).hexdigest()


def _image_facts(shard: ShardSpec, data: ShardPixels) -> list[dict[str, Any]]:
    out = []
    for i, img in enumerate(shard.images):
        transform = data.transforms[i] or img.transform
        cloud = data.chip_cloud[i]
        out.append(
            {
                "image_id": img.image_id,
                "sha256": image_sha256(data.pixels[i]),
                "transform": [float(v) for v in transform],
                "chip_cloud": None if cloud is None or math.isnan(cloud) else float(cloud),
                "label": None if data.labels is None else int(data.labels[i]),
            }
        )
    return out


def _check_shapes(data: ShardPixels, shard: ShardSpec, layout: SensorLayout) -> None:
    n = len(shard.images)
    h, w = layout.chip_shape
    want_p = (n, len(layout.bands), h, w)
    if data.pixels.shape != want_p or data.valid.shape != (n, h, w):
        raise CorpusError(
            f"shard {shard.key}: reader returned pixels {data.pixels.shape} and valid "
            f"{data.valid.shape}; the layout needs {want_p} and {(n, h, w)}"
        )
    if data.pixels.dtype != np.dtype(layout.dtype):
        raise CorpusError(
            f"shard {shard.key}: reader returned {data.pixels.dtype} pixels; sensor "
            f"{shard.sensor} stores {layout.dtype} (pixels are never converted)"
        )
    if len(data.transforms) != n or len(data.chip_cloud) != n:
        raise CorpusError(f"shard {shard.key}: reader returned per-image lists of wrong length")
