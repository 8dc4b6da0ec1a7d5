"""Benchmark: does affinity-propagation curation beat random, k-means and farthest-point?

Builds a demo world (``--preset``), curates it through the local STAC API (no training), then
runs ``terracorpus experiment corpora`` on the run: a share of the ground held out
(``--holdout``), corpora from the rest by AP, random, k-means balanced sampling,
farthest-point and the whole pool (size: the run's AP count scaled to the pool), and with
``--arms ...,ap-exemplars`` AP with about one cluster per place, each
pre-trained ``--seeds`` times for ``--steps`` steps and scored by ``terracorpus evaluate`` on
classification, segmentation and change detection on the held-out ground; optionally the
model ablations (``--models``). Prints the tables, the wall time, and the verdict the issue asks
for: AP beats random with disjoint 95 % intervals on at least one score and loses on none;
AP at least matches k-means and farthest-point on curation quality and downstream.

    flock /tmp/terracorpus-bench.lock .venv/bin/python benchmarks/bench_experiment.py \\
        --preset redundant --out /tmp/bench-experiment --seeds 3 --steps 300

A second run with the same ``--out`` reuses the world, the run and every finished job.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from terracorpus.catalogs.server import StacServer
from terracorpus.catalogs.world import PRESETS as WORLD_PRESETS
from terracorpus.catalogs.world import create_world
from terracorpus.pipelines.corpus.labels import WorldLabeller
from terracorpus.pipelines.curate import curate
from terracorpus.pipelines.demo import DemoPreset, demo_run_config
from terracorpus.pipelines.experiment.corpora import kept_groups
from terracorpus.pipelines.experiment.run import (
    ScoreSettings,
    TrainSettings,
    run_corpora_experiment,
    run_models_experiment,
)
from terracorpus.pipelines.experiment.summary import compare, markdown

TIME_TARGET_S = 3600.0  # the whole comparison on 2 CPU cores


def curated_run(out: Path, preset: str, seed: int) -> tuple[Path, Path]:
    """(run directory, world directory): the world built and curated once, reused after."""
    run = out / "run"
    if (run / "selection.parquet").exists():
        return run, out / "world"
    world = create_world(out / "world", preset=preset, seed=seed)
    demo = DemoPreset(world=preset, chip_size_m=480.0, train_steps=0, train_minutes=0.0)
    with StacServer([world.out], host="127.0.0.1") as server:
        cfg = demo_run_config(world, server.url, run, demo)
        curate(cfg, echo=print, labeller=WorldLabeller(str(world.out)), until="dedup")
    return run, Path(world.out)


def verdict(results: dict[str, Any]) -> list[str]:
    """The issue's acceptance questions, answered from the results, for each AP arm."""
    lines = []
    for ap in ("ap", "ap-exemplars"):
        if ap in results["quality"]:
            lines += _verdict(results, ap)
    return lines


def _verdict(results: dict[str, Any], ap: str) -> list[str]:
    lines = []
    columns = [tuple(c) for c in results.get("columns", [])]
    scores = results["scores"]
    vs = {o: {k: compare(scores[ap][k], scores[o][k]) for k, _ in columns}
          for o in scores if o != ap and ap in scores}  # fmt: skip
    if "random" in vs:
        wins = [t for k, t in columns if vs["random"][k] == "better"]
        losses = [t for k, t in columns if vs["random"][k] == "worse"]
        ok = bool(wins) and not losses
        lines.append(f"{ap} vs random: better on {wins or 'none'}, worse on {losses or 'none'} "
                     f"-> {'PASS' if ok else 'MISS'} (target: better on >= 1, worse on none)")  # fmt: skip
    q = results["quality"]
    for other in ("kmeans", "farthest", "all"):
        if other not in q:
            continue
        a, b = q[ap], q[other]
        quality_ok = (
            (a["classes_kept"] or 0) >= (b["classes_kept"] or 0)
            and (a["class_entropy"] or 0) >= (b["class_entropy"] or 0) - 1e-9
            and a["residual_duplicates"] <= b["residual_duplicates"] + 1e-9
        )
        behind = [t for k, t in columns if vs.get(other, {}).get(k) == "worse"]
        ahead = [t for k, t in columns if vs.get(other, {}).get(k) == "better"]
        lines.append(
            f"{ap} vs {other}: quality classes {a['classes_kept']} vs {b['classes_kept']}, entropy "
            f"{_f(a['class_entropy'])} vs {_f(b['class_entropy'])}, residual dups "
            f"{_f(a['residual_duplicates'])} vs {_f(b['residual_duplicates'])}, coverage "
            f"{_f(a['coverage'])} vs {_f(b['coverage'])}; downstream ahead on {ahead or 'none'}, "
            f"behind on {behind or 'none'} -> {'PASS' if quality_ok and not behind else 'MISS'}"
        )
    return lines


