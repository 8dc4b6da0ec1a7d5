"""The descriptor layout is fixed, named, the same length for every sensor, and finite."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.curation.descriptors import (
    SLOTS,
    ChipMeta,
    band_slots,
    describe_chip,
    descriptor_names,
    descriptor_parts,
)
from terracorpus.curation.errors import DescriptorError

META = ChipMeta(datetime(2021, 7, 1, tzinfo=UTC), lon=-93.0, lat=45.0, gsd=10.0, sun_elevation=60.0)


def _chip(n_bands: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.02, 0.5, (n_bands, 16, 16))


def test_layout_is_fixed_and_parts_cover_it() -> None:
    names = descriptor_names()
    assert len(names) == len(set(names)) == len(SLOTS) * 6 + 9 + 3 + 12
    parts = descriptor_parts()
    assert list(parts) == ["spec", "index", "tex", "meta"]
    assert parts["spec"][0] == 0 and parts["meta"][1] == len(names)
    assert names[0] == "spec.coastal.mean" and names[-1] == "meta.log_gsd"


@pytest.mark.parametrize("sensor", [s.name for s in builtin_registry()])
def test_every_sensor_gives_a_finite_vector_of_the_same_length(sensor: str) -> None:
    s = builtin_registry().get(sensor)
    vec = describe_chip(_chip(len(s.bands)), s.bands, np.ones((16, 16), bool), META)
    assert vec.dtype == np.float32 and vec.shape == (len(descriptor_names()),)
    assert np.isfinite(vec).all()


def test_slots_by_common_name_and_wavelength() -> None:
    reg = builtin_registry()
    s2 = band_slots(reg.get("sentinel-2-l2a").bands)
    # The three S2 red-edge bands share common name "rededge": wavelength decides.
    assert [s2[f"rededge{i}"] for i in (1, 2, 3)] == [4, 5, 6]
    assert s2["nir"] == 7 and s2["nir08"] == 8 and s2["swir22"] == 11
    oli = band_slots(reg.get("landsat-oli-c2-l2").bands)
    assert "nir" not in oli and oli["nir08"] == 4
    assert band_slots(reg.get("sentinel-1-rtc").bands) == {"vv": 0, "vh": 1}


def test_missing_bands_are_zero_with_presence_flag() -> None:
    naip = builtin_registry().get("naip")
    vec = describe_chip(_chip(4), naip.bands, np.ones((16, 16), bool), META)
    names = descriptor_names()
    at = {n: vec[i] for i, n in enumerate(names)}
    assert at["spec.red.present"] == 1.0 and at["spec.red.mean"] > 0
    assert at["spec.swir16.present"] == 0.0 and at["spec.swir16.mean"] == 0.0
    assert at["index.ndvi.present"] == 1.0 and at["index.ndsi.present"] == 0.0
    assert at["meta.off_nadir_present"] == 0.0 and at["meta.sun_elevation_present"] == 1.0


def test_statistics_are_of_usable_pixels_only() -> None:
    s2 = builtin_registry().get("sentinel-2-l2a")
    refl = np.full((12, 16, 16), 0.1)
    refl[:, :8] = 0.9  # "cloud" rows, masked out
    usable = np.zeros((16, 16), bool)
    usable[8:] = True
    vec = describe_chip(refl, s2.bands, usable, META)
    at = dict(zip(descriptor_names(), vec.tolist(), strict=True))
    assert at["spec.red.mean"] == pytest.approx(0.1)
    assert at["spec.red.std"] == pytest.approx(0.0, abs=1e-6)
    assert at["tex.gradient_energy"] == pytest.approx(0.0, abs=1e-9)


def test_indices_follow_the_physics() -> None:
    s2 = builtin_registry().get("sentinel-2-l2a")
    refl = np.full((12, 8, 8), 0.05)
    refl[7] = 0.45  # nir bright, red dark: vegetation
    vec = describe_chip(refl, s2.bands, np.ones((8, 8), bool), META)
    at = dict(zip(descriptor_names(), vec.tolist(), strict=True))
    assert at["index.ndvi.mean"] == pytest.approx(0.8, abs=1e-5)
    assert at["index.ndwi.mean"] == pytest.approx(-0.8, abs=1e-5)


def test_meta_encodes_position_on_the_unit_sphere_and_season() -> None:
    s2 = builtin_registry().get("sentinel-2-l2a")
    vec = describe_chip(_chip(12), s2.bands, np.ones((16, 16), bool), META)
    at = dict(zip(descriptor_names(), vec.tolist(), strict=True))
    assert at["meta.x"] ** 2 + at["meta.y"] ** 2 + at["meta.z"] ** 2 == pytest.approx(1, abs=1e-5)
    assert at["meta.z"] == pytest.approx(np.sin(np.radians(45)), abs=1e-6)
    assert at["meta.doy_sin"] ** 2 + at["meta.doy_cos"] ** 2 == pytest.approx(1, abs=1e-5)
    assert at["meta.log_gsd"] == pytest.approx(1.0)


def test_no_usable_pixel_still_gives_finite_meta_only_vector() -> None:
    s2 = builtin_registry().get("sentinel-2-l2a")
    vec = describe_chip(_chip(12), s2.bands, np.zeros((16, 16), bool), META)
    start, stop = descriptor_parts()["meta"]
    assert np.isfinite(vec).all() and not vec[:start].any() and vec[start:stop].any()


def test_wrong_shapes_are_refused() -> None:
    s2 = builtin_registry().get("sentinel-2-l2a")
    with pytest.raises(DescriptorError):
        describe_chip(_chip(3), s2.bands, np.ones((16, 16), bool), META)
