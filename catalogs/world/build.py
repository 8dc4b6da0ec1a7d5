"""Building a world on disk: truth, COGs, STAC Items and Collections, ``world.json``.

Layout under ``OUT``::

    world.json                               summary (preset, seed, regions, sensors, pairs)
    catalog.json                             static STAC root catalog
    collections/<collection>.json            STAC Collections
    items/<collection>/<item_id>.json        STAC Items (asset hrefs: absolute COG paths)
    cogs/<collection>/<item_id>/<asset>.tif  Cloud-Optimized GeoTIFFs
    truth/<region>/<year>.tif                land-cover class per base pixel in that year (uint8 COG)
    truth/classes.json                       class code -> name
    truth/clouds/<collection>/<item_id>.tif  true cloud/shadow mask on the scene's QA grid
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from rasterio.transform import Affine

from terracorpus.catalogs.errors import WorldError
from terracorpus.catalogs.sensors import Sensor, builtin_registry
from terracorpus.catalogs.world import atmosphere as atm
from terracorpus.catalogs.world import stac
from terracorpus.catalogs.world.changes import ClassMaps, describe_events
from terracorpus.catalogs.world.cog import write_cog
from terracorpus.catalogs.world.landcover import CLASSES
from terracorpus.catalogs.world.presets import get_preset
from terracorpus.catalogs.world.regions import COLLECTIONS, LANDSAT, Region
from terracorpus.catalogs.world.schedule import SENSOR_OF, SceneSpec, plan_world
from terracorpus.catalogs.world.sensors_render import RegionGround, SceneRenderer
from terracorpus.catalogs.world.truth import WORLD_FILE, cloud_truth_path, read_world, truth_path

log = logging.getLogger(__name__)
FORMAT = "terracorpus-demo-world"
FORMAT_VERSION = 2  # 2: several years, truth per region per year, change events
_MARKER = ".world-building.json"
_OWNED = ("catalog.json", "collections", "items", "cogs", "truth", _MARKER)


@dataclass(frozen=True)
class WorldSummary:
    """What :func:`create_world` built (or found already built) in ``out``.

    ``bbox`` is (west, south, east, north) in degrees over all regions; ``start``/``end`` the
    dates every acquisition lies within; ``n_items`` counts items per collection.
    """

    out: Path
    preset: str
    seed: int
    n_items: dict[str, int]
    regions: tuple[str, ...]
    bbox: tuple[float, float, float, float]
    start: date
    end: date
    collections: tuple[str, ...]
    bytes_written: int

    @property
    def time_range(self) -> tuple[date, date]:
        return (self.start, self.end)

    @property
    def total_items(self) -> int:
        return sum(self.n_items.values())


def summary_from_json(out: Path, doc: dict[str, Any]) -> WorldSummary:
    """A :class:`WorldSummary` of a ``world.json`` document."""
    return WorldSummary(
        out=out,
        preset=str(doc["preset"]),
        seed=int(doc["seed"]),
        n_items={str(k): int(v) for k, v in doc["n_items"].items()},
        regions=tuple(r["name"] for r in doc["regions"]),
        bbox=(doc["bbox"][0], doc["bbox"][1], doc["bbox"][2], doc["bbox"][3]),
        start=date.fromisoformat(doc["start"]),
        end=date.fromisoformat(doc["end"]),
        collections=tuple(doc["collections"]),
        bytes_written=int(doc["bytes_written"]),
    )


def _write_json(path: Path, doc: Any) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return len(text.encode())


def _identity(preset: str, seed: int, sentinel1: bool) -> dict[str, Any]:
    return {"preset": preset, "seed": seed, "sentinel1": sentinel1}


def _describe(ident: dict[str, Any]) -> str:
    s1 = " with Sentinel-1" if ident.get("sentinel1") else ""
    return f"preset {ident.get('preset')!r} seed {ident.get('seed')}{s1}"


def _read_marker(marker: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _prepare_out(out: Path, ident: dict[str, Any]) -> WorldSummary | None:
    """Check ``out``: the same world already built -> its summary; usable -> None."""
    if out.exists() and not out.is_dir():
        raise WorldError(f"output path {out} exists and is not a directory; choose another --out")
    if (out / WORLD_FILE).exists():
        doc = read_world(out)
        found = _identity(doc.get("preset", "?"), doc.get("seed", -1), doc.get("sentinel1", False))
        if found == ident:
            if doc.get("format_version") != FORMAT_VERSION:
                log.warning(
                    "%s holds a world of %s built by an older terracorpus (format %s; this one "
                    "writes %s: several years and change events); it is used as it is: "
                    "delete it to rebuild",
                    out,
                    _describe(found),
                    doc.get("format_version"),
                    FORMAT_VERSION,
                )
            return summary_from_json(out, doc)
        raise WorldError(
            f"{out} already holds a world of {_describe(found)}; "
            f"choose another --out or delete it to build {_describe(ident)}"
        )
    marker = out / _MARKER
    if marker.exists() and _read_marker(marker) == ident:
        log.info("removing the unfinished build of the same world in %s", out)
        for name in _OWNED:
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    if out.exists() and any(out.iterdir()):
        raise WorldError(
            f"output directory {out} is not empty and holds no demo world; "
            "choose an empty or new --out"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(marker, ident)
    except OSError as e:
        raise WorldError(f"cannot create the world in {out}: {e.strerror or e}") from None
    return None


@dataclass
class _Progress:
    items: list[dict[str, Any]]
    bytes: int = 0


def _write_truth(out: Path, region: Region, maps: ClassMaps) -> int:
    """One truth COG per year: the land cover every scene of that year is rendered from."""
    t = Affine(region.res, 0.0, region.x0, 0.0, -region.res, region.y1)
    n = 0
    for year, classes in maps.items():
        path = out / truth_path(region.name, year)
        n += write_cog(path, classes[None], t, region.spec.epsg, 0, True)
    return n


def _write_scene(
    out: Path, spec: SceneSpec, sensor: Sensor, renderer: SceneRenderer, acc: _Progress
) -> None:
    rendered = renderer.render(spec, sensor)
    hrefs: dict[str, str] = {}
    for key, r in rendered.assets.items():
        path = stac.asset_path(out, spec.collection, spec.item_id, key)
        acc.bytes += write_cog(path, r.data, r.transform, r.epsg, r.nodata, categorical=not r.bands)
        hrefs[key] = str(path)
    if rendered.cloud_truth is not None:
        ct = rendered.cloud_truth
        path = cloud_truth_path(out, spec.collection, spec.item_id)
        acc.bytes += write_cog(path, ct.data, ct.transform, ct.epsg, None, categorical=True)
    item_path = out / "items" / spec.collection / f"{spec.item_id}.json"
    item = stac.item_dict(spec, sensor, rendered, hrefs, str(item_path))
    acc.bytes += _write_json(item_path, item)
    acc.items.append(item)


def _pairs(scenes: list[SceneSpec]) -> tuple[list[list[str]], list[list[str]]]:
    """Near-duplicate (original, repeat) pairs and coincident clear S2/Landsat pairs."""
    dups = [[s.duplicate_of, s.item_id] for s in scenes if s.duplicate_of]
    originals = {d[0] for d in dups}
    coincident = []
    for s2 in scenes:
        if s2.item_id not in originals:
            continue
        for ls in scenes:
            same_day = ls.acquired.date() == s2.acquired.date()
            if ls.collection == LANDSAT and ls.region == s2.region and same_day:
                coincident.append([s2.item_id, ls.item_id])
    return dups, coincident


def _world_doc(
    ident: dict[str, Any],
    regions: list[Region],
    scenes: list[SceneSpec],
    acc: _Progress,
    events: list[dict[str, Any]],
) -> dict[str, Any]:
    p = get_preset(ident["preset"])
    counts = Counter(i["collection"] for i in acc.items)
    collections = [c for c in COLLECTIONS if counts[c]]
    boxes = [r.lonlat_bbox() for r in regions]
    dups, coincident = _pairs(scenes)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **ident,
        "start": p.start.isoformat(),
        "end": p.end.isoformat(),
        "years": list(p.years),
        "bbox": [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ],
        "regions": [
            {
                "name": r.name,
                "title": r.spec.title,
                "epsg": r.spec.epsg,
                "bbox": list(b),
                "bounds": list(r.bounds),
                "base_res": r.res,
                "truth": {str(y): truth_path(r.name, y) for y in p.years},
                "collections": [
                    c
                    for c in r.spec.collections
                    if any(s.region == r.name and s.collection == c for s in scenes)
                ],
            }
            for r, b in zip(regions, boxes, strict=True)
        ],
        "collections": collections,
        "sensors": {c: SENSOR_OF[c] for c in collections},
        "n_items": {c: counts[c] for c in collections},
        "events": events,
        "near_duplicates": dups,
        "coincident_clear": coincident,
        "classes": {str(k): v for k, v in CLASSES.items()},
        "cloud_mask_codes": {str(k): v for k, v in atm.MASK_NAMES.items()},
        "bytes_written": acc.bytes,
    }


def _finish(
    out: Path,
    ident: dict[str, Any],
    regions: list[Region],
    scenes: list[SceneSpec],
    acc: _Progress,
    events: list[dict[str, Any]],
) -> dict[str, Any]:
    registry = builtin_registry()
    by_coll: dict[str, list[dict[str, Any]]] = {}
    for item in acc.items:
        by_coll.setdefault(item["collection"], []).append(item)
    for coll, items in by_coll.items():
        sensor = registry.get(SENSOR_OF[coll])
        acc.bytes += _write_json(
            out / "collections" / f"{coll}.json", stac.collection_dict(coll, sensor, items)
        )
    desc = f"terracorpus demo world, {_describe(ident)}: synthetic multi-sensor scenes"
    acc.bytes += _write_json(
        out / "catalog.json", stac.catalog_dict([c for c in COLLECTIONS if c in by_coll], desc)
    )
    acc.bytes += _write_json(
        out / "truth" / "classes.json", {str(k): v for k, v in CLASSES.items()}
    )
    doc = _world_doc(ident, regions, scenes, acc, events)
    _write_json(out / WORLD_FILE, doc)
    (out / _MARKER).unlink(missing_ok=True)
    return doc


def create_world(
    out: str | Path, preset: str = "small", seed: int = 0, *, sentinel1: bool = False
) -> WorldSummary:
    """Build the demo world of ``preset`` and ``seed`` into ``out``.

    ``sentinel1`` adds Sentinel-1 RTC (VV, VH backscatter) scenes over every region.

    The same preset and seed give byte-identical item JSON (up to the ``out`` path in hrefs)
    and identical pixels. Building into a directory that already holds the same world is a
    no-op returning its summary; an unfinished build of the same world is started over.

    Raises:
        WorldError: unknown preset; ``out`` is a file, not empty (and no such world), holds
            another world, or cannot be written.
    """
    p = get_preset(preset)
    try:
        out_path = Path(out).expanduser().resolve()
    except (OSError, RuntimeError) as e:
        raise WorldError(f"bad output path {out!r}: {e}") from None
    ident = _identity(p.name, int(seed), bool(sentinel1))
    existing = _prepare_out(out_path, ident)
    if existing is not None:
        return existing
    t0 = time.perf_counter()
    regions, scenes = plan_world(p, int(seed), bool(sentinel1))
    acc = _Progress(items=[])
    registry = builtin_registry()
    events: list[dict[str, Any]] = []
    try:
        for region in regions:
            t = time.perf_counter()
            ground = RegionGround.build(region, int(seed), p.years)
            maps = {y: ground.cover.classes_in(y) for y in p.years}
            acc.bytes += _write_truth(out_path, region, maps)
            events += describe_events(region, ground.cover, p.years, maps)
            del maps
            renderer = SceneRenderer(ground, int(seed))
            mine = [s for s in scenes if s.region == region.name]
            for spec in mine:
                _write_scene(out_path, spec, registry.get(spec.sensor), renderer, acc)
            log.info(
                "world: %s, %d scenes in %.1fs", region.name, len(mine), time.perf_counter() - t
            )
        doc = _finish(out_path, ident, regions, scenes, acc, events)
    except OSError as e:
        raise WorldError(f"cannot write the world in {out_path}: {e.strerror or e}") from None
    log.info(
        "world: %d items, %.1f MB in %.1fs",
        len(acc.items),
        acc.bytes / 1e6,
        time.perf_counter() - t0,
    )
    return summary_from_json(out_path, doc)
