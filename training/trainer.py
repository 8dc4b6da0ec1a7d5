"""Pre-train A²-MAE on a corpus: one plain loop, readable top to bottom.

``train()`` opens the corpus, builds (or restores) model and optimizer, then for every step:
set the learning rate (``get_lr``: linear warm-up, cosine decay), run ``grad_accum``
micro-batches forward and backward (bf16 autocast on CUDA), stop if the loss is not finite,
clip gradients, step, log a metrics line, and every ``checkpoint_every`` steps write a
checkpoint that holds everything needed to continue exactly: model arguments, full config,
model and optimizer state, step, RNG states of every rank and the data position.

Several GPUs or nodes: launch with ``torchrun``; each rank reads its own share of the corpus
blocks (see :mod:`terracorpus.training.data`) and DDP averages the gradients.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from terracorpus.training.checkpoint import (
    load_checkpoint,
    load_for_resume,
    restore,
    save_checkpoint,
)
from terracorpus.training.config import TrainConfig
from terracorpus.training.corpus import CorpusReader, open_corpus
from terracorpus.training.data import DataConfig, GroupBatch, make_loader
from terracorpus.training.errors import CheckpointError, RunDirError, TrainingError
from terracorpus.training.export import export_encoder
from terracorpus.training.model import A2MAE, ModelArgs, model_args

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "get_lr", "load_checkpoint", "train"]  # load_checkpoint: checkpoint.py


@dataclass
class TrainResult:
    """What a run did: where it wrote, the steps it ran, the loss of each step it ran."""

    out_dir: Path
    start_step: int
    steps: int
    losses: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class _Dist:
    rank: int
    world_size: int
    device: torch.device


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to ``min_lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def train(
    corpus: str | Path,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    until: int | None = None,
) -> TrainResult:
    """Pre-train (or continue with ``resume``) and return what was run.

    ``until`` stops after that step (with a checkpoint) while the schedule still runs to
    ``cfg.steps``; a later ``resume`` continues as if the run had never stopped.

    Raises:
        RunDirError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite`` is set.
        CheckpointError: the checkpoint to resume is missing or of another model size.
        CorpusFormatError, CorpusReadError: the corpus cannot be read.
    """
    out = Path(out_dir)
    env = _setup_distributed(cfg)
    try:
        reader = open_corpus(corpus)
        ckpt = load_for_resume(out / "checkpoints" / "last.pt", cfg) if resume else None
        if resume:
            _check_same_corpus(out, reader)
        if env.rank == 0:
            _prepare_out_dir(out, resume=resume, overwrite=overwrite, cfg=cfg)
            _record_corpus(out, reader)
        _barrier(env)
        return _run(reader, cfg, out, env, ckpt, progress, until or cfg.steps)
    finally:
        if env.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _run(
    reader: CorpusReader,
    cfg: TrainConfig,
    out: Path,
    env: _Dist,
    ckpt: dict[str, Any] | None,
    progress: bool,
    until: int,
) -> TrainResult:
    args = _model_args(cfg, ckpt)
    _seed_everything(cfg.seed + env.rank)
    if cfg.cpu_threads is not None:
        torch.set_num_threads(cfg.cpu_threads)
    model = A2MAE(args).to(env.device)
    optimizer = _optimizer(model, cfg)
    start_step = _resume(ckpt, model, optimizer, out, env)
    net: torch.nn.Module = DistributedDataParallel(model) if env.world_size > 1 else model
    data = DataConfig(patch_px=args.patch_px, **cfg.data_settings())
    batches = iter(make_loader(
        reader, data, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
        rank=env.rank, world_size=env.world_size, skip_batches=start_step * cfg.grad_accum,
    ))  # fmt: skip
    end = min(until, cfg.steps)
    result = TrainResult(out, start_step, end)
    model.train()
    started = time.perf_counter()
    with _Progress(out, cfg, env, start_step, end, progress) as report:
        for step in range(start_step, end):
            lr = _set_lr(optimizer, get_lr(step, cfg))
            stats = _forward_backward(net, batches, cfg, env)
            loss = _mean_over_ranks(stats.loss, env)
            _stop_unless_finite(loss, step, lr, out)
            _optimizer_step(model, optimizer, cfg)
            result.losses.append(loss)
            done = step + 1
            report.step(done, lr, loss, stats)
            out_of_time = _out_of_time(started, cfg, env)
            if done % cfg.checkpoint_every == 0 or done == end or out_of_time:
                save_checkpoint(
                    out, model, optimizer, cfg, done, rank=env.rank, world_size=env.world_size,
                    bands=corpus_bands(reader),
                )  # fmt: skip
            if out_of_time:
                log.warning("stopping at step %d: max_minutes=%s reached", done, cfg.max_minutes)
                result.steps = done
                break
    if env.rank == 0 and result.losses:
        export_encoder(out / "checkpoints" / "last.pt", out / "encoder", overwrite=True)
    return result


def _resume(
    ckpt: dict[str, Any] | None,
    model: A2MAE,
    optimizer: torch.optim.Optimizer,
    out: Path,
    env: _Dist,
) -> int:
    """The step to start at: 0, or the checkpoint's (its state restored, later metrics cut)."""
    if ckpt is None:
        return 0
    step = restore(ckpt, model, optimizer, rank=env.rank, world_size=env.world_size)
    if env.rank == 0:
        _truncate_metrics(out / "metrics.jsonl", step)
    return step


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


