"""An experiment's table: per arm, the mean of each score over seeds with a 95 % interval.

A job's score on a task is the mean over its head seeds (``terracorpus evaluate``); the
interval is Student's t over the **pre-training** seeds (mean +- t(0.975, n-1) * sd /
sqrt(n)); with one seed it is undefined (NaN). The focus arm (``ap``, or ``complementary`` for
model variants) is compared with every other arm: ``better`` / ``worse`` when the intervals do
not overlap, else ``overlap``. Random weights and the no-learning baseline (scored once, by the
first job) sit under the arms for scale; curation-quality metrics (no training) beside them.
Written as ``results.json`` and ``results.md``; the run report draws ``results.json``
(:func:`terracorpus.pipelines.experiment.report.scores_figure`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
TASKS = {  # task -> its score's name (terracorpus evaluate)
    "classification": "macro-F1",
    "segmentation": "mIoU",
    "change": "F1",
}
BASELINES = {  # evaluate's baseline encoders, as the table names them
    "random": "random weights, no pre-training (1 head set)",
    "no-learning": "no-learning: band statistics (1 head set)",
}
QUALITY = (  # (key of SelectionQuality, column title, format)
    ("groups", "groups", "{:g}"),
    ("classes_kept", "classes", "{:.3g}"),
    ("class_entropy", "entropy (bits)", "{:.3f}"),
    ("residual_duplicates", "residual dups", "{:.3f}"),
    ("low_information_share", "low-info share", "{:.3f}"),
    ("mean_information", "mean info", "{:.3f}"),
    ("coverage", "coverage dist", "{:.3f}"),
)


def score_columns(jobs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(key, title) of every score the jobs hold (``task:view:percent``), tasks in order."""
    keys = {k for j in jobs for k in j if k.count(":") == 2 and k.split(":")[0] in TASKS}

    def order(key: str) -> tuple[int, str, float]:
        task, view, pct = key.split(":")
        return (list(TASKS).index(task), view, -float(pct))

    return [(k, _title(k)) for k in sorted(keys, key=order)]


def _title(key: str) -> str:
    task, view, pct = key.split(":")
    return f"{task} {TASKS[task]} ({view}, {pct} % labels)"


def interval(values: list[float | None]) -> dict[str, float]:
    """Mean, 95 % half-width (t) and the interval's ends of ``values``."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if not len(x):
        return {"n": 0, "mean": math.nan, "half": math.nan, "low": math.nan, "high": math.nan}
    mean = float(x.mean())
    half = (
        float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
        if len(x) > 1
        else math.nan
    )
    return {"n": len(x), "mean": mean, "half": half, "low": mean - half, "high": mean + half}


def summarize(
    jobs: list[dict[str, Any]],
    quality: dict[str, dict[str, Any]],
    settings: dict[str, Any],
    focus: str | None = None,
) -> dict[str, Any]:
    """The results document: settings, score columns, per-arm intervals, the baselines,
    quality, and ``focus`` against every other arm (disjoint 95 % intervals or not)."""
    arms = list(dict.fromkeys(j["arm"] for j in jobs)) or list(quality)
    columns = score_columns(jobs)
    scores = {
        arm: {key: interval([j.get(key) for j in jobs if j["arm"] == arm]) for key, _ in columns}
        for arm in arms
    }
    versus = {}
    if focus in scores:
        versus = {
            other: {key: compare(scores[focus][key], scores[other][key]) for key, _ in columns}
            for other in arms
            if other != focus
        }
    baselines: dict[str, dict[str, float]] = {}
    for j in jobs:
        for name, values in j.get("baselines", {}).items():
            baselines.setdefault(name, values)
    return {"settings": settings, "arms": arms, "columns": columns, "scores": scores,
            "baselines": baselines, "quality": quality, "focus": focus, "versus": versus,
            "skipped": _skipped(jobs), "jobs": jobs}  # fmt: skip


def _skipped(jobs: list[dict[str, Any]]) -> dict[str, str]:
    """Tasks the evaluation skipped (the same for every job: one evaluation set), with why."""
    out: dict[str, str] = {}
    for j in jobs:
        out.update(j.get("skipped", {}))
    return out


def compare(a: dict[str, float], b: dict[str, float]) -> str:
    """``better`` / ``worse`` when the 95 % intervals do not overlap, else ``overlap``."""
    if not all(math.isfinite(v) for v in (a["low"], a["high"], b["low"], b["high"])):
        return "undetermined"
    if a["low"] > b["high"]:
        return "better"
    if a["high"] < b["low"]:
        return "worse"
    return "overlap"


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables (scores; curation quality; the focus arm against each)."""
    arms, columns = results["arms"], [tuple(c) for c in results.get("columns", [])]
    n = max((results["scores"][a][k]["n"] for a in arms for k, _ in columns), default=0)
    lines: list[str] = []
    if n and columns:
        lines += [f"Downstream scores (test split of the evaluation set): mean over {n} "
                  "pre-training seeds, 95 % interval (t).", ""]  # fmt: skip
        lines.append("| arm | " + " | ".join(title for _, title in columns) + " |")
        lines.append("|---" * (len(columns) + 1) + "|")
        for arm in arms:
            cells = [_cell(results["scores"][arm][key]) for key, _ in columns]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        for name, values in results.get("baselines", {}).items():
            cells = ["—" if values.get(k) is None else f"{values[k]:.3f}" for k, _ in columns]
            lines.append(f"| *{BASELINES.get(name, name)}* | " + " | ".join(cells) + " |")
        for task, why in results.get("skipped", {}).items():
            lines.append(f"\n{task}: not scored ({why})")
        lines.append("")
    if results["quality"]:
        lines += ["Curation quality (no training):", ""]
        lines.append("| arm | " + " | ".join(title for _, title, _ in QUALITY) + " |")
        lines.append("|---" * (len(QUALITY) + 1) + "|")
        for arm, q in results["quality"].items():
            cells = ["—" if q.get(key) is None else fmt.format(q[key]) for key, _, fmt in QUALITY]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if results.get("versus"):
        focus = results["focus"]
        lines += ["", f"`{focus}` against each arm (better / worse: 95 % intervals disjoint):", ""]
        lines.append("| against | " + " | ".join(title for _, title in columns) + " |")
        lines.append("|---" * (len(columns) + 1) + "|")
        for arm, cmp in results["versus"].items():
            lines.append(f"| {arm} | " + " | ".join(cmp[key] for key, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(iv: dict[str, float]) -> str:
    if not iv["n"]:
        return "—"
    if not math.isfinite(iv["half"]):
        return f"{iv['mean']:.3f}"
    return f"{iv['mean']:.3f} ± {iv['half']:.3f}"


def write_results(out: Path, results: dict[str, Any]) -> tuple[Path, Path]:
    """``results.json`` and ``results.md`` in ``out`` (atomically)."""
    paths = []
    for name, text in ((RESULTS_JSON, json.dumps(results, indent=2, default=_plain)),
                       (RESULTS_MD, markdown(results))):  # fmt: skip
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out / name)
        paths.append(out / name)
    return paths[0], paths[1]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
