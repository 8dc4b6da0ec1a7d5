"""The synthetic demo world: ground truth first, images second.

:func:`create_world` builds a multi-sensor world (Sentinel-2 L2A, Landsat 8/9 C2 L2, NAIP,
Gaofen-2) over four regions as Cloud-Optimized GeoTIFFs and STAC Items, with the land-cover
truth and the true cloud masks beside them; :func:`read_truth` (per
year: the ground changes over the world's years) and :func:`truth_cloud_fraction` read that
truth back for scoring. See docs/demo-world.md.
"""

from terracorpus.catalogs.errors import WorldError
from terracorpus.catalogs.world.build import WorldSummary, create_world
from terracorpus.catalogs.world.landcover import CLASSES
from terracorpus.catalogs.world.presets import PRESETS
from terracorpus.catalogs.world.truth import (
    cloud_truth_path,
    read_cloud_truth,
    read_truth,
    read_world,
    truth_cloud_fraction,
    truth_path,
    world_years,
)

__all__ = [
    "CLASSES",
    "PRESETS",
    "WorldError",
    "WorldSummary",
    "cloud_truth_path",
    "create_world",
    "read_cloud_truth",
    "read_truth",
    "read_world",
    "truth_cloud_fraction",
    "truth_path",
    "world_years",
]
