"""A²-MAE: a masked autoencoder over image groups of any sensors, GSDs and dates.

Read top to bottom: ``forward`` = ``embed`` (wavelength-conditioned patch embedding) +
``metadata`` (metric position, ground scale, lon/lat, time) -> ``encode`` (ViT over the
visible tokens of all images of each group, padded with attention masks) -> ``decode`` (light
ViT over all tokens) -> ``reconstruction_loss`` (wavelength-conditioned head, per-patch
normalised MSE on masked patches, averaged per band, image and group).

Shapes: B groups, M images, T tokens in the batch (flat, ordered by image), L tokens of one
padded group sequence, C bands, P = patch_px ** 2 pixels of one band's patch, D model width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from terracorpus.training.data import Bucket, GroupBatch
from terracorpus.training.encoding import (
    LONLAT_FEATURES,
    TIME_FEATURES,
    WAVELENGTH_FEATURES,
    lonlat_features,
    scale_features,
    sincos_2d,
    time_features,
    wavelength_features,
)
from terracorpus.training.errors import TrainConfigError


@dataclass(frozen=True)
class ModelArgs:
    """Everything needed to rebuild the model; stored in checkpoints and exports."""

    patch_px: int = 8
    dim: int = 96
    depth: int = 4
    heads: int = 3
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4
    mlp_ratio: float = 4.0
    hyper_hidden: int = 128
    pos_unit_m: float = 10.0
    input_mean: float = 0.15  # physical reflectance is standardised with fixed constants, so
    input_std: float = 0.15  # absolute brightness and spectral shape stay visible to the model
    min_valid: float = 0.5  # masked patches with fewer valid pixels are left out of the loss
    stats_loss_weight: float = 1.0  # weight of the patch-statistics term (0: shape only)
    pixel_target: str = "normalised"  # what the pixel head predicts: see PIXEL_TARGETS
    geo_encoding: bool = True  # lon/lat encoding added to the tokens (False: ablation)
    time_encoding: bool = True  # day-of-year/year encoding added to the tokens (False: ablation)


MODEL_SIZES: dict[str, ModelArgs] = {
    "tiny": ModelArgs(),
    "small": ModelArgs(
        dim=384, depth=12, heads=6, decoder_dim=256, decoder_depth=4, decoder_heads=8
    ),
    "base": ModelArgs(
        dim=768, depth=12, heads=12, decoder_dim=512, decoder_depth=8, decoder_heads=16
    ),
    "large": ModelArgs(
        dim=1024, depth=24, heads=16, decoder_dim=512, decoder_depth=8, decoder_heads=16
    ),
}

PIXEL_TARGETS = {
    "normalised": "each masked patch and band standardised over its own valid pixels (its shape)",
    "standardised": "the reflectance itself, standardised with the fixed input constants",
}

ENCODER_PREFIXES = (
    "patch_embed.", "scale_proj.", "geo_proj.", "time_proj.", "missing_geo", "missing_time",
    "anchor_embed", "blocks.", "norm.",
)  # fmt: skip


def model_args(size: str, **overrides: Any) -> ModelArgs:
    """The named size's arguments, with ``overrides`` (e.g. ``patch_px=4``) applied."""
    if size not in MODEL_SIZES:
        raise TrainConfigError(
            f"model: unknown model size {size!r}; choose one of {sorted(MODEL_SIZES)}"
        )
    return replace(MODEL_SIZES[size], **overrides)


def a2mae_tiny(**overrides: Any) -> A2MAE:
    return A2MAE(model_args("tiny", **overrides))


def a2mae_small(**overrides: Any) -> A2MAE:
    return A2MAE(model_args("small", **overrides))


def a2mae_base(**overrides: Any) -> A2MAE:
    return A2MAE(model_args("base", **overrides))


def a2mae_large(**overrides: Any) -> A2MAE:
    return A2MAE(model_args("large", **overrides))


