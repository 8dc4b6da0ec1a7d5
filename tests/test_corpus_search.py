"""The corpus as something to search: STAC Items in stac-geoparquet, `corpus search`, `corpus
subset` (a new, valid corpus that training reads), and `catalog serve` over a corpus."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rustac
import shapely
import zarr
from click.testing import CliRunner

from terracorpus.catalogs.server import StacServer
from terracorpus.pipelines.cli import main
from terracorpus.pipelines.corpus import validate_corpus, write_arrays
from terracorpus.pipelines.corpus.items import item_id, write_items
from terracorpus.pipelines.corpus.location import CorpusLocation
from terracorpus.pipelines.corpus.subset import Query, parse_datetime, search_groups, write_subset
from terracorpus.pipelines.errors import CorpusError
from terracorpus.pipelines.testing.corpora import synthetic_inputs

N_GROUPS = 12


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("searchable")
    groups, images, arrays, layouts = synthetic_inputs(N_GROUPS)
    write_arrays(out, groups, images, arrays, layouts, scratch=out / "_s", shard_mb=0.5)
    return out


def _group_lonlat(corpus: Path) -> pd.DataFrame:
    root = zarr.open_group(corpus / "corpus.zarr", mode="r")
    ids = np.asarray(root["groups/group_id"][:]).astype(object).astype(str)
    bounds = np.asarray(root["groups/lonlat_bounds"][:])
    return pd.DataFrame(bounds, index=ids, columns=["w", "s", "e", "n"])


def test_items_point_into_the_store_and_carry_provider_fields(corpus: Path) -> None:
    path = write_items(CorpusLocation.of(corpus))
    items = rustac.read_sync(path)["features"]
    manifest = gpd.read_parquet(corpus / "manifest.parquet")
    assert len(items) == len(manifest)
    root = zarr.open_group(corpus / "corpus.zarr", mode="r")
    by_id = manifest.set_index("image_id")
    for item in items[::7]:
        props, asset = item["properties"], item["assets"]["pixels"]
        image = by_id.loc[props["terracorpus:image_id"]]
        assert item["id"] == item_id(props["terracorpus:image_id"]) and "/" not in item["id"]
        pixels = root[asset["terracorpus:array"]][asset["terracorpus:index"]]
        assert hashlib.sha256(np.ascontiguousarray(pixels).data).hexdigest() == image["sha256"]
        sensor = props["terracorpus:sensor"]
        row = props["terracorpus:row"]
        assert props["proj:transform"] == pytest.approx(
            list(root[f"sensors/{sensor}/transform"][row])
        )
        assert props["proj:code"] == image["crs"] and props["proj:shape"] == list(pixels.shape[1:])
        bands = root[f"sensors/{sensor}/pixels"].attrs["center_wavelength"]
        assert [b["center_wavelength"] for b in asset["eo:bands"]] == bands
        assert len(asset["raster:bands"]) == pixels.shape[0]
        assert shapely.geometry.shape(item["geometry"]).equals_exact(image.geometry, 1e-9)
    # geopandas reads the same file as a GeoDataFrame
    frame = gpd.read_parquet(path)
    assert len(frame) == len(manifest) and frame.crs.to_string() == "OGC:CRS84"


def test_search_matches_groups_by_bbox_time_and_sensor(corpus: Path) -> None:
    location = CorpusLocation.of(corpus)
    lonlat = _group_lonlat(corpus)
    every = search_groups(location, Query())
    assert len(every) == N_GROUPS
    w, s, e, n = (
        lonlat.iloc[3]["w"],
        lonlat["s"].min(),
        lonlat.iloc[5]["e"] - 1e-6,
        lonlat["n"].max(),
    )
    found = search_groups(location, Query(bbox=(w, s, e, n)))
    expected = lonlat[(lonlat.w <= e) & (lonlat.e >= w) & (lonlat.s <= n) & (lonlat.n >= s)]
    assert set(found["group_id"]) == set(expected.index) and 2 <= len(found) < N_GROUPS

    manifest = gpd.read_parquet(corpus / "manifest.parquet")
    first_day = manifest["datetime"].min()
    start, end = parse_datetime(f"{first_day:%Y-%m-%d}")
    on_day = search_groups(location, Query(start=start, end=end, sensors=("landsat-oli-c2-l2",)))
    wanted = manifest[
        (manifest["datetime"].dt.date == first_day.date())
        & (manifest["sensor"] == "landsat-oli-c2-l2")
    ]
    assert set(on_day["group_id"]) == set(wanted["group_id"]) and len(on_day) > 0
    late = search_groups(location, Query(start=parse_datetime("2100-01-01/..")[0]))
    assert len(late) == 0
    with pytest.raises(CorpusError, match="no sensor naip"):
        search_groups(location, Query(sensors=("naip",)))
    with pytest.raises(CorpusError, match="not ISO 8601"):
        parse_datetime("2023-02-30")


def test_subset_is_a_valid_corpus_that_training_reads(corpus: Path, tmp_path: Path) -> None:
    from terracorpus.training.corpus import open_corpus

    source = CorpusLocation.of(corpus)
    lonlat = _group_lonlat(corpus)
    bbox = (lonlat["w"].min(), lonlat["s"].min(), lonlat.iloc[2]["e"] - 1e-6, lonlat["n"].max())
    ids = list(search_groups(source, Query(bbox=bbox))["group_id"])
    assert len(ids) == 3
    out = tmp_path / "subset"
    summary = write_subset(source, CorpusLocation.of(out), ids, scratch=tmp_path / "s")
    assert summary.groups == 3
    assert validate_corpus(out).ok

    reader, original = open_corpus(out), open_corpus(corpus)  # checksums verified on read
    assert sorted(reader.groups.group_id) == sorted(ids)
    g = int(np.flatnonzero(original.groups.group_id == reader.groups.group_id[0])[0])
    mine = reader.read_images(reader.groups.members(0))
    theirs = original.read_images(original.groups.members(g))
    for a, b in zip(mine, theirs, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        np.testing.assert_array_equal(a.valid, b.valid)
        assert a.crs == b.crs and np.allclose(a.transform, b.transform)
    with pytest.raises(CorpusError, match="already exists"):
        write_subset(source, CorpusLocation.of(out), ids, scratch=tmp_path / "s2")
    with pytest.raises(CorpusError, match="empty"):
        write_subset(source, CorpusLocation.of(tmp_path / "none"), [], scratch=tmp_path / "s3")


def test_cli_search_subset_and_stac(corpus: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    got = runner.invoke(main, ["corpus", "search", str(corpus), "--json"])
    assert got.exit_code == 0, got.output
    rows = [json.loads(line) for line in got.stdout.splitlines()]
    assert len(rows) == N_GROUPS and {"group_id", "images", "sensors", "start"} <= set(rows[0])
    bad = runner.invoke(main, ["corpus", "search", str(corpus), "--bbox", "1,2,3"])
    assert bad.exit_code != 0 and "west,south,east,north" in bad.output
    gid = rows[0]["group_id"]
    out = tmp_path / "one"
    sub = runner.invoke(main, ["corpus", "subset", str(corpus), str(out), "--group", gid])
    assert sub.exit_code == 0, sub.output
    assert validate_corpus(out).ok
    stac = runner.invoke(main, ["corpus", "stac", str(out)])
    assert stac.exit_code == 0 and (out / "items.parquet").exists()


@pytest.mark.integration
def test_catalog_serve_over_a_corpus_answers_stac_searches(corpus: Path) -> None:
    from pystac_client import Client

    write_items(CorpusLocation.of(corpus))
    manifest = gpd.read_parquet(corpus / "manifest.parquet")
    w, s, e, n = manifest.total_bounds
    half = (w, s, (w + e) / 2, n)
    expected = manifest[manifest.intersects(shapely.box(*half))]
    with StacServer([corpus]) as server:
        client = Client.open(server.url)
        items = list(client.search(bbox=half, max_items=1000).items())
    assert {i.properties["terracorpus:image_id"] for i in items} == set(expected["image_id"])
    href = items[0].assets["pixels"].href
    assert Path(href) == (corpus / "corpus.zarr").resolve()  # made absolute by the server
