"""Fixed (sin-cos) encodings of where, when and what: metric positions, ground scale,
longitude/latitude, time and wavelength. The model projects them with learned layers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sincos_1d(x: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """(...,) -> (..., dim): [sin(x w_k), cos(x w_k)] with w_k geometric from 1 to 1/max_period."""
    assert dim % 2 == 0, "sin-cos encoding needs an even width"
    k = torch.arange(dim // 2, device=x.device, dtype=torch.float32)
    omega = max_period ** (-k / (dim // 2))  # (dim/2,)
    angles = x.float()[..., None] * omega  # (..., dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def sincos_2d(xy_m: Tensor, dim: int, unit_m: float) -> Tensor:
    """Metric 2-D positions (T, 2) in metres -> (T, dim), half the width for x, half for y.

    Positions are measured in ``unit_m`` (e.g. 10 m), not in patches, so co-located tokens of
    images at different GSDs get the same code for the same ground (GSD-aware, as in Scale-MAE).
    """
    assert dim % 4 == 0, "2-D sin-cos encoding needs a width divisible by 4"
    units = xy_m / unit_m  # (T, 2)
    return torch.cat([sincos_1d(units[:, 0], dim // 2), sincos_1d(units[:, 1], dim // 2)], dim=-1)


def scale_features(ground_m: Tensor, n: int = 8) -> Tensor:
    """Patch ground size (T,) metres -> (T, n): sin-cos of log2(size), so 10 m and 30 m differ."""
    return sincos_1d(torch.log2(ground_m.clamp(min=1e-3)), n, max_period=64.0)


def lonlat_features(lonlat: Tensor, n_freq: int = 4) -> Tensor:
    """(M, 2) degrees -> (M, 4 * n_freq + 3): spherical harmonics-like sin-cos of lon and lat, and
    the unit-sphere position. NaN rows stay NaN (the model swaps in its missing-metadata token)."""
    lon, lat = torch.deg2rad(lonlat[:, 0]), torch.deg2rad(lonlat[:, 1])
    freqs = 2.0 ** torch.arange(n_freq, device=lonlat.device, dtype=torch.float32)  # (F,)
    parts = [
        torch.sin(lon[:, None] * freqs),
        torch.cos(lon[:, None] * freqs),
        torch.sin(lat[:, None] * freqs),
        torch.cos(lat[:, None] * freqs),
        torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=-1),
    ]
    return torch.cat(parts, dim=-1).float()


LONLAT_FEATURES = 4 * 4 + 3


def time_features(doy_year: Tensor, n_harmonics: int = 3) -> Tensor:
    """(M, 2) (day of year 1-366, year) -> (M, 2 * n_harmonics + 1): seasonal sin-cos harmonics
    and the year relative to 2020 in decades. NaN rows stay NaN."""
    doy, year = doy_year[:, 0], doy_year[:, 1]
    h = torch.arange(1, n_harmonics + 1, device=doy_year.device, dtype=torch.float32)  # (H,)
    angle = 2 * math.pi * doy[:, None] / 365.25 * h  # (M, H)
    return torch.cat([angle.sin(), angle.cos(), ((year - 2020.0) / 10.0)[:, None]], dim=-1).float()


TIME_FEATURES = 2 * 3 + 1


def wavelength_features(wavelength_um: Tensor, bandwidth_um: Tensor, n: int = 16) -> Tensor:
    """Band centre wavelength and bandwidth (C,) in µm -> (C, n + 2) features for the
    hypernetworks: sin-cos of the wavelength on a 0.1-10 µm scale, plus raw wavelength and width."""
    enc = sincos_1d(wavelength_um * 100.0, n, max_period=1_000.0)  # (C, n)
    return torch.cat([enc, wavelength_um[:, None], bandwidth_um[:, None] * 10.0], dim=-1).float()


WAVELENGTH_FEATURES = 16 + 2
