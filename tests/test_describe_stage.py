"""The describe stage on a real LocalCluster: the tiny demo world, HTTP, resume, a killed
worker, bad input and strict mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.warp
import shapely
from affine import Affine
from describe_builders import build_scene, trusted_access
from distributed import Client

from terracorpus.catalogs.frames import scenes_to_frame
from terracorpus.catalogs.parse import scene_from_item
from terracorpus.catalogs.scene import AssetRef, SceneRecord
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.catalogs.world import atmosphere as atm
from terracorpus.catalogs.world.testing import tiny_world
from terracorpus.catalogs.world.truth import cloud_truth_path
from terracorpus.curation.descriptors import descriptor_names
from terracorpus.curation.groups import (
    GroupParams,
    ImageGroup,
    Member,
    build_groups,
    groups_to_frame,
)
from terracorpus.pipelines.chips import read_chip_table
from terracorpus.pipelines.cluster import dask_client
from terracorpus.pipelines.config import DaskConfig, DescribeConfig, RunConfig
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.rundir import RunDir
from terracorpus.pipelines.stages.describe import (
    SCHEMA,
    describe_batch,
    descriptor_layout,
    plan_batches,
    run_describe,
)
from terracorpus.pipelines.tables import partition_count
from terracorpus.pipelines.testing.httpserve import RangeServer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tiny_world(tmp_path_factory.getbasetemp()).out)


@pytest.fixture(scope="module")
def scenes(world: Path) -> list[SceneRecord]:
    reg = builtin_registry()
    return [
        scene_from_item(json.loads(p.read_text()), reg)
        for p in sorted(world.glob("items/*/*.json"))
    ]


@pytest.fixture(scope="module")
def groups(scenes: list[SceneRecord]) -> list[ImageGroup]:
    return build_groups(scenes, GroupParams())


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with dask_client(DaskConfig(workers=2), quiet=True) as c:
        yield c


def _run_dir(
    root: Path, scenes: list[SceneRecord], groups: list[ImageGroup], **describe: Any
) -> RunDir:
    scenes, access = trusted_access(scenes)
    cfg = RunConfig(run_dir=str(root), describe=describe, **access)
    run = RunDir(root, cfg)
    run.write_table("scenes.parquet", scenes_to_frame(scenes), stage="search")
    run.write_table("groups.parquet", groups_to_frame(groups), stage="group")
    return run


def _chips(run: RunDir) -> pd.DataFrame:
    """chips.parquet in chip order (it is stored a describe batch per row group)."""
    chips = pd.read_parquet(run.path("chips.parquet"))
    return chips.sort_values("chip_id", kind="stable").reset_index(drop=True)


def _subset(reference: pd.DataFrame, groups: list[ImageGroup]) -> pd.DataFrame:
    ids = {g.group_id for g in groups}
    return reference[reference["group_id"].isin(ids)].reset_index(drop=True)


def _assert_same_chips(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a["chip_id"]) == list(b["chip_id"])
    pd.testing.assert_frame_equal(
        a.drop(columns=["descriptor", "window"]), b.drop(columns=["descriptor", "window"])
    )
    np.testing.assert_array_equal(np.stack(a["descriptor"]), np.stack(b["descriptor"]))


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory,
    scenes: list[SceneRecord],
    groups: list[ImageGroup],
    client: Client,
) -> pd.DataFrame:
    run = _run_dir(tmp_path_factory.mktemp("ref"), scenes, groups)
    summary = run_describe(run.config, run, client)
    assert "0 failed" in summary
    return _chips(run)


def test_chips_table_schema_and_layout(
    reference: pd.DataFrame, groups: list[ImageGroup], tmp_path_factory: pytest.TempPathFactory
) -> None:
    want = sorted(f"{g.group_id}/{m.scene_id}" for g in groups for m in g.members)
    assert list(reference["chip_id"]) == want
    assert list(reference.columns) == SCHEMA.names
    assert set(reference["role"]) == {"anchor", "member"}
    vecs = np.stack(reference["descriptor"])
    assert vecs.shape == (len(want), len(descriptor_names())) and np.isfinite(vecs).all()
    s2 = reference[reference["sensor"] == "sentinel-2-l2a"]
    # 960 m chips on a 16 px descriptor grid: 60 m, from the coarsest overview at most 60 m
    # (40 m where the scene has one; the tiny world's small scenes stop at 20 m)
    assert (s2["read_gsd"] == 60.0).all() and (s2["overview_level"] >= 0).any()
    assert set(s2["overview_level"]) <= {-1, 0, 1}


def test_chips_table_is_a_row_group_per_batch(
    tmp_path: Path,
    scenes: list[SceneRecord],
    groups: list[ImageGroup],
    client: Client,
    reference: pd.DataFrame,
) -> None:
    run = _run_dir(tmp_path, scenes, groups, batch_size=3)
    summary = run_describe(run.config, run, client)
    n_batches = int(summary.split(" in ")[-1].split()[0])
    path = run.path("chips.parquet")
    assert partition_count(path) == n_batches == run.table_meta("chips.parquet")["partitions"]
    parts = list(run.iter_table("chips.parquet", needed_by="test", columns=["chip_id", "scene_id"]))
    assert all(p["scene_id"].nunique() == 1 and 1 <= len(p) <= 3 for p in parts)
    # streamed, the table is the one a single batch per scene gives, in chip order
    _assert_same_chips(_chips(run), reference)
    table = read_chip_table(run, needed_by="test")
    assert list(table.chip_id) == list(reference["chip_id"])
    np.testing.assert_array_equal(table.descriptor, np.stack(reference["descriptor"]))


def test_descriptor_names_are_in_the_parquet_metadata(
    tmp_path: Path, scenes: list[SceneRecord], groups: list[ImageGroup], client: Client
) -> None:
    run = _run_dir(tmp_path, scenes, groups[:2])
    run_describe(run.config, run, client)
    names, parts = descriptor_layout(run.path("chips.parquet"))
    assert names == list(descriptor_names())
    assert parts["spec"][0] == 0 and parts["meta"][1] == len(names)


def _truth_cloud(world: Path, scene: SceneRecord, bounds: tuple[float, ...], crs: str) -> float:
    with rasterio.open(cloud_truth_path(world, scene.collection, scene.id)) as src:
        g = src.res[0]
        w, h = round((bounds[2] - bounds[0]) / g), round((bounds[3] - bounds[1]) / g)
        codes = np.zeros((h, w), np.uint8)
        rasterio.warp.reproject(
            rasterio.band(src, 1),
            codes,
            dst_transform=Affine(g, 0, bounds[0], 0, -g, bounds[3]),
            dst_crs=crs,
            resampling=rasterio.warp.Resampling.nearest,
        )
    valid = codes != atm.NODATA
    return float(np.isin(codes, atm.CLOUD_CODES)[valid].mean()) if valid.any() else 0.0


def test_cloud_fraction_agrees_with_the_world_truth(
    world: Path, reference: pd.DataFrame, scenes: list[SceneRecord], groups: list[ImageGroup]
) -> None:
    by_id = {s.id: s for s in scenes}
    by_group = {g.group_id: g for g in groups}
    errors = []
    for row in reference.itertuples():
        scene = by_id[row.scene_id]
        if scene.sensor == "naip":
            continue
        g = by_group[row.group_id]
        errors.append(abs(row.cloud_fraction - _truth_cloud(world, scene, g.bounds, g.crs)))
    assert len(errors) > 20
    assert max(errors) < 0.05, sorted(errors)[-5:]
    assert (reference["cloud_fraction"] > 0.1).any()  # the check is not all clear chips


def test_describe_through_a_range_http_server(
    world: Path,
    tmp_path: Path,
    scenes: list[SceneRecord],
    groups: list[ImageGroup],
    reference: pd.DataFrame,
    client: Client,
) -> None:
    with RangeServer(world) as server:

        def remote(ref: AssetRef) -> AssetRef:
            return replace(ref, href=server.url(Path(ref.href).relative_to(world)))

        served = [
            replace(s, bands=tuple((n, remote(r)) for n, r in s.bands), qa=s.qa and remote(s.qa))
            for s in scenes
        ]
        run = _run_dir(tmp_path, served, groups)
        run_describe(run.config, run, client)
        assert server.bytes_sent > 0 and len(server.requests) > 0
    _assert_same_chips(_chips(run), reference)


def test_resume_after_killing_the_command(
    tmp_path: Path,
    scenes: list[SceneRecord],
    groups: list[ImageGroup],
    reference: pd.DataFrame,
    client: Client,
) -> None:
    groups = groups[:6]
    reference = _subset(reference, groups)
    run = _run_dir(tmp_path, scenes, groups, batch_size=1)
    scratch = run.scratch("describe")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "terracorpus.pipelines.cli",
            "describe",
            "--run-dir",
            str(tmp_path),
            "--workers",
            "1",
        ],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while len(list(scratch.glob("batch-*.parquet"))) < 5 and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in scratch.glob("batch-*.parquet")}
    assert 5 <= len(finished) < len(reference) and not run.path("chips.parquet").exists()
    run_describe(run.config, run, client)
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # not redone
    _assert_same_chips(_chips(run), reference)


def test_killed_worker_loses_and_duplicates_nothing(
    tmp_path: Path,
    scenes: list[SceneRecord],
    groups: list[ImageGroup],
    reference: pd.DataFrame,
    client: Client,
) -> None:
    groups = groups[:6]
    reference = _subset(reference, groups)
    run = _run_dir(tmp_path, scenes, groups, batch_size=1)
    scratch = run.scratch("describe")
    killed: list[int] = []

    def kill_one_worker() -> None:
        while not list(scratch.glob("batch-*.parquet")):
            time.sleep(0.01)
        pid = next(iter(client.run(os.getpid).values()))
        os.kill(pid, signal.SIGKILL)
        killed.append(len(list(scratch.glob("batch-*.parquet"))))

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    run_describe(run.config, run, client)
    killer.join(timeout=10)
    assert killed and killed[0] < len(reference)  # killed mid-run
    chips = _chips(run)
    assert chips["chip_id"].is_unique
    _assert_same_chips(chips, reference)
    assert run.failures("describe").empty


def _gf2_group(
    gid: str, scene_ids: list[str], bounds: tuple[float, float, float, float]
) -> ImageGroup:
    when = datetime(2021, 6, 1, tzinfo=UTC)
    members = tuple(
        Member(sid, "gaofen-2-pms", when, 0.0, 1.0, 0.0, "anchor" if i == 0 else "member")
        for i, sid in enumerate(scene_ids)
    )
    footprint = shapely.to_wkb(shapely.box(-93.0, 41.5, -92.99, 41.51))
    return ImageGroup(
        gid,
        scene_ids[0],
        "gaofen-2-pms",
        "EPSG:32615",
        bounds,
        footprint,
        (0, 0, 64, 64),
        4.0,
        members,
    )


@pytest.fixture(scope="module")
def bad_world(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[SceneRecord], list[ImageGroup]]:
    root = tmp_path_factory.mktemp("bad")
    good, missing, qa_bad, err404, err500 = (
        build_scene(root, name) for name in ("good", "missing", "qabad", "e404", "e500")
    )
    (root / "missing" / "MSS2.tif").unlink()
    from describe_builders import write_cog

    write_cog(
        root / "qabad" / "qa.tif",
        np.full((1, 50, 384), 4, np.uint8),
        Affine(4, 0, 500_000, 0, -4, 4_600_000),
        "EPSG:32615",
        None,
    )
    scenes = [good, missing, qa_bad, err404, err500]
    inside = (500_000.0, 4_599_744.0, 500_256.0, 4_600_000.0)
    outside = (600_000.0, 4_599_744.0, 600_256.0, 4_600_000.0)
    groups = [
        _gf2_group("g-in", ["good", "missing", "qabad", "e404", "e500"], inside),
        _gf2_group("g-out", ["good"], outside),
    ]
    return root, scenes, groups


def test_bad_input_goes_to_the_failure_table(
    bad_world: Any, tmp_path: Path, client: Client
) -> None:
    root, scenes, groups = bad_world
    with RangeServer(root) as server:
        served = []
        for s in scenes:
            if s.id in ("e404", "e500"):
                server.fail(f"{s.id}/MSS1.tif", int(s.id[1:]))
                s = replace(
                    s,
                    bands=tuple(
                        (n, replace(r, href=server.url(f"{s.id}/{n}.tif"))) for n, r in s.bands
                    ),
                )
            served.append(s)
        run = _run_dir(tmp_path, served, groups)
        summary = run_describe(run.config, run, client)
    assert "1 chips described, 5 failed" in summary
    assert list(_chips(run)["chip_id"]) == ["g-in/good"]
    fails = run.failures("describe").set_index("key")
    assert fails.loc["g-in/missing", "reason"] == "scene_unreadable"
    assert fails.loc["g-in/missing", "kind"] == "scene"
    assert "MSS2.tif" in fails.loc["g-in/missing", "detail"]
    assert fails.loc["g-in/qabad", "reason"] == "qa_shape"
    assert "404" in fails.loc["g-in/e404", "detail"] and "500" in fails.loc["g-in/e500", "detail"]
    assert fails.loc["g-out/good", "reason"] == "outside"


def test_strict_mode_stops_with_a_clear_message(
    bad_world: Any, tmp_path: Path, client: Client
) -> None:
    _, scenes, groups = bad_world
    run = _run_dir(tmp_path, scenes[:2], [_gf2_group("g", ["good", "missing"], groups[0].bounds)])
    strict = run.config.model_copy(update={"strict": True})
    with pytest.raises(
        StageError,
        match=r"describe failed on scene g/missing: scene_unreadable: .*MSS2\.tif.*strict",
    ):
        run_describe(strict, run, client)
    assert not run.path("chips.parquet").exists()


def test_full_resolution_reads_naip_at_its_own_grid_not_the_registry_gsd(tmp_path: Path) -> None:
    # The registry's NAIP GSD is 0.6 m; a scene delivered at 1 m must be read at 1 m.
    naip = builtin_registry().get("naip")
    scene = build_scene(tmp_path, "n1m", sensor=naip, size_m=256.0, gsd_scale=1 / 0.6)
    scene = replace(scene, bands=tuple((n, replace(r, band_index=1)) for n, r in scene.bands))
    assert scene.gsd == pytest.approx(1.0) and naip.bands[0].gsd == pytest.approx(0.6)
    x0, y0 = 500_000.0, 4_600_000.0
    when = datetime(2021, 6, 1, tzinfo=UTC)
    footprint = shapely.to_wkb(shapely.box(-93.0, 41.5, -92.99, 41.51))
    group = ImageGroup(
        "g", scene.id, "naip", "EPSG:32615", (x0, y0 - 128.0, x0 + 128.0, y0), footprint,
        (0, 0, 128, 128), 1.0, (Member(scene.id, "naip", when, 0.0, 1.0, None, "anchor"),),
    )  # fmt: skip
    cfg = DescribeConfig(full_resolution=True)
    (batch,) = plan_batches([group], [scene], builtin_registry(), cfg, tmp_path)
    assert batch.read_gsd == pytest.approx(1.0)
    result = describe_batch(batch)
    assert result.rows == 1 and not result.failures
    row = pd.read_parquet(batch.path).iloc[0]
    assert row["read_gsd"] == pytest.approx(1.0) and row["overview_level"] == -1
    assert list(row["window"]) == [0, 0, 128, 128]
