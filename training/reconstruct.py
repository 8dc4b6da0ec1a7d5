"""Pictures of what the model learnt: masked groups, the model's reconstruction beside the truth.

:func:`write_reconstructions` loads a training run's last checkpoint (the whole model, decoder
included), masks a few validation groups exactly as training does, and saves one PNG per
group: a row per image (anchor first) with the truth, what the encoder saw (hidden patches
grey), and the reconstruction (the truth where visible, the model's prediction where hidden).
The run report shows them; ``terracorpus train`` writes them at the end of a run.

The model predicts each hidden patch per band standardised over the patch (the loss is a
per-patch normalised MSE); its statistics head predicts the patch's mean and log std, which
turn the prediction back into reflectance. A model trained without that head
(``stats_loss_weight = 0``) has no such prediction, and the truth's patch statistics are used
instead (as the MAE paper's figures do); the PNG's title says which. A model trained with
``pixel_target: standardised`` predicts the reflectance itself, which needs neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from terracorpus.training.config import DataSettings
from terracorpus.training.corpus import CorpusReader, open_corpus
from terracorpus.training.data import Bucket, DataConfig, GroupBatch, make_loader
from terracorpus.training.model import A2MAE, ModelArgs
from terracorpus.training.trainer import load_checkpoint

RECONSTRUCTIONS = "reconstructions"
RGB_NM = (0.665, 0.560, 0.490)


@dataclass
class ImageReconstruction:
    """One image of a masked group: truth, visibility and prediction, (C, H, W) reflectance."""

    group_id: str
    sensor: str
    is_anchor: bool
    truth: np.ndarray  # (C, H, W)
    valid: np.ndarray  # (H, W) bool
    visible: np.ndarray  # (H, W) bool: pixels of patches the encoder saw
    prediction: np.ndarray  # (C, H, W): truth where visible, the model's where hidden
    wavelengths: np.ndarray  # (C,) µm


@torch.no_grad()
def reconstruct(model: A2MAE, batch: GroupBatch) -> list[ImageReconstruction]:
    """Every image of ``batch`` reconstructed by ``model`` (in eval mode, on the CPU)."""
    model.eval()
    meta = model.metadata(batch, 0.0)  # (T, D)
    tokens = model.embed(batch) + meta  # (T, D)
    encoded, index, keep = model.encode(batch, tokens, batch.token_visible)
    decoded = model.decode(batch, encoded, index, keep, meta)  # (T, Dd)
    out: list[ImageReconstruction | None] = [None] * len(batch.image_sensor)
    for bucket in batch.buckets:
        for k, image in enumerate(_bucket_images(model, batch, bucket, decoded)):
            out[int(bucket.images[k])] = image
    return [r for r in out if r is not None]


def _bucket_images(
    model: A2MAE, batch: GroupBatch, bucket: Bucket, decoded: Tensor
) -> list[ImageReconstruction]:
    a = model.args
    patches, valid = model._patches(bucket)  # (n, L, C, P), (n, L, P)
    idx = model._token_index(batch, bucket, patches.shape[1])  # (n, L)
    hidden = decoded[idx]  # (n, L, Dd)
    pred = model._predict(bucket, hidden)  # (n, L, C, P)
    if a.pixel_target == "standardised":
        filled = pred  # already in model input units
    else:  # per-patch standardised: undo it with the patch's statistics
        mean, std = _patch_stats(model, bucket, hidden, patches, valid)  # (n, L, C, 1) each
        filled = pred * std + mean  # (n, L, C, P), model input units
    seen = batch.token_visible[idx]  # (n, L)
    filled = torch.where(seen[..., None, None], patches, filled)
    n, _, h, w = bucket.pixels.shape
    recon = _unpatch(filled, h, w, a.patch_px) * a.input_std + a.input_mean  # (n, C, H, W)
    seen_px = seen[:, :, None].expand(-1, -1, a.patch_px**2).float()
    visible = _unpatch(seen_px[:, :, None], h, w, a.patch_px)[:, 0] > 0.5  # (n, H, W)
    images = []
    for k in range(n):
        m = int(bucket.images[k])
        images.append(
            ImageReconstruction(
                group_id=batch.group_ids[int(batch.image_group[m])],
                sensor=bucket.sensor,
                is_anchor=bool(batch.image_anchor[m]),
                truth=bucket.pixels[k].numpy(),
                valid=bucket.valid[k].numpy().astype(bool),
                visible=visible[k].numpy(),
                prediction=recon[k].numpy(),
                wavelengths=bucket.wavelengths.numpy(),
            )
        )
    return images


def _patch_stats(
    model: A2MAE, bucket: Bucket, hidden: Tensor, patches: Tensor, valid: Tensor
) -> tuple[Tensor, Tensor]:
    """Per patch and band (mean, std) to undo the standardisation: predicted when the model
    has a statistics head, else the truth's."""
    if model.stats_head is not None:
        stats = model._predict_stats(bucket, hidden)  # (n, L, C, 2)
        return stats[..., :1], stats[..., 1:].exp()
    v = valid[:, :, None, :].float()
    count = v.sum(-1, keepdim=True).clamp(min=1)
    mean = (patches * v).sum(-1, keepdim=True) / count
    var = ((patches - mean) ** 2 * v).sum(-1, keepdim=True) / count
    return mean, (var + 1e-6).sqrt()


