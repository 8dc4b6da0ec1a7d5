"""Build small, valid format-v1 corpora from synthetic arrays, for tests and benchmarks.

The synthetic world: every group is a ground footprint with a land-cover map of a few classes
(smooth blobs); each class has a reflectance spectrum (a smooth function of wavelength) and a
stripe texture of its own orientation and period, each date a seasonal gain. Every image of a group samples the same map at its sensor's GSD, so
co-located images really do share information and the majority class is a learnable label.

    write_synthetic_corpus(tmp_path / "corpus", n_groups=8)

writes ``corpus.zarr`` (sharded Zarr v3 with every array of ``docs/corpus-format.md``),
``manifest.parquet`` (with per-image sha256) and a minimal ``collection.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

EPOCH_2020_NS = 1_577_836_800 * 10**9
DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class SyntheticSensor:
    """A made-up sensor: band wavelengths (µm), bandwidths, GSD (m), storage encoding."""

    name: str
    wavelengths: tuple[float, ...]
    bandwidths: tuple[float, ...]
    gsd: float
    dtype: str = "uint16"
    scale: float = 1e-4
    offset: float = 0.0
    nodata: int = 0


S2LIKE = SyntheticSensor("s2like", (0.49, 0.56, 0.665, 0.842), (0.098, 0.045, 0.038, 0.145), 10.0)
LSLIKE = SyntheticSensor(
    "lslike", (0.482, 0.561, 0.655), (0.06, 0.057, 0.037), 30.0, scale=2.75e-5, offset=-0.2
)
NAIPLIKE = SyntheticSensor(
    "naiplike", (0.635, 0.555, 0.465, 0.835), (0.09, 0.07, 0.06, 0.12), 2.5, "uint8", 1 / 255
)


@dataclass(frozen=True)
class CorpusSpec:
    """What to build. ``members`` says how many images of each sensor a group has (anchor first)."""

    n_groups: int = 8
    footprint_m: float = 240.0
    sensors: tuple[SyntheticSensor, ...] = (S2LIKE, LSLIKE)
    members: dict[str, int] = field(default_factory=lambda: {"s2like": 2, "lslike": 1})
    images_per_shard: int = 4
    n_classes: int = 4
    with_labels: bool = True
    val_fraction: float = 0.25
    cloud_fraction: float = 0.1
    seed: int = 0


def write_synthetic_corpus(
    path: str | Path,
    spec: CorpusSpec | None = None,
    *,
    attrs_override: dict[str, Any] | None = None,
    write_manifest: bool = True,
    **spec_kwargs: Any,
) -> Path:
    """Write a valid format-v1 corpus at ``path`` (a directory) and return it.

    Args:
        path: the corpus directory to create (``corpus.zarr``, ``manifest.parquet`` inside).
        spec: the world to build; keyword arguments build a :class:`CorpusSpec` instead.
        attrs_override: keys replacing those of the root ``terracorpus`` attributes (to write
            bad corpora in tests: another ``format_version``, ``complete: false``, ...).
        write_manifest: also write ``manifest.parquet`` with per-image sha256.
    """
    spec = spec or CorpusSpec(**spec_kwargs)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    world = _make_world(spec, rng)
    root = zarr.open_group(out / "corpus.zarr", mode="w", zarr_format=3)
    manifest: list[dict[str, Any]] = []
    for sensor in spec.sensors:
        images = [im for im in world["images"] if im["sensor"] == sensor.name]
        _write_sensor(root, sensor, images, spec, manifest)
    _write_groups(root, world["groups"], spec)
    attrs = _root_attrs(spec, world)
    attrs.update(attrs_override or {})
    root.attrs["terracorpus"] = attrs
    if write_manifest:
        _write_manifest(out / "manifest.parquet", manifest)
    (out / "collection.json").write_text(json.dumps(_collection(spec), indent=2))
    return out


def class_spectrum(cls: int, wavelength: np.ndarray) -> np.ndarray:
    """Reflectance (0-1) of land-cover class ``cls`` at ``wavelength`` µm: a smooth curve."""
    centre = 0.45 + 0.35 * cls
    return 0.08 + 0.25 * np.exp(-(((wavelength - centre) / 0.3) ** 2)) + 0.03 * cls


def _make_world(spec: CorpusSpec, rng: np.random.Generator) -> dict[str, Any]:
    fine = 2.5 if any(s.gsd <= 2.5 for s in spec.sensors) else min(s.gsd for s in spec.sensors)
    n_fine = round(spec.footprint_m / fine)
    images: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    rows = {s.name: 0 for s in spec.sensors}
    for g in range(spec.n_groups):
        cover = _landcover(n_fine, spec.n_classes, rng)
        texture = _texture(cover, fine, spec.n_classes, rng)
        x0, y0 = 500_000.0 + 2_000.0 * g, 4_000_000.0 + 1_000.0 * (g % 3)
        members: list[tuple[str, int]] = []
        for sensor in spec.sensors:
            for k in range(spec.members.get(sensor.name, 0)):
                shift = 0.0 if not members else float(rng.integers(-1, 2)) * sensor.gsd / 2
                img = _image(sensor, cover, texture, fine, x0 + shift, y0 - shift, g, k, spec, rng)
                img["row"] = rows[sensor.name]
                rows[sensor.name] += 1
                images.append(img)
                members.append((sensor.name, img["row"]))
        values, counts = np.unique(cover, return_counts=True)
        groups.append(
            {
                "group_id": f"g{g:05d}",
                "members": members,
                "x0": x0,
                "y0": y0,
                "split": "val" if rng.random() < spec.val_fraction else "train",
                "label": int(values[np.argmax(counts)]),
            }
        )
    return {"images": images, "groups": groups, "rows": rows}


def _landcover(n: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A class map of a dominant class with a few blobs of others, (n, n) int."""
    major = int(rng.integers(n_classes))
    cover = np.full((n, n), major, dtype=np.int16)
    yy, xx = np.mgrid[0:n, 0:n]
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0, n, 2)
        radius = rng.uniform(0.1, 0.3) * n
        cover[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = int(rng.integers(n_classes))
    return cover


def _texture(
    cover: np.ndarray, fine: float, n_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Class-specific stripes (orientation and wavelength per class, random phase): a spatial
    structure that masked patches can be reconstructed from, and that tells classes apart."""
    n = cover.shape[0]
    yy, xx = np.mgrid[0:n, 0:n] * fine  # metres
    out = np.zeros(cover.shape)
    for c in range(n_classes):
        theta, period = np.pi * c / n_classes, 40.0 + 20.0 * c
        wave = np.sin(
            2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period
            + rng.uniform(0, 2 * np.pi)
        )
        out[cover == c] = wave[cover == c]
    return out


def _image(
    sensor: SyntheticSensor,
    cover: np.ndarray,
    texture: np.ndarray,
    fine: float,
    x0: float,
    y0: float,
    g: int,
    k: int,
    spec: CorpusSpec,
    rng: np.random.Generator,
) -> dict[str, Any]:
    factor = round(sensor.gsd / fine)
    n = cover.shape[0] // factor
    day = int(rng.integers(0, 365 * 3))
    gain = 1.0 + 0.2 * np.sin(2 * np.pi * day / 365.25)
    wl = np.asarray(sensor.wavelengths)
    spectra = np.stack([class_spectrum(c, wl) for c in range(spec.n_classes)])  # (K, C)
    fine_refl = spectra[cover] * (1.0 + 0.3 * texture[..., None])  # (n_fine, n_fine, C)
    refl = fine_refl[: n * factor, : n * factor].reshape(n, factor, n, factor, -1).mean((1, 3))
    refl = refl * gain + rng.normal(0, 0.005, refl.shape)
    valid = np.ones((n, n), dtype=np.uint8)
    if rng.random() < spec.cloud_fraction * 3:
        cy, cx = rng.integers(0, n, 2)
        r = max(1, n // 6)
        valid[max(0, cy - r) : cy + r, max(0, cx - r) : cx + r] = 0
    info = np.iinfo(sensor.dtype)
    stored = np.clip(np.round((refl - sensor.offset) / sensor.scale), info.min + 1, info.max)
    pixels = np.moveaxis(stored, -1, 0).astype(sensor.dtype)  # (C, H, W)
    pixels[:, valid == 0] = sensor.nodata
    return {
        "sensor": sensor.name,
        "pixels": pixels,
        "valid": valid,
        "group": g,
        "image_id": f"g{g:05d}/{sensor.name}-{k}",
        "datetime": EPOCH_2020_NS + day * DAY_NS,
        "transform": (sensor.gsd, 0.0, x0, 0.0, -sensor.gsd, y0),
        "lon": -93.0 + 0.02 * g,
        "lat": 36.0 + 0.01 * (g % 3),
    }


def _write_sensor(
    root: zarr.Group,
    sensor: SyntheticSensor,
    images: Sequence[dict[str, Any]],
    spec: CorpusSpec,
    manifest: list[dict[str, Any]],
) -> None:
    grp = root.create_group(f"sensors/{sensor.name}")
    n, (c, h, w) = len(images), images[0]["pixels"].shape
    pixels = grp.create_array(
        "pixels",
        shape=(n, c, h, w),
        chunks=(1, c, h, w),
        shards=(spec.images_per_shard, c, h, w),
        dtype=sensor.dtype,
        compressors=ZstdCodec(level=3),
        dimension_names=["image", "band", "y", "x"],
        fill_value=0,
        attributes=_pixel_attrs(sensor),
    )
    pixels[:] = np.stack([im["pixels"] for im in images])
    valid = grp.create_array(
        "valid",
        shape=(n, h, w),
        chunks=(1, h, w),
        shards=(spec.images_per_shard, h, w),
        dtype="uint8",
        dimension_names=["image", "y", "x"],
        fill_value=0,
    )
    valid[:] = np.stack([im["valid"] for im in images])
    columns: dict[str, Any] = {
        "image_id": np.array([im["image_id"] for im in images]),
        "group_index": np.array([im["group"] for im in images], dtype=np.int64),
        "datetime": np.array([im["datetime"] for im in images], dtype=np.int64),
        "crs": np.array(["EPSG:32615"] * n),
        "transform": np.array([im["transform"] for im in images], dtype=np.float64),
        "gsd": np.full(n, sensor.gsd, dtype=np.float32),
        "lon": np.array([im["lon"] for im in images], dtype=np.float64),
        "lat": np.array([im["lat"] for im in images], dtype=np.float64),
        "cloud_cover": np.full(n, np.nan, dtype=np.float32),
        "chip_cloud": np.array([1 - im["valid"].mean() for im in images], dtype=np.float32),
        "sun_elevation": np.full(n, 45.0, dtype=np.float32),
        "off_nadir": np.full(n, np.nan, dtype=np.float32),
        "source_item": np.array([im["image_id"].replace("/", "_") for im in images]),
        "source_href": np.array(["http://127.0.0.1/synthetic"] * n),
    }
    for name, values in columns.items():
        dims = ["image", "affine"] if values.ndim == 2 else ["image"]
        _array(grp, name, values, dims)
    for im in images:
        manifest.append(
            {
                "image_id": im["image_id"],
                "group_index": im["group"],
                "sensor": sensor.name,
                "row": im["row"],
                "shard": im["row"] // spec.images_per_shard,
                "sha256": hashlib.sha256(im["pixels"].tobytes()).hexdigest(),
                "x0": im["transform"][2],
                "y0": im["transform"][5],
            }
        )


def _array(grp: zarr.Group, name: str, values: np.ndarray, dims: list[str]) -> None:
    dtype: Any = str if values.dtype.kind in "UO" else values.dtype
    arr = grp.create_array(name, shape=values.shape, dtype=dtype, dimension_names=dims)
    arr[:] = values


def _pixel_attrs(sensor: SyntheticSensor) -> dict[str, Any]:
    c = len(sensor.wavelengths)
    return {
        "bands": [f"b{i}" for i in range(c)],
        "center_wavelength": list(sensor.wavelengths),
        "full_width_half_max": list(sensor.bandwidths),
        "band_gsd": [sensor.gsd] * c,
        "scale": [sensor.scale] * c,
        "offset": [sensor.offset] * c,
        "nodata": [sensor.nodata] * c,
    }


def _write_groups(root: zarr.Group, groups: Sequence[dict[str, Any]], spec: CorpusSpec) -> None:
    grp = root.create_group("groups")
    offsets = np.cumsum([0] + [len(g["members"]) for g in groups]).astype(np.int64)
    members = [m for g in groups for m in g["members"]]
    fp = spec.footprint_m
    columns: dict[str, np.ndarray] = {
        "group_id": np.array([g["group_id"] for g in groups]),
        "anchor_sensor": np.array([g["members"][0][0] for g in groups]),
        "anchor_index": np.array([g["members"][0][1] for g in groups], dtype=np.int64),
        "member_offsets": offsets,
        "member_sensor": np.array([m[0] for m in members]),
        "member_index": np.array([m[1] for m in members], dtype=np.int64),
        "crs": np.array(["EPSG:32615"] * len(groups)),
        "bounds": np.array([(g["x0"], g["y0"] - fp, g["x0"] + fp, g["y0"]) for g in groups]),
        "lonlat_bounds": np.zeros((len(groups), 4)),
        "cluster_id": np.full(len(groups), -1, dtype=np.int64),
        "split": np.array([g["split"] for g in groups]),
    }
    for name, values in columns.items():
        dims = (
            ["group", "bound"]
            if values.ndim == 2
            else ["member" if "member_" in name and name != "member_offsets" else "group"]
        )
        _array(grp, name, values, dims)
    if spec.with_labels:
        labels = {g["group_id"]: g["label"] for g in groups}
        for sensor in spec.sensors:
            sensor_grp = root[f"sensors/{sensor.name}"]
            assert isinstance(sensor_grp, zarr.Group)
            ids = np.asarray(sensor_grp["image_id"][...]).astype(object).astype(str)  # type: ignore[index]
            values = np.array([labels[i.split("/")[0]] for i in ids], dtype=np.int16)
            _array(sensor_grp, "label", values, ["image"])


def _root_attrs(spec: CorpusSpec, world: dict[str, Any]) -> dict[str, Any]:
    sensors = {
        s.name: {
            "bands": [
                {
                    "name": f"b{i}",
                    "center_wavelength": wl,
                    "full_width_half_max": bw,
                    "gsd": s.gsd,
                    "scale": s.scale,
                    "offset": s.offset,
                    "nodata": s.nodata,
                }
                for i, (wl, bw) in enumerate(zip(s.wavelengths, s.bandwidths, strict=True))
            ],
            "gsd": s.gsd,
            "dtype": s.dtype,
            "chip_size": [round(spec.footprint_m / s.gsd)] * 2,
        }
        for s in spec.sensors
    }
    return {
        "format": "terracorpus-corpus",
        "format_version": 1,
        "complete": True,
        "sensors": sensors,
        "config": {"synthetic": True, "seed": spec.seed},
        "config_hash": hashlib.sha256(repr(spec).encode()).hexdigest(),
        "software_version": "synthetic",
        "sources": [],
        "created": "2026-01-01T00:00:00Z",
        "counts": {"groups": spec.n_groups, "images": dict(world["rows"])},
        "shards": [],
    }


def _write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    frame = gpd.GeoDataFrame(
        rows,
        geometry=[box(r["x0"], r["y0"] - 240, r["x0"] + 240, r["y0"]) for r in rows],
        crs="EPSG:32615",
    ).drop(columns=["x0", "y0"])
    frame.to_crs("EPSG:4326").to_parquet(path)


def _collection(spec: CorpusSpec) -> dict[str, Any]:
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": "synthetic-corpus",
        "description": "A synthetic terracorpus corpus for tests.",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [[-93.0, 36.0, -92.0, 36.1]]},
            "temporal": {"interval": [["2020-01-01T00:00:00Z", "2023-01-01T00:00:00Z"]]},
        },
        "links": [],
        "summaries": {"terracorpus:sensors": [s.name for s in spec.sensors]},
    }
