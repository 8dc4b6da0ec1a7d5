"""materialize on the demo world: labels from its truth, read back by the training reader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from click.testing import CliRunner
from describe_builders import trusted_access

from terracorpus.catalogs.frames import scenes_to_frame
from terracorpus.catalogs.parse import scene_from_item
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.catalogs.world import read_truth
from terracorpus.catalogs.world.testing import tiny_world
from terracorpus.curation.groups import GroupParams, build_groups, groups_to_frame
from terracorpus.pipelines.cli import main
from terracorpus.pipelines.config import CorpusConfig, RunConfig
from terracorpus.pipelines.corpus import validate_corpus
from terracorpus.pipelines.corpus.labels import WorldLabeller
from terracorpus.pipelines.rundir import RunDir
from terracorpus.pipelines.stages.materialize import chip_id, run_materialize

N_GROUPS = 10


def _world_run(tmp_path_factory, world, name: str) -> RunDir:
    """A run directory holding the first S2-anchored groups of the tiny world, all kept."""
    reg = builtin_registry()
    items = sorted(Path(world.out, "items").rglob("*.json"))
    scenes = [scene_from_item(json.loads(p.read_text()), reg) for p in items]
    groups = build_groups(scenes, GroupParams(chip_size_m=480.0))
    groups = [g for g in groups if g.anchor_sensor == "sentinel-2-l2a"][:N_GROUPS]
    selection = pd.DataFrame(
        [
            {"chip_id": chip_id(g.group_id, m.scene_id), "group_id": g.group_id,
             "cluster_id": i % 3, "is_exemplar": True, "kept": True, "reason": ""}
            for i, g in enumerate(groups)
            for m in g.members
        ]
    )  # fmt: skip
    scenes, access = trusted_access(scenes)
    run_dir = str(tmp_path_factory.mktemp(name))
    cfg = RunConfig(run_dir=run_dir, corpus=CorpusConfig(shard_mb=2), **access)
    run = RunDir(cfg.run_dir, cfg)
    run.write_table("scenes.parquet", scenes_to_frame(scenes), stage="search")
    run.write_table("groups.parquet", groups_to_frame(groups), stage="group")
    run.write_table("selection.parquet", selection, stage="dedup")
    return run


@pytest.fixture(scope="module")
def world_corpus(tmp_path_factory) -> tuple[Path, Path]:
    world = tiny_world(tmp_path_factory.getbasetemp())
    run = _world_run(tmp_path_factory, world, "wrun")
    run_materialize(run.config, run, labeller=WorldLabeller(str(world.out)))
    return run.root, Path(world.out)


@pytest.mark.integration
def test_world_corpus_validates_and_carries_truth_labels(world_corpus):
    corpus, world_dir = world_corpus
    assert validate_corpus(corpus).ok
    root = zarr.open_group(corpus / "corpus.zarr", mode="r")
    s2 = root["sensors/sentinel-2-l2a"]
    labels = np.asarray(s2["label"][:])
    assert (labels >= 1).all()  # every chip lies inside the truth (class 0 is its nodata)
    for row in range(0, len(labels), 7):
        a, _, x0, _, e, y0 = s2["transform"][row]
        h, w = s2["pixels"].shape[2:]
        truth = read_truth(world_dir, (x0, y0 + e * h, x0 + a * w, y0), str(s2["crs"][row]))
        assert labels[row] == np.bincount(truth[truth > 0].ravel()).argmax()


@pytest.mark.integration
def test_training_reader_reads_back_the_stored_pixels(world_corpus):
    from terracorpus.training.corpus import open_corpus

    corpus, _ = world_corpus
    reader = open_corpus(corpus)  # verifies each image against the manifest digest
    root = zarr.open_group(corpus / "corpus.zarr", mode="r")
    for sensor, info in reader.sensors.items():
        raw = np.asarray(root[f"sensors/{sensor}/pixels"][0]).astype("float32")
        valid = np.asarray(root[f"sensors/{sensor}/valid"][0]).astype(bool)
        img = reader.read_image(sensor, 0)
        scale = np.array([b.scale for b in info.bands], dtype="float32")[:, None, None]
        offset = np.array([b.offset for b in info.bands], dtype="float32")[:, None, None]
        np.testing.assert_allclose(img.pixels[:, img.valid], (raw * scale + offset)[:, img.valid])
        assert not (img.valid & ~valid).any()
    assert len(reader.groups) == N_GROUPS


@pytest.mark.integration
def test_labels_are_an_input_of_materialize(tmp_path_factory):
    """Without a labeller, a corpus of demo-world scenes has no labels: nothing is guessed."""
    run = _world_run(tmp_path_factory, tiny_world(tmp_path_factory.getbasetemp()), "nolabels")
    run_materialize(run.config, run)
    assert validate_corpus(run.root).ok
    root = zarr.open_group(run.root / "corpus.zarr", mode="r")
    assert "label" not in root["sensors/sentinel-2-l2a"]


def test_the_production_pipeline_does_not_import_the_demo_world():
    code = (
        "import sys, terracorpus.pipelines.curate as c\n"
        "for s in c.STAGES: s.load()\n"
        "import terracorpus.pipelines.corpus.scenes, terracorpus.pipelines.commands.corpus\n"
        "print(sorted(m for m in sys.modules if m.startswith('terracorpus.catalogs.world')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_world_labels_option_needs_a_world(tmp_path):
    result = CliRunner().invoke(
        main, ["materialize", "--run-dir", str(tmp_path), "--world-labels", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "world.json" in result.output and str(tmp_path) in result.output
