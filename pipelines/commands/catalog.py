"""`catalog serve`: a real STAC API on loopback over local items, until Ctrl-C."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from terracorpus.catalogs.server import StacServer


@click.group("catalog")
def catalog_group() -> None:
    """Serve local STAC items as a STAC API."""


@catalog_group.command("serve")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Default: a free port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse an unusable item (e.g. one without a collection) instead of leaving it out.",
)
def serve_cmd(paths: tuple[Path, ...], port: int, host: str, strict: bool) -> None:
    """Serve DIR_OR_ITEM_FILES (a world directory, or item/collection files) as a STAC API.

    Runs in the foreground until Ctrl-C, SIGTERM or SIGHUP; each stops the server process
    and removes its temporary directory. Point pystac-client or `terracorpus search` at the
    printed URL. Items a STAC API cannot serve (no `collection`) are left out with a warning
    and counted; `--strict` refuses them.
    """
    with (
        _stop_on_signals(),
        StacServer(list(paths), port=port, host=host, strict=strict) as server,
    ):
        docs = server.documents
        if docs.skipped:
            click.echo(
                f"warning: left out {len(docs.skipped)} unusable item(s), e.g. "
                f"{docs.skipped[0]} (--strict refuses them)",
                err=True,
            )
        click.echo(
            f"STAC API at {server.url} serving {len(docs.items)} items in "
            f"{len(server.collection_ids())} collections ({', '.join(server.collection_ids())})"
        )
        click.echo("press Ctrl-C to stop")
        try:
            server.wait()
        except KeyboardInterrupt:
            click.echo("stopped")


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP as Ctrl-C: Python's default for them ends the process at once,
    skipping the cleanup that stops the server child and removes its temporary files."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


COMMANDS = [catalog_group]
