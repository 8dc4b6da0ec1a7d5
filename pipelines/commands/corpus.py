"""`materialize`, `corpus validate`, `corpus info`: write, check and look at a corpus."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from terracorpus.pipelines.rundir import config_for, locked_run

if TYPE_CHECKING:
    from terracorpus.pipelines.corpus.scenes import Labeller


def _storage_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs as fsspec storage options (values parsed as JSON when they can be)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--storage-option")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    if "endpoint_url" in out:  # s3fs takes it inside client_kwargs
        out.setdefault("client_kwargs", {})["endpoint_url"] = out.pop("endpoint_url")
    return out


_storage_option = click.option(
    "--storage-option",
    "-o",
    "storage_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec option for an object-store target (repeatable), e.g. -o endpoint_url=http://...",
)


def _world_labeller(
    ctx: click.Context, param: click.Parameter, value: Path | None
) -> Labeller | None:
    """The demo world's labeller for ``--world-labels DIR`` (imported only when asked)."""
    if value is None:
        return None
    from terracorpus.catalogs.world.truth import WORLD_FILE
    from terracorpus.pipelines.corpus.labels import WorldLabeller

    if not (value / WORLD_FILE).is_file():
        raise click.BadParameter(
            f"{value} has no {WORLD_FILE}; give the directory `terracorpus world` wrote",
            ctx=ctx,
            param=param,
        )
    return WorldLabeller(str(value))


world_labels_option = click.option(
    "--world-labels",
    "labeller",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    callback=_world_labeller,
    metavar="WORLD_DIR",
    help="Label each group with its majority land-cover class from this demo world's truth.",
)


@click.command("materialize")
@click.option("--run-dir", required=True, help="Run directory with scenes, groups and selection.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Run config (default: the one stored in the run directory).",
)
@click.option("--workers", type=int, help="Dask worker processes of a local cluster.")
@click.option("--scheduler", help="Address of an existing Dask scheduler (tcp://host:port).")
@click.option("--out", help="Corpus directory or URL (default: the run directory).")
@click.option("--append-to", help="Grow this existing corpus with the run's kept groups.")
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image.")
@click.option("--allow-mixed", is_flag=True, help="Accept inputs made with another config.")
@_storage_option
@world_labels_option
def materialize_cmd(
    run_dir: str,
    config_path: Path | None,
    workers: int | None,
    scheduler: str | None,
    out: str | None,
    append_to: str | None,
    strict: bool,
    allow_mixed: bool,
    storage_pairs: tuple[str, ...],
    labeller: Labeller | None,
) -> None:
    """Write the kept groups' full-resolution pixels as a sharded Zarr corpus.

    Resumable: after a crash, run the same command again; only missing shards are written.
    """
    from terracorpus.pipelines.cluster import dask_client
    from terracorpus.pipelines.stages.materialize import STAGE, run_materialize

    cfg = config_for(run_dir, config_path, needs="selection.parquet")
    dask = cfg.dask.model_copy(
        update={k: v for k, v in (("workers", workers), ("scheduler", scheduler)) if v is not None}
    )
    cfg = cfg.model_copy(update={"run_dir": run_dir, "dask": dask, "strict": cfg.strict or strict})
    with locked_run(run_dir, cfg, STAGE, allow_mixed=allow_mixed) as run:
        with run.timed(STAGE), dask_client(cfg.dask) as client:
            summary = run_materialize(
                cfg,
                run,
                client,
                out=out,
                append_to=append_to,
                storage_options=_storage_options(storage_pairs),
                labeller=labeller,
            )
        run.clear_scratch(STAGE + ("-append" if append_to else ""))
    click.echo(summary)


@click.group("corpus")
def corpus_group() -> None:
    """Check and inspect a corpus (a directory with corpus.zarr, manifest and collection)."""


@corpus_group.command("validate")
@click.argument("path")
@click.option("--no-pixels", is_flag=True, help="Skip decoding every image (shard digests only).")
@_storage_option
def validate_cmd(path: str, no_pixels: bool, storage_pairs: tuple[str, ...]) -> None:
    """Check every shard, array and manifest row; exit 1 naming what is wrong."""
    from terracorpus.pipelines.corpus.validate import validate_corpus

    report = validate_corpus(
        path, storage_options=_storage_options(storage_pairs), check_pixels=not no_pixels
    )
    for p in report.problems:
        click.echo(f"problem: {p}", err=True)
    status = "OK" if report.ok else f"INVALID ({len(report.problems)} problems)"
    click.echo(
        f"{path}: {status}: {report.groups} groups, {report.images} images, "
        f"{report.shards_checked} shards checked"
    )
    if not report.ok:
        sys.exit(1)


