"""Describing data: sensors, STAC search and parsing, the local STAC API, the demo world."""

from terracorpus.catalogs.errors import (
    CatalogError,
    ItemParseError,
    SensorRegistryError,
    ServerError,
    StacApiError,
    WorldError,
)
from terracorpus.catalogs.scene import AssetRef, Grid, SceneRecord
from terracorpus.catalogs.sensors import (
    Band,
    QASpec,
    Sensor,
    SensorRegistry,
    builtin_registry,
    load_registry,
)

__all__ = [
    "AssetRef",
    "Band",
    "CatalogError",
    "Grid",
    "ItemParseError",
    "QASpec",
    "SceneRecord",
    "Sensor",
    "SensorRegistry",
    "SensorRegistryError",
    "ServerError",
    "StacApiError",
    "WorldError",
    "builtin_registry",
    "load_registry",
]
