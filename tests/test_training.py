"""A²-MAE model, trainer (exact resume, guards), export, probe and the training CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from click.testing import CliRunner

from terracorpus.training import cli
from terracorpus.training.checkpoint import load_checkpoint
from terracorpus.training.config import TrainConfig, load_train_config, parse_train_config
from terracorpus.training.corpus import open_corpus
from terracorpus.training.data import Bucket, DataConfig, collate_groups, load_group
from terracorpus.training.errors import (
    CheckpointError,
    CorpusReadError,
    ProbeError,
    RunDirError,
    TrainConfigError,
    TrainingError,
)
from terracorpus.training.export import export_encoder, load_encoder
from terracorpus.training.model import (
    A2MAE,
    _normalised_mse,
    _pixel_mse,
    _stats_mse,
    a2mae_tiny,
    model_args,
)
from terracorpus.training.probe import anchor_labels, few_label_scores, fit_probes, probe
from terracorpus.training.testing import write_synthetic_corpus
from terracorpus.training.trainer import _model_args, get_lr, train

DATA = DataConfig(patch_px=4, max_image_px=32, split=None)
FAST = {
    "patch_px": 4,
    "max_image_px": 32,
    "batch_size": 4,
    "num_workers": 0,
    "warmup_steps": 2,
    "lr": 1e-3,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """Tiny models run fastest single-threaded; several threads on a shared 2-core box thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_corpus(
        tmp_path_factory.mktemp("c") / "corpus", n_groups=16, val_fraction=0.4
    )


def _batch(corpus: Path, groups: range = range(4), cfg: DataConfig = DATA) -> Any:
    reader = open_corpus(corpus)
    return collate_groups([load_group(reader, g, cfg) for g in groups])


def _cfg(**kw: Any) -> TrainConfig:
    return parse_train_config({**FAST, **kw})


@pytest.mark.parametrize("pixel_target", ["normalised", "standardised"])
def test_loss_is_finite_per_sensor_and_falls_on_a_fixed_batch(
    corpus: Path, pixel_target: str
) -> None:
    torch.manual_seed(0)
    model = a2mae_tiny(patch_px=4, pixel_target=pixel_target)
    batch = _batch(corpus)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert set(out["sensor_loss"]) == {"s2like", "lslike"}
    assert all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0]


def test_statistics_term_sees_what_patch_normalisation_divides_out() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 5, 3, 16, generator=g)  # (n, L, C, P)
    valid = torch.ones(2, 5, 16, dtype=torch.bool)
    brighter = target + 2.0  # the same texture, another band mean
    shape = _normalised_mse(target.new_zeros(target.shape), target, valid)
    torch.testing.assert_close(
        _normalised_mse(target.new_zeros(target.shape), brighter, valid), shape
    )
    mean = target.mean(-1)
    log_std = 0.5 * torch.log(target.var(-1, unbiased=False) + 1e-4)
    exact = torch.stack([mean, log_std], -1)
    assert float(_stats_mse(exact, target, valid).abs().max()) < 1e-10
    torch.testing.assert_close(_stats_mse(exact, brighter, valid), torch.full((2, 5), 2.0))
    half = valid.clone()
    half[..., 8:] = False  # statistics over valid pixels only
    masked = torch.where(half[:, :, None, :], target, torch.full_like(target, 1e6))
    torch.testing.assert_close(
        _stats_mse(exact, masked, half),
        _stats_mse(exact, target[..., :8], half[..., :8]),
    )
    assert a2mae_tiny(stats_loss_weight=0.0).stats_head is None  # the plain shape-only loss


