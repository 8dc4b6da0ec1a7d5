"""The corpus writer, format, validator and info on synthetic in-memory images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pystac
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

from terracorpus.pipelines.cli import main
from terracorpus.pipelines.corpus import (
    MemoryImage,
    corpus_info,
    picture_grid,
    plan_corpus,
    validate_corpus,
    write_arrays,
)
from terracorpus.pipelines.corpus.codecs import CODECS
from terracorpus.pipelines.corpus.location import CorpusLocation
from terracorpus.pipelines.corpus.memory import MemoryReader
from terracorpus.pipelines.corpus.plan import ImageSpec, SensorLayout, split_of
from terracorpus.pipelines.corpus.shards import ShardPixels, image_sha256
from terracorpus.pipelines.corpus.writer import Provenance, write_corpus
from terracorpus.pipelines.errors import CorpusError
from terracorpus.pipelines.testing.corpora import synthetic_inputs

S2, LS = "sentinel-2-l2a", "landsat-oli-c2-l2"
SHARD_MB = 0.15  # a few images per shard, so shards, partial shards and appends all occur


@pytest.fixture(scope="module")
def inputs():
    return synthetic_inputs(10)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, inputs) -> Path:
    groups, images, arrays, layouts = inputs
    out = tmp_path_factory.mktemp("corpus")
    prov = Provenance(config={"k": 1}, config_hash="abc", sources=[{"api": "http://x"}])
    write_arrays(
        out,
        groups,
        images,
        arrays,
        layouts,
        scratch=out / "_scratch",
        shard_mb=SHARD_MB,
        provenance=prov,
    )
    return out


def _copy(corpus: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(corpus, dst)
    return dst


def test_plan_orders_images_by_sensor_then_group_and_cuts_contiguous_shards(inputs):
    groups, images, _, layouts = inputs
    plan = plan_corpus(groups[::-1], images, layouts, SHARD_MB)
    k = plan.images_per_shard[S2]
    assert k == int(SHARD_MB * 1e6 // layouts[S2].image_nbytes) >= 2
    gids = [i.group_id for i in plan.images[S2]]
    assert gids == sorted(gids)
    s2 = [s for s in plan.shards if s.sensor == S2]
    assert [s.start for s in s2] == list(range(0, len(plan.images[S2]), k))
    assert all({i.sensor for i in s.images} == {S2} for s in s2)
    assert s2[-1].stop == len(plan.images[S2])
    # the plan (and so the shard bytes) do not depend on the input order
    assert plan.fingerprint() == plan_corpus(groups, images, layouts, SHARD_MB).fingerprint()


def test_pixels_round_trip_through_plain_zarr(corpus, inputs):
    groups, _images, arrays, layouts = inputs
    root = zarr.open_group(corpus / "corpus.zarr", mode="r")
    meta = root.attrs["terracorpus"]
    assert meta["format"] == "terracorpus-corpus" and meta["format_version"] == 2
    assert meta["complete"] is True and meta["config_hash"] == "abc"
    assert meta["counts"] == {"groups": 10, "images": {S2: 20, LS: 20}}
    for sensor in (S2, LS):
        g = root[f"sensors/{sensor}"]
        ids = np.asarray(g["image_id"][:]).astype(object)
        pixels, valid = g["pixels"], g["valid"]
        assert pixels.dtype == np.uint16 and pixels.chunks == (1, *pixels.shape[1:])
        assert pixels.shards[0] > 1
        assert pixels.metadata.dimension_names == ("image", "band", "y", "x")
        assert pixels.attrs["center_wavelength"][0] == layouts[sensor].bands[0]["center_wavelength"]
        for row, image_id in enumerate(ids):
            np.testing.assert_array_equal(pixels[row], arrays[image_id].pixels)
            np.testing.assert_array_equal(valid[row], arrays[image_id].valid)
        assert np.isclose(g["chip_cloud"][0], 0.125)
        assert set(np.asarray(g["label"][:])) <= set(range(5))
    # group tables: CSR members lead back to the group's own images, anchor first
    gt = root["groups"]
    offsets = gt["member_offsets"][:]
    for gi, group in enumerate(sorted(groups, key=lambda g: g.group_id)):
        sensors = np.asarray(gt["member_sensor"][offsets[gi] : offsets[gi + 1]]).astype(object)
        rows = gt["member_index"][offsets[gi] : offsets[gi + 1]]
        got = [str(root[f"sensors/{s}/image_id"][r]) for s, r in zip(sensors, rows, strict=True)]
        assert got == [m for _, m in group.members]
        assert gt["anchor_index"][gi] == rows[0]
        assert str(gt["group_id"][gi]) == group.group_id


def test_opens_with_plain_xarray_with_named_dims(corpus):
    ds = xr.open_zarr(corpus / "corpus.zarr", group=f"sensors/{S2}", consolidated=False)
    assert ds["pixels"].dims == ("image", "band", "y", "x")
    assert ds["valid"].dims == ("image", "y", "x")
    assert "image_id" in ds.coords and ds.sizes["image"] == 20
    assert np.issubdtype(ds["datetime"].dtype, np.datetime64)
    assert ds["pixels"].dtype == np.uint16  # stored values, never scaled or masked
    groups = xr.open_zarr(corpus / "corpus.zarr", group="groups", consolidated=False)
    assert groups.sizes["group"] == 10 and groups.sizes["group_offset"] == 11


def test_manifest_is_geoparquet_with_digests_of_the_stored_pixels(corpus):
    m = gpd.read_parquet(corpus / "manifest.parquet")
    assert m.crs.to_epsg() == 4326 and len(m) == 40
    assert {"image_id", "group_id", "sensor", "row", "shard", "sha256", "split"} <= set(m.columns)
    root = zarr.open_group(corpus / "corpus.zarr", mode="r")
    for rec in m.itertuples():
        pixels = root[f"sensors/{rec.sensor}/pixels"][rec.row]
        assert image_sha256(pixels) == rec.sha256
        assert rec.shard.startswith(f"sensors/{rec.sensor}/pixels/c/")
    # footprints sit where the synthetic groups are (UTM 15N near -93 E, 36 N)
    assert m.total_bounds[0] > -94 and m.total_bounds[2] < -91
    assert 35 < m.total_bounds[1] < m.total_bounds[3] < 37


def test_collection_is_valid_stac(corpus):
    col = pystac.Collection.from_file(str(corpus / "collection.json"))
    col.validate()  # core schema only; shipped with pystac, no network
    assert col.assets["corpus"].href.endswith("corpus.zarr")
    assert col.assets["manifest"].href.endswith("manifest.parquet")
    assert col.extra_fields["terracorpus:counts"]["groups"] == 10
    assert sorted(col.summaries.lists["terracorpus:sensors"]) == sorted([S2, LS])


def test_validate_passes_a_good_corpus(corpus):
    report = validate_corpus(corpus)
    assert report.ok, report.problems
    assert report.images == 40 and report.groups == 10
    assert report.shards_checked == len(
        zarr.open_group(corpus / "corpus.zarr").attrs["terracorpus"]["shards"]
    )


def _first_shard(root: Path, sensor: str = S2, index: int = 1) -> Path:
    return root / "corpus.zarr" / "sensors" / sensor / "pixels" / "c" / str(index) / "0" / "0" / "0"


def test_validate_names_a_corrupt_shard(corpus, tmp_path):
    c = _copy(corpus, tmp_path)
    shard = _first_shard(c)
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    report = validate_corpus(c)
    text = "\n".join(map(str, report.problems))
    assert not report.ok
    assert f"sensors/{S2}/pixels/c/1/0/0/0" in text and "corrupt" in text
    # the plain zarr read fails instead of returning wrong pixels (chunk checksums)
    k = zarr.open_group(c / "corpus.zarr")[f"sensors/{S2}/pixels"].shards[0]
    with pytest.raises(Exception):  # noqa: B017 - zarr raises its codec's own error type
        _ = zarr.open_group(c / "corpus.zarr")[f"sensors/{S2}/pixels"][k : 2 * k]


def test_validate_names_missing_and_truncated_shards(corpus, tmp_path):
    c = _copy(corpus, tmp_path)
    _first_shard(c).unlink()
    lsshard = _first_shard(c, LS, 0)
    lsshard.write_bytes(lsshard.read_bytes()[:-50])
    text = "\n".join(map(str, validate_corpus(c).problems))
    assert f"shard sensors/{S2}/pixels/c/1/0/0/0" in text and "missing" in text
    assert f"shard sensors/{LS}/pixels/c/0/0/0/0" in text and "truncated" in text


def test_validate_finds_a_manifest_that_disagrees_with_the_arrays(corpus, tmp_path):
    c = _copy(corpus, tmp_path)
    m = gpd.read_parquet(c / "manifest.parquet")
    m.loc[0, "sha256"] = "0" * 64
    m = m.drop(index=5)
    m.to_parquet(c / "manifest.parquet")
    text = "\n".join(map(str, validate_corpus(c).problems))
    assert "manifest.parquet: 39 rows" in text
    assert "differ from the manifest digest" in text


def test_unknown_format_version_and_incomplete_store_are_refused(corpus, tmp_path):
    c = _copy(corpus, tmp_path)
    root = zarr.open_group(c / "corpus.zarr", mode="r+")
    meta = dict(root.attrs["terracorpus"])
    root.attrs["terracorpus"] = {**meta, "complete": False}
    assert "incomplete" in str(validate_corpus(c).problems[0])
    with pytest.raises(CorpusError, match="incomplete"):
        corpus_info(c)
    root.attrs["terracorpus"] = {**meta, "format_version": 99}
    with pytest.raises(CorpusError, match="format_version 99"):
        validate_corpus(c)
    res = CliRunner().invoke(main, ["corpus", "validate", str(c)])
    assert res.exit_code == 2 and "error:" in res.output and "format_version 99" in res.output


def test_cli_validate_and_info(corpus, tmp_path):
    c = _copy(corpus, tmp_path)
    runner = CliRunner()
    ok = runner.invoke(main, ["corpus", "validate", str(c)])
    assert ok.exit_code == 0 and "OK" in ok.output
    png = tmp_path / "grid.png"
    info = runner.invoke(main, ["corpus", "info", str(c), "--png", str(png), "--groups", "3"])
    assert info.exit_code == 0, info.output
    assert f"{S2}: 20 images, 32x32 px" in info.output and "groups        10" in info.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _first_shard(c).unlink()
    bad = runner.invoke(main, ["corpus", "validate", str(c)])
    assert bad.exit_code == 1 and "c/1/0/0/0" in bad.output


def test_picture_grid_has_one_row_per_group(corpus, tmp_path):
    import matplotlib.image as mpimg

    small = mpimg.imread(picture_grid(corpus, tmp_path / "a.png", n_groups=2))
    big = mpimg.imread(picture_grid(corpus, tmp_path / "b.png", n_groups=4))
    assert big.shape[0] > 1.5 * small.shape[0] and big.shape[1] == small.shape[1]
    info = corpus_info(corpus)
    assert info.images == {S2: 20, LS: 20} and info.size_bytes > 0


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_round_trips(codec, inputs, tmp_path):
    groups, images, arrays, layouts = inputs
    write_arrays(
        tmp_path,
        groups[:3],
        images,
        arrays,
        layouts,
        scratch=tmp_path / "s",
        shard_mb=SHARD_MB,
        codec=codec,
    )
    pixels = zarr.open_group(tmp_path / "corpus.zarr")[f"sensors/{LS}/pixels"]
    ids = zarr.open_group(tmp_path / "corpus.zarr")[f"sensors/{LS}/image_id"][:]
    np.testing.assert_array_equal(pixels[0], arrays[str(ids[0])].pixels)
    codecs = json.dumps(pixels.metadata.to_dict()["codecs"])
    assert "crc32c" in codecs and (codec == "none" or codec.split("-")[-1] in codecs)


class _FailAfter(MemoryReader):
    """Raises on the n-th shard: a crash in the middle of a write."""

    def __init__(self, images, fail_at: set[str]) -> None:
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "fail_at", fail_at)

    def for_images(self, images):
        return self

    def __call__(self, images, layout):
        if images[0].image_id in self.fail_at:
            raise RuntimeError("simulated crash")
        return MemoryReader.__call__(self, images, layout)


def test_a_crash_leaves_no_complete_looking_corpus_and_a_rerun_resumes_identically(
    inputs, tmp_path
):
    groups, images, arrays, layouts = inputs
    plan = plan_corpus(groups, images, layouts, SHARD_MB)
    loc = CorpusLocation.of(tmp_path / "a")
    crash_at = {plan.shards[len(plan.shards) // 2].images[0].image_id}
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_corpus(
            loc,
            plan,
            _FailAfter(arrays, crash_at),
            scratch=tmp_path / "sa",
            provenance=Provenance(),
        )
    assert not (tmp_path / "a" / "corpus.zarr").exists()
    assert (tmp_path / "a" / "corpus.zarr.partial").exists()
    with pytest.raises(CorpusError):
        validate_corpus(tmp_path / "a")
    resumed = write_corpus(
        loc, plan, MemoryReader(arrays), scratch=tmp_path / "sa", provenance=Provenance()
    )
    assert resumed.shards_reused == len(plan.shards) // 2
    assert resumed.shards_written == len(plan.shards) - resumed.shards_reused
    fresh = write_corpus(
        CorpusLocation.of(tmp_path / "b"),
        plan,
        MemoryReader(arrays),
        scratch=tmp_path / "sb",
        provenance=Provenance(),
    )
    assert fresh.shards_reused == 0
    assert validate_corpus(tmp_path / "a").ok
    assert _content(tmp_path / "a") == _content(tmp_path / "b")
    assert not (tmp_path / "sa").exists()  # scratch cleared once published


def _content(corpus: Path) -> dict[str, bytes]:
    store = corpus / "corpus.zarr"
    out = {
        str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()
    }
    root_meta = json.loads(out.pop("zarr.json"))["attributes"]["terracorpus"]
    out["shards"] = json.dumps(root_meta["shards"]).encode()
    return out


def test_writing_over_an_existing_corpus_is_refused(corpus, inputs):
    groups, images, arrays, layouts = inputs
    with pytest.raises(CorpusError, match="already exists"):
        write_arrays(corpus, groups, images, arrays, layouts, scratch=corpus / "_s2")


def test_append_grows_the_corpus_and_keeps_old_images(inputs, tmp_path):
    groups, images, arrays, layouts = inputs
    first, later = groups[:7], groups[7:]
    write_arrays(
        tmp_path, first, images, arrays, layouts, scratch=tmp_path / "s1", shard_mb=SHARD_MB
    )
    before = json.loads((tmp_path / "corpus.zarr" / "zarr.json").read_text())["attributes"][
        "terracorpus"
    ]
    root = zarr.open_group(tmp_path / "corpus.zarr")
    base = {s: root[f"sensors/{s}/pixels"].shape[0] for s in (S2, LS)}
    k = {s: root[f"sensors/{s}/pixels"].shards[0] for s in (S2, LS)}
    plan = plan_corpus(
        later, images, layouts, SHARD_MB, base_images=base, base_groups=7, base_images_per_shard=k
    )
    assert any(s.keep >= 0 for s in plan.shards)  # the old last shard was partial
    summary = write_corpus(
        CorpusLocation.of(tmp_path),
        plan,
        MemoryReader(arrays),
        scratch=tmp_path / "s2",
        provenance=Provenance(),
        append=True,
    )
    assert summary.groups == 10 and summary.images == {S2: 20, LS: 20}
    report = validate_corpus(tmp_path)
    assert report.ok, report.problems
    root = zarr.open_group(tmp_path / "corpus.zarr")
    for s in (S2, LS):
        ids = np.asarray(root[f"sensors/{s}/image_id"][:]).astype(object)
        for row, image_id in enumerate(ids):
            np.testing.assert_array_equal(root[f"sensors/{s}/pixels"][row], arrays[image_id].pixels)
    old_full = {
        sh["path"]: sh["sha256"]
        for sh in before["shards"]
        if sh["rows"][1] % k[S2] == 0 and S2 in sh["path"]
    }
    after = {sh["path"]: sh["sha256"] for sh in root.attrs["terracorpus"]["shards"]}
    assert old_full and all(after[p] == h for p, h in old_full.items())  # full shards untouched
    offsets = root["groups/member_offsets"][:]
    assert len(offsets) == 11 and offsets[-1] == 40 and (np.diff(offsets) == 4).all()
    assert len(root.attrs["terracorpus"]["runs"]) == 2


def test_reader_output_of_the_wrong_dtype_is_refused(inputs, tmp_path):
    groups, images, arrays, layouts = inputs
    bad = {k: MemoryImage(v.pixels.astype("float32"), v.valid) for k, v in arrays.items()}
    with pytest.raises(CorpusError, match="never converted"):
        write_arrays(tmp_path, groups[:1], images, bad, layouts, scratch=tmp_path / "s")


def test_split_is_stable_and_near_the_fraction():
    ids = [f"group-{i}" for i in range(2000)]
    val = [split_of(i, 0.1) for i in ids].count("val")
    assert 150 < val < 250
    assert [split_of(i, 0.1) for i in ids[:50]] == [split_of(i, 0.1) for i in ids[:50]]


def test_layout_of_sentinel2_uses_the_finest_grid():
    from terracorpus.catalogs.sensors import builtin_registry

    lay = SensorLayout.from_sensor(builtin_registry().get(S2), 960.0)
    assert lay.chip_shape == (96, 96) and len(lay.bands) == 12 and lay.dtype == "uint16"
    assert {b["gsd"] for b in lay.bands} == {10.0, 20.0, 60.0}


def test_image_spec_and_shard_pixels_are_plain_data():
    spec = ImageSpec("g/s", S2, "g", "s", 0, "EPSG:32615", (10, 0, 0, 0, -10, 0), 10, 0, 0)
    assert np.isnan(spec.cloud_cover)
    sp = ShardPixels(np.zeros((1, 1, 2, 2), "uint16"), np.ones((1, 2, 2), "uint8"), [None], [0.0])
    assert sp.labels is None and sp.failures == []
