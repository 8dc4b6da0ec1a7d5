"""The run report's experiment sections: scores per arm with 95 % intervals, and quality."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from terracorpus.pipelines.experiment.summary import QUALITY, RESULTS_JSON

EXPERIMENTS = "experiments"


def experiment_sections(run_dir: Path, png: Callable[[Figure], str]) -> list[tuple[str, str]]:
    """(title, HTML) for each finished experiment under ``run_dir/experiments/``."""
    sections = []
    for path in sorted((run_dir / EXPERIMENTS).glob(f"*/{RESULTS_JSON}")):
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        kind = results.get("settings", {}).get("kind", path.parent.name)
        title = f"Experiment: {'corpora compared' if kind == 'corpora' else 'model variants'}"
        sections.append((title, _body(results, png, path)))
    return sections


def scores_figure(results: dict[str, Any]) -> Figure:
    """One panel per score: a bar per arm at its mean, whiskers at the 95 % interval."""
    arms, columns = results["arms"], [tuple(c) for c in results.get("columns", [])]
    n = max(len(columns), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    colours = plt.get_cmap("tab10")(np.arange(len(arms)) % 10)
    for ax, (key, title) in zip(axes[0], columns, strict=False):
        means = [results["scores"][a][key]["mean"] for a in arms]
        halves = [results["scores"][a][key]["half"] for a in arms]
        yerr = [h if math.isfinite(h) else 0.0 for h in halves]
        ax.bar(range(len(arms)), means, yerr=yerr, capsize=4, color=colours)
        ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right")
        ax.set_title(title.replace(" (", "\n("), fontsize=9)
        finite = [m for m in means if math.isfinite(m)]
        if finite:
            ax.set_ylim(max(0.0, min(finite) - 0.1), min(1.0, max(finite) + 0.1))
    fig.tight_layout()
    return fig


def _body(results: dict[str, Any], png: Callable[[Figure], str], path: Path) -> str:
    s = results.get("settings", {})
    train = s.get("train", {})
    meta = (
        f"{len(results['arms'])} arms x {s.get('seeds', '?')} seeds; {train.get('model', '?')} model, "
        f"{train.get('steps', '?')} steps of {train.get('batch_size', '?')} groups at "
        f"{train.get('max_image_px', '?')} px"
        + (f"; corpora of {s['size']} groups" if "size" in s else "")
    )
    parts = [f"<p class='meta'>{html.escape(meta)} — {html.escape(str(path))}</p>"]
    if results.get("jobs"):  # --quality-only trains nothing
        parts.append(png(scores_figure(results)))
    if results.get("quality"):
        head = "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in QUALITY)
        rows = ""
        for arm, q in results["quality"].items():
            cells = "".join(
                f"<td>{'—' if q.get(k) is None else fmt.format(q[k])}</td>" for k, _, fmt in QUALITY
            )
            rows += f"<tr><th>{html.escape(arm)}</th>{cells}</tr>"
        parts.append(
            f"<h3>Curation quality (no training)</h3><table class='table'><tr><th>arm</th>{head}</tr>{rows}</table>"
        )
    if results.get("versus"):
        focus = html.escape(str(results["focus"]))
        columns = [tuple(c) for c in results["columns"]]
        head = "".join(f"<th>{html.escape(t)}</th>" for _, t in columns)
        rows = "".join(
            f"<tr><th>{html.escape(arm)}</th>"
            + "".join(f"<td>{html.escape(c[k])}</td>" for k, _ in columns)
            + "</tr>"
            for arm, c in results["versus"].items()
        )
        parts.append(f"<h3>{focus} against each arm (better / worse: 95 % intervals disjoint)</h3>"
                     f"<table class='table'><tr><th>against</th>{head}</tr>{rows}</table>")  # fmt: skip
    return "\n".join(parts)
