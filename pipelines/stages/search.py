"""The search stage: STAC APIs -> ``scenes.parquet`` (GeoParquet, one row per scene).

Reads the area (bbox, GeoJSON file or tiles) and the sensors files named in the config,
calls :func:`terracorpus.catalogs.search.search_scenes`, records unusable items in the run's
failure table and writes the scenes atomically. An empty result is an error, never an empty
table that looks complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from terracorpus.catalogs.frames import scenes_to_frame
from terracorpus.catalogs.redact import strip_credentials
from terracorpus.catalogs.search import ApiQuery, Area, search_scenes
from terracorpus.catalogs.sensors import load_registry
from terracorpus.pipelines.config import RunConfig, SearchConfig
from terracorpus.pipelines.errors import ConfigError, StageError
from terracorpus.pipelines.rundir import Failure, RunDir

STAGE = "search"
OUTPUT = "scenes.parquet"


def run_search(config: RunConfig, run: RunDir) -> str:
    """Search the configured APIs and write ``scenes.parquet``; returns a one-line summary.

    Raises:
        ConfigError: no APIs, or not exactly one of bbox / geojson / tiles.
        StageError: nothing was found (the message says what was searched and dropped).
        CatalogError: an API kept failing; in strict mode, an unusable item.
    """
    s = config.search
    if not s.apis:
        raise ConfigError("search.apis is empty: name at least one STAC API url and collections")
    area = search_area(s)
    registry = load_registry(*s.sensor_files)
    run.clear_failures(STAGE)
    result = search_scenes(
        [ApiQuery(a.url, tuple(a.collections)) for a in s.apis],
        area,
        s.start,
        s.end,
        s.max_cloud_cover,
        registry,
        tile_degrees=s.tile_degrees,
        page_size=s.page_size,
        timeout_s=s.timeout_s,
        retries=s.retries,
        backoff_s=s.backoff_s,
        strict=config.strict,
        max_workers=s.parallel,
    )
    run.record_failures(
        [
            Failure(stage=f.stage, kind=f.kind, key=f.key, reason=f.reason, detail=f.detail)
            for f in [*result.failures, *result.same_acquisition]
        ]
    )
    if not result.scenes:
        run.path(OUTPUT).unlink(missing_ok=True)  # no stale table may pass for this result
        raise StageError(result.empty_message())
    run.write_table(
        OUTPUT,
        scenes_to_frame(result.scenes),
        stage=STAGE,
        sources=[
            {"api": strip_credentials(a.url), "collections": list(a.collections)} for a in s.apis
        ],
        query=result.query,
    )
    by_sensor: dict[str, int] = {}
    for scene in result.scenes:
        by_sensor[scene.sensor] = by_sensor.get(scene.sensor, 0) + 1
    return (
        f"{len(result.scenes)} scenes ({', '.join(f'{k} {v}' for k, v in sorted(by_sensor.items()))})"
        f" from {result.matched} items: {result.duplicates} duplicates, "
        f"{len(result.same_acquisition)} the same acquisition as another (kept once), "
        f"{result.over_cloud_limit} over the cloud limit, {len(result.failures)} unusable"
        + (f", {result.repaired} footprint repaired" if result.repaired else "")
    )


def search_area(s: SearchConfig) -> Area:
    """The configured area: exactly one of ``bbox``, ``geojson`` or ``tiles``."""
    given = [k for k in ("bbox", "geojson", "tiles") if getattr(s, k) is not None]
    if len(given) != 1:
        raise ConfigError(
            "search needs exactly one area: search.bbox, search.geojson or search.tiles"
            + (f" (given: {', '.join(given)})" if given else "")
        )
    if s.bbox is not None:
        return s.bbox
    if s.tiles is not None:
        return list(s.tiles)
    assert s.geojson is not None
    return read_geojson_area(Path(s.geojson))


def read_geojson_area(path: Path) -> BaseGeometry:
    """The union of a GeoJSON file's geometries (a Feature, FeatureCollection or geometry)."""
    try:
        doc: Any = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"search.geojson: {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"search.geojson: cannot read {path} as JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"search.geojson: {path} is not a GeoJSON object")
    if doc.get("type") == "FeatureCollection":
        geometries = [f.get("geometry") for f in doc.get("features") or []]
    elif doc.get("type") == "Feature":
        geometries = [doc.get("geometry")]
    else:
        geometries = [doc]
    try:
        shapes = [shape(g) for g in geometries if g]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"search.geojson: {path} holds an invalid geometry: {e}") from None
    if not shapes:
        raise ConfigError(f"search.geojson: {path} holds no geometry")
    area: BaseGeometry = shapely.union_all(shapes)
    return area
