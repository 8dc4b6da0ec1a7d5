"""The sensor registry: what every supported collection's bands are and where providers put them.

A :class:`Sensor` is the one description of an instrument's product that the rest of the
project reads: its bands (centre wavelength and bandwidth in micrometres, native GSD, dtype,
scale/offset, nodata), its QA asset and how to decode it, and the asset keys under which each
provider publishes each band. Built-in sensors live in ``sensors.yaml`` beside this module;
users add their own with :func:`load_registry` and a YAML or TOML file of the same shape.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from terracorpus.catalogs.errors import SensorRegistryError

QAKind = Literal["scl", "qa_pixel", "demo_mask", "none"]


@dataclass(frozen=True)
class Band:
    """One spectral band of a sensor product.

    Wavelengths are in micrometres (the STAC ``eo`` extension's unit); ``gsd`` in metres.
    Physical value = stored value * ``scale`` + ``offset``.
    """

    name: str
    common_name: str | None
    center_wavelength: float
    full_width_half_max: float
    gsd: float
    dtype: str = "uint16"
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = 0


@dataclass(frozen=True)
class QASpec:
    """Where a sensor's quality/cloud information lives and how to decode it.

    ``assets`` are the asset keys providers use for it, tried in order. ``kind`` names the decoder: ``scl`` (Sentinel-2 scene classification classes),
    ``qa_pixel`` (Landsat Collection 2 bit flags), ``demo_mask`` (the demo world's class
    mask, SCL-coded) or ``none`` (the sensor has no QA asset).
    """

    assets: tuple[str, ...]
    kind: QAKind
    gsd: float | None = None


@dataclass(frozen=True)
class Sensor:
    """A sensor product: bands, QA, and how providers name its assets.

    ``collections`` are the STAC collection ids this sensor's items come in (across
    providers); ``platforms``, when set, restricts a shared collection (Landsat's) to the
    platforms that carry this instrument. ``asset_aliases`` maps each band name to the asset
    keys providers use for it, tried in order; ``band_index`` maps a band to its 1-based
    index inside a multi-band asset (NAIP publishes one 4-band ``image`` asset).
    """

    name: str
    title: str
    collections: tuple[str, ...]
    bands: tuple[Band, ...]
    qa: QASpec
    asset_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    band_index: Mapping[str, int] = field(default_factory=dict)
    platforms: tuple[str, ...] = ()

    @property
    def gsd(self) -> float:
        """The finest native GSD of the sensor's bands, in metres."""
        return min(b.gsd for b in self.bands)

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    def band(self, name: str) -> Band:
        for b in self.bands:
            if name in (b.name, b.common_name):
                return b
        raise SensorRegistryError(
            f"sensor {self.name!r} has no band {name!r}; its bands are {list(self.band_names)}"
        )

    def aliases(self, band: str) -> tuple[str, ...]:
        """Asset keys that may hold ``band``, in the order to try them."""
        b = self.band(band)
        keys = [*self.asset_aliases.get(b.name, ()), b.name]
        if b.common_name:
            keys.append(b.common_name)
        return tuple(dict.fromkeys(keys))

    def matches(self, collection: str, platform: str | None = None) -> bool:
        if collection not in self.collections:
            return False
        if not self.platforms or platform is None:
            return True
        return platform.lower().replace("_", "-") in self.platforms


class SensorRegistry:
    """An ordered set of sensors, looked up by name or by (collection, platform)."""

    def __init__(self, sensors: Iterable[Sensor]) -> None:
        self._sensors: dict[str, Sensor] = {}
        for s in sensors:
            self._sensors[s.name] = s

    def __iter__(self) -> Iterator[Sensor]:
        return iter(self._sensors.values())

    def __len__(self) -> int:
        return len(self._sensors)

    def __contains__(self, name: object) -> bool:
        return name in self._sensors

    def get(self, name: str) -> Sensor:
        try:
            return self._sensors[name]
        except KeyError:
            raise SensorRegistryError(
                f"unknown sensor {name!r}; known sensors: {sorted(self._sensors)}. "
                "Add it in a sensors YAML/TOML file (see docs/sensors.md)."
            ) from None

    def for_collection(self, collection: str, platform: str | None = None) -> Sensor:
        """The sensor whose items come in ``collection`` (and ``platform``, if shared)."""
        matches = [s for s in self if s.matches(collection, platform)]
        if not matches:
            raise SensorRegistryError(
                f"no sensor is registered for collection {collection!r}"
                + (f" (platform {platform!r})" if platform else "")
                + "; add one in a sensors YAML/TOML file (see docs/sensors.md)"
            )
        # A platform-specific match wins over a collection-wide one.
        matches.sort(key=lambda s: not s.platforms)
        return matches[0]

    def merged(self, other: Iterable[Sensor]) -> SensorRegistry:
        """A new registry with ``other``'s sensors added (replacing same-named ones)."""
        return SensorRegistry([*self, *other])


_BAND_KEYS = {
    "name",
    "common_name",
    "center_wavelength",
    "full_width_half_max",
    "gsd",
    "dtype",
    "scale",
    "offset",
    "nodata",
}


def _band_from_dict(d: Mapping[str, Any], where: str) -> Band:
    unknown = set(d) - _BAND_KEYS
    if unknown:
        raise SensorRegistryError(
            f"{where}: band {d.get('name')!r} has unknown keys {sorted(unknown)}; "
            f"allowed: {sorted(_BAND_KEYS)}"
        )
    try:
        return Band(
            name=str(d["name"]),
            common_name=d.get("common_name"),
            center_wavelength=float(d["center_wavelength"]),
            full_width_half_max=float(d["full_width_half_max"]),
            gsd=float(d["gsd"]),
            dtype=str(d.get("dtype", "uint16")),
            scale=float(d.get("scale", 1.0)),
            offset=float(d.get("offset", 0.0)),
            nodata=None if d.get("nodata", 0) is None else float(d.get("nodata", 0)),
        )
    except KeyError as e:
        raise SensorRegistryError(f"{where}: band is missing the key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise SensorRegistryError(f"{where}: band has a bad value: {e}") from None


def sensor_from_dict(d: Mapping[str, Any], source: str = "<dict>") -> Sensor:
    """Build a :class:`Sensor` from the mapping form used in sensors YAML/TOML files."""
    name = d.get("name")
    if not isinstance(name, str):
        raise SensorRegistryError(f"{source}: every sensor needs a string 'name'")
    where = f"{source}: sensor {name!r}"
    known = {
        "name",
        "title",
        "collections",
        "bands",
        "qa",
        "asset_aliases",
        "band_index",
        "platforms",
    }
    unknown = set(d) - known
    if unknown:
        raise SensorRegistryError(
            f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}"
        )
    if not d.get("bands"):
        raise SensorRegistryError(f"{where}: needs at least one band")
    if not d.get("collections"):
        raise SensorRegistryError(f"{where}: needs 'collections', the STAC collection ids")
    bands = tuple(_band_from_dict(b, where) for b in d["bands"])
    qa_d = d.get("qa") or {"assets": [], "kind": "none"}
    kind = qa_d.get("kind", "none")
    if kind not in ("scl", "qa_pixel", "demo_mask", "none"):
        raise SensorRegistryError(
            f"{where}: qa.kind {kind!r} is not one of scl, qa_pixel, demo_mask, none"
        )
    qa = QASpec(assets=tuple(qa_d.get("assets", ())), kind=kind, gsd=qa_d.get("gsd"))
    names = {b.name for b in bands}
    for key in ("asset_aliases", "band_index"):
        strays = set(d.get(key) or {}) - names
        if strays:
            raise SensorRegistryError(
                f"{where}: {key} names bands {sorted(strays)} that are not in its bands "
                f"{sorted(names)}"
            )
    return Sensor(
        name=name,
        title=str(d.get("title", name)),
        collections=tuple(d["collections"]),
        bands=bands,
        qa=qa,
        asset_aliases={k: tuple(v) for k, v in (d.get("asset_aliases") or {}).items()},
        band_index={k: int(v) for k, v in (d.get("band_index") or {}).items()},
        platforms=tuple(p.lower() for p in d.get("platforms", ())),
    )


def _read_sensor_file(path: Path) -> list[Sensor]:
    try:
        text = path.read_text()
    except OSError as e:
        raise SensorRegistryError(f"cannot read sensors file {path}: {e.strerror}") from None
    try:
        doc = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise SensorRegistryError(f"sensors file {path} is not valid YAML/TOML: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sensors"), list):
        raise SensorRegistryError(f"sensors file {path} must hold a top-level 'sensors' list")
    return [sensor_from_dict(s, str(path)) for s in doc["sensors"]]


def builtin_registry() -> SensorRegistry:
    """The sensors this project knows out of the box (``sensors.yaml``)."""
    text = resources.files("terracorpus.catalogs").joinpath("sensors.yaml").read_text()
    doc = yaml.safe_load(text)
    return SensorRegistry(sensor_from_dict(s, "sensors.yaml") for s in doc["sensors"])


def load_registry(*extra_files: str | Path) -> SensorRegistry:
    """The built-in registry plus the sensors of each given YAML/TOML file."""
    reg = builtin_registry()
    for f in extra_files:
        reg = reg.merged(_read_sensor_file(Path(f)))
    return reg
