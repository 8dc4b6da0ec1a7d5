"""Small made-up corpora in memory: groups, images and arrays for the corpus writer.

:func:`synthetic_inputs` gives what :func:`terracorpus.pipelines.corpus.memory.write_arrays`
takes: pixels that are spatially smooth (like land cover), so codec ratios on them mean
something.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.pipelines.corpus.memory import MemoryImage
from terracorpus.pipelines.corpus.plan import GroupSpec, ImageSpec, SensorLayout


def synthetic_inputs(
    n_groups: int,
    sensors: Sequence[str] = ("sentinel-2-l2a", "landsat-oli-c2-l2"),
    *,
    chip_size_m: float = 320.0,
    members_per_sensor: int = 2,
    seed: int = 0,
) -> tuple[list[GroupSpec], list[ImageSpec], dict[str, MemoryImage], dict[str, SensorLayout]]:
    """Groups, images and arrays of a small made-up corpus (smooth fields plus noise).

    Groups sit on a UTM 15N grid; the anchor is the first sensor's first member. Pixels are
    spatially smooth (like land cover) so codec ratios on them mean something.
    """
    reg = builtin_registry()
    layouts = {s: SensorLayout.from_sensor(reg.get(s), chip_size_m) for s in sensors}
    rng = np.random.default_rng(seed)
    groups, images, arrays = [], [], {}
    for g in range(n_groups):
        gid = f"g{g:05d}"
        x0, y0 = 500_000.0 + (g % 50) * chip_size_m, 4_000_000.0 - (g // 50) * chip_size_m
        bounds = (x0, y0 - chip_size_m, x0 + chip_size_m, y0)
        members = []
        for s in sensors:
            lay = layouts[s]
            for m in range(members_per_sensor):
                scene = f"{s}-scene-{(g // 10) * 10 + m}"
                spec = ImageSpec(
                    image_id=f"{gid}/{scene}",
                    sensor=s,
                    group_id=gid,
                    scene_id=scene,
                    datetime_ns=int(1.6e18) + m * 86_400 * 10**9 * 40,
                    crs="EPSG:32615",
                    transform=(lay.gsd, 0.0, x0, 0.0, -lay.gsd, y0),
                    gsd=lay.gsd,
                    lon=-93.0 + g * 0.003,
                    lat=36.1,
                    cloud_cover=float(m * 10),
                    source_item=scene,
                    source_href=f"http://127.0.0.1/collections/x/items/{scene}",
                )
                images.append(spec)
                members.append((s, spec.image_id))
                arrays[spec.image_id] = _smooth_image(rng, lay, label=g % 5)
        lon0 = -93.0 + g * 0.003
        groups.append(
            GroupSpec(
                gid, tuple(members), "EPSG:32615", bounds, (lon0, 36.1, lon0 + 0.003, 36.103), g % 7
            )
        )
    return groups, images, arrays, layouts


def _smooth_image(rng: np.random.Generator, layout: SensorLayout, label: int) -> MemoryImage:
    h, w = layout.chip_shape
    nb = len(layout.bands)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = 1500 + 1200 * np.sin(6 * xx + rng.uniform(0, 6)) * np.cos(4 * yy + rng.uniform(0, 6))
    gains = rng.uniform(0.6, 1.6, size=(nb, 1, 1))
    noise = rng.normal(0, 40, size=(nb, h, w))
    info = np.iinfo(layout.dtype) if np.dtype(layout.dtype).kind in "iu" else None
    pix = base[None] * gains + noise
    if info is not None:
        pix = np.clip(pix, info.min + 1, info.max)
    valid = np.ones((h, w), dtype="uint8")
    valid[: h // 8] = 0
    return MemoryImage(pix.astype(layout.dtype), valid, chip_cloud=0.125, label=label)
