"""Physically impossible pixel values: what a corrupt-but-decodable raster looks like.

A checksum cannot catch a GeoTIFF that decodes into wrong numbers (bytes damaged before it
was published, a wrong data type or scale in its metadata). Surface reflectance has a
physical range, though: a few percent below zero from atmospheric correction, somewhat above
one over snow, specular water or bright cloud tops, never below -0.5 or above 2. A chip whose
reflective bands hold more than a small share of values outside that range is refused.

Only reflective bands are checked (centre wavelength up to 3 µm); thermal and radar bands
are in other units. Nodata and saturated pixels are not counted (they have their own flags).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

REFLECTANCE_RANGE = (-0.5, 2.0)
"""Reflectance below or above these values cannot be real."""
MAX_IMPOSSIBLE_SHARE = 0.01
"""A chip is refused when more of the valid pixels of a reflective band than this are outside."""
REFLECTIVE_UP_TO_UM = 3.0
"""Bands centred at longer wavelengths (thermal, radar) are not reflectance."""


def impossible_reflectance(
    pixels: NDArray[np.generic],
    scale: Sequence[float],
    offset: Sequence[float],
    wavelengths: Sequence[float],
    valid: NDArray[np.bool_],
    names: Sequence[str] | None = None,
) -> str | None:
    """Why a chip's reflectance cannot be real, or None when it can.

    Args:
        pixels: (C, H, W) stored values.
        scale, offset: per band; physical = stored * scale + offset.
        wavelengths: per band centre wavelength, µm.
        valid: (H, W) pixels to judge (not nodata, not saturated).
        names: band names for the message (default: band indices).
    """
    n = int(valid.sum())
    if n == 0:
        return None
    lo, hi = REFLECTANCE_RANGE
    for b, wl in enumerate(wavelengths):
        if not 0 < wl <= REFLECTIVE_UP_TO_UM:
            continue
        values = pixels[b][valid].astype(np.float64) * scale[b] + offset[b]
        values = values[np.isfinite(values)]
        outside = int(((values < lo) | (values > hi)).sum())
        if outside > MAX_IMPOSSIBLE_SHARE * n:
            name = names[b] if names is not None else f"band {b}"
            return (
                f"{outside} of {n} valid pixels of {name} have reflectance outside "
                f"[{lo:g}, {hi:g}] (min {values.min():.3g}, max {values.max():.3g}): the raster "
                "decodes, but into values that cannot be real (a corrupt file, or a wrong data "
                "type, scale or offset in its metadata)"
            )
    return None
