"""`curate` skips current stages, reruns stale successors, and refuses unknown stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from terracorpus.pipelines import curate as curate_mod
from terracorpus.pipelines.config import parse_config
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.rundir import RunDir

CALLS: list[str] = []


def _writer(name: str, out: str) -> Any:
    def run(config: Any, run: RunDir, client: Any = None) -> str:
        CALLS.append(name)
        run.write_table(out, pd.DataFrame({"x": [1]}), stage=name)
        return f"{name} ok"

    return run


stage_a = _writer("a", "a.parquet")
stage_b = _writer("b", "b.parquet")


@pytest.fixture
def two_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    stages = (
        curate_mod.Stage("search", ("a.parquet",), f"{__name__}:stage_a"),
        curate_mod.Stage("group", ("b.parquet",), f"{__name__}:stage_b"),
    )
    monkeypatch.setattr(curate_mod, "STAGES", stages)
    monkeypatch.setattr(curate_mod, "STAGE_NAMES", ("search", "group"))
    CALLS.clear()


def test_second_run_skips_current_stages(tmp_path: Path, two_stages: None) -> None:
    cfg = parse_config({"run_dir": str(tmp_path)})
    first = curate_mod.curate(cfg, echo=lambda s: None)
    assert [s.status for s in first.stages] == ["ran", "ran"]
    second = curate_mod.curate(cfg, echo=lambda s: None)
    assert [s.status for s in second.stages] == ["skipped", "skipped"]
    assert CALLS == ["a", "b"]
    assert set(RunDir(tmp_path, cfg).timings()) == {"search", "group"}
    assert (tmp_path / "curate.log").exists()


def test_forcing_a_stage_reruns_its_successors(tmp_path: Path, two_stages: None) -> None:
    cfg = parse_config({"run_dir": str(tmp_path)})
    curate_mod.curate(cfg, echo=lambda s: None)
    CALLS.clear()
    curate_mod.curate(cfg, force=["search"], echo=lambda s: None)
    assert CALLS == ["a", "b"]


def test_interrupted_stage_is_rerun(tmp_path: Path, two_stages: None) -> None:
    cfg = parse_config({"run_dir": str(tmp_path)})
    curate_mod.curate(cfg, echo=lambda s: None)
    (tmp_path / "b.parquet").unlink()  # as if the run died inside stage b
    CALLS.clear()
    curate_mod.curate(cfg, echo=lambda s: None)
    assert CALLS == ["b"]


def test_until_and_unknown_stage(tmp_path: Path, two_stages: None) -> None:
    cfg = parse_config({"run_dir": str(tmp_path)})
    res = curate_mod.curate(cfg, until="search", echo=lambda s: None)
    assert [s.name for s in res.stages] == ["search"]
    with pytest.raises(StageError, match="unknown stage"):
        curate_mod.curate(cfg, force=["serach"], echo=lambda s: None)
