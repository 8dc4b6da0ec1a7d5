"""docs/corpus.md's examples run as written: every ``python`` and ``bash`` block of its section
"Looking at it, searching it, cutting it down", in order, on a corpus of the tiny demo world
laid out as the demo lays it out (``demo-run/run``, ``demo-run/train``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from describe_builders import trusted_access

from terracorpus.catalogs.frames import scenes_to_frame
from terracorpus.catalogs.parse import scene_from_item
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.catalogs.world.testing import tiny_world
from terracorpus.curation.groups import GroupParams, build_groups, groups_to_frame
from terracorpus.pipelines.config import CorpusConfig, RunConfig
from terracorpus.pipelines.rundir import RunDir
from terracorpus.pipelines.stages.materialize import chip_id, run_materialize

DOC = Path(__file__).resolve().parents[1] / "docs" / "corpus.md"
SECTION = "## Looking at it, searching it, cutting it down"
pytestmark = pytest.mark.integration


def _blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block of the section, in order."""
    text = DOC.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end > 0 else None]
    return [
        (lang, code)
        for lang, code in re.findall(r"```(\w*)[^\n]*\n(.*?)```", section, flags=re.S)
        if lang in ("python", "bash")
    ]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``demo-run/run`` with a corpus of every sensor of the tiny world, ``demo-run/train``
    with a short training run."""
    world = tiny_world(tmp_path_factory.getbasetemp())
    reg = builtin_registry()
    items = sorted(Path(world.out, "items").rglob("*.json"))
    scenes = [scene_from_item(json.loads(p.read_text()), reg) for p in items]
    groups = build_groups(scenes, GroupParams(chip_size_m=480.0))
    picked = {}
    for g in groups:  # a few groups of every anchor sensor: every region of the world
        if sum(p.anchor_sensor == g.anchor_sensor for p in picked.values()) < 4:
            picked[g.group_id] = g
    selection = pd.DataFrame(
        [
            {"chip_id": chip_id(g.group_id, m.scene_id), "group_id": g.group_id,
             "cluster_id": 0, "is_exemplar": True, "kept": True, "reason": ""}
            for g in picked.values()
            for m in g.members
        ]
    )  # fmt: skip
    root = tmp_path_factory.mktemp("docs")
    scenes, access = trusted_access(scenes)
    run_dir = str(root / "demo-run" / "run")
    cfg = RunConfig(run_dir=run_dir, corpus=CorpusConfig(shard_mb=2), **access)
    run = RunDir(cfg.run_dir, cfg)
    run.write_table("scenes.parquet", scenes_to_frame(scenes), stage="search")
    run.write_table("groups.parquet", groups_to_frame(list(picked.values())), stage="group")
    run.write_table("selection.parquet", selection, stage="dedup")
    run_materialize(cfg, run)
    train_cfg = root / "train.yaml"
    train_cfg.write_text("steps: 2\nbatch_size: 2\nnum_workers: 0\nmax_image_px: 32\n")
    _terracorpus(["train", "--corpus", cfg.run_dir, "--config", str(train_cfg), "--out",
                  str(root / "demo-run" / "train"), "--model", "tiny", "--no-progress"], root)  # fmt: skip
    return root


def _terracorpus(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "terracorpus.pipelines.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={"MPLBACKEND": "Agg", **__import__("os").environ},
    )
    assert proc.returncode == 0, f"terracorpus {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_the_section_has_examples_of_every_feature() -> None:
    code = "\n".join(c for _, c in _blocks())
    for feature in ("open_group", "open_sensor", "to_raster", "reproject", "plot.imshow",
                    "corpus stac", "rustac.read_sync", "gpd.read_parquet", "StacServer",
                    "corpus search", "corpus subset", "corpus validate", "report"):  # fmt: skip
        assert feature in code, feature


def test_the_examples_run_as_written(demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(demo_dir)
    namespace: dict[str, object] = {}
    for lang, code in _blocks():
        if lang == "python":
            exec(compile(code, str(DOC), "exec"), namespace)
            continue
        for line in code.splitlines():
            if line.startswith("terracorpus "):
                _terracorpus(line.split()[1:], demo_dir)
    assert (demo_dir / "chip.tif").exists()
    assert (demo_dir / "demo-run" / "wuhan" / "corpus.zarr").exists()
    page = (demo_dir / "demo-run" / "run" / "report.html").read_text()
    assert "<h2>Pre-training loss</h2>" in page
