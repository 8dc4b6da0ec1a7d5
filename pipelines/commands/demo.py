"""`report` and `demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from terracorpus.pipelines.demo import PRESETS, run_demo
from terracorpus.pipelines.report import write_report


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Default: RUN_DIR/report.html."
)
@click.option(
    "--train",
    "train_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="A training run (terracorpus train --out) to show: loss, probe scores, reconstructions.",
)
def report_cmd(run_dir: Path, out: Path | None, train_dir: Path | None) -> None:
    """Write a self-contained HTML report of a curation run (and of its training run)."""
    path = write_report(run_dir, out, train_dir)
    click.echo(f"report: {path}")


@click.command("demo")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="small", show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-run"),
    show_default=True,
)
@click.option("--seed", type=int, default=0, show_default=True)
def demo_cmd(preset: str, out: Path, seed: int) -> None:
    """Build the demo world, serve it, curate it, pre-train and probe, and report."""
    result = run_demo(out, preset, seed, echo=click.echo)
    click.echo("\nterracorpus demo finished. Where everything is:")
    width = max(len(k) for k in result.paths)
    for name, path in result.paths.items():
        click.echo(f"  {name:<{width}}  {path}")
    for name, scores in result.probe.items():
        click.echo(
            f"  probe ({'pre-trained' if name == 'encoder' else name} weights): linear macro-F1 "
            f"{scores['linear_macro_f1']:.3f} (acc {scores['linear_accuracy']:.3f}), kNN macro-F1 "
            f"{scores['knn_macro_f1']:.3f} (acc {scores['knn_accuracy']:.3f})"
        )
    for task, doc in result.evaluation.get("tasks", {}).items():
        click.echo(f"  {task} ({doc['metric']}, test area): " + _task_line(doc["rows"]))
    for task, why in result.evaluation.get("skipped", {}).items():
        click.echo(f"  {task}: skipped ({why})")
    click.echo("  timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items()))


def _task_line(rows: list[dict[str, Any]]) -> str:
    """Each encoder's score with all labels, the better view of each."""
    best: dict[str, dict[str, Any]] = {}
    top = max(x["fraction"] for x in rows)
    for r in rows:
        better = r["encoder"] not in best or r["mean"] > best[r["encoder"]]["mean"]
        if r["fraction"] == top and better:
            best[r["encoder"]] = r
    return ", ".join(
        f"{name} {r['mean']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] ({r['view']})"
        for name, r in best.items()
    )


COMMANDS = [report_cmd, demo_cmd]