def _unpatch(x: Tensor, h: int, w: int, p: int) -> Tensor:
    """(n, L, C, P) patches -> (n, C, H, W) (the inverse of the model's ``_patches``)."""
    n, _, c, _ = x.shape
    x = x.reshape(n, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, c, h, w)


def write_reconstructions(
    corpus: str | Path | CorpusReader,
    run_dir: str | Path,
    *,
    n_groups: int = 4,
    out: str | Path | None = None,
) -> list[Path]:
    """Save one PNG per masked validation group (train groups if the corpus has no val split)
    into ``RUN/reconstructions/``; returns their paths."""
    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    model = A2MAE(ModelArgs(**ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])
    reader = corpus if isinstance(corpus, CorpusReader) else open_corpus(corpus)
    batch = _first_batch(reader, model.args, ckpt["config"], n_groups)
    images = reconstruct(model, batch)
    target = Path(out) if out else run_dir / RECONSTRUCTIONS
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("group-*.png"):
        old.unlink()
    how = "predicted" if model.stats_head is not None else "the truth's"
    if model.args.pixel_target == "standardised":
        how = "not needed, reflectance predicted"
    step = int(ckpt["step"])
    paths = []
    for i, gid in enumerate(dict.fromkeys(r.group_id for r in images)):
        mine = [r for r in images if r.group_id == gid]
        path = target / f"group-{i:02d}.png"
        _save_png(mine, path, f"group {gid} after {step} steps (patch statistics: {how})")
        paths.append(path)
    return paths


def _first_batch(
    reader: CorpusReader, args: ModelArgs, cfg: dict[str, object], n_groups: int
) -> GroupBatch:
    split = "val" if len(reader.groups.indices("val")) else None
    run = {k: v for k, v in cfg.items() if k in DataSettings.model_fields}
    settings = {**DataSettings.model_validate(run).data_settings(), "split": split}
    data = DataConfig(patch_px=args.patch_px, shuffle=False, **settings)
    loader = make_loader(reader, data, batch_size=n_groups, num_workers=0, epochs=1)
    batch: GroupBatch = next(iter(loader))
    return batch


def _save_png(images: list[ImageReconstruction], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(images), 3, figsize=(7.5, 2.5 * len(images)), squeeze=False, dpi=80
    )
    for row, image in zip(axes, images, strict=True):
        rgb = _rgb_bands(image.wavelengths)
        lo, hi = _stretch(image.truth[rgb], image.valid)
        truth = _to_rgb(image.truth[rgb], lo, hi)
        seen = truth.copy()
        seen[~image.visible] = 0.5  # hidden from the encoder
        for ax, picture, label in zip(
            row,
            (truth, seen, _to_rgb(image.prediction[rgb], lo, hi)),
            ("truth", "encoder input", "reconstruction"),
            strict=True,
        ):
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(
                f"{image.sensor}{' (anchor)' if image.is_anchor else ''}: {label}", fontsize=7
            )
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _rgb_bands(wavelengths: np.ndarray) -> list[int]:
    """Bands nearest red, green, blue (a single-band sensor shows grey)."""
    return [int(np.argmin(np.abs(wavelengths - nm))) for nm in RGB_NM]


def _stretch(rgb: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    values = rgb[:, valid] if valid.any() else rgb.reshape(3, -1)
    lo, hi = np.percentile(values, [2, 98]) if values.size else (0.0, 1.0)
    return float(lo), float(hi if hi > lo else lo + 1e-6)


def _to_rgb(rgb: np.ndarray, lo: float, hi: float) -> np.ndarray:
    out = np.clip((rgb - lo) / (hi - lo), 0, 1).transpose(1, 2, 0)
    return np.nan_to_num(out, nan=0.0) if not math.isnan(lo) else out
