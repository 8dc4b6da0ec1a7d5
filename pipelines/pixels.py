"""All pixel reading of the project: chips of one scene, cheaply, onto a requested grid.

:func:`read_scene_chips` reads many chips of one scene in one call: every band asset is
opened once, each chip is a windowed read, and the read comes from the coarsest COG overview
that is still at least as fine as the requested pixel size (GDAL picks that level itself
when asked for a smaller output than the window; ``GDAL_OVERVIEW_OVERSAMPLING_THRESHOLD=1``
keeps it from taking a coarser one). A chip whose CRS differs from the scene's (a member
across a UTM zone boundary) is read at overview resolution around its footprint and warped
onto the chip grid in memory. Bands coarser than the grid are resampled onto it; QA always
with nearest neighbour.

Chips of one scene on one lattice (same CRS and pixel size, origins whole pixels apart: the
chips of a describe batch) are read together: each asset is read once onto the union grid of
a cluster of nearby chips and every chip is cut from that array (:func:`_unions`). A cut is
the per-chip read exactly where that read's cells do not depend on the read's extent
(nearest neighbour, whole pixels of the overview read); a same-CRS read of fractional
windows (GDAL treats a window's edge cells differently) stays per chip. Warped reads (another
CRS) are cut from one warp of the union grid: within one stored unit of the per-chip warps
(``tests/test_union_reads.py``). Chips far apart are read one by one, so a union never costs
more than :data:`UNION_DENSITY` times its chips' cells.

Problems of one chip come back as :class:`ChipFailure` in the chip's place, not as
exceptions; a scene that cannot be opened fails all its chips with the reason.
Hrefs may be local paths, ``http(s)://`` URLs (GDAL ``/vsicurl/`` range requests) or
``s3://`` URLs (``/vsis3/``).
"""

from __future__ import annotations

import functools
import math
import os
import re
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
import pyproj
import rasterio
import rasterio.warp
from affine import Affine
from numpy.typing import NDArray
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window, from_bounds

from terracorpus.catalogs.access import ReadAccess
from terracorpus.catalogs.radiometry import band_radiometry
from terracorpus.catalogs.redact import redact_text
from terracorpus.catalogs.scene import AssetRef, SceneRecord
from terracorpus.catalogs.sensors import Sensor
from terracorpus.curation.physical import impossible_reflectance
from terracorpus.pipelines.access import SceneAccess, is_denied
from terracorpus.pipelines.cluster import worker_env
from terracorpus.pipelines.errors import AccessError

Bounds = tuple[float, float, float, float]

# The QA value a pixel outside the QA raster gets: "no data" in each QA coding.
QA_FILL = {"scl": 0, "demo_mask": 0, "qa_pixel": 1, "none": 0}
# Never an overview coarser than asked for. The user's own environment variables win.
READ_ENV = {"GDAL_OVERVIEW_OVERSAMPLING_THRESHOLD": "1.0"}
_EPS = 1e-6
SCENE_REASONS = frozenset({"scene_unreadable", "href_refused", "access_denied", "crs_mismatch"})
"""Failure reasons that concern the whole scene, not one chip."""
READ_THREADS = 8
UNION_TILE = 512
"""Chips are read together within tiles of this many output cells a side (bounds memory)."""
UNION_DENSITY = 4.0
"""A union read covers at most this many times the cells of its chips, else chips are read
one by one (chips spread far apart in a batch)."""
_SHORT_READ = re.compile(r"got \d+ bytes, expected \d+")
_ENV_ONLY_OPTIONS = frozenset(
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PC_SDK_SUBSCRIPTION_KEY"}
)


@dataclass(frozen=True)
class ChipRequest:
    """One chip of one scene: a footprint in ``crs`` and the output pixel size in metres."""

    chip_id: str
    bounds: Bounds
    crs: str
    gsd: float


@dataclass(frozen=True, eq=False)
class ChipPixels:
    """The pixels of one chip on the requested grid.

    ``pixels`` are stored values (native dtype) in the order of the bands asked for; ``qa``
    the raw QA values on the same grid (None if the sensor has none); ``nodata`` is True
    where any band has no data or the scene does not reach. ``overview_level`` is the COG
    overview read for the finest bands (0 = first overview, None = full resolution).
    """

    chip_id: str
    pixels: NDArray[np.generic]
    qa: NDArray[np.generic] | None
    nodata: NDArray[np.bool_]
    transform: tuple[float, ...]
    crs: str
    overview_level: int | None


