"""Read a terracorpus corpus (format versions 1 and 2, ``docs/corpus-format.md``) without our
other code. Version 2 stores each image's scale, offset and nodata; version 1 one per sensor.

:class:`CorpusReader` parses the store's attributes and small tables once (sensors and their
bands, the group CSR tables, the manifest's per-image checksums) and reads pixels one image at
a time, so the store is never loaded into memory. It holds no open Zarr handle while pickled:
each DataLoader worker opens the store itself on first use.

A missing or corrupt shard raises :class:`CorpusReadError` naming the shard; an image whose raw
bytes do not match the manifest's sha256 is never returned; a metadata or group-table array
whose chunk fails its CRC32C (or cannot be decompressed) raises :class:`CorpusReadError`
naming the array.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zarr
from zarr.core.sync import sync

from terracorpus.training.errors import CorpusFormatError, CorpusReadError

log = logging.getLogger(__name__)

_Node = TypeVar("_Node", zarr.Array[Any], zarr.Group)

FORMAT_NAME = "terracorpus-corpus"
SUPPORTED_VERSIONS = (1, 2)
_RADIOMETRY_ARRAYS = ("scale", "offset", "nodata")  # per image and band, format version 2
_META_ARRAYS = ("datetime", "transform", "gsd", "lon", "lat", "crs")


@dataclass(frozen=True)
class Band:
    """One band of a sensor, as the corpus describes it (wavelengths in µm, GSD in m)."""

    name: str
    center_wavelength: float
    full_width_half_max: float
    gsd: float
    scale: float
    offset: float
    nodata: float | None


@dataclass(frozen=True)
class SensorInfo:
    """A sensor of the corpus: its bands, GSD, chip size, image count and shard length."""

    name: str
    bands: tuple[Band, ...]
    gsd: float
    dtype: str
    chip_size: tuple[int, int]
    n_images: int
    images_per_shard: int

    @property
    def wavelengths(self) -> np.ndarray:
        return np.array([b.center_wavelength for b in self.bands], dtype=np.float32)

    @property
    def bandwidths(self) -> np.ndarray:
        return np.array([b.full_width_half_max for b in self.bands], dtype=np.float32)


@dataclass(frozen=True)
class GroupTable:
    """The group tables of ``groups/``: member CSR layout (anchor first) and the split."""

    group_id: np.ndarray  # (G,) str
    member_offsets: np.ndarray  # (G + 1,) int64
    member_sensor: np.ndarray  # (M,) str
    member_index: np.ndarray  # (M,) int64
    split: np.ndarray  # (G,) str

    def __len__(self) -> int:
        return len(self.group_id)

    def members(self, group: int) -> list[tuple[str, int]]:
        """(sensor, row) of every image of ``group``; the anchor comes first."""
        start, stop = int(self.member_offsets[group]), int(self.member_offsets[group + 1])
        return [
            (str(s), int(r))
            for s, r in zip(
                self.member_sensor[start:stop], self.member_index[start:stop], strict=True
            )
        ]

    def indices(self, split: str | None) -> np.ndarray:
        """Group indices of ``split`` (``train``/``val``), or of every group when None."""
        if split is None:
            return np.arange(len(self), dtype=np.int64)
        return np.flatnonzero(self.split == split).astype(np.int64)


@dataclass
class RawImage:
    """One image read from the corpus, in physical units, with its ground frame and metadata."""

    sensor: str
    row: int
    pixels: np.ndarray  # (C, H, W) float32, physical values, 0 where not valid
    valid: np.ndarray  # (H, W) bool
    transform: np.ndarray  # (6,) float64 affine (a, b, c, d, e, f) in the image's CRS
    gsd: float
    lon: float
    lat: float
    datetime_ns: int  # ns since epoch; INT64 min when unknown
    crs: str


@dataclass(frozen=True)
class Radiometry:
    """Per-band scale, offset and nodata of one image: physical = stored * scale + offset.

    Each is a (C,) float64 array; ``nodata`` is NaN where a band has none (NaN pixels are
    never valid, so a NaN nodata value of float data means the same).
    """

    scale: np.ndarray
    offset: np.ndarray
    nodata: np.ndarray


class CorpusReader:
    """A format-v1 or v2 corpus opened for reading; pickles to its path, reopens the store on use.

    Args:
        path: the corpus directory (holding ``corpus.zarr``) or the ``corpus.zarr`` store itself;
            a local path or an fsspec URL.
        verify: check each image's raw bytes against the manifest's sha256 (cheap; on by default).
    """

    def __init__(self, path: str | Path, *, verify: bool = True) -> None:
        self.path = str(path)
        self.store_path = _store_path(self.path)
        self.verify = verify
        attrs = _read_attrs(self.store_path)
        self.attrs: dict[str, Any] = attrs
        self.sensors: dict[str, SensorInfo] = _parse_sensors(attrs, self._root)
        self.groups: GroupTable = _read_groups(self._root, self.store_path)
        if len(self.groups) == 0:
            raise CorpusFormatError(
                f"corpus {self.path} has no groups; build it from a curation run that kept groups"
            )
        self._checksums = _read_checksums(self.path, self.sensors) if verify else {}
        self._checked_shards: set[tuple[str, int]] = set()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_root", "_arrays", "_meta", "_radiometry"):
            state.pop(key, None)  # Zarr handles are reopened in the receiving process
        return state

    @cached_property
    def _root(self) -> zarr.Group:
        return _open_group(self.store_path)

    @cached_property
    def _arrays(self) -> dict[str, tuple[Any, Any]]:
        root = self._root
        return {s: (root[f"sensors/{s}/pixels"], root[f"sensors/{s}/valid"]) for s in self.sensors}

    @cached_property
    def _meta(self) -> dict[str, dict[str, np.ndarray]]:
        # Per-image metadata is small (tens of bytes per image): read once per process.
        return {
            s: {name: _read(self._root, f"sensors/{s}/{name}") for name in _META_ARRAYS}
            for s in self.sensors
        }

    @cached_property
    def _radiometry(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """Per sensor, the (N, C) scale, offset and nodata arrays (format 2), or None (format
        1: the sensor's band values apply to every image)."""
        if self.attrs.get("format_version") == 1:
            return {s: None for s in self.sensors}
        out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray] | None] = {}
        for s, info in self.sensors.items():
            group = _node(self._root, f"sensors/{s}", zarr.Group)
            missing = [n for n in _RADIOMETRY_ARRAYS if n not in group]
            if missing:
                raise CorpusFormatError(
                    f"corpus {self.path} (format version 2) lacks sensors/{s}/{missing[0]}; the "
                    "corpus is damaged: check it with `terracorpus corpus validate`"
                )
            scale, offset, nodata = (_read(group, n).astype(np.float64) for n in _RADIOMETRY_ARRAYS)
            want = (info.n_images, len(info.bands))
            if scale.shape != want or offset.shape != want or nodata.shape != want:
                raise CorpusFormatError(
                    f"corpus {self.path}: sensors/{s} radiometry arrays have shapes "
                    f"{scale.shape}, {offset.shape}, {nodata.shape}; expected {want}"
                )
            out[s] = (scale, offset, nodata)
        return out

    def radiometry(self, sensor: str, row: int) -> Radiometry:
        """The scale, offset and nodata of image ``row`` of ``sensor``."""
        per_image = self._radiometry[sensor]
        if per_image is not None:
            scale, offset, nodata = per_image
            return Radiometry(scale[row], offset[row], nodata[row])
        bands = self.sensors[sensor].bands
        return Radiometry(
            np.array([b.scale for b in bands], dtype=np.float64),
            np.array([b.offset for b in bands], dtype=np.float64),
            np.array([math.nan if b.nodata is None else b.nodata for b in bands], np.float64),
        )

    def labels(self, sensor: str) -> np.ndarray | None:
        """The optional per-image ``label`` array of ``sensor`` (int, -1 unknown), or None."""
        group = _node(self._root, f"sensors/{sensor}", zarr.Group)
        if "label" not in group:
            return None
        return _read(group, "label").astype(np.int64)

    def image_ids(self, sensor: str) -> np.ndarray:
        """The ``image_id`` array of ``sensor`` (str)."""
        return _read(self._root, f"sensors/{sensor}/image_id").astype(object).astype(str)

    def shard_key(self, sensor: str, row: int) -> str:
        """The store key of the shard (or chunk) that holds image ``row`` of ``sensor``."""
        pixels = self._arrays[sensor][0]
        per = self.sensors[sensor].images_per_shard
        key = pixels.metadata.chunk_key_encoding.encode_chunk_key((row // per, 0, 0, 0))
        return f"sensors/{sensor}/pixels/{key}"

    def read_image(self, sensor: str, row: int, max_px: int | None = None) -> RawImage:
        """Read one image: physical float32 pixels (0 where not valid), validity and metadata.

        With ``max_px``, an image whose longer side exceeds it is area-averaged (valid pixels
        only) by the smallest integer factor ``k`` that fits; GSD and transform scale by ``k``.
        """
        return self.read_images([(sensor, row)], max_px)[0]

    def read_images(
        self, members: list[tuple[str, int]], max_px: int | None = None
    ) -> list[RawImage]:
        """Read several images, e.g. one group's, with all their reads in flight at once."""
        raws = self._read_raw(members)
        return [
            self._image(s, r, raw, valid, max_px)
            for (s, r), (raw, valid) in zip(members, raws, strict=True)
        ]

    def _image(
        self, sensor: str, row: int, raw: np.ndarray, valid: np.ndarray, max_px: int | None
    ) -> RawImage:
        rad = self.radiometry(sensor, row)
        valid &= nodata_ok(raw, rad.nodata)
        h, w = valid.shape
        k = 1 if max_px is None else max(1, math.ceil(max(h, w) / max_px))
        values, valid = area_average(raw, valid, k)
        meta = self._meta[sensor]
        t = np.asarray(meta["transform"][row], dtype=np.float64)
        return RawImage(
            sensor=sensor,
            row=row,
            pixels=_to_physical(values, valid, rad),
            valid=valid,
            transform=np.array([t[0] * k, t[1] * k, t[2], t[3] * k, t[4] * k, t[5]]),
            gsd=float(meta["gsd"][row]) * k,
            lon=float(meta["lon"][row]),
            lat=float(meta["lat"][row]),
            datetime_ns=int(meta["datetime"][row]),
            crs=str(meta["crs"][row]),
        )

    def _read_raw(self, members: list[tuple[str, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Raw pixels and validity of each (sensor, row), read concurrently (one event-loop
        round trip instead of two per image), then checked against the manifest digests."""
        for sensor, row in members:
            self._check_shard_exists(sensor, row)
        # Opened here, not lazily inside the coroutines: opening the store calls Zarr's sync(),
        # which fails inside its own event loop (a reader whose shards were all checked before
        # it was pickled to a DataLoader worker reached its first open there).
        arrays = self._arrays

        async def one(sensor: str, row: int) -> list[Any]:
            pixels, valid = arrays[sensor]
            return list(
                await asyncio.gather(
                    pixels._async_array.getitem(row), valid._async_array.getitem(row)
                )
            )

        async def every() -> list[Any]:
            return list(
                await asyncio.gather(*(one(s, r) for s, r in members), return_exceptions=True)
            )

        results = sync(every())
        out = []
        for (sensor, row), result in zip(members, results, strict=True):
            if isinstance(result, BaseException):  # codec errors: RuntimeError/ValueError
                raise CorpusReadError(
                    f"corpus {self.path}: shard {self.shard_key(sensor, row)} is corrupt "
                    f"(reading image {row} of {sensor}: {result}); re-run materialize to rewrite it"
                ) from result
            raw, mask = np.asarray(result[0]), np.asarray(result[1]).astype(bool)
            self._verify(sensor, row, raw)
            out.append((raw, mask))
        return out

    def _verify(self, sensor: str, row: int, raw: np.ndarray) -> None:
        expected = self._checksums.get(sensor)
        if (
            expected is not None
            and hashlib.sha256(raw.tobytes()).digest() != expected[row].tobytes()
        ):
            raise CorpusReadError(
                f"corpus {self.path}: image {row} of {sensor} in shard "
                f"{self.shard_key(sensor, row)} does not match its manifest sha256; the shard is "
                "corrupt, run `terracorpus corpus validate` and re-run materialize"
            )

    def _check_shard_exists(self, sensor: str, row: int) -> None:
        # Zarr returns fill values for a missing shard; we must never hand those out as pixels.
        shard = (sensor, row // self.sensors[sensor].images_per_shard)
        if shard in self._checked_shards:
            return
        key = self.shard_key(sensor, row)
        store = self._arrays[sensor][0].store_path.store
        if not sync(store.exists(key)):
            raise CorpusReadError(
                f"corpus {self.path}: shard {key} is missing (image {row} of {sensor}); "
                "the corpus is incomplete, re-run materialize"
            )
        self._checked_shards.add(shard)


def open_corpus(path: str | Path, *, verify: bool = True) -> CorpusReader:
    """Open a corpus for reading; raises :class:`CorpusFormatError` when it is not readable."""
    return CorpusReader(path, verify=verify)


def _read(group: zarr.Group, key: str) -> np.ndarray:
    """A whole (small) array of the store as numpy, its chunks' checksums verified."""
    arr = _node(group, key, zarr.Array)
    try:
        return np.asarray(arr[:])
    except Exception as e:  # codec errors: a CRC32C mismatch, an undecodable zstd frame
        path = f"{group.path}/{key}".lstrip("/")
        raise CorpusReadError(
            f"corpus array {path} cannot be decoded: a chunk is corrupt ({type(e).__name__}: "
            f"{e}); run `terracorpus corpus validate` and re-run materialize"
        ) from e


def _node(group: zarr.Group, key: str, kind: type[_Node]) -> _Node:
    """``group[key]``, which must be a ``kind`` (an array or a group): a corpus is input."""
    node = group[key]
    if not isinstance(node, kind):
        want = "an array" if kind is zarr.Array else "a group"
        raise CorpusReadError(
            f"{group.path}/{key} in the corpus store is not {want}; the corpus is damaged: "
            "check it with `terracorpus corpus validate`"
        )
    return node


def _store_path(path: str) -> str:
    stripped = path.rstrip("/")
    return stripped if stripped.endswith(".zarr") else f"{stripped}/corpus.zarr"


def _open_group(store_path: str) -> zarr.Group:
    try:
        return zarr.open_group(store_path, mode="r")
    except (
        FileNotFoundError,
        zarr.errors.GroupNotFoundError,
        zarr.errors.NodeTypeValidationError,
    ) as e:
        raise CorpusFormatError(
            f"no corpus at {store_path}: expected a Zarr v3 group written by `terracorpus "
            "materialize` (give the corpus directory or its corpus.zarr)"
        ) from e


def _read_attrs(store_path: str) -> dict[str, Any]:
    attrs = _open_group(store_path).attrs.asdict().get("terracorpus")
    if not isinstance(attrs, dict) or attrs.get("format") != FORMAT_NAME:
        raise CorpusFormatError(
            f"{store_path} is not a terracorpus corpus: its attributes lack "
            f"terracorpus.format = {FORMAT_NAME!r}"
        )
    version = attrs.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise CorpusFormatError(
            f"corpus {store_path} has format_version {version!r}; this reader reads versions "
            f"{list(SUPPORTED_VERSIONS)}: upgrade terracorpus or rebuild the corpus"
        )
    if attrs.get("complete") is not True:
        raise CorpusFormatError(
            f"corpus {store_path} is incomplete (complete is not true): its write did not finish; "
            "re-run materialize to finish it"
        )
    return attrs


def _parse_sensors(attrs: dict[str, Any], root: zarr.Group) -> dict[str, SensorInfo]:
    sensors = attrs.get("sensors") or {}
    if not sensors:
        raise CorpusFormatError("corpus has no sensors in its attributes; it is empty")
    return {name: _parse_sensor(name, spec, root) for name, spec in sensors.items()}


def _parse_sensor(name: str, spec: dict[str, Any], root: zarr.Group) -> SensorInfo:
    try:
        pixels = root[f"sensors/{name}/pixels"]
    except KeyError as e:
        raise CorpusFormatError(
            f"sensor {name} is listed but sensors/{name}/pixels is missing"
        ) from e
    if not isinstance(pixels, zarr.Array):
        raise CorpusReadError(
            f"sensors/{name}/pixels is a group, not an array; the corpus is damaged"
        )
    bands = tuple(_parse_band(name, b) for b in spec.get("bands", []))
    if len(bands) != pixels.shape[1]:
        raise CorpusFormatError(
            f"sensor {name}: attributes list {len(bands)} bands but pixels has {pixels.shape[1]}"
        )
    shards = pixels.shards or pixels.chunks
    return SensorInfo(
        name=name,
        bands=bands,
        gsd=float(spec.get("gsd", bands[0].gsd if bands else math.nan)),
        dtype=str(pixels.dtype),
        chip_size=(int(pixels.shape[2]), int(pixels.shape[3])),
        n_images=int(pixels.shape[0]),
        images_per_shard=int(shards[0]),
    )


def _parse_band(sensor: str, b: dict[str, Any]) -> Band:
    wl = b.get("center_wavelength")
    if not isinstance(wl, int | float) or not math.isfinite(wl) or wl <= 0:
        raise CorpusFormatError(
            f"sensor {sensor} band {b.get('name')!r} has no center_wavelength (got {wl!r}); "
            "the model is conditioned on wavelengths: add them to the sensor registry and rebuild"
        )
    fwhm = b.get("full_width_half_max")
    fwhm = float(fwhm) if isinstance(fwhm, int | float) and math.isfinite(fwhm) else 0.0
    nodata = b.get("nodata")
    return Band(
        name=str(b.get("name")),
        center_wavelength=float(wl),
        full_width_half_max=fwhm,
        gsd=float(b.get("gsd", math.nan)),
        scale=float(b.get("scale", 1.0) if b.get("scale") is not None else 1.0),
        offset=float(b.get("offset", 0.0) if b.get("offset") is not None else 0.0),
        nodata=None if nodata is None else float(nodata),
    )


def _read_groups(root: zarr.Group, store_path: str) -> GroupTable:
    try:
        arrays = {k: _read(root, f"groups/{k}") for k in _GROUP_ARRAYS}
    except KeyError as e:
        raise CorpusFormatError(f"corpus {store_path} lacks the group table {e}") from e
    return GroupTable(
        group_id=arrays["group_id"].astype(object).astype(str),
        member_offsets=arrays["member_offsets"].astype(np.int64),
        member_sensor=arrays["member_sensor"].astype(object).astype(str),
        member_index=arrays["member_index"].astype(np.int64),
        split=arrays["split"].astype(object).astype(str),
    )


_GROUP_ARRAYS = ("group_id", "member_offsets", "member_sensor", "member_index", "split")


def _read_checksums(path: str, sensors: dict[str, SensorInfo]) -> dict[str, np.ndarray]:
    import fsspec
    import pyarrow.parquet as pq

    manifest = f"{path.rstrip('/').removesuffix('/corpus.zarr')}/manifest.parquet"
    fs, fs_path = fsspec.core.url_to_fs(manifest)
    if not fs.exists(fs_path):
        log.warning("%s not found: pixels are read without checksum verification", manifest)
        return {}
    with fs.open(fs_path, "rb") as f:
        table = pq.read_table(f, columns=["sensor", "row", "sha256"]).to_pandas()
    out: dict[str, np.ndarray] = {}
    for sensor, info in sensors.items():
        rows = table[table["sensor"] == sensor]
        digests = np.zeros((info.n_images, 32), dtype=np.uint8)
        digests[rows["row"].to_numpy()] = np.frombuffer(
            bytes.fromhex("".join(rows["sha256"])), dtype=np.uint8
        ).reshape(-1, 32)
        if len(rows) == info.n_images:
            out[sensor] = digests
        else:
            log.warning(
                "manifest lists %d of %d images of %s: not verifying it",
                len(rows),
                info.n_images,
                sensor,
            )
    return out


def nodata_ok(raw: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """(C, H, W) stored values -> (H, W) True where no band holds its nodata value (NaN
    nodata: NaN pixels are not ok)."""
    ok = np.ones(raw.shape[1:], dtype=bool)
    for i, value in enumerate(nodata):
        ok &= ~np.isnan(raw[i]) if math.isnan(value) else raw[i] != value
    return ok


def area_average(raw: np.ndarray, valid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the valid pixels of each ``k x k`` block: (C, H, W), (H, W) -> (C, H/k, W/k) float32
    and validity (at least half of the block valid). ``k = 1`` only converts to float32."""
    if k <= 1:
        return raw.astype(np.float32), valid
    c, h, w = raw.shape
    hk, wk = h // k, w // k
    weight = valid[: hk * k, : wk * k].reshape(hk, k, wk, k).astype(np.float32)
    blocks = raw[:, : hk * k, : wk * k].reshape(c, hk, k, wk, k).astype(np.float32)
    count = weight.sum((1, 3))  # (hk, wk)
    mean = (blocks * weight[None]).sum((2, 4)) / np.maximum(count, 1.0)[None]
    return mean, count >= (k * k) / 2


def _to_physical(values: np.ndarray, valid: np.ndarray, rad: Radiometry) -> np.ndarray:
    """``values * scale + offset`` per band, 0 where not valid, in place on ``values`` (a
    float32 array :func:`area_average` made for this image alone)."""
    scale = rad.scale.astype(np.float32)[:, None, None]
    offset = rad.offset.astype(np.float32)[:, None, None]
    phys = values if values.dtype == np.float32 else values.astype(np.float32)
    phys *= scale
    phys += offset
    phys[:, ~valid] = 0.0
    return phys
