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
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from terracorpus.training.config import TrainConfig
from terracorpus.training.corpus import CorpusReader, open_corpus
from terracorpus.training.data import DataConfig, GroupBatch, make_loader
from terracorpus.training.errors import CheckpointError, RunDirError, TrainingError
from terracorpus.training.model import A2MAE, ModelArgs, model_args

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "terracorpus-a2mae-checkpoint"


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
        ckpt = _load_checkpoint(out / "checkpoints" / "last.pt", cfg) if resume else None
        if env.rank == 0:
            _prepare_out_dir(out, resume=resume, overwrite=overwrite, cfg=cfg)
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
    optimizer = _optimizer(model, cfg, env)
    start_step = 0
    if ckpt is not None:
        start_step = _restore(ckpt, model, optimizer, env)
        if env.rank == 0:
            _truncate_metrics(out / "metrics.jsonl", start_step)
    ddp = DistributedDataParallel(model) if env.world_size > 1 else None
    net: torch.nn.Module = ddp if ddp is not None else model
    loader = make_loader(
        reader, _data_config(cfg, args), batch_size=cfg.batch_size, num_workers=cfg.num_workers,
        rank=env.rank, world_size=env.world_size, skip_batches=start_step * cfg.grad_accum,
    )  # fmt: skip
    batches = iter(loader)
    end = min(until, cfg.steps)
    result = TrainResult(out, start_step, end)
    metrics = (out / "metrics.jsonl").open("a") if env.rank == 0 else None
    bar = tqdm(
        total=cfg.steps, initial=start_step, disable=not progress or env.rank != 0, desc="train"
    )
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if env.device.type == "cuda" else nullcontext()
    )
    model.train()
    started = tic = time.perf_counter()
    try:
        for step in range(start_step, end):
            lr = get_lr(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses: list[float] = []
            sensor_losses: dict[str, list[float]] = {}
            n_groups = 0
            for micro in range(cfg.grad_accum):
                batch: GroupBatch = next(batches).to(env.device)
                sync = ddp is None or micro == cfg.grad_accum - 1
                with nullcontext() if sync else ddp.no_sync(), autocast:  # type: ignore[union-attr]
                    out_ = net(batch, cfg.metadata_dropout)
                    loss = out_["loss"]
                (loss / cfg.grad_accum).backward()
                losses.append(float(loss.detach()))
                for name, value in out_["sensor_loss"].items():
                    sensor_losses.setdefault(name, []).append(float(value))
                n_groups += batch.n_groups
            step_loss = _mean_over_ranks(float(np.mean(losses)), env)
            if not math.isfinite(step_loss):
                raise TrainingError(
                    f"the loss is not finite ({step_loss}) at step {step}; lower lr (now {lr:.3g}) "
                    "or check the corpus for bad pixels; the last good checkpoint is "
                    f"{out / 'checkpoints' / 'last.pt'}"
                )
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            result.losses.append(step_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}")
            done = step + 1
            if metrics is not None and (
                done % cfg.log_every == 0 or done == end or done == start_step + 1
            ):
                record = {
                    "step": done, "lr": lr, "loss": step_loss,
                    "sensor_loss": {k: float(np.mean(v)) for k, v in sorted(sensor_losses.items())},
                    "groups_per_s": n_groups * env.world_size / max(1e-9, time.perf_counter() - tic),
                    "time": time.time(),
                }  # fmt: skip
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            tic = time.perf_counter()
            out_of_time = _out_of_time(started, cfg, env)
            if done % cfg.checkpoint_every == 0 or done == end or out_of_time:
                _save_checkpoint(out, model, optimizer, cfg, done, env)
            if out_of_time:
                log.warning("stopping at step %d: max_minutes=%s reached", done, cfg.max_minutes)
                result.steps = done
                break
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
    if env.rank == 0 and result.losses:
        from terracorpus.training.export import export_encoder

        export_encoder(out / "checkpoints" / "last.pt", out / "encoder", overwrite=True)
    return result


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
    overrides = {} if cfg.patch_px is None else {"patch_px": cfg.patch_px}
    try:
        args = model_args(cfg.model, **overrides)
    except ValueError as e:
        raise TrainingError(str(e)) from e
    if ckpt is not None and ckpt["model_args"] != asdict(args):
        raise CheckpointError(
            f"the checkpoint holds a {ckpt['model_name']!r} model ({ckpt['model_args']}), but the "
            f"config asks for {cfg.model!r} ({asdict(args)}); resume with the checkpoint's model"
        )
    return args


def _data_config(cfg: TrainConfig, args: ModelArgs) -> DataConfig:
    return DataConfig(
        patch_px=args.patch_px,
        max_image_px=cfg.max_image_px,
        mask_ratio=cfg.mask_ratio,
        mask_policy=cfg.mask_policy,
        split=cfg.split,
        shuffle=True,
        shuffle_buffer=cfg.shuffle_buffer,
        seed=cfg.seed,
    )


def _optimizer(model: A2MAE, cfg: TrainConfig, env: _Dist) -> torch.optim.AdamW:
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


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics lines of steps after ``step`` (written after the last checkpoint)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    path.write_text("".join(ln + "\n" for ln in lines if json.loads(ln)["step"] <= step))


def _rng_state() -> dict[str, Any]:
    np_state: tuple[Any, ...] = tuple(np.random.get_state(legacy=True))
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [
            str(np_state[0]),
            torch.from_numpy(np.asarray(np_state[1]).astype(np.int64)),
            *map(int, np_state[2:4]),
            float(np_state[4]),
        ],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_as_tuple(state["python"]))


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def _save_checkpoint(
    out: Path,
    model: A2MAE,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    step: int,
    env: _Dist,
) -> None:
    rng = _rng_state()
    states: list[Any] = [rng]
    if env.world_size > 1:
        states = [None] * env.world_size
        dist.all_gather_object(states, rng)
    if env.rank != 0:
        return
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "model_name": cfg.model,
        "model_args": asdict(model.args),
        "config": cfg.model_dump(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "data": {"batches_per_rank": step * cfg.grad_accum, "world_size": env.world_size},
        "rng": states,
    }
    ckpts = out / "checkpoints"
    path = ckpts / f"step-{step:08d}.pt"
    _atomic_save(ckpt, path)
    _atomic_save(ckpt, ckpts / "last.pt")
    for old in sorted(ckpts.glob("step-*.pt"))[: -cfg.keep_checkpoints]:
        old.unlink()


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first or point at a run directory")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot load checkpoint {path}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a terracorpus A²-MAE checkpoint")
    return ckpt


def _load_checkpoint(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    ckpt = load_checkpoint(path)
    changed = {
        k: (v, getattr(cfg, k))
        for k, v in ckpt["config"].items()
        if k not in ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "device")
        and getattr(cfg, k, v) != v
    }
    if changed:
        log.warning("resuming with a config that differs from the checkpoint's: %s", changed)
    return ckpt


def _restore(
    ckpt: dict[str, Any], model: A2MAE, optimizer: torch.optim.Optimizer, env: _Dist
) -> int:
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit the model: {e}") from e
    optimizer.load_state_dict(ckpt["optimizer"])
    saved_world = ckpt["data"]["world_size"]
    if saved_world != env.world_size:
        raise CheckpointError(
            f"the checkpoint was written by {saved_world} ranks, this run has {env.world_size}; "
            "resume with the same number of ranks (the data position is per rank)"
        )
    _set_rng_state(ckpt["rng"][env.rank])
    return int(ckpt["step"])
