"""Scale benchmark: `curate` end to end over a catalog of many STAC items on real COGs.

The catalog is one region of the tiny demo world copied over a grid of places in its UTM
zone: every copy's items are the region's items moved by (dx, dy) metres, and their asset
hrefs point at the region's real COGs served moved by the loopback range server
(``RangeServer.shifted_url``: the GeoTIFF tiepoint is rewritten on the fly), with an injected
per-request latency like object storage. So N items cost N JSON files, not N x the pixels,
and every read is a real HTTP range read of a real COG.

For each size, and for each cluster kind (``local``: a LocalCluster; ``processes``: a
``dask scheduler`` and ``dask worker`` processes started here as on a real cluster):

1. ``search`` through the real local STAC API, then the plan (``curate --plan``'s
   estimate, from a measured sample);
2. the rest of ``curate``; per stage: wall seconds, CPU seconds of every process (client,
   scheduler, workers) and peak RSS per worker process, sampled every 0.25 s;
3. the plan's estimate against the measured wall, and whether the groups and the selection
   are the same across cluster kinds.

Run under the shared lock (other benchmarks use the same machine):

    flock /tmp/terracorpus-bench.lock .venv/bin/python benchmarks/bench_scale.py \\
        --items 60,240 --processes-max-items 60 --latency 0.01 --out /tmp/bench-scale

Prints a Markdown table and writes ``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import shapely
from shapely.geometry import mapping, shape

from terracorpus.catalogs.server import StacServer
from terracorpus.catalogs.world.testing import tiny_world
from terracorpus.curation import geometry as geo
from terracorpus.pipelines.config import RunConfig, parse_config
from terracorpus.pipelines.curate import curate
from terracorpus.pipelines.plan import make_plan
from terracorpus.pipelines.rundir import RunDir
from terracorpus.pipelines.testing.httpserve import RangeServer

REGION = "iowa-prairie"
CHIP_M = 480.0  # about 7 groups and 35 images per copy of the region (--chip-m)


# -- the catalog ------------------------------------------------------------------------------
def _region(world_out: Path) -> dict[str, Any]:
    regions = json.loads((world_out / "world.json").read_text())["regions"]
    return next(r for r in regions if r["name"] == REGION)


def _region_items(world_out: Path, region: dict[str, Any]) -> list[dict[str, Any]]:
    box = shapely.box(*region["bbox"])
    items = [json.loads(p.read_text()) for p in sorted(world_out.glob("items/*/*.json"))]
    return [i for i in items if shape(i["geometry"]).intersects(box)]


def _moved(
    item: dict[str, Any], dx: float, dy: float, tag: str, crs: str, cogs: Path, server: RangeServer
) -> dict[str, Any]:
    out = json.loads(json.dumps(item))
    out["id"] = f"{item['id']}-{tag}"
    fp = geo.lonlat_to_crs([shape(item["geometry"])], crs)[0]
    fp = shapely.affinity.translate(fp, dx, dy)
    lonlat = geo.crs_to_lonlat([fp], crs, densify_m=100.0)[0]
    out["geometry"] = mapping(lonlat)
    out["bbox"] = list(lonlat.bounds)
    props = out["properties"]
    for key in ("proj:transform",):
        if key in props:
            t = props[key]
            props[key] = [t[0], t[1], t[2] + dx, t[3], t[4], t[5] + dy, *t[6:]]
    if "proj:bbox" in props:
        b = props["proj:bbox"]
        props["proj:bbox"] = [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy]
    for asset in out["assets"].values():
        href = Path(asset["href"])
        if href.is_relative_to(cogs) and href.suffix == ".tif":
            asset["href"] = server.shifted_url(href.relative_to(cogs), dx, dy)
        for key in ("proj:transform",):
            if key in asset:
                t = asset[key]
                asset[key] = [t[0], t[1], t[2] + dx, t[3], t[4], t[5] + dy, *t[6:]]
    return out


def write_catalog(
    world_out: Path, server: RangeServer, n_items: int, out: Path
) -> tuple[Path, list[float], int]:
    """About ``n_items`` moved items under ``out``; returns (catalog, lon/lat bbox, copies)."""
    region = _region(world_out)
    crs = f"EPSG:{region['epsg']}"
    items = _region_items(world_out, region)
    extent = shapely.unary_union(
        geo.lonlat_to_crs([shape(i["geometry"]) for i in items], crs)
    ).bounds
    step = 1.25 * max(extent[2] - extent[0], extent[3] - extent[1])
    copies = max(1, math.ceil(n_items / len(items)))
    side = math.ceil(math.sqrt(copies))
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(world_out / "collections", out / "collections")
    cogs = world_out / "cogs"
    bounds: list[shapely.Geometry] = []
    n = 0
    for k in range(copies):
        i, j = divmod(k, side)
        dx, dy = j * step, -i * step
        for item in items:
            moved = _moved(item, dx, dy, f"c{k:06d}", crs, cogs, server)
            target = out / "items" / moved["collection"] / f"{moved['id']}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(moved))
            n += 1
        if k in (0, copies - 1) or j == side - 1:
            bounds.append(shapely.box(*moved["bbox"]))
    whole = shapely.unary_union([shapely.box(*b.bounds) for b in bounds]).bounds
    print(f"  catalog: {n} items ({copies} copies of {len(items)}) in {out}", file=sys.stderr)
    return out, [whole[0] - 0.01, whole[1] - 0.01, whole[2] + 0.01, whole[3] + 0.01], copies


# -- measuring ----------------------------------------------------------------------------------
@dataclass
class _Tree:
    """Every process of the run (this one, its children, and given extra roots), sampled."""

    roots: list[int]
    peak: dict[int, float] = field(default_factory=dict)  # pid -> peak RSS MiB
    cpu: dict[int, float] = field(default_factory=dict)  # pid -> last seen CPU s
    names: dict[int, str] = field(default_factory=dict)

    def sample(self) -> None:
        for root in self.roots:
            try:
                procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for p in procs:
                try:
                    with p.oneshot():
                        rss = p.memory_info().rss / 2**20
                        t = p.cpu_times()
                        cmd = " ".join(p.cmdline()[:4])
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                self.peak[p.pid] = max(self.peak.get(p.pid, 0.0), rss)
                self.cpu[p.pid] = t.user + t.system + t.children_user + t.children_system
                self.names.setdefault(p.pid, cmd)

    def peak_of(self, pid: int) -> float:
        return self.peak.get(pid, float("nan"))

    def total_cpu(self) -> float:
        return sum(self.cpu.values())

    def worker_peaks(self) -> list[float]:
        return [
            mib
            for pid, mib in self.peak.items()
            if "worker" in self.names.get(pid, "") or "spawn_main" in self.names.get(pid, "")
        ]


@contextmanager
def _sampling(tree: _Tree) -> Iterator[None]:
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.25):
            tree.sample()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        tree.sample()


@dataclass
class _Stages:
    tree: _Tree
    start: dict[str, tuple[float, float, dict[int, float]]] = field(default_factory=dict)
    rows: dict[str, dict[str, float]] = field(default_factory=dict)

    def echo(self, line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)
        if not line.startswith("[") or "]" not in line:
            return
        name = line[1 : line.index("]")]
        self.tree.sample()
        if line.endswith("running"):
            self.start[name] = (time.perf_counter(), self.tree.total_cpu(), dict(self.tree.peak))
        elif " done in " in line and name in self.start:
            t0, c0, _ = self.start[name]
            self.tree.peak = {}  # peaks per stage from here on
            self.rows[name] = {
                "wall_s": time.perf_counter() - t0,
                "cpu_s": self.tree.total_cpu() - c0,
            }


# -- one run ----------------------------------------------------------------------------------
def _config(
    api: str,
    server: RangeServer,
    bbox: list[float],
    run_dir: Path,
    dask: dict[str, Any],
    bbox_dir: Path,
    chip_m: float,
    batch_size: int = 64,
) -> RunConfig:
    return parse_config(
        {
            "run_dir": str(run_dir),
            "search": {
                "apis": [
                    {
                        "url": api,
                        "name": "bench-scale",
                        "collections": sorted(p.name for p in (Path(bbox_dir) / "items").iterdir()),
                        "asset_hosts": [server.base_url],
                    }
                ],
                "tiles": [bbox],
                "start": "2000-01-01",  # every year of the world
                "end": "2030-12-31",
                "page_size": 1000,
            },
            "group": {"chip_size_m": chip_m},
            "describe": {"batch_size": batch_size},
            "dask": dask,
        },
        source="bench_scale",
    )


@contextmanager
def _processes_cluster(workers: int) -> Iterator[tuple[str, list[int]]]:
    """A ``dask scheduler`` and ``workers`` ``dask worker`` processes on loopback."""
    dask = str(Path(sys.executable).with_name("dask"))
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    time.sleep(3)
    for _ in range(workers):
        procs.append(
            subprocess.Popen(
                [
                    dask,
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--memory-limit",
                    "4GiB",
                    "--no-dashboard",
                    "--no-nanny",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    time.sleep(5)
    try:
        yield address, [p.pid for p in procs]
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a worker stuck closing on a loaded machine
                p.kill()
                p.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_once(
    api: str,
    server: RangeServer,
    bbox: list[float],
    catalog: Path,
    run_dir: Path,
    kind: str,
    workers: int,
    chip_m: float,
    batch_size: int = 64,
) -> dict[str, Any]:
    """search, plan, then the rest of curate; per stage wall, CPU and worker peaks."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    with _cluster(kind, workers) as (dask, roots):
        tree = _Tree([os.getpid(), *roots])
        stages = _Stages(tree)
        cfg = _config(api, server, bbox, run_dir, dask, catalog, chip_m, batch_size)
        with _sampling(tree):
            curate(cfg, until="search", echo=stages.echo)
            t0 = time.perf_counter()
            plan = make_plan(cfg, RunDir(run_dir, cfg))
            plan_s = time.perf_counter() - t0
            print(plan.table(), file=sys.stderr)
            tree.peak = {}
            t0 = time.perf_counter()
            curate(cfg, echo=_peaks(stages))
            run_s = time.perf_counter() - t0
    groups = pd.read_parquet(run_dir / "groups.parquet", columns=["group_id", "n_members"])
    selection = pd.read_parquet(run_dir / "selection.parquet", columns=["chip_id", "kept", "role"])
    return {
        "kind": kind,
        "workers": workers,
        "stages": stages.rows,
        "plan": {s.stage: s.wall_s for s in plan.stages},
        "plan_total_s": plan.wall_s,
        "plan_s": plan_s,
        "measured_s": run_s,
        "groups": len(groups),
        "images": int(groups["n_members"].sum()),
        "chips": len(selection),
        "kept_groups": int((selection["kept"] & (selection["role"] == "anchor")).sum()),
        "kept_chips": int(selection["kept"].sum()),
        "group_ids": sorted(groups["group_id"]),
        "kept": sorted(selection.loc[selection["kept"], "chip_id"]) if "kept" in selection else [],
    }


