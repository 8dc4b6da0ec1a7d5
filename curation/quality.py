"""Chip quality from QA assets and pixels: nodata, cloud, shadow, snow, water, information.

Decoders turn a sensor's raw QA raster into boolean masks, whatever its coding:

* ``scl`` — Sentinel-2 L2A scene classification (SCL) classes;
* ``qa_pixel`` — Landsat Collection 2 ``QA_PIXEL`` bit flags;
* ``demo_mask`` — the demo world's class mask, coded like SCL;
* ``none`` — the sensor has no QA asset: only nodata (from the pixels) is known.

:func:`chip_quality` then reduces masks and reflectance to the numbers curation filters on.
Fractions of cloud, shadow, snow and water are of the chip's *data* pixels (nodata excluded),
so a chip half off the scene edge but cloud-free has ``cloud_fraction == 0``; the nodata
fraction is of all pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from terracorpus.catalogs.sensors import QAKind
from terracorpus.curation.errors import DescriptorError

BoolArray = NDArray[np.bool_]

# Sentinel-2 L2A SCL classes (ESA Level-2A product definition).
SCL_NO_DATA = 0
SCL_SATURATED = 1
SCL_DARK = 2
SCL_CLOUD_SHADOW = 3
SCL_VEGETATION = 4
SCL_NOT_VEGETATED = 5
SCL_WATER = 6
SCL_UNCLASSIFIED = 7
SCL_CLOUD_MEDIUM = 8
SCL_CLOUD_HIGH = 9
SCL_THIN_CIRRUS = 10
SCL_SNOW = 11
SCL_CLOUD_CLASSES = (SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_THIN_CIRRUS)

# Landsat Collection 2 QA_PIXEL bits (USGS Landsat 8-9 C2 L2 product guide).
QA_FILL = 0
QA_DILATED_CLOUD = 1
QA_CIRRUS = 2
QA_CLOUD = 3
QA_CLOUD_SHADOW = 4
QA_SNOW = 5
QA_CLEAR = 6
QA_WATER = 7

# Information score: brightness histogram bin width (reflectance units) and the entropy (bits)
# that counts as fully informative (16 equally filled levels).
_INFO_BIN = 0.01
_INFO_FULL_BITS = 4.0


@dataclass(frozen=True)
class QAMasks:
    """Boolean masks decoded from a QA raster, all of shape (y, x).

    ``saturated`` marks pixels the QA flags as saturated or defective.
    """

    nodata: BoolArray
    cloud: BoolArray
    shadow: BoolArray
    snow: BoolArray
    water: BoolArray
    saturated: BoolArray


@dataclass(frozen=True)
class ChipQuality:
    """The quality numbers of one chip (fractions in 0-1, ``information`` in 0-1)."""

    nodata_fraction: float
    cloud_fraction: float
    shadow_fraction: float
    snow_fraction: float
    water_fraction: float
    information: float
    valid_pixels: int


def _bit(qa: NDArray[np.integer], bit: int) -> BoolArray:
    return ((qa.astype(np.int64) >> bit) & 1).astype(bool)


def decode_scl(qa: NDArray[np.integer]) -> QAMasks:
    """Masks from Sentinel-2 SCL classes (also the demo world's ``demo_mask`` coding)."""
    return QAMasks(
        nodata=qa == SCL_NO_DATA,
        cloud=np.isin(qa, SCL_CLOUD_CLASSES),
        shadow=qa == SCL_CLOUD_SHADOW,
        snow=qa == SCL_SNOW,
        water=qa == SCL_WATER,
        saturated=qa == SCL_SATURATED,
    )


def decode_qa_pixel(qa: NDArray[np.integer]) -> QAMasks:
    """Masks from Landsat Collection 2 QA_PIXEL bits.

    Cloud is the cloud, dilated-cloud or cirrus bit; fill pixels are nodata and nothing else.
    """
    fill = _bit(qa, QA_FILL)
    data = ~fill
    cloud = (_bit(qa, QA_CLOUD) | _bit(qa, QA_DILATED_CLOUD) | _bit(qa, QA_CIRRUS)) & data
    return QAMasks(
        nodata=fill,
        cloud=cloud,
        shadow=_bit(qa, QA_CLOUD_SHADOW) & data & ~cloud,
        snow=_bit(qa, QA_SNOW) & data,
        water=_bit(qa, QA_WATER) & data,
        saturated=np.zeros(qa.shape, dtype=bool),
    )


def empty_masks(shape: tuple[int, ...]) -> QAMasks:
    """No QA information: nothing flagged (nodata then comes from the pixels alone)."""
    z = np.zeros(shape, dtype=bool)
    return QAMasks(nodata=z, cloud=z, shadow=z, snow=z, water=z, saturated=z)


def decode_qa(qa: NDArray[np.integer] | None, kind: QAKind, shape: tuple[int, int]) -> QAMasks:
    """Decode a raw QA raster of the given kind; ``qa=None`` or kind ``none`` gives no flags.

    Raises:
        DescriptorError: the QA raster is not of ``shape`` (the chip's pixel grid).
    """
    if qa is None or kind == "none":
        return empty_masks(shape)
    if qa.shape != shape:
        raise DescriptorError(f"QA raster has shape {qa.shape}, the chip grid is {shape}")
    if kind in ("scl", "demo_mask"):
        return decode_scl(qa)
    if kind == "qa_pixel":
        return decode_qa_pixel(qa)
    raise DescriptorError(f"unknown QA kind {kind!r}; expected scl, qa_pixel, demo_mask or none")


def _fraction(mask: BoolArray, within: BoolArray, n: int) -> float:
    return float(np.count_nonzero(mask & within)) / n if n else 0.0


def brightness_entropy(values: NDArray[np.floating]) -> float:
    """Shannon entropy (bits) of reflectance values binned in fixed steps of 0.01.

    Fixed bins (not the chip's own range) keep a flat chip flat whatever its level.
    """
    if values.size == 0:
        return 0.0
    bins = np.floor(np.clip(values, -1.0, 2.0) / _INFO_BIN).astype(np.int64)
    _, counts = np.unique(bins, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def information_score(brightness: NDArray[np.floating], usable: BoolArray) -> float:
    """How much is there to see: 0 for flat or single-class chips, 1 for rich texture.

    :func:`brightness_entropy` of the usable pixels divided by 4 bits (16 equally filled
    levels) and clipped to 1. No usable pixel gives 0.
    """
    return min(1.0, brightness_entropy(brightness[usable]) / _INFO_FULL_BITS)


def chip_quality(
    brightness: NDArray[np.floating],
    nodata: BoolArray,
    masks: QAMasks,
    saturated: BoolArray | None = None,
) -> ChipQuality:
    """Reduce masks and the chip's brightness (mean visible reflectance) to quality numbers.

    Args:
        brightness: (y, x) mean reflectance of the chip's bands (after scale/offset).
        nodata: (y, x) True where the pixels hold no data (scene edge, nodata value).
        masks: decoded QA masks on the same grid; their own nodata is added to ``nodata``.
        saturated: (y, x) pixels at the sensor's saturation value, added to the QA's.

    The information score is that of :func:`information_score` on the usable (data,
    cloud- and shadow-free) pixels, times the share of data pixels that are not saturated.
    """
    if brightness.shape != nodata.shape or masks.nodata.shape != nodata.shape:
        raise DescriptorError(
            f"quality arrays disagree in shape: brightness {brightness.shape}, "
            f"nodata {nodata.shape}, QA {masks.nodata.shape}"
        )
    nodata = nodata | masks.nodata
    data = ~nodata
    n_total = nodata.size
    n_data = int(np.count_nonzero(data))
    sat = masks.saturated if saturated is None else masks.saturated | saturated
    usable = data & ~masks.cloud & ~masks.shadow & ~sat
    info = information_score(brightness, usable) * (1.0 - _fraction(sat, data, n_data))
    return ChipQuality(
        nodata_fraction=float(np.count_nonzero(nodata)) / n_total if n_total else 1.0,
        cloud_fraction=_fraction(masks.cloud, data, n_data),
        shadow_fraction=_fraction(masks.shadow, data, n_data),
        snow_fraction=_fraction(masks.snow, data, n_data),
        water_fraction=_fraction(masks.water, data, n_data),
        information=info,
        valid_pixels=int(np.count_nonzero(usable)),
    )
