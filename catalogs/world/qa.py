"""QA assets from the truth: Sentinel-2 SCL classes and Landsat Collection 2 QA_PIXEL bits.

The encodings follow the providers' product definitions. Two simplifications, both
documented in docs/demo-world.md: the dilated-cloud bit (1) of QA_PIXEL is never set (the
truth has no dilation buffer, so every decoder agrees with ``eo:cloud_cover``), and thin
cirrus is flagged as cloud (bit 3, medium confidence) besides its cirrus bit (2).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from terracorpus.catalogs.world import atmosphere as atm

U8 = NDArray[np.uint8]
U16 = NDArray[np.uint16]

SCL_NODATA, SCL_SHADOW, SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER = 0, 3, 4, 5, 6
SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS, SCL_SNOW = 8, 9, 10, 11
SURFACE_SCL = (SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER, SCL_SNOW)

# QA_PIXEL bits and 2-bit confidences (Landsat 8-9 C2 L2 Science Product Guide, table 6-3).
_FILL, _CIRRUS, _CLOUD, _SHADOW, _SNOW, _CLEAR, _WATER = 0, 2, 3, 4, 5, 6, 7
_CONF_CLOUD, _CONF_SHADOW, _CONF_SNOW, _CONF_CIRRUS = 8, 10, 12, 14
LOW, MEDIUM, HIGH = 1, 2, 3


def scl(surface: U8, codes: U8) -> U8:
    """SCL classes: clouds and shadows from the mask codes, the surface class elsewhere."""
    out = surface.copy()
    out[codes == atm.SHADOW] = SCL_SHADOW
    out[codes == atm.CLOUD_EDGE] = SCL_CLOUD_MEDIUM
    out[codes == atm.CLOUD_OPAQUE] = SCL_CLOUD_HIGH
    out[codes == atm.CIRRUS] = SCL_CIRRUS
    out[codes == atm.NODATA] = SCL_NODATA
    return out


def _word(flags: tuple[int, ...], cloud: int, shadow: int, snow: int, cirrus: int) -> int:
    w = sum(1 << b for b in flags)
    return (
        w
        | cloud << _CONF_CLOUD
        | shadow << _CONF_SHADOW
        | snow << _CONF_SNOW
        | cirrus << _CONF_CIRRUS
    )


FILL_WORD = 1 << _FILL


def qa_pixel(surface: U8, codes: U8) -> U16:
    """Landsat C2 QA_PIXEL words from the surface SCL-like class and the mask codes."""
    clear_land = _word((_CLEAR,), LOW, LOW, LOW, LOW)
    out = np.full(surface.shape, clear_land, dtype=np.uint16)
    out[surface == SCL_WATER] = _word((_CLEAR, _WATER), LOW, LOW, LOW, LOW)
    out[surface == SCL_SNOW] = _word((_CLEAR, _SNOW), LOW, LOW, HIGH, LOW)
    out[codes == atm.SHADOW] = _word((_CLEAR, _SHADOW), LOW, HIGH, LOW, LOW)
    out[codes == atm.CLOUD_EDGE] = _word((_CLOUD,), MEDIUM, LOW, LOW, LOW)
    out[codes == atm.CLOUD_OPAQUE] = _word((_CLOUD,), HIGH, LOW, LOW, LOW)
    out[codes == atm.CIRRUS] = _word((_CLOUD, _CIRRUS), MEDIUM, LOW, LOW, HIGH)
    out[codes == atm.NODATA] = FILL_WORD
    return out
