"""The report's training part: loss per sensor, probe scores against random weights and
reconstruction pictures, read from a training directory; decoded by a real browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from click.testing import CliRunner
from test_report import CHROMIUM, _fake_run

from terracorpus.pipelines.cli import main
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.report import write_report
from terracorpus.pipelines.report_training import read_metrics

TITLES = (
    "Pre-training loss",
    "Probe scores against random weights",
    "Masked groups: the model&#x27;s reconstruction beside the truth",
)


def _fake_training(root: Path) -> Path:
    """What `terracorpus train` and `probe --json` leave behind (their formats)."""
    (root / "reconstructions").mkdir(parents=True)
    lines = [
        {"step": s, "lr": 1e-3, "loss": 5.0 / s**0.3, "groups_per_s": 10.0, "time": 0.0,
         "sensor_loss": {"naip": 5.5 / s**0.3, **({"sentinel-2-l2a": 4.0 / s**0.2} if s % 20 else {})}}
        for s in (1, 10, 20, 30, 40)
    ]  # fmt: skip
    (root / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    scores = {
        name: {"linear_macro_f1": f1, "knn_macro_f1": f1 - 0.1, "linear_accuracy": 0.8,
               "knn_accuracy": 0.7, "n_train": 40, "n_val": 10, "n_classes": 5}
        for name, f1 in (("encoder", 0.69), ("random", 0.38))
    }  # fmt: skip
    (root / "probe.json").write_text(json.dumps(scores))
    for i in range(2):
        plt.imsave(root / "reconstructions" / f"group-{i:02d}.png", np.random.rand(40, 120, 3))
    return root


def test_training_sections_come_from_the_training_directory(tmp_path: Path) -> None:
    train = _fake_training(tmp_path / "train")
    page = write_report(_fake_run(tmp_path / "run"), train_dir=train).read_text()
    for title in TITLES:
        assert f"<h2>{title}</h2>" in page
    assert "0.690" in page and "0.380" in page  # the scores table
    assert page.count('alt="reconstruction group-') == 2
    without = write_report(_fake_run(tmp_path / "run2")).read_text()
    assert not any(f"<h2>{t}</h2>" in without for t in TITLES)
    with pytest.raises(StageError, match="does not exist"):
        write_report(tmp_path / "run", train_dir=tmp_path / "nope")


def test_metrics_give_one_loss_column_per_sensor(tmp_path: Path) -> None:
    metrics = read_metrics(_fake_training(tmp_path / "t") / "metrics.jsonl")
    assert metrics is not None
    assert list(metrics.columns) == ["step", "loss", "loss:naip", "loss:sentinel-2-l2a"]
    assert metrics["loss:sentinel-2-l2a"].isna().sum() == 2  # steps whose batches had none


def test_report_cli_takes_the_training_directory(tmp_path: Path) -> None:
    train = _fake_training(tmp_path / "train")
    run = _fake_run(tmp_path / "run")
    got = CliRunner().invoke(main, ["report", str(run), "--train", str(train)])
    assert got.exit_code == 0, got.output
    assert "<h2>Pre-training loss</h2>" in (run / "report.html").read_text()


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it)")
def test_training_figures_decode_in_headless_chromium(tmp_path: Path) -> None:
    import subprocess

    path = write_report(_fake_run(tmp_path / "run"), train_dir=_fake_training(tmp_path / "t"))
    n_figures = path.read_text().count('class="figure"')
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
         path.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'data-figures-decoded="(\d+)"', proc.stdout)
    assert m is not None and int(m.group(1)) == n_figures >= 9
