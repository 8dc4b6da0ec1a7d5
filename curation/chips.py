"""The chip table curation decides on: one row per chip, as typed arrays.

Parsed once, at the edge (``pipelines`` reads ``chips.parquet`` with a strict schema), and
passed to :func:`terracorpus.curation.selection.select` and the clustering; nothing in
curation looks up a column by name. A missing value is NaN in a float array (a quality rule
with an unknown value passes; an unknown position shares one partition key) and a NaN row
in ``descriptor`` (the chip cannot be clustered).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from terracorpus.curation.errors import ClusteringError

F64 = NDArray[np.float64]
ROLES = ("anchor", "member")


@dataclass(frozen=True, eq=False)
class ChipTable:
    """Chips of image groups: ids, roles, quality fractions, position and descriptors.

    Attributes:
        chip_id: (N,) unique chip ids.
        group_id: (N,) the group of each chip.
        role: (N,) "anchor" (one per group, the chip that is clustered) or "member".
        nodata_fraction: (N,) share of the chip without data; NaN unknown.
        cloud_fraction: (N,) share of the chip under cloud; NaN unknown.
        information: (N,) texture/information score (higher is more); NaN unknown.
        lon: (N,) chip centre longitude, degrees; NaN unknown.
        lat: (N,) chip centre latitude, degrees; NaN unknown.
        descriptor: (N, D) descriptors; a NaN row when a chip has none.
        descriptor_names: (D,) the name of each descriptor value (``part.name``).
    """

    chip_id: NDArray[np.object_]
    group_id: NDArray[np.object_]
    role: NDArray[np.object_]
    nodata_fraction: F64
    cloud_fraction: F64
    information: F64
    lon: F64
    lat: F64
    descriptor: F64
    descriptor_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.chip_id)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray) and len(value) != n:
                raise ClusteringError(f"chip table: {n} chip ids but {len(value)} {f.name} values")
        if self.descriptor.ndim != 2 or self.descriptor.shape[1] != len(self.descriptor_names):
            raise ClusteringError(
                f"chip table: descriptors of shape {self.descriptor.shape} but "
                f"{len(self.descriptor_names)} descriptor names"
            )
        bad_role = ~np.isin(self.role, ROLES)
        if bad_role.any():
            raise ClusteringError(
                f"chip table: role must be one of {', '.join(ROLES)}, "
                f"not {self.role[bad_role][0]!r} (chip {self.chip_id[bad_role][0]!r})"
            )
        ids = pd.Series(self.chip_id)
        if ids.duplicated().any():
            dup = ids[ids.duplicated()].iloc[0]
            raise ClusteringError(f"chip ids must be unique; {dup!r} appears more than once")
        anchors = pd.Series(self.group_id[self.anchor])
        if anchors.duplicated().any():
            raise ClusteringError(
                f"group {anchors[anchors.duplicated()].iloc[0]!r} has more than one anchor chip"
            )

    def __len__(self) -> int:
        return len(self.chip_id)

    @property
    def anchor(self) -> NDArray[np.bool_]:
        """(N,) True for the anchor chips."""
        out: NDArray[np.bool_] = self.role == "anchor"
        return out

    def take(self, rows: NDArray[np.intp] | NDArray[np.bool_]) -> ChipTable:
        """The table of the given rows (indices or a mask), in that order."""
        cut = {
            f.name: getattr(self, f.name)[rows]
            for f in fields(self)
            if f.name != "descriptor_names"
        }
        return ChipTable(**cut, descriptor_names=self.descriptor_names)


def chip_table(
    chip_id: Sequence[object],
    group_id: Sequence[object],
    *,
    role: Sequence[str] | None = None,
    nodata_fraction: Sequence[float] | None = None,
    cloud_fraction: Sequence[float] | None = None,
    information: Sequence[float] | None = None,
    lon: Sequence[float] | None = None,
    lat: Sequence[float] | None = None,
    descriptor: NDArray[np.floating] | None = None,
    descriptor_names: Sequence[str] | None = None,
) -> ChipTable:
    """A :class:`ChipTable` from in-memory values, for callers that build chips in code.

    Anything not given is unknown: every chip an anchor, NaN fractions and positions, an empty
    descriptor.
    """
    n = len(chip_id)

    def floats(v: Sequence[float] | None) -> F64:
        return np.full(n, np.nan) if v is None else np.asarray(v, dtype=np.float64)

    desc = np.zeros((n, 0)) if descriptor is None else np.asarray(descriptor, dtype=np.float64)
    names = tuple(descriptor_names or (f"desc.{i}" for i in range(desc.shape[1])))
    return ChipTable(
        chip_id=np.asarray(chip_id, dtype=object),
        group_id=np.asarray(group_id, dtype=object),
        role=np.full(n, "anchor", dtype=object) if role is None else np.asarray(role, dtype=object),
        nodata_fraction=floats(nodata_fraction),
        cloud_fraction=floats(cloud_fraction),
        information=floats(information),
        lon=floats(lon),
        lat=floats(lat),
        descriptor=desc,
        descriptor_names=names,
    )