@dataclass(frozen=True)
class ChipFailure:
    """A chip that could not be read, with a short reason code and a detail for people.

    Reasons: ``scene_unreadable`` (the scene could not be opened: missing file, HTTP error,
    not a GeoTIFF), ``outside`` (the chip does not overlap the scene's raster), ``no_data``
    (it overlaps, but every pixel is nodata), ``qa_shape`` (the QA raster does not cover the
    scene's grid), ``crs_mismatch`` (a file's CRS is not the item's), ``read_error`` (a read failed: truncated file, HTTP error mid-way),
    ``href_refused`` (the href policy refuses an asset href: not on the API's hosts, a local
    file outside the configured roots, a GDAL ``/vsi`` path), ``access_denied`` (the server
    refused the read, HTTP 403, and signing did not cure it), ``impossible_values`` (it
    decodes, but its reflectance is physically impossible: a corrupt file or wrong metadata,
    :mod:`terracorpus.curation.physical`). The detail never holds a
    credential (:func:`terracorpus.catalogs.redact.redact_text`).
    """

    chip_id: str
    reason: str
    detail: str = ""


class _ChipError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class _Grid:
    transform: Affine
    height: int
    width: int
    crs: CRS
    gsd: float
    crs_text: str = ""

    @property
    def bounds(self) -> Bounds:
        minx, maxy = self.transform.c, self.transform.f
        return (minx, maxy - self.height * self.gsd, minx + self.width * self.gsd, maxy)


@dataclass
class _Source:
    """One opened asset and which output bands come from which of its band indexes."""

    href: str
    ds: DatasetReader
    indexes: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    nodata: list[float | None] = field(default_factory=list)


def gdal_path(href: str) -> str:
    """The path GDAL opens for an href: local paths as is, URLs through its virtual FS."""
    if href.startswith(("http://", "https://")):
        return f"/vsicurl/{href}"
    if href.startswith("s3://"):
        return f"/vsis3/{href[len('s3://') :]}"
    if href.startswith("file://"):
        return href[len("file://") :]
    return href


def chip_grid(req: ChipRequest) -> tuple[Affine, int, int]:
    """The output grid of a request: its affine transform, height and width."""
    minx, miny, maxx, maxy = req.bounds
    width = max(1, round((maxx - minx) / req.gsd))
    height = max(1, round((maxy - miny) / req.gsd))
    return Affine(req.gsd, 0.0, minx, 0.0, -req.gsd, maxy), height, width


def choose_overview(native_res: float, factors: Sequence[int], gsd: float) -> int | None:
    """The coarsest overview (0-based) whose pixels are still at most ``gsd``; None: full res."""
    best = None
    for level, factor in enumerate(factors):
        if native_res * factor <= gsd * (1 + _EPS):
            best = level
    return best


def scene_window(scene: SceneRecord, bounds: Bounds, crs: str) -> tuple[int, int, int, int]:
    """(col_off, row_off, width, height) of a footprint on the scene's finest grid."""
    src, dst = _crs(crs), _crs(scene.crs)
    if src != dst:
        # A cached transformer: GDAL's transform_bounds builds one per call (~10 ms).
        bounds = _transformer(src, dst).transform_bounds(*bounds, densify_pts=21)
    win = from_bounds(*bounds, transform=Affine(*scene.grid().transform))
    col, row = math.floor(win.col_off + _EPS), math.floor(win.row_off + _EPS)
    return (col, row, round(win.width), round(win.height))


@functools.lru_cache(maxsize=64)
def _crs(text: str) -> CRS:
    return CRS.from_user_input(text)


def read_scene_chips(
    scene: SceneRecord,
    sensor: Sensor,
    requests: Sequence[ChipRequest],
    *,
    bands: Sequence[str] | None = None,
    resampling: str = "average",
    use_overviews: bool = True,
    access: ReadAccess | None = None,
    union_reads: bool = True,
) -> list[ChipPixels | ChipFailure]:
    """Read chips of one scene; one result per request, in request order.

    Args:
        scene: the scene record (asset hrefs, CRS).
        sensor: its sensor (band metadata, QA kind).
        requests: the chips; all of this scene.
        bands: band names to read, in output order (default: all of the sensor's).
        resampling: a ``rasterio.enums.Resampling`` name for the bands (QA: nearest).
        use_overviews: read from COG overviews when the grid is coarser than the data.
        access: the run's href policy and per-API auth (:func:`terracorpus.pipelines.access.
            read_access`); None reads any href as published (trusted records only).
        union_reads: read nearby chips of one lattice together (:func:`_unions`); False
            reads every chip on its own (the reference the union reads are tested against).
    """
    names = list(bands) if bands is not None else list(sensor.band_names)
    gate = SceneAccess(scene, access)
    hrefs = _asset_hrefs(scene, sensor, names)
    refused = gate.refusal(hrefs)
    if refused is not None:
        return [ChipFailure(r.chip_id, "href_refused", refused) for r in requests]
    try:
        out = _read_chips(
            scene, sensor, names, requests, resampling, use_overviews, gate, union_reads
        )
        if gate.signs and any(_unreadable(r) for r in out):
            # A token expired during the run or was revoked (mid-read, GDAL reports a 403 only
            # as "got 0 bytes"): ask for new tokens and read the scene again, once.
            gate.resign(hrefs)
            out = _read_chips(
                scene, sensor, names, requests, resampling, use_overviews, gate, union_reads
            )
        denied = gate.probe_denied(hrefs) if any(_unreadable(r) for r in out) else None
    except AccessError as e:
        detail = f"scene {scene.id}: {e}"
        return [ChipFailure(r.chip_id, "access_denied", detail) for r in requests]
    return [_explained(_possible(r, scene, sensor, names), gate, hrefs, denied) for r in out]


