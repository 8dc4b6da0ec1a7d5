"""`terracorpus report RUN_DIR`: one self-contained HTML page about a curation run.

People would rather look than read: the page holds figures (PNG, embedded as data URIs, so
the file can be mailed or archived alone) for where the groups are, what was kept and why,
how the data spread over sensors and seasons, and where the time went.
"""

from __future__ import annotations

import base64
import html
import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from terracorpus.catalogs.redact import redact_text
from terracorpus.pipelines.corpus.info import picture_grid
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.experiment.report import experiment_sections
from terracorpus.pipelines.report_training import training_sections
from terracorpus.pipelines.rundir import FAILURES, TIMINGS, read_parquet

SEASONS = ("DJF", "MAM", "JJA", "SON")


@dataclass(frozen=True)
class Section:
    title: str
    body: str  # HTML


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img class="figure" alt="figure" src="data:image/png;base64,{data}">'


def _load(run_dir: Path, name: str) -> pd.DataFrame | None:
    p = run_dir / name
    return read_parquet(p) if p.exists() else None


def _season(ts: pd.Series) -> pd.Series:
    month = pd.to_datetime(ts, utc=True).dt.month
    return month.map(lambda m: SEASONS[(m % 12) // 3])


def _footprint_map(groups: pd.DataFrame, selection: pd.DataFrame | None) -> str:
    """Group footprints coloured by cluster, one panel per region (far-apart areas)."""
    gdf = groups.copy()
    cluster = pd.Series(-1, index=gdf.index)
    kept = pd.Series(True, index=gdf.index)
    if selection is not None and "cluster_id" in selection:
        by_group = selection.groupby("group_id")
        cluster = gdf["group_id"].map(by_group["cluster_id"].first()).fillna(-1)
        kept = gdf["group_id"].map(by_group["kept"].any()).fillna(False).astype(bool)
    b = gdf.geometry.bounds  # lon/lat: bounds midpoints, not planar centroids
    cx, cy = (b["minx"] + b["maxx"]) / 2, (b["miny"] + b["maxy"]) / 2
    # Regions: footprint centres on a 2-degree grid, so distant areas get their own panel.
    region = (
        np.floor(cx / 2).astype(int).astype(str) + "," + np.floor(cy / 2).astype(int).astype(str)
    )
    names = sorted(region.unique())[:6]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.2), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, name in zip(axes[0], names, strict=True):
        sel = region == name
        for geom, c, k in zip(gdf.geometry[sel], cluster[sel], kept[sel], strict=True):
            xs, ys = geom.exterior.xy if geom.geom_type == "Polygon" else geom.envelope.exterior.xy
            color = "lightgrey" if c < 0 else cmap(int(c) % 20)
            ax.fill(
                xs, ys, color=color, alpha=0.85 if k else 0.25, ec="black" if k else "none", lw=0.3
            )
        ax.set_title(f"around {cy[sel].mean():.2f}N {cx[sel].mean():.2f}E", fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        _degree_axes(ax)
    fig.suptitle("group footprints coloured by cluster (faded: dropped)", fontsize=10)
    return _png(fig)


def _degree_axes(ax: Any) -> None:
    """Few, short tick labels in degrees (a panel is a few km: full coordinates collide)."""
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=4))
        axis.set_major_formatter(FormatStrFormatter("%.3f°"))
    ax.tick_params(labelsize=7)
    ax.tick_params(axis="x", labelrotation=30)
    ax.set_xlabel("longitude", fontsize=7)
    ax.set_ylabel("latitude", fontsize=7)


def _bars(ax: Any, counts: pd.Series, title: str, color: str = "#4a7ab5") -> None:
    ax.bar([str(i) for i in counts.index], counts.values, color=color)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)


def _coverage(chips: pd.DataFrame) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    _bars(axes[0], chips["sensor"].value_counts().sort_index(), "images per sensor")
    _bars(
        axes[1],
        _season(chips["datetime"]).value_counts().reindex(SEASONS, fill_value=0),
        "images per season",
    )
    years = pd.to_datetime(chips["datetime"], utc=True).dt.year.value_counts().sort_index()
    _bars(axes[2], years, "images per year")
    return _png(fig)


def _quality(chips: pd.DataFrame) -> str:
    cols = [c for c in ("cloud_fraction", "nodata_fraction", "information") if c in chips]
    fig, axes = plt.subplots(1, len(cols), figsize=(4.3 * len(cols), 3.2), squeeze=False)
    for ax, col in zip(axes[0], cols, strict=True):
        ax.hist(chips[col].dropna(), bins=30, color="#6a9f58")
        ax.set_title(col.replace("_", " "), fontsize=9)
    return _png(fig)


def _clusters(selection: pd.DataFrame) -> str:
    sizes_before = selection.groupby("cluster_id").size().sort_values(ascending=False)
    kept = selection[selection["kept"]]
    sizes_after = kept.groupby("cluster_id").size().reindex(sizes_before.index, fill_value=0)
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.4))
    x = np.arange(len(sizes_before))
    axes[0].bar(x, sizes_before.values, color="#bbbbbb", label="before selection")
    axes[0].bar(x, sizes_after.values, color="#c0504d", label="kept")
    axes[0].set_title(f"cluster sizes ({len(sizes_before)} clusters), largest first", fontsize=9)
    axes[0].legend(fontsize=7)
    reasons = selection["reason"].value_counts()
    colors = ["#4a7ab5" if r in ("exemplar", "quota") else "#c0504d" for r in reasons.index]
    _bars(axes[1], reasons, "kept (blue) and dropped (red), by reason")
    for patch, c in zip(axes[1].patches, colors, strict=True):
        patch.set_color(c)
    return _png(fig)


