"""The ``terracorpus`` command line.

Sub-commands live in :mod:`terracorpus.pipelines.commands`, one module per area, each
exporting a ``COMMANDS`` list. Commands of packages that ``pipelines`` must not import
(``training``) are plugged in through the ``terracorpus.commands`` entry-point group and
loaded only when invoked, so ``terracorpus --help`` does not import torch.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
from importlib.metadata import entry_points
from typing import Any

import click

from terracorpus.catalogs.errors import CatalogError
from terracorpus.catalogs.redact import RedactingFilter, redact_text
from terracorpus.curation.errors import CurationError
from terracorpus.pipelines import commands as _commands_pkg
from terracorpus.pipelines.errors import PipelineError

EXIT_USER_ERROR = 2
_USER_ERRORS = (CatalogError, CurationError, PipelineError)


class _TerracorpusGroup(click.Group):
    """A group that turns our own errors into one clear line and a non-zero exit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plugins = {ep.name: ep for ep in entry_points(group="terracorpus.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugins})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in self._plugins:
            try:
                loaded = self._plugins[cmd_name].load()
            except ImportError as e:
                return _unavailable(cmd_name, e)
            if isinstance(loaded, click.Command):
                cmd = loaded
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _USER_ERRORS as e:
            click.echo(f"error: {redact_text(str(e))}", err=True)
            ctx.exit(EXIT_USER_ERROR)


def _unavailable(name: str, error: ImportError) -> click.Command:
    """A stand-in for a plugin command whose dependencies are not installed."""

    def fail() -> None:
        raise click.ClickException(
            f"the '{name}' command needs the training extra: "
            f"pip install 'terracorpus[training]' ({error})"
        )

    return click.Command(name, callback=fail, help="(unavailable: needs terracorpus[training])")


@click.group(cls=_TerracorpusGroup)
@click.version_option(package_name="terracorpus")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Build Earth-observation pre-training corpora from STAC catalogs, and pre-train on them."""
    level = logging.WARNING - 10 * min(verbose, 2)
    # The console shows warnings (more with -v); the run directory's log gets INFO regardless,
    # so the level is set on the handler, not on the loggers.
    console = logging.StreamHandler()
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console.addFilter(RedactingFilter())
    logging.getLogger().addHandler(console)
    logging.getLogger().setLevel(min(level, logging.INFO))
    # urllib3 warns of every retry of an unreachable API; our error says it once, in a line.
    logging.getLogger("urllib3").setLevel(logging.ERROR if verbose == 0 else logging.DEBUG)


def _register_builtin_commands() -> None:
    for info in pkgutil.iter_modules(_commands_pkg.__path__):
        module = importlib.import_module(f"{_commands_pkg.__name__}.{info.name}")
        for cmd in getattr(module, "COMMANDS", ()):
            main.add_command(cmd)


_register_builtin_commands()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
