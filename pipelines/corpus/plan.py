"""What goes where in a corpus: image rows, shard boundaries and group tables, as pure data.

:func:`plan_corpus` orders the images of the kept groups by (sensor, group) so that one
shard's images are contiguous and share a sensor, sizes shards by a target size in MB, and
cuts the per-sensor image lists into :class:`ShardSpec` s, each written whole by one task.
Nothing here reads or writes files.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from terracorpus.catalogs.sensors import Sensor
from terracorpus.pipelines.errors import CorpusError

Affine6 = tuple[float, float, float, float, float, float]
Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class SensorLayout:
    """One sensor's arrays: band descriptions, dtype, chip shape ``(H, W)`` and fill value."""

    name: str
    bands: tuple[dict[str, Any], ...]
    dtype: str
    chip_shape: tuple[int, int]
    gsd: float
    fill_value: float = 0

    @classmethod
    def from_sensor(
        cls, sensor: Sensor, chip_size_m: float, gsd: float | None = None
    ) -> SensorLayout:
        """The layout of ``sensor`` for square chips of ``chip_size_m`` metres a side.

        ``gsd`` is the pixel size of the images' finest grid (default: the registry's, which
        is nominal: NAIP is 0.6 m or 1 m depending on the year and state). Bands at the
        registry's finest GSD take it as their own; coarser bands keep theirs (at least
        ``gsd``).
        """
        grid_gsd = sensor.gsd if gsd is None else float(gsd)
        side = max(1, round(chip_size_m / grid_gsd))
        bands = tuple(
            {
                "name": b.name,
                "common_name": b.common_name,
                "center_wavelength": b.center_wavelength,
                "full_width_half_max": b.full_width_half_max,
                "gsd": grid_gsd if b.gsd <= sensor.gsd else max(b.gsd, grid_gsd),
                "scale": b.scale,
                "offset": b.offset,
                "nodata": b.nodata,
            }
            for b in sensor.bands
        )
        nodata = sensor.bands[0].nodata
        dtypes = {b.dtype for b in sensor.bands}
        if len(dtypes) != 1:
            raise CorpusError(
                f"sensor {sensor.name!r} mixes band dtypes {sorted(dtypes)}; the corpus stores "
                "one pixel array per sensor and needs one dtype"
            )
        return cls(
            name=sensor.name,
            bands=bands,
            dtype=dtypes.pop(),
            chip_shape=(side, side),
            gsd=grid_gsd,
            fill_value=0 if nodata is None else nodata,
        )

    def radiometry(self, img: ImageSpec) -> tuple[list[float], list[float], list[float]]:
        """Scale, offset and nodata (NaN: none) of ``img``'s bands: its own, else the layout's."""
        n = len(self.bands)
        for name, values in (("scale", img.scale), ("offset", img.offset), ("nodata", img.nodata)):
            if values and len(values) != n:
                raise CorpusError(
                    f"image {img.image_id}: {len(values)} {name} values for the {n} bands of "
                    f"sensor {self.name}"
                )
        nodata = [math.nan if b["nodata"] is None else float(b["nodata"]) for b in self.bands]
        return (
            list(img.scale) or [float(b["scale"]) for b in self.bands],
            list(img.offset) or [float(b["offset"]) for b in self.bands],
            list(img.nodata) or nodata,
        )

    @property
    def image_nbytes(self) -> int:
        h, w = self.chip_shape
        return len(self.bands) * h * w * np.dtype(self.dtype).itemsize

    def attrs(self) -> dict[str, Any]:
        """The sensor's entry in the root ``sensors`` attribute."""
        return {
            "bands": [dict(b) for b in self.bands],
            "gsd": self.gsd,
            "dtype": self.dtype,
            "chip_size": list(self.chip_shape),
        }


@dataclass(frozen=True)
class ImageSpec:
    """One image chip to write: its identity and the metadata known before reading pixels.

    ``transform`` is the planned chip grid in ``crs``; a reader may return the grid it
    actually read, which then wins. Unknown numbers are NaN. ``scale``, ``offset`` and
    ``nodata`` are the image's own radiometry per band of its sensor's layout (empty: the
    layout's, i.e. the registry's); ``nodata`` NaN where a band has none.
    """

    image_id: str
    sensor: str
    group_id: str
    scene_id: str
    datetime_ns: int
    crs: str
    transform: Affine6
    gsd: float
    lon: float
    lat: float
    cloud_cover: float = math.nan
    sun_elevation: float = math.nan
    off_nadir: float = math.nan
    source_item: str = ""
    source_href: str = ""
    scale: tuple[float, ...] = ()
    offset: tuple[float, ...] = ()
    nodata: tuple[float, ...] = ()


@dataclass(frozen=True)
class GroupSpec:
    """One kept group: its members ``(sensor, image_id)``, the anchor first."""

    group_id: str
    members: tuple[tuple[str, str], ...]
    crs: str
    bounds: Bounds
    lonlat_bounds: Bounds
    cluster_id: int = -1
    split: str = "train"

    @property
    def anchor(self) -> tuple[str, str]:
        return self.members[0]