def _timings(timings: dict[str, float]) -> str:
    fig, ax = plt.subplots(figsize=(6.5, 2.8))
    names = list(timings)
    ax.barh(names, [timings[n] for n in names], color="#8064a2")
    total = sum(timings.values()) or 1.0
    for i, n in enumerate(names):
        ax.text(
            timings[n],
            i,
            f" {timings[n]:.1f} s ({100 * timings[n] / total:.0f}%)",
            va="center",
            fontsize=7,
        )
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title("stage timings", fontsize=9)
    return _png(fig)


def _table(df: pd.DataFrame, limit: int = 50) -> str:
    # Credentials never reach the page, even from a table written before they were stripped.
    shown = df.head(limit).map(lambda v: redact_text(v) if isinstance(v, str) else v)
    return shown.to_html(index=False, border=0, classes="table", escape=True)


def _samples(run_dir: Path) -> str | None:
    """True-colour sample groups from the corpus (the picture of `corpus info`)."""
    if not (run_dir / "corpus.zarr").exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        png = picture_grid(str(run_dir), Path(tmp) / "samples.png", n_groups=6).read_bytes()
    data = base64.b64encode(png).decode()
    return f'<img class="figure" alt="sample groups" src="data:image/png;base64,{data}">'


def build_sections(run_dir: Path, train_dir: Path | None = None) -> list[Section]:
    scenes = _load(run_dir, "scenes.parquet")
    groups = _load(run_dir, "groups.parquet")
    chips = _load(run_dir, "chips.parquet")
    selection = _load(run_dir, "selection.parquet")
    failures = _load(run_dir, FAILURES)
    timings_file = run_dir / TIMINGS
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    if scenes is None and groups is None:
        raise StageError(
            f"{run_dir} holds no curation artifacts (no scenes.parquet); run `terracorpus curate` first"
        )

    counts = {
        "scenes": None if scenes is None else len(scenes),
        "groups": None if groups is None else len(groups),
        "chips described": None if chips is None else len(chips),
        "groups kept": None
        if selection is None
        else int(selection[selection["kept"]]["group_id"].nunique()),
        "failures": 0 if failures is None else len(failures),
    }
    rows = "".join(
        f"<tr><th>{k}</th><td>{'—' if v is None else v}</td></tr>" for k, v in counts.items()
    )
    sections = [Section("Summary", f'<table class="table">{rows}</table>')]
    builders: list[tuple[str, Callable[[], str | None]]] = []
    if groups is not None:
        builders.append(("Where the groups are", lambda: _footprint_map(groups, selection)))
    if chips is not None:
        builders.append(("Sensors, seasons and years", lambda: _coverage(chips)))
        builders.append(("Cloud and quality", lambda: _quality(chips)))
    if selection is not None:
        builders.append(("Clusters and selection", lambda: _clusters(selection)))
    builders.append(("Sample groups (anchor first, true colour)", lambda: _samples(run_dir)))
    if timings:
        builders.append(("Where the time went", lambda: _timings(timings)))
    for title, build in builders:
        body = build()
        if body is not None:
            sections.append(Section(title, body))
    sections += [Section(t, body) for t, body in training_sections(train_dir, _png)]
    sections += [Section(t, body) for t, body in experiment_sections(run_dir, _png)]
    if failures is not None and len(failures):
        by = failures.groupby(["stage", "reason"]).size().rename("count").reset_index()
        sections.append(
            Section("Failures", _table(by) + "<h3>first rows</h3>" + _table(failures, 20))
        )
    return sections


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.figure{max-width:100%;display:block;margin:.5em 0}
.table{border-collapse:collapse;font-size:.85em} .table th,.table td{padding:.2em .7em;text-align:left;border-bottom:1px solid #eee}
.meta{color:#666;font-size:.85em}
"""


# Marks, once the page has loaded, how many figures decoded: a headless browser test (and a
# person with dev tools) can read it from <body data-figures-decoded="N">.
_FIGURE_CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.querySelectorAll('img.figure')];
  document.body.dataset.figuresDecoded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
});
</script>"""


def write_report(
    run_dir: str | Path, out: str | Path | None = None, train_dir: str | Path | None = None
) -> Path:
    """Write ``report.html`` for a run directory and return its path.

    ``train_dir`` (the ``--out`` of ``terracorpus train``) adds the loss curves, the probe
    scores and the reconstruction pictures found there.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise StageError(f"run directory {run_dir} does not exist")
    if train_dir is not None and not Path(train_dir).is_dir():
        raise StageError(f"training directory {train_dir} does not exist; train first")
    sections = build_sections(run_dir, None if train_dir is None else Path(train_dir))
    target = Path(out) if out else run_dir / "report.html"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(
        f"<section><h2>{html.escape(s.title)}</h2>\n{s.body}\n</section>" for s in sections
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>terracorpus run report: {html.escape(run_dir.name)}</title><style>{_CSS}</style></head>"
        f"<body><h1>terracorpus run report</h1><p class='meta'>{html.escape(str(run_dir.resolve()))} · {stamp}</p>"
        f"{body}{_FIGURE_CHECK}</body></html>"
    )
    tmp = target.with_suffix(".html.tmp")
    tmp.write_text(page)
    tmp.replace(target)
    return target