def ap_structure(arm: Path) -> str:
    """How an AP arm's corpus was picked: clusters, and exemplars against quota fill."""
    import pandas as pd

    table = pd.read_parquet(arm / "selection.parquet")
    anchors = table[table["role"] == "anchor"]
    kept = anchors[anchors["kept"]]
    reasons = kept["reason"].value_counts().to_dict()
    clusters = anchors.loc[anchors["cluster_id"] >= 0, "cluster_id"].nunique()
    return (f"{arm.name} arm: {clusters} clusters over the pool's anchors; {len(kept)} kept: "
            f"{reasons.get('exemplar', 0)} exemplars, {reasons.get('quota', 0)} from the "
            f"information-weighted farthest-point fill")  # fmt: skip


def _f(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small", choices=sorted(WORLD_PRESETS))
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-experiment"))
    ap.add_argument("--seed", type=int, default=0, help="world seed")
    ap.add_argument("--size", type=int, help="groups per corpus (default: the run's AP count)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-image-px", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--holdout", type=float, default=0.3)
    ap.add_argument("--eval-groups", type=int, default=200)
    ap.add_argument("--views", default="group", help="comma-separated: anchor,group")
    ap.add_argument("--fractions", default="1", help="comma-separated label shares")
    ap.add_argument("--head-seeds", type=int, default=3)
    ap.add_argument("--arms", default="ap,random,kmeans,farthest,all")
    ap.add_argument("--models", action="store_true", help="also run the model ablations")
    a = ap.parse_args(argv)
    print(f"bench_experiment: {psutil.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.1f}' for x in psutil.getloadavg())}")  # fmt: skip
    t0 = time.perf_counter()
    run, world = curated_run(a.out, a.preset, a.seed)
    t_curate = time.perf_counter() - t0
    size = a.size or max(1, round(len(kept_groups(run)) * (1 - a.holdout)))
    print(f"curated run {run} ({t_curate:.0f} s); corpora of {size} groups")
    train = TrainSettings(
        model=a.model, steps=a.steps, batch_size=a.batch, max_image_px=a.max_image_px
    )
    score = ScoreSettings(
        holdout=a.holdout, eval_groups=a.eval_groups, views=tuple(a.views.split(",")),
        fractions=tuple(float(f) for f in a.fractions.split(",")), head_seeds=a.head_seeds,
    )  # fmt: skip
    t1 = time.perf_counter()
    results = run_corpora_experiment(
        run, a.out / "experiments" / "corpora", size, arms=tuple(a.arms.split(",")),
        seeds=a.seeds, train=train, score=score, world=world, parallel=a.parallel,
    )  # fmt: skip
    t_corpora = time.perf_counter() - t1
    print(markdown(results))
    print(f"corpora experiment: {t_corpora:.0f} s wall; jobs: train "
          f"{sum(j['train_seconds'] for j in results['jobs']):.0f} s, evaluate "
          f"{sum(j['score_seconds'] for j in results['jobs']):.0f} s (this run's, resumed jobs "
          f"keep their first times); load average {psutil.getloadavg()[0]:.1f}")  # fmt: skip
    for line in verdict(results):
        print(line)
    for arm in ("ap", "ap-exemplars"):
        if arm in results["quality"]:
            print(ap_structure(a.out / "experiments" / "corpora" / "arms" / arm))
    if a.models:
        t2 = time.perf_counter()
        models = run_models_experiment(
            run, a.out / "experiments" / "models", seeds=a.seeds, train=train, score=score,
            world=world, parallel=a.parallel,
        )  # fmt: skip
        print(markdown(models))
        print(f"model ablations: {time.perf_counter() - t2:.0f} s wall")
    total = time.perf_counter() - t0
    print(f"whole benchmark: {total:.0f} s (target for the full comparison on 2 cores: "
          f"<= {TIME_TARGET_S:.0f} s) {'PASS' if total <= TIME_TARGET_S else 'MISS'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
