"""The shard reader of ``materialize``: full-resolution chips of STAC scenes, with masks.

:class:`SceneChipReader` reads a shard's images scene by scene with
:func:`terracorpus.pipelines.pixels.read_scene_chips` (every band asset of a scene opened
once per task; a scene whose images fall into several shards is opened by each of those
tasks). Validity is nodata, cloud and cloud shadow from the scene's QA asset
(:func:`terracorpus.curation.quality.decode_qa`). Given a labeller (the demo passes its
world's), each chip also gets the class label of its group's footprint in its own year
(the anchor's label is of the anchor's year).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from terracorpus.catalogs.access import ReadAccess
from terracorpus.catalogs.scene import SceneRecord
from terracorpus.catalogs.sensors import Sensor
from terracorpus.curation.quality import decode_qa
from terracorpus.pipelines.corpus.plan import Affine6, ImageSpec, SensorLayout
from terracorpus.pipelines.corpus.shards import ShardPixels
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.pixels import ChipFailure, ChipPixels, ChipRequest, read_scene_chips
from terracorpus.pipelines.rundir import Failure


class Labeller(Protocol):
    """Majority land-cover class of a footprint ``(bounds, crs)`` in ``year``; -1 if unknown.

    ``year`` is the image's acquisition year (None: the labeller's default), so a world whose
    ground changes over the years labels every image with the ground it shows.
    """

    def __call__(
        self, bounds: tuple[float, float, float, float], crs: str, year: int | None = None
    ) -> int: ...


@dataclass(frozen=True)
class SceneChipReader:
    """Reads chips from the scenes named by image specs (``scene_id``).

    Args:
        scenes: scene records by id (a shard's reader holds only its own).
        sensors: the sensor registry entries by name.
        strict: raise on the first unreadable chip instead of recording it.
        labeller: the class label of a group's footprint, or None (no labels).
        access: the run's href policy and per-API auth, applied to every read.
    """

    scenes: Mapping[str, SceneRecord]
    sensors: Mapping[str, Sensor]
    strict: bool = False
    labeller: Labeller | None = field(default=None)
    access: ReadAccess | None = None
    _labels: dict[tuple[str, int], int] = field(default_factory=dict, compare=False, repr=False)

    def for_images(self, images: Sequence[ImageSpec]) -> SceneChipReader:
        needed = {i.scene_id for i in images}
        return SceneChipReader(
            {k: v for k, v in self.scenes.items() if k in needed},
            self.sensors,
            self.strict,
            self.labeller,
            access=self.access,
        )

    def __call__(self, images: Sequence[ImageSpec], layout: SensorLayout) -> ShardPixels:
        n, (h, w) = len(images), layout.chip_shape
        out = ShardPixels(
            pixels=np.full((n, len(layout.bands), h, w), layout.fill_value, dtype=layout.dtype),
            valid=np.zeros((n, h, w), dtype="uint8"),
            transforms=[None] * n,
            chip_cloud=[float("nan")] * n,
            labels=[-1] * n if self.labeller is not None else None,
        )
        by_scene: dict[str, list[int]] = {}
        for i, img in enumerate(images):
            by_scene.setdefault(img.scene_id, []).append(i)
        for scene_id, rows in by_scene.items():
            self._read_scene(scene_id, [images[i] for i in rows], rows, layout, out)
        return out

    def _read_scene(
        self,
        scene_id: str,
        images: list[ImageSpec],
        rows: list[int],
        layout: SensorLayout,
        out: ShardPixels,
    ) -> None:
        scene = self.scenes[scene_id]
        sensor = self.sensors[scene.sensor]
        requests = [
            ChipRequest(img.image_id, chip_bounds(img, layout), img.crs, layout.gsd)
            for img in images
        ]
        results = read_scene_chips(
            scene, sensor, requests, resampling="nearest", use_overviews=False, access=self.access
        )
        for row, img, req, res in zip(rows, images, requests, results, strict=True):
            if isinstance(res, ChipFailure):
                self._fail(img, res, out)
                continue
            self._place(row, res, sensor, layout, out)
            if out.labels is not None:
                out.labels[row] = self._label(img, req)

    def _label(self, img: ImageSpec, req: ChipRequest) -> int:
        """The land-cover label of the group's footprint in the image's year (so the anchor's
        label is of the anchor's year): one truth read per group, year and task (members
        share the group's footprint)."""
        if self.labeller is None:
            return -1
        year = _utc_year(img.datetime_ns)
        key = (img.group_id, year)
        if key not in self._labels:
            self._labels[key] = self.labeller(req.bounds, req.crs, year)
        return self._labels[key]

    def _place(
        self, row: int, chip: ChipPixels, sensor: Sensor, layout: SensorLayout, out: ShardPixels
    ) -> None:
        if chip.pixels.dtype != np.dtype(layout.dtype):
            raise StageError(
                f"chip {chip.chip_id}: the scene's pixels are {chip.pixels.dtype}, but sensor "
                f"{sensor.name} is registered as {layout.dtype}; fix the sensor's dtype in the "
                "registry (pixels are never converted silently)"
            )
        shape = chip.nodata.shape
        qa = None if chip.qa is None else chip.qa.astype("int64", copy=False)
        masks = decode_qa(qa, sensor.qa.kind, (shape[0], shape[1]))
        nodata = chip.nodata | masks.nodata
        cloudy = (masks.cloud | masks.shadow) & ~nodata
        data = int((~nodata).sum())
        out.pixels[row] = chip.pixels
        out.valid[row] = (~nodata & ~cloudy).astype("uint8")
        out.transforms[row] = _affine6(chip.transform)
        out.chip_cloud[row] = float(cloudy.sum()) / data if data else float("nan")

    def _fail(self, img: ImageSpec, res: ChipFailure, out: ShardPixels) -> None:
        if self.strict:
            raise StageError(
                f"image {img.image_id}: {res.reason}: {res.detail} (strict mode; rerun without "
                "--strict to record such images as failures and write them as unusable)"
            )
        out.failures.append(
            Failure(
                stage="materialize",
                kind="image",
                key=img.image_id,
                reason=res.reason,
                detail=res.detail,
            )
        )


def chip_bounds(img: ImageSpec, layout: SensorLayout) -> tuple[float, float, float, float]:
    """The footprint that gives exactly the layout's chip shape, from the planned grid's corner."""
    a, _, x0, _, e, y0 = img.transform
    h, w = layout.chip_shape
    return (x0, y0 + e * h, x0 + a * w, y0)


def _utc_year(datetime_ns: int) -> int:
    return datetime.fromtimestamp(datetime_ns / 1e9, tz=UTC).year


def _affine6(t: Sequence[float]) -> Affine6:
    return (float(t[0]), float(t[1]), float(t[2]), float(t[3]), float(t[4]), float(t[5]))
