"""The training side of the corpus contract: format-v1 reading, bad corpora, shard-aware streams."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import zarr

from terracorpus.training.corpus import open_corpus
from terracorpus.training.data import (
    DataConfig,
    GroupStream,
    _buffer_shuffle,
    _worker_batches,
    load_group,
    make_loader,
)
from terracorpus.training.errors import CorpusFormatError, CorpusReadError
from terracorpus.training.testing import (
    LSLIKE,
    NAIPLIKE,
    S2LIKE,
    CorpusSpec,
    write_synthetic_corpus,
)

CFG = DataConfig(patch_px=4, max_image_px=32, split=None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_corpus(tmp_path_factory.mktemp("c") / "corpus", n_groups=12)


def test_reads_physical_values_valid_mask_and_metadata(corpus: Path) -> None:
    reader = open_corpus(corpus)
    assert set(reader.sensors) == {"s2like", "lslike"}
    assert reader.sensors["s2like"].chip_size == (24, 24)
    np.testing.assert_allclose(reader.sensors["s2like"].wavelengths, S2LIKE.wavelengths)
    root = zarr.open_group(corpus / "corpus.zarr", mode="r")
    for sensor, spec in (("s2like", S2LIKE), ("lslike", LSLIKE)):
        raw = np.asarray(root[f"sensors/{sensor}/pixels"][1])
        valid = np.asarray(root[f"sensors/{sensor}/valid"][1]).astype(bool)
        image = reader.read_image(sensor, 1)
        expected = raw.astype(np.float32) * spec.scale + spec.offset
        np.testing.assert_allclose(image.pixels[:, valid], expected[:, valid], rtol=1e-6)
        assert (image.pixels[:, ~valid] == 0).all()
        np.testing.assert_array_equal(image.valid, valid)
        assert image.transform[0] == spec.gsd
        assert image.datetime_ns > 0 and -180 < image.lon < 180


def test_group_members_anchor_first_and_labels(corpus: Path) -> None:
    reader = open_corpus(corpus)
    members = reader.groups.members(3)
    assert [s for s, _ in members] == ["s2like", "s2like", "lslike"]
    assert members[0] == ("s2like", 6)
    labels = reader.labels("s2like")
    assert labels is not None and labels.shape == (24,) and labels.min() >= 0
    assert set(reader.groups.split) <= {"train", "val"}


def test_reader_pickles_without_store_handles(corpus: Path) -> None:
    reader = open_corpus(corpus)
    reader.read_image("s2like", 0)  # opens Zarr handles
    clone = pickle.loads(pickle.dumps(reader))
    assert "_arrays" not in clone.__dict__
    np.testing.assert_array_equal(
        clone.read_image("s2like", 5).pixels, reader.read_image("s2like", 5).pixels
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"format_version": 99}, r"format_version 99; this reader reads versions \[1, 2\]"),
        ({"complete": False}, "incomplete"),
        ({"format": "something-else"}, "not a terracorpus corpus"),
    ],
)
def test_bad_root_attributes_are_refused(
    tmp_path: Path, override: dict[str, object], message: str
) -> None:
    path = write_synthetic_corpus(tmp_path / "c", n_groups=2, attrs_override=override)
    with pytest.raises(CorpusFormatError, match=message):
        open_corpus(path)


def test_band_without_wavelength_is_refused(tmp_path: Path) -> None:
    path = write_synthetic_corpus(tmp_path / "c", n_groups=2)
    root = zarr.open_group(path / "corpus.zarr", mode="r+")
    attrs = dict(root.attrs["terracorpus"])  # type: ignore[arg-type]
    attrs["sensors"]["lslike"]["bands"][1]["center_wavelength"] = None
    root.attrs["terracorpus"] = attrs
    with pytest.raises(CorpusFormatError, match="sensor lslike band 'b1' has no center_wavelength"):
        open_corpus(path)


def test_missing_corpus_and_empty_corpus(tmp_path: Path) -> None:
    with pytest.raises(CorpusFormatError, match="no corpus at"):
        open_corpus(tmp_path / "nothing")
    path = write_synthetic_corpus(tmp_path / "c", n_groups=2)
    root = zarr.open_group(path / "corpus.zarr", mode="r+")
    groups = root["groups"]
    assert isinstance(groups, zarr.Group)
    for name in ("group_id", "split"):
        del groups[name]
        groups.create_array(name, shape=(0,), dtype=str)
    with pytest.raises(CorpusFormatError, match="has no groups"):
        open_corpus(path)


def test_missing_shard_is_named_never_zeros(tmp_path: Path) -> None:
    path = write_synthetic_corpus(tmp_path / "c", n_groups=6, images_per_shard=4)
    reader = open_corpus(path)
    key = reader.shard_key("s2like", 5)
    assert key == "sensors/s2like/pixels/c/1/0/0/0"
    (path / "corpus.zarr" / key).unlink()
    reader.read_image("s2like", 0)  # other shards still read
    with pytest.raises(CorpusReadError, match=r"shard sensors/s2like/pixels/c/1/0/0/0 is missing"):
        open_corpus(path).read_image("s2like", 5)


def test_corrupt_shard_is_named(tmp_path: Path) -> None:
    path = write_synthetic_corpus(tmp_path / "c", n_groups=6, images_per_shard=4)
    shard = path / "corpus.zarr" / "sensors/s2like/pixels/c/0/0/0/0"
    blob = bytearray(shard.read_bytes())
    for i in range(8, 40):
        blob[i] ^= 0x5A
    shard.write_bytes(bytes(blob))
    with pytest.raises(CorpusReadError, match=r"sensors/s2like/pixels/c/0/0/0/0"):
        open_corpus(path).read_image("s2like", 0)


def test_decodable_but_wrong_pixels_fail_the_checksum(tmp_path: Path) -> None:
    path = write_synthetic_corpus(tmp_path / "c", n_groups=4, images_per_shard=4)
    pixels = zarr.open_array(path / "corpus.zarr" / "sensors/lslike/pixels", mode="r+")
    pixels[2] = np.asarray(pixels[2]) + 1  # rewritten shard, valid codec, wrong content
    with pytest.raises(CorpusReadError, match="does not match its manifest sha256"):
        open_corpus(path).read_image("lslike", 2)


def test_resize_area_averages_and_scales_gsd(tmp_path: Path) -> None:
    spec = CorpusSpec(
        n_groups=2,
        sensors=(NAIPLIKE, S2LIKE),
        members={"naiplike": 1, "s2like": 1},
        cloud_fraction=0,
    )
    path = write_synthetic_corpus(tmp_path / "c", spec)
    reader = open_corpus(path)
    sample = load_group(reader, 0, DataConfig(patch_px=4, max_image_px=32, split=None))
    naip, s2 = sample.images
    assert naip.pixels.shape == (4, 32, 32) and naip.gsd == pytest.approx(7.5)
    full = reader.read_image("naiplike", 0).pixels
    np.testing.assert_allclose(naip.pixels[:, 0, 0], full[:, :3, :3].mean((1, 2)), rtol=1e-5)
    assert s2.pixels.shape == (4, 24, 24) and s2.gsd == 10.0


def test_worker_orders_cover_each_group_once_per_epoch(corpus: Path) -> None:
    reader = open_corpus(corpus)
    seen: list[int] = []
    for rank in range(2):
        stream = GroupStream(reader, CFG, rank=rank, world_size=2, num_workers=2)
        for worker in range(2):
            seen.extend(stream.worker_order(epoch=0, worker=worker).tolist())
    assert sorted(seen) == list(range(12))
    one = GroupStream(reader, CFG, num_workers=1)
    assert (
        one.worker_order(0, 0).tolist() != one.worker_order(1, 0).tolist()
    )  # reshuffled per epoch


def test_blocks_keep_reads_shard_local(corpus: Path) -> None:
    reader = open_corpus(corpus)
    stream = GroupStream(
        reader, DataConfig(split=None, shuffle_buffer=1, block_groups=4), num_workers=1
    )
    order = stream.worker_order(0, 0)
    blocks = [set(order[i : i + 4] // 4) for i in range(0, 12, 4)]
    assert all(len(b) == 1 for b in blocks)  # each run of 4 is one block of consecutive groups


def test_buffer_shuffle_is_a_local_permutation() -> None:
    order = np.arange(100)
    out = _buffer_shuffle(order, 8, np.random.default_rng(0))
    assert sorted(out.tolist()) == order.tolist() and out.tolist() != order.tolist()
    assert _worker_batches(5, 0, 2) == 3 and _worker_batches(5, 1, 2) == 2


def test_too_many_consumers_is_a_clear_error(tmp_path: Path) -> None:
    path = write_synthetic_corpus(tmp_path / "c", n_groups=2)
    with pytest.raises(CorpusFormatError, match="fewer than ranks x workers"):
        GroupStream(open_corpus(path), CFG, world_size=2, num_workers=2)


def test_dataloader_workers_read_every_group_once_and_skip_exactly(corpus: Path) -> None:
    reader = open_corpus(corpus)
    loader = make_loader(reader, CFG, batch_size=2, num_workers=2, epochs=1)
    groups = [g for batch in loader for g in batch.groups.tolist()]
    assert sorted(groups) == list(range(12))
    stream = make_loader(reader, CFG, batch_size=2, num_workers=2)
    first = [b.groups.tolist() for _, b in zip(range(5), stream, strict=False)]
    resumed = make_loader(reader, CFG, batch_size=2, num_workers=2, skip_batches=2)
    again = [b.groups.tolist() for _, b in zip(range(3), resumed, strict=False)]
    assert again == first[2:]


def _by_group(loader: object) -> dict[int, list[np.ndarray]]:
    out = {}
    for batch in loader:  # type: ignore[attr-defined]
        (g,) = batch.groups.tolist()
        arrays = [t.numpy() for b in batch.buckets for t in (b.pixels, b.valid)]
        out[g] = [*arrays, batch.token_visible.numpy()]
    return out


def test_reader_used_in_process_then_sent_to_workers(corpus: Path) -> None:
    # Every shard already checked and the store open: the workers' copies open the store on
    # their first read (once failed inside Zarr's event loop), and batches collated into
    # shared memory in the workers equal those collated in process.
    reader = open_corpus(corpus)
    for g in range(len(reader.groups)):
        load_group(reader, g, CFG)
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(
        clone.read_image("s2like", 5).pixels, reader.read_image("s2like", 5).pixels
    )
    here = _by_group(make_loader(reader, CFG, batch_size=1, num_workers=0, epochs=1))
    there = _by_group(make_loader(reader, CFG, batch_size=1, num_workers=2, epochs=1))
    assert sorted(there) == sorted(here) == list(range(12))
    for g, arrays in here.items():
        assert len(there[g]) == len(arrays)
        for a, b in zip(arrays, there[g], strict=True):
            np.testing.assert_array_equal(a, b)
