"""Running an experiment: corpora, quality, jobs and the table (see the package docstring)."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from terracorpus.curation.metrics import selection_quality
from terracorpus.pipelines.corpus.scenes import Labeller
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.experiment import ARMS, DEFAULT_ARMS, STOCHASTIC, VARIANTS
from terracorpus.pipelines.experiment.corpora import (
    PoolView,
    baseline_groups,
    build_ap_arm,
    build_pool,
    build_subset_arm,
    pool_view,
    source_config,
)
from terracorpus.pipelines.experiment.ground import build_experiment_evalset, holdout_source
from terracorpus.pipelines.experiment.jobs import Job, Scoring, run_jobs
from terracorpus.pipelines.experiment.summary import summarize, write_results
from terracorpus.pipelines.rundir import read_parquet

SETTINGS = "experiment.json"
LOCK = ".lock"


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock file for the whole experiment: a second command on the same
    directory would train the same jobs twice and race on their files."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / LOCK).open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StageError(
                f"another `terracorpus experiment` is running in {out}; wait for it, or give another --out"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass(frozen=True)
class TrainSettings:
    """What every job pre-trains with (equal compute across arms)."""

    model: str = "tiny"
    steps: int = 300
    batch_size: int = 8
    max_image_px: int = 64
    lr: float = 5e-4
    num_workers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self, **overrides: Any) -> dict[str, Any]:
        """The train config of a job (``terracorpus train --config``)."""
        return {
            "model": self.model, "steps": self.steps, "batch_size": self.batch_size,
            "max_image_px": self.max_image_px, "lr": self.lr, "num_workers": self.num_workers,
            "warmup_steps": max(1, self.steps // 10), "log_every": max(1, self.steps // 20),
            "checkpoint_every": max(1, self.steps // 4), "cpu_threads": 1,
            **self.extra, **overrides,
        }  # fmt: skip


@dataclass(frozen=True)
class ScoreSettings:
    """Where and how every encoder is scored.

    Args:
        holdout: share of the run's groups (whole blocks of ground) set aside before any arm
            curates; the evaluation set comes from that ground.
        eval_groups: at most this many evaluation groups (None: all).
        views: ``anchor`` and/or ``group`` (``terracorpus evaluate --view``).
        fractions: shares of the evaluation set's training labels the heads see.
        head_seeds: heads per score (their mean is a job's score).
    """

    holdout: float = 0.3
    eval_groups: int | None = 200
    views: tuple[str, ...] = ("group",)
    fractions: tuple[float, ...] = (1.0,)
    head_seeds: int = 3

    def settings(self) -> dict[str, Any]:
        return {"holdout": self.holdout, "eval_groups": self.eval_groups,
                "views": list(self.views), "fractions": list(self.fractions),
                "head_seeds": self.head_seeds}  # fmt: skip


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Write the settings, or refuse when ``out`` holds an experiment made with others."""
    path = out / SETTINGS
    if path.exists():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(settings)):
            changed = sorted(k for k in {*old, *settings} if old.get(k) != settings.get(k))
            raise StageError(
                f"{out} holds an experiment with other settings ({', '.join(changed)} differ); "
                "give another --out, or delete it to start over"
            )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))


def _world_dir(run: Path, world: Path | None) -> Path:
    """The demo world whose truth labels the experiment (given, or found from the run's
    scenes): the quality metrics count its classes and the evaluation set is cut from it."""
    from terracorpus.catalogs.frames import scenes_from_frame
    from terracorpus.pipelines.corpus.labels import find_world_dir

    if world is not None:
        return world
    found = find_world_dir(scenes_from_frame(read_parquet(run / "scenes.parquet")))
    if found is None:
        raise StageError(
            f"the scenes of {run} do not come from a demo world, and the experiment scores "
            "encoders on land-cover truth: pass --world-labels WORLD_DIR"
        )
    return found


def _classes(run: Path, view: PoolView, labeller: Labeller) -> np.ndarray:
    """(G,) majority class of each pool group's footprint (lon/lat), -1 unknown."""
    groups = read_parquet(run / "groups.parquet")
    bounds = dict(zip(groups["group_id"].astype(str), groups.geometry.bounds.values, strict=True))
    return np.array(
        [labeller(tuple(float(v) for v in bounds[g]), "EPSG:4326") for g in view.group_ids],  # type: ignore[arg-type]
        dtype=np.int64,
    )


def _quality(view: PoolView, classes: np.ndarray, groups: list[str]) -> dict[str, Any]:
    mask = np.isin(np.asarray(view.group_ids), groups)
    q = selection_quality(
        view.X, mask, classes=classes, information=view.information,
        duplicate_radius=view.duplicate_radius, min_information=view.min_information,
    )  # fmt: skip
    return q.as_dict()


