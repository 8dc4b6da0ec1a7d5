"""`curate`: search → group → describe → dedup → materialize in one run directory.

Each stage reads and writes artifacts in the run directory. A stage whose outputs are complete
and were made with this config is skipped; an interrupted stage resumes (describe and
materialize keep per-batch outputs); one Dask client serves every stage that touches pixels.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from terracorpus.catalogs.redact import RedactingFilter
from terracorpus.catalogs.search import SAME_ACQUISITION
from terracorpus.curation.groups.unused import CHOICES
from terracorpus.pipelines.cluster import dask_client
from terracorpus.pipelines.config import RunConfig
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.preflight import check_scheduler
from terracorpus.pipelines.rundir import RunDir, run_lock

if TYPE_CHECKING:  # the stages' own modules load when they run
    from terracorpus.pipelines.corpus.scenes import Labeller

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One step of the curation: where its code is and what it writes."""

    name: str
    outputs: tuple[str, ...]
    target: str  # "module:function"; function(config, run[, client]) -> summary
    needs_client: bool = False
    takes_labeller: bool = False  # function(..., labeller=...): writes class labels

    def load(self) -> Callable[..., Any]:
        module, func = self.target.split(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module), func)
        return fn


STAGES: tuple[Stage, ...] = (
    Stage("search", ("scenes.parquet",), "terracorpus.pipelines.stages.search:run_search"),
    Stage(
        "group",
        ("groups.parquet",),
        "terracorpus.pipelines.stages.group:run_group",
        needs_client=True,
    ),
    Stage(
        "describe",
        ("chips.parquet",),
        "terracorpus.pipelines.stages.describe:run_describe",
        needs_client=True,
    ),
    Stage(
        "dedup",
        ("selection.parquet",),
        "terracorpus.pipelines.stages.dedup:run_dedup",
        needs_client=True,
    ),
    Stage(
        "materialize",
        ("corpus.zarr",),  # with its manifest.parquet and collection.json beside it
        "terracorpus.pipelines.stages.materialize:run_materialize",
        needs_client=True,
        takes_labeller=True,
    ),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


@dataclass
class StageOutcome:
    name: str
    status: str  # "ran" | "skipped"
    seconds: float
    summary: Any = None


SET_ASIDE = CHOICES | {SAME_ACQUISITION, "anchor_replaced"}
"""Rows of ``failures.parquet`` that record a choice or a recovery, not a failure: scenes the
group rules set aside, an acquisition kept once, a group re-anchored after its anchor failed
(that scene's own failure has its own row)."""


@dataclass
class CurateResult:
    run_dir: str
    stages: list[StageOutcome] = field(default_factory=list)
    failures: int = 0
    set_aside: int = 0  # rows of failures.parquet that record a choice, not a failure


def output_is_current(run: RunDir, name: str) -> bool:
    """True if an artifact exists, is complete and was made with the run's config."""
    if name.endswith(".parquet"):
        return run.is_current(name)
    path = run.path(name)
    if name.endswith(".zarr"):
        # A corpus is current when its store says complete for this config and the manifest
        # and STAC collection written beside it exist.
        meta_file = path / "zarr.json"
        siblings = (path.parent / "manifest.parquet", path.parent / "collection.json")
        if not meta_file.exists() or not all(p.exists() for p in siblings):
            return False
        attrs = json.loads(meta_file.read_text()).get("attributes", {}).get("terracorpus", {})
        return bool(attrs.get("complete")) and attrs.get("config_hash") == run.config_hash
    return path.exists()


def stage_is_current(run: RunDir, stage: Stage) -> bool:
    return all(output_is_current(run, out) for out in stage.outputs)


@contextmanager
def _run_log(run: RunDir) -> Iterator[None]:
    """Also log to the run directory, so a week-long run leaves its story behind."""
    handler = logging.FileHandler(run.path("curate.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger("terracorpus")
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(min(old_level or logging.INFO, logging.INFO))
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


def _will_need_client(run: RunDir, todo: Sequence[Stage], force: Sequence[str]) -> bool:
    """True if a stage that runs on Dask will run (it, or a stage before it, is not current)."""
    stale = False
    for stage in todo:
        stale = stale or stage.name in force or not stage_is_current(run, stage)
        if stale and stage.needs_client:
            return True
    return False


def _check_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in STAGE_NAMES]
    if unknown:
        raise StageError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGE_NAMES)}")


def curate(
    config: RunConfig,
    *,
    force: Sequence[str] = (),
    until: str | None = None,
    allow_mixed: bool = False,
    echo: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
    labeller: Labeller | None = None,
) -> CurateResult:
    """Run the curation stages in ``config.run_dir``, skipping those already current.

    Args:
        config: the validated run config (its ``dask`` section says where stages run).
        force: stage names to rerun even if their outputs are current.
        until: stop after this stage.
        allow_mixed: accept artifacts made with another config.
        echo: where one-line stage reports go.
        labeller: class labels for the corpus's groups (None: no labels); the demo passes
            its world's.
    """
    _check_names([*force, *([until] if until else [])])
    with run_lock(config.run_dir, "curate"):
        return _curate(config, force, until, allow_mixed, echo, labeller)


def _curate(
    config: RunConfig,
    force: Sequence[str],
    until: str | None,
    allow_mixed: bool,
    echo: Callable[[str], None],
    labeller: Labeller | None,
) -> CurateResult:
    run = RunDir(config.run_dir, config, allow_mixed=allow_mixed)
    result = CurateResult(run_dir=str(run.root))
    todo = list(STAGES[: STAGE_NAMES.index(until) + 1] if until else STAGES)
    if config.dask.scheduler and _will_need_client(run, todo, force):
        check_scheduler(config.dask.scheduler)  # before a search that could take an hour
    rerun_rest = False  # once a stage ran, its successors' outputs are stale
    with _run_log(run), ExitStack() as stack:
        client = None
        for stage in todo:
            forced = rerun_rest or stage.name in force
            if not forced and stage_is_current(run, stage):
                echo(f"[{stage.name}] up to date ({', '.join(stage.outputs)}); skipped")
                result.stages.append(StageOutcome(stage.name, "skipped", 0.0))
                continue
            fn = stage.load()
            if stage.needs_client and client is None:
                client = stack.enter_context(dask_client(config.dask))
            echo(f"[{stage.name}] running")
            t0 = time.perf_counter()
            args = (config, run, client) if stage.needs_client else (config, run)
            summary = fn(*args, labeller=labeller) if stage.takes_labeller else fn(*args)
            seconds = time.perf_counter() - t0
            run.clear_scratch(stage.name)
            run.record_timing(stage.name, seconds)
            log.info("stage %s finished in %.1f s: %s", stage.name, seconds, summary)
            echo(f"[{stage.name}] done in {seconds:.1f} s" + (f": {summary}" if summary else ""))
            result.stages.append(StageOutcome(stage.name, "ran", seconds, summary))
            rerun_rest = True
    reasons = run.failures()["reason"].astype(str)
    result.set_aside = int(reasons.isin(SET_ASIDE).sum())
    result.failures = len(reasons) - result.set_aside
    return result
