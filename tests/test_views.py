"""xarray views of the corpus (training.views): georeferenced images and groups, lazy sensors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.windows
import zarr
from describe_builders import trusted_access

from terracorpus.catalogs.frames import scenes_to_frame
from terracorpus.catalogs.parse import scene_from_item
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.catalogs.world.testing import tiny_world
from terracorpus.curation.groups import GroupParams, build_groups, groups_to_frame
from terracorpus.pipelines.config import CorpusConfig, RunConfig
from terracorpus.pipelines.rundir import RunDir
from terracorpus.pipelines.stages.materialize import chip_id, run_materialize
from terracorpus.training.corpus import open_corpus
from terracorpus.training.views import georeference, open_group, open_image, open_sensor

pytestmark = pytest.mark.integration
N_GROUPS = 6


@pytest.fixture(scope="module")
def world_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """A corpus of a few Gaofen-2-anchored groups of the tiny world, and its scenes by id."""
    world = tiny_world(tmp_path_factory.getbasetemp())
    reg = builtin_registry()
    items = sorted(Path(world.out, "items").rglob("*.json"))
    scenes = [scene_from_item(json.loads(p.read_text()), reg) for p in items]
    groups = build_groups(scenes, GroupParams(chip_size_m=480.0))
    groups = [g for g in groups if g.anchor_sensor == "gaofen-2-pms"][:N_GROUPS]
    selection = pd.DataFrame(
        [
            {"chip_id": chip_id(g.group_id, m.scene_id), "group_id": g.group_id,
             "cluster_id": 0, "is_exemplar": True, "kept": True, "reason": ""}
            for g in groups
            for m in g.members
        ]
    )  # fmt: skip
    scenes, access = trusted_access(scenes)
    cfg = RunConfig(
        run_dir=str(tmp_path_factory.mktemp("vrun")), corpus=CorpusConfig(shard_mb=2), **access
    )
    run = RunDir(cfg.run_dir, cfg)
    run.write_table("scenes.parquet", scenes_to_frame(scenes), stage="search")
    run.write_table("groups.parquet", groups_to_frame(groups), stage="group")
    run.write_table("selection.parquet", selection, stage="dedup")
    run_materialize(cfg, run)
    return run.root, {s.id: s for s in scenes}


def _source_window(scene: object, band: str, transform: tuple[float, ...], shape: tuple[int, int]):
    """The band's COG pixels under the chip's grid, read with rasterio (same grid: anchors are
    cut on their own scene's pixel grid)."""
    href = dict(scene.bands)[band].href  # type: ignore[attr-defined]
    a, _, c, _, e, f = transform
    h, w = shape
    with rasterio.open(href) as src:
        window = rasterio.windows.from_bounds(c, f + e * h, c + a * w, f, src.transform)
        return src.read(1, window=window.round_offsets().round_lengths()), src.crs, src.nodata


def test_an_anchor_written_with_rio_to_raster_equals_its_source_cog_window(world_corpus, tmp_path):
    corpus, scenes = world_corpus
    reader = open_corpus(corpus)
    sensor, row = reader.groups.members(0)[0]
    ds = open_image(reader, sensor, row)
    chip = tmp_path / "chip.tif"
    ds.pixels.rio.to_raster(chip)

    scene = scenes[
        str(zarr.open_group(corpus / "corpus.zarr")[f"sensors/{sensor}/source_item"][row])
    ]
    info = reader.sensors[sensor]
    with rasterio.open(chip) as out:
        written, out_crs, out_transform = out.read(), out.crs, out.transform
    assert out_crs == rasterio.crs.CRS.from_string(scene.crs)
    expected_transform = tuple(reader._meta[sensor]["transform"][row])
    assert tuple(out_transform)[:6] == pytest.approx(expected_transform)
    assert ds.rio.transform() == out_transform
    assert str(ds.rio.crs) == scene.crs
    for i, band in enumerate(info.bands):
        source, src_crs, nodata = _source_window(
            scene, band.name, expected_transform, info.chip_size
        )
        assert src_crs == out_crs
        physical = source.astype("float32") * band.scale + band.offset
        if nodata is not None:
            physical[source == nodata] = np.nan
        np.testing.assert_array_equal(written[i], physical)


def test_image_dataset_carries_coordinates_wavelengths_time_and_mask(world_corpus):
    corpus, _ = world_corpus
    reader = open_corpus(corpus)
    sensor, row = reader.groups.members(1)[0]
    ds = open_image(corpus, sensor, row)
    a, _, c, _, e, f = reader._meta[sensor]["transform"][row]
    assert ds.x.values[0] == pytest.approx(c + a / 2) and ds.y.values[0] == pytest.approx(f + e / 2)
    assert list(ds.center_wavelength.values) == pytest.approx(
        list(reader.sensors[sensor].wavelengths)
    )
    assert ds.time.values == np.datetime64(int(reader._meta[sensor]["datetime"][row]), "ns")
    stored_valid = np.asarray(
        zarr.open_group(corpus / "corpus.zarr")[f"sensors/{sensor}/valid"][row]
    )
    np.testing.assert_array_equal(ds.valid.values, stored_valid)
    lonlat = ds.rio.reproject("EPSG:4326")
    lon, lat = float(lonlat.x.mean()), float(lonlat.y.mean())
    assert lon == pytest.approx(reader._meta[sensor]["lon"][row], abs=0.01)
    assert lat == pytest.approx(reader._meta[sensor]["lat"][row], abs=0.01)


def test_group_tree_has_one_georeferenced_node_per_image_anchor_first(world_corpus):
    corpus, _ = world_corpus
    reader = open_corpus(corpus)
    tree = open_group(corpus, str(reader.groups.group_id[2]))
    members = reader.groups.members(2)
    assert tree.attrs["images"] == [f"{k}-{s}" for k, (s, _) in enumerate(members)]
    for name, (sensor, row) in zip(tree.attrs["images"], members, strict=True):
        node = tree[name].to_dataset()
        assert node.attrs["row"] == row and node.attrs["sensor"] == sensor
        assert str(node.rio.crs) == str(reader._meta[sensor]["crs"][row])
        assert node.pixels.shape[1:] == reader.sensors[sensor].chip_size


class _ReadCounter:
    """Counts the store reads of pixel chunks (keys under ``pixels/c/``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys: list[str] = []
        original = zarr.storage.LocalStore.get

        async def get(store, key, *args, **kwargs):  # type: ignore[no-untyped-def]
            if "/pixels/c/" in key:
                self.keys.append(key)
            return await original(store, key, *args, **kwargs)

        monkeypatch.setattr(zarr.storage.LocalStore, "get", get)


def test_sensor_view_is_lazy_and_reads_pixels_only_when_computed(world_corpus, monkeypatch):
    corpus, _ = world_corpus
    reads = _ReadCounter(monkeypatch)
    reader = open_corpus(corpus)
    ds = open_sensor(reader, "gaofen-2-pms")
    n = reader.sensors["gaofen-2-pms"].n_images
    assert ds.pixels.shape[0] == n and ds.pixels.chunks is not None
    subset = ds.isel(image=slice(0, 2)).sel(band=list(ds.band.values[:2]))
    assert reads.keys == []  # opening, selecting and slicing read no pixel

    first = subset.pixels.isel(image=0).values
    assert reads.keys  # computing reads (and the counter sees reads)
    np.testing.assert_array_equal(first, open_image(reader, "gaofen-2-pms", 0).pixels.values[:2])
    assert ds.time.dtype.kind == "M" and ds.transform.shape == (n, 6)
    assert (ds.group_id.values[ds.group_index.values == 0] == reader.groups.group_id[0]).all()

    one = georeference(ds.isel(image=0))
    assert one.rio.transform() == open_image(reader, "gaofen-2-pms", 0).rio.transform()
