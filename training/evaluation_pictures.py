"""One picture per evaluation task: a few test samples, the truth beside each encoder's
prediction (the head trained on all training samples)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from terracorpus.training.evaluation_heads import LinearHead, Sample, predict_proba
from terracorpus.training.evaluation_set import EvalSet

N_SHOWN = 4


def draw_task(
    task: str,
    es: EvalSet,
    shown: dict[str, tuple[list[Sample], LinearHead, float]],
    out_dir: Path,
) -> Path:
    """Write ``<out_dir>/<task>.png``; rows are samples, columns truth then each encoder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(shown)
    first = next(iter(shown.values()))[0]
    n = min(N_SHOWN, len(first))
    picks = _picks(task, first, n)
    shown = {k: ([samples[i] for i in picks], head, t) for k, (samples, head, t) in shown.items()}
    first = next(iter(shown.values()))[0]
    fig, axes = plt.subplots(n, 1 + len(names), figsize=(2.2 * (1 + len(names)), 2.3 * n),
                             squeeze=False, dpi=80)  # fmt: skip
    cmap = ListedColormap([plt.get_cmap("tab10")(i) for i in range(max(2, max(es.classes) + 1))])
    vmax = 1 if task == "change" else max(es.classes)
    preds = {
        name: _predictions(task, samples[:n], head, t) for name, (samples, head, t) in shown.items()
    }
    for i in range(n):
        truth = first[i].target
        panels = [("truth", truth)] + [(name, preds[name][i]) for name in names]
        for ax, (title, picture) in zip(axes[i], panels, strict=True):
            shown_map = np.ma.masked_less(picture, 0)
            ax.imshow(shown_map, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(_title(task, title, picture, es), fontsize=7)
    fig.suptitle(_suptitle(task, es), fontsize=8)
    fig.tight_layout()
    path = out_dir / f"{task}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _picks(task: str, samples: list[Sample], n: int) -> list[int]:
    """For change, the test pairs with the most changed pixels (most pairs have none); else
    the first ``n``."""
    if task != "change":
        return list(range(n))
    changed = [int((s.target == 1).sum()) for s in samples]
    return sorted(sorted(range(len(samples)), key=lambda i: -changed[i])[:n])


def _predictions(
    task: str, samples: list[Sample], head: LinearHead, threshold: float
) -> list[np.ndarray]:
    out = []
    for s, p in zip(samples, predict_proba(head, samples), strict=True):
        change = (p[1] >= threshold).astype(np.int64)
        pred = change if task == "change" else p[1:].argmax(0) + 1  # code 0 is nodata
        out.append(np.where(s.target < 0, -1, pred))
    return out


def _title(task: str, name: str, picture: np.ndarray, es: EvalSet) -> str:
    if task == "classification":
        return f"{name}: {es.classes.get(int(picture.ravel()[0]), '?')}"
    return name


def _suptitle(task: str, es: EvalSet) -> str:
    if task == "change":
        return "change detection on test pairs (yellow: changed)"
    legend = ", ".join(f"{k} {v}" for k, v in sorted(es.classes.items()) if k)
    return f"{task} on test groups; classes: {legend}"
