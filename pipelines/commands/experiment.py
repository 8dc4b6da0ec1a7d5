"""``terracorpus experiment corpora|models``: compare curations (or model variants) downstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from terracorpus.pipelines.experiment import ARMS, VARIANTS

VARIANT_NAMES = tuple(VARIANTS)


def _csv(choices: tuple[str, ...]) -> Any:
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        bad = [v for v in items if v not in choices]
        if bad or not items:
            raise click.BadParameter(
                f"{', '.join(bad) or 'nothing given'}: choose from {', '.join(choices)}",
                ctx=ctx,
                param=param,
            )
        return items

    return parse


def _common(fn: Any) -> Any:
    options = [
        click.option("--run", "run", required=True,
                     type=click.Path(file_okay=False, exists=True, path_type=Path),
                     help="A curated run directory (scenes, groups, chips; the demo's OUT/run)."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                     help="Experiment directory (default: RUN/experiments/<kind>)."),
        click.option("--seeds", default=3, show_default=True, type=click.IntRange(1),
                     help="Pre-training seeds per arm."),
        click.option("--model", default="tiny", show_default=True, help="Model size."),
        click.option("--steps", default=300, show_default=True, type=click.IntRange(1),
                     help="Pre-training steps of every job."),
        click.option("--batch", default=8, show_default=True, type=click.IntRange(1),
                     help="Groups per step."),
        click.option("--max-image-px", default=64, show_default=True, type=click.IntRange(8)),
        click.option("--folds", default=5, show_default=True, type=click.IntRange(2),
                     help="Probe: K-fold cross-validation over the pool's labelled groups."),
        click.option("--shots", default=10, show_default=True, type=click.IntRange(1),
                     help="Probe: labelled groups per class of the few-label score."),
        click.option("--world-labels", "world", type=click.Path(file_okay=False, exists=True,
                     path_type=Path), help="Demo world whose truth labels the pool "
                     "(default: the world the run's scenes come from)."),
        click.option("--parallel", default=1, show_default=True, type=click.IntRange(1),
                     help="Jobs run at once (each is its own processes)."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def _train(kw: dict[str, Any]) -> Any:
    from terracorpus.pipelines.experiment.run import TrainSettings

    return TrainSettings(
        model=kw["model"], steps=kw["steps"], batch_size=kw["batch"],
        max_image_px=kw["max_image_px"], folds=kw["folds"], shots=kw["shots"],
    )  # fmt: skip


@click.group("experiment")
def experiment() -> None:
    """Compare curations (or model variants) at equal pre-training compute."""


@experiment.command("corpora")
@_common
@click.option("--size", required=True, type=click.IntRange(1), help="Groups per curated corpus.")
@click.option("--arms", default=",".join(ARMS), show_default=True, callback=_csv(ARMS),
              help="Comma-separated arms.")  # fmt: skip
@click.option("--quality-only", is_flag=True,
              help="Only the arms' curation quality (seconds): no corpora, no training.")  # fmt: skip
def corpora_cmd(
    run: Path, out: Path | None, size: int, arms: tuple[str, ...], quality_only: bool, **kw: Any
) -> None:
    """Corpora of one size from RUN's usable groups by AP, random, k-means balanced sampling,
    farthest-point and all; each pre-trained for SEEDS seeds and probed on the labelled pool.

    Writes results.json and results.md (means and 95 % intervals, curation quality per arm).
    Rerun the same command after a kill: finished corpora and jobs are skipped.
    """
    from terracorpus.pipelines.experiment.run import run_corpora_experiment

    results = run_corpora_experiment(
        run, out or run / "experiments" / "corpora", size, arms=arms, seeds=kw["seeds"],
        train=_train(kw), world=kw["world"], parallel=kw["parallel"],
        quality_only=quality_only, echo=click.echo,
    )  # fmt: skip
    from terracorpus.pipelines.experiment.summary import markdown

    click.echo(markdown(results))


@experiment.command("models")
@_common
@click.option("--variants", default=",".join(VARIANT_NAMES), show_default=True,
              callback=_csv(VARIANT_NAMES), help="Comma-separated model variants.")  # fmt: skip
def models_cmd(run: Path, out: Path | None, variants: tuple[str, ...], **kw: Any) -> None:
    """Model ablations on RUN's pool corpus: mask policy (complementary, consistent,
    independent), anchor-only groups, geographic or time encoding off; same steps and seeds."""
    from terracorpus.pipelines.experiment.run import run_models_experiment

    results = run_models_experiment(
        run, out or run / "experiments" / "models", variants=variants, seeds=kw["seeds"],
        train=_train(kw), world=kw["world"], parallel=kw["parallel"], echo=click.echo,
    )  # fmt: skip
    from terracorpus.pipelines.experiment.summary import markdown

    click.echo(markdown(results))


COMMANDS = [experiment]
