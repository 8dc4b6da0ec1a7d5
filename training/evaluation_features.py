"""Frozen features of an evaluation set: a token grid per group (and per change-pair image).

Two views of a group: ``anchor`` (the anchor image alone) and ``group`` (every image of the
group visible to the encoder at once; A²-MAE's point is to use co-located images). The output
is always the anchor's token grid. For a change pair, each date is the pair's image of that
date, alone (``anchor``) or with the group's other images of the same year (``group``).

Featurizers map views to grids ``(F, h, w)`` on the first image's patch grid:

* :class:`EncoderFeatures`: a frozen A²-MAE encoder's output tokens (pre-trained or random):
  the first image's own tokens, then, per sensor of the set in its own slot, the mean and
  standard deviation of the view's other images' tokens of that sensor over the first image's
  patches (weighted by ground overlap; zeros where the sensor is absent; the ``anchor`` view
  has no other images);
* :class:`BandStatFeatures`: no learning: per patch and band the mean and standard deviation of
  the raw reflectance, each sensor in its own slot (its images averaged in the ``group`` view).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from terracorpus.training.corpus import CorpusReader, RawImage
from terracorpus.training.data import GroupSample, ImageSample, collate_groups, sample_of_images
from terracorpus.training.evaluation_set import EvalSet
from terracorpus.training.masking import overlap_fraction, token_boxes
from terracorpus.training.model import A2MAE

VIEWS = ("anchor", "group")
View = tuple[int, list[RawImage]]  # (corpus group row, images: the one whose grid is output first)


@dataclass
class Grid:
    """Features on the first image's patch grid and the ground it covers from the top-left."""

    tokens: np.ndarray  # (F, h, w) float32
    covered_m: tuple[float, float]  # (x, y) metres


class Featurizer(Protocol):
    def __call__(self, views: Sequence[View], reader: CorpusReader) -> list[Grid]: ...


@dataclass
class EncoderFeatures:
    """A frozen encoder's output tokens, every image visible to it: the first image's tokens,
    then one slot per sensor of ``sensors``: the mean and standard deviation of the other
    images' tokens of that sensor over the first image's patches (the readout the no-learning
    baseline has of the reflectance: each sensor in its own slot, its images' mean and
    deviation). Without ``sensors``: the first image's tokens alone."""

    model: A2MAE
    sensors: Sequence[str] = ()
    batch_size: int = 8
    device: str | torch.device = "cpu"

    @torch.no_grad()
    def __call__(self, views: Sequence[View], reader: CorpusReader) -> list[Grid]:
        self.model.eval().to(self.device)
        p = self.model.args.patch_px
        out: list[Grid] = []
        for start in range(0, len(views), self.batch_size):
            chunk = views[start : start + self.batch_size]
            samples = [sample_of_images(reader, raws, row, p) for row, raws in chunk]
            batch = collate_groups(samples).to(self.device)
            tokens = self.model.embed(batch) + self.model.metadata(batch, 0.0)  # (T, D)
            every = torch.ones_like(batch.token_visible)
            encoded, _, _ = self.model.encode(batch, tokens, every)  # (B, L, D); image order
            for b, s in enumerate(samples):
                h, w = s.images[0].grid
                grid = encoded[b, : h * w].float().reshape(h, w, -1).permute(2, 0, 1).cpu().numpy()
                if self.sensors:
                    slots = _sensor_slots(s, encoded[b].float().cpu().numpy(), self.sensors, p)
                    grid = np.concatenate([grid, slots])
                out.append(Grid(grid, _covered(s.images[0].transform, h, w, p)))
        return out


def _sensor_slots(
    sample: GroupSample, tokens: np.ndarray, sensors: Sequence[str], p: int
) -> np.ndarray:
    """Per sensor, the mean and the standard deviation of the tokens (L, D) of the sample's
    images after the first, over the first image's patches, each token weighted by its ground
    overlap with the patch -> (2 * len(sensors) * D, h, w); zeros where no image of the sensor
    covers a patch. The deviation is across the sensor's dates (and its tokens within a patch):
    what the no-learning baseline's per-sensor standard deviation is of the reflectance."""
    first = sample.images[0]
    h, w = first.grid
    d = tokens.shape[1]
    targets = _token_boxes(first, p)  # (h*w, 4)
    total = np.zeros((len(sensors), h * w, d))
    total_sq = np.zeros((len(sensors), h * w, d))
    weight = np.zeros((len(sensors), h * w))
    at = h * w
    for im in sample.images[1:]:
        n = im.grid[0] * im.grid[1]
        if im.sensor in sensors:
            k = list(sensors).index(im.sensor)
            overlap = overlap_fraction(_token_boxes(im, p), targets).T  # (h*w, n)
            tok = tokens[at : at + n].astype(np.float64)  # (n, D)
            total[k] += overlap @ tok
            total_sq[k] += overlap @ tok**2
            weight[k] += overlap.sum(1)
        at += n
    wsum = np.maximum(weight, 1e-9)[..., None]
    mean = total / wsum  # (S, h*w, D)
    std = np.sqrt(np.maximum(total_sq / wsum - mean**2, 0.0))
    slots = np.stack([mean, std], 1).reshape(2 * len(sensors), h * w, d)  # sensor: mean, std
    return slots.transpose(0, 2, 1).reshape(-1, h, w).astype(np.float32)


def _token_boxes(im: ImageSample, p: int) -> np.ndarray:
    t = im.transform
    return token_boxes(im.grid, im.origin_m, (abs(t[0]) * p, abs(t[4]) * p))


def _covered(
    transform: Sequence[float] | np.ndarray, h: int, w: int, p: int
) -> tuple[float, float]:
    return (w * p * abs(float(transform[0])), h * p * abs(float(transform[4])))


