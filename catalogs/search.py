"""Search STAC APIs for scenes: tiled, parallel, retried, de-duplicated, parsed once.

:func:`search_scenes` queries one or many STAC APIs through pystac-client. A large area is
split into tiles of ``tile_degrees`` searched in parallel threads; every page request is
retried with exponential backoff on connection errors, timeouts and 5xx answers (urllib3's
``Retry`` on the pystac-client session), and a whole tile is retried on a malformed (non-JSON)
answer. Results are de-duplicated by ``(collection, id)`` across tiles and APIs, parsed
into :class:`SceneRecord` by the one parser (which refuses bad items: a failure row each),
and kept once per acquisition: the same acquisition published in two collections or by two
APIs is kept from the earlier API of the list, then the earlier collection of its list
(:mod:`terracorpus.catalogs.acquisitions`); the others are counted and recorded.

Only what every STAC API supports is sent to the server (collections, bbox, datetime, limit);
the cloud limit and the exact area are applied here, client-side, so the same code gives the
same answer against rustac's in-memory backend (no ``query``/``filter``) and real catalogs.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dtime
from typing import Any, TypeAlias, TypeVar, cast

import shapely
from pystac_client import Client
from pystac_client.errors import ClientTypeError
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from pystac_client.warnings import DoesNotConformTo
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry
from urllib3.util.retry import Retry

from terracorpus.catalogs.acquisitions import one_per_acquisition
from terracorpus.catalogs.errors import CatalogError, StacApiError
from terracorpus.catalogs.parse import scene_from_item
from terracorpus.catalogs.scene import SceneRecord
from terracorpus.catalogs.sensors import SensorRegistry

log = logging.getLogger(__name__)

BBox = tuple[float, float, float, float]
Area: TypeAlias = BBox | BaseGeometry | Sequence[BBox]
"""A search area in lon/lat: one bbox (west, south, east, north), a shapely geometry, or a
list of bboxes (tiles)."""

STAGE = "search"
SAME_ACQUISITION = "same_acquisition"
"""The failure reason of an item dropped for another record of the same acquisition."""
_RETRY_STATUS = (429, 500, 502, 503, 504)
T = TypeVar("T")


@dataclass(frozen=True)
class ApiQuery:
    """One STAC API and the collections to search in it."""

    url: str
    collections: tuple[str, ...]


@dataclass(frozen=True)
class Failure:
    """One item that could not be used: ``kind`` "item", ``key`` "collection/id"."""

    kind: str
    key: str
    stage: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class SearchResult:
    """Scenes found (sorted by datetime, collection, id), failures, and what was dropped.

    ``failures`` are unusable items; ``same_acquisition`` the items dropped because another
    record of the same acquisition was kept (their reason is :data:`SAME_ACQUISITION`);
    ``repaired`` counts kept scenes whose footprint the parser repaired.
    """

    scenes: list[SceneRecord]
    failures: list[Failure]
    query: str
    matched: int = 0
    duplicates: int = 0
    over_cloud_limit: int = 0
    outside_area: int = 0
    per_api: Mapping[str, int] = field(default_factory=dict)
    repaired: int = 0
    same_acquisition: list[Failure] = field(default_factory=list)

    def empty_message(self) -> str:
        """Why nothing was found, for the error a caller raises on an empty result."""
        return (
            f"no scenes found for {self.query}: the APIs returned {self.matched} items "
            f"({self.duplicates} duplicates, {len(self.same_acquisition)} the same acquisition "
            f"as another, {self.over_cloud_limit} over the cloud limit, "
            f"{self.outside_area} outside the area, {len(self.failures)} unusable). "
            "Widen the area, the dates or the cloud limit, or check the collection names."
        )


def search_scenes(
    apis: Sequence[ApiQuery],
    area: Area,
    start: date | datetime | None,
    end: date | datetime | None,
    max_cloud_cover: float,
    registry: SensorRegistry,
    *,
    tile_degrees: float = 1.0,
    page_size: int = 100,
    timeout_s: float = 30.0,
    retries: int = 4,
    backoff_s: float = 0.5,
    strict: bool = False,
    max_workers: int = 8,
) -> SearchResult:
    """Search every API for scenes over ``area`` between ``start`` and ``end`` (inclusive).

    Args:
        apis: the STAC APIs and their collections.
        area: lon/lat bbox, shapely geometry, or list of bboxes; split into tiles.
        start, end: the time range; a ``date`` end includes that whole day; None: open.
        max_cloud_cover: scenes with ``eo:cloud_cover`` above this (percent) are dropped;
            scenes without a cloud cover are kept.
        registry: the sensors; a requested collection must have one.
        tile_degrees: the largest tile edge, in degrees.
        page_size: items per page requested from the APIs.
        timeout_s: connect and read timeout per request.
        retries: retries per request (and per tile on malformed answers), with backoff
            ``backoff_s * 2**n`` seconds.
        strict: raise on the first unusable item instead of recording a failure.
        max_workers: parallel tile searches.

    Raises:
        StacApiError: an API stayed unreachable or kept erroring after the retries.
        CatalogError: a requested collection has no sensor; in strict mode, an unusable item.
    """
    _check_collections(apis, registry)
    geometry, tiles = _area_tiles(area, tile_degrees)
    when = _datetime_range(start, end)
    query = _describe(apis, tiles, when, max_cloud_cover)
    tasks = [(api, tile) for api in apis for tile in tiles]
    clients = _ClientCache(timeout_s, retries, backoff_s)
    for api in apis:  # fail once, clearly, on an unreachable API, before fanning out
        _open_checked(clients, api.url, retries)

    def run(task: tuple[ApiQuery, BBox]) -> list[dict[str, Any]]:
        api, tile = task
        return _search_tile(clients, api, tile, when, page_size, retries, backoff_s)

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(tasks)))) as pool:
        pages = list(pool.map(run, tasks))
    return _collect(
        [(api, items) for (api, _), items in zip(tasks, pages, strict=True)],
        geometry,
        max_cloud_cover,
        registry,
        strict,
        query,
    )


# -- area and time ------------------------------------------------------------------------
def tiles_for_area(area: Area, tile_degrees: float) -> list[BBox]:
    """The search tiles of an area: no edge longer than ``tile_degrees``; the antimeridian
    split; tiles of a geometry that miss it dropped."""
    return _area_tiles(area, tile_degrees)[1]


def _area_tiles(area: Area, tile_degrees: float) -> tuple[BaseGeometry, list[BBox]]:
    if tile_degrees <= 0:
        raise CatalogError(f"tile_degrees must be positive, not {tile_degrees}")
    if isinstance(area, BaseGeometry):
        if area.is_empty:
            raise CatalogError("the search area is an empty geometry")
        tiles = [t for t in _split(_bounds(area), tile_degrees) if _overlaps(box(*t), area)]
        return area, tiles
    if _is_bbox(area):
        boxes = [_check_bbox(cast(BBox, area))]
    else:
        boxes = [_check_bbox(b) for b in cast(Sequence[BBox], area)]
    if not boxes:
        raise CatalogError("the search area is an empty list of tiles")
    tiles = [t for b in boxes for part in _unwrap(b) for t in _split(part, tile_degrees)]
    geometry = shapely.union_all([box(*t) for t in tiles])
    return geometry, list(dict.fromkeys(tiles))


def _overlaps(tile: BaseGeometry, area: BaseGeometry) -> bool:
    """The tile shares more than an edge or a corner with the area."""
    return bool(tile.intersects(area) and not tile.touches(area))


def _is_bbox(area: Any) -> bool:
    return len(area) == 4 and all(isinstance(v, int | float) for v in area)


def _check_bbox(b: Sequence[float]) -> BBox:
    if len(b) != 4:
        raise CatalogError(f"a bbox needs 4 numbers (west, south, east, north), not {list(b)}")
    w, s, e, n = (float(v) for v in b)
    if not (-90 <= s < n <= 90) or not (-180 <= w <= 180 and -180 <= e <= 180) or w == e:
        raise CatalogError(
            f"bbox {[w, s, e, n]} is not (west, south, east, north) in degrees with south < north"
        )
    return (w, s, e, n)


def _bounds(geom: BaseGeometry) -> BBox:
    w, s, e, n = geom.bounds
    return (float(w), float(s), float(e), float(n))


def _unwrap(b: BBox) -> list[BBox]:
    """A bbox crossing the antimeridian (west > east) as two ordinary ones."""
    w, s, e, n = b
    return [b] if w < e else [(w, s, 180.0, n), (-180.0, s, e, n)]


def _split(b: BBox, step: float) -> list[BBox]:
    w, s, e, n = b
    nx, ny = max(1, math.ceil((e - w) / step - 1e-9)), max(1, math.ceil((n - s) / step - 1e-9))
    xs = [w + (e - w) * i / nx for i in range(nx + 1)]
    ys = [s + (n - s) * j / ny for j in range(ny + 1)]
    return [(xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(ny) for i in range(nx)]


def _datetime_range(start: date | datetime | None, end: date | datetime | None) -> str | None:
    if start is None and end is None:
        return None  # some APIs (rustac) refuse "../.."
    lo = ".." if start is None else _iso(_as_datetime(start, dtime.min))
    hi = ".." if end is None else _iso(_as_datetime(end, dtime.max))
    if start is not None and end is not None and lo > hi:
        raise CatalogError(f"the search start {start} is after its end {end}")
    return f"{lo}/{hi}"


def _as_datetime(d: date | datetime, day_time: dtime) -> datetime:
    if isinstance(d, datetime):
        return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)
    return datetime.combine(d, day_time, tzinfo=UTC)


def _iso(d: datetime) -> str:
    return d.isoformat(timespec="seconds").replace("+00:00", "Z")


def _describe(apis: Sequence[ApiQuery], tiles: list[BBox], when: str | None, cloud: float) -> str:
    xs = [t[0] for t in tiles] + [t[2] for t in tiles]
    ys = [t[1] for t in tiles] + [t[3] for t in tiles]
    where = f"bbox [{min(xs):.4f}, {min(ys):.4f}, {max(xs):.4f}, {max(ys):.4f}]"
    what = "; ".join(f"{a.url} collections {list(a.collections)}" for a in apis)
    return (
        f"{what}, {where} ({len(tiles)} tiles), datetime {when or 'any'}, cloud cover <= {cloud:g}%"
    )


def unregistered_collections(
    apis: Sequence[tuple[str, Sequence[str]]], registry: SensorRegistry
) -> list[tuple[str, str]]:
    """(API url, collection) of every requested collection no sensor of ``registry`` reads."""
    known = {c for s in registry for c in s.collections}
    return [(url, c) for url, collections in apis for c in collections if c not in known]


def _check_collections(apis: Sequence[ApiQuery], registry: SensorRegistry) -> None:
    if not apis:
        raise CatalogError("no STAC APIs to search; add search.apis to the run config")
    for api in apis:
        if not api.collections:
            raise CatalogError(f"no collections given for STAC API {api.url}")
    missing = unregistered_collections([(a.url, a.collections) for a in apis], registry)
    if missing:
        each = [
            f"no sensor is registered for collection {c!r} (STAC API {url})" for url, c in missing
        ]
        raise CatalogError(
            "; ".join(each) + "; add them in a sensors YAML/TOML file (docs/sensors.md)"
        )


# -- talking to the APIs ------------------------------------------------------------------
class _ClientCache:
    """One pystac-client Client per (thread, API): requests sessions are not thread-safe."""

    def __init__(self, timeout_s: float, retries: int, backoff_s: float) -> None:
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._local = threading.local()

    def get(self, url: str) -> Client:
        cache: dict[str, Client] = self._local.__dict__.setdefault("clients", {})
        if url not in cache:
            cache[url] = _retrying(lambda: self._open(url), self.retries, self.backoff_s)
        return cache[url]

    def _open(self, url: str) -> Client:
        retry = Retry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            backoff_factor=self.backoff_s,
            status_forcelist=_RETRY_STATUS,
            allowed_methods=None,  # POST searches are reads: retry them too
            raise_on_status=False,
        )
        io = StacApiIO(timeout=self.timeout_s, max_retries=retry)
        return Client.open(url, stac_io=io, timeout=self.timeout_s)


def _open_checked(clients: _ClientCache, url: str, retries: int) -> None:
    try:
        clients.get(url)
    except _GaveUp as e:
        raise StacApiError(f"STAC API {url} failed after {retries} retries: {e}") from None
    except APIError as e:
        code = getattr(e, "status_code", None)
        raise StacApiError(
            f"STAC API {url} cannot be opened{f' (HTTP {code})' if code else ''}: "
            f"{_short(str(e)) or 'no message'}"
        ) from None
    except ClientTypeError as e:
        raise StacApiError(f"{url} is not a STAC API: {e}") from None


def _search_tile(
    clients: _ClientCache,
    api: ApiQuery,
    tile: BBox,
    when: str | None,
    page_size: int,
    retries: int,
    backoff_s: float,
) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"collections": list(api.collections), "bbox": list(tile)}
    if when is not None:
        params["datetime"] = when

    def fetch() -> list[dict[str, Any]]:
        search = clients.get(api.url).search(**params, limit=page_size)
        return [dict(f) for page in search.pages_as_dicts() for f in page["features"]]

    try:
        return _retrying(fetch, retries, backoff_s)
    except _GaveUp as e:
        raise StacApiError(
            f"STAC API {api.url} failed for the search {params} (page size {page_size}) "
            f"after {retries} retries: {e}"
        ) from None
    except APIError as e:
        code = getattr(e, "status_code", None)
        tries = f" after {retries} retries" if code is None or code >= 500 else ""
        raise StacApiError(
            f"STAC API {api.url} answered the search {params} with an error"
            f"{f' (HTTP {code})' if code else ''}{tries}: {_short(str(e)) or 'no message'}"
        ) from None
    except (DoesNotConformTo, ClientTypeError) as e:
        raise StacApiError(f"{api.url} is not a STAC API with item search: {e}") from None


class _GaveUp(Exception):
    """The retries are used up: the API stayed unreachable or kept answering malformed."""


def _retrying(fn: Callable[[], T], retries: int, backoff_s: float) -> T:
    """Call ``fn``; on a malformed answer call it again, up to ``retries`` more times."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            # pystac-client passes bodies that are not JSON (or not a page) straight through.
            if attempt == retries:
                raise _GaveUp(f"malformed answer ({type(e).__name__}: {_short(str(e))})") from e
            delay = backoff_s * 2**attempt
            log.warning("malformed STAC API answer (%s); retrying in %.2f s", e, delay)
            time.sleep(delay)
        except APIError as e:
            if "Max retries" in str(e) or "Failed to establish" in str(e):
                raise _GaveUp(f"unreachable ({_network_reason(str(e))})") from e
            raise
    raise AssertionError("unreachable")  # pragma: no cover


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def _network_reason(text: str) -> str:
    """The cause inside urllib3's nested repr ("[Errno 111] Connection refused" ->
    "connection refused"), or the text shortened."""
    m = _ERRNO.search(text)
    if m:
        return m.group(1).strip().rstrip(".").lower()
    for reason in ("timed out", "Name or service not known", "nodename nor servname"):
        if reason in text:
            return reason.lower()
    return _short(text)


