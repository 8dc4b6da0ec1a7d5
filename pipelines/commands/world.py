"""``terracorpus world create|classes``: build the synthetic demo world, say what it holds."""

from __future__ import annotations

import time
from pathlib import Path

import click

from terracorpus.catalogs.world import PRESETS, create_world, read_world
from terracorpus.catalogs.world.stats import chip_classes


@click.group("world")
def world() -> None:
    """The synthetic multi-sensor demo world (COGs + STAC items + land-cover truth)."""


@world.command("create")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory to build the world in (new or empty).",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default="small",
    show_default=True,
    help="World size: tiny (tests), small (demo), bench (benchmarks), redundant "
    "(mostly repetitive ground and clouds, for curation experiments).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Random seed; the same seed gives the same world.",
)
@click.option(
    "--sentinel1/--no-sentinel1",
    default=False,
    show_default=True,
    help="Also make Sentinel-1 RTC (VV, VH backscatter) scenes over every region.",
)
def create(out: Path, preset: str, seed: int, sentinel1: bool) -> None:
    """Build the demo world into OUT and print what was built."""
    t = time.perf_counter()
    s = create_world(out, preset=preset, seed=seed, sentinel1=sentinel1)
    items = ", ".join(f"{n} {c}" for c, n in s.n_items.items())
    click.echo(f"world {s.preset!r} (seed {s.seed}) in {s.out}")
    click.echo(f"  items: {s.total_items} ({items})")
    click.echo(f"  regions: {', '.join(s.regions)}")
    click.echo(f"  bbox: {', '.join(f'{v:.4f}' for v in s.bbox)}; time {s.start} .. {s.end}")
    events = read_world(s.out).get("events", [])
    click.echo(f"  years: {s.start.year}..{s.end.year}; {len(events)} land-cover change events")
    click.echo(f"  {s.bytes_written / 1e6:.1f} MB written; {time.perf_counter() - t:.1f} s")
    click.echo(f"  serve it: terracorpus catalog serve {s.out}")


@world.command("classes")
@click.argument("world_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--chip-size", type=float, default=480.0, show_default=True, help="Chip side, m.")
@click.option("--year", type=int, default=None, help="Truth of this year (default: the first).")
def classes(world_dir: Path, chip_size: float, year: int | None) -> None:
    """Class proportions of a world's chips: the majority land-cover class of every
    CHIP-SIZE square of every region (the mix a random sample of candidate groups draws
    from)."""
    cc = chip_classes(world_dir, chip_size, year)
    click.echo(f"{cc.total} chips of {chip_size:g} m, truth of {year or 'the first year'}")
    for name, share in cc.shares().items():
        click.echo(f"  {name:<10} {cc.counts[name]:>6}  {100 * share:5.1f} %")
    for region, counts in cc.by_region.items():
        mix = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        click.echo(f"  {region}: {mix}")


COMMANDS = [world]
