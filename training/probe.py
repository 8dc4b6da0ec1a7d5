"""Linear-probe and kNN evaluation of a frozen encoder on the corpus's land-cover labels.

Features: the encoder's output mean-pooled over each group's anchor image (every token
visible). Labels: the optional per-image ``sensors/<sensor>/label`` array of the corpus (the
demo world's majority land-cover class; -1 unknown), or a parquet file with columns
``image_id, label``. Train/val: the corpus's ``groups/split``, or K-fold cross-validation over
groups. Classifiers: logistic regression on standardised features with its L2 strength chosen
by an inner cross-validation on the training groups, and a kNN classifier.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from terracorpus.training.corpus import CorpusReader
from terracorpus.training.data import DataConfig, make_loader
from terracorpus.training.errors import ProbeError
from terracorpus.training.model import A2MAE


@dataclass(frozen=True)
class ProbeResult:
    """Scores on the val groups; counts of labelled groups used."""

    n_train: int
    n_val: int
    n_classes: int
    linear_accuracy: float
    linear_macro_f1: float
    knn_accuracy: float
    knn_macro_f1: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def anchor_labels(reader: CorpusReader, labels_path: str | Path | None = None) -> np.ndarray:
    """(G,) int label of each group's anchor image; -1 where unknown."""
    table = _labels_table(labels_path) if labels_path is not None else None
    out = np.full(len(reader.groups), -1, dtype=np.int64)
    anchors = [reader.groups.members(g)[0] for g in range(len(reader.groups))]
    for sensor in {s for s, _ in anchors}:
        picks = [(g, row) for g, (s, row) in enumerate(anchors) if s == sensor]
        if table is not None:
            ids = reader.image_ids(sensor)
            values = np.array([table.get(ids[row], -1) for _, row in picks], dtype=np.int64)
        else:
            labels = reader.labels(sensor)
            if labels is None:
                raise ProbeError(
                    f"corpus {reader.path} has no sensors/{sensor}/label array; pass --labels "
                    "labels.parquet (columns image_id, label)"
                )
            values = labels[[row for _, row in picks]]
        out[[g for g, _ in picks]] = values
    return out


def _labels_table(path: str | Path) -> dict[str, int]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path, columns=["image_id", "label"])
    except Exception as e:
        raise ProbeError(
            f"cannot read labels {path}: {e} (expected columns image_id, label)"
        ) from e
    return dict(zip(frame["image_id"].astype(str), frame["label"].astype(int), strict=True))