def _peaks(stages: _Stages) -> Any:
    def echo(line: str) -> None:
        name = line[1 : line.index("]")] if line.startswith("[") and "]" in line else ""
        if name and " done in " in line:
            stages.tree.sample()
            peaks = stages.tree.worker_peaks()
            client = stages.tree.peak_of(os.getpid())
            stages.echo(line)
            stages.rows[name]["worker_peak_mib"] = max(peaks) if peaks else float("nan")
            stages.rows[name]["client_peak_mib"] = client
            return
        stages.echo(line)

    return echo


@contextmanager
def _cluster(kind: str, workers: int) -> Iterator[tuple[dict[str, Any], list[int]]]:
    if kind == "local":
        yield {"workers": workers}, []
        return
    with _processes_cluster(workers) as (address, pids):
        yield {"scheduler": address, "workers": workers}, pids


# -- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", default="60,240", help="catalog sizes (items), comma-separated")
    ap.add_argument("--kinds", default="local,processes")
    ap.add_argument(
        "--processes-max-items",
        type=int,
        default=10**9,
        help="run the separate-processes cluster only up to this size",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chip-m", type=float, default=CHIP_M, help="chip size, metres")
    ap.add_argument("--batch-size", type=int, default=64, help="describe.batch_size")
    ap.add_argument("--latency", type=float, default=0.01, help="seconds per range request")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-scale"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    world = tiny_world(args.out / "worlds")
    results = []
    with RangeServer(Path(world.out) / "cogs") as server:
        server.configure(latency_s=args.latency)
        for n in [int(x) for x in args.items.split(",")]:
            catalog, bbox, _copies = write_catalog(
                Path(world.out), server, n, args.out / f"catalog-{n}"
            )
            with StacServer([catalog]) as api:
                kinds = [
                    k
                    for k in args.kinds.split(",")
                    if k != "processes" or n <= args.processes_max_items
                ]
                for kind in kinds:
                    print(f"== {n} items, {kind} cluster", file=sys.stderr)
                    r = run_once(
                        api.url,
                        server,
                        bbox,
                        catalog,
                        args.out / f"run-{n}-{kind}",
                        kind,
                        args.workers,
                        args.chip_m,
                        args.batch_size,
                    )
                    r["items"] = n
                    results.append(r)
    _report(results, args)


def _report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    rows = [
        f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores)\n",
        "| items | cluster | chips | groups kept | stage | wall s | CPU s | worker peak MiB "
        "| client peak MiB | plan s |",
        "|---:|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for name, s in r["stages"].items():
            rows.append(
                f"| {r['items']} | {r['kind']} | {r['chips']} | {r['kept_groups']} | {name} | "
                f"{s['wall_s']:.1f} | {s['cpu_s']:.1f} | {s.get('worker_peak_mib', math.nan):.0f} "
                f"| {s.get('client_peak_mib', math.nan):.0f} "
                f"| {r['plan'].get(name, math.nan):.1f} |"
            )
        rows.append(
            f"| {r['items']} | {r['kind']} | | | **group..materialize** | {r['measured_s']:.1f} | "
            f"| | | {r['plan_total_s']:.1f} |"
        )
    rows.append("")
    rows += _ratios(results)
    text = "\n".join(rows)
    print(text)
    slim = [{k: v for k, v in r.items() if k not in ("group_ids", "kept")} for r in results]
    (args.out / "results.json").write_text(json.dumps(slim, indent=2))
    (args.out / "results.md").write_text(text + "\n")


def _peak(r: dict[str, Any]) -> float:
    peaks = [s.get("worker_peak_mib", math.nan) for s in r["stages"].values()]
    return max((p for p in peaks if not math.isnan(p)), default=math.nan)


def _ratios(results: list[dict[str, Any]]) -> list[str]:
    """Identity across cluster kinds per size; plan vs measured per run; the largest size
    against the smallest per cluster kind (chips, time and per-worker peak ratios)."""
    out = []
    by_items: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        by_items.setdefault(r["items"], []).append(r)
    for n, rs in by_items.items():
        same = all(x["group_ids"] == rs[0]["group_ids"] and x["kept"] == rs[0]["kept"] for x in rs)
        kinds = "/".join(x["kind"] for x in rs)
        out.append(f"- {n} items ({kinds}): groups and kept chips identical: {same}")
    for r in results:
        out.append(
            f"- {r['items']} items, {r['kind']}: plan {r['plan_total_s']:.1f} s vs measured "
            f"{r['measured_s']:.1f} s (measured / plan = {r['measured_s'] / r['plan_total_s']:.2f})"
        )
    for kind in dict.fromkeys(r["kind"] for r in results):
        rs = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["chips"])
        if len(rs) < 2:
            continue
        a, b = rs[0], rs[-1]
        out.append(
            f"- {kind}: {b['chips']} / {a['chips']} chips = {b['chips'] / a['chips']:.1f}x; "
            f"time {b['measured_s']:.1f} / {a['measured_s']:.1f} s = "
            f"{b['measured_s'] / a['measured_s']:.2f}x; per-worker peak {_peak(b):.0f} / "
            f"{_peak(a):.0f} MiB = {_peak(b) / _peak(a):.2f}x"
        )
    return out


if __name__ == "__main__":
    main()
