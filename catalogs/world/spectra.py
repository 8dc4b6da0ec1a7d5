"""Surface reflectance of every material on every day of the year, sampled at sensor bands.

Each material is a mixture of a few endmember spectra (green vegetation, dry vegetation,
soil, water, ...) whose weights follow the day of year (phenology). A band's value is the
spectrum averaged over its full width at half maximum, so two sensors with close bands see
close values of the same ground. Cloud and cirrus spectra for the atmosphere live here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from terracorpus.catalogs.sensors import Band
from terracorpus.catalogs.world import landcover as lc

F64 = NDArray[np.float64]

# Knots in micrometres; curves are linear in between (1.4 and 1.9 µm absorption omitted).
_WL = np.array(
    [
        0.40,
        0.45,
        0.50,
        0.55,
        0.60,
        0.65,
        0.68,
        0.70,
        0.72,
        0.75,
        0.80,
        0.90,
        1.00,
        1.20,
        1.60,
        2.00,
        2.20,
        2.50,
    ]
)
_ENDMEMBERS: dict[str, list[float]] = {
    "green": [
        0.03,
        0.04,
        0.05,
        0.10,
        0.07,
        0.05,
        0.04,
        0.08,
        0.20,
        0.38,
        0.45,
        0.47,
        0.46,
        0.40,
        0.25,
        0.10,
        0.08,
        0.05,
    ],
    "dry": [
        0.05,
        0.07,
        0.09,
        0.12,
        0.15,
        0.18,
        0.19,
        0.20,
        0.21,
        0.23,
        0.26,
        0.29,
        0.31,
        0.34,
        0.35,
        0.28,
        0.25,
        0.20,
    ],
    "soil": [
        0.06,
        0.08,
        0.10,
        0.13,
        0.16,
        0.19,
        0.20,
        0.21,
        0.22,
        0.23,
        0.25,
        0.27,
        0.29,
        0.32,
        0.36,
        0.34,
        0.30,
        0.25,
    ],
    "water": [
        0.05,
        0.06,
        0.06,
        0.05,
        0.035,
        0.025,
        0.02,
        0.018,
        0.015,
        0.012,
        0.01,
        0.008,
        0.006,
        0.004,
        0.003,
        0.002,
        0.002,
        0.001,
    ],
    "conifer": [
        0.02,
        0.03,
        0.035,
        0.06,
        0.04,
        0.03,
        0.025,
        0.05,
        0.12,
        0.22,
        0.27,
        0.28,
        0.27,
        0.22,
        0.13,
        0.06,
        0.04,
        0.03,
    ],
    "snow": [
        0.95,
        0.96,
        0.96,
        0.95,
        0.94,
        0.92,
        0.91,
        0.90,
        0.89,
        0.87,
        0.84,
        0.75,
        0.60,
        0.40,
        0.06,
        0.03,
        0.03,
        0.02,
    ],
    "roof": [
        0.12,
        0.15,
        0.17,
        0.19,
        0.20,
        0.21,
        0.22,
        0.22,
        0.23,
        0.23,
        0.24,
        0.25,
        0.26,
        0.27,
        0.29,
        0.27,
        0.25,
        0.22,
    ],
    "asphalt": [
        0.05,
        0.06,
        0.07,
        0.08,
        0.08,
        0.09,
        0.09,
        0.09,
        0.10,
        0.10,
        0.10,
        0.11,
        0.11,
        0.12,
        0.13,
        0.13,
        0.12,
        0.11,
    ],
    "rock": [
        0.10,
        0.12,
        0.14,
        0.16,
        0.17,
        0.18,
        0.19,
        0.19,
        0.20,
        0.20,
        0.21,
        0.22,
        0.23,
        0.25,
        0.27,
        0.26,
        0.24,
        0.22,
    ],
    "tundra": [
        0.04,
        0.05,
        0.06,
        0.09,
        0.09,
        0.09,
        0.09,
        0.11,
        0.16,
        0.24,
        0.28,
        0.30,
        0.30,
        0.28,
        0.22,
        0.14,
        0.11,
        0.08,
    ],
    "cloud": [
        0.70,
        0.72,
        0.73,
        0.73,
        0.73,
        0.72,
        0.72,
        0.72,
        0.71,
        0.71,
        0.70,
        0.68,
        0.66,
        0.62,
        0.50,
        0.40,
        0.35,
        0.30,
    ],
    "cirrus": [
        0.22,
        0.21,
        0.20,
        0.19,
        0.18,
        0.18,
        0.17,
        0.17,
        0.17,
        0.17,
        0.16,
        0.16,
        0.15,
        0.15,
        0.13,
        0.11,
        0.10,
        0.09,
    ],
}

# Phenology: (day of year, {endmember: weight}) keypoints, linear in between, per material.
_Keys = Sequence[tuple[int, dict[str, float]]]
_PHENOLOGY: dict[int, _Keys] = {
    lc.WATER: [(1, {"water": 1.0})],
    lc.BROADLEAF: [
        (1, {"dry": 0.6, "soil": 0.3, "green": 0.1}),
        (110, {"dry": 0.6, "soil": 0.3, "green": 0.1}),
        (150, {"green": 0.9, "dry": 0.1}),
        (265, {"green": 0.9, "dry": 0.1}),
        (305, {"dry": 0.6, "soil": 0.2, "green": 0.2}),
    ],
    lc.CONIFER: [(1, {"conifer": 1.0})],
    lc.CROP_SUMMER: [
        (1, {"soil": 0.7, "dry": 0.3}),
        (135, {"soil": 0.95, "dry": 0.05}),
        (165, {"soil": 0.6, "green": 0.4}),
        (200, {"green": 1.0}),
        (245, {"green": 0.9, "dry": 0.1}),
        (275, {"dry": 0.8, "green": 0.1, "soil": 0.1}),
        (295, {"soil": 0.7, "dry": 0.3}),
    ],
    lc.CROP_WINTER: [
        (1, {"soil": 0.5, "green": 0.3, "dry": 0.2}),
        (80, {"soil": 0.5, "green": 0.4, "dry": 0.1}),
        (125, {"green": 1.0}),
        (165, {"green": 0.8, "dry": 0.2}),
        (192, {"dry": 0.9, "soil": 0.1}),
        (210, {"soil": 0.8, "dry": 0.2}),
        (285, {"soil": 0.9, "green": 0.1}),
        (310, {"soil": 0.6, "green": 0.3, "dry": 0.1}),
    ],
    lc.RICE: [
        (1, {"soil": 0.7, "dry": 0.3}),
        (115, {"soil": 0.4, "water": 0.6}),
        (150, {"water": 0.6, "green": 0.4}),
        (190, {"green": 0.95, "water": 0.05}),
        (255, {"green": 0.8, "dry": 0.2}),
        (285, {"dry": 0.8, "soil": 0.2}),
        (310, {"soil": 0.7, "dry": 0.3}),
    ],
    lc.GRASS: [
        (1, {"dry": 0.7, "green": 0.2, "soil": 0.1}),
        (100, {"dry": 0.6, "green": 0.3, "soil": 0.1}),
        (145, {"green": 0.9, "dry": 0.1}),
        (210, {"green": 0.7, "dry": 0.3}),
        (270, {"green": 0.4, "dry": 0.6}),
    ],
    lc.ROOF: [(1, {"roof": 1.0})],
    lc.ROAD: [(1, {"asphalt": 1.0})],
    lc.SOIL: [(1, {"soil": 1.0})],
    lc.ROCK: [(1, {"rock": 1.0})],
    lc.SNOW: [(1, {"snow": 1.0})],
    lc.TUNDRA: [
        (1, {"tundra": 0.3, "dry": 0.7}),
        (165, {"tundra": 0.3, "dry": 0.7}),
        (190, {"tundra": 0.5, "green": 0.5}),
        (228, {"tundra": 0.5, "green": 0.5}),
        (255, {"tundra": 0.3, "dry": 0.7}),
    ],
}

# Share of green vegetation above which SCL calls a pixel "vegetation" (4) rather than 5.
VEGETATED_GREEN = 0.35


def _weights_at(keys: _Keys, doy: int) -> dict[str, float]:
    """Endmember weights on ``doy``, interpolated cyclically between keypoints."""
    days = [k[0] for k in keys]
    names = sorted({n for _, w in keys for n in w})
    ext_days = [days[-1] - 365, *days, days[0] + 365]
    ext = [keys[-1][1], *[k[1] for k in keys], keys[0][1]]
    return {n: float(np.interp(doy, ext_days, [w.get(n, 0.0) for w in ext])) for n in names}


def endmember_weights(material: int, doy: int) -> dict[str, float]:
    """The endmember mixture (``green``, ``dry``, ``soil``, ``water``, ...) of a material."""
    return _weights_at(_PHENOLOGY[material], doy)


def _band_average(curve: F64, center: float, fwhm: float) -> float:
    xs = np.linspace(center - fwhm / 2, center + fwhm / 2, 9)
    return float(np.interp(xs, _WL, curve).mean())


def _endmember_bands(bands: tuple[tuple[float, float], ...]) -> dict[str, F64]:
    return {
        name: np.array([_band_average(np.asarray(c), w, f) for w, f in bands])
        for name, c in _ENDMEMBERS.items()
    }


@lru_cache(maxsize=512)
def _material_spectra(bands: tuple[tuple[float, float], ...], doy: int) -> F64:
    em = _endmember_bands(bands)
    out = np.zeros((lc.N_MATERIALS, len(bands)))
    for m, keys in _PHENOLOGY.items():
        for name, w in _weights_at(keys, doy).items():
            out[m] += w * em[name]
    out.flags.writeable = False
    return out


def _band_key(bands: Sequence[Band]) -> tuple[tuple[float, float], ...]:
    return tuple((b.center_wavelength, b.full_width_half_max) for b in bands)


def material_spectra(bands: Sequence[Band], doy: int) -> F64:
    """(materials, bands) surface reflectance of every material on ``doy``."""
    return _material_spectra(_band_key(bands), int(doy))


def atmosphere_spectra(bands: Sequence[Band]) -> tuple[F64, F64]:
    """(bands,) top-of-cloud reflectance of thick cloud and of thin cirrus."""
    em = _endmember_bands(_band_key(bands))
    return em["cloud"], em["cirrus"]


# C-band backscatter (gamma0, dB) per material as (VV, VH) for bare/leafless -> full canopy;
# vegetation moves between the two with its green share (biomass), others are constant.
_BACKSCATTER_DB: dict[int, tuple[tuple[float, float], tuple[float, float]]] = {
    lc.WATER: ((-22.0, -29.0), (-22.0, -29.0)),
    lc.BROADLEAF: ((-9.0, -15.0), (-7.0, -12.5)),
    lc.CONIFER: ((-7.5, -13.0), (-7.5, -13.0)),
    lc.CROP_SUMMER: ((-13.0, -22.0), (-8.5, -15.0)),
    lc.CROP_WINTER: ((-13.0, -22.0), (-9.5, -16.0)),
    lc.RICE: ((-13.0, -22.0), (-7.0, -14.0)),
    lc.GRASS: ((-12.0, -20.0), (-10.5, -17.0)),
    lc.ROOF: ((-2.0, -9.0), (-2.0, -9.0)),
    lc.ROAD: ((-16.0, -25.0), (-16.0, -25.0)),
    lc.SOIL: ((-14.0, -22.0), (-14.0, -22.0)),
    lc.ROCK: ((-11.0, -18.0), (-11.0, -18.0)),
    lc.SNOW: ((-15.0, -23.0), (-15.0, -23.0)),
    lc.TUNDRA: ((-14.0, -21.0), (-12.0, -18.5)),
}
MICROWAVE_UM = 1000.0
"""Bands centred beyond 1 mm are radar: their response is backscatter, not reflectance."""


def is_radar(bands: Sequence[Band]) -> bool:
    return all(b.center_wavelength > MICROWAVE_UM for b in bands)


@lru_cache(maxsize=512)
def _backscatter(pols: tuple[str, ...], doy: int) -> F64:
    out = np.zeros((lc.N_MATERIALS, len(pols)))
    for m, (bare, full) in _BACKSCATTER_DB.items():
        w = _weights_at(_PHENOLOGY[m], doy)
        g = min(1.0, w.get("green", 0.0) + (1.0 if m == lc.CONIFER else 0.0))
        for j, pol in enumerate(pols):
            k = 0 if pol == "vv" else 1
            out[m, j] = 10 ** ((bare[k] + g * (full[k] - bare[k])) / 10)
    out.flags.writeable = False
    return out


def material_response(bands: Sequence[Band], doy: int) -> F64:
    """(materials, bands): reflectance for optical bands, linear gamma0 for radar ones."""
    if is_radar(bands):
        return _backscatter(tuple(b.name.lower() for b in bands), int(doy))
    return material_spectra(bands, doy)
