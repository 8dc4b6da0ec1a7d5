"""Chip descriptor vectors with one fixed, named layout for every sensor.

The layout (:func:`descriptor_names`) has four parts, so clustering can weight and normalise
each on its own (:func:`descriptor_parts` gives their index ranges):

``spec.<slot>.{mean,std,p10,p50,p90,present}``
    Per-band statistics of reflectance (stored value * scale + offset) over the chip's usable
    pixels. Bands are mapped onto fixed *canonical slots* (:data:`SLOTS`) by common name, or
    by centre wavelength when the common name is ambiguous or missing, so a Sentinel-2,
    Landsat or NAIP chip gives a vector of the same length. A slot the sensor lacks holds
    zeros and ``present = 0``; a present slot has ``present = 1``.
``index.<ndvi|ndwi|ndsi>.{mean,std,present}``
    NDVI (nir, red), NDWI (green, nir; McFeeters) and NDSI (green, swir16), where the bands
    exist (``nir08`` stands in for ``nir``); zeros and ``present = 0`` otherwise.
``tex.{gradient_energy,entropy,edge_density}``
    Texture of the chip's brightness (mean visible reflectance): mean squared gradient per
    pixel, Shannon entropy (bits) of brightness binned at 0.01, and the share of pixels whose
    gradient magnitude exceeds 0.02.
``meta.*``
    Acquisition metadata: sine of the sun elevation, sine of the off-nadir angle and the
    scene cloud cover (0-1), each with a ``present`` flag (0 and flag 0 when unknown); day of
    year as sin/cos; the chip centre as a point on the unit sphere (x, y, z); log10 of the
    GSD in metres.

Every value is finite; the vector is float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from terracorpus.catalogs.sensors import Band
from terracorpus.curation.errors import DescriptorError
from terracorpus.curation.quality import brightness_entropy

FloatArray = NDArray[np.floating]
BoolArray = NDArray[np.bool_]

DESCRIPTOR_VERSION = 1


@dataclass(frozen=True)
class Slot:
    """A canonical band position: a name and a centre wavelength (µm)."""

    name: str
    wavelength: float


SLOTS: tuple[Slot, ...] = (
    Slot("coastal", 0.443),
    Slot("blue", 0.490),
    Slot("green", 0.560),
    Slot("red", 0.665),
    Slot("rededge1", 0.705),
    Slot("rededge2", 0.740),
    Slot("rededge3", 0.783),
    Slot("nir", 0.842),
    Slot("nir08", 0.865),
    Slot("nir09", 0.945),
    Slot("swir16", 1.610),
    Slot("swir22", 2.190),
    Slot("vv", math.inf),
    Slot("vh", math.inf),
)
"""Canonical slots. ``vv``/``vh`` (SAR polarisations) are matched by band name only."""

SPEC_STATS = ("mean", "std", "p10", "p50", "p90", "present")
INDICES = ("ndvi", "ndwi", "ndsi")
INDEX_STATS = ("mean", "std", "present")
TEXTURE = ("gradient_energy", "entropy", "edge_density")
META = (
    "sun_elevation",
    "sun_elevation_present",
    "off_nadir",
    "off_nadir_present",
    "cloud_cover",
    "cloud_cover_present",
    "doy_sin",
    "doy_cos",
    "x",
    "y",
    "z",
    "log_gsd",
)
_MAX_WAVELENGTH_GAP = 0.03  # µm: a band farther than this from every slot is left out
_VISIBLE = ("blue", "green", "red")
_EDGE_THRESHOLD = 0.02


@dataclass(frozen=True)
class ChipMeta:
    """Acquisition metadata of one chip (angles in degrees, cloud cover 0-100)."""

    datetime: datetime
    lon: float
    lat: float
    gsd: float
    sun_elevation: float | None = None
    off_nadir: float | None = None
    cloud_cover: float | None = None


def descriptor_names() -> tuple[str, ...]:
    """The name of every position of the descriptor vector, in order."""
    spec = [f"spec.{s.name}.{stat}" for s in SLOTS for stat in SPEC_STATS]
    index = [f"index.{i}.{stat}" for i in INDICES for stat in INDEX_STATS]
    tex = [f"tex.{t}" for t in TEXTURE]
    meta = [f"meta.{m}" for m in META]
    return (*spec, *index, *tex, *meta)


def descriptor_parts() -> dict[str, tuple[int, int]]:
    """Each part's ``[start, stop)`` range in the vector: spec, index, tex, meta."""
    parts: dict[str, tuple[int, int]] = {}
    for i, name in enumerate(descriptor_names()):
        part = name.split(".", 1)[0]
        start, _ = parts.get(part, (i, i))
        parts[part] = (start, i + 1)
    return parts


def _slot_for(band: Band) -> str | None:
    names = {s.name for s in SLOTS}
    cn = (band.common_name or "").lower()
    if cn in names:
        return cn
    if not cn and band.name.lower() in names:
        return band.name.lower()
    candidates = [s for s in SLOTS if math.isfinite(s.wavelength)]
    if cn.startswith("rededge"):
        candidates = [s for s in candidates if s.name.startswith("rededge")]
    best = min(candidates, key=lambda s: abs(s.wavelength - band.center_wavelength))
    if abs(best.wavelength - band.center_wavelength) > _MAX_WAVELENGTH_GAP:
        return None
    return best.name


def band_slots(bands: Sequence[Band]) -> dict[str, int]:
    """Map canonical slot name -> index into ``bands`` (first band wins a shared slot)."""
    slots: dict[str, int] = {}
    for i, band in enumerate(bands):
        slot = _slot_for(band)
        if slot is not None and slot not in slots:
            slots[slot] = i
    return slots