def test_standardised_pixel_target_scores_band_means_and_skips_invalid_pixels() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 5, 3, 16, generator=g)  # (n, L, C, P)
    valid = torch.ones(2, 5, 16, dtype=torch.bool)
    assert float(_pixel_mse(target, target, valid).abs().max()) == 0.0
    # the same texture with every band 2 brighter: the normalised target cannot see it, this can
    torch.testing.assert_close(_pixel_mse(target, target + 2.0, valid), torch.full((2, 5), 4.0))
    off = target.clone()
    off[:, :, 0] += 3.0  # one band of three wrong by 3: mean over bands of (9, 0, 0)
    torch.testing.assert_close(_pixel_mse(off, target, valid), torch.full((2, 5), 3.0))
    half = valid.clone()
    half[..., 8:] = False  # invalid pixels count for nothing, whatever is predicted there
    wild = torch.where(half[:, :, None, :], target, torch.full_like(target, 1e6))
    assert float(_pixel_mse(wild, target, half).abs().max()) == 0.0


def test_pixel_target_and_stats_weight_come_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("pixel_target: raw\n")
    with pytest.raises(TrainConfigError, match=r"pixel_target: .*'normalised' or 'standardised'"):
        load_train_config(path)
    with pytest.raises(TrainConfigError, match="stats_loss_weight"):
        parse_train_config({"stats_loss_weight": -1})
    with pytest.raises(TrainConfigError, match="pixel_target: unknown pixel target 'raw'"):
        a2mae_tiny(pixel_target="raw")
    args = _model_args(_cfg(pixel_target="standardised", stats_loss_weight=0.0), None)
    assert (args.pixel_target, args.stats_loss_weight) == ("standardised", 0.0)
    assert _model_args(_cfg(), None) == model_args("tiny", patch_px=4)  # defaults unchanged


def test_patch_embedding_is_conditioned_on_wavelengths_not_band_order(corpus: Path) -> None:
    model = a2mae_tiny(patch_px=4).eval()
    batch = _batch(corpus, range(2))
    bucket = batch.buckets[0]
    perm = torch.tensor([2, 0, 3, 1])
    permuted = Bucket(bucket.sensor, bucket.pixels[:, perm], bucket.valid, bucket.wavelengths[perm],
                      bucket.bandwidths[perm], bucket.images)  # fmt: skip
    a = model.embed(batch)
    batch.buckets[0] = permuted
    torch.testing.assert_close(model.embed(batch), a, rtol=1e-4, atol=1e-5)
    shifted = Bucket(bucket.sensor, bucket.pixels, bucket.valid, bucket.wavelengths + 0.3,
                     bucket.bandwidths, bucket.images)  # fmt: skip
    batch.buckets[0] = shifted
    assert not torch.allclose(model.embed(batch), a)


def test_token_positions_are_metric_in_the_group_frame(corpus: Path) -> None:
    batch = _batch(corpus, range(1))
    sensors = batch.image_sensor
    ls = sensors.index("lslike")
    start = int(batch.image_tokens[ls])
    ground = float(batch.token_ground[start])
    assert ground == 120.0  # 4 pixels of 30 m
    origin = batch.token_xy[start] - ground / 2  # the coarse image's top-left, in metres
    assert torch.all(origin.abs() <= 15.0)  # aligned with the anchor up to half a 30 m pixel
    assert float(batch.token_ground[0]) == 40.0 and batch.token_xy[0].tolist() == [20.0, 20.0]


def test_features_pool_anchor_tokens(corpus: Path) -> None:
    model = a2mae_tiny(patch_px=4).eval()
    cfg = DataConfig(patch_px=4, max_image_px=32, split=None, mask_ratio=0.0, anchor_only=True)
    batch = _batch(corpus, range(3), cfg)
    feats = model.features(batch)
    assert feats.shape == (3, 96) and torch.isfinite(feats).all()
    assert bool(batch.token_visible.all())
    single = model.features(_batch(corpus, range(1), cfg))
    torch.testing.assert_close(single[0], feats[0], rtol=1e-4, atol=1e-5)  # padding-independent


