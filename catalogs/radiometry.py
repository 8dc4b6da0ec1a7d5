"""Per-item radiometry: the scale, offset and nodata of each band of one STAC item.

Precedence, per band (docs/sensors.md, "Radiometry"):

1. the item: ``raster:bands`` on the band's asset (STAC 1.0, raster extension 1.x: ``scale``,
   ``offset``, ``nodata``) or the STAC 1.1 ``bands`` (``raster:scale``, ``raster:offset``,
   ``nodata``; also on the asset itself), unless the sensor says ``item_radiometry: false``;
2. the sensor's rules (``radiometry_rules``), e.g. Sentinel-2's processing-baseline offset
   (a rule in ``OVER_ITEM`` decides before step 1: Earth Search's ``boa_offset_applied``);
3. the registry's default for the band.

Scale and offset are taken together: an item that declares either is the source of both (a
missing one is the raster extension's default, 1 or 0). ``nodata`` is the item's where it
declares one, else the registry's. An item value that cannot be right for the sensor (a scale
an order of magnitude away from the registry's, an offset larger than the band's whole
physical range) is an :class:`ItemParseError` naming the item, the band and what to set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from terracorpus.catalogs.errors import ItemParseError
from terracorpus.catalogs.scene import BandRadiometry, SceneRecord
from terracorpus.catalogs.sensors import Band, Sensor

Json = Mapping[str, Any]
ScaleOffset = tuple[float, float]
Rule = Callable[[Json, datetime, Band], tuple[str, ScaleOffset] | None]
"""A registry rule: (item properties, acquisition time, registry band) -> (the source name
to record, (scale, offset)), or None when the rule cannot decide for this item."""

SCALE_TOLERANCE = 10.0
"""An item scale more than this factor away from the registry's is refused."""

S2_BASELINE_0400_DATE = datetime(2022, 1, 25, tzinfo=UTC)
"""ESA switched Sentinel-2 production to processing baseline 04.00 on 25 January 2022."""
S2_BOA_ADD_OFFSET = -0.1
"""BOA_ADD_OFFSET (-1000 DN) at the quantification value 10000, as reflectance."""


def scene_radiometry(
    sensor: Sensor,
    props: Json,
    assets: Json,
    band_keys: Mapping[str, str],
    when: datetime,
    item_id: str,
) -> tuple[tuple[str, BandRadiometry], ...]:
    """Every band's radiometry for one item, in the sensor's band order.

    Args:
        sensor: the item's sensor.
        props: the item's properties.
        assets: the item's assets.
        band_keys: band name -> the asset key that holds it.
        when: the acquisition time.
        item_id: for messages.

    Raises:
        ItemParseError: an item value contradicts the registry beyond any real product.
    """
    out = []
    for band in sensor.bands:
        key = band_keys[band.name]
        declared = _declared(assets[key], sensor.band_index.get(band.name, 1))
        out.append((band.name, _resolve(sensor, band, declared, props, when, item_id, key)))
    return tuple(out)


def band_radiometry(scene: SceneRecord, band: Band) -> BandRadiometry:
    """The radiometry of ``band`` in ``scene``: the record's, else the registry's."""
    return scene.radiometry_of(band.name) or registry_radiometry(band)


def registry_radiometry(band: Band) -> BandRadiometry:
    return BandRadiometry(band.scale, band.offset, band.nodata, "registry")


def scene_arrays(
    scene: SceneRecord, bands: Sequence[Band]
) -> tuple[list[float], list[float], list[float | None]]:
    """Scale, offset and nodata of ``bands`` in ``scene``, as three lists in band order."""
    rads = [band_radiometry(scene, b) for b in bands]
    return [r.scale for r in rads], [r.offset for r in rads], [r.nodata for r in rads]


# -- the item ------------------------------------------------------------------------------
def _declared(asset: Json, band_index: int) -> dict[str, Any]:
    """What the asset declares for its ``band_index``-th band: scale, offset, nodata keys
    present (raster extension 1.x ``raster:bands``, STAC 1.1 ``bands`` / asset fields)."""
    out: dict[str, Any] = {}
    for key in ("raster:scale", "raster:offset", "nodata"):  # STAC 1.1 on the asset itself
        if key in asset:
            out[key.removeprefix("raster:")] = asset[key]
    for list_key in ("bands", "raster:bands"):
        entries = asset.get(list_key)
        if not isinstance(entries, list) or len(entries) < band_index:
            continue
        entry = entries[band_index - 1]
        if not isinstance(entry, Mapping):
            continue
        for field in ("scale", "offset"):
            for key in (f"raster:{field}", field):
                if key in entry:
                    out[field] = entry[key]
        if "nodata" in entry:
            out["nodata"] = entry["nodata"]
    return out


def _resolve(
    sensor: Sensor,
    band: Band,
    declared: Mapping[str, Any],
    props: Json,
    when: datetime,
    item_id: str,
    key: str,
) -> BandRadiometry:
    nodata = band.nodata
    if sensor.item_radiometry and "nodata" in declared:
        nodata = _nodata(declared["nodata"], item_id, key)
    for name in (n for n in sensor.radiometry_rules if n in OVER_ITEM):
        decided = RULES[name](props, when, band)
        if decided is not None:  # the item states a fact its raster:bands ignore
            source, (scale, offset) = decided
            return BandRadiometry(scale, offset, nodata, source)
    if sensor.item_radiometry and ("scale" in declared or "offset" in declared):
        scale = _finite(declared.get("scale", 1.0), item_id, key, "scale")
        offset = _finite(declared.get("offset", 0.0), item_id, key, "offset")
        _check_plausible(sensor, band, scale, offset, item_id, key)
        return BandRadiometry(scale, offset, nodata, "item")
    for name in (n for n in sensor.radiometry_rules if n not in OVER_ITEM):
        decided = RULES[name](props, when, band)
        if decided is not None:
            source, (scale, offset) = decided
            return BandRadiometry(scale, offset, nodata, source)
    return BandRadiometry(band.scale, band.offset, nodata, "registry")