def brightness(reflectance: FloatArray, bands: Sequence[Band]) -> FloatArray:
    """(y, x) mean reflectance of the visible bands (all bands if the sensor has none)."""
    slots = band_slots(bands)
    idx = [slots[v] for v in _VISIBLE if v in slots] or list(range(len(bands)))
    out: FloatArray = np.mean(reflectance[idx], axis=0, dtype=np.float64)
    return out


def _spec_part(refl: FloatArray, slots: dict[str, int], usable: BoolArray) -> FloatArray:
    out = np.zeros((len(SLOTS), len(SPEC_STATS)), dtype=np.float64)
    if not usable.any():
        return out.ravel()
    for k, slot in enumerate(SLOTS):
        if slot.name not in slots:
            continue
        v = refl[slots[slot.name]][usable]
        p10, p50, p90 = np.percentile(v, (10, 50, 90))
        out[k] = (v.mean(), v.std(), p10, p50, p90, 1.0)
    return out.ravel()


def _normalised_difference(a: FloatArray, b: FloatArray) -> FloatArray:
    denom = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        nd = np.where(np.abs(denom) > 1e-6, (a - b) / denom, 0.0)
    return np.clip(nd, -1.0, 1.0)


def _index_part(refl: FloatArray, slots: dict[str, int], usable: BoolArray) -> FloatArray:
    nir = slots.get("nir", slots.get("nir08"))
    pairs = {
        "ndvi": (nir, slots.get("red")),
        "ndwi": (slots.get("green"), nir),
        "ndsi": (slots.get("green"), slots.get("swir16")),
    }
    out = np.zeros((len(INDICES), len(INDEX_STATS)), dtype=np.float64)
    for k, name in enumerate(INDICES):
        a, b = pairs[name]
        if a is None or b is None or not usable.any():
            continue
        nd = _normalised_difference(refl[a][usable], refl[b][usable])
        out[k] = (nd.mean(), nd.std(), 1.0)
    return out.ravel()


def _texture_part(bright: FloatArray, usable: BoolArray) -> FloatArray:
    gy, gx = np.gradient(bright) if min(bright.shape) > 1 else (bright * 0, bright * 0)
    # A gradient is trusted only where the pixel and its neighbours are usable.
    ok = usable.copy()
    ok[1:, :] &= usable[:-1, :]
    ok[:-1, :] &= usable[1:, :]
    ok[:, 1:] &= usable[:, :-1]
    ok[:, :-1] &= usable[:, 1:]
    if not ok.any():
        return np.zeros(len(TEXTURE))
    g2: FloatArray = np.asarray(gx**2 + gy**2)[ok]
    entropy = brightness_entropy(bright[usable])
    edges = float(np.mean(np.sqrt(g2) > _EDGE_THRESHOLD))
    return np.array([g2.mean(), entropy, edges])


def _optional(value: float | None, fn: float) -> tuple[float, float]:
    return (fn, 1.0) if value is not None and math.isfinite(value) else (0.0, 0.0)


def _meta_part(meta: ChipMeta) -> FloatArray:
    sun = meta.sun_elevation
    off = meta.off_nadir
    cc = meta.cloud_cover
    sun_v = _optional(sun, math.sin(math.radians(sun)) if sun is not None else 0.0)
    off_v = _optional(off, math.sin(math.radians(off)) if off is not None else 0.0)
    cc_v = _optional(cc, cc / 100.0 if cc is not None else 0.0)
    tt = meta.datetime.timetuple()
    days = 366 if meta.datetime.year % 4 == 0 else 365
    angle = 2 * math.pi * (tt.tm_yday - 1) / days
    lon, lat = math.radians(meta.lon), math.radians(meta.lat)
    xyz = (math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat))
    return np.array(
        [
            *sun_v,
            *off_v,
            *cc_v,
            math.sin(angle),
            math.cos(angle),
            *xyz,
            math.log10(max(meta.gsd, 1e-3)),
        ]
    )


def describe_chip(
    reflectance: FloatArray,
    bands: Sequence[Band],
    usable: BoolArray,
    meta: ChipMeta,
) -> NDArray[np.float32]:
    """The descriptor vector of one chip (layout: :func:`descriptor_names`).

    Args:
        reflectance: (band, y, x) physical values (stored * scale + offset), in the order of
            ``bands``.
        bands: the sensor's bands, as read.
        usable: (y, x) pixels to describe (data, not cloud or shadow). When none is usable
            the pixel parts are zero and only the metadata part is filled.
        meta: acquisition metadata of the chip.
    """
    if reflectance.ndim != 3 or reflectance.shape[0] != len(bands):
        raise DescriptorError(
            f"reflectance must be (band, y, x) with {len(bands)} bands, got {reflectance.shape}"
        )
    if usable.shape != reflectance.shape[1:]:
        raise DescriptorError(f"usable mask {usable.shape} does not match {reflectance.shape}")
    refl = reflectance.astype(np.float64, copy=False)
    usable = usable & np.isfinite(refl).all(axis=0)
    slots = band_slots(bands)
    bright = brightness(np.nan_to_num(refl), bands)
    vec = np.concatenate(
        [
            _spec_part(refl, slots, usable),
            _index_part(refl, slots, usable),
            _texture_part(bright, usable),
            _meta_part(meta),
        ]
    )
    assert vec.size == len(descriptor_names()), "descriptor layout and values disagree"
    out: NDArray[np.float32] = np.nan_to_num(vec, nan=0.0, posinf=0.0, neginf=0.0).astype(
        np.float32
    )
    return out
