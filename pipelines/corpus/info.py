"""``corpus info``: what a corpus holds (sensors, counts, size, extent) and a picture of it.

:func:`corpus_info` summarises the root attributes and the store's size; :func:`picture_grid`
draws a PNG with one row per sample group and one true-colour (or grey) tile per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from terracorpus.pipelines.corpus.format import (
    GROUPS_GROUP,
    SENSORS_GROUP,
    STORE_NAME,
    array_at,
    check_root_attrs,
    corpus_meta,
    root_attrs,
    values_at,
)
from terracorpus.pipelines.corpus.location import CorpusLocation

RGB_WAVELENGTHS = (0.665, 0.560, 0.490)  # µm: red, green, blue


@dataclass
class CorpusInfo:
    url: str
    format_version: int
    created: str
    groups: int
    images: dict[str, int]
    bands: dict[str, list[str]]
    chip_size: dict[str, list[int]]
    splits: dict[str, int]
    size_bytes: int
    lonlat_extent: tuple[float, float, float, float]
    time_extent: tuple[str, str]
    extra: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [
            f"corpus        {self.url}",
            f"format        terracorpus-corpus v{self.format_version}, created {self.created}",
            f"groups        {self.groups} ({', '.join(f'{k} {v}' for k, v in self.splits.items())})",
            f"size          {self.size_bytes / 1e6:.1f} MB",
            f"extent        lon {self.lonlat_extent[0]:.4f}..{self.lonlat_extent[2]:.4f}, lat {self.lonlat_extent[1]:.4f}..{self.lonlat_extent[3]:.4f}",
            f"time          {self.time_extent[0]} .. {self.time_extent[1]}",
        ]
        for s, n in self.images.items():
            h, w = self.chip_size[s]
            out.append(
                f"sensor        {s}: {n} images, {h}x{w} px, bands {' '.join(self.bands[s])}"
            )
        return out


def corpus_info(
    target: str | CorpusLocation, storage_options: dict[str, Any] | None = None
) -> CorpusInfo:
    """Summarise the corpus at ``target``."""
    loc = (
        target if isinstance(target, CorpusLocation) else CorpusLocation.of(target, storage_options)
    )
    root = loc.open_group()
    check_root_attrs(root_attrs(root), loc.url_of(STORE_NAME))
    meta = corpus_meta(root)
    lonlat = values_at(root, f"{GROUPS_GROUP}/lonlat_bounds")
    split = values_at(root, f"{GROUPS_GROUP}/split")
    times = [values_at(root, f"{SENSORS_GROUP}/{s}/datetime") for s in meta["sensors"]]
    t = np.concatenate(times) if times else np.array([0])
    return CorpusInfo(
        url=loc.url,
        format_version=int(meta["format_version"]),
        created=str(meta.get("created")),
        groups=int(meta["counts"]["groups"]),
        images={s: int(n) for s, n in meta["counts"]["images"].items()},
        bands={s: [b["name"] for b in d["bands"]] for s, d in meta["sensors"].items()},
        chip_size={s: list(d["chip_size"]) for s, d in meta["sensors"].items()},
        splits={str(k): int((split == k).sum()) for k in sorted(set(split))},
        size_bytes=int(loc.fs().du(loc.path(STORE_NAME))),
        lonlat_extent=(
            float(lonlat[:, 0].min()),
            float(lonlat[:, 1].min()),
            float(lonlat[:, 2].max()),
            float(lonlat[:, 3].max()),
        ),
        time_extent=(
            str(np.datetime64(int(t.min()), "ns"))[:19],
            str(np.datetime64(int(t.max()), "ns"))[:19],
        ),
    )


def picture_grid(
    target: str | CorpusLocation,
    png: str | Path,
    *,
    n_groups: int = 6,
    storage_options: dict[str, Any] | None = None,
) -> Path:
    """Save a PNG: ``n_groups`` groups spread over the corpus, one row each, images in order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loc = (
        target if isinstance(target, CorpusLocation) else CorpusLocation.of(target, storage_options)
    )
    root = loc.open_group()
    check_root_attrs(root_attrs(root), loc.url_of(STORE_NAME))
    offsets = values_at(root, f"{GROUPS_GROUP}/member_offsets")
    msensor = values_at(root, f"{GROUPS_GROUP}/member_sensor")
    mindex = values_at(root, f"{GROUPS_GROUP}/member_index")
    gids = values_at(root, f"{GROUPS_GROUP}/group_id")
    picks = np.unique(np.linspace(0, len(gids) - 1, min(n_groups, len(gids))).astype(int))
    ncols = int(max(np.diff(offsets)[picks]))
    fig, axes = plt.subplots(
        len(picks), ncols, figsize=(1.8 * ncols, 1.9 * len(picks)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for r, g in enumerate(picks):
        for c, m in enumerate(range(offsets[g], offsets[g + 1])):
            sensor, row = str(msensor[m]), int(mindex[m])
            tile = _true_colour(root, sensor, row)
            ax = axes[r, c]
            ax.imshow(tile, cmap=None if tile.ndim == 3 else "gray", interpolation="nearest")
            ax.set_title(f"{sensor}\n{_date(root, sensor, row)}", fontsize=6)
        axes[r, 0].text(
            -0.1,
            0.5,
            str(gids[g])[:10],
            transform=axes[r, 0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=6,
        )
    fig.tight_layout()
    out = Path(png)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _true_colour(root: zarr.Group, sensor: str, row: int) -> np.ndarray:
    """A (H, W, 3) image in 0..1 from the bands nearest red, green, blue (2-98 % stretch
    of all three together), or a grey (H, W) one when the sensor lacks them."""
    pixels = array_at(root, f"{SENSORS_GROUP}/{sensor}/pixels")
    wl = np.asarray(pixels.attrs.get("center_wavelength", []), dtype=float)
    img = np.asarray(pixels[row]).astype("float32")
    valid = values_at(root, f"{SENSORS_GROUP}/{sensor}/valid", row).astype(bool)
    if len(wl) >= 3 and (np.abs(wl[:, None] - np.array(RGB_WAVELENGTHS)) < 0.06).any(axis=0).all():
        idx = [int(np.argmin(np.abs(wl - w))) for w in RGB_WAVELENGTHS]
        rgb = np.moveaxis(img[idx], 0, -1)
    else:
        rgb = img[0]
    ok = rgb[valid] if valid.any() else rgb
    lo, hi = np.percentile(ok, 2), np.percentile(ok, 98)  # one stretch: colours stay true
    out = np.clip((rgb - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
    out[~valid] = out[~valid] * 0.4  # dim unusable pixels (cloud, nodata)
    return np.asarray(out)


def _date(root: zarr.Group, sensor: str, row: int) -> str:
    ns = int(values_at(root, f"{SENSORS_GROUP}/{sensor}/datetime", row))
    return str(np.datetime64(ns, "ns"))[:10]
