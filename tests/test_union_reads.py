"""Union reads (each asset read once for a cluster of chips, chips cut from it) against the
per-chip reads they replace, on real COGs: same CRS, another CRS, overviews, raster edges,
nodata, bands coarser than the grid.

Where a chip's cells do not depend on the read's extent (whole-pixel windows, nearest
neighbour) the two are equal; where GDAL resamples a fractional window or warps, the same
cell is computed from a different read extent, and the two agree within one stored unit
(GDAL's floating-point source positions and its warper's approximate transformer).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import pytest
import rasterio.warp
from affine import Affine
from describe_builders import build_scene
from rasterio.windows import from_bounds

from terracorpus.catalogs.scene import SceneRecord
from terracorpus.catalogs.sensors import Sensor, builtin_registry
from terracorpus.pipelines import pixels
from terracorpus.pipelines.pixels import (
    ChipFailure,
    ChipPixels,
    ChipRequest,
    _Grid,
    _unions,
    read_scene_chips,
    scene_window,
)

GF2 = builtin_registry().get("gaofen-2-pms")
S2 = builtin_registry().get("sentinel-2-l2a")
ORIGIN = (500_000.0, 4_600_000.0)


def _lattice(
    x0: float, y0: float, size: float, gsd: float, n: int, crs: str = "EPSG:32615"
) -> list[ChipRequest]:
    """``n`` x ``n`` chips of ``size`` metres, side by side from (x0, y0) down and right."""
    return [
        ChipRequest(f"c{i}-{j}", (x, y - size, x + size, y), crs, gsd)
        for i in range(n)
        for j in range(n)
        for x, y in [(x0 + j * size, y0 - i * size)]
    ]


def _compare(
    scene: SceneRecord,
    sensor: Sensor,
    reqs: list[ChipRequest],
    tol: int,
    monkeypatch: pytest.MonkeyPatch,
    *,
    cut: bool | None = True,
) -> tuple[int, float]:
    """Read ``reqs`` both ways; failures must agree, pixels within ``tol`` stored units;
    ``cut``: whether the union reads cut chips from fewer reads than the per-chip reads
    make (None: not checked).

    Returns (chips read, fraction of band cells that differ).
    """
    calls = []
    read_onto = pixels._read_onto

    def counted(*args: Any) -> Any:
        calls.append(1)
        return read_onto(*args)

    monkeypatch.setattr(pixels, "_read_onto", counted)
    union = read_scene_chips(scene, sensor, reqs)
    n_union = len(calls)
    single = read_scene_chips(scene, sensor, reqs, union_reads=False)
    assert cut is None or (n_union < len(calls) - n_union) == cut
    ok, differ, cells = 0, 0, 0
    for u, s in zip(union, single, strict=True):
        assert type(u) is type(s), (u, s)
        if isinstance(s, ChipFailure):
            assert isinstance(u, ChipFailure) and u.reason == s.reason, (u, s)
            continue
        assert isinstance(u, ChipPixels)
        ok += 1
        assert u.chip_id == s.chip_id and u.transform == s.transform
        assert u.overview_level == s.overview_level and u.pixels.dtype == s.pixels.dtype
        diff = np.abs(u.pixels.astype(np.int64) - s.pixels.astype(np.int64))
        assert diff.max() <= tol, (u.chip_id, diff.max())
        differ += int((diff > 0).sum())
        cells += diff.size
        np.testing.assert_array_equal(u.nodata, s.nodata)
        if s.qa is not None:
            assert u.qa is not None
            np.testing.assert_array_equal(u.qa, s.qa)
    assert ok > 0
    return ok, differ / max(1, cells)


@pytest.fixture(scope="module")
def gf2(tmp_path_factory: pytest.TempPathFactory) -> SceneRecord:
    return build_scene(tmp_path_factory.mktemp("union"), "gf2", nodata_rows=40)


def test_whole_pixel_chips_are_equal(gf2: SceneRecord, monkeypatch: pytest.MonkeyPatch) -> None:
    # 4 m chips on the raster's own grid: every cut is the per-chip read, bit for bit.
    reqs = _lattice(ORIGIN[0] + 64, ORIGIN[1] - 192, 64.0, 4.0, 6)  # below the blank rows
    n, frac = _compare(gf2, GF2, reqs, tol=0, monkeypatch=monkeypatch)
    assert n == 36 and frac == 0.0


def test_off_grid_chips_are_read_one_by_one_and_equal(
    gf2: SceneRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1.3 m off the pixel grid: GDAL resamples a fractional window's edge cells by the
    # window, so the bands keep their reads per chip (the nearest QA is cut: 4 x 25 + 1).
    reqs = _lattice(ORIGIN[0] + 41.3, ORIGIN[1] - 201.3, 96.0, 4.0, 5)
    _, frac = _compare(gf2, GF2, reqs, tol=0, monkeypatch=monkeypatch, cut=None)
    assert frac == 0.0


def test_overview_chips_edges_and_nodata(gf2: SceneRecord, monkeypatch: pytest.MonkeyPatch) -> None:
    # 16 m from the 2nd overview, on its pixel grid; the lattice runs off the west and south
    # edges (partly and wholly outside) and through the blank top rows (no_data chips).
    reqs = _lattice(ORIGIN[0] - 304.0, ORIGIN[1] + 16.0, 128.0, 16.0, 15)
    union = read_scene_chips(gf2, GF2, reqs)
    reasons = {r.reason for r in union if isinstance(r, ChipFailure)}
    assert reasons == {"outside", "no_data"}
    assert any(isinstance(r, ChipPixels) and r.nodata.any() and not r.nodata.all() for r in union)
    assert {r.overview_level for r in union if isinstance(r, ChipPixels)} == {1}
    _, frac = _compare(gf2, GF2, reqs, tol=0, monkeypatch=monkeypatch)
    assert frac == 0.0


def test_chips_in_another_crs_within_one_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A UTM 14N scene read onto chips cut in UTM 15N (warped reads, overview level 0).
    scene = build_scene(tmp_path, "z14", crs="EPSG:32614", origin=(748_000.0, 4_599_500.0))
    x, y = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32615", always_xy=True).transform(
        -96.02, 41.5
    )
    reqs = _lattice(x - 700.0, y + 700.0, 240.0, 8.0, 6)
    n, frac = _compare(scene, GF2, reqs, tol=1, monkeypatch=monkeypatch)
    assert n >= 20 and frac < 0.05


def test_bands_coarser_than_the_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Sentinel-2: 10, 20 and 60 m bands and a 20 m SCL onto 10 m chips, same CRS and not.
    scene = build_scene(tmp_path, "s2", sensor=S2, size_m=1920.0)
    reqs = _lattice(ORIGIN[0] + 60.0, ORIGIN[1] - 60.0, 120.0, 10.0, 5)
    _compare(scene, S2, reqs, tol=1, monkeypatch=monkeypatch)
    x, y = pyproj.Transformer.from_crs("EPSG:32615", "EPSG:26915", always_xy=True).transform(
        *ORIGIN
    )
    other = _lattice(x + 60.0, y - 60.0, 120.0, 10.0, 5, crs="EPSG:26915")
    _compare(scene, S2, other, tol=1, monkeypatch=monkeypatch)


def _grid(x0: float, y0: float, size: float, gsd: float) -> _Grid:
    n = round(size / gsd)
    return _Grid(Affine(gsd, 0, x0, 0, -gsd, y0), n, n, pixels.CRS.from_epsg(32615), gsd, "A")


def test_union_plan_bounds_the_read() -> None:
    near = [_grid(ORIGIN[0] + 60.0 * k, ORIGIN[1], 60.0, 10.0) for k in range(4)]
    (u,) = _unions(near)
    assert u.members == [0, 1, 2, 3] and u.grid is not None
    assert (u.grid.height, u.grid.width) == (6, 24)
    # Two chips 50 km apart, and one off the lattice: each read on its own.
    far = [near[0], _grid(ORIGIN[0] + 50_000.0, ORIGIN[1], 60.0, 10.0)]
    assert all(u.grid is None for u in _unions(far))
    odd = [near[0], near[1], _grid(ORIGIN[0] + 3.0, ORIGIN[1], 60.0, 10.0)]
    plans = _unions(odd)
    assert sorted(len(u.members) for u in plans) == [1, 2]
    # A lattice wider than a tile is cut into tiles, none wider than a tile plus a chip.
    wide = [_grid(ORIGIN[0] + 60.0 * k, ORIGIN[1], 60.0, 10.0) for k in range(200)]
    plans = _unions(wide)
    assert sum(len(u.members) for u in plans) == 200 and len(plans) > 1
    assert all(u.grid is not None and u.grid.width <= pixels.UNION_TILE + 6 for u in plans)


def test_scene_window_across_crs_is_gdals(gf2: SceneRecord) -> None:
    # scene_window projects with a cached pyproj transformer; the window is GDAL's.
    tr = pyproj.Transformer.from_crs("EPSG:32615", "EPSG:26915", always_xy=True)
    x0, y0 = tr.transform(*ORIGIN)
    rng = np.random.default_rng(0)
    for _ in range(50):
        x, y = x0 + rng.uniform(-200, 1500), y0 - rng.uniform(-200, 1500)
        size = float(rng.choice([60.0, 120.0, 480.0]))
        bounds = (x, y - size, x + size, y)
        b = rasterio.warp.transform_bounds("EPSG:26915", gf2.crs, *bounds, densify_pts=21)
        win = from_bounds(*b, transform=Affine(*gf2.grid().transform))
        want = (
            math.floor(win.col_off + 1e-6),
            math.floor(win.row_off + 1e-6),
            round(win.width),
            round(win.height),
        )
        assert scene_window(gf2, bounds, "EPSG:26915") == want
