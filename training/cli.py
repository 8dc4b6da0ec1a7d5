"""``terracorpus train``, ``probe`` and ``export`` (plugged into the CLI by entry points)."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from terracorpus.training.errors import TrainingError

EXIT_USER_ERROR = 2
F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(fn: F) -> F:
    """Our errors become ``error: <message>`` and exit status 2, like the other commands."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TrainingError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]


@click.command()
@click.option(
    "--corpus", required=True, help="Corpus directory (or its corpus.zarr), local or fsspec URL."
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Train config YAML.")
@click.option(
    "--model", default=None, help="Model size: tiny, small, base, large (overrides the config)."
)
@click.option("--out", default="train-run", show_default=True, type=click.Path(file_okay=False))
@click.option("--steps", type=int, default=None, help="Override the config's steps.")
@click.option("--until", type=int, default=None, help="Stop after this step (schedule unchanged).")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier run in --out.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_user_errors
def train(
    corpus: str, config_path: str | None, model: str | None, out: str, steps: int | None,
    until: int | None,
    resume: bool, overwrite: bool, no_progress: bool,
) -> None:  # fmt: skip
    """Pre-train A²-MAE on a corpus; writes checkpoints/, metrics.jsonl, config.yaml and
    reconstructions/ (PNGs of masked groups beside the truth) to --out.

    Several GPUs or nodes: torchrun --nproc-per-node N -m terracorpus.training.cli train ...
    """
    from terracorpus.training.config import load_train_config
    from terracorpus.training.trainer import train as run_train

    cfg = load_train_config(config_path, model=model, steps=steps)
    result = run_train(corpus, cfg, out, resume=resume, overwrite=overwrite, progress=not no_progress,
                       until=until)  # fmt: skip
    if result.losses:
        click.echo(
            f"trained steps {result.start_step + 1}-{result.steps}: loss "
            f"{result.losses[0]:.4f} -> {result.losses[-1]:.4f}; run in {result.out_dir}"
        )
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one rank draws
            from terracorpus.training.reconstruct import write_reconstructions

            pictures = write_reconstructions(corpus, result.out_dir)
            click.echo(f"{len(pictures)} masked groups reconstructed: {pictures[0].parent}")
    else:
        click.echo(f"nothing to do: the run in {result.out_dir} is at step {result.steps}")


@click.command()
@click.option(
    "--encoder",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Export directory.",
)
@click.option("--corpus", required=True, help="Corpus with labels (or give --labels).")
@click.option(
    "--labels", type=click.Path(exists=True, dir_okay=False), help="Parquet: image_id, label."
)
@click.option("--max-image-px", default=128, show_default=True)
@click.option("--batch-size", default=16, show_default=True)
@click.option("--workers", default=0, show_default=True, help="DataLoader workers.")
@click.option("--folds", type=int, default=None, help="K-fold CV over groups, not the split.")
@click.option(
    "--compare-random", is_flag=True, help="Also probe the same model with random weights."
)
@click.option(
    "--shots",
    type=click.IntRange(1),
    default=None,
    help="Also score probes trained on this many labelled groups per class (few_* scores).",
)
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), help="Write the scores as JSON."
)
@_user_errors
def probe(
    encoder: str, corpus: str, labels: str | None, max_image_px: int, batch_size: int,
    workers: int, folds: int | None, compare_random: bool, shots: int | None,
    json_out: str | None,
) -> None:  # fmt: skip
    """Linear-probe and kNN scores of a frozen encoder on the anchors' land-cover labels."""
    import torch

    from terracorpus.training.corpus import open_corpus
    from terracorpus.training.export import load_encoder
    from terracorpus.training.model import A2MAE
    from terracorpus.training.probe import (
        anchor_labels,
        extract_features,
        few_label_scores,
        fit_probes,
    )

    reader = open_corpus(corpus)
    model = load_encoder(encoder)
    models = {"encoder": model}
    if compare_random:
        torch.manual_seed(0)
        models["random"] = A2MAE(model.args)
    scores: dict[str, dict[str, Any]] = {}
    y = anchor_labels(reader, labels)
    for name, m in models.items():
        feats = extract_features(m, reader, max_image_px=max_image_px, batch_size=batch_size,
                                 num_workers=workers)  # fmt: skip
        result = fit_probes(feats, y, reader.groups.split, folds=folds)
        scores[name] = result.as_dict()
        if shots is not None:
            few = few_label_scores(feats, y, shots=shots)
            scores[name] |= {
                f"few_{k}": v for k, v in few.as_dict().items() if k.endswith(("accuracy", "f1"))
            }
            click.echo(f"{name}: {shots}-shot linear macro-F1 {few.linear_macro_f1:.3f}")
        click.echo(
            f"{name}: linear acc {result.linear_accuracy:.3f} macro-F1 {result.linear_macro_f1:.3f} | "
            f"kNN acc {result.knn_accuracy:.3f} macro-F1 {result.knn_macro_f1:.3f} "
            f"({result.n_train} train / {result.n_val} val groups, {result.n_classes} classes)"
        )
    if json_out:
        Path(json_out).write_text(json.dumps(scores, indent=2))


