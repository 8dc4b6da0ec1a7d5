"""Score frozen encoders on an evaluation set: classification, segmentation, change detection.

The function to call from Python (the experiment does) is :func:`evaluate_encoder`::

    from terracorpus.training.evaluation import evaluate_encoder
    report = evaluate_encoder("train/encoder", "evalset/", seeds=3)
    report.as_dict()        # the JSON `terracorpus evaluate --json` writes
    print(report.table())   # the table it prints
    report.score("segmentation", "pre-trained", view="group", fraction=1.0)  # mean score

Every table holds three encoders: ``pre-trained`` (the given one), ``random`` (the same
architecture with random weights) and ``no-learning`` (per-patch band means and standard
deviations of the raw reflectance), each read as ``anchor`` (the anchor image alone) and as
``group`` (all images of the group visible), each with a linear head trained on 1 %, 10 % and
100 % of the training samples, over several head seeds (mean and 95 % t-interval).

* classification: the readout (``evaluation_features``: in the group view the anchor's tokens
  and each sensor's tokens in its own slot) mean-pooled, linear head; accuracy and macro-F1
  (the score) on the test groups;
* segmentation: the readout per anchor patch, linear 1x1 head, logits bilinearly upsampled to the
  truth's pixels; mIoU (the score) and per-class IoU on the test groups;
* change: two images of one sensor from two years of a group; a linear 1x1 head on the
  absolute difference of their tokens, upsampled; F1 of the changed pixels (the score), with
  the decision threshold chosen on the val pairs.

The L2 strength of each head is chosen on the val split; scores are on the test split. Splits
are by area (``terracorpus evalset build``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from terracorpus.training.errors import EvaluationError
from terracorpus.training.evaluation_features import (
    VIEWS,
    BandStatFeatures,
    EncoderFeatures,
    Featurizer,
    Grid,
    SetFeatures,
    extract,
)
from terracorpus.training.evaluation_heads import (
    WEIGHT_DECAYS,
    LinearHead,
    Sample,
    change_scores,
    classification_scores,
    confusion,
    fit_head,
    iou_scores,
    predict_proba,
)
from terracorpus.training.evaluation_set import UNKNOWN, EvalSet, open_evalset
from terracorpus.training.model import A2MAE

TASKS = ("classification", "segmentation", "change")
FRACTIONS = (0.01, 0.1, 1.0)
METRIC = {"classification": "macro_f1", "segmentation": "miou", "change": "f1"}
ENCODERS = ("pre-trained", "random", "no-learning")
THRESHOLDS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))
MIN_CHANGED_PAIRS = 2  # per split: fewer, and the F1 of changed pixels is one event's noise


@dataclass
class Row:
    """One line of a task's table: an encoder read one way, a head trained on a share of the
    training samples, scored over seeds."""

    task: str
    encoder: str
    view: str
    fraction: float
    n_train: int
    n_test: int
    metric: str
    mean: float
    ci95: tuple[float, float]
    per_seed: list[float]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluationReport:
    """Scores of every task, encoder, view and label fraction; what was skipped and why."""

    evalset: str
    encoder: str
    settings: dict[str, Any]
    counts: dict[str, dict[str, int]]
    rows: list[Row]
    skipped: dict[str, str] = field(default_factory=dict)
    pictures: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "evalset": self.evalset,
            "encoder": self.encoder,
            "settings": self.settings,
            "counts": self.counts,
            "tasks": {
                task: {
                    "metric": METRIC[task],
                    "rows": [asdict(r) for r in self.rows if r.task == task],
                }
                for task in TASKS
                if any(r.task == task for r in self.rows)
            },
            "skipped": self.skipped,
            "pictures": self.pictures,
        }

    def score(
        self, task: str, encoder: str, *, view: str = "anchor", fraction: float = 1.0
    ) -> float:
        """The mean score of one row (KeyError if there is none)."""
        for r in self.rows:
            if (r.task, r.encoder, r.view, r.fraction) == (task, encoder, view, fraction):
                return r.mean
        raise KeyError((task, encoder, view, fraction))

    def table(self) -> str:
        """A plain-text table: one line per task, encoder, view and label fraction."""
        lines = []
        for task in TASKS:
            rows = [r for r in self.rows if r.task == task]
            if not rows:
                if task in self.skipped:
                    lines.append(f"{task}: skipped ({self.skipped[task]})")
                continue
            n = self.counts.get(task, {})
            lines.append(
                f"{task} ({METRIC[task]}, test split; {n.get('train', 0)} train / "
                f"{n.get('val', 0)} val / {n.get('test', 0)} test samples, "
                f"{self.settings['seeds']} head seeds, mean [95 % interval])"
            )
            lines.append(f"  {'encoder':<12} {'view':<7} {'labels':>6}  {'score':>6}  interval")
            for r in rows:
                lines.append(
                    f"  {r.encoder:<12} {r.view:<7} {r.fraction * 100:>5g}%  {r.mean:6.3f}  "
                    f"[{r.ci95[0]:.3f}, {r.ci95[1]:.3f}]"
                )
        return "\n".join(lines)

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2))


def interval95(values: Sequence[float]) -> tuple[float, float]:
    """Student-t 95 % interval of the mean of scores in [0, 1], clipped to that range (a point
    when there is one value)."""
    x = np.asarray(values, dtype=float)
    m = float(x.mean())
    if len(x) < 2:
        return (m, m)
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return (max(0.0, m - half), min(1.0, m + half))  # every score lies in [0, 1]


# -- the entry point -------------------------------------------------------------------------
def evaluate_encoder(
    encoder: str | Path | A2MAE,
    evalset: str | Path | EvalSet,
    *,
    tasks: Sequence[str] = TASKS,
    seeds: int = 3,
    fractions: Sequence[float] = FRACTIONS,
    views: Sequence[str] = VIEWS,
    baselines: bool = True,
    max_image_px: int = 64,
    device: str | torch.device = "cpu",
    pictures_dir: str | Path | None = None,
    allow_unseen_bands: bool = False,
) -> EvaluationReport:
    """Score an encoder (an export directory or a model) and its baselines on an evaluation set.

    Args:
        encoder: ``terracorpus export`` directory, or an :class:`A2MAE` (its encoder is used).
        evalset: ``terracorpus evalset build`` directory (or an opened :class:`EvalSet`).
        tasks: any of ``classification``, ``segmentation``, ``change``.
        seeds: head seeds per row (init, sample order, label subset); >= 1.
        fractions: shares of the training samples the heads see.
        views: ``anchor`` and/or ``group``.
        baselines: also score random weights and the no-learning baseline.
        max_image_px: images are area-averaged to at most this many pixels a side (as in
            training; the demo trains at 64).
        pictures_dir: where to draw a picture per task (prediction beside truth); None: none.
        allow_unseen_bands: score even where the set has bands the encoder never saw in
            pre-training (its embedding interpolates them); the experiment does, so that every
            arm is scored on the same set even when its corpus lacks a sensor.

    Raises:
        EvaluationError: unknown task or view, bands the encoder never saw, too few samples.
    """
    _check_choices(tasks, views, seeds, fractions)
    model, name = _model(encoder)
    es = evalset if isinstance(evalset, EvalSet) else open_evalset(evalset)
    if not isinstance(encoder, A2MAE) and not allow_unseen_bands:
        from terracorpus.training.export import trained_bands

        check_bands(trained_bands(encoder), es, name)
    featurizers = _featurizers(model, es, baselines, device)
    feats = extract(es, featurizers, views=views, max_image_px=max_image_px,
                    with_pairs="change" in tasks)  # fmt: skip
    report = EvaluationReport(
        evalset=str(es.path),
        encoder=name,
        settings={"seeds": seeds, "fractions": list(fractions), "views": list(views),
                  "max_image_px": max_image_px, "weight_decays": list(WEIGHT_DECAYS)},
        counts={},
        rows=[],
    )  # fmt: skip
    for task in tasks:
        _run_task(task, es, feats, featurizers, views, seeds, fractions, report, pictures_dir)
    return report


def _check_choices(
    tasks: Sequence[str], views: Sequence[str], seeds: int, fractions: Sequence[float]
) -> None:
    bad = [t for t in tasks if t not in TASKS] + [v for v in views if v not in VIEWS]
    if bad:
        raise EvaluationError(f"unknown task or view {bad}; tasks {TASKS}, views {VIEWS}")
    if seeds < 1 or not all(0 < f <= 1 for f in fractions):
        raise EvaluationError("seeds must be >= 1 and label fractions in (0, 1]")


def _model(encoder: str | Path | A2MAE) -> tuple[A2MAE, str]:
    if isinstance(encoder, A2MAE):
        return encoder, "model"
    from terracorpus.training.export import load_encoder

    return load_encoder(encoder), str(encoder)


def check_bands(seen: Sequence[tuple[float, float]], es: EvalSet, name: str) -> None:
    """Refuse an evaluation set with bands the encoder never saw in pre-training (when its
    export records them): a wavelength-conditioned embedding extrapolates, it does not know."""
    if not seen:
        return
    known = np.asarray([b[0] for b in seen], dtype=float)
    for sensor, info in es.reader.sensors.items():
        far = [round(float(w), 3) for w in info.wavelengths if np.min(np.abs(known - w)) > 0.02]
        if far:
            saw = sorted({round(float(w), 3) for w in known})
            raise EvaluationError(
                f"evaluation set {es.path}: sensor {sensor} has bands at {far} µm that encoder "
                f"{name} never saw in pre-training (it saw {saw} µm); evaluate on a set of the "
                "sensors it was trained on"
            )


def _featurizers(
    model: A2MAE, es: EvalSet, baselines: bool, device: str | torch.device
) -> dict[str, Featurizer]:
    sensors = sorted(es.reader.sensors)
    out: dict[str, Featurizer] = {"pre-trained": EncoderFeatures(model, sensors, device=device)}
    if baselines:
        torch.manual_seed(0)
        out["random"] = EncoderFeatures(A2MAE(model.args), sensors, device=device)
        bands = {s: len(info.wavelengths) for s, info in es.reader.sensors.items()}
        out["no-learning"] = BandStatFeatures(bands, model.args.patch_px)
    return out


# -- one task --------------------------------------------------------------------------------
def _crop(target: np.ndarray, covered: tuple[float, float], chip_m: float) -> np.ndarray:
    """The part of a (S, S) truth map that the token grid covers (tokens stop at whole patches)."""
    s = target.shape[0]
    ny = max(1, min(s, round(s * covered[1] / chip_m)))
    nx = max(1, min(s, round(s * covered[0] / chip_m)))
    return target[:ny, :nx]


def _samples(
    task: str, es: EvalSet, grids: list[Grid], pairs: list[tuple[Grid, Grid]]
) -> list[Sample]:
    if task == "classification":
        return [
            Sample(g.tokens.mean((1, 2), keepdims=True), np.array([[lab]], dtype=np.int64))
            for g, lab in zip(grids, es.label, strict=True)
        ]
    if task == "segmentation":
        out = []
        for g, t in zip(grids, es.truth, strict=True):
            target = _crop(t, g.covered_m, es.chip_size_m).astype(np.int64)
            out.append(Sample(g.tokens, np.where(target == 0, -1, target)))
        return out
    out = []
    for (a, b), m in zip(pairs, es.pairs.change, strict=True):
        target = _crop(m, a.covered_m, es.chip_size_m).astype(np.int64)
        out.append(Sample(np.abs(a.tokens - b.tokens), np.where(target == UNKNOWN, -1, target)))
    return out


def _splits(task: str, es: EvalSet) -> dict[str, np.ndarray]:
    split = es.split if task != "change" else es.split[es.pairs.group]
    return {s: np.flatnonzero(split == s) for s in ("train", "val", "test")}


def _run_task(
    task: str,
    es: EvalSet,
    feats: SetFeatures,
    featurizers: dict[str, Featurizer],
    views: Sequence[str],
    seeds: int,
    fractions: Sequence[float],
    report: EvaluationReport,
    pictures_dir: str | Path | None,
) -> None:
    splits = _splits(task, es)
    report.counts[task] = {k: len(v) for k, v in splits.items()}
    reason = _too_few(task, es, splits)
    if reason:
        report.skipped[task] = reason
        return
    n_classes = 2 if task == "change" else max(es.classes) + 1
    shown: dict[str, tuple[list[Sample], LinearHead, float]] = {}
    for enc in featurizers:
        for view in views:
            samples = _samples(task, es, feats.groups[(enc, view)], feats.pairs[(enc, view)])
            part = {k: [samples[i] for i in v] for k, v in splits.items()}
            wd = _choose_decay(task, part, n_classes)
            for fraction in fractions:
                row, head = _row(task, enc, view, fraction, part, n_classes, wd, seeds)
                report.rows.append(row)
                if fraction == max(fractions) and view == views[-1]:
                    shown[enc] = (part["test"], head, float(row.details.get("threshold", 0.5)))
    if pictures_dir is not None:
        from terracorpus.training.evaluation_pictures import draw_task

        path = draw_task(task, es, shown, Path(pictures_dir))
        report.pictures[task] = str(path)


def _too_few(task: str, es: EvalSet, splits: dict[str, np.ndarray]) -> str:
    if task == "change" and len(es.pairs) == 0:
        return ("the evaluation set has no change pairs: its groups hold no sensor with images "
                "from two years (build it from a world or scenes spanning several years)")  # fmt: skip
    empty = [k for k, v in splits.items() if len(v) == 0]
    if empty:
        return f"no {task} samples in the {', '.join(empty)} split(s); build a larger set"
    if task == "change":
        changed = {k: _changed(es.pairs.change[v]) for k, v in splits.items()}
        if any(pairs < MIN_CHANGED_PAIRS for pairs, _, _ in changed.values()):
            counts = "; ".join(
                f"{k} {pairs} of {len(splits[k])} pairs, {px} of {known} known pixels"
                for k, (pairs, px, known) in changed.items()
            )
            return (f"unscorable: too few changed pixels (with change: {counts}); F1 of "
                    f"changed pixels needs at least {MIN_CHANGED_PAIRS} pairs with change in "
                    "every split: build the set on ground with change events")  # fmt: skip
    return ""


def _changed(maps: np.ndarray) -> tuple[int, int, int]:
    """(pairs with any changed pixel, changed pixels, known pixels) of change maps (P, S, S)."""
    changed = maps == 1
    return (int(changed.any(axis=(1, 2)).sum()), int(changed.sum()),
            int((maps != UNKNOWN).sum()))  # fmt: skip


def _fit(task: str, train: list[Sample], n_classes: int, wd: float, seed: int) -> LinearHead:
    weight = None
    if task == "change":  # changed pixels are rare: balance the two classes
        t = np.concatenate([s.target.ravel() for s in train])
        counts = np.bincount(t[t >= 0], minlength=2).astype(float)
        weight = torch.tensor(counts.sum() / np.maximum(2 * counts, 1), dtype=torch.float32)
    return fit_head(train, n_classes, weight_decay=wd, seed=seed, class_weight=weight)


def _score(
    task: str, head: LinearHead, samples: list[Sample], n_classes: int, threshold: float = 0.5
) -> tuple[float, dict[str, Any]]:
    """The task's score (and its parts) of a head on samples."""
    probs = predict_proba(head, samples)
    truth = np.concatenate([s.target.ravel() for s in samples])
    if task == "change":
        p1 = np.concatenate([p[1].ravel() for p in probs])
        scores = change_scores(confusion(truth, (p1 >= threshold).astype(np.int64), 2))
        return scores["f1"], scores
    pred = np.concatenate([p[1:].argmax(0).ravel() + 1 for p in probs])  # code 0 is nodata
    cm = confusion(truth, pred, n_classes)
    if task == "classification":
        scores = classification_scores(cm)
        return scores["macro_f1"], scores
    miou, per_class = iou_scores(cm)
    accuracy = float(np.trace(cm) / max(cm.sum(), 1))
    return miou, {"miou": miou, "per_class_iou": per_class, "pixel_accuracy": accuracy}


