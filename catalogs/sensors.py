"""The sensor registry: what every supported collection's bands are and where providers put them.

A :class:`Sensor` is the one description of an instrument's product that the rest of the
project reads: its bands (centre wavelength and bandwidth in micrometres, native GSD, dtype,
scale/offset, nodata), its QA asset and how to decode it, and the asset keys under which each
provider publishes each band. Built-in sensors live in ``sensors.yaml`` beside this module;
users add their own with :func:`load_registry` and a YAML or TOML file of the same shape, or
extend a built-in one (``extends: builtin``) with a collection, a platform or asset aliases
without copying its entry (:func:`extend_sensor`).
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
    ``radiometry_rules`` name the rules (:mod:`terracorpus.catalogs.radiometry`) that decide
    scale and offset for items that declare none; ``item_radiometry: false`` ignores what
    items declare (for a provider whose ``raster:bands`` are known to be wrong).
    """

    name: str
    title: str
    collections: tuple[str, ...]
    bands: tuple[Band, ...]
    qa: QASpec
    asset_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    band_index: Mapping[str, int] = field(default_factory=dict)
    platforms: tuple[str, ...] = ()
    radiometry_rules: tuple[str, ...] = ()
    item_radiometry: bool = True

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
        "radiometry_rules",
        "item_radiometry",
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
        radiometry_rules=_rules(d.get("radiometry_rules") or (), where),
        item_radiometry=_flag(d.get("item_radiometry", True), where, "item_radiometry"),
    )


def _rules(names: Any, where: str) -> tuple[str, ...]:
    from terracorpus.catalogs.radiometry import RULES  # it imports this module

    if isinstance(names, str) or not isinstance(names, list | tuple):
        raise SensorRegistryError(f"{where}: radiometry_rules must be a list of rule names")
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise SensorRegistryError(
            f"{where}: unknown radiometry_rules {unknown}; known rules: {sorted(RULES)}"
        )
    return tuple(str(n) for n in names)


def _flag(v: Any, where: str, key: str) -> bool:
    if not isinstance(v, bool):
        raise SensorRegistryError(f"{where}: {key} must be true or false, not {v!r}")
    return v


def _read_sensor_file(path: Path, base: SensorRegistry) -> list[Sensor]:
    try:
        text = path.read_text()
    except OSError as e:
        raise SensorRegistryError(f"cannot read sensors file {path}: {e.strerror}") from None
    try:
        doc = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise SensorRegistryError(f"sensors file {path} is not valid YAML/TOML: {e}") from None
    entries = doc.get("sensors") if isinstance(doc, dict) else None
    if isinstance(entries, dict):  # the mapping form: name -> entry
        entries = [_named(name, e, path) for name, e in entries.items()]
    if not isinstance(entries, list):
        raise SensorRegistryError(
            f"sensors file {path} must hold a top-level 'sensors' list (or a mapping of "
            "sensor name to entry)"
        )
    out: list[Sensor] = []
    for entry in entries:
        if isinstance(entry, dict) and "extends" in entry:
            out.append(extend_sensor(base, entry, str(path)))
        else:
            out.append(sensor_from_dict(entry, str(path)))
        base = base.merged([out[-1]])  # a later entry may extend an earlier one
    return out


def _named(name: Any, entry: Any, path: Path) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise SensorRegistryError(f"{path}: sensor {name!r} must be a mapping of its keys")
    if "name" in entry and entry["name"] != name:
        raise SensorRegistryError(
            f"{path}: sensor {name!r} has name {entry['name']!r}; leave 'name' out in the "
            "mapping form (the key is the name)"
        )
    return {**entry, "name": name}


_ADDED = ("collections", "platforms", "radiometry_rules")
_REPLACED = ("title", "qa", "band_index", "item_radiometry")


