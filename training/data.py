"""From corpus groups to model batches: the torch datasets, masks, collation and loaders.

:class:`GroupStream` is an ``IterableDataset`` that yields one :class:`GroupSample` per group,
forever (epoch after epoch) or for a fixed number of epochs. Its order is shard-aware: the
groups are cut into blocks of consecutive groups (whose images lie in the same few shards),
the block list is shuffled per epoch and dealt out over DDP ranks and DataLoader workers so
each group is read once per epoch, then a small shuffle buffer mixes groups within a worker.
The order and the masks are pure functions of (seed, epoch, group), so a run resumes exactly
by skipping, without reading, the samples it already consumed.

:func:`collate_groups` turns a list of groups of different sizes into one :class:`GroupBatch`:
images bucketed by (sensor, size) for the patch embedding, and flat token tables (ground
position, patch size, visibility) that the model packs per group.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from terracorpus.training.config import DataSettings
from terracorpus.training.corpus import CorpusReader, RawImage
from terracorpus.training.errors import CorpusFormatError
from terracorpus.training.masking import group_masks, token_boxes
from terracorpus.training.workers import exit_with

NAT = np.iinfo(np.int64).min


class DataConfig(DataSettings):
    """How groups become samples: the shared :class:`DataSettings` and the loader's own.

    ``patch_px`` must match the model's.
    """

    patch_px: int = Field(default=8, ge=1)
    shuffle: bool = True
    block_groups: int | None = Field(
        default=None, ge=1, description="default: groups per shard of the fastest-filling sensor"
    )


@dataclass
class ImageSample:
    """One image of a group, ready for the model."""

    sensor: str
    pixels: Tensor  # (C, H, W) float32 physical values, cropped to whole patches
    valid: Tensor  # (H, W) bool
    wavelengths: Tensor  # (C,) µm
    bandwidths: Tensor  # (C,) µm
    gsd: float  # metres per pixel after any resizing
    origin_m: tuple[float, float]  # top-left corner in the group frame (x east, y south), metres
    transform: tuple[float, ...]  # affine of ``pixels`` in the image CRS (after resizing)
    lonlat: tuple[float, float]  # chip centre, degrees; NaN when unknown
    doy_year: tuple[float, float]  # day of year and year; NaN when unknown
    is_anchor: bool
    visible: Tensor  # (h * w,) bool, token visible to the encoder
    grid: tuple[int, int]  # token grid (h, w)


@dataclass
class GroupSample:
    """One group: its index in the corpus tables, its id and its images (anchor first)."""

    group: int
    group_id: str
    images: list[ImageSample]


@dataclass
class Bucket:
    """Images of one sensor and size, stacked for one batched patch embedding."""

    sensor: str
    pixels: Tensor  # (n, C, H, W)
    valid: Tensor  # (n, H, W)
    wavelengths: Tensor  # (C,)
    bandwidths: Tensor  # (C,)
    images: Tensor  # (n,) index into the batch's flat image list


@dataclass
class GroupBatch:
    """A batch of groups as flat tables. Tokens are ordered by image, images by group."""

    buckets: list[Bucket]
    image_group: Tensor  # (M,) group of each image, 0..B-1
    image_sensor: list[str]  # (M,)
    image_lonlat: Tensor  # (M, 2)
    image_time: Tensor  # (M, 2) day of year, year
    image_anchor: Tensor  # (M,) bool
    image_tokens: Tensor  # (M + 1,) offsets of each image's tokens in the token tables
    token_xy: Tensor  # (T, 2) patch centre in the group frame, metres
    token_ground: Tensor  # (T,) patch ground size, metres
    token_visible: Tensor  # (T,) bool
    token_image: Tensor  # (T,) image of each token
    group_ids: list[str] = field(default_factory=list)  # (B,)
    groups: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))  # (B,)

    @property
    def n_groups(self) -> int:
        return len(self.group_ids)

    def to(self, device: torch.device | str) -> GroupBatch:
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                value = value.to(device, non_blocking=True)
            elif f.name == "buckets":
                value = [
                    Bucket(
                        b.sensor,
                        *(
                            t.to(device, non_blocking=True)
                            for t in (b.pixels, b.valid, b.wavelengths, b.bandwidths, b.images)
                        ),
                    )
                    for b in value
                ]
            moved[f.name] = value
        return GroupBatch(**moved)


def load_group(reader: CorpusReader, group: int, cfg: DataConfig, epoch: int = 0) -> GroupSample:
    """Read group ``group`` and turn it into a sample: resized, cropped, masked."""
    members = reader.groups.members(group)
    if cfg.anchor_only:
        members = members[:1]
    raws = reader.read_images(members, cfg.max_image_px)
    sample = sample_of_images(reader, raws, group, cfg.patch_px)
    rng = np.random.default_rng([cfg.seed, epoch, group])
    boxes = [_boxes(im, cfg.patch_px) for im in sample.images]
    for im, vis in zip(
        sample.images, group_masks(boxes, cfg.mask_ratio, cfg.mask_policy, rng), strict=True
    ):
        im.visible = torch.from_numpy(vis)
    return sample


def sample_of_images(
    reader: CorpusReader, raws: Sequence[RawImage], group: int, patch_px: int
) -> GroupSample:
    """Images read from ``reader`` (the first is the anchor) as one sample of group ``group``,
    every token visible; images smaller than one patch are left out."""
    anchor = raws[0].transform
    images = [_image_sample(r, anchor, i == 0, patch_px, reader) for i, r in enumerate(raws)]
    images = [im for im in images if im.grid[0] * im.grid[1] > 0]
    if not images or not images[0].is_anchor:
        raise CorpusFormatError(
            f"group {reader.groups.group_id[group]}: the anchor image is smaller than one "
            f"{patch_px}-pixel patch; lower patch_px or raise max_image_px"
        )
    return GroupSample(group, str(reader.groups.group_id[group]), images)


def _image_sample(
    raw: RawImage,
    anchor_transform: np.ndarray,
    is_anchor: bool,
    patch_px: int,
    reader: CorpusReader,
) -> ImageSample:
    h, w = (s // patch_px for s in raw.valid.shape)
    info = reader.sensors[raw.sensor]
    t = raw.transform
    origin = (float(t[2] - anchor_transform[2]), float(anchor_transform[5] - t[5]))
    return ImageSample(
        sensor=raw.sensor,
        pixels=torch.from_numpy(
            np.ascontiguousarray(raw.pixels[:, : h * patch_px, : w * patch_px])
        ),
        valid=torch.from_numpy(np.ascontiguousarray(raw.valid[: h * patch_px, : w * patch_px])),
        wavelengths=torch.from_numpy(info.wavelengths),
        bandwidths=torch.from_numpy(info.bandwidths),
        gsd=float(abs(t[0])) if math.isfinite(t[0]) and t[0] != 0 else raw.gsd,
        origin_m=origin,
        transform=tuple(float(v) for v in t),
        lonlat=(raw.lon, raw.lat),
        doy_year=_doy_year(raw.datetime_ns),
        is_anchor=is_anchor,
        visible=torch.ones(h * w, dtype=torch.bool),
        grid=(h, w),
    )


def _boxes(im: ImageSample, patch_px: int) -> np.ndarray:
    t = im.transform
    return token_boxes(im.grid, im.origin_m, (abs(t[0]) * patch_px, abs(t[4]) * patch_px))


def _doy_year(ns: int) -> tuple[float, float]:
    if ns == NAT:
        return (math.nan, math.nan)
    day = np.datetime64(ns, "ns").astype("datetime64[D]")
    year = day.astype("datetime64[Y]")
    doy = float((day - year.astype("datetime64[D]")).astype(int) + 1)
    return (doy, float(year.astype(int) + 1970))


class GroupStream(IterableDataset[GroupSample]):
    """Groups of a corpus split, shard-aware shuffled and split over ranks and workers.

    Args:
        reader: the opened corpus (pickled to workers without open handles).
        cfg: sample settings.
        rank, world_size: this process's DDP rank and the number of ranks.
        epochs: epochs to stream; None streams forever (training).
        skip_batches, batch_size: resume position: batches of ``batch_size`` this rank's
            DataLoader has already produced; each worker skips its share without reading.
        num_workers: the DataLoader's worker count (needed to compute each worker's share).
    """

    def __init__(
        self,
        reader: CorpusReader,
        cfg: DataConfig,
        *,
        rank: int = 0,
        world_size: int = 1,
        epochs: int | None = None,
        skip_batches: int = 0,
        batch_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        self.reader, self.cfg = reader, cfg
        self.rank, self.world_size, self.epochs = rank, world_size, epochs
        self.skip_batches, self.batch_size = skip_batches, batch_size
        self.num_workers = max(1, num_workers)
        self.groups = reader.groups.indices(cfg.split)
        consumers = world_size * self.num_workers
        if len(self.groups) < consumers:
            raise CorpusFormatError(
                f"corpus {reader.path} has {len(self.groups)} groups in split {cfg.split!r}, fewer "
                f"than ranks x workers = {consumers}; use fewer workers or ranks"
            )

    def worker_order(self, epoch: int, worker: int) -> np.ndarray:
        """The group indices one worker of this rank reads in ``epoch``, in reading order."""
        blocks = self._blocks()
        rng = np.random.default_rng([self.cfg.seed, epoch])
        if self.cfg.shuffle:
            blocks = [blocks[i] for i in rng.permutation(len(blocks))]
        consumers = self.world_size * self.num_workers
        me = self.rank * self.num_workers + worker
        mine = blocks[me::consumers]
        order = np.concatenate(mine) if mine else np.zeros(0, dtype=np.int64)
        if self.cfg.shuffle:
            order = _buffer_shuffle(
                order, self.cfg.shuffle_buffer, np.random.default_rng([self.cfg.seed, epoch, me])
            )
        return order

    def _blocks(self) -> list[np.ndarray]:
        size = self.cfg.block_groups or _groups_per_shard(self.reader)
        consumers = self.world_size * self.num_workers
        if len(self.groups) < size * consumers:  # too few blocks to deal one to everyone
            size = max(1, len(self.groups) // consumers)
        return [self.groups[i : i + size] for i in range(0, len(self.groups), size)]

    def __iter__(self) -> Iterator[GroupSample]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        skip = _worker_batches(self.skip_batches, worker, self.num_workers) * self.batch_size
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            order = self.worker_order(epoch, worker)
            if skip >= len(order):
                skip -= len(order)
            else:
                for g in order[skip:]:
                    yield load_group(self.reader, int(g), self.cfg, epoch)
                skip = 0
            epoch += 1


def _groups_per_shard(reader: CorpusReader) -> int:
    """How many consecutive groups fill one shard of the sensor whose shards fill fastest."""
    n_groups = len(reader.groups)
    per = [
        s.images_per_shard * n_groups / s.n_images for s in reader.sensors.values() if s.n_images
    ]
    return max(1, int(min(per))) if per else 1


def _worker_batches(batches: int, worker: int, num_workers: int) -> int:
    """How many of a DataLoader's first ``batches`` batches came from ``worker`` (round-robin)."""
    return max(0, (batches - worker + num_workers - 1) // num_workers)


def _buffer_shuffle(order: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Shuffle with a bounded buffer (as a streaming reader would), on indices only."""
    if size <= 1 or len(order) <= 1:
        return order
    out: list[int] = []
    buffer: list[int] = []
    for g in order:
        buffer.append(int(g))
        if len(buffer) >= size:
            out.append(buffer.pop(int(rng.integers(len(buffer)))))
    while buffer:
        out.append(buffer.pop(int(rng.integers(len(buffer)))))
    return np.asarray(out, dtype=np.int64)


def collate_groups(samples: Sequence[GroupSample]) -> GroupBatch:
    """Groups of different sizes -> one :class:`GroupBatch` (flat tables, size buckets)."""
    images = [(b, im) for b, s in enumerate(samples) for im in s.images]
    offsets = np.cumsum([0] + [im.grid[0] * im.grid[1] for _, im in images])
    token_xy, token_ground, token_image = [], [], []
    for m, (_, im) in enumerate(images):
        xy, ground = _token_centres(im)
        token_xy.append(xy)
        token_ground.append(ground)
        token_image.append(torch.full((len(ground),), m, dtype=torch.int64))
    return GroupBatch(
        buckets=_buckets(images),
        image_group=torch.tensor([b for b, _ in images], dtype=torch.int64),
        image_sensor=[im.sensor for _, im in images],
        image_lonlat=torch.tensor([im.lonlat for _, im in images], dtype=torch.float32),
        image_time=torch.tensor([im.doy_year for _, im in images], dtype=torch.float32),
        image_anchor=torch.tensor([im.is_anchor for _, im in images], dtype=torch.bool),
        image_tokens=torch.from_numpy(offsets.astype(np.int64)),
        token_xy=torch.cat(token_xy),
        token_ground=torch.cat(token_ground),
        token_visible=torch.cat([im.visible for _, im in images]),
        token_image=torch.cat(token_image),
        group_ids=[s.group_id for s in samples],
        groups=torch.tensor([s.group for s in samples], dtype=torch.int64),
    )


def _token_centres(im: ImageSample) -> tuple[Tensor, Tensor]:
    h, w = im.grid
    p = im.pixels.shape[-1] // w  # patch pixels
    t = im.transform
    gx, gy = abs(t[0]) * p, abs(t[4]) * p
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    x = im.origin_m[0] + (xx.reshape(-1).float() + 0.5) * gx
    y = im.origin_m[1] + (yy.reshape(-1).float() + 0.5) * gy
    return torch.stack([x, y], dim=1), torch.full((h * w,), math.sqrt(gx * gy))


def _buckets(images: Sequence[tuple[int, ImageSample]]) -> list[Bucket]:
    keys: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    for m, (_, im) in enumerate(images):
        keys.setdefault((im.sensor, tuple(im.pixels.shape)), []).append(m)
    out = []
    for (sensor, _), members in keys.items():
        first = images[members[0]][1]
        out.append(
            Bucket(
                sensor=sensor,
                pixels=_stack([images[m][1].pixels for m in members]),
                valid=_stack([images[m][1].valid for m in members]),
                wavelengths=first.wavelengths,
                bandwidths=first.bandwidths,
                images=torch.tensor(members, dtype=torch.int64),
            )
        )
    return out


def _stack(tensors: Sequence[Tensor]) -> Tensor:
    """``torch.stack``; in a DataLoader worker straight into shared memory, as torch's own
    ``default_collate`` does: the batch then crosses to the main process without another
    allocation and copy (the pixel buckets are most of a batch's bytes)."""
    if get_worker_info() is None:
        return torch.stack(list(tensors))
    first = tensors[0]
    numel = len(tensors) * first.numel()
    storage = first._typed_storage()._new_shared(numel)  # type: ignore[no-untyped-call]
    out = first.new(storage).resize_(len(tensors), *first.shape)
    return torch.stack(list(tensors), out=out)


def make_loader(
    reader: CorpusReader,
    cfg: DataConfig,
    *,
    batch_size: int,
    num_workers: int = 2,
    rank: int = 0,
    world_size: int = 1,
    epochs: int | None = None,
    skip_batches: int = 0,
) -> DataLoader[GroupSample]:
    """A DataLoader over :class:`GroupStream` whose workers each open the store themselves.

    Workers start with ``forkserver`` (``spawn`` off Linux): Zarr's async machinery does not
    survive ``fork``; they exit as soon as this process dies (:mod:`.workers`), even by
    kill -9. The loader never touches the global torch RNG, so resuming is exact.
    """
    stream = GroupStream(
        reader, cfg, rank=rank, world_size=world_size, epochs=epochs,
        skip_batches=skip_batches, batch_size=batch_size, num_workers=num_workers,
    )  # fmt: skip
    extra: dict[str, Any] = {}
    if num_workers > 0:
        method = "forkserver" if sys.platform.startswith("linux") else "spawn"
        extra = {
            "multiprocessing_context": multiprocessing.get_context(method),
            "persistent_workers": True,
            "prefetch_factor": 4,
            "worker_init_fn": exit_with(os.getpid()),  # none outlives a killed trainer
        }
    return DataLoader(
        stream,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_groups,
        generator=torch.Generator().manual_seed(cfg.seed),
        **extra,
    )
