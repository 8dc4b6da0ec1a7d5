"""`group`: scenes.parquet -> groups.parquet in a run directory, one Dask task per tile."""

from __future__ import annotations

from pathlib import Path

import click

from terracorpus.pipelines.cluster import dask_client
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
@click.option(
    "--workers", type=click.IntRange(min=1), help="Worker processes of the local cluster."
)
@click.option("--scheduler", help="Address of an existing Dask scheduler, tcp://host:port.")
@click.option(
    "--local", is_flag=True, help="Run every tile in this process, without a Dask cluster."
)
def group_cmd(
    run_dir: Path,
    config_path: Path | None,
    strict: bool,
    workers: int | None,
    scheduler: str | None,
    local: bool,
) -> None:
    """Build image groups from scenes.parquet and write groups.parquet.

    The work runs as one Dask task per spatial tile; the groups are the same with any number
    of workers, or with --local.
    """
    cfg = config_for(run_dir, config_path, needs="scenes.parquet")
    dask = cfg.dask.model_copy(
        update={k: v for k, v in {"workers": workers, "scheduler": scheduler}.items() if v}
    )
    cfg = cfg.model_copy(update={"dask": dask, "strict": cfg.strict or strict})
    with locked_run(run_dir, cfg, STAGE) as run, run.timed(STAGE):
        if local:
            summary = run_group(cfg, run)
        else:
            with dask_client(cfg.dask) as client:
                summary = run_group(cfg, run, client)
    click.echo(f"{run.path(OUTPUT)}: {summary}")


COMMANDS = [group_cmd]
