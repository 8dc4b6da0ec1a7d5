"""`curate` end to end on real provider items: reflectance in the corpus equals the physical
values of the pixels written, before and after Sentinel-2 processing baseline 04.00.

Each catalog holds real items as Planetary Computer or Earth Search published them, narrowed
to a small window of their own grid (tests/real_items.py), the window's pixels written as
COGs on a loopback range server, the items served by the real local STAC API:

- Planetary-Computer style, assets behind SAS signing: the 2019 item T06VVN as published
  (``s2:processing_baseline`` 02.12, no ``raster:bands``: offset 0) and the same tile five
  years later as PC publishes baseline 05.10 items (no ``raster:bands``: the registry's
  baseline rule gives offset -0.1);
- Earth Search style, no auth: the v0 item 28QCH (``sentinel-s2-l2a-cogs``, no baseline: placed
  before 04.00 by its date, offset 0) and the same tile as v1 publishes it in 2024
  (``sentinel-2-l2a``, common-name asset keys, ``raster:bands`` scale 0.0001 offset -0.1).

Both images of a tile land in one group, so the corpus must keep each image's own offset.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from real_items import Window, Written, windowed_item

from terracorpus.catalogs.server import StacServer
from terracorpus.pipelines.config import parse_config
from terracorpus.pipelines.curate import curate
from terracorpus.pipelines.testing.httpserve import RangeServer
from terracorpus.training.corpus import open_corpus

pytestmark = pytest.mark.integration

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
ES_V1_KEYS = dict(
    zip(
        S2_BANDS,
        ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08",
         "nir09", "swir16", "swir22"),
        strict=True,
    )
)  # fmt: skip
PC_2019 = "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
ES_V0 = "S2A_28QCH_20200714_0_L2A.json"
WINDOW = Window(col=5400, row=5400, size=96)  # 960 m: four 480 m chips


def _pc_2024(item: dict[str, Any]) -> dict[str, Any]:
    """The same tile as PC publishes a 2024 acquisition: baseline 05.10, no raster:bands."""
    later = copy.deepcopy(item)
    later["id"] = "S2B_MSIL2A_20240628T212529_R043_T06VVN_20240628T231107"
    later["properties"]["datetime"] = "2024-06-28T21:25:29.024000Z"
    later["properties"]["s2:processing_baseline"] = "05.10"
    return later


def _es_v1_2024(item: dict[str, Any]) -> dict[str, Any]:
    """The same tile as Earth Search v1 publishes a 2024 acquisition."""
    later = copy.deepcopy(item)
    later["id"] = "S2A_28QCH_20240714_0_L2A"
    later["collection"] = "sentinel-2-l2a"
    later["properties"]["datetime"] = "2024-07-14T11:55:52Z"
    later["properties"]["s2:processing_baseline"] = "05.10"
    keys = {**ES_V1_KEYS, "SCL": "scl"}
    later["assets"] = {keys.get(k, k): a for k, a in later["assets"].items()}
    for band in S2_BANDS:
        later["assets"][ES_V1_KEYS[band]]["raster:bands"] = [
            {"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}
        ]
    return later


def _catalog(
    items: list[tuple[dict[str, Any], dict[str, str], str]],
    blobs: RangeServer,
    root: Path,
    out: Path,
) -> dict[str, Written]:
    """Each item windowed, its COGs under ``root/<container>/<id>/``, its JSON in ``out``."""
    written = {}
    out.mkdir(parents=True, exist_ok=True)
    for seed, (item, band_assets, qa) in enumerate(items):
        folder = root / "blobs" / item["id"]
        w = windowed_item(
            item, WINDOW, band_assets, qa, folder, lambda p: blobs.url(p.relative_to(root)), seed
        )
        (out / f"{item['id']}.json").write_text(json.dumps(w.item))
        written[item["id"]] = w
    return written


def _config(  # type: ignore[no-untyped-def]
    api_url: str, blobs: RangeServer, run_dir: Path, auth: str, items: list[Any], scheduler: str
):
    bbox = [
        min(i.item["bbox"][0] for i in items),
        min(i.item["bbox"][1] for i in items),
        max(i.item["bbox"][2] for i in items),
        max(i.item["bbox"][3] for i in items),
    ]
    collections = sorted({i.item["collection"] for i in items})
    return parse_config(
        {
            "run_dir": str(run_dir),
            "search": {
                "apis": [
                    {
                        "url": api_url,
                        "collections": collections,
                        "auth": auth,
                        "token_endpoint": blobs.token_endpoint,
                        "asset_hosts": [blobs.base_url],
                    }
                ],
                "tiles": [bbox],
                "start": "2019-01-01",
                "end": "2024-12-31",
            },
            "group": {"chip_size_m": 480.0, "min_sensors": 1},
            "describe": {"batch_size": 4},
            "dask": {"scheduler": scheduler},
        }
    )


def _check_reflectance(run_dir: Path, written: dict[str, Written], offsets: dict[str, float]):  # type: ignore[no-untyped-def]
    """Every image of the corpus equals stored * 0.0001 + its item's offset, band by band."""
    reader = open_corpus(run_dir)
    assert reader.attrs["format_version"] == 2
    manifest = pd.read_parquet(run_dir / "manifest.parquet")
    assert set(manifest["source_item"]) == set(written), "both images of the tile are kept"
    mixed = manifest.groupby("group_id")["source_item"].nunique()
    assert (mixed == 2).all(), "each group holds both acquisitions"
    s2 = reader.sensors["sentinel-2-l2a"]
    for rec in manifest.itertuples():
        image = reader.read_image("sentinel-2-l2a", int(rec.row))
        w = written[str(rec.source_item)]
        rad = reader.radiometry("sentinel-2-l2a", int(rec.row))
        assert rad.offset.tolist() == [offsets[str(rec.source_item)]] * len(S2_BANDS)
        assert image.valid.all()
        for k, band in enumerate(s2.bands):
            expected = _expected(w, band.name, image.transform, image.pixels.shape[1:])
            phys = expected * 0.0001 + offsets[str(rec.source_item)]
            np.testing.assert_allclose(image.pixels[k], phys, atol=1e-6, err_msg=band.name)


