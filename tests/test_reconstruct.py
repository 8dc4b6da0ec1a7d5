"""Reconstruction pictures: what the model saw and what it made of the hidden patches."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from terracorpus.training import cli
from terracorpus.training.corpus import open_corpus
from terracorpus.training.data import DataConfig, collate_groups, load_group
from terracorpus.training.model import a2mae_tiny
from terracorpus.training.reconstruct import reconstruct
from terracorpus.training.testing import write_synthetic_corpus

FAST = {"patch_px": 4, "max_image_px": 32, "batch_size": 4, "num_workers": 0, "warmup_steps": 1}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_corpus(tmp_path_factory.mktemp("c") / "corpus", n_groups=8)


def test_reconstruction_keeps_what_was_seen_and_fills_what_was_hidden(corpus: Path) -> None:
    torch.manual_seed(0)
    model = a2mae_tiny(patch_px=4)
    reader = open_corpus(corpus)
    data = DataConfig(patch_px=4, max_image_px=32, split=None, mask_ratio=0.75)
    batch = collate_groups([load_group(reader, g, data) for g in range(3)])
    images = reconstruct(model, batch)
    assert len(images) == len(batch.image_sensor)
    assert sum(i.is_anchor for i in images) == 3
    for image in images:
        assert image.prediction.shape == image.truth.shape
        assert np.isfinite(image.prediction).all()
        seen = image.visible
        assert seen.any() and (~seen).any()
        np.testing.assert_allclose(image.prediction[:, seen], image.truth[:, seen], atol=1e-5)
        assert not np.allclose(image.prediction[:, ~seen], image.truth[:, ~seen])


def test_train_writes_reconstruction_pngs(corpus: Path, tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("\n".join(f"{k}: {v}" for k, v in {**FAST, "steps": 2}.items()))
    out = tmp_path / "run"
    args = ["--corpus", str(corpus), "--config", str(config), "--out", str(out), "--no-progress"]
    got = CliRunner().invoke(cli.train, args)
    assert got.exit_code == 0, got.output
    pictures = sorted((out / "reconstructions").glob("group-*.png"))
    assert pictures and "masked groups reconstructed" in got.output
    pixels = matplotlib.image.imread(pictures[0])
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.std() > 0.05
