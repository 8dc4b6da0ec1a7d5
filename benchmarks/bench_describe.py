"""Describe benchmark: chips/s and bytes read per chip, against what a user would write.

On a demo world served over the loopback range HTTP server (so every byte read is counted
by the server, not estimated), for the same chips (every image of a sample of groups):

* ``terracorpus describe`` (the stage, on a LocalCluster of 2 and of 1 worker processes);
* a plain loop of rasterio full-resolution windowed reads of the same windows (every band
  and the QA asset opened per chip, one process): the raw-library reference;
* ``odc.stac.load`` of the same chips on the same grid as describe (one call per chip).

Targets (issue 4): describe >= 3x the raw loop and >= 1.5x odc-stac in chips/s; bytes per
described chip <= 0.15 of the raw full-resolution loop's bytes for the same chip; the 1 -> 2
worker speed-up is reported, and CPU seconds beside wall time (describe: its worker
processes and the client; the references: their process). References run in a fresh process
each, so no GDAL cache is shared between measurements.

Run: ``.venv/bin/python benchmarks/bench_describe.py [--quick] [--preset P] [--groups N]``
(``--quick``: the tiny world; default: the ``bench`` world if it is built in the cache, else
``small``; all groups, or a block of ``--groups N`` groups in anchor-scene order).
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil
import rasterio
import rasterio.warp
from rasterio.windows import Window, from_bounds

from terracorpus.catalogs.access import origin_pattern
from terracorpus.catalogs.frames import scenes_to_frame
from terracorpus.catalogs.parse import scene_from_item
from terracorpus.catalogs.scene import AssetRef, SceneRecord
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.catalogs.world.testing import cached_world
from terracorpus.curation.groups import GroupParams, ImageGroup, build_groups, groups_to_frame
from terracorpus.pipelines.cluster import dask_client, worker_env
from terracorpus.pipelines.config import DaskConfig, DescribeConfig, RunConfig
from terracorpus.pipelines.rundir import RunDir
from terracorpus.pipelines.stages.describe import read_gsd, run_describe
from terracorpus.pipelines.testing.httpserve import RangeServer

CACHE = Path(tempfile.gettempdir()) / "terracorpus-bench"
TARGET_RAW, TARGET_ODC, TARGET_BYTES = 3.0, 1.5, 0.15


@dataclass(frozen=True)
class Job:
    """One chip as the reference loops see it."""

    item_path: str
    hrefs: tuple[tuple[str, str, int], ...]  # (asset key, url, band index), QA last
    qa_key: str | None
    bounds: tuple[float, float, float, float]
    crs: str
    gsd: float


def _world(preset: str | None, quick: bool) -> Path:
    if quick:
        preset = "tiny"
    elif preset is None:
        preset = "bench" if (CACHE / "world-bench-0" / "world.json").exists() else "small"
    print(f"world: {preset} (cached in {CACHE})", file=sys.stderr)
    return Path(cached_world(CACHE, preset).out)


def _served(scene: SceneRecord, world: Path, server: RangeServer) -> SceneRecord:
    def remote(ref: AssetRef) -> AssetRef:
        return replace(ref, href=server.url(Path(ref.href).relative_to(world)))

    bands = tuple((n, remote(r)) for n, r in scene.bands)
    return replace(scene, bands=bands, qa=scene.qa and remote(scene.qa))


BENCH_API = "http://stac.bench/api"


def _trusting(scenes: list[SceneRecord]) -> dict[str, Any]:
    """Config sections under which the href policy lets the run read these scenes' assets
    (the world's folder, the range server) and nothing else."""
    hrefs = [r.href for s in scenes for _, r in s.bands]
    origins = sorted({origin_pattern(h) for h in hrefs if "://" in h})
    api = {"url": BENCH_API, "collections": ["any"], "asset_hosts": origins}
    return {"search": {"apis": [api]}, "access": {"local_roots": [str(CACHE)]}}


def _sample(groups: list[ImageGroup], n: int | None) -> list[ImageGroup]:
    """A block of ``n`` groups in anchor-scene order (all if None), as a run over one area."""
    return sorted(groups, key=lambda g: (g.anchor_scene_id, g.group_id))[:n]


def _jobs(
    groups: list[ImageGroup], scenes: dict[str, SceneRecord], world: Path, cfg: DescribeConfig
) -> list[Job]:
    jobs = []
    for g in groups:
        for m in g.members:
            s = scenes[m.scene_id]
            refs = dict.fromkeys((r.key, r.href, r.band_index) for _, r in s.bands)
            hrefs = (*refs, *([(s.qa.key, s.qa.href, 1)] if s.qa else []))
            item = world / "items" / s.collection / f"{s.id}.json"
            gsd = read_gsd(s, g.bounds[2] - g.bounds[0], cfg)
            jobs.append(Job(str(item), hrefs, s.qa.key if s.qa else None, g.bounds, g.crs, gsd))
    return jobs


# -- references, each in a fresh process ----------------------------------------------------
def _gdal_env() -> dict[str, Any]:
    return {k: int(v) if v.isdigit() else v for k, v in worker_env().items()}


def _cpu_seconds() -> float:
    """CPU seconds (user + system, all threads) of the calling process."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def raw_loop(jobs: list[Job]) -> tuple[float, float]:
    """Full-resolution windowed reads of every chip's window, band files opened per chip."""
    t0, c0 = time.perf_counter(), _cpu_seconds()
    with rasterio.Env(**_gdal_env()):
        for job in jobs:
            for _, href, index in job.hrefs:
                with rasterio.open(f"/vsicurl/{href}") as ds:
                    b = job.bounds
                    if ds.crs != job.crs:
                        b = rasterio.warp.transform_bounds(job.crs, ds.crs, *b)
                    win = from_bounds(*b, transform=ds.transform).round_offsets().round_lengths()
                    win = win.intersection(Window(0, 0, ds.width, ds.height))
                    ds.read(index, window=win)
    return time.perf_counter() - t0, _cpu_seconds() - c0


def odc_loop(jobs: list[Job]) -> tuple[float, float]:
    """``odc.stac.load`` of every chip on the describe grid, one call per chip."""
    import odc.stac
    import pystac
    from odc.geo.geobox import GeoBox

    items = {j.item_path: pystac.Item.from_file(j.item_path) for j in jobs}
    t0, c0 = time.perf_counter(), _cpu_seconds()
    with rasterio.Env(**_gdal_env()):
        for job in jobs:
            urls = {Path(h).name: h for _, h, _ in job.hrefs}
            keys = list(dict.fromkeys(k for k, _, _ in job.hrefs))
            box = GeoBox.from_bbox(job.bounds, crs=job.crs, resolution=job.gsd)
            resampling = {"*": "average", **({job.qa_key: "nearest"} if job.qa_key else {})}
            odc.stac.load(
                [items[job.item_path]],
                bands=keys,
                geobox=box,
                resampling=resampling,
                patch_url=lambda u, urls=urls: urls.get(Path(u).name, u),  # type: ignore[misc]
            ).load()
    return time.perf_counter() - t0, _cpu_seconds() - c0


def _in_fresh_process(fn: Any, jobs: list[Job]) -> tuple[float, float]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        seconds, cpu = pool.apply(fn, (jobs,))
    return float(seconds), float(cpu)


# -- describe --------------------------------------------------------------------------------
def describe(
    root: Path,
    scenes: list[SceneRecord],
    groups: list[ImageGroup],
    workers: int,
    settings: DescribeConfig,
) -> tuple[float, float]:
    """Wall seconds of the stage and CPU seconds of its workers and the client."""
    shutil.rmtree(root, ignore_errors=True)
    scenes = [replace(s, api_url=BENCH_API) for s in scenes]
    cfg = RunConfig(
        run_dir=str(root),
        dask=DaskConfig(workers=workers),
        describe=settings,
        **_trusting(scenes),
    )
    run = RunDir(root, cfg)
    run.write_table("scenes.parquet", scenes_to_frame(scenes), stage="search")
    run.write_table("groups.parquet", groups_to_frame(groups), stage="group")
    with dask_client(cfg.dask, quiet=True) as client:
        client.run(importlib.import_module, "terracorpus.pipelines.stages.describe")
        c0 = sum(client.run(_cpu_seconds).values()) + _cpu_seconds()
        t0 = time.perf_counter()
        summary = run_describe(cfg, run, client)
        seconds = time.perf_counter() - t0
        cpu = sum(client.run(_cpu_seconds).values()) + _cpu_seconds() - c0
    print(f"describe ({workers} worker(s)): {summary}", file=sys.stderr)
    return seconds, cpu


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the tiny world")
    ap.add_argument("--preset", choices=["tiny", "small", "bench"])
    ap.add_argument("--groups", type=int, help="describe only this many groups (default: all)")
    ap.add_argument(
        "--descriptor-size", type=int, help="describe.descriptor_size (default: config's)"
    )
    args = ap.parse_args(argv)
    settings = DescribeConfig(
        **({"descriptor_size": args.descriptor_size} if args.descriptor_size else {})
    )
    world = _world(args.preset, args.quick)
    reg = builtin_registry()
    scenes = [
        scene_from_item(json.loads(p.read_text()), reg)
        for p in sorted(world.glob("items/*/*.json"))
    ]
    groups = _sample(build_groups(scenes, GroupParams()), args.groups)
    with RangeServer(world) as server, tempfile.TemporaryDirectory(prefix="bench-describe-") as tmp:
        served = {s.id: _served(s, world, server) for s in scenes}
        used = sorted({m.scene_id for g in groups for m in g.members})
        jobs = _jobs(groups, served, world, settings)
        n = len(jobs)
        results: dict[str, tuple[float, int, int, float]] = {}
        for workers in (2, 1):
            server.reset_counters()
            t, cpu = describe(
                Path(tmp) / f"run{workers}", [served[i] for i in used], groups, workers, settings
            )
            requests = sum(server.requests.values())
            results[f"describe {workers}w"] = (t, server.bytes_sent, requests, cpu)
        for name, fn in (("raw full-res loop", raw_loop), ("odc.stac.load", odc_loop)):
            server.reset_counters()
            t, cpu = _in_fresh_process(fn, jobs)
            results[name] = (t, server.bytes_sent, sum(server.requests.values()), cpu)
            print(f"{name}: done", file=sys.stderr)
    _report(results, n, len(groups), settings.descriptor_size)
    return 0


def _report(
    results: dict[str, tuple[float, int, int, float]], n: int, n_groups: int, size: int
) -> None:
    print(
        f"\n{n} chips of {n_groups} groups, descriptor grid {size} px; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n"
    )
    print(
        f"{'method':<22}{'seconds':>9}{'chips/s':>9}{'KB/chip':>9}{'req/chip':>9}"
        f"{'cpu s':>8}{'cpu ms/chip':>12}"
    )
    for name, (t, b, r, c) in results.items():
        print(
            f"{name:<22}{t:>9.2f}{n / t:>9.1f}{b / n / 1e3:>9.1f}{r / n:>9.1f}"
            f"{c:>8.2f}{c / n * 1e3:>12.2f}"
        )
    d2, b2, _, c2 = results["describe 2w"]
    d1, _, _, _ = results["describe 1w"]
    raw, braw, _, craw = results["raw full-res loop"]
    odc, _, _, _ = results["odc.stac.load"]
    rows = [
        (
            "chips/s vs raw full-res loop (2 workers)",
            raw / d2,
            f">= {TARGET_RAW}x",
            raw / d2 >= TARGET_RAW,
        ),
        ("chips/s vs raw full-res loop (1 worker)", raw / d1, "(info)", None),
        (
            "chips/s vs odc.stac.load (2 workers)",
            odc / d2,
            f">= {TARGET_ODC}x",
            odc / d2 >= TARGET_ODC,
        ),
        ("chips/s vs odc.stac.load (1 worker)", odc / d1, "(info)", None),
        (
            "bytes per chip / full-res bytes",
            b2 / braw,
            f"<= {TARGET_BYTES}",
            b2 / braw <= TARGET_BYTES,
        ),
        ("speed-up 1 -> 2 workers", d1 / d2, "(report)", None),
        ("cpu per chip: raw loop / describe 2w", craw / c2, "(report)", None),
    ]
    print(f"\n{'measure':<44}{'value':>8}  {'target':<10}result")
    for name, value, target, ok in rows:
        print(f"{name:<44}{value:>8.3f}  {target:<10}{'' if ok is None else _mark(ok)}")


if __name__ == "__main__":
    sys.exit(main())