def extend_sensor(base: SensorRegistry, d: Mapping[str, Any], source: str = "<dict>") -> Sensor:
    """A sensor made from a registered one plus what ``d`` adds, without copying the entry.

    ``extends`` names the sensor to start from; ``builtin`` (or the entry's own name) means
    the registered sensor of the same name, which the result then replaces. Lists
    (``collections``, ``platforms``, ``radiometry_rules``) are added to the base's;
    ``asset_aliases`` are tried before the base's keys of the same band; ``bands`` entries
    change only the keys they give of the band they name; ``title``, ``qa``, ``band_index``
    and ``item_radiometry`` replace. A sensor under a new name needs its own
    ``collections`` (two sensors of one collection would be ambiguous).
    """
    name = d.get("name")
    if not isinstance(name, str):
        raise SensorRegistryError(f"{source}: every sensor needs a string 'name'")
    where = f"{source}: sensor {name!r}"
    parent = name if d["extends"] in ("builtin", name) else str(d["extends"])
    if parent not in base:
        raise SensorRegistryError(
            f"{where} extends {d['extends']!r}, but there is no sensor {parent!r} to extend; "
            f"known sensors: {sorted(s.name for s in base)}"
        )
    unknown = set(d) - {"name", "extends", "bands", "asset_aliases", *_ADDED, *_REPLACED}
    if unknown:
        raise SensorRegistryError(
            f"{where}: unknown keys {sorted(unknown)} for an extending entry; allowed: "
            f"{sorted({'extends', 'bands', 'asset_aliases', *_ADDED, *_REPLACED})}"
        )
    if parent != name and not d.get("collections"):
        raise SensorRegistryError(
            f"{where} extends {parent!r} under a new name and needs its own 'collections'"
        )
    merged = _sensor_dict(base.get(parent))
    merged["name"] = name
    if parent != name:
        merged["collections"] = []
    for key in _ADDED:
        merged[key] = list(dict.fromkeys([*merged.get(key, []), *_as_list(d.get(key), where, key)]))
    for key in _REPLACED:
        if key in d:
            merged[key] = d[key]
    for band, keys in (d.get("asset_aliases") or {}).items():
        old = merged["asset_aliases"].get(band, [])
        merged["asset_aliases"][band] = list(dict.fromkeys([*_as_list(keys, where, band), *old]))
    merged["bands"] = _patched_bands(merged["bands"], d.get("bands") or [], where)
    return sensor_from_dict(merged, source)


def _as_list(v: Any, where: str, key: str) -> list[Any]:
    if v is None:
        return []
    if isinstance(v, str) or not isinstance(v, list | tuple):
        raise SensorRegistryError(f"{where}: {key} must be a list")
    return list(v)


def _patched_bands(bands: list[dict[str, Any]], patches: Any, where: str) -> list[dict[str, Any]]:
    by_name = {b["name"]: b for b in bands}
    for patch in _as_list(patches, where, "bands"):
        if not isinstance(patch, dict) or patch.get("name") not in by_name:
            raise SensorRegistryError(
                f"{where}: a 'bands' entry of an extending sensor changes a band of the base "
                f"and names it; {patch!r} names none of {sorted(by_name)}"
            )
        by_name[patch["name"]].update(patch)
    return list(by_name.values())


def _sensor_dict(s: Sensor) -> dict[str, Any]:
    """The mapping form of a sensor (what :func:`sensor_from_dict` reads)."""
    return {
        "name": s.name,
        "title": s.title,
        "collections": list(s.collections),
        "bands": [dict(vars(b)) for b in s.bands],
        "qa": {"assets": list(s.qa.assets), "kind": s.qa.kind, "gsd": s.qa.gsd},
        "asset_aliases": {k: list(v) for k, v in s.asset_aliases.items()},
        "band_index": dict(s.band_index),
        "platforms": list(s.platforms),
        "radiometry_rules": list(s.radiometry_rules),
        "item_radiometry": s.item_radiometry,
    }


def builtin_registry() -> SensorRegistry:
    """The sensors this project knows out of the box (``sensors.yaml``)."""
    text = resources.files("terracorpus.catalogs").joinpath("sensors.yaml").read_text()
    doc = yaml.safe_load(text)
    return SensorRegistry(sensor_from_dict(s, "sensors.yaml") for s in doc["sensors"])


def load_registry(*extra_files: str | Path) -> SensorRegistry:
    """The built-in registry plus the sensors of each given YAML/TOML file."""
    reg = builtin_registry()
    for f in extra_files:
        reg = reg.merged(_read_sensor_file(Path(f), reg))
    return reg