@dataclass(frozen=True)
class ShardSpec:
    """Rows ``[start, stop)`` of one sensor's arrays, written whole by one task.

    When appending, rows ``[start, keep)`` already hold images of the earlier corpus (the
    old last shard was partial); the task reads them back and rewrites the shard whole.
    """

    sensor: str
    index: int
    start: int
    stop: int
    images: tuple[ImageSpec, ...]
    keep: int = -1

    @property
    def first_new(self) -> int:
        return self.start if self.keep < 0 else self.keep

    @property
    def key(self) -> str:
        return f"{self.sensor}/{self.index:06d}"


@dataclass
class CorpusPlan:
    """Everything the writer needs: layouts, rows per shard, images in row order, groups."""

    layouts: dict[str, SensorLayout]
    images_per_shard: dict[str, int]
    images: dict[str, list[ImageSpec]]
    groups: list[GroupSpec]
    shards: list[ShardSpec]
    base_images: dict[str, int] = field(default_factory=dict)
    base_groups: int = 0

    def total_images(self, sensor: str) -> int:
        return self.base_images.get(sensor, 0) + len(self.images.get(sensor, []))

    def row_of(self) -> dict[str, tuple[str, int]]:
        """image_id -> (sensor, row) for this plan's new images."""
        out: dict[str, tuple[str, int]] = {}
        for sensor, imgs in self.images.items():
            base = self.base_images.get(sensor, 0)
            for i, img in enumerate(imgs):
                out[img.image_id] = (sensor, base + i)
        return out

    def fingerprint(self) -> str:
        """sha256 of everything that decides the bytes of the shards."""
        h = hashlib.sha256()
        for part in (
            sorted((k, repr(v)) for k, v in self.layouts.items()),
            sorted(self.images_per_shard.items()),
            sorted(self.base_images.items()),
            self.base_groups,
        ):
            h.update(repr(part).encode())
        for sensor in sorted(self.images):
            h.update(sensor.encode())
            for img in self.images[sensor]:  # frozen dataclass reprs are deterministic
                h.update(repr(img).encode())
        return h.hexdigest()


def images_per_shard(layout: SensorLayout, shard_mb: float, max_images: int | None = None) -> int:
    """How many images fill a shard of ``shard_mb`` MB (uncompressed): at least one, at most
    ``max_images``."""
    k = max(1, int(shard_mb * 1e6 // layout.image_nbytes))
    return k if max_images is None else min(k, max_images)


def split_of(group_id: str, val_fraction: float) -> str:
    """``val`` for a stable pseudo-random ``val_fraction`` of group ids, else ``train``."""
    h = int.from_bytes(hashlib.sha256(group_id.encode()).digest()[:8], "big") / 2.0**64
    return "val" if h < val_fraction else "train"


def plan_corpus(
    groups: Sequence[GroupSpec],
    images: Sequence[ImageSpec],
    layouts: Mapping[str, SensorLayout],
    shard_mb: float,
    *,
    base_images: Mapping[str, int] | None = None,
    base_groups: int = 0,
    base_images_per_shard: Mapping[str, int] | None = None,
    max_images_per_shard: int | None = None,
) -> CorpusPlan:
    """Order images by (sensor, group), and cut each sensor's rows into shards.

    Args:
        groups: the kept groups; members name images in ``images``.
        images: every member image of ``groups``.
        layouts: one layout per sensor that occurs.
        shard_mb: target uncompressed shard size.
        base_images: rows already in the corpus per sensor (when appending).
        base_groups: groups already in the corpus (when appending).
        base_images_per_shard: the existing arrays' rows per shard (when appending).
        max_images_per_shard: cap on rows per shard (keeps the shard index small).
    """
    base = dict(base_images or {})
    by_id = {img.image_id: img for img in images}
    if len(by_id) != len(images):
        raise CorpusError("image ids are not unique; each image needs its own <group>/<scene> id")
    ordered = sorted(groups, key=lambda g: g.group_id)
    rows: dict[str, list[ImageSpec]] = {}
    for g in ordered:
        for sensor, image_id in g.members:
            img = by_id.get(image_id)
            if img is None or img.sensor != sensor:
                raise CorpusError(f"group {g.group_id}: member {image_id} ({sensor}) has no image")
            if sensor not in layouts:
                raise CorpusError(f"group {g.group_id}: sensor {sensor!r} has no layout")
            rows.setdefault(sensor, []).append(img)
    k_of = {s: images_per_shard(layouts[s], shard_mb, max_images_per_shard) for s in rows}
    k_of.update({s: k for s, k in (base_images_per_shard or {}).items() if s in rows})
    shards = [sh for s in sorted(rows) for sh in _cut(s, rows[s], k_of[s], base.get(s, 0))]
    return CorpusPlan(
        layouts={s: layouts[s] for s in rows},
        images_per_shard=k_of,
        images=rows,
        groups=list(ordered),
        shards=shards,
        base_images=base,
        base_groups=base_groups,
    )


def _cut(sensor: str, imgs: list[ImageSpec], k: int, base: int) -> list[ShardSpec]:
    """Shards of rows ``[base, base + len(imgs))``; the first may start inside an old shard."""
    out = []
    stop_all = base + len(imgs)
    first = base // k
    for index in range(first, math.ceil(stop_all / k)):
        start, stop = index * k, min((index + 1) * k, stop_all)
        keep = base if start < base else -1
        lo = max(start, base) - base
        out.append(ShardSpec(sensor, index, start, stop, tuple(imgs[lo : stop - base]), keep))
    return out
