"""An experiment's table: per arm, the mean of each score over seeds with a 95 % interval.

The interval is Student's t over the seeds (mean +- t(0.975, n-1) * sd / sqrt(n)); with one
seed it is undefined (NaN). Two arms *differ* on a score when their intervals do not overlap.
Curation-quality metrics (no training) sit beside the scores. Written as ``results.json`` and
``results.md``; the run report draws ``results.json`` (:func:`scores_figure`).
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
SCORES = (  # (key in the job scores, column title)
    ("linear_macro_f1", "linear F1"),
    ("knn_macro_f1", "kNN F1"),
    ("few_linear_macro_f1", "few-label F1"),
    ("linear_accuracy", "linear acc"),
)
QUALITY = (  # (key of SelectionQuality, column title, format)
    ("groups", "groups", "{:g}"),
    ("classes_kept", "classes", "{:.3g}"),
    ("class_entropy", "entropy (bits)", "{:.3f}"),
    ("residual_duplicates", "residual dups", "{:.3f}"),
    ("low_information_share", "low-info share", "{:.3f}"),
    ("mean_information", "mean info", "{:.3f}"),
    ("coverage", "coverage dist", "{:.3f}"),
)


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
    reference: str | None = None,
) -> dict[str, Any]:
    """The results document: settings, per-arm intervals, quality, and each arm against
    ``reference`` (e.g. ``random``): which scores it beats or loses with disjoint intervals."""
    arms = list(dict.fromkeys(j["arm"] for j in jobs)) or list(quality)
    scores = {
        arm: {key: interval([j.get(key) for j in jobs if j["arm"] == arm]) for key, _ in SCORES}
        for arm in arms
    }
    versus = {}
    if reference in scores and jobs:
        for arm in arms:
            if arm == reference:
                continue
            versus[arm] = {
                key: _compare(scores[arm][key], scores[reference][key]) for key, _ in SCORES
            }
    return {"settings": settings, "arms": arms, "scores": scores, "quality": quality,
            "reference": reference, "versus_reference": versus, "jobs": jobs}  # fmt: skip


def _compare(a: dict[str, float], b: dict[str, float]) -> str:
    """``better`` / ``worse`` when the 95 % intervals do not overlap, else ``overlap``."""
    if not all(math.isfinite(v) for v in (a["low"], a["high"], b["low"], b["high"])):
        return "undetermined"
    if a["low"] > b["high"]:
        return "better"
    if a["high"] < b["low"]:
        return "worse"
    return "overlap"


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables (scores; curation quality; against the reference)."""
    arms = results["arms"]
    n = max((results["scores"][a][SCORES[0][0]]["n"] for a in arms), default=0)
    lines: list[str] = []
    if n:
        lines += [f"Downstream scores: mean over {n} seeds, 95 % interval (t).", ""]
        lines.append("| arm | " + " | ".join(title for _, title in SCORES) + " |")
        lines.append("|---" * (len(SCORES) + 1) + "|")
        for arm in arms:
            cells = [_cell(results["scores"][arm][key]) for key, _ in SCORES]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    if results["quality"]:
        lines += ["Curation quality (no training):", ""]
        lines.append("| arm | " + " | ".join(title for _, title, _ in QUALITY) + " |")
        lines.append("|---" * (len(QUALITY) + 1) + "|")
        for arm, q in results["quality"].items():
            cells = ["—" if q.get(key) is None else fmt.format(q[key]) for key, _, fmt in QUALITY]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if results["versus_reference"]:
        ref = results["reference"]
        lines += ["", f"Against `{ref}` (95 % intervals disjoint?):", ""]
        lines.append("| arm | " + " | ".join(title for _, title in SCORES) + " |")
        lines.append("|---" * (len(SCORES) + 1) + "|")
        for arm, cmp in results["versus_reference"].items():
            lines.append(f"| {arm} | " + " | ".join(cmp[key] for key, _ in SCORES) + " |")
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