class WavelengthHyperNet(nn.Module):
    """(centre wavelength, bandwidth) of C bands -> (C, out) generated weights."""

    def __init__(self, hidden: int, out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(WAVELENGTH_FEATURES, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU()
        )
        self.out = nn.Linear(hidden, out)

    def forward(self, wavelengths: Tensor, bandwidths: Tensor) -> Tensor:
        out: Tensor = self.out(self.net(wavelength_features(wavelengths, bandwidths)))  # (C, out)
        return out


class Block(nn.Module):
    """Pre-norm transformer block; ``keep`` (B, L) masks padded keys out of attention."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, L, D/H)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))  # (B, L, D)
        out: Tensor = x + self.mlp(self.norm2(x))
        return out


class A2MAE(nn.Module):
    """The A²-MAE model. ``forward(batch)`` returns the loss; ``features(batch)`` pools the
    encoder over each group's anchor tokens for probes."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        if args.pixel_target not in PIXEL_TARGETS:
            raise TrainConfigError(
                f"pixel_target: unknown pixel target {args.pixel_target!r}; "
                f"choose one of {sorted(PIXEL_TARGETS)}"
            )
        self.args = args
        d, dd, pp = args.dim, args.decoder_dim, args.patch_px**2
        self.patch_embed = WavelengthHyperNet(args.hyper_hidden, pp * d + d)
        self.scale_proj = nn.Linear(8, d)
        self.geo_proj = nn.Linear(LONLAT_FEATURES, d)
        self.time_proj = nn.Linear(TIME_FEATURES, d)
        self.missing_geo = nn.Parameter(torch.zeros(d))
        self.missing_time = nn.Parameter(torch.zeros(d))
        self.anchor_embed = nn.Parameter(torch.zeros(d))
        self.blocks = nn.ModuleList(Block(d, args.heads, args.mlp_ratio) for _ in range(args.depth))
        self.norm = nn.LayerNorm(d)
        self.decoder_embed = nn.Linear(d, dd)
        self.decoder_meta = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(dd))
        self.decoder_blocks = nn.ModuleList(
            Block(dd, args.decoder_heads, args.mlp_ratio) for _ in range(args.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dd)
        self.head = WavelengthHyperNet(args.hyper_hidden, dd * pp + pp)
        self.stats_head = (
            WavelengthHyperNet(args.hyper_hidden, dd * 2 + 2)
            if args.stats_loss_weight > 0
            else None
        )
        self.apply(_init_weights)
        for p in (self.missing_geo, self.missing_time, self.anchor_embed, self.mask_token):
            nn.init.normal_(p, std=0.02)

    def forward(self, batch: GroupBatch, metadata_dropout: float = 0.0) -> dict[str, Any]:
        """Masked reconstruction loss of a batch; also per-sensor losses (detached)."""
        meta = self.metadata(batch, metadata_dropout)  # (T, D)
        tokens = self.embed(batch) + meta  # (T, D)
        encoded, index, keep = self.encode(batch, tokens, batch.token_visible)  # (B, L, D)
        decoded = self.decode(batch, encoded, index, keep, meta)  # (T, Dd)
        return self.reconstruction_loss(batch, decoded)

    def embed(self, batch: GroupBatch) -> Tensor:
        """Wavelength-conditioned patch embedding of every image -> flat tokens (T, D)."""
        out = torch.zeros(len(batch.token_image), self.args.dim, device=batch.token_xy.device)
        for bucket in batch.buckets:
            patches, _ = self._patches(bucket)  # (n, Lb, C, P)
            gen = self.patch_embed(bucket.wavelengths, bucket.bandwidths)  # (C, P*D + D)
            pp, d = self.args.patch_px**2, self.args.dim
            weight, bias = gen[:, : pp * d].reshape(-1, pp, d), gen[:, pp * d :]  # (C,P,D) (C,D)
            tok = torch.einsum("nlcp,cpd->nld", patches, weight) / weight.shape[0] + bias.mean(0)
            out[self._token_index(batch, bucket, patches.shape[1]).reshape(-1)] = tok.reshape(
                -1, d
            ).to(out.dtype)
        return out

    def metadata(self, batch: GroupBatch, dropout: float) -> Tensor:
        """Where and when of every token (T, D): metric position, ground scale, lon/lat, time."""
        a = self.args
        pos = sincos_2d(batch.token_xy, a.dim, a.pos_unit_m)  # (T, D)
        scale = self.scale_proj(scale_features(batch.token_ground))  # (T, D)
        geo = self._or_missing(
            self.geo_proj, lonlat_features(batch.image_lonlat), self.missing_geo, dropout
        )
        time = self._or_missing(
            self.time_proj, time_features(batch.image_time), self.missing_time, dropout
        )
        anchor = batch.image_anchor[:, None].float() * self.anchor_embed  # (M, D)
        # an ablated encoding contributes nothing (not the learned missing token)
        per_image = anchor + geo * a.geo_encoding + time * a.time_encoding
        meta: Tensor = pos + scale + per_image[batch.token_image]
        return meta

    def _or_missing(
        self, proj: nn.Linear, feats: Tensor, missing: Tensor, dropout: float
    ) -> Tensor:
        """(M, F) features -> (M, D); NaN rows, and a random ``dropout`` share while training,
        get the learned missing-metadata token instead."""
        absent = feats.isnan().any(-1)  # (M,)
        if self.training and dropout > 0:
            absent = absent | (torch.rand(len(feats), device=feats.device) < dropout)
        return torch.where(absent[:, None], missing, proj(feats.nan_to_num(0.0)))

    def encode(
        self, batch: GroupBatch, tokens: Tensor, visible: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """ViT over each group's visible tokens jointly -> (B, L, D), flat index (B, L), keep (B, L)."""
        index, keep = _pack(batch.image_group[batch.token_image], visible, batch.n_groups)
        x = _gather(tokens, index)  # (B, L, D)
        for block in self.blocks:
            x = block(x, keep)
        return self.norm(x), index, keep

    def decode(
        self, batch: GroupBatch, encoded: Tensor, index: Tensor, keep: Tensor, meta: Tensor
    ) -> Tensor:
        """Light ViT over all tokens of each group (mask tokens where hidden) -> flat (T, Dd)."""
        full = self.mask_token + self.decoder_meta(meta)  # (T, Dd)
        seen = self.decoder_embed(encoded[keep]) + self.decoder_meta(meta[index[keep]])  # (K, Dd)
        full = full.index_put((index[keep],), seen.to(full.dtype))
        every = torch.ones_like(batch.token_visible)
        all_index, all_keep = _pack(batch.image_group[batch.token_image], every, batch.n_groups)
        y = _gather(full, all_index)  # (B, L, Dd)
        for block in self.decoder_blocks:
            y = block(y, all_keep)
        y = self.decoder_norm(y)
        return torch.zeros_like(full).index_put((all_index[all_keep],), y[all_keep].to(full.dtype))

    def reconstruction_loss(self, batch: GroupBatch, decoded: Tensor) -> dict[str, Any]:
        """Per-patch normalised MSE on masked patches, averaged per band, then image, then group."""
        m = len(batch.image_sensor)
        image_loss = torch.zeros(m, device=decoded.device)
        image_has = torch.zeros(m, dtype=torch.bool, device=decoded.device)
        for bucket in batch.buckets:
            patches, valid = self._patches(bucket)  # (n, Lb, C, P), (n, Lb, P)
            idx = self._token_index(batch, bucket, patches.shape[1])  # (n, Lb)
            hidden = decoded[idx]  # (n, Lb, Dd)
            pred = self._predict(bucket, hidden)  # (n, Lb, C, P)
            if self.args.pixel_target == "standardised":
                err = _pixel_mse(pred, patches, valid)  # (n, Lb)
            else:
                err = _normalised_mse(pred, patches, valid)
            if self.args.stats_loss_weight > 0:
                stats = self._predict_stats(bucket, hidden)  # (n, Lb, C, 2)
                err = err + self.args.stats_loss_weight * _stats_mse(stats, patches, valid)
            counted = (~batch.token_visible[idx]) & (valid.float().mean(-1) >= self.args.min_valid)
            n_counted = counted.sum(1)  # (n,)
            image_loss[bucket.images] = (err * counted).sum(1) / n_counted.clamp(min=1)
            image_has[bucket.images] = n_counted > 0
        loss = _group_mean(image_loss, image_has, batch.image_group, batch.n_groups)
        return {
            "loss": loss,
            "sensor_loss": _sensor_means(image_loss.detach(), image_has, batch.image_sensor),
        }

    def features(self, batch: GroupBatch) -> Tensor:
        """Frozen-encoder features (B, D): encoder output mean-pooled over each group's anchor
        tokens, with every token visible (build the batch with mask_ratio 0)."""
        tokens = self.embed(batch) + self.metadata(batch, 0.0)  # (T, D)
        anchor_tokens = batch.image_anchor[batch.token_image]  # (T,)
        encoded, _, keep = self.encode(batch, tokens, anchor_tokens)  # (B, L, D)
        return (encoded * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)

    def _patches(self, bucket: Bucket) -> tuple[Tensor, Tensor]:
        """Standardised pixels as patches (n, L, C, P) and validity (n, L, P)."""
        a = self.args
        p = a.patch_px
        n, c, h, w = bucket.pixels.shape
        x = (bucket.pixels - a.input_mean) / a.input_std * bucket.valid[:, None]  # (n, C, H, W)
        x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        v = bucket.valid.reshape(n, h // p, p, w // p, p).permute(0, 1, 3, 2, 4)
        return x.reshape(n, -1, c, p * p), v.reshape(n, -1, p * p)

    def _predict(self, bucket: Bucket, hidden: Tensor) -> Tensor:
        """Wavelength-conditioned head: decoder tokens (n, L, Dd) -> pixels (n, L, C, P)."""
        pp, dd = self.args.patch_px**2, self.args.decoder_dim
        gen = self.head(bucket.wavelengths, bucket.bandwidths)  # (C, Dd*P + P)
        weight, bias = gen[:, : dd * pp].reshape(-1, dd, pp), gen[:, dd * pp :]  # (C,Dd,P) (C,P)
        pred: Tensor = torch.einsum("nld,cdp->nlcp", hidden.float(), weight.float()) + bias
        return pred

    def _predict_stats(self, bucket: Bucket, hidden: Tensor) -> Tensor:
        """Wavelength-conditioned statistics head: (n, L, Dd) -> (mean, log std) (n, L, C, 2)."""
        dd = self.args.decoder_dim
        assert self.stats_head is not None
        gen = self.stats_head(bucket.wavelengths, bucket.bandwidths)  # (C, Dd*2 + 2)
        weight, bias = gen[:, : dd * 2].reshape(-1, dd, 2), gen[:, dd * 2 :]  # (C,Dd,2) (C,2)
        pred: Tensor = torch.einsum("nld,cdk->nlck", hidden.float(), weight.float()) + bias
        return pred

    @staticmethod
    def _token_index(batch: GroupBatch, bucket: Bucket, n_tokens: int) -> Tensor:
        start = batch.image_tokens[bucket.images]  # (n,)
        return start[:, None] + torch.arange(n_tokens, device=start.device)  # (n, Lb)

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The encoder's weights only (what :func:`export` writes)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(ENCODER_PREFIXES)}

    def args_dict(self) -> dict[str, Any]:
        return asdict(self.args)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _pack(group_of: Tensor, select: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """Flat tokens grouped by ``group_of`` (sorted), keeping ``select`` -> index (B, L) into the
    flat table (-1 = padding) and keep (B, L)."""
    idx = select.nonzero().squeeze(1)  # (K,)
    g = group_of[idx]  # (K,)
    counts = torch.bincount(g, minlength=n_groups)  # (B,)
    length = max(1, int(counts.max()))
    starts = torch.cumsum(counts, 0) - counts
    index = torch.full((n_groups, length), -1, dtype=torch.int64, device=idx.device)
    index[g, torch.arange(len(idx), device=idx.device) - starts[g]] = idx
    return index, index >= 0


def _gather(flat: Tensor, index: Tensor) -> Tensor:
    """(T, D) gathered at index (B, L) -> (B, L, D); padding (-1) gives zero rows."""
    padded = torch.cat([flat, flat.new_zeros(1, flat.shape[1])])
    return padded[index]


def _normalised_mse(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Per patch and band, the target standardised over its valid pixels; MSE over valid pixels,
    then averaged over bands -> (n, L)."""
    v = valid[:, :, None, :].float()  # (n, L, 1, P)
    count = v.sum(-1, keepdim=True).clamp(min=1)
    mean = (target * v).sum(-1, keepdim=True) / count
    var = ((target - mean) ** 2 * v).sum(-1, keepdim=True) / count
    norm = (target - mean) / (var + 1e-6).sqrt()  # (n, L, C, P)
    return (((pred - norm) ** 2 * v).sum(-1) / count.squeeze(-1)).mean(-1)


def _pixel_mse(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """MSE over each patch's valid pixels of the target as it is (the input's fixed
    standardisation, so band means and contrast count), averaged over bands -> (n, L)."""
    v = valid[:, :, None, :].float()  # (n, L, 1, P)
    count = v.sum(-1).clamp(min=1)  # (n, L, 1)
    return (((pred - target) ** 2 * v).sum(-1) / count).mean(-1)


def _stats_mse(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """MSE of each patch and band's (mean, log std) over its valid pixels -- what
    :func:`_normalised_mse` divides out -- averaged over the two and over bands -> (n, L)."""
    v = valid[:, :, None, :].float()  # (n, L, 1, P)
    count = v.sum(-1).clamp(min=1)  # (n, L, 1)
    mean = (target * v).sum(-1) / count  # (n, L, C)
    var = ((target - mean[..., None]) ** 2 * v).sum(-1) / count
    truth = torch.stack([mean, 0.5 * torch.log(var + 1e-4)], -1)  # (n, L, C, 2)
    return ((pred - truth) ** 2).mean((-1, -2))


def _group_mean(image_loss: Tensor, has: Tensor, image_group: Tensor, n_groups: int) -> Tensor:
    """Mean over images (with counted patches) per group, then over groups."""
    weight = has.float()
    total = torch.zeros(n_groups, device=image_loss.device).index_add(
        0, image_group, image_loss * weight
    )
    count = torch.zeros(n_groups, device=image_loss.device).index_add(0, image_group, weight)
    group_has = count > 0
    return (total[group_has] / count[group_has]).mean() if group_has.any() else image_loss.sum() * 0


def _sensor_means(image_loss: Tensor, has: Tensor, sensors: list[str]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for name in sorted(set(sensors)):
        pick = torch.tensor([s == name for s in sensors], device=has.device) & has
        if pick.any():
            out[name] = image_loss[pick].mean()
    return out