@dataclass
class _StepStats:
    """The losses of one step's micro-batches (per micro-batch) and the groups they held."""

    losses: list[float] = field(default_factory=list)
    sensor_losses: dict[str, list[float]] = field(default_factory=dict)
    n_groups: int = 0

    @property
    def loss(self) -> float:
        return float(np.mean(self.losses))

    def add(self, out: dict[str, Any], n_groups: int) -> None:
        self.losses.append(float(out["loss"].detach()))
        for name, value in out["sensor_loss"].items():
            self.sensor_losses.setdefault(name, []).append(float(value))
        self.n_groups += n_groups


def _forward_backward(
    net: torch.nn.Module, batches: Iterator[GroupBatch], cfg: TrainConfig, env: _Dist
) -> _StepStats:
    """``grad_accum`` micro-batches forward and backward; DDP syncs on the last one only."""
    stats = _StepStats()
    for micro in range(cfg.grad_accum):
        batch = next(batches).to(env.device)
        with _grad_sync(net, last=micro == cfg.grad_accum - 1), _autocast(env.device):
            out = net(batch, cfg.metadata_dropout)
        (out["loss"] / cfg.grad_accum).backward()
        stats.add(out, batch.n_groups)
    return stats


def _grad_sync(net: torch.nn.Module, *, last: bool) -> AbstractContextManager[Any]:
    """DDP averages gradients on a step's last micro-batch only (``no_sync`` before it)."""
    if isinstance(net, DistributedDataParallel) and not last:
        return net.no_sync()
    return nullcontext()


