"""STAC Items and Collections of the demo world, shaped like the providers' own.

Sentinel-2 items follow Earth Search v1 (asset keys ``coastal``, ``blue``, ..., ``scl``;
``proj:shape``/``proj:transform`` per asset since resolutions differ; ``mgrs:*`` fields);
Landsat items follow Planetary Computer's ``landsat-c2-l2`` (asset keys ``blue``, ...,
``qa_pixel``; item-level grid); NAIP items carry one 4-band ``image`` asset. Asset hrefs are
absolute local file paths, so items can be served and their COGs read from anywhere on the
machine that built the world.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer

from terracorpus.catalogs.sensors import Band, Sensor
from terracorpus.catalogs.world.cog import COG_MEDIA_TYPE
from terracorpus.catalogs.world.regions import GAOFEN, LANDSAT, NAIP, S1, S2
from terracorpus.catalogs.world.schedule import SceneSpec
from terracorpus.catalogs.world.sensors_render import Raster, RenderedScene

STAC_VERSION = "1.0.0"
_EXT = "https://stac-extensions.github.io"
EXTENSIONS = {
    "eo": f"{_EXT}/eo/v1.1.0/schema.json",
    "raster": f"{_EXT}/raster/v1.1.0/schema.json",
    "proj": f"{_EXT}/projection/v1.1.0/schema.json",
    "view": f"{_EXT}/view/v1.0.0/schema.json",
    "sat": f"{_EXT}/sat/v1.0.0/schema.json",
    "mgrs": f"{_EXT}/mgrs/v1.0.0/schema.json",
    "grid": f"{_EXT}/grid/v1.0.0/schema.json",
    "landsat": f"{_EXT}/landsat/v2.0.0/schema.json",
    "sar": f"{_EXT}/sar/v1.0.0/schema.json",
}
_INFO: dict[str, dict[str, Any]] = {
    S2: {
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "title": "Sentinel-2 Level-2A (terracorpus demo world)",
        "ext": ("eo", "raster", "proj", "view", "sat", "mgrs", "grid"),
    },
    LANDSAT: {
        "constellation": None,
        "instruments": ["oli", "tirs"],
        "title": "Landsat Collection 2 Level-2 (terracorpus demo world)",
        "ext": ("eo", "raster", "proj", "view", "sat", "landsat"),
    },
    NAIP: {
        "constellation": None,
        "instruments": ["dmc"],
        "title": "NAIP: National Agriculture Imagery Program (terracorpus demo world)",
        "ext": ("eo", "raster", "proj", "view"),
    },
    S1: {
        "constellation": "sentinel-1",
        "instruments": ["c-sar"],
        "title": "Sentinel-1 radiometrically terrain corrected backscatter (terracorpus demo world)",
        "ext": ("sar", "raster", "proj", "sat"),
    },
    GAOFEN: {
        "constellation": "gaofen",
        "instruments": ["pms"],
        "title": "Gaofen-2 PMS multispectral (terracorpus demo world)",
        "ext": ("eo", "raster", "proj", "view", "sat"),
    },
}


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def footprint_lonlat(spec: SceneSpec) -> shapely.Polygon:
    """The valid-data polygon in lon/lat, edges densified so it follows the UTM box."""
    poly = shapely.Polygon(spec.footprint)
    side = (spec.tile.bounds[2] - spec.tile.bounds[0]) / 8
    ring = np.asarray(shapely.segmentize(poly, side).exterior.coords)
    tr = Transformer.from_crs(spec.tile.epsg, 4326, always_xy=True)
    lon, lat = tr.transform(ring[:, 0], ring[:, 1])
    return shapely.Polygon(np.column_stack([np.round(lon, 7), np.round(lat, 7)]))


def _eo_band(b: Band, key: str) -> dict[str, Any]:
    d: dict[str, Any] = {"name": b.name}
    if b.common_name:
        d["common_name"] = b.common_name
    d["description"] = f"{key} ({b.name})"
    d["center_wavelength"] = b.center_wavelength
    d["full_width_half_max"] = b.full_width_half_max
    return d


def _raster_band(b: Band | None, dtype: str, gsd: float, nodata: float | None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if nodata is not None:
        d["nodata"] = int(nodata) if float(nodata).is_integer() else nodata
    d["data_type"] = dtype
    d["spatial_resolution"] = gsd
    if b is not None and (b.scale != 1.0 or b.offset != 0.0):
        d["scale"] = b.scale
        d["offset"] = b.offset
    return d


def _grid_fields(r: Raster) -> dict[str, Any]:
    t = r.transform
    return {
        "proj:shape": [int(r.data.shape[1]), int(r.data.shape[2])],
        "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
    }


def _qa_asset(spec: SceneSpec, key: str, r: Raster, href: str) -> dict[str, Any]:
    gsd = float(r.transform.a)
    if spec.collection == LANDSAT:
        title, roles = (
            "Pixel Quality Assessment Band (QA_PIXEL)",
            ["cloud", "cloud-shadow", "snow-ice", "water-mask"],
        )
        raster = {**_raster_band(None, "uint16", gsd, 1), "unit": "bit index"}
    elif spec.collection == GAOFEN:
        title, roles = "Quality mask (SCL class codes)", ["data", "cloud"]
        raster = _raster_band(None, "uint8", gsd, 0)
    else:
        title, roles = "Scene classification map (SCL)", ["data", "cloud"]
        raster = _raster_band(None, "uint8", gsd, 0)
    out: dict[str, Any] = {"href": href, "type": COG_MEDIA_TYPE, "title": title, "gsd": gsd}
    out.update(_grid_fields(r))
    out["raster:bands"] = [raster]
    out["roles"] = roles
    return out


def _sar_asset(key: str, r: Raster, href: str) -> dict[str, Any]:
    gsd = float(r.transform.a)
    b = r.bands[0]
    return {
        "href": href,
        "type": COG_MEDIA_TYPE,
        "title": f"{key.upper()}: gamma0 backscatter, linear power - {gsd:g}m",
        "gsd": gsd,
        "sar:polarizations": [b.name.upper()],
        "raster:bands": [_raster_band(b, r.data.dtype.name, gsd, b.nodata)],
        "roles": ["data"],
    }


def _data_asset(spec: SceneSpec, key: str, r: Raster, href: str) -> dict[str, Any]:
    gsd = float(r.transform.a)
    dtype = r.data.dtype.name
    if spec.collection == S1:
        return _sar_asset(key, r, href)
    title = (
        key
        if len(r.bands) > 1
        else f"{r.bands[0].common_name or key} ({r.bands[0].name}) - {gsd:g}m"
    )
    out: dict[str, Any] = {"href": href, "type": COG_MEDIA_TYPE, "title": title, "gsd": gsd}
    out["eo:bands"] = [_eo_band(b, key) for b in r.bands]
    if spec.collection == S2:
        out.update(_grid_fields(r))
    out["raster:bands"] = [
        _raster_band(b, dtype, gsd, b.nodata if spec.collection != NAIP else None) for b in r.bands
    ]
    out["roles"] = ["data", "reflectance"] if spec.collection != NAIP else ["data"]
    return out


def item_dict(
    spec: SceneSpec,
    sensor: Sensor,
    rendered: RenderedScene,
    hrefs: Mapping[str, str],
    item_href: str,
) -> dict[str, Any]:
    """The STAC Item of one rendered scene; ``hrefs`` maps asset keys to COG paths."""
    info = _INFO[spec.collection]
    geom = footprint_lonlat(spec)
    props: dict[str, Any] = {"datetime": _iso(spec.acquired), "platform": spec.platform}
    if info["constellation"]:
        props["constellation"] = info["constellation"]
    props["instruments"] = list(info["instruments"])
    props["gsd"] = min(float(r.transform.a) for r in rendered.assets.values())
    if rendered.cloud_cover is not None:
        props["eo:cloud_cover"] = round(rendered.cloud_cover, 4)
    if spec.collection != S1:  # radar items carry no sun angles
        props["view:sun_elevation"] = spec.sun_elevation
        props["view:sun_azimuth"] = spec.sun_azimuth
        props["view:off_nadir"] = spec.off_nadir
    props["proj:epsg"] = spec.tile.epsg
    if spec.collection != S2:
        finest = min(rendered.assets.values(), key=lambda r: r.transform.a)
        props.update(_grid_fields(finest))
    props.update({k: list(v) if isinstance(v, tuple) else v for k, v in spec.extra})
    if spec.collection == S2:
        for name, v in rendered.percentages.items():
            props[
                f"s2:{name}_pixel_percentage" if name == "nodata" else f"s2:{name}_percentage"
            ] = round(v, 4)
        props["s2:processing_baseline"] = "05.09"
    if spec.collection == LANDSAT and rendered.cloud_cover is not None:
        props["landsat:cloud_cover_land"] = round(rendered.cloud_cover, 4)
    props["terracorpus:region"] = spec.region
    stamp = _iso(spec.acquired + timedelta(days=2))
    props["created"] = stamp
    props["updated"] = stamp
    assets: dict[str, Any] = {}
    for key, r in rendered.assets.items():
        if r.bands:
            assets[key] = _data_asset(spec, key, r, hrefs[key])
        else:
            assets[key] = _qa_asset(spec, key, r, hrefs[key])
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [EXTENSIONS[e] for e in info["ext"]],
        "id": spec.item_id,
        "collection": spec.collection,
        "bbox": [round(v, 7) for v in geom.bounds],
        "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in geom.exterior.coords]]},
        "properties": props,
        "links": [
            {
                "rel": "collection",
                "href": f"../../collections/{spec.collection}.json",
                "type": "application/json",
            },
            {
                "rel": "parent",
                "href": f"../../collections/{spec.collection}.json",
                "type": "application/json",
            },
            {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
            {"rel": "self", "href": item_href, "type": "application/geo+json"},
        ],
        "assets": assets,
    }


def _region_boxes(items: Sequence[Mapping[str, Any]]) -> list[list[float]]:
    """One sub-extent per region, as real collections list their disjoint areas."""
    boxes: dict[str, list[float]] = {}
    for i in items:
        b = i["bbox"]
        r = boxes.setdefault(i["properties"]["terracorpus:region"], list(b))
        boxes[i["properties"]["terracorpus:region"]] = [
            min(r[0], b[0]),
            min(r[1], b[1]),
            max(r[2], b[2]),
            max(r[3], b[3]),
        ]
    return [boxes[k] for k in sorted(boxes)]


def collection_dict(
    collection: str,
    sensor: Sensor,
    items: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """A STAC Collection over ``items`` (their bbox and time span), with ``item_assets``."""
    info = _INFO[collection]
    bboxes = np.array([i["bbox"] for i in items])
    overall = [
        float(bboxes[:, 0].min()),
        float(bboxes[:, 1].min()),
        float(bboxes[:, 2].max()),
        float(bboxes[:, 3].max()),
    ]
    times = sorted(i["properties"]["datetime"] for i in items)
    first = items[0]
    item_assets = {
        k: {kk: vv for kk, vv in a.items() if kk not in ("href", "proj:shape", "proj:transform")}
        for k, a in first["assets"].items()
    }
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [f"{_EXT}/item-assets/v1.0.0/schema.json"],
        "id": collection,
        "title": info["title"],
        "description": (
            f"Synthetic {sensor.title} scenes of the terracorpus demo world: rendered from a "
            "procedural land-cover truth, not real observations."
        ),
        "license": "CC0-1.0",
        "providers": [
            {"name": "terracorpus demo world", "roles": ["producer", "processor", "host"]}
        ],
        "extent": {
            "spatial": {"bbox": [overall, *_region_boxes(items)]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "summaries": {
            "platform": sorted({i["properties"]["platform"] for i in items}),
            "instruments": list(info["instruments"]),
            "gsd": sorted({float(a["gsd"]) for a in first["assets"].values()}),
            **(
                {"sar:polarizations": [b.name.upper() for b in sensor.bands]}
                if collection == S1
                else {"eo:bands": [_eo_band(b, sensor.aliases(b.name)[0]) for b in sensor.bands]}
            ),
        },
        "item_assets": item_assets,
        "links": [
            {"rel": "root", "href": "../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
            *[
                {
                    "rel": "item",
                    "href": f"../items/{collection}/{i['id']}.json",
                    "type": "application/geo+json",
                }
                for i in items
            ],
        ],
    }


def catalog_dict(collections: Sequence[str], description: str) -> dict[str, Any]:
    """The root catalog linking the world's collections (a static STAC catalog)."""
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": "terracorpus-demo-world",
        "description": description,
        "links": [
            {"rel": "root", "href": "./catalog.json", "type": "application/json"},
            *[
                {"rel": "child", "href": f"./collections/{c}.json", "type": "application/json"}
                for c in collections
            ],
        ],
    }


def asset_path(out: Path, collection: str, item_id: str, key: str) -> Path:
    """Where an asset's COG lives: ``OUT/cogs/<collection>/<item_id>/<key>.tif``."""
    return out / "cogs" / collection / item_id / f"{key}.tif"
