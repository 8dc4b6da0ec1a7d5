"""A linear (1x1) head on frozen feature grids, upsampled to the truth's pixels, and the metrics.

Every task is one shape of problem: a sample is a feature grid ``(F, h, w)`` and a target map
``(Sy, Sx)`` of class indices (-1 ignored). Classification is the 1x1 case (pooled features,
one label), segmentation the class map, change detection a 0/1 map. The head is a 1x1
convolution on standardised features; its logits are bilinearly upsampled to the target grid;
the loss is cross-entropy over the labelled pixels. The L2 strength is chosen on ``val``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

WEIGHT_DECAYS = (1e-4, 1e-2)


@dataclass
class Sample:
    features: np.ndarray  # (F, h, w) float32
    target: np.ndarray  # (Sy, Sx) int64, -1 = ignore


@dataclass
class LinearHead:
    weight: Tensor  # (K, F)
    bias: Tensor  # (K,)
    mean: Tensor  # (F,)
    std: Tensor  # (F,)

    def logits(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """(n, F, h, w) -> upsampled logits (n, K, Sy, Sx)."""
        z = (x - self.mean[:, None, None]) / self.std[:, None, None]
        out = torch.einsum("nfhw,kf->nkhw", z, self.weight) + self.bias[:, None, None]
        if tuple(out.shape[-2:]) == size:
            return out
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


def _buckets(samples: Sequence[Sample]) -> list[tuple[Tensor, Tensor]]:
    """Samples of one (feature grid, target grid) shape stacked together."""
    by: dict[tuple[int, ...], list[Sample]] = defaultdict(list)
    for s in samples:
        by[(*s.features.shape, *s.target.shape)].append(s)
    return [
        (
            torch.from_numpy(np.stack([s.features for s in group])),
            torch.from_numpy(np.stack([s.target for s in group])),
        )
        for group in by.values()
    ]


def fit_head(
    samples: Sequence[Sample],
    n_classes: int,
    *,
    weight_decay: float,
    seed: int,
    epochs: int = 30,
    batch: int = 64,
    lr: float = 0.02,
    class_weight: Tensor | None = None,
) -> LinearHead:
    """Train the linear head with AdamW on mini-batches of samples (order and init by ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    flat = torch.cat([torch.from_numpy(s.features).flatten(1) for s in samples], 1)  # (F, N)
    mean, std = flat.mean(1), flat.std(1, correction=0).clamp(min=1e-6)
    n_feat = flat.shape[0]
    weight = (torch.randn(n_classes, n_feat, generator=gen) * 0.01).requires_grad_()
    bias = torch.zeros(n_classes, requires_grad=True)
    head = LinearHead(weight, bias, mean, std)
    opt = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        order = torch.randperm(len(samples), generator=gen).tolist()
        for start in range(0, len(order), batch):
            chunk = [samples[i] for i in order[start : start + batch]]
            loss = _loss(head, _buckets(chunk), class_weight)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    return LinearHead(weight.detach(), bias.detach(), mean, std)


def _loss(head: LinearHead, buckets: list[tuple[Tensor, Tensor]], weight: Tensor | None) -> Tensor:
    total, count = torch.zeros(()), 0
    for x, y in buckets:
        logits = head.logits(x, (y.shape[-2], y.shape[-1]))
        total = total + F.cross_entropy(logits, y, weight=weight, ignore_index=-1, reduction="sum")
        count += int((y >= 0).sum())
    return total / max(count, 1)


@torch.no_grad()
def predict_proba(head: LinearHead, samples: Sequence[Sample]) -> list[np.ndarray]:
    """Class probabilities (K, Sy, Sx) of each sample."""
    out = []
    for s in samples:
        x = torch.from_numpy(s.features)[None]
        out.append(head.logits(x, (s.target.shape[0], s.target.shape[1])).softmax(1)[0].numpy())
    return out


# -- metrics ---------------------------------------------------------------------------------
def confusion(truth: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """(n, n) counts of (truth, predicted) over the pixels whose truth is known."""
    known = truth >= 0
    return np.bincount(truth[known] * n + pred[known], minlength=n * n).reshape(n, n)


def classification_scores(cm: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 over the classes present in the truth or the predictions."""
    tp = np.diag(cm).astype(float)
    present = (cm.sum(0) + cm.sum(1)) > 0
    f1 = 2 * tp / np.maximum(cm.sum(0) + cm.sum(1), 1)
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }


def iou_scores(cm: np.ndarray) -> tuple[float, dict[int, float]]:
    """mIoU over the classes present in the truth, and IoU per such class."""
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    present = cm.sum(1) > 0
    ious = {int(c): float(tp[c] / union[c]) for c in np.flatnonzero(present)}
    return (float(np.mean(list(ious.values()))) if ious else 0.0), ious


def change_scores(cm: np.ndarray) -> dict[str, float]:
    """F1, precision, recall and IoU of the changed class (index 1)."""
    tp, fp, fn = float(cm[1, 1]), float(cm[0, 1]), float(cm[1, 0])
    return {
        "f1": 2 * tp / max(2 * tp + fp + fn, 1),
        "precision": tp / max(tp + fp, 1),
        "recall": tp / max(tp + fn, 1),
        "iou": tp / max(tp + fp + fn, 1),
    }
