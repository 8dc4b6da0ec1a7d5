"""Exceptions of ``terracorpus.catalogs``: one base class, specific subclasses."""

from __future__ import annotations


class CatalogError(Exception):
    """Base class of every error raised by ``terracorpus.catalogs``."""


class SensorRegistryError(CatalogError):
    """A sensor is unknown, or a sensors file is malformed."""


class ItemParseError(CatalogError):
    """A STAC item cannot be turned into a scene record (the message says which and why)."""


class StacApiError(CatalogError):
    """A STAC API was unreachable or answered with an error, after retries."""


class ServerError(CatalogError):
    """The embedded STAC API server could not be started (port taken, no items, ...)."""


class WorldError(CatalogError):
    """The demo world could not be built (bad output path, unknown preset, ...)."""
