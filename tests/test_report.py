"""The run report: a self-contained HTML page whose figures a real browser decodes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner

from terracorpus.pipelines.cli import main
from terracorpus.pipelines.config import RunConfig
from terracorpus.pipelines.report import write_report
from terracorpus.pipelines.rundir import Failure, RunDir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _fake_run(root: Path) -> Path:
    """Artifacts shaped like a real run's (column names of the stages' schemas)."""
    rng = np.random.default_rng(0)
    run = RunDir(root, RunConfig())
    n_groups = 40
    gids = [f"g{i:03d}" for i in range(n_groups)]
    # two far-apart regions
    xs = np.where(np.arange(n_groups) < 25, -93.6, 150.0) + rng.uniform(0, 0.1, n_groups)
    ys = np.where(np.arange(n_groups) < 25, 41.5, 69.0) + rng.uniform(0, 0.1, n_groups)
    groups = gpd.GeoDataFrame(
        {"group_id": gids},
        geometry=[shapely.box(x, y, x + 0.01, y + 0.01) for x, y in zip(xs, ys, strict=True)],
        crs=4326,
    )
    run.write_table("groups.parquet", groups, stage="group")
    rows = []
    for g in gids:
        for k, sensor in enumerate(["naip", "sentinel-2-l2a", "landsat-oli-c2-l2"]):
            rows.append(
                {
                    "chip_id": f"{g}/{sensor}",
                    "group_id": g,
                    "sensor": sensor,
                    "role": "anchor" if k == 0 else "member",
                    "datetime": pd.Timestamp("2023-01-15", tz="UTC")
                    + pd.Timedelta(days=int(rng.integers(0, 700))),
                    "cloud_fraction": float(rng.uniform(0, 0.5)),
                    "nodata_fraction": float(rng.uniform(0, 0.2)),
                    "information": float(rng.uniform(0, 1)),
                }
            )
    chips = pd.DataFrame(rows)
    run.write_table("chips.parquet", chips, stage="describe")
    sel = chips[["chip_id", "group_id"]].copy()
    sel["cluster_id"] = rng.integers(0, 8, len(sel))
    sel["kept"] = rng.uniform(size=len(sel)) > 0.4
    sel["reason"] = np.where(sel["kept"], "exemplar", "near_duplicate")
    run.write_table("selection.parquet", sel, stage="dedup")
    run.record_timing("search", 1.5)
    run.record_timing("describe", 12.0)
    run.record_failures([Failure("describe", "chip", "g001/x", "truncated COG")])
    return root


def test_report_holds_every_section_and_is_self_contained(tmp_path: Path) -> None:
    path = write_report(_fake_run(tmp_path / "run"))
    page = path.read_text()
    for title in (
        "Summary",
        "Where the groups are",
        "Sensors, seasons and years",
        "Cloud and quality",
        "Clusters and selection",
        "Where the time went",
        "Failures",
    ):
        assert f"<h2>{title}</h2>" in page
    assert len(re.findall(r'<img class="figure"[^>]*src="data:image/png;base64,', page)) >= 5
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    assert "truncated COG" in page


@pytest.mark.integration
@pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (make test installs it when root)"
)
def test_report_figures_decode_in_headless_chromium(tmp_path: Path) -> None:
    path = write_report(_fake_run(tmp_path / "run"))
    n_figures = path.read_text().count('class="figure"')
    proc = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'data-figures-decoded="(\d+)"', proc.stdout)
    assert m is not None, "the page's load handler did not run"
    assert int(m.group(1)) == n_figures >= 5


def test_report_cli_and_empty_run_dir(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    r = CliRunner().invoke(main, ["report", str(run), "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r.html").exists()
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["report", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "no curation artifacts" in r.output
    assert json.loads((run / "timings.json").read_text())["describe"] == 12.0
