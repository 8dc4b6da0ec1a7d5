"""`search`: STAC APIs -> scenes.parquet in the run directory."""

from __future__ import annotations

from pathlib import Path

import click

from terracorpus.catalogs.search import SAME_ACQUISITION
from terracorpus.pipelines.config import load_config
from terracorpus.pipelines.rundir import locked_run
from terracorpus.pipelines.stages.search import OUTPUT, run_search


@click.command("search")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The run config (YAML or TOML).",
)
@click.option("--run-dir", help="Run directory (default: the config's run_dir).")
@click.option("--strict", is_flag=True, help="Stop at the first unusable item.")
def search_cmd(config_path: Path, run_dir: str | None, strict: bool) -> None:
    """Search the configured STAC APIs and write scenes.parquet."""
    cfg = load_config(config_path)
    update: dict[str, object] = {}
    if run_dir is not None:
        update["run_dir"] = run_dir
    if strict:
        update["strict"] = True
    cfg = cfg.model_copy(update=update)
    with locked_run(cfg.run_dir, cfg, "search") as run, run.timed("search"):
        summary = run_search(cfg, run)
    click.echo(f"{run.path(OUTPUT)}: {summary}")
    failures = run.failures("search")
    twice = int((failures["reason"] == SAME_ACQUISITION).sum()) if len(failures) else 0
    if len(failures) > twice:
        click.echo(
            f"{len(failures) - twice} unusable items recorded in {run.path('failures.parquet')}"
        )
    if twice:
        click.echo(f"{twice} items the same acquisition as a kept one, recorded there too")


COMMANDS = [search_cmd]
