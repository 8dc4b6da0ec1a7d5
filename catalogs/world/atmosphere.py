"""Clouds, cirrus and cloud shadows: one truth mask per datatake, and what it does to pixels.

A datatake's clouds are drawn once over the whole region on the sensor's QA grid, so tiles of
the same datatake (the two UTM zones of a straddling region) see the same clouds. The mask
codes below are the world's truth; QA assets encode them in each provider's own way, and a
scene's ``eo:cloud_cover`` is the share of its valid pixels with a cloud code (2, 3 or 4).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from terracorpus.catalogs.world.fields import (
    F32,
    block_mean,
    fractal_noise,
    quantile_threshold,
    shift,
    upsample_nearest,
)

U8 = NDArray[np.uint8]

NODATA, CLEAR, CLOUD_OPAQUE, CLOUD_EDGE, CIRRUS, SHADOW = 0, 1, 2, 3, 4, 5
CLOUD_CODES = (CLOUD_OPAQUE, CLOUD_EDGE, CIRRUS)
MASK_NAMES = {
    NODATA: "nodata",
    CLEAR: "clear",
    CLOUD_OPAQUE: "opaque cloud",
    CLOUD_EDGE: "semi-transparent cloud edge",
    CIRRUS: "thin cirrus",
    SHADOW: "cloud shadow",
}
CLOUD_HEIGHT_M = 900.0
SHADOW_FACTOR = 0.3
# Opacity of each mask code, and whether the veil is thick cloud (0) or cirrus (1).
_ALPHA = np.array([0.0, 0.0, 0.95, 0.5, 0.25, 0.0], dtype=np.float32)
_IS_CIRRUS = np.array([0, 0, 0, 0, 1, 0], dtype=np.float32)
_SHADE = np.array([1.0, 1.0, 1.0, 1.0, 1.0, SHADOW_FACTOR], dtype=np.float32)


def cloud_mask(
    rng: np.random.Generator,
    shape: tuple[int, int],
    res: float,
    cover: float,
    cirrus: bool,
    sun_elevation: float,
    sun_azimuth: float,
) -> U8:
    """Mask codes on a region grid of ``res`` metres: ``cover`` of it cloudy (edges included).

    Shadows are the clouds moved away from the sun by the cloud height over tan(elevation).
    """
    codes = np.full(shape, CLEAR, dtype=np.uint8)
    if cover <= 0:
        return codes
    field = fractal_noise(rng, shape, 1500.0 / res, octaves=5)
    cloud = field > quantile_threshold(field, cover)
    core = field > quantile_threshold(field, 0.6 * cover)
    codes[cloud] = CLOUD_EDGE
    codes[core] = CLOUD_OPAQUE
    if cirrus:
        veil = fractal_noise(rng, shape, 3000.0 / res, octaves=3)
        codes[(veil > quantile_threshold(veil, 0.3)) & ~cloud] = CIRRUS
    d = CLOUD_HEIGHT_M / np.tan(np.deg2rad(max(sun_elevation, 5.0)))
    az = np.deg2rad(sun_azimuth)
    drow = round(d * np.cos(az) / res)
    dcol = round(-d * np.sin(az) / res)
    shadow = shift(cloud, drow, dcol) & (codes == CLEAR)
    codes[shadow] = SHADOW
    return codes


def veil(codes: U8, factor_up: int = 1, factor_down: int = 1) -> tuple[F32, F32, F32]:
    """(cloud opacity, cirrus opacity, shadow factor) of ``codes`` on a band grid.

    The band grid is ``factor_up`` times finer or ``factor_down`` times coarser than the mask.
    """
    fine = upsample_nearest(codes, factor_up)
    alpha = _ALPHA[fine]
    is_cirrus = _IS_CIRRUS[fine]
    a_cloud = block_mean(alpha * (1 - is_cirrus), factor_down)
    a_cirrus = block_mean(alpha * is_cirrus, factor_down)
    shade = block_mean(_SHADE[fine], factor_down)
    return a_cloud, a_cirrus, shade
