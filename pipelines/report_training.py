"""The report's training part: loss curves, probe scores against random weights, and masked
groups with the model's reconstructions beside the truth.

`pipelines` does not import `training`: these sections read what ``terracorpus train`` and
``terracorpus probe`` leave in the training directory (``metrics.jsonl``, ``probe.json``,
``reconstructions/*.png``), and are left out when a file is not there.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

METRICS = "metrics.jsonl"
PROBE = "probe.json"
EVALUATION = "evaluation.json"  # terracorpus evaluate --json; pictures in evaluation-pictures/
RECONSTRUCTIONS = "reconstructions"
SCORES = (
    ("linear_macro_f1", "linear probe macro-F1"),
    ("knn_macro_f1", "kNN macro-F1"),
    ("linear_accuracy", "linear probe accuracy"),
    ("knn_accuracy", "kNN accuracy"),
)


def training_sections(
    train_dir: Path | None, png: Callable[[Figure], str]
) -> list[tuple[str, str]]:
    """(title, HTML) of each training section the directory has material for.

    Args:
        train_dir: the ``--out`` of ``terracorpus train`` (None: no training part).
        png: the report's figure-to-``<img>`` function.
    """
    if train_dir is None or not train_dir.is_dir():
        return []
    sections = []
    metrics = read_metrics(train_dir / METRICS)
    if metrics is not None and len(metrics):
        sections.append(("Pre-training loss", png(loss_figure(metrics)) + _loss_note(metrics)))
    probe_file = train_dir / PROBE
    if probe_file.exists():
        scores = json.loads(probe_file.read_text())
        sections.append(("Probe scores against random weights", _scores_html(scores, png)))
    evaluation = train_dir / EVALUATION
    if evaluation.exists():
        sections.append(
            ("Downstream tasks: classification, segmentation, change detection",
             evaluation_html(json.loads(evaluation.read_text()), train_dir))
        )  # fmt: skip
    pictures = sorted((train_dir / RECONSTRUCTIONS).glob("group-*.png"))
    if pictures:
        sections.append(
            ("Masked groups: the model's reconstruction beside the truth", _pictures(pictures))
        )
    return sections


def read_metrics(path: Path) -> pd.DataFrame | None:
    """metrics.jsonl as one row per logged step: step, loss and one ``loss:<sensor>`` column
    per sensor (NaN where a step's batches held none of it)."""
    if not path.exists():
        return None
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        row = {"step": record["step"], "loss": record["loss"]}
        row.update({f"loss:{k}": v for k, v in (record.get("sensor_loss") or {}).items()})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("step") if rows else None


def loss_figure(metrics: pd.DataFrame) -> Figure:
    """The training loss per logged step, overall and per sensor."""
    fig, ax = plt.subplots(figsize=(8.5, 3.6))
    ax.plot(metrics["step"], metrics["loss"], color="black", lw=2, label="all sensors")
    for column in sorted(str(c) for c in metrics.columns if str(c).startswith("loss:")):
        part = metrics[["step", column]].dropna()
        ax.plot(part["step"], part[column], lw=1, alpha=0.8, label=column.removeprefix("loss:"))
    ax.set_xlabel("step")
    ax.set_ylabel("masked reconstruction loss")
    ax.set_title("pre-training loss (per-patch normalised MSE of hidden patches)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return fig


def _loss_note(metrics: pd.DataFrame) -> str:
    first, last = metrics.iloc[0], metrics.iloc[-1]
    return (
        f"<p class='meta'>{len(metrics)} logged steps; loss {first['loss']:.3f} at step "
        f"{int(first['step'])} → {last['loss']:.3f} at step {int(last['step'])}.</p>"
    )


def scores_figure(scores: dict[str, dict[str, float]]) -> Figure:
    """Grouped bars: each score for the pre-trained encoder and for random weights."""
    names = [n for n in ("encoder", "random") if n in scores] + sorted(
        n for n in scores if n not in ("encoder", "random")
    )
    keys = [(k, label) for k, label in SCORES if any(k in scores[n] for n in names)]
    fig, ax = plt.subplots(figsize=(8.5, 3.2))
    width = 0.8 / max(1, len(names))
    colors = {"encoder": "#4a7ab5", "random": "#bbbbbb"}
    for i, name in enumerate(names):
        values = [float(scores[name].get(k, float("nan"))) for k, _ in keys]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(keys))]
        bars = ax.bar(xs, values, width, label=_weights_label(name), color=colors.get(name))
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(keys)), [label for _, label in keys], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("frozen-encoder probe on the anchors' land-cover labels", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def _weights_label(name: str) -> str:
    return {"encoder": "pre-trained weights", "random": "random weights"}.get(name, name)


def _scores_html(scores: dict[str, dict[str, float]], png: Callable[[Figure], str]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(_weights_label(name))}</th>"
        + "".join(f"<td>{float(s[k]):.3f}</td>" if k in s else "<td>—</td>" for k, _ in SCORES)
        + "</tr>"
        for name, s in scores.items()
    )
    head = "<tr><th></th>" + "".join(f"<th>{label}</th>" for _, label in SCORES) + "</tr>"
    return png(scores_figure(scores)) + f'<table class="table">{head}{rows}</table>'


