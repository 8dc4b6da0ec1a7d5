"""`catalog serve`: a real STAC API on loopback over local items, until Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import click

from terracorpus.catalogs.server import StacServer


@click.group("catalog")
def catalog_group() -> None:
    """Serve local STAC items as a STAC API."""


@catalog_group.command("serve")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Default: a free port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
def serve_cmd(paths: tuple[Path, ...], port: int, host: str) -> None:
    """Serve DIR_OR_ITEM_FILES (a world directory, or item/collection files) as a STAC API.

    Runs in the foreground until Ctrl-C. Point pystac-client or `terracorpus search` at the
    printed URL.
    """
    with StacServer(list(paths), port=port, host=host) as server:
        docs = server.documents
        click.echo(
            f"STAC API at {server.url} serving {len(docs.items)} items in "
            f"{len(server.collection_ids())} collections ({', '.join(server.collection_ids())})"
        )
        click.echo("press Ctrl-C to stop")
        try:
            server.wait()
        except KeyboardInterrupt:
            click.echo("stopped")


COMMANDS = [catalog_group]
