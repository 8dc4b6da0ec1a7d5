"""`terracorpus demo`: the whole mission on the embedded demo world.

Builds the synthetic world, serves it through a real local STAC API, curates it into a corpus
on a LocalCluster, pre-trains a `tiny` A²-MAE on CPU, probes the encoder, builds an evaluation
set from the world's truth on the ground curation did not keep, scores the encoder on
classification, segmentation and change detection against random weights and a no-learning
baseline, and writes the report. Training, probing and evaluating run as `terracorpus train` /
`terracorpus probe` / `terracorpus evaluate` sub-processes:
`pipelines` does not import `training` (DESIGN.md's module map), and a separate process keeps
torch's threads out of the Dask client's way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from terracorpus.catalogs.server import StacServer
from terracorpus.catalogs.world import create_world
from terracorpus.pipelines.config import RunConfig, parse_config
from terracorpus.pipelines.corpus.items import ITEMS_NAME, write_items
from terracorpus.pipelines.corpus.labels import WorldLabeller
from terracorpus.pipelines.corpus.location import CorpusLocation
from terracorpus.pipelines.curate import curate
from terracorpus.pipelines.errors import PipelineError, StageError
from terracorpus.pipelines.evaluation.build import build_evalset
from terracorpus.pipelines.evaluation.truth import WorldTruth
from terracorpus.pipelines.report import write_report
from terracorpus.pipelines.rundir import CONFIG_FILE


@dataclass(frozen=True)
class DemoPreset:
    """How big the demo is: the world preset, group geometry, and the training budget."""

    world: str
    chip_size_m: float
    train_steps: int
    train_minutes: float
    workers: int = 2


PRESETS: dict[str, DemoPreset] = {
    "tiny": DemoPreset(world="tiny", chip_size_m=480.0, train_steps=60, train_minutes=1.5),
    # 480 m groups: ~425 candidate groups on the small world (86 at 960 m), so the curated
    # corpus and the probe's 5-fold cross-validation have enough groups to say something.
    "small": DemoPreset(world="small", chip_size_m=480.0, train_steps=2000, train_minutes=6.0),
}


@dataclass
class DemoResult:
    out: Path
    paths: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)


def demo_run_config(world: Any, api_url: str, run_dir: Path, preset: DemoPreset) -> RunConfig:
    """The run config the demo curates with: the whole world, through the local API."""
    return parse_config(
        {
            "run_dir": str(run_dir),
            "search": {
                # The local API listens on a free port, a new one each run: the world's identity,
                # not the address, is what the artifacts depend on (a second demo reuses them).
                "apis": [
                    {
                        "url": api_url,
                        "name": f"terracorpus-demo-world:{world.preset}:seed-{world.seed}",
                        "collections": list(world.collections),
                    }
                ],
                # The regions lie continents apart: search each one, not the box around all.
                "tiles": [
                    r["bbox"] for r in json.loads((world.out / "world.json").read_text())["regions"]
                ],
                "start": str(world.start),
                "end": str(world.end),
                "page_size": 50,
            },
            "group": {"chip_size_m": preset.chip_size_m},
            "dask": {"workers": preset.workers},
            # The world's items name its COGs by local path: read them there, nowhere else.
            "access": {"local_roots": [str(world.out)]},
        },
        source="the demo",
    )


def _prepare_run_dir(run_dir: Path, cfg: RunConfig, echo: Callable[[str], None]) -> None:
    """Reuse an earlier demo's run directory when it was made with this config (its complete
    stages are skipped), else start it over; say which."""
    stored = run_dir / CONFIG_FILE
    if not stored.exists():
        if run_dir.exists():  # a run that never got as far as its config: nothing to reuse
            echo(f"[run] {run_dir} holds no finished stage: starting it over")
            shutil.rmtree(run_dir)
        return
    try:
        old_hash = json.loads(stored.read_text()).get("config_hash")
    except (OSError, ValueError):
        old_hash = None
    if old_hash == cfg.config_hash():
        echo(
            f"[run] {run_dir} holds an earlier run of this demo: its complete stages are reused, "
            "unfinished ones redone"
        )
        return
    echo(
        f"[run] {run_dir} holds a run made with another config (another preset or seed): "
        "starting it over"
    )
    shutil.rmtree(run_dir)


def _subcommand(args: list[str], log_path: Path, echo: Callable[[str], None]) -> None:
    """Run `terracorpus ARGS` in a sub-process, teeing its output to a log file."""
    cmd = [sys.executable, "-m", "terracorpus.pipelines.cli", *args]
    echo("$ terracorpus " + " ".join(args))
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy()
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            echo("  " + line.rstrip())
        code = proc.wait()
    if code != 0:
        raise StageError(f"`terracorpus {args[0]}` failed (exit {code}); its log is {log_path}")


def _evaluate(
    out: Path, world_dir: Path, run_dir: Path, encoder: Path, scores: Path,
    echo: Callable[[str], None],
) -> None:  # fmt: skip
    """An evaluation set from the world's truth off the curated ground, then the three tasks.

    All label shares would take minutes more on 2 CPU cores; the demo scores with every
    training label, both views, 3 head seeds (``benchmarks/bench_evaluate.py`` does the rest).
    """
    evalset = out / "evalset"
    echo("[evalset] the world's truth on the ground curation did not keep, split by area")
    summary = build_evalset(
        run_dir, evalset, WorldTruth(str(world_dir)), exclude=[str(run_dir)], overwrite=True
    )
    echo(f"[evalset] {summary.describe()}")
    _subcommand(
        ["evaluate", "--encoder", str(encoder), "--evalset", str(evalset), "--seeds", "3",
         "--fractions", "1", "--json", str(scores)],
        out / "evaluate.log",
        echo,
    )  # fmt: skip


def run_demo(
    out: Path, preset_name: str = "small", seed: int = 0, echo: Callable[[str], None] = print
) -> DemoResult:
    """Run the whole mission into ``out`` and return where everything is."""
    try:
        preset = PRESETS[preset_name]
    except KeyError:
        raise PipelineError(
            f"unknown demo preset {preset_name!r}; choose one of {sorted(PRESETS)}"
        ) from None
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out=out)
    t = time.perf_counter()

    echo(f"[world] building the {preset.world!r} demo world (seed {seed})")
    world = create_world(out / "world", preset=preset.world, seed=seed)
    result.timings["world"] = time.perf_counter() - t
    echo(f"[world] {sum(world.n_items.values())} STAC items in {world.out}")

    run_dir = out / "run"
    with StacServer([world.out], host="127.0.0.1") as server:
        echo(f"[catalog] STAC API serving the world at {server.url}")
        cfg = demo_run_config(world, server.url, run_dir, preset)
        (out / "run.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        _prepare_run_dir(run_dir, cfg, echo)
        t = time.perf_counter()
        curate(cfg, echo=echo, labeller=WorldLabeller(str(world.out)))
        items = write_items(CorpusLocation.of(run_dir))
        echo(f"[stac] the corpus's images as STAC Items (stac-geoparquet): {items}")
        result.timings["curate"] = time.perf_counter() - t

    train_dir = out / "train"
    train_cfg = out / "train.yaml"
    train_cfg.write_text(
        yaml.safe_dump(
            {
                "steps": preset.train_steps,
                "max_minutes": preset.train_minutes,
                "warmup_steps": max(1, preset.train_steps // 10),
                "max_image_px": 64,  # CPU: at 128 px a step costs ~4x the tokens
                "cpu_threads": 1,  # a tiny model: one thread, the other core for the data workers
                "seed": seed,
            }
        )
    )
    t = time.perf_counter()
    _subcommand(
        [
            "train",
            "--corpus",
            str(run_dir),
            "--config",
            str(train_cfg),
            "--model",
            "tiny",
            "--out",
            str(train_dir),
            "--overwrite",
            "--no-progress",
        ],
        out / "train.log",
        echo,
    )
    result.timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    probe_json = train_dir / "probe.json"  # beside the run's metrics, where the report looks
    _subcommand(
        [
            "probe",
            "--encoder",
            str(train_dir / "encoder"),
            "--corpus",
            str(run_dir),
            "--compare-random",
            "--folds",  # K-fold over groups: a demo corpus has too few val groups alone
            "5",
            "--json",
            str(probe_json),
        ],
        out / "probe.log",
        echo,
    )
    result.timings["probe"] = time.perf_counter() - t
    result.probe = json.loads(probe_json.read_text())
    t = time.perf_counter()
    evaluation_json = train_dir / "evaluation.json"  # beside probe.json, where the report looks
    _evaluate(out, world.out, run_dir, train_dir / "encoder", evaluation_json, echo)
    result.timings["evaluate"] = time.perf_counter() - t
    result.evaluation = json.loads(evaluation_json.read_text())

    report = write_report(run_dir, train_dir=train_dir)
    result.paths = {
        "world": world.out,
        "run directory": run_dir,
        "corpus": run_dir / "corpus.zarr",
        "manifest": run_dir / "manifest.parquet",
        "STAC collection of the corpus": run_dir / "collection.json",
        "STAC items of the corpus": run_dir / ITEMS_NAME,
        "checkpoints": train_dir,
        "encoder": train_dir / "encoder",
        "probe scores": probe_json,
        "evaluation set": out / "evalset",
        "evaluation scores": evaluation_json,
        "report": report,
    }
    return result