def _autocast(device: torch.device) -> AbstractContextManager[Any]:
    """bf16 autocast on CUDA; nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _stop_unless_finite(loss: float, step: int, lr: float, out: Path) -> None:
    if not math.isfinite(loss):
        raise TrainingError(
            f"the loss is not finite ({loss}) at step {step}; lower lr (now {lr:.3g}) "
            "or check the corpus for bad pixels; the last good checkpoint is "
            f"{out / 'checkpoints' / 'last.pt'}"
        )


def _optimizer_step(model: A2MAE, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> None:
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class _Progress:
    """The progress bar, and the metrics log (``metrics.jsonl``, rank 0 only)."""

    def __init__(
        self, out: Path, cfg: TrainConfig, env: _Dist, start_step: int, end: int, show: bool
    ) -> None:
        self.cfg, self.world_size, self.first, self.end = cfg, env.world_size, start_step, end
        self.metrics = (out / "metrics.jsonl").open("a") if env.rank == 0 else None
        self.bar = tqdm(
            total=cfg.steps, initial=start_step, disable=not show or env.rank != 0, desc="train"
        )
        self.tic = time.perf_counter()

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
        if self.metrics is not None:
            self.metrics.close()

    def step(self, done: int, lr: float, loss: float, stats: _StepStats) -> None:
        """Report step ``done``; a metrics line every ``log_every`` steps, first and last."""
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}")
        due = done % self.cfg.log_every == 0 or done in (self.end, self.first + 1)
        if self.metrics is not None and due:
            record = {
                "step": done, "lr": lr, "loss": loss,
                "sensor_loss": {k: float(np.mean(v)) for k, v in sorted(stats.sensor_losses.items())},
                "groups_per_s": stats.n_groups * self.world_size
                / max(1e-9, time.perf_counter() - self.tic),
                "time": time.time(),
            }  # fmt: skip
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()
        self.tic = time.perf_counter()


def _out_of_time(started: float, cfg: TrainConfig, env: _Dist) -> bool:
    """Whether ``max_minutes`` has passed; rank 0 decides for every rank."""
    if cfg.max_minutes is None:
        return False
    late = time.perf_counter() - started > cfg.max_minutes * 60
    if env.world_size == 1:
        return late
    flag = torch.tensor([float(late)], device=env.device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _setup_distributed(cfg: TrainConfig) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(rank, world, device)


def _barrier(env: _Dist) -> None:
    if env.world_size > 1:
        dist.barrier()


def _mean_over_ranks(value: float, env: _Dist) -> float:
    if env.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return float(t.item()) / env.world_size


def _model_args(cfg: TrainConfig, ckpt: dict[str, Any] | None) -> ModelArgs:
    overrides: dict[str, Any] = {} if cfg.patch_px is None else {"patch_px": cfg.patch_px}
    if not cfg.geo_encoding:
        overrides["geo_encoding"] = False
    if not cfg.time_encoding:
        overrides["time_encoding"] = False
    overrides["pixel_target"] = cfg.pixel_target
    overrides["stats_loss_weight"] = cfg.stats_loss_weight
    args = model_args(cfg.model, **overrides)
    # a checkpoint made before a model argument existed holds that argument's default
    if ckpt is not None and {**asdict(ModelArgs()), **ckpt["model_args"]} != asdict(args):
        raise CheckpointError(
            f"the checkpoint holds a {ckpt['model_name']!r} model ({ckpt['model_args']}), but the "
            f"config asks for {cfg.model!r} ({asdict(args)}); resume with the checkpoint's model"
        )
    return args


def _optimizer(model: A2MAE, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms and learned tokens (every parameter of < 2 dims)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _prepare_out_dir(out: Path, *, resume: bool, overwrite: bool, cfg: TrainConfig) -> None:
    ckpts = out / "checkpoints"
    has_run = (ckpts.is_dir() and any(ckpts.iterdir())) or (out / "metrics.jsonl").exists()
    if has_run and not (resume or overwrite):
        raise RunDirError(
            f"{out} already holds a training run; pass --resume to continue it or --overwrite "
            "to replace it, or choose another --out"
        )
    if overwrite and not resume:
        shutil.rmtree(ckpts, ignore_errors=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    ckpts.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=True))


CORPUS_FILE = "corpus.json"


def _corpus_identity(reader: CorpusReader) -> dict[str, Any]:
    """What makes a corpus this corpus, wherever it is copied to: how it was made and what it
    holds (the root attributes' config hash, creation time and counts)."""
    a = reader.attrs
    return {
        "config_hash": a.get("config_hash"),
        "created": a.get("created"),
        "counts": a.get("counts"),
    }


def _record_corpus(out: Path, reader: CorpusReader) -> None:
    (out / CORPUS_FILE).write_text(
        json.dumps({"path": reader.path, **_corpus_identity(reader)}, indent=2, sort_keys=True)
    )


def _check_same_corpus(out: Path, reader: CorpusReader) -> None:
    """Refuse to resume a run on another corpus than the one it was trained on."""
    path = out / CORPUS_FILE
    if not path.exists():
        log.warning(
            "%s records no corpus (an older run): resuming on %s unchecked", out, reader.path
        )
        return
    recorded = json.loads(path.read_text())
    if {k: recorded.get(k) for k in _corpus_identity(reader)} != _corpus_identity(reader):
        raise RunDirError(
            f"the run in {out} was trained on the corpus at {recorded.get('path')} (created "
            f"{recorded.get('created')}, {recorded.get('counts')}); {reader.path} is another "
            "corpus (created "
            f"{reader.attrs.get('created')}, {reader.attrs.get('counts')}). Resume with the "
            "run's own corpus, or start a new run (another --out, or --overwrite)"
        )


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics lines of steps after ``step`` (written after the last checkpoint)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    path.write_text("".join(ln + "\n" for ln in lines if json.loads(ln)["step"] <= step))


def corpus_bands(reader: CorpusReader) -> list[list[float]]:
    """(centre wavelength, bandwidth) in µm of every band of the corpus, once each."""
    pairs = {
        (round(float(w), 4), round(float(b), 4))
        for info in reader.sensors.values()
        for w, b in zip(info.wavelengths, info.bandwidths, strict=True)
    }
    return [list(p) for p in sorted(pairs)]
