"""materialize keeps each image at its scene's native GSD, and reads finer grids fast.

The registry's NAIP GSD (0.6 m) is nominal; the demo world's NAIP is 1 m, like real NAIP in
many states and years. The corpus must hold those pixels as they are (DESIGN.md: "nothing is
resampled to a common pixel size"), not upsampled to 0.6 m (2.8x the pixels).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
import rasterio.warp
import shapely
import zarr
from describe_builders import trusted_access
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.windows import Window

from terracorpus.catalogs.frames import scenes_to_frame
from terracorpus.catalogs.scene import AssetRef, Grid, SceneRecord
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.curation import geometry as geo
from terracorpus.curation.groups import ImageGroup, Member, groups_to_frame
from terracorpus.curation.testing import make_scene
from terracorpus.pipelines.config import CorpusConfig, RunConfig
from terracorpus.pipelines.corpus import validate_corpus
from terracorpus.pipelines.pixels import ChipPixels, ChipRequest, read_scene_chips
from terracorpus.pipelines.rundir import RunDir
from terracorpus.pipelines.stages.materialize import (
    KeptGroup,
    chip_id,
    run_materialize,
    sensor_layouts,
)

CRS = "EPSG:26915"
X0, Y0 = 452_640.0, 4_655_040.0
SCENE_M, CHIP_M = 192.0, 96.0
NAIP = "naip"


def _naip_tif(path: Path, arr: np.ndarray, gsd: float) -> None:
    """A 4-band, pixel-interleaved, tiled GeoTIFF, laid out like NAIP."""
    profile = {
        "driver": "GTiff",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": "uint8",
        "crs": CRS,
        "transform": Affine(gsd, 0, X0, 0, -gsd, Y0),
        "tiled": True,
        "blockxsize": 64,
        "blockysize": 64,
        "interleave": "pixel",
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(arr)


def _naip_scene(tmp: Path, scene_id: str, gsd: float, rng: np.random.Generator) -> tuple:
    n = round(SCENE_M / gsd)
    arr = rng.integers(1, 255, size=(4, n, n), dtype="uint8")
    path = tmp / f"{scene_id}.tif"
    _naip_tif(path, arr, gsd)
    rec = make_scene(scene_id, NAIP, datetime(2023, 7, 1, tzinfo=UTC), CRS, (X0, Y0), SCENE_M)
    bands = tuple((b, AssetRef("image", str(path), i + 1)) for i, b in enumerate("RGBN"))
    rec = dataclasses.replace(
        rec,
        gsd=gsd,
        grids=((gsd, Grid((gsd, 0.0, X0, 0.0, -gsd, Y0), (n, n))),),
        bands=bands,
        qa=None,
    )
    return rec, arr


def _group(j: int, members: list[SceneRecord]) -> ImageGroup:
    bounds = (X0 + j * CHIP_M, Y0 - CHIP_M, X0 + (j + 1) * CHIP_M, Y0)
    fp = geo.crs_to_lonlat(np.array([shapely.box(*bounds)]), CRS, densify_m=50.0)[0]
    return ImageGroup(
        group_id=f"grp-{j}",
        anchor_scene_id=members[0].id,
        anchor_sensor=NAIP,
        crs=CRS,
        bounds=bounds,
        footprint_wkb=shapely.to_wkb(fp),
        window=(0, j * 96, 96, 96),
        gsd=members[0].gsd,
        members=tuple(
            Member(m.id, m.sensor, m.datetime, float(k), 1.0, 0.0, "anchor" if k == 0 else "member")
            for k, m in enumerate(members)
        ),
    )


def test_naip_is_written_at_its_native_gsd_with_the_source_pixels(tmp_path):
    rng = np.random.default_rng(5)
    a, arr_a = _naip_scene(tmp_path, "naip-a", 1.0, rng)
    b, arr_b = _naip_scene(tmp_path, "naip-b", 1.0, rng)
    groups = [_group(j, [a, b]) for j in range(2)]
    selection = pd.DataFrame(
        [
            {"chip_id": chip_id(g.group_id, m.scene_id), "group_id": g.group_id,
             "cluster_id": 0, "is_exemplar": True, "kept": True, "reason": ""}
            for g in groups
            for m in g.members
        ]
    )  # fmt: skip
    scenes, access = trusted_access([a, b])
    cfg = RunConfig(run_dir=str(tmp_path / "run"), corpus=CorpusConfig(shard_mb=1), **access)
    run = RunDir(cfg.run_dir, cfg)
    run.write_table("scenes.parquet", scenes_to_frame(scenes), stage="search")
    run.write_table("groups.parquet", groups_to_frame(groups), stage="group")
    run.write_table("selection.parquet", selection, stage="dedup")
    run_materialize(cfg, run)

    assert validate_corpus(run.root).ok
    root = zarr.open_group(run.root / "corpus.zarr", mode="r")
    sensor = root.attrs["terracorpus"]["sensors"][NAIP]
    assert builtin_registry().get(NAIP).gsd == 0.6  # the registry's nominal GSD ...
    assert sensor["gsd"] == 1.0 and sensor["chip_size"] == [96, 96]  # ... is not used
    assert [band["gsd"] for band in sensor["bands"]] == [1.0] * 4
    arrays = {"naip-a": arr_a, "naip-b": arr_b}
    ids = np.asarray(root[f"sensors/{NAIP}/image_id"][:]).astype(object).astype(str)
    assert len(ids) == 4
    for row, image_id in enumerate(ids):
        group, scene = image_id.split("/")
        j = int(group[-1])
        want = arrays[scene][:, :96, j * 96 : (j + 1) * 96]  # the source pixels, untouched
        np.testing.assert_array_equal(root[f"sensors/{NAIP}/pixels"][row], want)
        assert root[f"sensors/{NAIP}/gsd"][row] == 1.0
        assert tuple(root[f"sensors/{NAIP}/transform"][row]) == (1.0, 0, X0 + j * 96, 0, -1.0, Y0)


def test_mixed_native_gsds_of_one_sensor_use_the_finest_and_warn(tmp_path, caplog):
    rng = np.random.default_rng(6)
    fine, _ = _naip_scene(tmp_path, "naip-fine", 0.6, rng)
    coarse, _ = _naip_scene(tmp_path, "naip-coarse", 1.0, rng)
    kept = [KeptGroup(_group(0, [coarse, fine]), [coarse.id, fine.id], 0)]
    with caplog.at_level(logging.WARNING):
        layouts = sensor_layouts(kept, {s.id: s for s in (fine, coarse)}, builtin_registry())
    assert layouts[NAIP].gsd == 0.6 and layouts[NAIP].chip_shape == (160, 160)
    assert "native GSDs {0.6: 1, 1.0: 1}" in caplog.text


def test_sentinel2_layout_keeps_its_coarser_band_gsds():
    s2 = builtin_registry().get("sentinel-2-l2a")
    rec = make_scene("s2", s2.name, datetime(2023, 7, 1, tzinfo=UTC), "EPSG:32615", (X0, Y0), 960.0)
    layouts = sensor_layouts(
        [KeptGroup(_group(0, [rec]), [rec.id], 0)], {rec.id: rec}, builtin_registry()
    )
    lay = layouts[s2.name]
    assert lay.gsd == 10.0 and lay.chip_shape == (96, 96)  # the group is 960 m
    assert [band["gsd"] for band in lay.bands] == [b.gsd for b in s2.bands]


@pytest.mark.parametrize("offset", [0.0, 0.25, 1.0 / 3.0])  # no cell centre on a pixel edge
def test_nearest_read_onto_a_finer_grid_matches_gdal_and_the_pixel_centre_rule(tmp_path, offset):
    # 1 m pixels onto a 0.6 m grid whose corner sits off the raster's pixel edges.
    rng = np.random.default_rng(7)
    scene, arr = _naip_scene(tmp_path, "naip-up", 1.0, rng)
    sensor = builtin_registry().get(NAIP)
    x0, y0 = X0 + 10.0 + offset, Y0 - 20.0 - offset
    req = ChipRequest("c", (x0, y0 - 30.0, x0 + 30.0, y0), CRS, 0.6)
    chip = read_scene_chips(scene, sensor, [req], resampling="nearest", use_overviews=False)[0]
    assert isinstance(chip, ChipPixels) and chip.pixels.shape == (4, 50, 50)
    centres = np.arange(50) + 0.5
    cols = np.floor(x0 - X0 + centres * 0.6).astype(int)
    rows = np.floor(Y0 - y0 + centres * 0.6).astype(int)
    np.testing.assert_array_equal(chip.pixels, arr[:, rows[:, None], cols[None, :]])
    with rasterio.open(scene.asset("R").href) as ds:  # GDAL's own nearest upsampling
        win = Window(x0 - X0, Y0 - y0, 30.0, 30.0)
        gdal = ds.read(window=win, out_shape=(4, 50, 50), resampling=Resampling.nearest)
    np.testing.assert_array_equal(chip.pixels, gdal)


def test_nearest_warp_across_utm_zones_matches_gdal_and_fills_nodata(tmp_path):
    # A 1 m raster in zone 15 (NAD83) read onto a chip grid in zone 14 (WGS84), as a member
    # of a group whose anchor lies across the zone boundary.
    rng = np.random.default_rng(8)
    scene, arr = _naip_scene(tmp_path, "naip-warp", 1.0, rng)
    path = scene.asset("R").href
    with rasterio.open(path, "r+") as ds:  # a nodata corner, as at a swath edge
        ds.nodata = 0
        arr[:, :40, :40] = 0
        ds.write(arr)
    sensor = builtin_registry().get(NAIP)

    to14 = pyproj.Transformer.from_crs(CRS, "EPSG:32614", always_xy=True)
    cx, cy = to14.transform(X0 + 60.0, Y0 - 60.0)
    bounds = (cx - 48.0, cy - 48.0, cx + 48.0, cy + 48.0)
    req = ChipRequest("w", bounds, "EPSG:32614", 1.0)
    chip = read_scene_chips(scene, sensor, [req], resampling="nearest", use_overviews=False)[0]
    assert isinstance(chip, ChipPixels) and chip.pixels.shape == (4, 96, 96)
    want = np.zeros((4, 96, 96), dtype="uint8")
    with rasterio.open(path) as ds:
        for k in range(4):
            rasterio.warp.reproject(
                rasterio.band(ds, k + 1),
                want[k],
                dst_transform=Affine(1.0, 0, bounds[0], 0, -1.0, bounds[3]),
                dst_crs="EPSG:32614",
                dst_nodata=0,
                resampling=Resampling.nearest,
            )
    same = (chip.pixels == want).mean()
    assert same > 0.995, same  # GDAL's approximate transformer may differ at a few edges
    assert chip.nodata.any() and (chip.pixels[:, chip.nodata] == 0).all()
    assert not chip.nodata[-1, -1] and chip.pixels[:, -1, -1].all()
