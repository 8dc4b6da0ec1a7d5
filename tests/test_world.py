"""The synthetic demo world: metadata, COGs, truth, clouds, sensor agreement, determinism."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from pyproj import Transformer

from terracorpus.catalogs.errors import WorldError
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.catalogs.world import (
    CLASSES,
    WorldSummary,
    create_world,
    read_cloud_truth,
    read_truth,
    read_world,
    truth_cloud_fraction,
)
from terracorpus.catalogs.world.qa import qa_pixel
from terracorpus.catalogs.world.sun import sun_position
from terracorpus.catalogs.world.testing import tiny_world
from terracorpus.pipelines.cli import main

REGISTRY = builtin_registry()
SENSOR_OF = {
    "sentinel-2-l2a": "sentinel-2-l2a",
    "landsat-c2-l2": "landsat-oli-c2-l2",
    "naip": "naip",
    "gaofen-2-pms": "gaofen-2-pms",
}


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldSummary:
    return tiny_world(tmp_path_factory.getbasetemp())


def _items(world: WorldSummary) -> Iterator[dict[str, Any]]:
    for path in sorted((world.out / "items").glob("*/*.json")):
        yield json.loads(path.read_text())


def _item(world: WorldSummary, collection: str, item_id: str) -> dict[str, Any]:
    return json.loads((world.out / "items" / collection / f"{item_id}.json").read_text())


def _read(href: str, band: int = 1) -> np.ndarray:
    with rasterio.open(href) as src:
        return src.read(band)


def _reflectance(item: dict[str, Any], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(reflectance, valid) of a single-band asset, via its raster:bands scale/offset."""
    asset = item["assets"][key]
    rb = asset["raster:bands"][0]
    dn = _read(asset["href"]).astype(np.float64)
    valid = dn != rb["nodata"]
    return dn * rb.get("scale", 1.0) + rb.get("offset", 0.0), valid


def test_layout_and_summary(world: WorldSummary) -> None:
    doc = read_world(world.out)
    assert (doc["preset"], doc["seed"]) == ("tiny", 0)
    assert set(world.collections) == {"sentinel-2-l2a", "landsat-c2-l2", "naip", "gaofen-2-pms"}
    for coll, n in world.n_items.items():
        assert len(list((world.out / "items" / coll).glob("*.json"))) == n
        coll_doc = json.loads((world.out / "collections" / f"{coll}.json").read_text())
        assert pystac.Collection.from_dict(coll_doc).id == coll
    assert 20 <= world.total_items <= 45
    assert json.loads((world.out / "truth" / "classes.json").read_text()) == {
        str(k): v for k, v in CLASSES.items()
    }
    epsgs = {r["epsg"] for r in doc["regions"]}
    assert len(epsgs) == 4 and any(r["bbox"][1] > 66.5 for r in doc["regions"])  # one Arctic
    assert doc["years"] == [2021, 2022, 2023]
    for r in doc["regions"]:
        assert sorted(r["truth"]) == ["2021", "2022", "2023"]
        for year, rel in r["truth"].items():
            assert rel == f"truth/{r['name']}/{year}.tif" and (world.out / rel).is_file()
    catalog = pystac.Catalog.from_file(str(world.out / "catalog.json"))
    assert len(list(catalog.get_items(recursive=True))) == world.total_items
    assert world.bytes_written > 1e6


def test_items_parse_with_pystac_and_carry_required_fields(world: WorldSummary) -> None:
    for d in _items(world):
        item = pystac.Item.from_dict(d)
        props = d["properties"]
        assert item.datetime == datetime.fromisoformat(props["datetime"].replace("Z", "+00:00"))
        assert item.ext.proj.epsg == props["proj:epsg"]  # pystac migrates it to proj:code
        assert item.ext.eo.cloud_cover == props.get("eo:cloud_cover")
        assert set(item.assets) == set(d["assets"])
        for key in (
            "datetime",
            "platform",
            "view:sun_elevation",
            "view:sun_azimuth",
            "view:off_nadir",
            "proj:epsg",
        ):
            assert key in props, (d["id"], key)
        assert ("eo:cloud_cover" in props) == (d["collection"] != "naip")
        assert shapely.geometry.shape(d["geometry"]).is_valid
        assert np.allclose(shapely.geometry.shape(d["geometry"]).bounds, d["bbox"])
        for asset in d["assets"].values():
            assert Path(asset["href"]).is_absolute() and Path(asset["href"]).is_file()


