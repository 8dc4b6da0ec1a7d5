"""End-to-end `curate` on a demo world, per stage, with 1 and 2 Dask worker processes.

    .venv/bin/python benchmarks/bench_curate.py [--preset bench|small|tiny] [--root DIR]

Builds (or reuses) the world under --root, serves it through the local STAC API, and runs
the whole curation twice into fresh run directories: once on a LocalCluster of one worker
process, once on two. Prints each stage's wall time, its share of the run, the speed-up from
1 to 2 workers, and the CPU time of the whole process tree (this machine is shared; wall
times are context, the side-by-side ratio is the measurement).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import psutil

from terracorpus.catalogs.server import StacServer
from terracorpus.catalogs.world.testing import cached_world
from terracorpus.pipelines.corpus.labels import WorldLabeller
from terracorpus.pipelines.curate import STAGE_NAMES, curate
from terracorpus.pipelines.demo import PRESETS, DemoPreset, demo_run_config


def _tree_cpu_seconds() -> float:
    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            continue
    return total


def run_once(
    world, url: str, run_dir: Path, preset: DemoPreset, workers: int
) -> tuple[dict[str, float], float]:  # type: ignore[no-untyped-def]
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = demo_run_config(world, url, run_dir, preset)
    cfg = cfg.model_copy(update={"dask": cfg.dask.model_copy(update={"workers": workers})})
    cpu0 = _tree_cpu_seconds()
    t0 = time.perf_counter()
    result = curate(cfg, echo=lambda s: None, labeller=WorldLabeller(str(world.out)))
    wall = time.perf_counter() - t0
    stages = {s.name: s.seconds for s in result.stages}
    stages["total"] = wall
    return stages, _tree_cpu_seconds() - cpu0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="bench", choices=["tiny", "small", "bench"])
    ap.add_argument("--root", default="bench-out", type=Path)
    args = ap.parse_args()
    t = time.perf_counter()
    world = cached_world(args.root / "worlds", args.preset, 0)
    print(
        f"world {args.preset}: {world.total_items} items, ready in {time.perf_counter() - t:.0f} s"
    )
    preset = PRESETS.get(args.preset, PRESETS["small"])
    results = {}
    with StacServer([world.out]) as server:
        for workers in (1, 2):
            results[workers] = run_once(
                world, server.url, args.root / f"run-{args.preset}-{workers}w", preset, workers
            )
    (one, cpu1), (two, cpu2) = results[1], results[2]
    print(
        f"\n{'stage':<12} {'1 worker s':>11} {'share':>6} {'2 workers s':>12} {'share':>6} {'speed-up':>9}"
    )
    for name in (*STAGE_NAMES, "total"):
        a, b = one.get(name, 0.0), two.get(name, 0.0)
        print(
            f"{name:<12} {a:>11.1f} {100 * a / one['total']:>5.0f}% {b:>12.1f} {100 * b / two['total']:>5.0f}% "
            f"{(a / b if b else float('nan')):>8.2f}x"
        )
    print(f"\nCPU seconds of the whole process tree: 1 worker {cpu1:.0f}, 2 workers {cpu2:.0f}")
    print(
        f"cores: {psutil.cpu_count()}, load average now: {', '.join(f'{x:.1f}' for x in psutil.getloadavg())}"
    )


if __name__ == "__main__":
    main()