def _short(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


# -- turning answers into scenes ----------------------------------------------------------
def _collect(
    answers: list[tuple[ApiQuery, list[dict[str, Any]]]],
    area: BaseGeometry,
    max_cloud_cover: float,
    registry: SensorRegistry,
    strict: bool,
    query: str,
) -> SearchResult:
    seen: set[tuple[str, str]] = set()
    parsed: list[SceneRecord] = []
    failures: list[Failure] = []
    counts = {"matched": 0, "duplicates": 0, "cloudy": 0, "outside": 0}
    for api, items in answers:
        for item in items:
            counts["matched"] += 1
            key = (str(item.get("collection")), str(item.get("id")))
            if key in seen:
                counts["duplicates"] += 1
                continue
            seen.add(key)
            scene = _parse(item, api.url, registry, strict, failures)
            if scene is not None:
                parsed.append(scene)
    unique, twice = _one_scene_per_acquisition(parsed, [api for api, _ in answers], failures)
    scenes: list[SceneRecord] = []
    per_api: dict[str, int] = {}
    for scene in unique:
        if scene.cloud_cover is not None and scene.cloud_cover > max_cloud_cover:
            counts["cloudy"] += 1
        elif not scene.footprint.intersects(area):
            counts["outside"] += 1
        else:
            scenes.append(scene)
            api_url = scene.api_url or ""
            per_api[api_url] = per_api.get(api_url, 0) + 1
    scenes.sort(key=lambda s: (s.datetime, s.collection, s.id))
    return SearchResult(
        scenes=scenes,
        failures=failures,
        query=query,
        matched=counts["matched"],
        duplicates=counts["duplicates"],
        over_cloud_limit=counts["cloudy"],
        outside_area=counts["outside"],
        per_api=per_api,
        repaired=sum(1 for s in scenes if s.repairs),
        same_acquisition=twice,
    )


def _one_scene_per_acquisition(
    scenes: list[SceneRecord], apis: Sequence[ApiQuery], failures: list[Failure]
) -> tuple[list[SceneRecord], list[Failure]]:
    """One record per acquisition (:mod:`terracorpus.catalogs.acquisitions`), preferring the
    earlier API of ``apis``, then the earlier collection of its list, then the smaller id;
    then one record per id (ids key scenes downstream): another acquisition under an id
    already taken is an unusable item."""
    order: dict[tuple[str, str], int] = {}
    for a, api in enumerate(apis):
        for c, collection in enumerate(api.collections):
            order.setdefault((api.url, collection), a * 10_000 + c)

    def rank(s: SceneRecord) -> tuple[int, str]:
        return (order.get((s.api_url or "", s.collection), len(order) * 10_000), s.id)

    kept, dropped = one_per_acquisition(scenes, rank)
    twice = [
        Failure(
            "item", f"{d.dropped.collection}/{d.dropped.id}", STAGE, SAME_ACQUISITION, d.describe()
        )
        for d in dropped
    ]
    by_id: dict[str, SceneRecord] = {}
    for s in sorted(kept, key=rank):
        first = by_id.setdefault(s.id, s)
        if first is not s:
            failures.append(
                Failure(
                    "item",
                    f"{s.collection}/{s.id}",
                    STAGE,
                    f"item {s.id}: the id is also that of {first.collection}/{s.id}, another "
                    "acquisition (datetime or ground differ), which is preferred; scene ids "
                    "must be unique: search one of the collections only",
                )
            )
    return [s for s in kept if by_id[s.id] is s], twice


def _parse(
    item: dict[str, Any],
    api_url: str,
    registry: SensorRegistry,
    strict: bool,
    failures: list[Failure],
) -> SceneRecord | None:
    try:
        return scene_from_item(item, registry, api_url=api_url)
    except CatalogError as e:
        if strict:
            raise
        key = f"{item.get('collection')}/{item.get('id')}"
        failures.append(Failure(kind="item", key=key, stage=STAGE, reason=str(e)))
        log.warning("skipping %s: %s", key, e)
        return None
