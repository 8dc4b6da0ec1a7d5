"""Processes end with the command that started them, whichever way it is stopped; a run is
resumed only on its own corpus."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from terracorpus.training.config import parse_train_config
from terracorpus.training.errors import RunDirError
from terracorpus.training.testing import write_synthetic_corpus
from terracorpus.training.trainer import train

CLI = [sys.executable, "-m", "terracorpus.pipelines.cli"]


def _session(sid: int) -> list[int]:
    """Process ids of session ``sid`` (every process a command started, however deep)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == sid:  # state, ppid, pgrp, session
            out.append(int(entry))
    return out


def _wait_until(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting until {what}")


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


@pytest.mark.integration
def test_sigterm_to_catalog_serve_stops_the_server_and_removes_its_temp_dir(
    tmp_path: Path,
) -> None:
    from terracorpus.catalogs.world.testing import tiny_world

    world = tiny_world(tmp_path / "worlds")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [*CLI, "catalog", "serve", str(world.out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp)},
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "STAC API at" in first, first
        children = [p for p in _session(proc.pid) if p != proc.pid]
        assert children, "the server child process was not found"
        assert [p.name for p in tmp.iterdir() if p.name.startswith("terracorpus-stac-")]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        _wait_until(lambda: not _session(proc.pid), 10, "the server child has exited")
        assert not list(tmp.iterdir()), list(tmp.iterdir())
    finally:
        if proc.poll() is None or _session(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


_WORKER = """
import sys, time
from terracorpus.training.workers import worker_init
worker_init(int(sys.argv[1]), 0)
print("watching", flush=True)
time.sleep(120)
"""


def test_a_worker_exits_when_its_trainer_is_killed() -> None:
    """The mechanism the DataLoader workers get (worker_init_fn), on a stand-in trainer."""
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(owner.pid)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "watching"
        owner.kill()
        owner.wait()
        assert worker.wait(timeout=15) == 0
    finally:
        owner.kill()
        worker.kill()


@pytest.mark.slow
@pytest.mark.integration
def test_kill_9_of_train_leaves_no_dataloader_workers(tmp_path: Path) -> None:
    corpus = write_synthetic_corpus(tmp_path / "corpus", n_groups=16)
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {"patch_px": 4, "max_image_px": 32, "batch_size": 2, "num_workers": 2,
             "steps": 100000, "log_every": 1, "device": "cpu", "cpu_threads": 1}
        )
    )  # fmt: skip
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [*CLI, "train", "--corpus", str(corpus), "--config", str(config), "--out", str(out),
         "--model", "tiny", "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        # trainer + fork server + 2 workers, and a step done: the workers deliver batches
        _wait_until(
            lambda: len(_session(proc.pid)) >= 4 and _lines(out / "metrics.jsonl") > 0,
            300,
            "the DataLoader workers deliver",
        )
        proc.kill()
        proc.wait()
        # without the watch, the workers (and the fork server their pipes keep open) stayed
        # for minutes: their parent is the fork server, so torch's watchdog never fired
        _wait_until(lambda: not _session(proc.pid), 30, "every worker has exited")
    finally:
        if _session(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


def test_resume_refuses_another_corpus(tmp_path: Path) -> None:
    first = write_synthetic_corpus(tmp_path / "a", n_groups=6)
    other = write_synthetic_corpus(tmp_path / "b", n_groups=8)
    cfg = parse_train_config(
        {"patch_px": 4, "max_image_px": 32, "batch_size": 2, "num_workers": 0, "steps": 2,
         "warmup_steps": 1, "device": "cpu"}
    )  # fmt: skip
    out = tmp_path / "run"
    train(first, cfg, out, progress=False, until=1)
    with pytest.raises(RunDirError, match=r"another corpus .*Resume with the run's own corpus"):
        train(other, cfg, out, resume=True, progress=False)
    # the same corpus, copied elsewhere, is the same corpus
    import shutil

    moved = shutil.copytree(first, tmp_path / "moved")
    result = train(moved, cfg, out, resume=True, progress=False)
    assert result.start_step == 1 and result.steps == 2