@click.command()
@click.option(
    "--checkpoint", required=True, type=click.Path(exists=True), help="Run dir or .pt file."
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Export directory.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in --out.")
@_user_errors
def export(checkpoint: str, out: str, overwrite: bool) -> None:
    """Export the encoder of a checkpoint as encoder.safetensors + encoder.json."""
    from terracorpus.training.export import export_encoder

    path = export_encoder(checkpoint, out, overwrite=overwrite)
    click.echo(f"encoder written to {path}")


@click.command()
@click.option("--encoder", required=True, type=click.Path(exists=True, file_okay=False),
              help="Export directory (terracorpus export).")  # fmt: skip
@click.option("--evalset", required=True, type=click.Path(exists=True, file_okay=False),
              help="Evaluation set directory (terracorpus evalset build).")  # fmt: skip
@click.option("--task", "tasks", multiple=True,
              type=click.Choice(["classification", "segmentation", "change"]),
              help="Task to score (repeatable; default all three).")  # fmt: skip
@click.option("--seeds", default=3, show_default=True, help="Head seeds per score (>= 1).")
@click.option("--fractions", default="0.01,0.1,1", show_default=True,
              help="Shares of the training labels the heads see, comma-separated.")  # fmt: skip
@click.option("--view", "views", multiple=True, type=click.Choice(["anchor", "group"]),
              help="anchor image alone, or the whole group visible (default both).")  # fmt: skip
@click.option("--no-baselines", is_flag=True, help="Score only the given encoder.")
@click.option("--max-image-px", default=64, show_default=True)
@click.option(
    "--cpu-threads",
    default=1,
    show_default=True,
    help="torch threads (small heads on a shared CPU run fastest on one).",
)
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), help="Write the scores as JSON."
)
@click.option("--pictures", type=click.Path(file_okay=False),
              help="Directory for a picture per task (default: beside --json).")  # fmt: skip
@click.option("--no-pictures", is_flag=True, help="Draw no pictures.")
@click.option("--allow-unseen-bands", is_flag=True,
              help="Score even on bands the encoder never saw in pre-training.")  # fmt: skip
@_user_errors
def evaluate(
    encoder: str, evalset: str, tasks: tuple[str, ...], seeds: int, fractions: str,
    views: tuple[str, ...], no_baselines: bool, max_image_px: int, cpu_threads: int,
    json_out: str | None, pictures: str | None, no_pictures: bool, allow_unseen_bands: bool,
) -> None:  # fmt: skip
    """Score a frozen encoder against random weights and a no-learning baseline on an
    evaluation set: classification, segmentation and change detection."""
    import torch

    from terracorpus.training.errors import EvaluationError
    from terracorpus.training.evaluation import FRACTIONS, TASKS, evaluate_encoder

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cpu_threads))
    try:
        shares = [float(f) for f in fractions.split(",") if f.strip()] or list(FRACTIONS)
    except ValueError:
        raise EvaluationError(
            f"--fractions {fractions!r} is not a comma-separated list of numbers"
        ) from None
    if pictures is None and json_out is not None:
        pictures = str(Path(json_out).with_suffix("")) + "-pictures"
    if no_pictures:
        pictures = None
    try:
        report = evaluate_encoder(
            encoder, evalset, tasks=tasks or TASKS, seeds=seeds, fractions=shares,
            views=views or ("anchor", "group"), baselines=not no_baselines,
            max_image_px=max_image_px, pictures_dir=pictures,
            allow_unseen_bands=allow_unseen_bands,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    click.echo(report.table())
    if json_out:
        report.write_json(json_out)
        click.echo(f"scores written to {json_out}")


@click.group()
def _torchrun_main() -> None:
    """Entry for ``torchrun -m terracorpus.training.cli train ...`` (DDP)."""


_torchrun_main.add_command(train)
_torchrun_main.add_command(probe)
_torchrun_main.add_command(export)
_torchrun_main.add_command(evaluate)

if __name__ == "__main__":
    _torchrun_main()