def _possible(
    result: ChipPixels | ChipFailure, scene: SceneRecord, sensor: Sensor, names: Sequence[str]
) -> ChipPixels | ChipFailure:
    """A chip whose reflectance cannot be real (a corrupt but decodable raster) fails as
    ``impossible_values`` (:func:`terracorpus.curation.physical.impossible_reflectance`)."""
    if not isinstance(result, ChipPixels):
        return result
    bands = [sensor.band(n) for n in names]
    px = result.pixels
    saturated = (
        (px == np.iinfo(str(px.dtype)).max).any(axis=0)
        if np.issubdtype(px.dtype, np.integer)
        else np.zeros(px.shape[1:], dtype=bool)
    )
    rads = [band_radiometry(scene, b) for b in bands]  # the item's own scale and offset
    why = impossible_reflectance(
        px,
        [r.scale for r in rads],
        [r.offset for r in rads],
        [b.center_wavelength for b in bands],
        ~result.nodata & ~saturated,
        names,
    )
    return result if why is None else ChipFailure(result.chip_id, "impossible_values", why)


def _asset_hrefs(scene: SceneRecord, sensor: Sensor, names: Sequence[str]) -> list[str]:
    """Every href a read of ``names`` opens (band assets, then the QA asset)."""
    hrefs = list(dict.fromkeys(scene.asset(name).href for name in names))
    if scene.qa is not None and sensor.qa.kind != "none":
        hrefs.append(scene.qa.href)
    return hrefs


def _unreadable(result: ChipPixels | ChipFailure) -> bool:
    return isinstance(result, ChipFailure) and result.reason in ("scene_unreadable", "read_error")


def _explained(
    result: ChipPixels | ChipFailure, gate: SceneAccess, hrefs: list[str], denied: str | None
) -> ChipPixels | ChipFailure:
    """A failure whose detail is safe to store (no credentials) and says what to do.

    ``denied`` is what a probe of the scene's hrefs found refused (HTTP 403), if anything.
    """
    if not isinstance(result, ChipFailure):
        return result
    detail = redact_text(result.detail)
    if _unreadable(result) and (denied or is_denied(detail)):
        why = denied if denied and not is_denied(detail) else detail
        return ChipFailure(result.chip_id, "access_denied", gate.denied_detail(hrefs, why))
    return ChipFailure(result.chip_id, result.reason, detail)


