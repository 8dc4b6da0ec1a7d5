"""`curate --plan`: the estimate from the search results and a measured sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from terracorpus.catalogs.frames import scenes_from_frame
from terracorpus.catalogs.server import StacServer
from terracorpus.catalogs.world.testing import tiny_world
from terracorpus.curation.groups import GroupParams, build_groups
from terracorpus.pipelines.cli import main
from terracorpus.pipelines.curate import curate
from terracorpus.pipelines.demo import PRESETS, demo_run_config
from terracorpus.pipelines.plan import make_plan
from terracorpus.pipelines.rundir import RunDir

pytestmark = pytest.mark.integration


def test_plan_estimates_every_stage_from_a_sample(tmp_path: Path) -> None:
    world = tiny_world(tmp_path / "worlds")
    with StacServer([world.out]) as server:
        cfg = demo_run_config(world, server.url, tmp_path / "run", PRESETS["tiny"])
        curate(cfg, until="search", echo=lambda s: None)
        run = RunDir(cfg.run_dir, cfg)
        plan = make_plan(cfg, run, tiles=2, batches=2)
        cfg_file = tmp_path / "run.yaml"
        cfg_file.write_text(json.dumps(cfg.model_dump(mode="json")))
        res = CliRunner().invoke(main, ["curate", str(cfg_file), "--plan"])
    assert res.exit_code == 0, res.output
    assert "describe" in res.output and "materialize" in res.output and "total" in res.output
    scenes = scenes_from_frame(run.read_table("scenes.parquet", needed_by="test"))
    true = len(build_groups(scenes, GroupParams(chip_size_m=cfg.group.chip_size_m)))
    assert [s.stage for s in plan.stages] == ["group", "describe", "dedup", "materialize"]
    assert true / 3 <= plan.groups <= true * 3  # scaled from 2 of the tiles
    assert plan.images >= plan.groups
    assert all(s.tasks >= 1 and s.wall_s >= 0 for s in plan.stages)
    assert plan.stages[1].read_bytes > 0 and plan.stages[3].read_bytes > plan.stages[1].read_bytes
    stored = json.loads(run.path("plan.json").read_text())  # the CLI's plan (3 tiles)
    assert stored["groups"] > 0 and [s["stage"] for s in stored["stages"]] == [
        "group",
        "describe",
        "dedup",
        "materialize",
    ]
    assert not run.path("groups.parquet").exists()  # the plan writes nothing else