@corpus_group.command("info")
@click.argument("path")
@click.option(
    "--png",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save a picture grid of sample groups (true colour) here.",
)
@click.option("--groups", "n_groups", default=6, show_default=True, help="Groups in the picture.")
@_storage_option
def info_cmd(path: str, png: Path | None, n_groups: int, storage_pairs: tuple[str, ...]) -> None:
    """Sensors, counts, size, extent; optionally a PNG of sample groups."""
    from terracorpus.pipelines.corpus.info import corpus_info, picture_grid

    opts = _storage_options(storage_pairs)
    for line in corpus_info(path, opts).lines():
        click.echo(line)
    if png is not None:
        click.echo(
            f"picture       {picture_grid(path, png, n_groups=n_groups, storage_options=opts)}"
        )


def _bbox(value: str | None) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    try:
        w, s, e, n = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not west,south,east,north", param_hint="--bbox"
        ) from None
    if not (w <= e and s <= n):
        raise click.BadParameter(f"{value!r}: west > east or south > north", param_hint="--bbox")
    return (w, s, e, n)


_query_options = [
    click.option("--bbox", help="lon/lat west,south,east,north the group footprint intersects."),
    click.option(
        "--datetime", "when", help="An image taken then: 2023-06-01, or start/end ('..' open)."
    ),
    click.option(
        "--sensor", "sensors", multiple=True, help="An image of this sensor (repeatable)."
    ),
]


def _with_query(fn: Any) -> Any:
    for option in reversed(_query_options):
        fn = option(fn)
    return fn


def _query(bbox: str | None, when: str | None, sensors: tuple[str, ...]) -> Any:
    from terracorpus.pipelines.corpus.subset import Query, parse_datetime

    start, end = parse_datetime(when)
    return Query(bbox=_bbox(bbox), start=start, end=end, sensors=sensors)


@corpus_group.command("search")
@click.argument("path")
@_with_query
@click.option("--json", "as_json", is_flag=True, help="One JSON object per matching group.")
@_storage_option
def search_cmd(
    path: str,
    bbox: str | None,
    when: str | None,
    sensors: tuple[str, ...],
    as_json: bool,
    storage_pairs: tuple[str, ...],
) -> None:
    """List the groups with an image of SENSOR taken in DATETIME whose footprint meets BBOX."""
    from terracorpus.pipelines.corpus.location import CorpusLocation
    from terracorpus.pipelines.corpus.subset import search_groups

    location = CorpusLocation.of(path, _storage_options(storage_pairs))
    found = search_groups(location, _query(bbox, when, sensors))
    if as_json:
        for record in found.to_dict("records"):
            click.echo(json.dumps(record, default=str))
        return
    for row in found.itertuples(index=False):
        click.echo(
            f"{row.group_id}  {row.split:<5}  {row.images} images ({row.sensors})  "
            f"{row.start:%Y-%m-%d}..{row.end:%Y-%m-%d}  "
            f"[{row.west:.4f}, {row.south:.4f}, {row.east:.4f}, {row.north:.4f}]"
        )
    click.echo(f"{len(found)} groups match", err=True)


@corpus_group.command("subset")
@click.argument("path")
@click.argument("out")
@_with_query
@click.option("--group", "group_ids", multiple=True, help="A group id to keep (repeatable).")
@_storage_option
def subset_cmd(
    path: str,
    out: str,
    bbox: str | None,
    when: str | None,
    sensors: tuple[str, ...],
    group_ids: tuple[str, ...],
    storage_pairs: tuple[str, ...],
) -> None:
    """Write the matching groups (whole, every image) of PATH as a new corpus in OUT."""
    import tempfile

    from terracorpus.pipelines.corpus.location import CorpusLocation
    from terracorpus.pipelines.corpus.subset import search_groups, write_subset

    opts = _storage_options(storage_pairs)
    source = CorpusLocation.of(path, opts)
    found = search_groups(source, _query(bbox, when, sensors))
    ids = [g for g in found["group_id"] if not group_ids or g in set(group_ids)]
    with tempfile.TemporaryDirectory(prefix="terracorpus-subset-") as scratch:
        summary = write_subset(source, CorpusLocation.of(out, opts), ids, scratch=Path(scratch))
    images = ", ".join(f"{s} {n}" for s, n in sorted(summary.images.items()))
    click.echo(f"{out}: {summary.groups} groups, images {images} (of {path})")


@corpus_group.command("stac")
@click.argument("path")
@click.option("--out", help="Where to write (default: PATH/items.parquet).")
@_storage_option
def stac_cmd(path: str, out: str | None, storage_pairs: tuple[str, ...]) -> None:
    """Write the corpus's images as STAC Items in stac-geoparquet (one Item per image)."""
    from terracorpus.pipelines.corpus.items import write_items
    from terracorpus.pipelines.corpus.location import CorpusLocation

    target = write_items(CorpusLocation.of(path, _storage_options(storage_pairs)), out)
    click.echo(f"STAC items: {target}")


COMMANDS = [materialize_cmd, corpus_group]
