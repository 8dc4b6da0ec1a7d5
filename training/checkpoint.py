"""Checkpoints: one plain dict per file, everything needed to continue a run exactly.

A checkpoint holds the model arguments and name, the full training config, model and
optimizer state, the step, the data position and the RNG states of every rank (nanoGPT's
plain checkpoint dict, with the RNG added so a resumed run draws what an unbroken one would).
Files are written atomically (a temporary file, then a rename); loading is
``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from terracorpus.training.config import TrainConfig
from terracorpus.training.errors import CheckpointError
from terracorpus.training.model import A2MAE

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "terracorpus-a2mae-checkpoint"
# Settings a resumed run may change without a warning: they do not change what it learns.
_RESUMABLE_CHANGES = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "device")


def save_checkpoint(
    out: Path,
    model: A2MAE,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    step: int,
    *,
    rank: int,
    world_size: int,
    bands: list[list[float]] | None = None,
) -> None:
    """Write ``checkpoints/step-N.pt`` and ``last.pt`` under ``out`` (rank 0 writes; every
    rank must call, for its RNG state), keeping the newest ``cfg.keep_checkpoints``.
    ``bands``: (centre wavelength, bandwidth) of every band the corpus holds, for the export."""
    rng = _rng_state()
    states: list[Any] = [rng]
    if world_size > 1:
        states = [None] * world_size
        dist.all_gather_object(states, rng)
    if rank != 0:
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
        "data": {"batches_per_rank": step * cfg.grad_accum, "world_size": world_size},
        "rng": states,
        "bands": bands or [],
    }
    ckpts = out / "checkpoints"
    _atomic_save(ckpt, ckpts / f"step-{step:08d}.pt")
    _atomic_save(ckpt, ckpts / "last.pt")
    for old in sorted(ckpts.glob("step-*.pt"))[: -cfg.keep_checkpoints]:
        old.unlink()


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


def load_for_resume(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    """The checkpoint to resume; warns about config changes that alter what the run learns."""
    ckpt = load_checkpoint(path)
    changed = {
        k: (v, getattr(cfg, k))
        for k, v in ckpt["config"].items()
        if k not in _RESUMABLE_CHANGES and getattr(cfg, k, v) != v
    }
    if changed:
        log.warning("resuming with a config that differs from the checkpoint's: %s", changed)
    return ckpt


def restore(
    ckpt: dict[str, Any],
    model: A2MAE,
    optimizer: torch.optim.Optimizer,
    *,
    rank: int,
    world_size: int,
) -> int:
    """Load model, optimizer and this rank's RNG state from ``ckpt``; returns its step."""
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit the model: {e}") from e
    optimizer.load_state_dict(ckpt["optimizer"])
    saved_world = ckpt["data"]["world_size"]
    if saved_world != world_size:
        raise CheckpointError(
            f"the checkpoint was written by {saved_world} ranks, this run has {world_size}; "
            "resume with the same number of ranks (the data position is per rank)"
        )
    _set_rng_state(ckpt["rng"][rank])
    return int(ckpt["step"])


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
