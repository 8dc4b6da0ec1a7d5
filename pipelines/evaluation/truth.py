"""Where an evaluation set's labels come from: a truth source gives class maps per year.

A :class:`TruthSource` answers "which class is each pixel of this footprint, in this year" on
a grid the caller chooses, with 0 as nodata. Two sources exist:

* :class:`WorldTruth`: the demo world's land-cover truth (``truth/<region>/<year>.tif``, read
  with :func:`terracorpus.catalogs.world.read_truth`);
* :class:`RasterTruth`: a user's labels rasters, one GeoTIFF of class codes per year.

The builder (:mod:`terracorpus.pipelines.evaluation.build`) takes whichever the caller passes;
production code never imports the demo world itself.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import rasterio
import rasterio.warp
from numpy.typing import NDArray
from rasterio.transform import Affine

from terracorpus.pipelines.errors import PipelineError

Bounds = tuple[float, float, float, float]
TRUTH_NODATA = 0


class EvalSetError(PipelineError):
    """An evaluation set cannot be built: no truth for a year, no ground left, bad input."""


class TruthSource(Protocol):
    """Class codes of a footprint in a year, on an ``(height, width)`` grid over ``bounds``."""

    @property
    def classes(self) -> dict[int, str]: ...

    def __call__(
        self, bounds: Bounds, crs: str, year: int, shape: tuple[int, int]
    ) -> NDArray[np.uint8]: ...


def _nearest(codes: NDArray[np.uint8], shape: tuple[int, int]) -> NDArray[np.uint8]:
    """Nearest-neighbour resampling of a class map onto ``shape`` (same ground)."""
    h, w = codes.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.int64), w - 1)
    return np.ascontiguousarray(codes[rows[:, None], cols[None, :]])


@dataclass(frozen=True)
class WorldTruth:
    """The land-cover truth of a demo world, by year (``world.json`` lists its years)."""

    world_dir: str
    _doc: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        from terracorpus.catalogs.world import read_world

        object.__setattr__(self, "_doc", read_world(self.world_dir))

    @property
    def classes(self) -> dict[int, str]:
        from terracorpus.catalogs.world import CLASSES

        path = Path(self.world_dir) / "truth" / "classes.json"
        if path.is_file():
            doc = json.loads(path.read_text())
            items = doc.items() if isinstance(doc, dict) else [(c["code"], c["name"]) for c in doc]
            return {int(k): str(v) for k, v in items}
        return dict(CLASSES)

    @property
    def years(self) -> list[int]:
        """The years the world has truth for (its first year only, for a one-year world)."""
        years = self._doc.get("years")
        if isinstance(years, list) and years:
            return [int(y) for y in years]
        start = str(self._doc.get("start", ""))[:4]
        return [int(start)] if start.isdigit() else []

    def __call__(
        self, bounds: Bounds, crs: str, year: int, shape: tuple[int, int]
    ) -> NDArray[np.uint8]:
        from terracorpus.catalogs.errors import WorldError
        from terracorpus.catalogs.world import read_truth

        known = self.years
        if known and year not in known:
            raise EvalSetError(
                f"the world at {self.world_dir} has no truth for {year} (its years: "
                f"{', '.join(map(str, known))}); build the evaluation set from scenes of those "
                "years, or rebuild the world with a preset that spans them"
            )
        try:
            if "year" in inspect.signature(read_truth).parameters:
                codes = read_truth(self.world_dir, bounds, crs, year=year)  # type: ignore[call-arg,unused-ignore]
            else:  # a world of one year: its truth is that year's
                codes = read_truth(self.world_dir, bounds, crs)
        except WorldError as e:
            raise EvalSetError(f"truth for {year}: {e}") from None
        return _nearest(np.asarray(codes, dtype=np.uint8), shape)


@dataclass(frozen=True)
class RasterTruth:
    """A user's labels: one GeoTIFF of integer class codes per year (``nodata`` -> 0).

    Args:
        paths: year -> raster path (any CRS; resampled with nearest neighbour).
        class_names: code -> name of every class (0 is nodata and must not be one).
    """

    paths: Mapping[int, str]
    class_names: Mapping[int, str]

    @property
    def classes(self) -> dict[int, str]:
        return {0: "nodata", **{int(k): str(v) for k, v in self.class_names.items()}}

    @property
    def years(self) -> list[int]:
        return sorted(int(y) for y in self.paths)

    def __call__(
        self, bounds: Bounds, crs: str, year: int, shape: tuple[int, int]
    ) -> NDArray[np.uint8]:
        path = self.paths.get(year)
        if path is None:
            raise EvalSetError(
                f"no labels raster for {year} (given for {', '.join(map(str, self.years))}); "
                "pass one per year of the scenes"
            )
        out = np.zeros(shape, dtype=np.uint8)
        res_x = (bounds[2] - bounds[0]) / shape[1]
        res_y = (bounds[3] - bounds[1]) / shape[0]
        try:
            with rasterio.open(path) as src:
                rasterio.warp.reproject(
                    rasterio.band(src, 1),
                    out,
                    src_nodata=src.nodata,
                    dst_transform=Affine(res_x, 0.0, bounds[0], 0.0, -res_y, bounds[3]),
                    dst_crs=crs,
                    dst_nodata=TRUTH_NODATA,
                    resampling=rasterio.warp.Resampling.nearest,
                )
        except rasterio.errors.RasterioIOError as e:
            raise EvalSetError(f"cannot read labels raster {path} for {year}: {e}") from None
        return out


def truth_shape(chip_size_m: float, truth_res_m: float) -> tuple[int, int]:
    """The truth grid of a chip: its ground size over the truth resolution, at least 1 px."""
    n = max(1, math.floor(chip_size_m / truth_res_m + 0.5))
    return (n, n)
