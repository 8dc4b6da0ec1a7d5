"""QA decoders and chip quality numbers, on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from terracorpus.curation.errors import DescriptorError
from terracorpus.curation.quality import (
    chip_quality,
    decode_qa,
    decode_qa_pixel,
    decode_scl,
    information_score,
)


def test_scl_classes_map_to_masks() -> None:
    scl = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]], dtype=np.uint8)
    m = decode_scl(scl)
    assert m.nodata.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert m.cloud.tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]]
    assert m.shadow.tolist() == [[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert m.water.tolist() == [[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert m.snow.tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    assert m.saturated.tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_qa_pixel_bits_map_to_masks() -> None:
    # Real Landsat C2 values: 21824 clear land, 21952 clear water, 1 fill,
    # 22280 high-confidence cloud (bit 3 + dilated), 23888 cloud shadow, 30048 snow.
    qa = np.array([[21824, 21952, 1], [22280, 23888, 30048]], dtype=np.uint16)
    m = decode_qa_pixel(qa)
    assert m.nodata.tolist() == [[0, 0, 1], [0, 0, 0]]
    assert m.cloud.tolist() == [[0, 0, 0], [1, 0, 0]]
    assert m.shadow.tolist() == [[0, 0, 0], [0, 1, 0]]
    assert m.water.tolist() == [[0, 1, 0], [0, 0, 0]]
    assert m.snow.tolist() == [[0, 0, 0], [0, 0, 1]]


def test_qa_pixel_fill_is_not_cloud() -> None:
    fill_with_bits = np.array([[1 | (1 << 3) | (1 << 4)]], dtype=np.uint16)
    m = decode_qa_pixel(fill_with_bits)
    assert m.nodata.all() and not m.cloud.any() and not m.shadow.any()


def test_demo_mask_is_scl_coded_and_none_flags_nothing() -> None:
    qa = np.array([[9, 4], [3, 0]], dtype=np.uint8)
    demo = decode_qa(qa, "demo_mask", (2, 2))
    assert demo.cloud.tolist() == [[1, 0], [0, 0]]
    assert demo.nodata.tolist() == [[0, 0], [0, 1]]
    none = decode_qa(None, "none", (2, 2))
    assert not (none.cloud | none.nodata | none.shadow).any()


def test_qa_of_wrong_shape_is_refused() -> None:
    with pytest.raises(DescriptorError, match="shape"):
        decode_qa(np.zeros((3, 3), np.uint8), "scl", (4, 4))


def test_fractions_are_of_data_pixels() -> None:
    # 4x4 chip: top row nodata (QA 0), 3 cloud pixels, 1 shadow, 2 water in the 12 data pixels.
    scl = np.full((4, 4), 4, dtype=np.uint8)
    scl[0] = 0
    scl[1, :3] = 9
    scl[2, 0] = 3
    scl[3, :2] = 6
    rng = np.random.default_rng(0)
    bright = rng.uniform(0, 0.5, (4, 4))
    q = chip_quality(bright, np.zeros((4, 4), bool), decode_scl(scl))
    assert q.nodata_fraction == pytest.approx(4 / 16)
    assert q.cloud_fraction == pytest.approx(3 / 12)
    assert q.shadow_fraction == pytest.approx(1 / 12)
    assert q.water_fraction == pytest.approx(2 / 12)
    assert q.valid_pixels == 12 - 3 - 1


def test_information_low_for_flat_single_class_and_saturated() -> None:
    rng = np.random.default_rng(1)
    textured = rng.uniform(0.0, 0.6, (32, 32))
    flat = np.full((32, 32), 0.12) + rng.normal(0, 0.001, (32, 32))
    ok = np.ones((32, 32), bool)
    assert information_score(textured, ok) > 0.9
    assert information_score(flat, ok) < 0.3
    saturated_scl = np.full((32, 32), 1, np.uint8)
    q = chip_quality(textured, ~ok, decode_scl(saturated_scl))
    assert q.information == 0.0
    cloudy = chip_quality(textured, ~ok, decode_scl(np.full((32, 32), 9, np.uint8)))
    assert cloudy.information == 0.0 and cloudy.cloud_fraction == 1.0
