"""Smooth random fields and block operations on pixel grids, the world's building blocks.

Everything here is a pure function of its arguments (a seeded ``numpy`` generator included),
so the world is deterministic for a seed.
"""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]


def rng_for(*keys: object) -> np.random.Generator:
    """A generator seeded from the text of ``keys`` (stable across runs and machines)."""
    digest = hashlib.sha256("\x1f".join(str(k) for k in keys).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _upsample_axis(a: F32, n: int, axis: int) -> F32:
    """Linear interpolation of ``a`` along ``axis`` onto ``n`` evenly spread samples."""
    m = a.shape[axis]
    pos = np.linspace(0.0, m - 1.0, n, dtype=np.float64)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, m - 2)
    t = (pos - i0).astype(np.float32)
    lo = np.take(a, i0, axis=axis)
    hi = np.take(a, i0 + 1, axis=axis)
    shape = [1, 1]
    shape[axis] = n
    t = t.reshape(shape)
    out: F32 = lo * (1.0 - t) + hi * t
    return out


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], feature_px: float) -> F32:
    """Zero-mean noise whose features are about ``feature_px`` pixels across."""
    h, w = shape
    gh = max(2, int(np.ceil(h / max(feature_px, 1.0))) + 2)
    gw = max(2, int(np.ceil(w / max(feature_px, 1.0))) + 2)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    return _upsample_axis(_upsample_axis(coarse, h, 0), w, 1)


def fractal_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    feature_px: float,
    octaves: int = 4,
    persistence: float = 0.5,
) -> F32:
    """Sum of ``octaves`` smooth noises, each half the feature size and ``persistence`` weight.

    The octaves are summed on a grid a few times coarser than the finest feature and
    interpolated to ``shape`` once, which keeps large fields cheap.
    """
    step = max(1, int(feature_px / 2 ** (octaves - 1) / 3))
    small = (-(-shape[0] // step) + 1, -(-shape[1] // step) + 1)
    out = np.zeros(small, dtype=np.float32)
    amp = 1.0
    for k in range(octaves):
        out += amp * smooth_noise(rng, small, feature_px / step / 2**k)
        amp *= persistence
    if step > 1:
        out = _upsample_axis(_upsample_axis(out, small[0] * step, 0), small[1] * step, 1)
    out = np.ascontiguousarray(out[: shape[0], : shape[1]])
    std = float(out.std())
    return out / std if std > 0 else out


def quantile_threshold(field: F32, fraction: float) -> float:
    """The value above which ``fraction`` of ``field`` lies."""
    if fraction <= 0:
        return float(np.inf)
    if fraction >= 1:
        return float(-np.inf)
    return float(np.quantile(field, 1.0 - fraction))


def quantile_levels(field: F32, n_levels: int) -> NDArray[np.uint8]:
    """``field`` ranked into ``n_levels`` equally populated levels 0..n_levels-1."""
    edges = np.quantile(field, np.linspace(0, 1, n_levels + 1)[1:-1])
    return np.searchsorted(edges, field).astype(np.uint8)


def block_mean(a: NDArray[np.floating], f: int) -> NDArray[np.float32]:
    """Mean over ``f`` x ``f`` blocks of the first two axes (which ``f`` must divide)."""
    if f == 1:
        return a.astype(np.float32, copy=False)
    h, w = a.shape[:2]
    assert h % f == 0 and w % f == 0, (a.shape, f)
    r = a.reshape(h // f, f, w // f, f, *a.shape[2:])
    out: NDArray[np.float32] = r.mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
    return out


def upsample_nearest(a: NDArray[np.generic], f: int) -> NDArray[np.generic]:
    """Each pixel repeated ``f`` x ``f`` times (first two axes)."""
    if f == 1:
        return a
    return np.repeat(np.repeat(a, f, axis=0), f, axis=1)


def shift(a: NDArray[np.bool_], drow: int, dcol: int) -> NDArray[np.bool_]:
    """``a`` moved by whole pixels, with False shifted in at the edges."""
    out = np.zeros_like(a)
    h, w = a.shape
    if abs(drow) >= h or abs(dcol) >= w:
        return out
    src = a[max(0, -drow) : h - max(0, drow), max(0, -dcol) : w - max(0, dcol)]
    out[max(0, drow) : max(0, drow) + src.shape[0], max(0, dcol) : max(0, dcol) + src.shape[1]] = (
        src
    )
    return out
