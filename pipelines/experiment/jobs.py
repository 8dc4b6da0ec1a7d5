"""One pre-training and scoring job of an experiment, run as ``terracorpus`` sub-processes.

A job pre-trains the model on one corpus with one seed (``terracorpus train``) and scores the
encoder with ``terracorpus evaluate`` (:func:`terracorpus.training.evaluation.evaluate_encoder`)
on the experiment's evaluation set: classification, segmentation and change detection on
ground no arm pre-trains on, a linear head per task, view and label share, averaged over head
seeds. ``pipelines`` does not import ``training`` (DESIGN.md), and separate processes keep the
arms apart: a crash or a kill loses one job, not the experiment.

Resumable: a finished job holds ``scores.json`` and is skipped; a job killed while training
continues from its last checkpoint (``train --resume``), one killed while scoring is rescored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from terracorpus.pipelines.errors import StageError

SCORES = "scores.json"
LOG = "job.log"
EVALUATION = "evaluation.json"


def score_key(task: str, view: str, fraction: float) -> str:
    """The key of one score in a job's scores: ``task:view:percent`` (``change:group:100``)."""
    return f"{task}:{view}:{fraction * 100:g}"


@dataclass(frozen=True)
class Scoring:
    """How every encoder is scored (``terracorpus evaluate`` on ``evalset``)."""

    evalset: Path
    views: tuple[str, ...] = ("group",)
    fractions: tuple[float, ...] = (1.0,)
    head_seeds: int = 3


@dataclass(frozen=True)
class Job:
    """Pre-train on ``corpus`` with ``train`` settings (seed included), score on the evaluation
    set; ``baselines``: also score random weights and the no-learning baseline (one job of an
    experiment does, for the table's reference rows)."""

    arm: str
    seed: int
    corpus: Path
    scoring: Scoring
    out: Path
    train: dict[str, Any] = field(default_factory=dict)
    baselines: bool = False

    @property
    def done(self) -> bool:
        return (self.out / SCORES).exists()


def _terracorpus(args: list[str], log: Path) -> None:
    cmd = [sys.executable, "-m", "terracorpus.pipelines.cli", *args]
    with log.open("a") as f:
        f.write("$ terracorpus " + " ".join(args) + "\n")
        f.flush()
        code = subprocess.run(
            cmd, stdout=f, stderr=subprocess.STDOUT, env=os.environ.copy()
        ).returncode
    if code != 0:
        tail = log.read_text().splitlines()[-5:]
        raise StageError(
            f"`terracorpus {args[0]}` failed (exit {code}); log {log}:\n  " + "\n  ".join(tail)
        )


def _train(job: Job, log: Path) -> Path:
    """The job's encoder: trained, resumed from its last checkpoint, or already there."""
    config = job.out / "train.yaml"
    config.write_text(yaml.safe_dump({**job.train, "seed": job.seed}, sort_keys=True))
    train_dir = job.out / "train"
    if not (train_dir / "encoder").exists():
        resume = (train_dir / "checkpoints" / "last.pt").exists()
        _terracorpus(
            ["train", "--corpus", str(job.corpus), "--config", str(config), "--out",
             str(train_dir), "--no-progress", "--resume" if resume else "--overwrite"],
            log,
        )  # fmt: skip
    return train_dir / "encoder"


def _evaluate(job: Job, encoder: Path, log: Path) -> dict[str, Any]:
    """``terracorpus evaluate`` of the encoder; its JSON document."""
    sc = job.scoring
    path = job.out / EVALUATION
    _terracorpus(
        ["evaluate", "--encoder", str(encoder), "--evalset", str(sc.evalset),
         "--seeds", str(sc.head_seeds), "--fractions", ",".join(f"{f:g}" for f in sc.fractions),
         *[a for v in sc.views for a in ("--view", v)],
         "--max-image-px", str(job.train.get("max_image_px", 64)), "--json", str(path),
         "--no-pictures", "--allow-unseen-bands",  # one set for every arm, sensors or not
         *([] if job.baselines else ["--no-baselines"])],
        log,
    )  # fmt: skip
    return dict(json.loads(path.read_text()))


def scores_of(evaluation: dict[str, Any]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(the pre-trained encoder's mean score per key, the same per baseline encoder)."""
    mine: dict[str, float] = {}
    others: dict[str, dict[str, float]] = {}
    for task, doc in evaluation["tasks"].items():
        for row in doc["rows"]:
            key = score_key(task, row["view"], row["fraction"])
            if row["encoder"] == "pre-trained":
                mine[key] = float(row["mean"])
            else:
                others.setdefault(row["encoder"], {})[key] = float(row["mean"])
    return mine, others


def run_job(job: Job) -> dict[str, Any]:
    """Train (or resume) and score one job; returns its scores (also in ``out/scores.json``)."""
    if job.done:
        return dict(json.loads((job.out / SCORES).read_text()))
    job.out.mkdir(parents=True, exist_ok=True)
    log = job.out / LOG
    t = time.perf_counter()
    encoder = _train(job, log)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    evaluation = _evaluate(job, encoder, log)
    mine, baselines = scores_of(evaluation)
    out = {
        "arm": job.arm,
        "seed": job.seed,
        "corpus": str(job.corpus),
        "train_seconds": round(train_s, 1),
        "score_seconds": round(time.perf_counter() - t, 1),
        "final_loss": _final_loss(encoder.parent),
        "skipped": evaluation.get("skipped", {}),
        **mine,
        **({"baselines": baselines} if baselines else {}),
    }
    tmp = job.out / (SCORES + ".tmp")
    tmp.write_text(json.dumps(out, indent=2))
    tmp.replace(job.out / SCORES)
    return out


def _final_loss(train_dir: Path) -> float | None:
    """Mean loss of the last few logged steps of the run's metrics.jsonl."""
    path = train_dir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    losses = [float(r["loss"]) for r in rows if "loss" in r][-3:]
    return sum(losses) / len(losses) if losses else None


def run_jobs(
    jobs: list[Job], parallel: int = 1, echo: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Every job (finished ones skipped), ``parallel`` at a time; scores in job order."""
    todo = [j for j in jobs if not j.done]
    echo(
        f"[experiment] {len(jobs) - len(todo)} of {len(jobs)} jobs already done; running {len(todo)}"
    )
    if parallel <= 1:
        for i, job in enumerate(todo):
            t = time.perf_counter()
            run_job(job)
            echo(f"[experiment] job {i + 1}/{len(todo)} {job.arm} seed {job.seed}: "
                 f"{time.perf_counter() - t:.0f} s")  # fmt: skip
    else:
        from concurrent.futures import ThreadPoolExecutor

        t = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:  # each job is its own sub-processes
            for i, (job, _) in enumerate(zip(todo, pool.map(run_job, todo), strict=True)):
                echo(f"[experiment] done {i + 1}/{len(todo)}: {job.arm} seed {job.seed} "
                     f"({time.perf_counter() - t:.0f} s since the start)")  # fmt: skip
    return [run_job(j) for j in jobs]
