"""``terracorpus experiment corpora|models``: compare curations (or model variants) downstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from terracorpus.pipelines.experiment import ARMS, DEFAULT_ARMS, VARIANTS

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


def _fractions(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        shares = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        shares = ()
    if not shares or not all(0 < f <= 1 for f in shares):
        raise click.BadParameter(f"{value!r}: give shares in (0, 1], e.g. 0.1,1", ctx, param)
    return shares


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
        click.option("--holdout", default=0.3, show_default=True,
                     type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     help="Share of the run's groups (whole blocks of ground) kept out of every "
                     "arm; the evaluation set is cut from that ground."),
        click.option("--eval-groups", default=200, show_default=True, type=click.IntRange(1),
                     help="At most this many evaluation groups."),
        click.option("--view", "views", default="group", show_default=True,
                     callback=_csv(("anchor", "group")),
                     help="Evaluation views: anchor image alone and/or whole group."),
        click.option("--fractions", default="1", show_default=True, callback=_fractions,
                     help="Shares of the evaluation training labels, comma-separated."),
        click.option("--head-seeds", default=3, show_default=True, type=click.IntRange(1),
                     help="Evaluation heads per score (their mean is a job's score)."),
        click.option("--world-labels", "world", type=click.Path(file_okay=False, exists=True,
                     path_type=Path), help="Demo world whose truth labels the experiment "
                     "(default: the world the run's scenes come from)."),
        click.option("--parallel", default=1, show_default=True, type=click.IntRange(1),
                     help="Jobs run at once (each is its own processes)."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def _settings(kw: dict[str, Any]) -> dict[str, Any]:
    """The train and score settings of the command's options (keyword arguments)."""
    from terracorpus.pipelines.experiment.run import ScoreSettings, TrainSettings

    train = TrainSettings(
        model=kw["model"], steps=kw["steps"], batch_size=kw["batch"],
        max_image_px=kw["max_image_px"],
    )  # fmt: skip
    score = ScoreSettings(
        holdout=kw["holdout"], eval_groups=kw["eval_groups"], views=kw["views"],
        fractions=kw["fractions"], head_seeds=kw["head_seeds"],
    )  # fmt: skip
    return {"train": train, "score": score, "seeds": kw["seeds"], "world": kw["world"],
            "parallel": kw["parallel"]}  # fmt: skip


@click.group("experiment")
def experiment() -> None:
    """Compare curations (or model variants) at equal pre-training compute."""


@experiment.command("corpora")
@_common
@click.option("--size", required=True, type=click.IntRange(1), help="Groups per curated corpus.")
@click.option("--arms", default=",".join(DEFAULT_ARMS), show_default=True, callback=_csv(ARMS),
              help="Comma-separated arms.")  # fmt: skip
@click.option("--quality-only", is_flag=True,
              help="Only the arms' curation quality (seconds): no corpora, no training.")  # fmt: skip
def corpora_cmd(
    run: Path, out: Path | None, size: int, arms: tuple[str, ...], quality_only: bool, **kw: Any
) -> None:
    """Corpora of one size from RUN's usable groups by AP, random, k-means balanced sampling,
    farthest-point and all, off a held-out share of the ground; each pre-trained for SEEDS
    seeds and scored on classification, segmentation and change detection on that ground.

    Writes results.json and results.md (means and 95 % intervals, curation quality per arm).
    Rerun the same command after a kill: finished corpora and jobs are skipped.
    """
    from terracorpus.pipelines.experiment.run import run_corpora_experiment

    results = run_corpora_experiment(
        run, out or run / "experiments" / "corpora", size, arms=arms,
        quality_only=quality_only, echo=click.echo, **_settings(kw),
    )  # fmt: skip
    from terracorpus.pipelines.experiment.summary import markdown

    click.echo(markdown(results))


@experiment.command("models")
@_common
@click.option("--variants", default=",".join(VARIANT_NAMES), show_default=True,
              callback=_csv(VARIANT_NAMES), help="Comma-separated model variants.")  # fmt: skip
def models_cmd(run: Path, out: Path | None, variants: tuple[str, ...], **kw: Any) -> None:
    """Model ablations on RUN's pool corpus (scored as `corpora` scores its arms): mask policy (complementary, consistent,
    independent), anchor-only groups, geographic or time encoding off; same steps and seeds."""
    from terracorpus.pipelines.experiment.run import run_models_experiment

    results = run_models_experiment(
        run, out or run / "experiments" / "models", variants=variants, echo=click.echo,
        **_settings(kw),
    )  # fmt: skip
    from terracorpus.pipelines.experiment.summary import markdown

    click.echo(markdown(results))


COMMANDS = [experiment]