def _pictures(paths: list[Path]) -> str:
    out = []
    for path in paths:
        data = base64.b64encode(path.read_bytes()).decode()
        out.append(
            f'<img class="figure" alt="reconstruction {html.escape(path.stem)}" '
            f'src="data:image/png;base64,{data}">'
        )
    note = (
        "<p class='meta'>Each row is one image of a validation group (anchor first): the truth, "
        "what the encoder saw (hidden patches grey), and the reconstruction (seen patches as "
        "they were, hidden ones predicted). True colour, 2-98 % stretch of the truth.</p>"
    )
    return note + "\n".join(out)


def evaluation_html(doc: dict[str, Any], train_dir: Path) -> str:
    """Per task: the scores of the three encoders (each view and label share, mean and 95 %
    interval over head seeds) and the picture of test samples, prediction beside truth."""
    parts = [
        "<p class='meta'>Frozen encoders with a linear head, scored on the test area of an "
        "evaluation set built from the truth on ground the pre-training corpus does not hold "
        "(docs/evaluation.md). no-learning: per-patch band means and standard deviations.</p>"
    ]
    for task, body in doc.get("tasks", {}).items():
        head = (
            "<tr><th>encoder</th><th>view</th><th>labels</th>"
            f"<th>{html.escape(body['metric'])}</th><th>95 % interval</th></tr>"
        )
        rows = "".join(
            f"<tr><td>{html.escape(r['encoder'])}</td><td>{html.escape(r['view'])}</td>"
            f"<td>{r['fraction'] * 100:g} %</td><td>{r['mean']:.3f}</td>"
            f"<td>[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]</td></tr>"
            for r in body["rows"]
        )
        parts.append(f"<h3>{html.escape(task)}</h3><table class='table'>{head}{rows}</table>")
        picture = _evaluation_picture(doc, task, train_dir)
        if picture is not None:
            data = base64.b64encode(picture.read_bytes()).decode()
            parts.append(
                f'<img class="figure" alt="{html.escape(task)}: prediction beside truth" '
                f'src="data:image/png;base64,{data}">'
            )
    for task, why in doc.get("skipped", {}).items():
        parts.append(f"<p class='meta'>{html.escape(task)}: skipped ({html.escape(why)}).</p>")
    return "\n".join(parts)


def _evaluation_picture(doc: dict[str, Any], task: str, train_dir: Path) -> Path | None:
    beside = train_dir / "evaluation-pictures" / f"{task}.png"
    if beside.is_file():
        return beside
    named = doc.get("pictures", {}).get(task)
    return Path(named) if named and Path(named).is_file() else None
