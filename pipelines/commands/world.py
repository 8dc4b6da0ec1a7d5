"""``terracorpus world create``: build the synthetic demo world."""

from __future__ import annotations

import time
from pathlib import Path

import click

from terracorpus.catalogs.world import PRESETS, create_world


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
    help="World size: tiny (tests), small (demo), bench (benchmarks).",
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
    click.echo(f"  {s.bytes_written / 1e6:.1f} MB written; {time.perf_counter() - t:.1f} s")
    click.echo(f"  serve it: terracorpus catalog serve {s.out}")


COMMANDS = [world]
