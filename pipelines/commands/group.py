"""`group`: scenes.parquet -> groups.parquet in a run directory."""

from __future__ import annotations

import json
from pathlib import Path

import click

from terracorpus.pipelines.config import RunConfig, load_config, parse_config
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.rundir import CONFIG_FILE, RunDir
from terracorpus.pipelines.stages.group import OUTPUT, STAGE, run_group


def _config(run_dir: Path, config_path: Path | None) -> RunConfig:
    """The given config, else the one the run directory was made with."""
    if config_path is not None:
        return load_config(config_path).model_copy(update={"run_dir": str(run_dir)})
    stored = run_dir / CONFIG_FILE
    if not stored.exists():
        raise StageError(
            f"{run_dir} has no {CONFIG_FILE}; pass --config, or run `terracorpus search` first"
        )
    data = json.loads(stored.read_text())["config"]
    return parse_config({**data, "run_dir": str(run_dir)}, source=str(stored))


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
def group_cmd(run_dir: Path, config_path: Path | None) -> None:
    """Build image groups from scenes.parquet and write groups.parquet."""
    cfg = _config(run_dir, config_path)
    run = RunDir(run_dir, cfg)
    with run.timed(STAGE):
        summary = run_group(cfg, run)
    click.echo(f"{run.path(OUTPUT)}: {summary}")


COMMANDS = [group_cmd]