def test_asset_keys_and_band_metadata_match_registry(world: WorldSummary) -> None:
    expected_keys = {
        "sentinel-2-l2a": {
            "coastal",
            "blue",
            "green",
            "red",
            "rededge1",
            "rededge2",
            "rededge3",
            "nir",
            "nir08",
            "nir09",
            "swir16",
            "swir22",
            "scl",
        },
        "landsat-c2-l2": {
            "coastal",
            "blue",
            "green",
            "red",
            "nir08",
            "swir16",
            "swir22",
            "qa_pixel",
        },
        "naip": {"image"},
        "gaofen-2-pms": {"blue", "green", "red", "nir", "qa"},
    }
    for d in _items(world):
        sensor = REGISTRY.for_collection(d["collection"], d["properties"]["platform"])
        assert sensor.name == SENSOR_OF[d["collection"]]
        assert set(d["assets"]) == expected_keys[d["collection"]]
        for key, asset in d["assets"].items():
            for eo, rb in zip(asset.get("eo:bands", []), asset["raster:bands"], strict=False):
                band = sensor.band(eo["name"])
                assert key in sensor.aliases(band.name)
                assert eo["center_wavelength"] == band.center_wavelength
                assert eo["full_width_half_max"] == band.full_width_half_max
                assert rb["data_type"] == band.dtype
                assert rb.get("scale", 1.0) == band.scale and rb.get("offset", 0.0) == band.offset
                assert asset["gsd"] == (1.0 if sensor.name == "naip" else band.gsd)
            with rasterio.open(asset["href"]) as src:
                assert src.dtypes[0] == asset["raster:bands"][0]["data_type"]
                assert src.count == len(asset["raster:bands"])
                assert src.nodata == asset["raster:bands"][0].get("nodata")


def test_grids_crs_and_cogs_are_valid(world: WorldSummary) -> None:
    n_with_overviews = 0
    for d in _items(world):
        props = d["properties"]
        for asset in d["assets"].values():
            shape = asset.get("proj:shape", props.get("proj:shape"))
            transform = asset.get("proj:transform", props.get("proj:transform"))
            with rasterio.open(asset["href"]) as src:
                assert src.crs.to_epsg() == props["proj:epsg"]
                assert list(src.transform)[:6] == transform
                assert list(src.shape) == shape
                assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
                assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
                assert src.compression is not None
                if max(src.shape) > 512:
                    assert src.overviews(1), asset["href"]
                if src.overviews(1):
                    n_with_overviews += 1
            assert transform[2] % 60 == 0 and transform[5] % 60 == 0  # MGRS/WRS-like alignment
    assert n_with_overviews >= 5


