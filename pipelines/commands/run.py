"""`config init`, `config check` and `curate`: the whole curation as one command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from terracorpus.catalogs.redact import strip_credentials
from terracorpus.pipelines.commands.corpus import world_labels_option
from terracorpus.pipelines.config import RunConfig, load_config
from terracorpus.pipelines.configdoc import example_config
from terracorpus.pipelines.curate import STAGE_NAMES, curate
from terracorpus.pipelines.errors import ConfigError

if TYPE_CHECKING:
    from terracorpus.pipelines.corpus.scenes import Labeller


@click.group("config")
def config_group() -> None:
    """Write or check a run config."""


@config_group.command("init")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def config_init(path: Path, force: bool) -> None:
    """Write a commented example run config to PATH."""
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; pass --force to overwrite it")
    path.write_text(example_config())
    click.echo(
        f"wrote {path}; edit search.apis and the area, then `terracorpus config check {path}`"
    )


@config_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--offline", is_flag=True, help="Do not connect to the Dask scheduler the config names."
)
def config_check(path: Path, offline: bool) -> None:
    """Validate a run config without running anything: everything `curate` would refuse.

    Checks the keys and values, the search area and time range, that every collection has a
    sensor, the sensor files, and that the Dask scheduler (if one is named) answers.
    """
    from terracorpus.pipelines.preflight import preflight

    cfg = load_config(path)
    problems = preflight(cfg, scheduler=not offline)
    if problems:
        raise ConfigError(
            f"run config {path} would be refused ({len(problems)} problem(s)):\n"
            + "\n".join(f"  {p}" for p in problems)
        )
    apis = ", ".join(strip_credentials(a.url) for a in cfg.search.apis) or "none yet"
    click.echo(
        f"{path}: valid (config hash {cfg.config_hash()[:12]}; APIs: {apis}; run dir {cfg.run_dir})"
    )


def with_overrides(
    cfg: RunConfig,
    *,
    run_dir: str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    strict: bool | None = None,
) -> RunConfig:
    """The config with command-line overrides applied (None leaves a setting as it is)."""
    dask = cfg.dask.model_copy(
        update={
            k: v for k, v in {"scheduler": scheduler, "workers": workers}.items() if v is not None
        }
    )
    top = {"dask": dask}
    if run_dir is not None:
        top["run_dir"] = run_dir  # type: ignore[assignment]
    if strict:
        top["strict"] = True  # type: ignore[assignment]
    return cfg.model_copy(update=top)


@click.command("curate")
@click.argument(
    "config_path", metavar="RUN_CONFIG", type=click.Path(dir_okay=False, path_type=Path)
)
@click.option("--run-dir", help="Run directory (default: the config's run_dir).")
@click.option("--scheduler", help="Address of an existing Dask scheduler, tcp://host:port.")
@click.option("--workers", type=int, help="Worker processes of the local Dask cluster.")
@click.option("--strict", is_flag=True, help="Stop at the first failed scene or chip.")
@click.option("--until", type=click.Choice(STAGE_NAMES), help="Stop after this stage.")
@click.option(
    "--force",
    multiple=True,
    type=click.Choice(STAGE_NAMES),
    help="Rerun this stage (and the ones after it).",
)
@click.option("--allow-mixed", is_flag=True, help="Accept artifacts made with another config.")
@click.option(
    "--plan",
    "plan_only",
    is_flag=True,
    help="Search, then print the estimated groups, images, bytes, tasks and time per stage "
    "(from a measured sample) and stop.",
)
@world_labels_option
def curate_cmd(
    config_path: Path,
    run_dir: str | None,
    scheduler: str | None,
    workers: int | None,
    strict: bool,
    until: str | None,
    force: tuple[str, ...],
    allow_mixed: bool,
    plan_only: bool,
    labeller: Labeller | None,
) -> None:
    """Run search → group → describe → dedup → materialize into one run directory.

    Stages whose outputs are complete and current are skipped; an interrupted stage resumes.
    """
    cfg = with_overrides(
        load_config(config_path),
        run_dir=run_dir,
        scheduler=scheduler,
        workers=workers,
        strict=strict,
    )
    if plan_only:
        _plan(cfg, force, allow_mixed)
        return
    result = curate(
        cfg, force=force, until=until, allow_mixed=allow_mixed, echo=click.echo, labeller=labeller
    )
    ran = [s.name for s in result.stages if s.status == "ran"]
    click.echo(
        f"curate: {result.run_dir} ({len(ran)} stage(s) ran, {result.failures} failure(s) and "
        f"{result.set_aside} scene(s) or group(s) set aside by the rules, recorded in "
        f"{Path(result.run_dir) / 'failures.parquet'})"
    )


def _plan(cfg: RunConfig, force: tuple[str, ...], allow_mixed: bool) -> None:
    """Search (unless current), then print the plan; it is also written to plan.json."""
    from terracorpus.pipelines.plan import make_plan
    from terracorpus.pipelines.rundir import RunDir

    curate(cfg, force=force, until="search", allow_mixed=allow_mixed, echo=click.echo)
    plan = make_plan(cfg, RunDir(cfg.run_dir, cfg, allow_mixed=allow_mixed))
    click.echo(plan.table())


COMMANDS = [config_group, curate_cmd]
