"""Anchor fallback: one unreadable anchor scene no longer drops every group it anchors; the
next-best image of the same ground anchors each of them, and the replacement is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import shapely
from describe_builders import build_scene, trusted_access
from distributed import Client

from terracorpus.catalogs.frames import scenes_to_frame
from terracorpus.curation.anchors import replace_lost_anchors
from terracorpus.curation.groups import ImageGroup, Member, groups_to_frame
from terracorpus.pipelines.chips import described_images
from terracorpus.pipelines.config import RunConfig
from terracorpus.pipelines.rundir import RunDir
from terracorpus.pipelines.stages.dedup import run_dedup
from terracorpus.pipelines.stages.describe import run_describe
from terracorpus.pipelines.stages.materialize import kept_groups

GF2, S2 = "gaofen-2-pms", "sentinel-2-l2a"
INSIDE = (500_000.0, 4_599_744.0, 500_256.0, 4_600_000.0)


def _group(gid: str, members: list[tuple[str, str, float]], bounds=INSIDE) -> ImageGroup:
    """A group of (scene id, sensor, days after the anchor); the first one anchors it."""
    when = datetime(2021, 6, 1, tzinfo=UTC)
    ms = tuple(
        Member(sid, sensor, when, gap, 1.0, 0.0, "anchor" if i == 0 else "member")
        for i, (sid, sensor, gap) in enumerate(members)
    )
    footprint = shapely.to_wkb(shapely.box(-93.0, 41.5, -92.99, 41.51))
    return ImageGroup(gid, members[0][0], members[0][1], "EPSG:32615", bounds, footprint,
                      (0, 0, 64, 64), 4.0, ms)  # fmt: skip


def _chip(gid: str, scene: str, sensor: str, gsd: float, cloud: float = 0.0) -> dict:
    return {
        "chip_id": f"{gid}/{scene}", "group_id": gid, "scene_id": scene, "sensor": sensor,
        "role": "member", "gsd": gsd, "nodata_fraction": 0.0, "cloud_fraction": cloud,
        "shadow_fraction": 0.0,
    }  # fmt: skip


def test_the_next_best_image_of_the_lost_anchors_sensor_takes_over() -> None:
    groups = [
        _group("a", [("lost", GF2, 0), ("s2", S2, 1), ("cloudy", GF2, 2), ("clear", GF2, 30)]),
        _group("b", [("ok", GF2, 0), ("s2", S2, 1)]),
        _group("c", [("lost", GF2, 0), ("s2x", S2, 3)]),  # none of its sensor left: S2 then
        _group("d", [("lost", GF2, 0), ("lost2", GF2, 5)]),  # nothing described at all
    ]
    chips = pd.DataFrame(
        [
            _chip("a", "s2", S2, 10.0),
            _chip("a", "cloudy", GF2, 4.0, cloud=0.5),
            _chip("a", "clear", GF2, 4.0),
            {**_chip("b", "ok", GF2, 4.0), "role": "anchor"},
            _chip("b", "s2", S2, 10.0),
            _chip("c", "s2x", S2, 10.0),
        ]
    )
    roles, replaced = replace_lost_anchors(described_images(chips), groups)
    out = chips.assign(role=roles)
    anchors = out[out["role"] == "anchor"].set_index("group_id")["scene_id"].to_dict()
    assert anchors == {"a": "clear", "b": "ok", "c": "s2x"}
    assert [(r.group_id, r.lost_scene_id, r.new_scene_id) for r in replaced] == [
        ("a", "lost", "clear"),
        ("c", "lost", "s2x"),
    ]
    assert (chips["role"] == "anchor").sum() == 1  # the input is not modified


def test_materialize_leads_with_the_new_anchor_and_leaves_the_lost_one_out() -> None:
    g = _group("a", [("lost", GF2, 0), ("s2", S2, 1), ("clear", GF2, 30)])
    selection = pd.DataFrame(
        {
            "chip_id": ["a/clear", "a/s2"],
            "group_id": ["a", "a"],
            "role": ["anchor", "member"],
            "cluster_id": [3, -1],
            "kept": [True, True],
        }
    )
    (k,) = kept_groups([g], selection)
    assert k.member_scenes == ("clear", "s2") and k.cluster_id == 3


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        yield c


def test_describe_reanchors_groups_of_an_unreadable_scene_and_records_it(
    tmp_path: Path, client: Client
) -> None:
    scenes = [build_scene(tmp_path, name) for name in ("broken", "good", "good2")]
    (tmp_path / "broken" / "MSS2.tif").unlink()  # the anchor of both groups cannot be read
    groups = [
        _group("g1", [("broken", GF2, 0), ("good", GF2, 3), ("good2", GF2, 9)]),
        _group("g2", [("broken", GF2, 0), ("good2", GF2, 9)]),
    ]
    scenes, access = trusted_access(scenes)
    cfg = RunConfig(run_dir=str(tmp_path / "run"), **access)
    run = RunDir(cfg.run_dir, cfg)
    run.write_table("scenes.parquet", scenes_to_frame(scenes), stage="search")
    run.write_table("groups.parquet", groups_to_frame(groups), stage="group")

    summary = run_describe(cfg, run, client)

    assert "2 groups re-anchored" in summary
    chips = pd.read_parquet(run.path("chips.parquet"))
    anchors = chips[chips["role"] == "anchor"].set_index("group_id")["scene_id"].to_dict()
    assert anchors == {"g1": "good", "g2": "good2"}
    fails = run.failures("describe")
    replaced = fails[fails["reason"] == "anchor_replaced"].set_index("key")
    assert set(replaced.index) == {"g1", "g2"}
    assert (
        "broken" in replaced.loc["g1", "detail"]
        and "scene_unreadable" in replaced.loc["g1", "detail"]
    )
    assert "good " in replaced.loc["g1", "detail"]
    # dedup clusters the new anchors: no group is lost as no_anchor
    run_dedup(cfg, run, None)
    selection = pd.read_parquet(run.path("selection.parquet"))
    assert "no_anchor" not in set(selection["reason"])
    assert set(selection.loc[selection["role"] == "anchor", "group_id"]) == {"g1", "g2"}


def test_unknown_gsd_ranks_last_and_unknown_quality_counts_as_usable() -> None:
    groups = [_group("a", [("lost", GF2, 0), ("nogsd", GF2, 1), ("hazy", GF2, 2)])]
    chips = pd.DataFrame(
        [
            {**_chip("a", "nogsd", GF2, float("nan")), "cloud_fraction": float("nan")},
            {**_chip("a", "hazy", GF2, 4.0, cloud=0.2), "shadow_fraction": float("nan")},
        ]
    )
    images = described_images(chips)
    assert images.unusable.tolist() == [0.0, 0.2]
    roles, replaced = replace_lost_anchors(images, groups)
    assert roles.tolist() == ["member", "anchor"] and replaced[0].new_scene_id == "hazy"
    assert chips["role"].tolist() == ["member", "member"]  # the input is not modified