def _expected(w: Written, band: str, chip: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The stored values under a chip's pixels (nearest: a coarser band's pixel repeats)."""
    t = w.transforms[band]
    h, wd = shape
    xs = chip[2] + chip[0] * (np.arange(wd) + 0.5)
    ys = chip[5] + chip[4] * (np.arange(h) + 0.5)
    cols = np.floor((xs - t.c) / t.a).astype(int)
    rows = np.floor((ys - t.f) / t.e).astype(int)
    return w.values[band][np.ix_(rows, cols)].astype(np.float64)


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """One small cluster for the module: each stage would otherwise start its own."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=40,
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def blob_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-items")


@pytest.fixture(scope="module")
def blobs(blob_root: Path) -> Iterator[RangeServer]:
    with RangeServer(blob_root) as server:
        yield server


def test_planetary_computer_style_before_and_after_baseline_0400(
    shared_stac_items: Path, blobs: RangeServer, blob_root: Path, scheduler: str, tmp_path: Path
) -> None:
    blobs.configure(require_token=True, token_ttl_s=600, claimed_ttl_s=600)
    try:
        old = json.loads((shared_stac_items / PC_2019).read_text())
        bands = {b: b for b in S2_BANDS}
        written = _catalog(
            [(old, bands, "SCL"), (_pc_2024(old), bands, "SCL")],
            blobs,
            blob_root,
            tmp_path / "catalog",
        )
        run_dir = tmp_path / "run"
        with StacServer([tmp_path / "catalog"]) as api:
            items = [*written.values()]
            config = _config(api.url, blobs, run_dir, "planetary-computer", items, scheduler)
            curate(config, echo=lambda s: None)
        assert blobs.signed or blobs.token_requests > 0
    finally:
        blobs.configure(require_token=False)
    ids = list(written)
    _check_reflectance(run_dir, written, {ids[0]: 0.0, ids[1]: -0.1})
    scenes = pd.read_parquet(run_dir / "scenes.parquet")
    sources = {
        row.id: {r["source"] for r in json.loads(row.radiometry)} for row in scenes.itertuples()
    }
    assert sources == {i: {"rule:s2-processing-baseline"} for i in ids}


def test_earth_search_style_v0_and_v1(
    shared_stac_items: Path, blobs: RangeServer, blob_root: Path, scheduler: str, tmp_path: Path
) -> None:
    v0 = json.loads((shared_stac_items / ES_V0).read_text())
    written = _catalog(
        [
            (v0, {b: b for b in S2_BANDS}, "SCL"),
            (_es_v1_2024(v0), ES_V1_KEYS, "scl"),
        ],
        blobs,
        blob_root,
        tmp_path / "catalog",
    )
    run_dir = tmp_path / "run"
    with StacServer([tmp_path / "catalog"]) as api:
        config = _config(api.url, blobs, run_dir, "none", [*written.values()], scheduler)
        curate(config, echo=lambda s: None)
    ids = list(written)
    _check_reflectance(run_dir, written, {ids[0]: 0.0, ids[1]: -0.1})
    scenes = pd.read_parquet(run_dir / "scenes.parquet").set_index("id")
    assert "rule:s2-processing-baseline-date" in scenes.loc[ids[0], "radiometry"]
    assert '"source": "item"' in scenes.loc[ids[1], "radiometry"]
