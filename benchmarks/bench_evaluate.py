"""Downstream benchmark: what pre-training buys on classification, segmentation and change.

On a demo output directory (``terracorpus demo --preset small --out OUT`` leaves the world in
``OUT/world``, the curated run in ``OUT/run`` and the pre-trained encoder in
``OUT/train/encoder``): builds the evaluation set from the world's truth on the ground the
curated corpus does not hold (unless ``OUT/evalset`` is there), and scores the three encoders
(pre-trained, random weights, no-learning) on every task, view and label share, over
``--seeds`` head seeds. ``--encoder`` adds more pre-trained encoders (e.g. other pre-training
seeds); each is scored on the same set.

Targets (all labels, either view): the pre-trained encoder beats random weights on all three
tasks with 95 % intervals that do not overlap, and beats no-learning on segmentation and
change detection. Each is reported PASS or MISS with the numbers.

CPU only, one torch thread (a shared 2-core machine thrashes with more)::

    flock /tmp/terracorpus-bench.lock .venv/bin/python benchmarks/bench_evaluate.py \\
        --demo OUT [--seeds 3] [--fractions 0.01,0.1,1] [--json bench-evaluate.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from terracorpus.pipelines.evaluation.build import build_evalset
from terracorpus.pipelines.evaluation.truth import WorldTruth
from terracorpus.training.evaluation import TASKS, EvaluationReport, Row, evaluate_encoder
from terracorpus.training.evaluation_set import open_evalset


def _best(report: EvaluationReport, task: str, encoder: str) -> Row | None:
    """The encoder's all-labels row of the task, in its better view."""
    rows = [r for r in report.rows if r.task == task and r.encoder == encoder and r.fraction == 1.0]
    return max(rows, key=lambda r: r.mean) if rows else None


def targets(report: EvaluationReport) -> list[dict[str, Any]]:
    """Each target: which rows it compares, and whether it holds."""
    out = []
    for task in TASKS:
        pre = _best(report, task, "pre-trained")
        for other, needs_ci in (("random", True), ("no-learning", False)):
            if other == "no-learning" and task == "classification":
                continue
            base = _best(report, task, other)
            if pre is None or base is None:
                out.append({"task": task, "against": other, "status": "NOT RUN",
                            "why": report.skipped.get(task, "no rows")})  # fmt: skip
                continue
            ok = pre.ci95[0] > base.ci95[1] if needs_ci else pre.mean > base.mean
            out.append({
                "task": task, "against": other, "status": "PASS" if ok else "MISS",
                "pre-trained": [pre.view, pre.mean, list(pre.ci95)],
                other: [base.view, base.mean, list(base.ci95)],
                "rule": "intervals do not overlap" if needs_ci else "higher mean",
            })  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--demo", required=True, type=Path, help="terracorpus demo --out directory")
    ap.add_argument("--encoder", action="append", default=[], help="more encoders to score")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fractions", default="0.01,0.1,1")
    ap.add_argument("--max-image-px", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    evalset = args.demo / "evalset"
    t = time.perf_counter()
    if not (evalset / "evalset.zarr").is_dir():
        summary = build_evalset(args.demo / "run", evalset, WorldTruth(str(args.demo / "world")),
                                exclude=[str(args.demo / "run")], overwrite=True)  # fmt: skip
        print(summary.describe(), f"({time.perf_counter() - t:.0f} s)")
    es = open_evalset(evalset)
    fractions = [float(f) for f in args.fractions.split(",")]
    results: dict[str, Any] = {"command": " ".join(map(str, [
        "benchmarks/bench_evaluate.py", "--demo", args.demo, "--seeds", args.seeds,
        "--fractions", args.fractions, *[x for e in args.encoder for x in ("--encoder", e)]]))}  # fmt: skip
    for encoder in [str(args.demo / "train" / "encoder"), *args.encoder]:
        t, cpu = time.perf_counter(), time.process_time()
        report = evaluate_encoder(encoder, es, seeds=args.seeds, fractions=fractions,
                                  max_image_px=args.max_image_px)  # fmt: skip
        took = f"{time.perf_counter() - t:.0f} s wall, {time.process_time() - cpu:.0f} CPU-s"
        print(f"\n== {encoder} ({took})\n{report.table()}")
        checks = targets(report)
        for c in checks:
            print("  target:", json.dumps(c))
        results[encoder] = {"report": report.as_dict(), "targets": checks, "time": took}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
