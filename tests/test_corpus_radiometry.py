"""Corpus format 2: every image keeps its own scale, offset and nodata, so a group that mixes
Sentinel-2 processing baselines reads back right; a format-1 corpus still reads, and an
append to it upgrades it to format 2."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import zarr

from terracorpus.pipelines.corpus import validate_corpus
from terracorpus.pipelines.corpus.location import CorpusLocation
from terracorpus.pipelines.corpus.memory import MemoryImage, MemoryReader, write_arrays
from terracorpus.pipelines.corpus.plan import GroupSpec, ImageSpec, SensorLayout, plan_corpus
from terracorpus.pipelines.corpus.writer import Provenance, write_corpus
from terracorpus.pipelines.testing.corpora import synthetic_inputs
from terracorpus.training.corpus import open_corpus
from terracorpus.training.testing import write_synthetic_corpus
from terracorpus.training.views import open_image, open_sensor

S2 = "sentinel-2-l2a"


def _two_baselines() -> tuple[
    list[GroupSpec], list[ImageSpec], dict[str, MemoryImage], dict[str, SensorLayout]
]:
    """One group of two Sentinel-2 images: one before baseline 04.00 (offset 0), one after
    (offset -0.1, nodata 65535 on its first band). Both hold stored values 1000 + k."""
    groups, images, arrays, layouts = synthetic_inputs(1, sensors=(S2,), members_per_sensor=2)
    n = len(layouts[S2].bands)
    old, new = images
    images = [
        dataclasses.replace(old, scale=(1e-4,) * n, offset=(0.0,) * n, nodata=(0.0,) * n),
        dataclasses.replace(
            new, scale=(1e-4,) * n, offset=(-0.1,) * n, nodata=(65535.0,) + (math.nan,) * (n - 1)
        ),
    ]
    h, w = layouts[S2].chip_shape
    for k, img in enumerate(images):
        pixels = np.full((n, h, w), 1000 + k, dtype="uint16")
        pixels[:, 0, 0] = 0  # nodata of the old image only
        pixels[0, 0, 1] = 65535  # nodata of the new image's first band only
        arrays[img.image_id] = MemoryImage(pixels, np.ones((h, w), dtype="uint8"))
    return groups, images, arrays, layouts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rad") / "corpus"
    groups, images, arrays, layouts = _two_baselines()
    write_arrays(path, groups, images, arrays, layouts, scratch=path.parent / "scratch")
    return path


def test_each_image_reads_back_its_own_physical_values(corpus: Path) -> None:
    reader = open_corpus(corpus)
    assert reader.attrs["format_version"] == 2
    [(sensor, r0), (_, r1)] = reader.groups.members(0)
    old, new = reader.read_images([(sensor, r0), (sensor, r1)])
    assert old.pixels[:, 5, 5] == pytest.approx(1000 * 1e-4, abs=1e-6)
    assert new.pixels[:, 5, 5] == pytest.approx(1001 * 1e-4 - 0.1, abs=1e-6)
    # Each image's own nodata: (0, 0) is nodata in the old image, (0, 1) in the new one.
    assert not old.valid[0, 0] and old.valid[0, 1]
    assert new.valid[0, 0] and not new.valid[0, 1]


def test_views_use_each_images_radiometry(corpus: Path) -> None:
    one = open_image(corpus, S2, 1)
    assert float(one.pixels[1, 5, 5]) == pytest.approx(1001 * 1e-4 - 0.1, abs=1e-6)
    assert math.isnan(float(one.pixels[0, 0, 1])) and one.pixels.attrs["offset"][0] == -0.1
    ds = open_sensor(corpus, S2)
    assert ds["offset"].values[:, 0].tolist() == [0.0, -0.1]
    values = ds.pixels[:, 2, 5, 5].values
    assert values == pytest.approx([0.1, 1001 * 1e-4 - 0.1], abs=1e-6)
    assert math.isnan(float(ds.pixels[0, 2, 0, 0]))


def test_the_store_and_validate(corpus: Path) -> None:
    group = zarr.open_group(str(corpus / "corpus.zarr"), mode="r")
    offset = group[f"sensors/{S2}/offset"]
    assert isinstance(offset, zarr.Array) and offset.metadata.dimension_names == ("image", "band")
    report = validate_corpus(str(corpus))
    assert report.ok, report.problems


def test_a_format_1_corpus_still_reads(tmp_path: Path) -> None:
    path = write_synthetic_corpus(tmp_path / "v1", n_groups=2)
    reader = open_corpus(path)
    assert reader.attrs["format_version"] == 1
    sensor = next(iter(reader.sensors))
    bands = reader.sensors[sensor].bands
    rad = reader.radiometry(sensor, 0)
    assert rad.scale.tolist() == [b.scale for b in bands]
    assert rad.offset.tolist() == [b.offset for b in bands]
    image = reader.read_image(sensor, 0)
    assert np.isfinite(image.pixels).all()
    assert open_sensor(path, sensor)["scale"].shape == (reader.sensors[sensor].n_images, len(bands))


def test_appending_to_a_format_1_corpus_makes_it_format_2(tmp_path: Path) -> None:
    groups, images, arrays, layouts = synthetic_inputs(2, sensors=(S2,))
    path = tmp_path / "corpus"
    first = [g.group_id for g in groups[:1]]
    old_images = [i for i in images if i.group_id in first]
    write_arrays(path, groups[:1], old_images, arrays, layouts, scratch=tmp_path / "s1")
    _downgrade_to_format_1(path)
    assert open_corpus(path).attrs["format_version"] == 1
    n = len(layouts[S2].bands)
    new_images = [
        dataclasses.replace(i, offset=(0.0,) * n, scale=(1e-4,) * n, nodata=(0.0,) * n)
        for i in images
        if i.group_id not in first
    ]
    root = zarr.open_group(str(path / "corpus.zarr"), mode="r")
    pixels = root[f"sensors/{S2}/pixels"]
    assert isinstance(pixels, zarr.Array) and pixels.shards is not None
    plan = plan_corpus(
        groups[1:],
        new_images,
        layouts,
        64.0,
        base_images={S2: len(old_images)},
        base_groups=1,
        base_images_per_shard={S2: pixels.shards[0]},
    )
    write_corpus(
        CorpusLocation.of(path),
        plan,
        MemoryReader(arrays),
        scratch=tmp_path / "s2",
        provenance=Provenance(),
        append=True,
    )
    reader = open_corpus(path)
    assert reader.attrs["format_version"] == 2
    offsets = [reader.radiometry(S2, r).offset[0] for r in range(reader.sensors[S2].n_images)]
    assert offsets == [-0.1] * len(old_images) + [0.0] * len(new_images)
    assert validate_corpus(str(path)).ok


def _downgrade_to_format_1(path: Path) -> None:
    """What a format-1 writer made: no per-image radiometry arrays, version 1."""
    root = zarr.open_group(str(path / "corpus.zarr"), mode="r+")
    for name in ("scale", "offset", "nodata"):
        del root[f"sensors/{S2}/{name}"]
    meta = dict(root.attrs["terracorpus"])  # type: ignore[arg-type]
    root.attrs["terracorpus"] = {**meta, "format_version": 1}
