"""The corpus as xarray: georeferenced images, groups and lazily loaded sensors.

These views read through :class:`~terracorpus.training.corpus.CorpusReader`, so every pixel
they hand out passed the reader's checks (the shard exists, the image matches the manifest's
sha256), and they depend on nothing of terracorpus but the corpus format.

- :func:`open_image`: one image as an ``xarray.Dataset``: ``pixels`` (band, y, x) in physical
  units (NaN where a band's nodata), ``valid`` (y, x) uint8, ``x``/``y`` pixel-centre coordinates in
  the image CRS, ``band`` with centre wavelengths, ``time``; CRS and transform through
  rioxarray, so ``ds.rio.to_raster("chip.tif")``, ``ds.rio.reproject(...)`` and
  ``ds.pixels.plot.imshow(...)`` work.
- :func:`open_group`: one group as an ``xarray.DataTree``, one node per image, anchor first.
- :func:`open_sensor`: every image of one sensor as a Dask-backed Dataset, nothing read until
  computed, with per-image metadata (time, CRS, transform, group, cloud, ...) as coordinates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from terracorpus.training.corpus import CorpusReader, Radiometry, SensorInfo, _node, open_corpus
from terracorpus.training.errors import CorpusFormatError

# Per-image arrays of ``sensors/<s>/`` that become coordinates of :func:`open_sensor`.
_IMAGE_COORDS = (
    "image_id",
    "group_index",
    "crs",
    "gsd",
    "lon",
    "lat",
    "cloud_cover",
    "chip_cloud",
    "sun_elevation",
    "off_nadir",
    "source_item",
    "label",
)
_NAT = np.iinfo(np.int64).min
# uint8, not bool: rioxarray reprojects and writes uint8 (GDAL has no boolean type).
_VALID_ATTRS = {"long_name": "usable pixel (1) or nodata, cloud or shadow (0)"}

CorpusLike = str | Path | CorpusReader


def _reader(corpus: CorpusLike) -> CorpusReader:
    return corpus if isinstance(corpus, CorpusReader) else open_corpus(corpus)


def open_image(corpus: CorpusLike, sensor: str, row: int) -> xr.Dataset:
    """One image of the corpus as a georeferenced ``xarray.Dataset``.

    Args:
        corpus: a corpus directory or URL, or an open :class:`CorpusReader`.
        sensor: the sensor's name in the corpus (e.g. ``sentinel-2-l2a``).
        row: the image's row in ``sensors/<sensor>/``.

    Returns:
        A Dataset with ``pixels`` (band, y, x) float32 physical values (NaN where a band's
        nodata), ``valid`` (y, x) uint8 (1 usable), coordinates ``x``/``y`` (pixel centres in the image
        CRS), ``band`` (names) with ``center_wavelength``/``full_width_half_max``/``gsd``,
        scalar ``time``, and its CRS and transform set through rioxarray.

    Raises:
        CorpusFormatError: unknown sensor or row.
        CorpusReadError: the image's shard is missing or corrupt.
    """
    reader = _reader(corpus)
    info = _sensor(reader, sensor)
    if not 0 <= row < info.n_images:
        raise CorpusFormatError(
            f"sensor {sensor} has images 0-{info.n_images - 1} in {reader.path}; no row {row}"
        )
    [(raw, valid)] = reader._read_raw([(sensor, row)])
    meta = _image_meta(reader, sensor, row)
    return _image_dataset(info, raw, valid, meta, reader.radiometry(sensor, row))


def open_group(corpus: CorpusLike, group: int | str) -> xr.DataTree:
    """One group as an ``xarray.DataTree``: one child node per image (see :func:`open_image`).

    Nodes are named ``<k>-<sensor>``, ``k`` the image's place in the group (0 is the anchor);
    the root's attributes hold the group id, index, split and the node names in order.

    Args:
        corpus: a corpus directory or URL, or an open :class:`CorpusReader`.
        group: the group's index in the group tables, or its ``group_id``.
    """
    reader = _reader(corpus)
    index = _group_index(reader, group)
    members = reader.groups.members(index)
    raws = reader._read_raw(members)
    children: dict[str, xr.Dataset] = {}
    for k, ((sensor, row), (raw, valid)) in enumerate(zip(members, raws, strict=True)):
        info = reader.sensors[sensor]
        meta = _image_meta(reader, sensor, row)
        ds = _image_dataset(info, raw, valid, meta, reader.radiometry(sensor, row))
        children[f"{k}-{sensor}"] = ds
    root = xr.Dataset(
        attrs={
            "group_id": str(reader.groups.group_id[index]),
            "group_index": index,
            "split": str(reader.groups.split[index]),
            "images": list(children),
        }
    )
    return xr.DataTree.from_dict({"/": root, **{f"/{k}": v for k, v in children.items()}})


def open_sensor(
    corpus: CorpusLike, sensor: str, *, images_per_chunk: int | None = None
) -> xr.Dataset:
    """Every image of one sensor as a lazily loaded, Dask-backed ``xarray.Dataset``.

    Opening reads only the small per-image metadata; ``pixels`` (image, band, y, x) float32
    physical values (NaN where a band's nodata) and ``valid`` (image, y, x) are read through
    the corpus reader (checksums checked) when computed, ``images_per_chunk`` images per Dask
    task (default: one shard's worth). Images lie on their own grids, so ``y``/``x`` are pixel
    indices here; each image's ``transform`` (image, affine) and ``crs`` are coordinates, as
    are ``time``, ``image_id``, ``group_index``, ``group_id``, ``split``, ``gsd``, ``lon``,
    ``lat``, cloud and sun angles (and ``label`` where the corpus has one), and ``scale`` and
    ``offset`` (image, band): each image's own radiometry. Select one image and georeference
    it with :func:`georeference`.
    """
    import dask.array as da

    reader = _reader(corpus)
    info = _sensor(reader, sensor)
    n, c, (h, w) = info.n_images, len(info.bands), info.chip_size
    per = max(1, images_per_chunk or info.images_per_shard)
    rows = da.arange(n, chunks=per, dtype=np.int64)
    pixels = rows.map_blocks(
        _read_pixels_block,
        reader,
        sensor,
        new_axis=[1, 2, 3],
        chunks=(rows.chunks[0], (c,), (h,), (w,)),
        dtype=np.float32,
        meta=np.empty((0, 0, 0, 0), dtype=np.float32),
    )
    valid = rows.map_blocks(
        _read_valid_block,
        reader,
        sensor,
        new_axis=[1, 2],
        chunks=(rows.chunks[0], (h,), (w,)),
        dtype=np.uint8,
        meta=np.empty((0, 0, 0), dtype=np.uint8),
    )
    coords = {**_band_coords(info), **_sensor_coords(reader, sensor)}
    ds = xr.Dataset(
        {
            "pixels": (("image", "band", "y", "x"), pixels, _pixel_attrs(info)),
            "valid": (("image", "y", "x"), valid, _VALID_ATTRS),
        },
        coords=coords,
        attrs={"sensor": sensor, "corpus": reader.path, "gsd": info.gsd},
    )
    return ds


def georeference(image: xr.Dataset) -> xr.Dataset:
    """One image selected from :func:`open_sensor` (``ds.isel(image=i)``), with ``x``/``y`` in
    its CRS and its CRS and transform set through rioxarray, as :func:`open_image` gives it."""
    if "image" in image.dims:
        raise ValueError("select one image first, e.g. ds.isel(image=0)")
    transform = np.asarray(image["transform"].values, dtype=np.float64)
    out = image.drop_vars(["transform"])
    return _georeferenced(out, transform, str(image["crs"].values))


# -- building the Datasets ------------------------------------------------------------------


def _sensor(reader: CorpusReader, sensor: str) -> SensorInfo:
    try:
        return reader.sensors[sensor]
    except KeyError:
        raise CorpusFormatError(
            f"corpus {reader.path} has no sensor {sensor!r}; it has {sorted(reader.sensors)}"
        ) from None


def _group_index(reader: CorpusReader, group: int | str) -> int:
    if isinstance(group, str):
        hits = np.flatnonzero(reader.groups.group_id == group)
        if len(hits) == 0:
            raise CorpusFormatError(f"corpus {reader.path} has no group {group!r}")
        return int(hits[0])
    if not 0 <= group < len(reader.groups):
        raise CorpusFormatError(
            f"corpus {reader.path} has groups 0-{len(reader.groups) - 1}; no group {group}"
        )
    return int(group)


def _image_meta(reader: CorpusReader, sensor: str, row: int) -> dict[str, Any]:
    meta = reader._meta[sensor]
    return {
        "transform": np.asarray(meta["transform"][row], dtype=np.float64),
        "crs": str(meta["crs"][row]),
        "time": _time(int(meta["datetime"][row])),
        "image_id": str(reader.image_ids(sensor)[row]),
        "gsd": float(meta["gsd"][row]),
        "row": row,
    }


def _time(ns: int) -> np.datetime64:
    return np.datetime64("NaT", "ns") if ns == _NAT else np.datetime64(ns, "ns")


def _physical(raw: np.ndarray, rad: Radiometry) -> np.ndarray:
    """(C, H, W) raw values of one image -> float32 ``value * scale + offset`` per band (the
    image's own), NaN at the band's nodata."""
    scale = rad.scale.astype(np.float32)[:, None, None]
    offset = rad.offset.astype(np.float32)[:, None, None]
    out = raw.astype(np.float32) * scale + offset
    for i, value in enumerate(rad.nodata):
        if not np.isnan(value):
            out[i][raw[i] == value] = np.nan
    return out


def _band_coords(info: SensorInfo) -> dict[str, Any]:
    return {
        "band": [b.name for b in info.bands],
        "center_wavelength": ("band", info.wavelengths, {"units": "um"}),
        "full_width_half_max": ("band", info.bandwidths, {"units": "um"}),
        "band_gsd": ("band", np.array([b.gsd for b in info.bands], np.float32), {"units": "m"}),
    }


def _pixel_attrs(info: SensorInfo, rad: Radiometry | None = None) -> dict[str, Any]:
    """The pixels' attributes; with one image's radiometry, its scale and offset per band
    (a sensor's images each have their own: :func:`open_sensor` gives them as coordinates)."""
    attrs: dict[str, Any] = {
        "long_name": f"{info.name} physical values (stored value * scale + offset)"
    }
    if rad is not None:
        attrs.update(scale=rad.scale.tolist(), offset=rad.offset.tolist())
    return attrs


def _image_dataset(
    info: SensorInfo, raw: np.ndarray, valid: np.ndarray, meta: dict[str, Any], rad: Radiometry
) -> xr.Dataset:
    ds = xr.Dataset(
        {
            "pixels": (("band", "y", "x"), _physical(raw, rad), _pixel_attrs(info, rad)),
            "valid": (("y", "x"), valid.astype(np.uint8), _VALID_ATTRS),
        },
        coords={**_band_coords(info), "time": meta["time"], "image_id": meta["image_id"]},
        attrs={"sensor": info.name, "row": meta["row"], "gsd": meta["gsd"]},
    )
    return _georeferenced(ds, meta["transform"], meta["crs"])


def _georeferenced(ds: xr.Dataset, transform: np.ndarray, crs: str) -> xr.Dataset:
    """x/y pixel-centre coordinates from the affine, CRS and transform written for rioxarray."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    from affine import Affine

    a, b, c, d, e, f = (float(v) for v in transform)
    h, w = ds.sizes["y"], ds.sizes["x"]
    ds = ds.assign_coords(
        x=("x", c + a * (np.arange(w) + 0.5), {"units": "m"}),
        y=("y", f + e * (np.arange(h) + 0.5), {"units": "m"}),
    )
    ds = ds.rio.write_crs(crs).rio.write_transform(Affine(a, b, c, d, e, f))
    ds["pixels"] = ds["pixels"].rio.write_nodata(np.nan, encoded=False)
    ds["valid"] = ds["valid"].rio.write_nodata(0, encoded=False)  # outside the chip: not usable
    return ds


def _sensor_coords(reader: CorpusReader, sensor: str) -> dict[str, Any]:
    group = _node(reader._root, f"sensors/{sensor}", zarr.Group)  # a corpus is input
    coords: dict[str, Any] = {}
    for name in _IMAGE_COORDS:
        if name in group:
            values = np.asarray(group[name][:])  # type: ignore[index]
            text = values.dtype.kind in "OT"  # zarr strings: numpy StringDType, made plain str
            coords[name] = ("image", values.astype(object).astype(str) if text else values)
    datetimes = reader._meta[sensor]["datetime"].astype(np.int64)
    coords["time"] = (
        "image",
        np.where(datetimes == _NAT, np.datetime64("NaT", "ns"), datetimes.astype("datetime64[ns]")),
    )
    coords["transform"] = (
        ("image", "affine"),
        reader._meta[sensor]["transform"].astype(np.float64),
    )
    rads = [reader.radiometry(sensor, row) for row in range(reader.sensors[sensor].n_images)]
    for name in ("scale", "offset"):  # each image's own (format 2), the sensor's (format 1)
        values = np.array([getattr(r, name) for r in rads], dtype=np.float64)
        coords[name] = (("image", "band"), values.reshape(len(rads), -1))
    gi = coords["group_index"][1].astype(np.int64)
    coords["group_id"] = ("image", reader.groups.group_id[gi])
    coords["split"] = ("image", reader.groups.split[gi])
    return coords


def _read_pixels_block(rows: np.ndarray, reader: CorpusReader, sensor: str) -> np.ndarray:
    raws = reader._read_raw([(sensor, int(r)) for r in rows])
    info = reader.sensors[sensor]
    return (
        np.stack(
            [
                _physical(raw, reader.radiometry(sensor, int(r)))
                for r, (raw, _) in zip(rows, raws, strict=True)
            ]
        )
        if raws
        else np.empty((0, len(info.bands), *info.chip_size), np.float32)
    )


def _read_valid_block(rows: np.ndarray, reader: CorpusReader, sensor: str) -> np.ndarray:
    valid = reader._arrays[sensor][1]
    if len(rows) == 0:
        return np.empty((0, *reader.sensors[sensor].chip_size), np.uint8)
    start, stop = int(rows[0]), int(rows[-1]) + 1
    return np.asarray(valid[start:stop]).astype(np.uint8)
