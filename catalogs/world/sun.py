"""Sun position from date, time and place (NOAA's general solar position equations).

Accurate to a few tenths of a degree, which is what STAC ``view:sun_elevation`` and
``view:sun_azimuth`` of real scenes carry.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta


def sun_position(when: datetime, lon: float, lat: float) -> tuple[float, float]:
    """(elevation, azimuth) of the sun in degrees; azimuth clockwise from north.

    Args:
        when: the moment, timezone-aware (naive datetimes are taken as UTC).
        lon: longitude in degrees east.
        lat: latitude in degrees north.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    doy = when.timetuple().tm_yday
    hour = when.hour + when.minute / 60 + when.second / 3600
    gamma = 2 * math.pi / 365 * (doy - 1 + (hour - 12) / 24)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(gamma)
        - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma)
        - 0.040849 * math.sin(2 * gamma)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(gamma)
        + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma)
        + 0.000907 * math.sin(2 * gamma)
        - 0.002697 * math.cos(3 * gamma)
        + 0.00148 * math.sin(3 * gamma)
    )
    true_solar_min = hour * 60 + eqtime + 4 * lon
    ha = math.radians(true_solar_min / 4 - 180)
    phi = math.radians(lat)
    cos_zen = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    elevation = 90 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zen))))
    az = math.degrees(
        math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi))
    )
    return elevation, (az + 180) % 360


def utc_at_local_solar_time(day: datetime, lon: float, solar_hour: float) -> datetime:
    """The UTC moment when the local mean solar time at ``lon`` is ``solar_hour`` on ``day``."""
    base = datetime(day.year, day.month, day.day, tzinfo=UTC)
    seconds = round((solar_hour - lon / 15.0) * 3600)
    return base + timedelta(seconds=seconds)
