"""DDP through torchrun: two CPU ranks with gloo on one machine, each reading its own shards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from terracorpus.training.checkpoint import load_checkpoint
from terracorpus.training.testing import write_synthetic_corpus

CONFIG = """\
patch_px: 4
max_image_px: 32
batch_size: 2
num_workers: 1
steps: 4
warmup_steps: 1
log_every: 1
checkpoint_every: 100
"""


def _torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "terracorpus.training.cli", "train", "--no-progress", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.integration
def test_two_gloo_ranks_train(tmp_path: Path) -> None:
    corpus = write_synthetic_corpus(tmp_path / "corpus", n_groups=12, val_fraction=0.0)
    config = tmp_path / "train.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "run"
    run = _torchrun(
        "--corpus", str(corpus), "--config", str(config), "--out", str(out), "--steps", "2"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "trained steps 1-2" in run.stdout
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["data"]["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # rank 0 writes, once a step


@pytest.mark.integration
@pytest.mark.slow
def test_two_gloo_ranks_train_and_resume(tmp_path: Path) -> None:
    corpus = write_synthetic_corpus(tmp_path / "corpus", n_groups=12, val_fraction=0.0)
    config = tmp_path / "train.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "run"
    first = _torchrun(
        "--corpus", str(corpus), "--config", str(config), "--out", str(out), "--until", "2"
    )
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["data"]["world_size"] == 2 and len(ckpt["rng"]) == 2
    second = _torchrun(
        "--corpus", str(corpus), "--config", str(config), "--out", str(out), "--resume"
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "trained steps 3-4" in second.stdout
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4 and ckpt["data"]["batches_per_rank"] == 4
    steps = [line.split(",")[0] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 4  # one line per step, written by rank 0 only
