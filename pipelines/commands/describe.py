"""`describe`: groups.parquet + scenes.parquet -> chips.parquet, on a Dask cluster."""

from __future__ import annotations

from pathlib import Path

import click

from terracorpus.pipelines.cluster import dask_client
from terracorpus.pipelines.rundir import config_for, locked_run
from terracorpus.pipelines.stages.describe import OUTPUT, STAGE, run_describe


@click.command("describe")
@click.option(
    "--run-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory holding groups.parquet and scenes.parquet.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The run config (default: the one stored in the run directory).",
)
@click.option(
    "--workers", type=click.IntRange(min=1), help="Worker processes of the local cluster."
)
@click.option("--scheduler", help="Address of an existing Dask scheduler, tcp://host:port.")
@click.option("--strict", is_flag=True, help="Stop at the first chip that cannot be described.")
def describe_cmd(
    run_dir: Path,
    config_path: Path | None,
    workers: int | None,
    scheduler: str | None,
    strict: bool,
) -> None:
    """Describe every image of every group: quality flags and a descriptor vector per chip.

    Resumable: batches finished by an interrupted run are kept and not read again.
    """
    cfg = config_for(run_dir, config_path, needs="groups.parquet")
    dask = cfg.dask.model_copy(
        update={k: v for k, v in {"workers": workers, "scheduler": scheduler}.items() if v}
    )
    cfg = cfg.model_copy(update={"dask": dask, "strict": cfg.strict or strict})
    with locked_run(run_dir, cfg, STAGE) as run:
        with run.timed(STAGE), dask_client(cfg.dask) as client:
            summary = run_describe(cfg, run, client)
        run.clear_scratch(STAGE)
    click.echo(f"{run.path(OUTPUT)}: {summary}")


COMMANDS = [describe_cmd]