def _best_threshold(head: LinearHead, val: list[Sample]) -> float:
    """The decision threshold on P(changed) with the best F1 on the val pairs."""
    p1 = np.concatenate([p[1].ravel() for p in predict_proba(head, val)])
    truth = np.concatenate([s.target.ravel() for s in val])
    known = truth >= 0
    p1, changed = p1[known], truth[known] == 1

    def f1(t: float) -> float:
        hit = p1 >= t
        tp = float((hit & changed).sum())
        return 2 * tp / max(float(hit.sum() + changed.sum()), 1.0)

    return float(max(THRESHOLDS, key=lambda t: f1(float(t))))


def _choose_decay(task: str, part: dict[str, list[Sample]], n_classes: int) -> float:
    """The L2 strength whose head (all training samples, seed 0) scores best on val."""
    best = (-1.0, WEIGHT_DECAYS[0])
    for wd in WEIGHT_DECAYS:
        head = _fit(task, part["train"], n_classes, wd, 0)
        t = _best_threshold(head, part["val"]) if task == "change" else 0.5
        best = max(best, (_score(task, head, part["val"], n_classes, t)[0], wd))
    return float(best[1])


def _row(
    task: str, enc: str, view: str, fraction: float, part: dict[str, list[Sample]],
    n_classes: int, wd: float, seeds: int,
) -> tuple[Row, LinearHead]:  # fmt: skip
    train = part["train"]
    n = max(1, math.ceil(fraction * len(train)))
    scores, details = [], []
    head = None
    for seed in range(seeds):
        rng = np.random.default_rng([seed, int(fraction * 1e6)])
        subset = [train[i] for i in sorted(rng.choice(len(train), size=n, replace=False))]
        head = _fit(task, subset, n_classes, wd, seed)
        threshold = _best_threshold(head, part["val"]) if task == "change" else 0.5
        score, detail = _score(task, head, part["test"], n_classes, threshold)
        if task == "change":
            detail["threshold"] = threshold
        scores.append(score)
        details.append(detail)
    assert head is not None
    row = Row(task, enc, view, fraction, n, len(part["test"]), METRIC[task],
              float(np.mean(scores)), interval95(scores), [float(s) for s in scores],
              _mean_details(details, wd))  # fmt: skip
    return row, head


def _mean_details(details: list[dict[str, Any]], wd: float) -> dict[str, Any]:
    out: dict[str, Any] = {"weight_decay": wd}
    for key, value in details[0].items():
        if isinstance(value, dict):
            classes = sorted({c for d in details for c in d[key]})
            out[key] = {
                str(c): float(np.mean([d[key].get(c, 0.0) for d in details])) for c in classes
            }
        else:
            out[key] = float(np.mean([d[key] for d in details]))
    return out
