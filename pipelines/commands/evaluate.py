"""``terracorpus evalset build``: an evaluation set from a run's groups and a truth source.

Scoring an encoder on it is ``terracorpus evaluate`` (a training command: it needs torch).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from terracorpus.pipelines.evaluation.build import EvalSetParams, build_evalset
from terracorpus.pipelines.evaluation.truth import EvalSetError, RasterTruth, TruthSource


@click.group("evalset")
def evalset() -> None:
    """Evaluation sets: labelled groups on ground the pre-training corpus does not hold."""


def _truth(world: Path | None, rasters: tuple[str, ...], classes: Path | None) -> TruthSource:
    if (world is None) == (not rasters):
        raise EvalSetError("give the truth either as --world DIR or as --labels-raster YEAR=PATH")
    if world is not None:
        from terracorpus.pipelines.evaluation.truth import WorldTruth

        return WorldTruth(str(world))
    if classes is None:
        raise EvalSetError("--labels-raster needs --classes classes.json ({code: name})")
    paths = {}
    for pair in rasters:
        year, sep, path = pair.partition("=")
        if not sep or not year.isdigit():
            raise EvalSetError(f"--labels-raster {pair!r} is not YEAR=PATH")
        paths[int(year)] = path
    names = {int(k): str(v) for k, v in json.loads(classes.read_text()).items()}
    return RasterTruth(paths, names)


@evalset.command("build")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Run directory whose group stage has run (scenes.parquet, groups.parquet).")  # fmt: skip
@click.option("--out", required=True, type=click.Path(path_type=Path), help="New directory.")
@click.option("--world", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Demo world whose land-cover truth labels the set.")  # fmt: skip
@click.option("--labels-raster", "rasters", multiple=True, metavar="YEAR=PATH",
              help="Your labels: a GeoTIFF of class codes (0 = nodata) per year (repeatable).")  # fmt: skip
@click.option("--classes", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON {code: name} of the labels rasters' classes.")  # fmt: skip
@click.option("--exclude", "exclude", multiple=True, metavar="CORPUS",
              help="Pre-training corpus whose ground is left out (repeatable).")  # fmt: skip
@click.option(
    "--truth-res-m", default=10.0, show_default=True, help="Pixel size of the truth maps."
)
@click.option("--block-m", type=float, default=None, help="Split block side (default 4 chips).")
@click.option("--max-groups", type=int, default=None, help="Keep at most this many groups.")
@click.option("--overwrite", is_flag=True, help="Replace what --out holds.")
def build(
    run_dir: Path, out: Path, world: Path | None, rasters: tuple[str, ...], classes: Path | None,
    exclude: tuple[str, ...], truth_res_m: float, block_m: float | None, max_groups: int | None,
    overwrite: bool,
) -> None:  # fmt: skip
    """Build an evaluation set into OUT: the run's groups off the pre-training ground, split
    train/val/test by area, with class maps and change maps from the truth."""
    truth = _truth(world, rasters, classes)
    params = EvalSetParams(truth_res_m=truth_res_m, block_m=block_m, max_groups=max_groups)
    summary = build_evalset(
        run_dir, out, truth, exclude=exclude, params=params, overwrite=overwrite
    )
    click.echo(summary.describe())
    click.echo("classes: " + ", ".join(f"{k} {v}" for k, v in summary.classes.items()))


COMMANDS = [evalset]