def _read_chips(
    scene: SceneRecord,
    sensor: Sensor,
    names: list[str],
    requests: Sequence[ChipRequest],
    resampling: str,
    use_overviews: bool,
    gate: SceneAccess,
    union_reads: bool,
) -> list[ChipPixels | ChipFailure]:
    options = _gdal_options(gate.gdal_options())
    with rasterio.Env(**options), ExitStack() as stack:
        try:
            sources, qa_ds = _open_assets(scene, sensor, names, stack, use_overviews, options, gate)
        except (RasterioError, OSError) as e:
            return [ChipFailure(r.chip_id, "scene_unreadable", str(e)) for r in requests]
        problem = _crs_problem(scene, [*(s.ds for s in sources), qa_ds])
        if problem is not None:
            return [ChipFailure(r.chip_id, "crs_mismatch", problem) for r in requests]
        if qa_ds is not None:
            problem = _qa_shape_problem(qa_ds, sources[0].ds)
            if problem is not None:
                return [ChipFailure(r.chip_id, "qa_shape", problem) for r in requests]
        grids = [_grid_of(r) for r in requests]
        unions = _unions(grids) if union_reads else [_Union([i], None) for i in range(len(grids))]
        method = Resampling[resampling]
        jobs = [_Reads(s.ds, s.indexes, method, [_fill(v) for v in s.nodata]) for s in sources]
        if qa_ds is not None:
            jobs.append(_Reads(qa_ds, [1], Resampling.nearest, [QA_FILL[sensor.qa.kind]]))
        # One thread per asset: reads release the GIL, so network waits and decompression of
        # the assets overlap; each dataset stays in one thread.
        reads = list(_pool().map(lambda job: job.run(grids, unions, options), jobs))
        return [
            _assemble(req, grid, [r[i] for r in reads], sources, qa_ds is not None, len(names))
            for i, (req, grid) in enumerate(zip(requests, grids, strict=True))
        ]


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """A process-wide pool: its threads keep GDAL's per-thread HTTP connections alive."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="pixels")
        return _POOL


def _fill(nodata: float | None) -> float:
    return 0 if nodata is None else nodata


def _grid_of(req: ChipRequest) -> _Grid:
    transform, height, width = chip_grid(req)
    return _Grid(transform, height, width, _crs(req.crs), req.gsd, req.crs)


_Read = tuple[NDArray[np.generic], int | None] | Exception


@dataclass
class _Reads:
    """All chips' reads from one asset (run in one thread)."""

    ds: DatasetReader
    indexes: list[int]
    method: Resampling
    fill: list[float]

    def run(
        self, grids: Sequence[_Grid], unions: Sequence[_Union], options: dict[str, str | int]
    ) -> list[_Read]:
        out: list[_Read | None] = [None] * len(grids)
        with rasterio.Env(**options):  # GDAL options are per thread
            for union in unions:
                if union.grid is None or not _cuts_exact(self.ds, union.grid, self.method):
                    for i in union.members:
                        out[i] = self._one(grids[i])
                else:
                    self._cut(union.grid, [(i, grids[i]) for i in union.members], out)
        return [r for r in out if r is not None]

    def _one(self, grid: _Grid) -> _Read:
        try:
            return _read_onto(self.ds, self.indexes, grid, self.method, self.fill)
        except (_ChipError, RasterioError, OSError) as e:
            return e

    def _cut(self, union: _Grid, chips: list[tuple[int, _Grid]], out: list[_Read | None]) -> None:
        """Read ``union`` once and cut each chip from it; a chip the per-chip read would
        find outside the raster fails as ``outside`` here too."""
        got = self._one(union)
        ux, uy = union.transform.c, union.transform.f
        for i, grid in chips:
            why = _outside(self.ds, grid, self.method)
            if why is not None:
                out[i] = _ChipError("outside", why)
            elif isinstance(got, Exception):
                out[i] = got
            else:
                arr, level = got
                c = round((grid.transform.c - ux) / grid.gsd)
                r = round((uy - grid.transform.f) / grid.gsd)
                out[i] = (arr[:, r : r + grid.height, c : c + grid.width].copy(), level)


def _cuts_exact(ds: DatasetReader, grid: _Grid, method: Resampling) -> bool:
    """Whether cutting chips of ``grid``'s lattice from one read of it gives each chip's
    own read exactly, for a raster in the grid's CRS: nearest neighbour at or below the
    raster's pixel size, or whole pixels of the overview GDAL reads (GDAL resamples a
    fractional window differently at its edges, so a chip's edge cells would change).
    Warped reads (another CRS) are always cut: they agree within one stored unit (tested).
    """
    if ds.crs != grid.crs:
        return True
    t, g = ds.transform, grid.gsd
    if method == Resampling.nearest and g <= abs(t.a) * (1 + _EPS):
        return True
    level = choose_overview(abs(t.a), ds.overviews(1), g)
    f = 1 if level is None else ds.overviews(1)[level]
    if ds.width % f or ds.height % f:
        return False  # GDAL scales windows by width / overview width: not whole pixels
    res = abs(t.a) * f
    whole = [(grid.transform.c - t.c) / res, (t.f - grid.transform.f) / res, g / res]
    return all(abs(v - round(v)) < _EPS for v in whole)


@dataclass(frozen=True)
class _Union:
    """Chips (indexes into the batch) read together onto ``grid``; None: one by one."""

    members: list[int]
    grid: _Grid | None