def test_a_damaged_store_is_a_read_error_not_an_assert(tmp_path: Path) -> None:
    """Input checks must survive ``python -O``: a group where an array belongs is an error."""
    path = write_synthetic_corpus(tmp_path / "c", n_groups=2)
    reader = open_corpus(path)
    sensor = next(iter(reader.sensors))
    root = zarr.open_group(str(path / "corpus.zarr"), mode="a")
    if "label" in root[f"sensors/{sensor}"]:
        del root[f"sensors/{sensor}/label"]
    root.create_group(f"sensors/{sensor}/label")
    with pytest.raises(CorpusReadError, match=f"sensors/{sensor}/label .* is not an array"):
        open_corpus(path).labels(sensor)


def test_size_factories() -> None:
    assert model_args("small").dim == 384 and model_args("large").depth == 24
    with pytest.raises(TrainConfigError, match="model: unknown model size 'huge'"):
        model_args("huge")


def test_lr_schedule_warms_up_then_decays() -> None:
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr=0.0)
    lrs = [get_lr(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:])) and lrs[-1] < 0.01


def test_resume_is_exact(corpus: Path, tmp_path: Path) -> None:
    cfg = _cfg(steps=6, checkpoint_every=100, log_every=1)
    straight = train(corpus, cfg, tmp_path / "a", progress=False)
    first = train(corpus, cfg, tmp_path / "b", progress=False, until=3)
    second = train(corpus, cfg, tmp_path / "b", progress=False, resume=True)
    assert len(first.losses) == 3 and second.start_step == 3
    np.testing.assert_allclose(first.losses + second.losses, straight.losses, rtol=1e-5)
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 6 and a["data"]["batches_per_rank"] == 6
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6)
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4, 5, 6] and "s2like" in lines[-1]["sensor_loss"]


def test_run_dir_is_never_overwritten_silently(corpus: Path, tmp_path: Path) -> None:
    cfg = _cfg(steps=1)
    train(corpus, cfg, tmp_path, progress=False)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(RunDirError, match="--resume to continue it or --overwrite"):
        train(corpus, cfg, tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="holds a 'tiny' model"):
        train(corpus, _cfg(steps=2, model="small"), tmp_path, progress=False, resume=True)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before
    train(corpus, cfg, tmp_path, progress=False, overwrite=True)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_non_finite_loss_stops_with_a_clear_message(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = A2MAE.forward

    def poisoned(self: A2MAE, batch: Any, metadata_dropout: float = 0.0) -> dict[str, Any]:
        out = real(self, batch, metadata_dropout)
        return {**out, "loss": out["loss"] * float("nan")}

    monkeypatch.setattr(A2MAE, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"loss is not finite .* at step 0"):
        train(corpus, _cfg(steps=2), tmp_path, progress=False)


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("steps: 5\nlearning_rate: 0.1\n")
    with pytest.raises(TrainConfigError, match="unknown key 'learning_rate'"):
        load_train_config(path)
    with pytest.raises(TrainConfigError, match="mask_ratio"):
        parse_train_config({"mask_ratio": 1.5})


def test_export_load_and_probe(corpus: Path, tmp_path: Path) -> None:
    train(corpus, _cfg(steps=2, split="train"), tmp_path / "run", progress=False)
    export_encoder(tmp_path / "run", tmp_path / "enc")
    meta = json.loads((tmp_path / "enc" / "encoder.json").read_text())
    assert meta["model_args"]["patch_px"] == 4 and meta["step"] == 2
    encoder = load_encoder(tmp_path / "enc")
    trained = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    torch.testing.assert_close(
        encoder.state_dict()["blocks.0.qkv.weight"], trained["model"]["blocks.0.qkv.weight"]
    )
    with pytest.raises(CheckpointError, match="exists"):
        export_encoder(tmp_path / "run", tmp_path / "enc")

    reader = open_corpus(corpus)
    result = probe(encoder, reader, max_image_px=32)
    assert result.n_train + result.n_val == 16
    assert 0.0 <= result.linear_macro_f1 <= 1.0 and 0.0 <= result.knn_accuracy <= 1.0
    labels = anchor_labels(reader)
    ids = reader.image_ids("s2like")
    rows = [reader.groups.members(g)[0][1] for g in range(16)]
    pd.DataFrame({"image_id": ids[rows], "label": labels}).to_parquet(tmp_path / "labels.parquet")
    np.testing.assert_array_equal(anchor_labels(reader, tmp_path / "labels.parquet"), labels)


def test_fit_probes_separates_separable_features() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    feats = rng.normal(0, 0.1, (60, 5)) + np.eye(5)[labels] * 3
    split = np.where(np.arange(60) % 4 == 0, "val", "train")
    result = fit_probes(feats, labels, split)
    assert result.linear_accuracy == 1.0 and result.knn_macro_f1 == 1.0
    pooled = fit_probes(feats, labels, split, folds=5)
    assert pooled.n_val == 60 and pooled.linear_accuracy == 1.0


def test_few_label_probe_trains_on_shots_per_class_and_scores_the_rest() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.repeat([0, 1, 2], 20), [3, 3], [-1] * 5]  # class 3 too rare, 5 unknown
    feats = rng.normal(0, 0.1, (67, 5)) + np.eye(5)[labels.clip(0)] * 3
    result = few_label_scores(feats, labels, shots=4, repeats=3)
    assert (result.n_train, result.n_val, result.n_classes) == (12, 48, 3)
    assert result.linear_macro_f1 == 1.0 and result.knn_accuracy > 0.9
    noise = few_label_scores(rng.normal(size=(67, 5)), labels, shots=4, repeats=3)
    assert noise.linear_macro_f1 < 0.7  # nothing to learn: about chance
    with pytest.raises(ProbeError, match="fewer than 2 classes"):
        few_label_scores(feats, labels, shots=20)