@torch.no_grad()
def extract_features(
    model: A2MAE,
    reader: CorpusReader,
    *,
    max_image_px: int = 128,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """(G, D) frozen-encoder features of every group's anchor image, in group order."""
    cfg = DataConfig(
        patch_px=model.args.patch_px, max_image_px=max_image_px, mask_ratio=0.0,
        split=None, shuffle=False, anchor_only=True,
    )  # fmt: skip
    loader = make_loader(reader, cfg, batch_size=batch_size, num_workers=num_workers, epochs=1)
    model.eval().to(device)
    feats = np.zeros((len(reader.groups), model.args.dim), dtype=np.float32)
    for batch in loader:
        feats[batch.groups.numpy()] = model.features(batch.to(device)).float().cpu().numpy()
    return feats


def fit_probes(
    features: np.ndarray,
    labels: np.ndarray,
    split: np.ndarray,
    *,
    k: int = 5,
    seed: int = 0,
    folds: int | None = None,
) -> ProbeResult:
    """Fit a logistic-regression probe and a kNN classifier on ``train``, score on ``val``.

    With ``folds``, the corpus split is ignored: stratified K-fold cross-validation over the
    labelled groups (each group is scored once, by a model that did not see it), scores pooled
    over folds. Use it on small corpora whose val split holds few groups.
    """
    known = labels >= 0
    if folds is not None:
        return _cross_validate(features[known], labels[known], k=k, seed=seed, folds=folds)
    train, val = known & (split == "train"), known & (split == "val")
    _check_enough(labels[train], int(val.sum()))
    preds = _fit_predict(features[train], labels[train], features[val], k, seed)
    return _scores(labels[val], preds, int(train.sum()), int(val.sum()), labels[known])


_SCORES = ("linear_accuracy", "linear_macro_f1", "knn_accuracy", "knn_macro_f1")


def few_label_scores(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    shots: int,
    repeats: int = 10,
    k: int = 5,
    seed: int = 0,
) -> ProbeResult:
    """Label efficiency: probes trained on ``shots`` labelled groups per class (classes with
    fewer are left out), scored on every other labelled group; scores averaged over
    ``repeats`` random draws. This is the regime a pre-trained encoder is for: few labels."""
    known = labels >= 0
    x, y = features[known], labels[known]
    counts = np.bincount(y)
    classes = np.flatnonzero(counts > shots)
    if len(classes) < 2:
        raise ProbeError(f"fewer than 2 classes have more than {shots} labelled groups")
    in_classes = np.isin(y, classes)
    rng = np.random.default_rng(seed)
    runs: list[ProbeResult] = []
    for r in range(repeats):
        train = np.concatenate(
            [rng.choice(np.flatnonzero(y == c), size=shots, replace=False) for c in classes]
        )
        val = np.setdiff1d(np.flatnonzero(in_classes), train)
        preds = _fit_predict(x[train], y[train], x[val], min(k, shots), seed + r)
        runs.append(_scores(y[val], preds, len(train), len(val), y[in_classes]))
    mean = {f: float(np.mean([getattr(r, f) for r in runs])) for f in _SCORES}
    return ProbeResult(runs[0].n_train, runs[0].n_val, len(classes), **mean)


def _cross_validate(x: np.ndarray, y: np.ndarray, *, k: int, seed: int, folds: int) -> ProbeResult:
    _check_enough(y, len(y))
    n_splits = max(2, min(folds, int(np.bincount(y).max())))
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    preds = {"linear": np.zeros_like(y), "knn": np.zeros_like(y)}
    with warnings.catch_warnings():  # a class rarer than the folds is simply absent from some
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        splits = list(splitter.split(x, y))
    for tr, va in splits:
        for name, pred in _fit_predict(x[tr], y[tr], x[va], k, seed).items():
            preds[name][va] = pred
    return _scores(y, preds, len(y) - len(y) // n_splits, len(y), y)


def _check_enough(y_train: np.ndarray, n_val: int) -> None:
    if len(y_train) < 2 or n_val < 1 or len(np.unique(y_train)) < 2:
        raise ProbeError(
            f"too few labelled groups to probe: {len(y_train)} train, {n_val} val, "
            f"{len(np.unique(y_train))} classes in train; use a larger corpus"
        )


PROBE_CS = (0.01, 0.1, 1.0, 10.0, 100.0)  # inverse L2 strengths tried by the linear probe


def _linear_probe(y_tr: np.ndarray, seed: int) -> Any:
    """Standardised features -> logistic regression whose L2 strength is chosen from
    ``PROBE_CS`` by 3-fold cross-validation on the training groups only (a fixed strength
    favours whichever encoder's features happen to suit it). Falls back to C = 1 when a class
    has fewer than 3 training groups."""
    counts = np.bincount(y_tr)
    if counts[counts > 0].min() < 3:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, random_state=seed))
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    cv = LogisticRegressionCV(
        Cs=list(PROBE_CS), cv=folds, scoring="neg_log_loss", max_iter=3000, random_state=seed
    )
    return make_pipeline(StandardScaler(), cv)


def _fit_predict(
    x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, k: int, seed: int
) -> dict[str, np.ndarray]:
    linear = _linear_probe(y_tr, seed)
    knn = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=min(k, len(y_tr))))
    with warnings.catch_warnings():
        # scikit-learn >= 1.9 announces changes of LogisticRegressionCV defaults we do not use
        warnings.simplefilter("ignore", FutureWarning)
        return {
            name: clf.fit(x_tr, y_tr).predict(x_va)
            for name, clf in (("linear", linear), ("knn", knn))
        }


def _scores(
    y_va: np.ndarray, preds: dict[str, np.ndarray], n_train: int, n_val: int, known: np.ndarray
) -> ProbeResult:
    scores: dict[str, float] = {}
    for name, pred in preds.items():
        scores[f"{name}_accuracy"] = float(accuracy_score(y_va, pred))
        scores[f"{name}_macro_f1"] = float(f1_score(y_va, pred, average="macro", zero_division=0))
    return ProbeResult(n_train, n_val, len(np.unique(known)), **scores)


def probe(
    model: A2MAE,
    reader: CorpusReader,
    *,
    labels_path: str | Path | None = None,
    max_image_px: int = 128,
    batch_size: int = 16,
    num_workers: int = 0,
    k: int = 5,
    folds: int | None = None,
    device: str | torch.device = "cpu",
) -> ProbeResult:
    """Features of every anchor, then linear and kNN probes split by the corpus's groups/split."""
    labels = anchor_labels(reader, labels_path)
    feats = extract_features(
        model, reader, max_image_px=max_image_px, batch_size=batch_size,
        num_workers=num_workers, device=device,
    )  # fmt: skip
    return fit_probes(feats, labels, reader.groups.split, k=k, folds=folds)
