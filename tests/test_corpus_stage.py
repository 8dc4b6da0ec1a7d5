"""materialize on real GeoTIFF scenes: kept groups only, pixels equal the source windows."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import zarr
from click.testing import CliRunner
from describe_builders import trusted_access
from rasterio.transform import Affine

from terracorpus.catalogs.frames import scenes_to_frame
from terracorpus.catalogs.scene import AssetRef, SceneRecord
from terracorpus.curation import geometry as geo
from terracorpus.curation.groups import ImageGroup, Member, groups_to_frame
from terracorpus.curation.testing import make_scene
from terracorpus.pipelines.cli import main
from terracorpus.pipelines.config import CorpusConfig, RunConfig
from terracorpus.pipelines.corpus import validate_corpus
from terracorpus.pipelines.rundir import RunDir
from terracorpus.pipelines.stages.materialize import chip_id, run_materialize

CRS = "EPSG:32615"
X0, Y0 = 499_980.0, 4_000_020.0
SCENE_M, CHIP_M = 960.0, 480.0
S2, LS = "sentinel-2-l2a", "landsat-oli-c2-l2"


def _write_tif(path: Path, arr: np.ndarray, gsd: float, nodata: float | None = 0) -> None:
    profile = {
        "driver": "GTiff",
        "width": arr.shape[1],
        "height": arr.shape[0],
        "count": 1,
        "dtype": str(arr.dtype),
        "crs": CRS,
        "transform": Affine(gsd, 0, X0, 0, -gsd, Y0),
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 16,
        "blockysize": 16,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(arr, 1)


def _scene(tmp: Path, scene_id: str, sensor: str, day: int, rng) -> tuple[SceneRecord, dict]:
    rec = make_scene(scene_id, sensor, datetime(2024, 5, day, tzinfo=UTC), CRS, (X0, Y0), SCENE_M)
    arrays = {}
    bands = []
    for name, _ref in rec.bands:
        gsd = _band_gsd(sensor, name)
        n = round(SCENE_M / gsd)
        arr = rng.integers(100, 5000, size=(n, n), dtype="uint16")
        path = tmp / f"{scene_id}-{name}.tif"
        _write_tif(path, arr, gsd)
        arrays[name] = arr
        bands.append((name, AssetRef(key=name, href=str(path))))
    qa_gsd = 20.0 if sensor == S2 else 30.0
    n = round(SCENE_M / qa_gsd)
    qa = np.full((n, n), 4 if sensor == S2 else 1 << 6, dtype="uint16")  # vegetation / clear
    qa[: n // 4, : n // 4] = 9 if sensor == S2 else (1 << 3)  # a cloud in the top-left chip
    qa_path = tmp / f"{scene_id}-qa.tif"
    _write_tif(qa_path, qa, qa_gsd, nodata=None)
    arrays["qa"] = qa
    rec = dataclasses.replace(rec, bands=tuple(bands), qa=AssetRef(key="qa", href=str(qa_path)))
    return rec, arrays


def _band_gsd(sensor: str, name: str) -> float:
    from terracorpus.catalogs.sensors import builtin_registry

    return builtin_registry().get(sensor).band(name).gsd


def _group(i: int, j: int, members: list[SceneRecord]) -> ImageGroup:
    minx, maxy = X0 + j * CHIP_M, Y0 - i * CHIP_M
    bounds = (minx, maxy - CHIP_M, minx + CHIP_M, maxy)
    fp = geo.crs_to_lonlat(np.array([shapely.box(*bounds)]), CRS, densify_m=100.0)[0]
    anchor = members[0]
    return ImageGroup(
        group_id=f"grp-{i}{j}",
        anchor_scene_id=anchor.id,
        anchor_sensor=anchor.sensor,
        crs=CRS,
        bounds=bounds,
        footprint_wkb=shapely.to_wkb(fp),
        window=(i * 48, j * 48, 48, 48),
        gsd=10.0,
        members=tuple(
            Member(m.id, m.sensor, m.datetime, float(k), 1.0, 5.0, "anchor" if k == 0 else "member")
            for k, m in enumerate(members)
        ),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(3)
    a, arr_a = _scene(tmp, "s2-a", S2, 3, rng)
    b, arr_b = _scene(tmp, "s2-b", S2, 20, rng)
    ls, arr_l = _scene(tmp, "ls-a", LS, 9, rng)
    groups = [_group(i, j, [a, b, ls]) for i in range(2) for j in range(2)]
    rows = []
    for g in groups:
        for m in g.members:
            kept = g.group_id != "grp-11" and not (g.group_id == "grp-01" and m.scene_id == "s2-b")
            rows.append(
                {
                    "chip_id": chip_id(g.group_id, m.scene_id),
                    "group_id": g.group_id,
                    "cluster_id": int(g.group_id[-1]),
                    "is_exemplar": m.role == "anchor",
                    "kept": kept,
                    "reason": "" if kept else "duplicate",
                }
            )
    return {
        "scenes": [a, b, ls],
        "arrays": {"s2-a": arr_a, "s2-b": arr_b, "ls-a": arr_l},
        "groups": groups,
        "selection": pd.DataFrame(rows),
    }


def _run_dir(tmp_path: Path, world) -> tuple[RunConfig, RunDir]:
    scenes, access = trusted_access(world["scenes"])
    cfg = RunConfig(run_dir=str(tmp_path / "run"), corpus=CorpusConfig(shard_mb=0.2), **access)
    run = RunDir(cfg.run_dir, cfg)
    run.write_table("scenes.parquet", scenes_to_frame(scenes), stage="search")
    run.write_table("groups.parquet", groups_to_frame(world["groups"]), stage="group")
    run.write_table("selection.parquet", world["selection"], stage="dedup")
    return cfg, run


def _expected(world, scene: str, sensor: str, group: str) -> np.ndarray:
    """The chip straight from the source arrays (coarser bands repeated: nearest neighbour)."""
    i, j = int(group[-2]), int(group[-1])
    from terracorpus.catalogs.sensors import builtin_registry

    sens = builtin_registry().get(sensor)
    out = []
    for band in sens.bands:
        arr = world["arrays"][scene][band.name]
        f = band.gsd / sens.gsd
        n = round(CHIP_M / sens.gsd)
        full = np.repeat(np.repeat(arr, int(f), 0), int(f), 1) if f == int(f) else None
        if full is None:  # 60 m bands on a 10 m grid: index the nearest source pixel
            idx = np.floor((np.arange(round(SCENE_M / sens.gsd)) + 0.5) / f).astype(int)
            full = arr[np.ix_(idx, idx)]
        out.append(full[i * n : (i + 1) * n, j * n : (j + 1) * n])
    return np.stack(out)


def test_materialize_writes_kept_groups_with_source_pixels(world, tmp_path):
    cfg, run = _run_dir(tmp_path, world)
    summary = run_materialize(cfg, run)
    assert "3 groups" in summary
    report = validate_corpus(run.root)
    assert report.ok, report.problems
    root = zarr.open_group(run.root / "corpus.zarr", mode="r")
    gids = list(np.asarray(root["groups/group_id"][:]).astype(object).astype(str))
    assert gids == ["grp-00", "grp-01", "grp-10"]  # grp-11's anchor chip was dropped
    ids = {
        s: list(np.asarray(root[f"sensors/{s}/image_id"][:]).astype(object).astype(str))
        for s in (S2, LS)
    }
    assert "grp-01/s2-b" not in ids[S2] and "grp-00/s2-b" in ids[S2]  # dropped member left out
    assert root[f"sensors/{S2}/pixels"].shape[1:] == (12, 48, 48)
    assert root[f"sensors/{LS}/pixels"].shape[1:] == (7, 16, 16)
    for sensor in (S2, LS):
        for row, image_id in enumerate(ids[sensor]):
            group, scene = image_id.split("/")
            got = root[f"sensors/{sensor}/pixels"][row]
            np.testing.assert_array_equal(got, _expected(world, scene, sensor, group))
            t = root[f"sensors/{sensor}/transform"][row]
            i, j = int(group[-2]), int(group[-1])
            assert tuple(t) == pytest.approx((t[0], 0, X0 + j * CHIP_M, 0, -t[0], Y0 - i * CHIP_M))
    # the cloud sits in the top-left quarter of each scene: all of grp-00's first quarter
    row = ids[S2].index("grp-00/s2-a")
    valid = root[f"sensors/{S2}/valid"][row]
    assert valid[:24, :24].sum() == 0 and valid[24:, 24:].all()
    assert root[f"sensors/{S2}/chip_cloud"][row] == pytest.approx(0.25)
    assert root[f"sensors/{S2}/chip_cloud"][ids[S2].index("grp-10/s2-a")] == 0
    meta = root.attrs["terracorpus"]
    assert meta["complete"] and meta["config_hash"] == run.config_hash
    manifest = pd.read_parquet(run.root / "manifest.parquet")
    assert set(manifest["source_item"]) == {"s2-a", "s2-b", "ls-a"}
    assert set(manifest["cluster_id"]) == {0, 1}


def test_materialize_appends_a_later_run(world, tmp_path):
    cfg, run = _run_dir(tmp_path, world)
    first = world["selection"].copy()
    first.loc[first["group_id"] != "grp-00", "kept"] = False
    run.write_table("selection.parquet", first, stage="dedup")
    run_materialize(cfg, run)
    run.write_table("selection.parquet", world["selection"], stage="dedup")
    summary = run_materialize(cfg, run, append_to=str(run.root))
    assert "3 groups" in summary  # grp-00 is not added twice
    assert validate_corpus(run.root).ok
    root = zarr.open_group(run.root / "corpus.zarr", mode="r")
    assert list(np.asarray(root["groups/group_id"][:]).astype(object).astype(str)) == [
        "grp-00",
        "grp-01",
        "grp-10",
    ]


@pytest.mark.integration
def test_materialize_cli_on_a_dask_cluster(world, tmp_path):
    _, run = _run_dir(tmp_path, world)
    res = CliRunner().invoke(main, ["materialize", "--run-dir", str(run.root), "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert "3 groups" in res.output
    assert validate_corpus(run.root).ok
    timings = json.loads((run.root / "timings.json").read_text())
    assert "materialize" in timings


def test_rerunning_materialize_rebuilds_the_run_directorys_corpus(world, tmp_path):
    cfg, run = _run_dir(tmp_path, world)
    run_materialize(cfg, run)
    fewer = world["selection"].copy()
    fewer.loc[fewer["group_id"] == "grp-10", "kept"] = False
    run.write_table("selection.parquet", fewer, stage="dedup")
    assert "2 groups" in run_materialize(cfg, run)
    assert validate_corpus(run.root).ok
    assert not (run.root / "corpus.zarr.old").exists()
    assert not (run.root / "corpus.zarr.partial").exists()