def _unions(grids: Sequence[_Grid]) -> list[_Union]:
    """Clusters of chips to read together: chips of one CRS and pixel size whose origins
    are whole pixels apart, in tiles of :data:`UNION_TILE` cells, each read onto the union
    grid of its chips unless that grid is more than :data:`UNION_DENSITY` times their cells.
    """
    origins: dict[tuple[str, float], tuple[float, float]] = {}
    tiles: dict[tuple[str, float, int, int], list[tuple[int, int, int]]] = {}
    alone = []
    for i, g in enumerate(grids):
        key = (g.crs_text or g.crs.to_wkt(), g.gsd)
        ox, oy = origins.setdefault(key, (g.transform.c, g.transform.f))
        fc, fr = (g.transform.c - ox) / g.gsd, (oy - g.transform.f) / g.gsd
        c, r = round(fc), round(fr)
        if abs(fc - c) > _EPS or abs(fr - r) > _EPS:
            alone.append(i)
            continue
        tiles.setdefault((*key, c // UNION_TILE, r // UNION_TILE), []).append((i, c, r))
    out = [_Union([i], None) for i in alone]
    for (_, gsd, _, _), chips in tiles.items():
        first = grids[chips[0][0]]
        ox, oy = origins[(first.crs_text or first.crs.to_wkt(), gsd)]
        c0 = min(c for _, c, _ in chips)
        r0 = min(r for _, _, r in chips)
        c1 = max(c + grids[i].width for i, c, _ in chips)
        r1 = max(r + grids[i].height for i, _, r in chips)
        cells = sum(grids[i].width * grids[i].height for i, _, _ in chips)
        members = [i for i, _, _ in chips]
        if len(chips) < 2 or (c1 - c0) * (r1 - r0) > UNION_DENSITY * cells:
            out += [_Union([i], None) for i in members]
            continue
        transform = Affine(gsd, 0.0, ox + c0 * gsd, 0.0, -gsd, oy - r0 * gsd)
        grid = _Grid(transform, r1 - r0, c1 - c0, first.crs, gsd, first.crs_text)
        out.append(_Union(members, grid))
    return out


def _outside(ds: DatasetReader, grid: _Grid, method: Resampling) -> str | None:
    """Why the per-chip read of ``grid`` would fail as ``outside`` (:func:`_read_onto`)."""
    if ds.crs == grid.crs:
        c0, c1, r0, r1 = _inside_cells(ds, grid)
        if c1 <= c0 or r1 <= r0:
            return f"chip bounds {grid.bounds} do not overlap {ds.name}"
        return None
    level = choose_overview(abs(ds.res[0]), ds.overviews(1), grid.gsd)
    if method == Resampling.nearest and level is None:
        if not _centres_inside(ds, grid).any():
            return f"chip bounds {grid.bounds} ({grid.crs}) miss {ds.name}"
        return None
    pad = 2 * grid.gsd
    minx, miny, maxx, maxy = _transformer(grid.crs, ds.crs).transform_bounds(
        *grid.bounds, densify_pts=21
    )
    left, bottom, right, top = ds.bounds
    if minx - pad >= right or maxx + pad <= left or miny - pad >= top or maxy + pad <= bottom:
        return f"chip bounds {grid.bounds} ({grid.crs}) miss {ds.name}"
    return None


def _assemble(
    req: ChipRequest,
    grid: _Grid,
    reads: list[_Read],
    sources: Sequence[_Source],
    has_qa: bool,
    n_bands: int,
) -> ChipPixels | ChipFailure:
    """One chip from its reads of every asset (QA last), or why it failed."""
    for r in reads:
        if isinstance(r, _ChipError):
            return ChipFailure(req.chip_id, r.reason, r.detail)
        if isinstance(r, Exception):
            return ChipFailure(req.chip_id, "read_error", error_message(r))
    arrays = [r for r in reads if not isinstance(r, Exception)]
    dtype = np.result_type(*[s.ds.dtypes[0] for s in sources])
    pixels = np.zeros((n_bands, grid.height, grid.width), dtype=dtype)
    nodata = np.zeros((grid.height, grid.width), dtype=bool)
    for src, (arr, _) in zip(sources, arrays, strict=False):
        pixels[src.positions] = arr
        for k, v in enumerate(src.nodata):
            if v is not None:
                nodata |= np.isnan(arr[k]) if math.isnan(v) else arr[k] == v
    if nodata.all():
        return ChipFailure(req.chip_id, "no_data", f"chip {req.chip_id} holds no data pixels")
    finest = min(range(len(sources)), key=lambda j: abs(sources[j].ds.res[0]))
    return ChipPixels(
        chip_id=req.chip_id,
        pixels=pixels,
        qa=arrays[-1][0][0] if has_qa else None,
        nodata=nodata,
        transform=tuple(grid.transform)[:6],
        crs=req.crs,
        overview_level=arrays[finest][1],
    )


def _gdal_options(api_options: dict[str, str]) -> dict[str, str | int]:
    """The workers' GDAL settings, the overview rule and the scene's API's options (auth and
    the user's ``gdal_options``) as rasterio.Env options."""
    env = {**worker_env(), **{k: v for k, v in READ_ENV.items() if k not in os.environ}}
    env.update(api_options)
    # Credentials stay in the process environment, where GDAL reads them too (rasterio
    # refuses them as options, and no secret should travel in an options dict).
    return {k: int(v) if v.isdigit() else v for k, v in env.items() if k not in _ENV_ONLY_OPTIONS}


def _open(
    href: str, use_overviews: bool, options: dict[str, str | int], gate: SceneAccess
) -> DatasetReader:
    # Without overviews GDAL must not see them, or a smaller out_shape would use them anyway.
    open_options = {} if use_overviews else {"OVERVIEW_LEVEL": "NONE"}
    try:
        with rasterio.Env(**options):  # GDAL options are per thread
            ds: DatasetReader = rasterio.open(gdal_path(gate.open_href(href)), **open_options)
    except (RasterioError, OSError) as e:
        raise RasterioError(f"cannot open {href}: {error_message(e)}") from None
    return ds


def error_message(e: BaseException) -> str:
    """An exception's message with the causes GDAL chained to it (rasterio's "Read failed.
    See previous exception for details." says nothing; the cause says what failed)."""
    parts: list[str] = []
    seen: BaseException | None = e
    while seen is not None and len(parts) < 4:
        text = str(seen).strip().removesuffix(" See previous exception for details.").rstrip(".")
        if text and not any(text in p for p in parts):
            parts.append(text)
        seen = seen.__cause__ or seen.__context__
    message = ": ".join(parts) or type(e).__name__
    if _SHORT_READ.search(message):
        message += " (the file ends before its header says: truncated, or changed during the run)"
    return message


@dataclass
class _BandPlan:
    """Which output bands one asset serves: its band indexes, their output positions, nodata."""

    indexes: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    nodata: list[float | None] = field(default_factory=list)


def _open_assets(
    scene: SceneRecord,
    sensor: Sensor,
    names: Sequence[str],
    stack: ExitStack,
    use_overviews: bool,
    options: dict[str, str | int],
    gate: SceneAccess,
) -> tuple[list[_Source], DatasetReader | None]:
    """Open each distinct band asset once (multi-band assets serve several bands) and the QA
    asset, all at once in the read threads: an open is a few round trips of latency (headers,
    IFDs), so a scene of a dozen assets waits for about one open instead of a dozen.

    Every opened dataset is closed by ``stack``; the first failure in asset order is raised.
    """
    bands: dict[str, _BandPlan] = {}
    for pos, name in enumerate(names):
        ref: AssetRef = scene.asset(name)
        plan = bands.setdefault(ref.href, _BandPlan())
        plan.indexes.append(ref.band_index)
        plan.positions.append(pos)
        plan.nodata.append(band_radiometry(scene, sensor.band(name)).nodata)  # the item's
    hrefs = list(bands)
    if scene.qa is not None and sensor.qa.kind != "none":
        hrefs.append(scene.qa.href)  # its own dataset even if a band shares the file

    def attempt(href: str) -> DatasetReader | RasterioError | OSError:
        try:
            return _open(href, use_overviews, options, gate)
        except (RasterioError, OSError) as e:
            return e

    opened = list(_pool().map(attempt, hrefs))
    datasets = []
    for ds in opened:
        if not isinstance(ds, RasterioError | OSError):
            datasets.append(stack.enter_context(ds))
    if len(datasets) < len(opened):
        raise next(e for e in opened if isinstance(e, RasterioError | OSError))
    sources = [
        _Source(href, ds, p.indexes, p.positions, p.nodata)
        for (href, p), ds in zip(bands.items(), datasets, strict=False)
    ]
    return sources, (datasets[-1] if len(datasets) > len(bands) else None)


def _crs_problem(scene: SceneRecord, datasets: Sequence[DatasetReader | None]) -> str | None:
    """Why a file's CRS contradicts the item's (``proj:epsg`` / ``proj:code``), or None.

    The item's grid is in the item's CRS; a file in another CRS would put every pixel in the
    wrong place (or nowhere), so the scene is refused rather than read.
    """
    want = CRS.from_user_input(scene.crs)
    for ds in datasets:
        if ds is None or _same_crs(ds.crs, want):
            continue
        return (
            f"scene {scene.id}: {ds.name} is in {ds.crs or 'no CRS'} but the item says "
            f"{scene.crs}; the item contradicts its file: fix the catalog's proj fields"
        )
    return None


def _same_crs(got: CRS | None, want: CRS) -> bool:
    if got is None:
        return False
    if got == want:
        return True
    epsg = want.to_epsg()
    return epsg is not None and got.to_epsg() == epsg


def _qa_shape_problem(qa: DatasetReader, band: DatasetReader) -> str | None:
    """Why the QA raster cannot describe the scene's pixels, or None if it can."""
    tol = max(abs(qa.res[0]), abs(band.res[0]))
    off = max(abs(a - b) for a, b in zip(qa.bounds, band.bounds, strict=True))
    if qa.count != 1 or qa.crs != band.crs or off > tol:
        return (
            f"QA raster {qa.name} ({qa.count} band(s), {qa.height}x{qa.width} px, bounds "
            f"{tuple(round(v, 1) for v in qa.bounds)}) does not cover the scene grid (bounds "
            f"{tuple(round(v, 1) for v in band.bounds)}); the QA asset is of the wrong shape"
        )
    return None


def _read_onto(
    ds: DatasetReader, indexes: list[int], grid: _Grid, method: Resampling, fill: list[float]
) -> tuple[NDArray[np.generic], int | None]:
    """Bands ``indexes`` of ``ds`` on the chip grid; cells the raster misses hold ``fill``."""
    factors = ds.overviews(indexes[0])
    level = choose_overview(abs(ds.res[0]), factors, grid.gsd)
    if ds.crs == grid.crs:
        return _read_same_crs(ds, indexes, grid, method, fill), level
    if method == Resampling.nearest and level is None:
        return _read_warped_nearest(ds, indexes, grid, fill), level
    factor = factors[level] if level is not None else 1
    return _read_warped(ds, indexes, grid, method, fill, factor), level


def _filled(n: int, grid: _Grid, dtype: str, fill: list[float]) -> NDArray[np.generic]:
    out = np.empty((n, grid.height, grid.width), dtype=dtype)
    for k, v in enumerate(fill):
        out[k] = v
    return out


def _read_same_crs(
    ds: DatasetReader, indexes: list[int], grid: _Grid, method: Resampling, fill: list[float]
) -> NDArray[np.generic]:
    """Read the output cells that lie inside the raster with one (sub-pixel) windowed read."""
    minx, _, _, maxy = grid.bounds
    g = grid.gsd
    c0, c1, r0, r1 = _inside_cells(ds, grid)
    if c1 <= c0 or r1 <= r0:
        raise _ChipError("outside", f"chip bounds {grid.bounds} do not overlap {ds.name}")
    t = ds.transform  # north-up: a window is plain arithmetic on its origin and pixel size
    if t.b or t.d:
        raise _ChipError("read_error", f"{ds.name} has a rotated grid, which is not supported")
    out = _filled(len(indexes), grid, ds.dtypes[0], fill)
    if method == Resampling.nearest and g <= abs(t.a) * (1 + _EPS):
        out[:, r0:r1, c0:c1] = _read_nearest_fine(ds, indexes, grid, (c0, c1, r0, r1))
        return out
    col0, row0 = (minx + c0 * g - t.c) / t.a, (maxy - r0 * g - t.f) / t.e
    win = _clamp(Window(col0, row0, (c1 - c0) * g / t.a, (r1 - r0) * g / -t.e), ds)
    out[:, r0:r1, c0:c1] = ds.read(
        indexes, window=win, out_shape=(len(indexes), r1 - r0, c1 - c0), resampling=method
    )
    return out


def _inside_cells(ds: DatasetReader, grid: _Grid) -> tuple[int, int, int, int]:
    """(c0, c1, r0, r1): the output cells of a same-CRS grid that lie inside the raster."""
    minx, _, _, maxy = grid.bounds
    g = grid.gsd
    left, bottom, right, top = ds.bounds
    c0 = max(0, math.ceil((left - minx) / g - _EPS))
    c1 = min(grid.width, math.floor((right - minx) / g + _EPS))
    r0 = max(0, math.ceil((maxy - top) / g - _EPS))
    r1 = min(grid.height, math.floor((maxy - bottom) / g + _EPS))
    return c0, c1, r0, r1


def _read_nearest_fine(
    ds: DatasetReader, indexes: list[int], grid: _Grid, cells: tuple[int, int, int, int]
) -> NDArray[np.generic]:
    """Output cells ``cells`` (c0, c1, r0, r1) at a pixel size no coarser than the raster's,
    by nearest neighbour: each cell takes the raster pixel holding its centre.

    The pixels are read once at their own resolution and repeated in memory. (GDAL's own
    upsampling of a window is per output pixel and, for pixel-interleaved multi-band files
    such as NAIP, takes seconds per chip.)
    """
    c0, c1, r0, r1 = cells
    minx, _, _, maxy = grid.bounds
    t, g = ds.transform, grid.gsd
    xs = minx + (np.arange(c0, c1) + 0.5) * g
    ys = maxy - (np.arange(r0, r1) + 0.5) * g
    cols = np.clip(np.floor((xs - t.c) / t.a).astype(np.int64), 0, ds.width - 1)
    rows = np.clip(np.floor((ys - t.f) / t.e).astype(np.int64), 0, ds.height - 1)
    col_lo, row_lo = int(cols.min()), int(rows.min())
    win = Window(col_lo, row_lo, int(cols.max()) - col_lo + 1, int(rows.max()) - row_lo + 1)
    src: NDArray[np.generic] = ds.read(indexes, window=win)
    out: NDArray[np.generic] = src[:, (rows - row_lo)[:, None], (cols - col_lo)[None, :]]
    return out


def _clamp(win: Window, ds: DatasetReader) -> Window:
    col0 = min(max(win.col_off, 0.0), ds.width)
    row0 = min(max(win.row_off, 0.0), ds.height)
    col1 = min(max(win.col_off + win.width, 0.0), ds.width)
    row1 = min(max(win.row_off + win.height, 0.0), ds.height)
    return Window(col0, row0, col1 - col0, row1 - row0)


_TRANSFORMERS = threading.local()


def _transformer(src: CRS, dst: CRS) -> pyproj.Transformer:
    """A pyproj transformer per CRS pair and thread (they are not thread-safe; building one
    costs milliseconds, more than warping a chip)."""
    cache: dict[tuple[str, str], pyproj.Transformer] = _TRANSFORMERS.__dict__.setdefault("d", {})
    key = (src.to_wkt(), dst.to_wkt())
    tr = cache.get(key)
    if tr is None:
        tr = cache[key] = pyproj.Transformer.from_crs(key[0], key[1], always_xy=True)
    return tr


def _read_warped_nearest(
    ds: DatasetReader, indexes: list[int], grid: _Grid, fill: list[float]
) -> NDArray[np.generic]:
    """Nearest-neighbour warp at full resolution: each chip cell takes the raster pixel that
    holds the cell's centre, projected exactly into the raster's CRS.

    The raster's pixels around the footprint are read once at their own resolution and
    indexed in memory; source nodata becomes ``fill``, as GDAL's warper would make it.
    """
    t = ds.transform
    if t.b or t.d:
        raise _ChipError("read_error", f"{ds.name} has a rotated grid, which is not supported")
    fcols, frows = _centres(ds, grid)
    with np.errstate(invalid="ignore"):
        inside = (fcols >= 0) & (fcols < ds.width) & (frows >= 0) & (frows < ds.height)
    if not inside.any():
        raise _ChipError("outside", f"chip bounds {grid.bounds} ({grid.crs}) miss {ds.name}")
    cols, rows = fcols[inside].astype(np.int64), frows[inside].astype(np.int64)
    c_lo, r_lo = int(cols.min()), int(rows.min())
    win = Window(c_lo, r_lo, int(cols.max()) - c_lo + 1, int(rows.max()) - r_lo + 1)
    src = ds.read(indexes, window=win)
    values = src[:, rows - r_lo, cols - c_lo]
    for k, index in enumerate(indexes):
        nodata = ds.nodatavals[index - 1]
        if nodata is not None:
            hole = np.isnan(values[k]) if math.isnan(nodata) else values[k] == nodata
            values[k][hole] = fill[k]
    out = _filled(len(indexes), grid, ds.dtypes[0], fill)
    out[:, inside] = values
    return out


def _centres(ds: DatasetReader, grid: _Grid) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The raster (column, row) holding each chip cell's centre, projected exactly."""
    t = ds.transform
    xs = grid.transform.c + (np.arange(grid.width) + 0.5) * grid.gsd
    ys = grid.transform.f - (np.arange(grid.height) + 0.5) * grid.gsd
    sx, sy = _transformer(grid.crs, ds.crs).transform(*np.meshgrid(xs, ys))
    with np.errstate(invalid="ignore"):
        return np.floor((sx - t.c) / t.a), np.floor((sy - t.f) / t.e)


def _centres_inside(ds: DatasetReader, grid: _Grid) -> NDArray[np.bool_]:
    fcols, frows = _centres(ds, grid)
    with np.errstate(invalid="ignore"):
        out: NDArray[np.bool_] = (
            (fcols >= 0) & (fcols < ds.width) & (frows >= 0) & (frows < ds.height)
        )
    return out


# In Dask workers' read threads GDAL's warper reports its temporary in-memory copy of a
# source array as "not georeferenced" (once per process; not reproducible in one process).
# Both grids are passed to it explicitly and the warped pixels match GDAL's own reads (tests),
# so the message tells a user nothing: it is silenced for rasterio.warp only.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module="rasterio.warp")


def _read_warped(
    ds: DatasetReader,
    indexes: list[int],
    grid: _Grid,
    method: Resampling,
    fill: list[float],
    factor: int,
) -> NDArray[np.generic]:
    """Read the chip's footprint (in the raster's CRS) at overview resolution, then warp it."""
    pad = 2 * grid.gsd
    minx, miny, maxx, maxy = rasterio.warp.transform_bounds(
        grid.crs, ds.crs, *grid.bounds, densify_pts=21
    )
    win = from_bounds(minx - pad, miny - pad, maxx + pad, maxy + pad, ds.transform)
    col0 = max(0, math.floor(win.col_off / factor) * factor)
    row0 = max(0, math.floor(win.row_off / factor) * factor)
    col1 = min(ds.width, math.ceil((win.col_off + win.width) / factor) * factor)
    row1 = min(ds.height, math.ceil((win.row_off + win.height) / factor) * factor)
    if col1 <= col0 or row1 <= row0:
        raise _ChipError("outside", f"chip bounds {grid.bounds} ({grid.crs}) miss {ds.name}")
    read_win = Window(col0, row0, col1 - col0, row1 - row0)
    shape = (len(indexes), math.ceil(read_win.height / factor), math.ceil(read_win.width / factor))
    src = ds.read(indexes, window=read_win, out_shape=shape, resampling=method)
    src_transform = ds.window_transform(read_win) @ Affine.scale(
        read_win.width / shape[2], read_win.height / shape[1]
    )
    out = _filled(len(indexes), grid, ds.dtypes[0], fill)
    for k in range(len(indexes)):
        rasterio.warp.reproject(
            source=src[k],
            destination=out[k],
            src_transform=src_transform,
            src_crs=ds.crs,
            src_nodata=ds.nodatavals[indexes[k] - 1],
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            dst_nodata=fill[k],
            resampling=method,
        )
    return out
