"""Chip-read benchmark: ms per chip of ``read_scene_chips``, per-chip reads against union reads.

On the tiny demo world's real COGs (one region: Landsat, Sentinel-2, NAIP), served by the
loopback range server with an injected latency per request (like object storage), a batch
of chips of each scene is read by :func:`terracorpus.pipelines.pixels.read_scene_chips`:

* ``per-chip``: one windowed (or warped) read per chip per asset (``union_reads=False``);
* ``union``: each asset read once over the union window of the batch, chips cut from it in
  memory (``union_reads=True``, the default).

Each read goes to URLs no earlier read used (the server's moved copies of the same COGs), so
no GDAL cache is shared between measurements; methods alternate, ``--repeats`` times each.
Prints ms per chip (wall and CPU of this process) per sensor and chip size, and the ratio.

Run under the shared lock:

    flock /tmp/terracorpus-bench.lock .venv/bin/python benchmarks/bench_read_batch.py \\
        --chip-m 60,480 --batch-size 64 --latency 0.01
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import rasterio.warp

from terracorpus.catalogs.parse import scene_from_item
from terracorpus.catalogs.scene import SceneRecord
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.catalogs.world.testing import tiny_world
from terracorpus.pipelines.config import DescribeConfig
from terracorpus.pipelines.pixels import ChipPixels, ChipRequest, read_scene_chips
from terracorpus.pipelines.stages.describe import read_gsd
from terracorpus.pipelines.testing.httpserve import RangeServer

sys.path.insert(0, str(Path(__file__).parent))
from bench_scale import _moved, _region, _region_items

CACHE = Path(tempfile.gettempdir()) / "terracorpus-bench"
_SHIFTS = itertools.count(1)
OTHER = "EPSG:26915"  # NAD83 / UTM 15N: the NAIP anchors' CRS in the scale harness


def _chips(scene: SceneRecord, chip_m: float, n: int, crs: str) -> list[ChipRequest]:
    """Up to ``n`` chips on a lattice in ``crs`` over the scene (off its pixel grid by 3.7 m)."""
    minx, miny, maxx, maxy = rasterio.warp.transform_bounds(scene.crs, crs, *scene.grid().bounds)
    gsd = read_gsd(scene, chip_m, DescribeConfig())
    out = []
    x0, y0 = minx + 3.7, maxy - 3.7
    cols = max(1, math.floor((maxx - x0) / chip_m))
    for k in range(n):
        i, j = divmod(k, cols)
        x, y = x0 + j * chip_m, y0 - i * chip_m
        if y - chip_m < miny:
            break
        out.append(ChipRequest(f"c{k}", (x, y - chip_m, x + chip_m, y), crs, gsd))
    return out


def _time(scene: SceneRecord, reqs: list[ChipRequest], union: bool) -> tuple[float, float, int]:
    proc = psutil.Process()
    c0, t0 = proc.cpu_times(), time.perf_counter()
    got = read_scene_chips(scene, builtin_registry().get(scene.sensor), reqs, union_reads=union)
    wall = time.perf_counter() - t0
    c1 = proc.cpu_times()
    ok = sum(isinstance(g, ChipPixels) for g in got)
    return wall, (c1.user + c1.system) - (c0.user + c0.system), ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chip-m", default="60,480", help="chip sizes, metres, comma-separated")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.01, help="seconds per range request")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    world = Path(tiny_world(CACHE).out)
    region = _region(world)
    crs = f"EPSG:{region['epsg']}"
    items = _region_items(world, region)
    registry = builtin_registry()
    results: list[dict[str, Any]] = []
    with RangeServer(world / "cogs") as server:
        server.configure(latency_s=args.latency)
        cases = itertools.product([float(v) for v in args.chip_m.split(",")], ("same", OTHER))
        for chip_m, grid_crs in cases:
            for item in items:
                row: dict[str, Any] = {"chip_m": chip_m, "item": item["id"], "crs": grid_crs}
                for _rep, union in itertools.product(range(args.repeats), (False, True)):
                    dx = 1000.0 * next(_SHIFTS)  # new URLs: nothing cached from earlier reads
                    moved = _moved(item, dx, 0.0, f"r{dx:g}", crs, world / "cogs", server)
                    scene = scene_from_item(moved, registry)
                    crs_of = scene.crs if grid_crs == "same" else grid_crs
                    reqs = _chips(scene, chip_m, args.batch_size, crs_of)
                    wall, cpu, ok = _time(scene, reqs, union)
                    key = "union" if union else "per_chip"
                    row.setdefault(key, []).append((wall, cpu))
                    row["sensor"], row["chips"], row[f"ok_{key}"] = scene.sensor, len(reqs), ok
                results.append(row)
                _print_row(row)
    _summary(results)


def _ms(row: dict[str, Any], key: str, part: int) -> float:
    vals = sorted(v[part] for v in row[key])
    return 1000.0 * vals[len(vals) // 2] / max(1, row["chips"])  # the median repeat


def _print_row(row: dict[str, Any]) -> None:
    a, b = _ms(row, "per_chip", 0), _ms(row, "union", 0)
    print(
        f"{row['chip_m']:>5g} m  {row['crs']:<10} {row['sensor']:<18} {row['chips']:>4} chips  "
        f"per-chip {a:7.1f} ms/chip (CPU {_ms(row, 'per_chip', 1):6.1f})  "
        f"union {b:6.1f} ms/chip (CPU {_ms(row, 'union', 1):5.1f})  {a / b:5.1f}x  "
        f"ok {row['ok_per_chip']}/{row['ok_union']}",
        flush=True,
    )


def _summary(results: list[dict[str, Any]]) -> None:
    print(
        "\n| chip m | chip CRS | sensor | chips | per-chip ms/chip (CPU) | union ms/chip (CPU) | ratio |"
    )
    print("|---:|---|---|---:|---:|---:|---:|")
    by: dict[tuple[float, str, str], list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault((r["chip_m"], r["crs"], r["sensor"]), []).append(r)
    for (chip_m, crs, sensor), rows in sorted(by.items()):
        n = sum(r["chips"] for r in rows)
        tot = {
            k: [sum(_ms(r, k, p) * r["chips"] for r in rows) / n for p in (0, 1)]
            for k in ("per_chip", "union")
        }
        print(
            f"| {chip_m:g} | {crs} | {sensor} | {n} | {tot['per_chip'][0]:.1f} ({tot['per_chip'][1]:.1f})"
            f" | {tot['union'][0]:.1f} ({tot['union'][1]:.1f}) | "
            f"{tot['per_chip'][0] / tot['union'][0]:.1f}x |"
        )
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