def _finite(v: Any, item_id: str, key: str, field: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ItemParseError(
            f"item {item_id}: asset {key!r} declares raster {field} {v!r}, not a finite number; "
            "fix the item, or set `item_radiometry: false` for its sensor in a sensors file "
            "(docs/sensors.md) to use the registry's values"
        )
    return float(v)


def _nodata(v: Any, item_id: str, key: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, str) and v.lower() in ("nan", "inf", "-inf"):
        return float(v)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ItemParseError(
            f"item {item_id}: asset {key!r} declares nodata {v!r}, not a number nor "
            '"nan"/"inf"/"-inf"; fix the item or set `item_radiometry: false` for its sensor'
        )
    return float(v)


def _check_plausible(
    sensor: Sensor, band: Band, scale: float, offset: float, item_id: str, key: str
) -> None:
    """Refuse item values no product of this sensor can have (the registry's scale is the
    product's; real variants differ in offset, never in scale by an order of magnitude)."""
    fix = (
        f"if the item is wrong, set `item_radiometry: false` for sensor {sensor.name!r} in a "
        "sensors file (docs/sensors.md) to use the registry's rules; if the registry is wrong, "
        f"set band {band.name}'s scale/offset there"
    )
    if scale == 0 or not (1 / SCALE_TOLERANCE <= abs(scale / band.scale) <= SCALE_TOLERANCE):
        raise ItemParseError(
            f"item {item_id}: asset {key!r} (band {band.name}) declares scale {scale:g}, but "
            f"sensor {sensor.name!r} has scale {band.scale:g}: off by more than "
            f"{SCALE_TOLERANCE:g}x, which no {sensor.name} product has; {fix}"
        )
    span = _physical_span(band)
    if span is not None and abs(offset - band.offset) > span:
        raise ItemParseError(
            f"item {item_id}: asset {key!r} (band {band.name}) declares offset {offset:g}, but "
            f"sensor {sensor.name!r} has offset {band.offset:g} and a physical range of only "
            f"{span:g}; {fix}"
        )


def _physical_span(band: Band) -> float | None:
    """The width of the band's physical range (integer dtypes; None for floats)."""
    match = re.fullmatch(r"u?int(8|16|32)", band.dtype)
    if match is None:
        return None
    bits = int(match.group(1)) - (0 if band.dtype.startswith("u") else 1)
    return float(abs(band.scale) * (2**bits - 1))


# -- registry rules ------------------------------------------------------------------------
def _s2_baseline(props: Json) -> tuple[int, int] | None:
    """The processing baseline an item declares, as (major, minor): ``s2:processing_baseline``
    (PC, Earth Search v1), ``processing:version``, ``sentinel:processing_baseline`` (Earth
    Search v0); ``05.10`` or ``N0510``."""
    for key in ("s2:processing_baseline", "processing:version", "sentinel:processing_baseline"):
        raw = props.get(key)
        if raw is None:
            continue
        m = re.fullmatch(r"N?(\d{2})\.?(\d{2})", str(raw).strip())
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def s2_boa_offset_applied(
    props: Json, when: datetime, band: Band
) -> tuple[str, ScaleOffset] | None:
    """Earth Search's ``earthsearch:boa_offset_applied: true`` (v0: ``sentinel:...``): it
    already added BOA_ADD_OFFSET (-1000) to the stored values, so reflectance is stored / 10000,
    offset 0, whatever its ``raster:bands`` say (they say -0.1 on every v1 item)."""
    applied = any(
        props.get(k) is True
        for k in ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied")
    )
    return ("rule:s2-boa-offset-applied", (band.scale, 0.0)) if applied else None


def s2_processing_baseline(
    props: Json, when: datetime, band: Band
) -> tuple[str, ScaleOffset] | None:
    """Sentinel-2 L2A: offset -0.1 from processing baseline 04.00 on, none before.

    The baseline is read from the item; an item that declares none is placed by its
    acquisition time (baseline 04.00 went live on 25 January 2022; reprocessed older products
    are published as ``sentinel-2-c1-l2a``, whose items declare their radiometry).
    """
    baseline = _s2_baseline(props)
    if baseline is not None:
        offset = S2_BOA_ADD_OFFSET if baseline >= (4, 0) else 0.0
        return "rule:s2-processing-baseline", (band.scale, offset)
    offset = S2_BOA_ADD_OFFSET if when >= S2_BASELINE_0400_DATE else 0.0
    return "rule:s2-processing-baseline-date", (band.scale, offset)


RULES: dict[str, Rule] = {
    "s2-boa-offset-applied": s2_boa_offset_applied,
    "s2-processing-baseline": s2_processing_baseline,
}
"""Rules a sensor may name in ``radiometry_rules``, tried in the order it names them."""
OVER_ITEM = frozenset({"s2-boa-offset-applied"})
"""Rules that decide before the item's raster:bands: they read a statement of the item about
its stored values that its raster:bands contradict."""
