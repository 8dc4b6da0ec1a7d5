"""World presets: how large the regions are and how many acquisitions each sensor makes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from terracorpus.catalogs.errors import WorldError


@dataclass(frozen=True)
class Preset:
    """Sizes (metres, multiples of 60) and acquisition counts over ``start``..``end``.

    The world spans the calendar years of ``start``..``end``; its land cover changes between
    them (a truth map per region per year). Acquisition counts are over the whole span and
    spread evenly over its years. ``naip_quads`` splits the NAIP region into n x n
    quarter-quad items per NAIP year; ``n_s1`` Sentinel-1 RTC scenes per region are made only
    when Sentinel-1 is asked for. ``clouds`` is (P(clear day), P(clear or partly cloudy day)):
    the rest of the days are overcast (50-95 % of the region).
    """

    name: str
    start: date
    end: date
    sizes_m: tuple[tuple[str, float], ...]
    n_s2: int
    n_landsat: int
    n_gaofen: int
    n_s1: int
    naip_quads: int
    naip_years: tuple[int, ...]
    clouds: tuple[float, float] = (0.35, 0.75)

    def size_of(self, region: str) -> float:
        return dict(self.sizes_m)[region]

    @property
    def years(self) -> tuple[int, ...]:
        """The calendar years the world spans (a truth map for each)."""
        return tuple(range(self.start.year, self.end.year + 1))


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        start=date(2021, 1, 1),
        end=date(2023, 12, 31),
        sizes_m=(
            ("iowa-prairie", 1500.0),
            ("north-slope", 3000.0),
            ("moselle-utm31-32", 3600.0),
            ("hubei-lakes", 1800.0),
        ),
        n_s2=5,
        n_landsat=3,
        n_gaofen=2,
        n_s1=3,
        naip_quads=1,
        naip_years=(2021, 2023),
    ),
    "small": Preset(
        name="small",
        start=date(2021, 1, 1),
        end=date(2023, 12, 31),
        sizes_m=(
            ("iowa-prairie", 3600.0),
            ("north-slope", 6000.0),
            ("moselle-utm31-32", 7200.0),
            ("hubei-lakes", 4800.0),
        ),
        n_s2=15,
        n_landsat=8,
        n_gaofen=5,
        n_s1=9,
        naip_quads=2,
        naip_years=(2021, 2023),
    ),
    "bench": Preset(
        name="bench",
        start=date(2020, 1, 1),
        end=date(2023, 12, 31),
        sizes_m=(
            ("iowa-prairie", 6000.0),
            ("north-slope", 12000.0),
            ("moselle-utm31-32", 14400.0),
            ("hubei-lakes", 9600.0),
        ),
        n_s2=48,
        n_landsat=24,
        n_gaofen=12,
        n_s1=24,
        naip_quads=2,
        naip_years=(2020, 2022),
    ),
    # Realistic redundancy: most of the ground is the Arctic coast (sea, sea ice and snow
    # for most of the year, tundra, an ice field) and most days are overcast, as in real
    # catalogs; fields, forest and towns are a small minority. See docs/demo-world.md for
    # the class proportions of its candidate groups.
    "redundant": Preset(
        name="redundant",
        start=date(2021, 1, 1),
        end=date(2023, 12, 31),
        sizes_m=(
            ("iowa-prairie", 2400.0),
            ("north-slope", 12000.0),
            ("moselle-utm31-32", 3600.0),
            ("hubei-lakes", 2400.0),
        ),
        n_s2=9,
        n_landsat=6,
        n_gaofen=2,
        n_s1=6,
        naip_quads=1,
        naip_years=(2021,),
        clouds=(0.15, 0.45),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise WorldError(
            f"unknown world preset {name!r}; choose one of {', '.join(PRESETS)}"
        ) from None
