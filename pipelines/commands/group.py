"""`group`: scenes.parquet -> groups.parquet in a run directory."""

from __future__ import annotations

from pathlib import Path

import click

from terracorpus.pipelines.rundir import config_for, locked_run
from terracorpus.pipelines.stages.group import OUTPUT, STAGE, run_group


@click.command("group")
@click.option(
    "--run-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory holding scenes.parquet.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The run config (default: the one stored in the run directory).",
)
@click.option(
    "--strict", is_flag=True, help="Stop at the first scene that cannot be grouped (bad CRS, grid)."
)
def group_cmd(run_dir: Path, config_path: Path | None, strict: bool) -> None:
    """Build image groups from scenes.parquet and write groups.parquet."""
    cfg = config_for(run_dir, config_path, needs="scenes.parquet")
    if strict:
        cfg = cfg.model_copy(update={"strict": True})
    with locked_run(run_dir, cfg, STAGE) as run, run.timed(STAGE):
        summary = run_group(cfg, run)
    click.echo(f"{run.path(OUTPUT)}: {summary}")


COMMANDS = [group_cmd]
