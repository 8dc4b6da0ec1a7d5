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
from terracorpus.pipelines.experiment import ARMS, STOCHASTIC, VARIANTS
from terracorpus.pipelines.experiment.corpora import (
    PoolView,
    baseline_groups,
    build_ap_arm,
    build_pool,
    build_subset_arm,
    pool_view,
    source_config,
)
from terracorpus.pipelines.experiment.jobs import Job, run_jobs
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
    folds: int = 5
    shots: int = 10
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


def _labeller(run: Path, world: Path | None) -> Labeller:
    """The world's labeller (given, or found from the run's scenes); the probe needs labels."""
    from terracorpus.catalogs.frames import scenes_from_frame
    from terracorpus.pipelines.corpus.labels import WorldLabeller, world_labeller

    if world is not None:
        return WorldLabeller(str(world))
    found = world_labeller(scenes_from_frame(read_parquet(run / "scenes.parquet")))
    if found is None:
        raise StageError(
            f"the scenes of {run} do not come from a demo world, and the experiment scores "
            "encoders on land-cover labels: pass --world-labels WORLD_DIR"
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


def run_corpora_experiment(
    run: Path,
    out: Path,
    size: int,
    *,
    arms: tuple[str, ...] = ARMS,
    seeds: int = 3,
    train: TrainSettings = TrainSettings(),
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
                "seeds": seeds, "train": train.config(), "folds": train.folds,
                "shots": train.shots, **({"quality_only": True} if quality_only else {})}  # fmt: skip
    with _exclusive(out):
        _check_settings(out, settings)
        labeller = _labeller(run, world)
        echo(f"[experiment] pool: every usable group of {run} -> {out / 'pool'}")
        pool = build_pool(run, out / "pool", labeller, materialize=not quality_only)
        view = pool_view(pool, run)
        if size > len(view.group_ids):
            raise StageError(
                f"--size {size} exceeds the pool's {len(view.group_ids)} usable groups; choose a smaller size"
            )
        classes = _classes(run, view, labeller)
        corpora, quality = _arm_corpora(
            run, out, pool, view, classes, size, arms, seeds, echo, materialize=not quality_only
        )
        jobs = [] if quality_only else [
            Job(arm, s, corpora[(arm, s)], pool, out / "jobs" / arm / f"seed-{s}",
                train.config(), train.folds, train.shots)
            for s in range(seeds) for arm in arms  # seed-major: a cut-short run stays balanced
        ]  # fmt: skip
        scores = run_jobs(jobs, parallel, echo)
        results = summarize(
            scores, quality, settings, reference="random" if "random" in arms else None
        )
        json_path, md_path = write_results(out, results)
        echo(f"[experiment] results: {json_path}, {md_path}")
        return results


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
            elif arm == "ap":
                groups = build_ap_arm(run, target, size, materialize=materialize)
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
                "seeds": seeds, "train": train.config(), "folds": train.folds,
                "shots": train.shots}  # fmt: skip
    with _exclusive(out):
        _check_settings(out, settings)
        echo(f"[experiment] pool: every usable group of {run} -> {out / 'pool'}")
        pool = build_pool(run, out / "pool", _labeller(run, world))
        jobs = [
            Job(v, s, pool, pool, out / "jobs" / v / f"seed-{s}", train.config(**VARIANTS[v]),
                train.folds, train.shots)
            for s in range(seeds) for v in variants
        ]  # fmt: skip
        scores = run_jobs(jobs, parallel, echo)
        reference = "complementary" if "complementary" in variants else None
        results = summarize(scores, {}, settings, reference=reference)
        json_path, md_path = write_results(out, results)
        echo(f"[experiment] results: {json_path}, {md_path}")
        return results
