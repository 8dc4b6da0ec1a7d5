"""`terracorpus dedup`: cluster a run's chips and write its selection."""

from __future__ import annotations

from pathlib import Path

import click

from terracorpus.pipelines.cluster import dask_client
from terracorpus.pipelines.commands.run import with_overrides
from terracorpus.pipelines.rundir import config_for, locked_run


@click.command("dedup")
@click.option(
    "--run-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory holding chips.parquet.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Run config (default: the one stored in the run directory).",
)
@click.option("--scheduler", help="Address of an existing Dask scheduler, tcp://host:port.")
@click.option("--workers", type=int, help="Worker processes of the local Dask cluster.")
@click.option("--allow-mixed", is_flag=True, help="Accept chips.parquet made with another config.")
def dedup_cmd(
    run_dir: Path,
    config_path: Path | None,
    scheduler: str | None,
    workers: int | None,
    allow_mixed: bool,
) -> None:
    """Cluster chips by hierarchical affinity propagation and write selection.parquet.

    Prints the cluster summary: levels, cluster sizes, and chips kept and dropped by reason.
    """
    from terracorpus.pipelines.stages.dedup import require_chips, run_dedup

    cfg = with_overrides(
        config_for(run_dir, config_path, needs="chips.parquet"),
        run_dir=str(run_dir),
        scheduler=scheduler,
        workers=workers,
    )
    with locked_run(cfg.run_dir, cfg, "dedup", allow_mixed=allow_mixed) as run:
        require_chips(run)  # before starting a cluster for nothing
        with run.timed("dedup"), dask_client(cfg.dask) as client:
            summary = run_dedup(cfg, run, client)
    click.echo(summary.table())
    click.echo(f"wrote {run.path('selection.parquet')}")


COMMANDS = [dedup_cmd]
