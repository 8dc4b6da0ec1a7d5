"""The corpus format's names and numbers (``docs/corpus-format.md``), in one place.

Writer, validator and info read these constants so the on-disk layout is spelt once.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import zarr

from terracorpus.pipelines.errors import CorpusError

FORMAT_NAME = "terracorpus-corpus"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 2 adds per-image radiometry (``BAND_ARRAYS``); version 1 has it per sensor only."""
ATTRS_KEY = "terracorpus"

STORE_NAME = "corpus.zarr"
MANIFEST_NAME = "manifest.parquet"
COLLECTION_NAME = "collection.json"

SENSORS_GROUP = "sensors"
GROUPS_GROUP = "groups"

PIXEL_DIMS = ("image", "band", "y", "x")
VALID_DIMS = ("image", "y", "x")

NO_LABEL = -1
"""``label`` value of an image whose land-cover class is unknown."""

# Per-image metadata arrays of ``sensors/<sensor>/``: name -> (dtype, trailing shape).
IMAGE_ARRAYS: dict[str, tuple[str, tuple[int, ...]]] = {
    "image_id": ("str", ()),
    "group_index": ("int64", ()),
    "datetime": ("int64", ()),
    "crs": ("str", ()),
    "transform": ("float64", (6,)),
    "gsd": ("float32", ()),
    "lon": ("float64", ()),
    "lat": ("float64", ()),
    "cloud_cover": ("float32", ()),
    "chip_cloud": ("float32", ()),
    "sun_elevation": ("float32", ()),
    "off_nadir": ("float32", ()),
    "source_item": ("str", ()),
    "source_href": ("str", ()),
}
LABEL_ARRAY = "label"

# Per-image, per-band radiometry of ``sensors/<sensor>/`` (format version 2): name -> dtype;
# shape (image, band). ``nodata`` is NaN where a band has none.
BAND_ARRAYS: dict[str, str] = {"scale": "float64", "offset": "float64", "nodata": "float64"}
BAND_ARRAY_DIMS = ("image", "band")

# Group tables of ``groups/``: name -> (dtype, trailing shape). ``member_*`` have their own
# length (the member count); ``member_offsets`` has groups + 1 rows.
GROUP_ARRAYS: dict[str, tuple[str, tuple[int, ...]]] = {
    "group_id": ("str", ()),
    "anchor_sensor": ("str", ()),
    "anchor_index": ("int64", ()),
    "crs": ("str", ()),
    "bounds": ("float64", (4,)),
    "lonlat_bounds": ("float64", (4,)),
    "cluster_id": ("int64", ()),
    "split": ("str", ()),
}
MEMBER_ARRAYS: dict[str, tuple[str, tuple[int, ...]]] = {
    "member_sensor": ("str", ()),
    "member_index": ("int64", ()),
}


def required_arrays(sensors: Any) -> list[str]:
    """Every array path the format requires of a corpus with ``sensors`` (names)."""
    paths = [
        f"{SENSORS_GROUP}/{s}/{name}"
        for s in sensors
        for name in ("pixels", "valid", *IMAGE_ARRAYS)
    ]
    groups = [*GROUP_ARRAYS, *MEMBER_ARRAYS, "member_offsets"]
    return paths + [f"{GROUPS_GROUP}/{name}" for name in groups]


def missing_arrays(group: zarr.Group, sensors: Any) -> list[str]:
    """The required arrays (:func:`required_arrays`) that ``group`` lacks."""
    missing = []
    for path in required_arrays(sensors):
        try:
            array_at(group, path)
        except CorpusError:
            missing.append(path)
    return missing


def check_root_attrs(attrs: dict[str, Any], where: str, *, require_complete: bool = True) -> None:
    """Refuse a store that is not a corpus, of a version we cannot read, or unfinished."""
    meta = attrs.get(ATTRS_KEY)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CorpusError(
            f"{where} is not a terracorpus corpus (no '{ATTRS_KEY}.format = {FORMAT_NAME}' in "
            "its root attributes)"
        )
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CorpusError(
            f"{where} has corpus format_version {version!r}; this terracorpus reads versions "
            f"{list(READABLE_VERSIONS)}. Upgrade terracorpus, or rebuild the corpus"
        )
    if require_complete and meta.get("complete") is not True:
        raise CorpusError(
            f"{where} is incomplete (a write was interrupted); rerun the materialize command "
            "that made it to finish it"
        )


def root_attrs(group: zarr.Group) -> dict[str, Any]:
    """A group's attributes as a plain dict (zarr types them as JSON)."""
    return cast(dict[str, Any], group.attrs.asdict())


def corpus_meta(group: zarr.Group) -> dict[str, Any]:
    """The ``terracorpus`` mapping of a store's root attributes ({} if absent)."""
    meta = root_attrs(group).get(ATTRS_KEY)
    return dict(meta) if isinstance(meta, dict) else {}


def array_at(group: zarr.Group, path: str) -> zarr.Array[Any]:
    """The array at ``path`` below ``group``; a missing one is a :class:`CorpusError`."""
    try:
        node = group[path]
    except KeyError:
        raise CorpusError(f"the corpus lacks the array {path}") from None
    if not isinstance(node, zarr.Array):
        raise CorpusError(f"{path} in the corpus is a group, not an array")
    return node


def values_at(group: zarr.Group, path: str, rows: slice | int = slice(None)) -> np.ndarray:
    """Rows of the array at ``path`` as numpy; string arrays come back as object arrays."""
    out = np.asarray(array_at(group, path)[rows])
    return out.astype(object) if out.dtype.kind in "TU" else out
