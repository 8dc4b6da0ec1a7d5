"""Writing Cloud-Optimized GeoTIFFs with GDAL's COG driver (tiled, compressed, overviews)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.transform import Affine

from terracorpus.catalogs.errors import WorldError

BLOCKSIZE = 256
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def write_cog(
    path: Path,
    data: NDArray[np.generic],
    transform: Affine,
    epsg: int,
    nodata: float | None,
    categorical: bool = False,
) -> int:
    """Write ``data`` (bands, h, w) as a COG at ``path``; return the bytes written.

    Overviews are built down to one block (GDAL's ``OVERVIEWS=AUTO``), averaged for
    reflectance and nearest for class and bit-flag rasters (``categorical``). The file is
    written beside its final name and renamed, so a crash never leaves a half COG.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    profile = {
        "driver": "COG",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": f"EPSG:{epsg}",
        "transform": transform,
        "nodata": nodata,
        "compress": "DEFLATE",
        "predictor": 2,
        "blocksize": BLOCKSIZE,
        "overview_resampling": "nearest" if categorical else "average",
        "resampling": "nearest" if categorical else "average",
    }
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
        os.replace(tmp, path)
    except (OSError, rasterio.errors.RasterioIOError) as e:
        raise WorldError(f"cannot write {path}: {e}") from None
    return path.stat().st_size