@dataclass
class BandStatFeatures:
    """No learning: per patch of the first image, each band's mean and std of reflectance."""

    sensors: Mapping[str, int]  # sensor -> band count (the set's sensors)
    patch_px: int
    _offsets: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        at = 0
        for s in sorted(self.sensors):
            self._offsets[s] = at
            at += 2 * self.sensors[s]
        self.width = at

    def __call__(self, views: Sequence[View], reader: CorpusReader) -> list[Grid]:
        return [self._one(raws) for _, raws in views]

    def _one(self, raws: list[RawImage]) -> Grid:
        first = raws[0]
        cell = self.patch_px * abs(float(first.transform[0]))
        h, w = (n // self.patch_px for n in first.valid.shape)
        feats = np.zeros((self.width, h, w), dtype=np.float32)
        for sensor in {r.sensor for r in raws}:
            stats = [_cell_stats(r, cell, h, w) for r in raws if r.sensor == sensor]
            count = sum(c for _, _, c in stats)
            mean = sum(m * c for m, _, c in stats) / np.maximum(count, 1)
            sq = sum((s**2 + m**2) * c for m, s, c in stats) / np.maximum(count, 1)
            std = np.sqrt(np.maximum(sq - mean**2, 0.0))
            at, n = self._offsets[sensor], self.sensors[sensor]
            feats[at : at + n] = mean.reshape(n, h, w)
            feats[at + n : at + 2 * n] = std.reshape(n, h, w)
        return Grid(feats, _covered(first.transform, h, w, self.patch_px))


def _cell_stats(
    raw: RawImage, cell_m: float, h: int, w: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per band and cell of an (h, w) grid of ``cell_m`` squares from the common top-left:
    mean and std of the valid pixels whose centre falls in the cell, and their count."""
    gsd = abs(float(raw.transform[0]))
    rows, cols = raw.valid.shape
    cy = np.floor((np.arange(rows) + 0.5) * gsd / cell_m).astype(np.int64)
    cx = np.floor((np.arange(cols) + 0.5) * gsd / cell_m).astype(np.int64)
    inside = (cy[:, None] < h) & (cx[None, :] < w) & raw.valid
    idx = (cy[:, None] * w + cx[None, :])[inside]
    count = np.bincount(idx, minlength=h * w).astype(np.float64)
    vals = raw.pixels[:, inside].astype(np.float64)  # (C, K)
    total = np.stack([np.bincount(idx, weights=v, minlength=h * w) for v in vals])
    total_sq = np.stack([np.bincount(idx, weights=v * v, minlength=h * w) for v in vals])
    mean = total / np.maximum(count, 1)
    std = np.sqrt(np.maximum(total_sq / np.maximum(count, 1) - mean**2, 0.0))
    return mean, std, count


@dataclass
class SetFeatures:
    """Per featurizer and view: one grid per group, and (date a, date b) grids per pair."""

    groups: dict[tuple[str, str], list[Grid]] = field(default_factory=dict)
    pairs: dict[tuple[str, str], list[tuple[Grid, Grid]]] = field(default_factory=dict)


def extract(
    es: EvalSet,
    featurizers: Mapping[str, Featurizer],
    *,
    views: Sequence[str] = VIEWS,
    max_image_px: int = 64,
    chunk: int = 16,
    with_pairs: bool = True,
) -> SetFeatures:
    """Every featurizer's grids of every group and change pair, reading each group once."""
    out = SetFeatures()
    keys = [(f, v) for f in featurizers for v in views]
    for key in keys:
        out.groups[key], out.pairs[key] = [], []
    pairs_of: dict[int, list[int]] = {}
    for p, g in enumerate(es.pairs.group):
        pairs_of.setdefault(int(g), []).append(p)
    order = np.arange(len(es))
    pair_order: list[int] = []
    for start in range(0, len(order), chunk):
        group_views: dict[str, list[View]] = {v: [] for v in views}
        pair_views: dict[str, list[View]] = {v: [] for v in views}
        for i in order[start : start + chunk]:
            row = int(es.corpus_group[i])
            members = es.reader.groups.members(row)
            raws = es.reader.read_images(members, max_image_px)
            for v in views:
                group_views[v].append((row, raws[:1] if v == "anchor" else raws))
            for p in pairs_of.get(int(i), []) if with_pairs else []:
                pair_order.append(p)
                a, b = members.index(es.pairs.image_a[p]), members.index(es.pairs.image_b[p])
                for v in views:
                    pair_views[v].append((row, _date_view(raws, a, b, v)))
                    pair_views[v].append((row, _date_view(raws, b, a, v)))
        for name, fz in featurizers.items():
            for v in views:
                out.groups[(name, v)].extend(fz(group_views[v], es.reader))
                if pair_views[v]:
                    grids = fz(pair_views[v], es.reader)
                    out.pairs[(name, v)].extend(zip(grids[0::2], grids[1::2], strict=True))
    back = np.argsort(pair_order)  # pairs in the set's order
    for key in keys:
        out.pairs[key] = [out.pairs[key][int(j)] for j in back]
    return out


def _year(raw: RawImage) -> int:
    return int(np.datetime64(raw.datetime_ns, "ns").astype("datetime64[Y]").astype(int)) + 1970


def _date_view(raws: list[RawImage], this: int, other: int, view: str) -> list[RawImage]:
    """Date ``this`` of a pair: its image alone, or with the group's other images of its year."""
    if view == "anchor":
        return [raws[this]]
    year = _year(raws[this])
    return [raws[this]] + [
        r for i, r in enumerate(raws) if i not in (this, other) and _year(r) == year
    ]