def test_footprint_matches_valid_pixels(world: WorldSummary) -> None:
    partial = 0
    for d in _items(world):
        key = "red" if "red" in d["assets"] else "image"
        asset = d["assets"][key]
        with rasterio.open(asset["href"]) as src:
            data = src.read(1)
            t = src.transform
            step = max(1, src.width // 60)
        rows, cols = np.mgrid[0 : data.shape[0] : step, 0 : data.shape[1] : step]
        xs, ys = rasterio.transform.xy(t, rows.ravel(), cols.ravel())
        lon, lat = Transformer.from_crs(
            d["properties"]["proj:epsg"], 4326, always_xy=True
        ).transform(xs, ys)
        inside = shapely.contains_xy(shapely.geometry.shape(d["geometry"]), lon, lat)
        valid = data[rows.ravel(), cols.ravel()] != 0
        assert np.mean(inside == valid) > 0.98, d["id"]
        if not valid.all():
            partial += 1
            assert d["properties"].get("s2:nodata_pixel_percentage", 1.0) > 0
    assert partial >= 2


def test_cloud_cover_agrees_with_qa_and_truth(world: WorldSummary) -> None:
    cloudy = 0
    for d in _items(world):
        if d["collection"] == "naip":
            with pytest.raises(WorldError):
                read_cloud_truth(world.out, d["collection"], d["id"])
            continue
        qa_key = (
            "qa_pixel"
            if d["collection"] == "landsat-c2-l2"
            else ("scl" if "scl" in d["assets"] else "qa")
        )
        qa = _read(d["assets"][qa_key]["href"]).astype(np.int64)
        if qa_key == "qa_pixel":
            valid = (qa & 1) == 0
            cloud = ((qa >> 3) & 1) == 1
        else:
            valid = qa != 0
            cloud = np.isin(qa, (8, 9, 10))
        from_qa = 100.0 * cloud[valid].sum() / valid.sum()
        cover = d["properties"]["eo:cloud_cover"]
        assert from_qa == pytest.approx(cover, abs=1e-3), d["id"]
        assert 100.0 * truth_cloud_fraction(world.out, d["collection"], d["id"]) == pytest.approx(
            cover, abs=1e-3
        )
        truth = read_cloud_truth(world.out, d["collection"], d["id"])
        assert truth.shape == qa.shape and np.array_equal(truth != 0, valid)
        cloudy += cover > 5
        if cover > 20:
            # opaque cloud pixels carry the cloud's own bright, flat spectrum
            blue, ok = _reflectance(d, "blue")
            f = blue.shape[0] // qa.shape[0]
            opaque = np.repeat(np.repeat(truth == 2, f, 0), f, 1) & ok
            assert opaque.sum() > 20 and 0.6 < blue[opaque].mean() < 0.8
    assert cloudy >= 3


def test_sensor_agreement_s2_vs_landsat_same_ground(world: WorldSummary) -> None:
    doc = read_world(world.out)
    checked = 0
    for s2_id, ls_id in doc["coincident_clear"]:
        s2 = _item(world, "sentinel-2-l2a", s2_id)
        ls = _item(world, "landsat-c2-l2", ls_id)
        if s2["properties"]["proj:epsg"] != ls["properties"]["proj:epsg"]:
            continue
        red10, ok10 = _reflectance(s2, "red")
        red30, ok30 = _reflectance(ls, "red")
        t10 = s2["assets"]["red"]["proj:transform"]
        t30 = ls["properties"]["proj:transform"]
        # Overlap of the two grids, in 30 m pixels of the Landsat grid.
        x0, y1 = max(t10[2], t30[2]), min(t10[5], t30[5])
        x1 = min(t10[2] + 10 * red10.shape[1], t30[2] + 30 * red30.shape[1])
        y0 = max(t10[5] - 10 * red10.shape[0], t30[5] - 30 * red30.shape[0])
        nx, ny = int((x1 - x0) // 30), int((y1 - y0) // 30)
        r10, c10 = int((t10[5] - y1) / 10), int((x0 - t10[2]) / 10)
        r30, c30 = int((t30[5] - y1) / 30), int((x0 - t30[2]) / 30)
        a = red10[r10 : r10 + 3 * ny, c10 : c10 + 3 * nx].reshape(ny, 3, nx, 3).mean(axis=(1, 3))
        ok = ok10[r10 : r10 + 3 * ny, c10 : c10 + 3 * nx].reshape(ny, 3, nx, 3).all(axis=(1, 3))
        b = red30[r30 : r30 + ny, c30 : c30 + nx]
        ok &= ok30[r30 : r30 + ny, c30 : c30 + nx]
        diff = a[ok] - b[ok]
        assert ok.sum() > 500
        assert abs(diff.mean()) < 0.005 and np.abs(diff).mean() < 0.01, (s2_id, ls_id)
        assert np.corrcoef(a[ok], b[ok])[0, 1] > 0.97
        checked += 1
    assert checked >= 3


def test_near_duplicates_are_unchanged_ground(world: WorldSummary) -> None:
    doc = read_world(world.out)
    assert len(doc["near_duplicates"]) >= 4
    for first, repeat in doc["near_duplicates"]:
        a, b = _item(world, "sentinel-2-l2a", first), _item(world, "sentinel-2-l2a", repeat)
        assert a["properties"]["eo:cloud_cover"] == 0 == b["properties"]["eo:cloud_cover"]
        days = (
            datetime.fromisoformat(b["properties"]["datetime"])
            - datetime.fromisoformat(a["properties"]["datetime"])
        ).days
        assert 4 <= days <= 5
        nir_a, ok_a = _reflectance(a, "nir")
        nir_b, ok_b = _reflectance(b, "nir")
        ok = ok_a & ok_b
        assert ok.mean() > 0.99
        assert np.abs(nir_a[ok] - nir_b[ok]).mean() < 0.01  # noise only
        assert not np.array_equal(nir_a, nir_b)


def test_arctic_has_seasonal_snow_and_low_information_areas(world: WorldSummary) -> None:
    s2 = [
        d
        for d in _items(world)
        if d["properties"]["terracorpus:region"] == "north-slope"
        and d["collection"] == "sentinel-2-l2a"
    ]

    def snow_share(p: dict[str, Any]) -> float:  # of the clear surface
        surface = ("vegetation", "not_vegetated", "water", "snow_ice")
        return 100 * p["s2:snow_ice_percentage"] / sum(p[f"s2:{k}_percentage"] for k in surface)

    snow = {d["properties"]["datetime"][:10]: snow_share(d["properties"]) for d in s2}
    spring = [v for k, v in snow.items() if k[5:] < "06-01"]
    summer = [v for k, v in snow.items() if "07-10" <= k[5:] <= "08-31"]
    assert spring and summer and min(spring) > 80 and max(summer) < 30
    truth = rasterio.open(world.out / "truth" / "north-slope" / "2021.tif").read(1)
    share = np.bincount(truth.ravel(), minlength=9) / truth.size
    assert share[1] > 0.25 and share[7] > 0.08 and share[8] > 0.15  # water, ice, tundra


def test_zone_boundary_region_has_overlapping_tiles_in_two_zones(world: WorldSummary) -> None:
    s2 = [
        d
        for d in _items(world)
        if d["properties"]["terracorpus:region"] == "moselle-utm31-32"
        and d["collection"] == "sentinel-2-l2a"
    ]
    zones = {d["properties"]["mgrs:utm_zone"] for d in s2}
    assert zones == {31, 32}
    west = next(d for d in s2 if d["properties"]["proj:epsg"] == 32631)
    east = next(
        d
        for d in s2
        if d["properties"]["proj:epsg"] == 32632
        and d["properties"]["datetime"][:10] == west["properties"]["datetime"][:10]
    )
    gw, ge = shapely.geometry.shape(west["geometry"]), shapely.geometry.shape(east["geometry"])
    assert gw.bounds[0] < 6.0 < ge.bounds[2] and gw.intersection(ge).area > 0.1 * ge.area


def test_read_truth(world: WorldSummary) -> None:
    doc = read_world(world.out)
    region = next(r for r in doc["regions"] if r["name"] == "moselle-utm31-32")
    full = read_truth(world.out, tuple(region["bounds"]), f"EPSG:{region['epsg']}")
    with rasterio.open(world.out / region["truth"]["2021"]) as src:  # None: the first year
        assert np.array_equal(full, src.read(1))
    assert set(np.unique(full)) <= set(CLASSES) and 0 not in np.unique(full)
    # The same ground through the other UTM zone: same class mix, base resolution kept.
    east = next(d for d in _items(world) if d["properties"].get("mgrs:utm_zone") == 32)
    b = east["assets"]["red"]["proj:transform"]
    shape = east["assets"]["red"]["proj:shape"]
    bounds = (b[2], b[5] - 10 * shape[0], b[2] + 10 * shape[1], b[5])
    other = read_truth(world.out, bounds, "EPSG:32632")
    assert other.shape == tuple(shape) and (other > 0).mean() > 0.99
    # The tile's own ground, read in the region's zone: the same class mix.
    same = read_truth(
        world.out,
        Transformer.from_crs(32632, region["epsg"], always_xy=True).transform_bounds(*bounds),
        f"EPSG:{region['epsg']}",
    )
    assert (
        np.abs(
            np.bincount(other.ravel(), minlength=9)[1:] / other.size
            - np.bincount(same.ravel(), minlength=9)[1:] / same.size
        ).max()
        < 0.05
    )
    with pytest.raises(WorldError, match="no region"):
        read_truth(world.out, (0.0, 0.0, 0.01, 0.01), "EPSG:4326")


def test_sun_position_matches_real_items(shared_stac_items: Path) -> None:
    d = json.loads(
        (shared_stac_items / "LC08_L2SP_028030_20200114_20200824_02_T1_SR.json").read_text()
    )
    c = shapely.geometry.shape(d["geometry"]).centroid
    when = datetime.fromisoformat(d["properties"]["datetime"].replace("Z", "+00:00"))
    elev, az = sun_position(when, c.x, c.y)
    assert elev == pytest.approx(d["properties"]["view:sun_elevation"], abs=0.5)
    assert az == pytest.approx(d["properties"]["view:sun_azimuth"], abs=1.0)
    d = json.loads(
        (
            shared_stac_items / "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
        ).read_text()
    )
    c = shapely.geometry.shape(d["geometry"]).centroid
    when = datetime.fromisoformat(d["properties"]["datetime"].replace("Z", "+00:00"))
    elev, az = sun_position(when, c.x, c.y)  # S2 gives tile means from the datatake start
    assert elev == pytest.approx(90 - d["properties"]["s2:mean_solar_zenith"], abs=0.5)
    assert az == pytest.approx(d["properties"]["s2:mean_solar_azimuth"], abs=1.5)


def test_qa_pixel_words_are_the_real_landsat_values() -> None:
    surface = np.array([[4, 6, 11, 4, 4]], dtype=np.uint8)
    codes = np.array([[1, 1, 1, 5, 2]], dtype=np.uint8)
    assert qa_pixel(surface, codes).tolist() == [[21824, 21952, 30048, 23888, 22280]]
    assert qa_pixel(surface, np.zeros_like(codes)).tolist() == [[1] * 5]


def test_same_world_is_a_noop_and_others_are_refused(world: WorldSummary, tmp_path: Path) -> None:
    assert create_world(world.out, preset="tiny", seed=0) == world
    with pytest.raises(WorldError, match="preset 'tiny' seed 0"):
        create_world(world.out, preset="tiny", seed=1)
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(WorldError, match="not empty"):
        create_world(tmp_path, preset="tiny")
    with pytest.raises(WorldError, match="not a directory"):
        create_world(tmp_path / "junk.txt", preset="tiny")
    with pytest.raises(WorldError, match="unknown world preset"):
        create_world(tmp_path / "new", preset="huge")


def test_cli_bad_output_path_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(
        main, ["world", "create", "--out", str(blocker), "--preset", "tiny"]
    )
    assert result.exit_code == 2
    assert "error:" in result.output and "not a directory" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(
        main, ["world", "create", "--out", str(blocker / "sub"), "--preset", "tiny"]
    )
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output


def test_cli_create_prints_summary(world: WorldSummary) -> None:
    result = CliRunner().invoke(
        main, ["world", "create", "--out", str(world.out), "--preset", "tiny"]
    )
    assert result.exit_code == 0, result.output
    assert f"items: {world.total_items}" in result.output and "north-slope" in result.output


def test_deterministic_for_a_seed(world: WorldSummary, tmp_path: Path) -> None:
    again = create_world(tmp_path / "again", preset="tiny", seed=0)
    assert again.n_items == world.n_items  # bytes differ only by the out path in hrefs
    for path in sorted((world.out / "items").glob("*/*.json")):
        other = again.out / path.relative_to(world.out)
        assert other.read_text().replace(str(again.out), str(world.out)) == path.read_text()
    for tif in sorted((world.out / "cogs").glob("*/*/*.tif"))[::7]:
        assert np.array_equal(_read(str(tif)), _read(str(again.out / tif.relative_to(world.out))))
    truths = sorted((world.out / "truth").glob("*/*.tif"))
    assert len(truths) == 4 * 3
    for tif in truths:
        assert (again.out / tif.relative_to(world.out)).read_bytes() == tif.read_bytes()
    assert read_world(again.out)["events"] == read_world(world.out)["events"]


def test_sensor_pixels_are_exact_area_averages_of_the_base_field() -> None:
    from terracorpus.catalogs.world.fields import block_mean
    from terracorpus.catalogs.world.presets import PRESETS
    from terracorpus.catalogs.world.regions import REGIONS, Region
    from terracorpus.catalogs.world.sensors_render import RegionGround
    from terracorpus.catalogs.world.spectra import material_spectra

    spec = next(r for r in REGIONS if r.name == "hubei-lakes")
    ground = RegionGround.build(Region.build(spec, PRESETS["tiny"].size_of(spec.name)), seed=3)
    bands = REGISTRY.get("sentinel-2-l2a").bands
    window = (0, 0, *ground.region.shape)
    snow = ground.snow_state(200)
    spectra_ = material_spectra(bands, 200).astype(np.float32)
    base = spectra_[ground.effective(window, snow)] * ground.texture(window)[..., None]  # 2 m
    for f in (5, 15, 30):  # 10 m, 30 m, 60 m pixels
        fast = ground.fractions(window, f, snow) @ spectra_
        np.testing.assert_allclose(fast, block_mean(base, f), rtol=1e-4, atol=1e-5)


def test_seed_changes_the_world_and_plan_is_stable() -> None:
    from terracorpus.catalogs.world.presets import PRESETS
    from terracorpus.catalogs.world.schedule import plan_world

    _, a = plan_world(PRESETS["tiny"], 0)
    _, b = plan_world(PRESETS["tiny"], 0)
    _, c = plan_world(PRESETS["tiny"], 1)
    assert a == b
    assert [s.item_id for s in a] != [s.item_id for s in c] or [s.cloud_target for s in a] != [
        s.cloud_target for s in c
    ]


def test_sentinel1_rtc_scenes_are_backscatter_of_the_same_ground() -> None:
    from terracorpus.catalogs.world.presets import PRESETS
    from terracorpus.catalogs.world.schedule import plan_world
    from terracorpus.catalogs.world.sensors_render import RegionGround, SceneRenderer
    from terracorpus.catalogs.world.stac import item_dict

    regions, scenes = plan_world(PRESETS["tiny"], 0, sentinel1=True)
    region = next(r for r in regions if r.name == "moselle-utm31-32")
    s1 = [s for s in scenes if s.collection == "sentinel-1-rtc" and s.region == region.name]
    assert len(s1) == PRESETS["tiny"].n_s1
    assert not any(s.collection == "sentinel-1-rtc" for s in plan_world(PRESETS["tiny"], 0)[1])
    ground = RegionGround.build(region, 0)
    sensor = REGISTRY.get("sentinel-1-rtc")
    scene = next(s for s in s1 if not s.partial)
    rendered = SceneRenderer(ground, 0).render(scene, sensor)
    assert set(rendered.assets) == {"vv", "vh"} and rendered.cloud_cover is None
    vv = rendered.assets["vv"].data[0]
    vh = rendered.assets["vh"].data[0]
    assert vv.dtype == np.float32 and (vv > 0).all()
    truth = ground.cover.classes  # same 10 m grid as the scene in this region
    db = 10 * np.log10(vv)
    water, forest, built = (np.median(db[truth == c]) for c in (1, 2, 5))
    assert water < -18 < forest < built  # specular water, volume forest, double-bounce towns
    assert np.median(vh) < np.median(vv)  # cross-pol is weaker
    hrefs = {k: f"/x/{k}.tif" for k in rendered.assets}
    d = item_dict(scene, sensor, rendered, hrefs, "/x/item.json")
    item = pystac.Item.from_dict(d)
    assert item.properties["sar:polarizations"] == ["VV", "VH"]
    assert "eo:cloud_cover" not in d["properties"] and "view:sun_elevation" not in d["properties"]
    assert d["assets"]["vv"]["raster:bands"][0] == {
        "nodata": -32768,
        "data_type": "float32",
        "spatial_resolution": 10.0,
    }
    assert REGISTRY.for_collection(d["collection"]).name == "sentinel-1-rtc"


def test_sentinel1_flag_is_part_of_the_world_identity(world: WorldSummary) -> None:
    with pytest.raises(WorldError, match="with Sentinel-1"):
        create_world(world.out, preset="tiny", seed=0, sentinel1=True)