def _mean_quality(draws: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in draws[0]:
        values = [d[key] for d in draws if d[key] is not None]
        out[key] = float(np.mean(values)) if values else None
    out["draws"] = len(draws)
    return out


def _arm_dir(out: Path, arm: str, seed: int) -> Path:
    return out / "arms" / (f"{arm}-seed-{seed}" if arm in STOCHASTIC else arm)


def _prepare(
    run: Path, out: Path, world: Path | None, score: ScoreSettings, echo: Callable[[str], None],
    *, evaluate: bool = True,
) -> tuple[Path, Path, Path | None, Labeller]:  # fmt: skip
    """(source run without the held-out ground, pool, evaluation set or None, labeller)."""
    from terracorpus.pipelines.corpus.labels import WorldLabeller
    from terracorpus.pipelines.evaluation.truth import WorldTruth

    world_dir = _world_dir(run, world)
    source = holdout_source(run, out / "source", score.holdout)
    echo(f"[experiment] pool: every usable group of {run} off the held-out "
         f"{score.holdout:.0%} of its ground -> {out / 'pool'}")  # fmt: skip
    pool = build_pool(source, out / "pool", None, materialize=evaluate)
    evalset = None
    if evaluate:
        echo("[experiment] evaluation set: the world's truth on ground no arm pre-trains on")
        evalset = build_experiment_evalset(
            run, out / "evalset", pool, WorldTruth(str(world_dir)), score.eval_groups
        )
        echo(f"[experiment] {(evalset / '.done').read_text().strip()}")
    return source, pool, evalset, WorldLabeller(str(world_dir))


def run_corpora_experiment(
    run: Path,
    out: Path,
    size: int,
    *,
    arms: tuple[str, ...] = DEFAULT_ARMS,
    seeds: int = 3,
    train: TrainSettings = TrainSettings(),
    score: ScoreSettings = ScoreSettings(),
    world: Path | None = None,
    parallel: int = 1,
    quality_only: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The corpus comparison (see the module docstring); returns the results document.

    ``quality_only``: the arms' selections and their curation quality only, in seconds: no
    corpus is written and nothing is trained (stochastic arms: one draw per seed).
    """
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise StageError(f"unknown arms {unknown}; choose from {', '.join(ARMS)}")
    source_config(run)  # a curated run, or one clear error before anything is written
    settings = {"kind": "corpora", "run": str(run.resolve()), "size": size, "arms": list(arms),
                "seeds": seeds, "train": train.config(), "score": score.settings(),
                **({"quality_only": True} if quality_only else {})}  # fmt: skip
    with _exclusive(out):
        _check_settings(out, settings)
        source, pool, evalset, labeller = _prepare(
            run, out, world, score, echo, evaluate=not quality_only
        )
        view = pool_view(pool, source)
        if size > len(view.group_ids):
            raise StageError(
                f"--size {size} exceeds the pool's {len(view.group_ids)} usable groups "
                f"(off the held-out {score.holdout:.0%} of the ground); choose a smaller size"
            )
        classes = _classes(source, view, labeller)
        corpora, quality = _arm_corpora(
            source, out, pool, view, classes, size, arms, seeds, echo, materialize=not quality_only
        )
        # seed-major: a cut-short run stays balanced; the first job also scores the baselines
        jobs = [] if evalset is None else [
            Job(arm, s, corpora[(arm, s)], _scoring(evalset, score),
                out / "jobs" / arm / f"seed-{s}", train.config(), baselines=(i == 0))
            for i, (s, arm) in enumerate((s, a) for s in range(seeds) for a in arms)
        ]  # fmt: skip
        scores = run_jobs(jobs, parallel, echo)
        results = summarize(scores, quality, settings, focus="ap" if "ap" in arms else None)
        json_path, md_path = write_results(out, results)
        echo(f"[experiment] results: {json_path}, {md_path}")
        return results


def _scoring(evalset: Path, score: ScoreSettings) -> Scoring:
    return Scoring(evalset, score.views, score.fractions, score.head_seeds)


def _arm_corpora(
    run: Path, out: Path, pool: Path, view: PoolView, classes: np.ndarray, size: int,
    arms: tuple[str, ...], seeds: int, echo: Callable[[str], None], materialize: bool,
) -> tuple[dict[tuple[str, int], Path], dict[str, Any]]:  # fmt: skip
    """The corpus of every (arm, seed) and each arm's curation quality."""
    corpora: dict[tuple[str, int], Path] = {}
    quality: dict[str, Any] = {}
    for arm in arms:
        draws = []
        for s in range(seeds if arm in STOCHASTIC else 1):
            target = _arm_dir(out, arm, s)
            echo(
                f"[experiment] corpus of arm {arm}" + (f" (draw {s})" if arm in STOCHASTIC else "")
            )
            if arm == "all":
                target, groups = pool, view.group_ids
            elif arm in ("ap", "ap-exemplars"):
                groups = build_ap_arm(run, target, size, materialize=materialize, arm=arm)
            else:
                groups = baseline_groups(arm, view, size, s)
                if materialize:
                    build_subset_arm(pool, run, target, groups, arm)
            draws.append(_quality(view, classes, groups))
            for seed in range(seeds):
                if arm not in STOCHASTIC or seed == s:
                    corpora[(arm, seed)] = target
        quality[arm] = _mean_quality(draws)
    return corpora, quality


def run_models_experiment(
    run: Path,
    out: Path,
    *,
    variants: tuple[str, ...] = tuple(VARIANTS),
    seeds: int = 3,
    train: TrainSettings = TrainSettings(),
    score: ScoreSettings = ScoreSettings(),
    world: Path | None = None,
    parallel: int = 1,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Model ablations on the run's pool corpus: each variant pre-trained and scored alike."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise StageError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    source_config(run)
    settings = {"kind": "models", "run": str(run.resolve()), "variants": list(variants),
                "seeds": seeds, "train": train.config(), "score": score.settings()}  # fmt: skip
    with _exclusive(out):
        _check_settings(out, settings)
        _, pool, evalset, _ = _prepare(run, out, world, score, echo)
        assert evalset is not None  # _prepare builds it unless told not to
        jobs = [
            Job(v, s, pool, _scoring(evalset, score), out / "jobs" / v / f"seed-{s}",
                train.config(**VARIANTS[v]), baselines=(i == 0))
            for i, (s, v) in enumerate((s, v) for s in range(seeds) for v in variants)
        ]  # fmt: skip
        scores = run_jobs(jobs, parallel, echo)
        focus = "complementary" if "complementary" in variants else None
        results = summarize(scores, {}, settings, focus=focus)
        json_path, md_path = write_results(out, results)
        echo(f"[experiment] results: {json_path}, {md_path}")
        return results