def test_cli_train_export_probe_and_bad_input(corpus: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    config = tmp_path / "train.yaml"
    config.write_text("\n".join(f"{k}: {v}" for k, v in {**FAST, "steps": 2}.items()))
    out = runner.invoke(
        cli.train,
        [
            "--corpus",
            str(corpus),
            "--config",
            str(config),
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "trained steps 1-2" in out.output
    again = runner.invoke(
        cli.train, ["--corpus", str(corpus), "--config", str(config), "--out", str(tmp_path / "r")]
    )
    assert again.exit_code == 2 and "error:" in again.output and "already holds" in again.output
    out = runner.invoke(
        cli.export, ["--checkpoint", str(tmp_path / "r"), "--out", str(tmp_path / "e")]
    )
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli.probe, ["--encoder", str(tmp_path / "e"), "--corpus", str(corpus), "--max-image-px", "32",
                                    "--compare-random", "--json", str(tmp_path / "p.json")])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert set(json.loads((tmp_path / "p.json").read_text())) == {"encoder", "random"}
    bad = write_synthetic_corpus(tmp_path / "bad", n_groups=2, attrs_override={"format_version": 7})
    out = runner.invoke(cli.train, ["--corpus", str(bad), "--out", str(tmp_path / "x")])
    assert out.exit_code == 2 and "format_version 7" in out.output
    assert not (tmp_path / "x").exists()
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("stepz: 3\n")
    out = runner.invoke(
        cli.train, ["--corpus", str(corpus), "--config", str(bad_key), "--out", str(tmp_path / "y")]
    )
    assert out.exit_code == 2 and "unknown key 'stepz'" in out.output


def test_time_budget_stops_with_a_checkpoint_and_exports(corpus: Path, tmp_path: Path) -> None:
    result = train(corpus, _cfg(steps=50, max_minutes=1e-6), tmp_path, progress=False)
    assert result.steps == 1 and len(result.losses) == 1
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 1
    assert load_encoder(tmp_path / "encoder").args.patch_px == 4
