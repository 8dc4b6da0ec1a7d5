"""The training config: validated once from YAML, then a frozen model flows through the trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from terracorpus.training.errors import TrainConfigError


class DataSettings(BaseModel):
    """How corpus groups become training samples: the settings a run's config and the data
    loader (:class:`~terracorpus.training.data.DataConfig`) share, declared here once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_image_px: int = Field(
        default=128, ge=1, description="longer side after area-average resizing"
    )
    mask_ratio: float = Field(default=0.75, ge=0, lt=1, description="share of tokens hidden")
    mask_policy: Literal["complementary", "consistent", "independent"] = "complementary"
    split: str | None = Field(
        default="train", description="corpus groups/split to train on (null: every group)"
    )
    shuffle_buffer: int = Field(default=64, ge=1)
    anchor_only: bool = Field(
        default=False, description="train on each group's anchor image alone (plain MAE ablation)"
    )
    seed: int = 0

    def data_settings(self) -> dict[str, Any]:
        """This record's :class:`DataSettings` fields, as keyword arguments."""
        return {name: getattr(self, name) for name in DataSettings.model_fields}


class TrainConfig(DataSettings):
    """Every setting of a pre-training run. Unknown keys are refused."""

    model: str = Field(default="tiny", description="model size: tiny, small, base, large")
    patch_px: int | None = Field(default=None, ge=1, description="override the size's patch pixels")
    steps: int = Field(
        default=1000, ge=1, description="optimizer steps in total (sets the schedule)"
    )
    max_minutes: float | None = Field(
        default=None, gt=0, description="also stop (with a checkpoint) after this wall time"
    )
    batch_size: int = Field(default=8, ge=1, description="groups per micro-batch per rank")
    grad_accum: int = Field(default=1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(default=5e-4, gt=0, description="peak learning rate")
    min_lr: float = Field(default=1e-5, ge=0, description="learning rate at the end of the cosine")
    warmup_steps: int = Field(default=100, ge=0, description="linear warm-up steps")
    weight_decay: float = Field(default=0.05, ge=0)
    beta1: float = Field(default=0.9, gt=0, lt=1)
    beta2: float = Field(default=0.95, gt=0, lt=1)
    grad_clip: float = Field(default=1.0, ge=0, description="max gradient norm; 0 disables")
    geo_encoding: bool = Field(
        default=True, description="add the lon/lat encoding to the tokens (off: ablation)"
    )
    time_encoding: bool = Field(
        default=True, description="add the day-of-year/year encoding to the tokens (off: ablation)"
    )
    pixel_target: Literal["normalised", "standardised"] = Field(
        default="normalised",
        description="what the pixel head predicts for a masked patch: its shape (each band "
        "standardised over the patch) or the standardised reflectance itself",
    )
    stats_loss_weight: float = Field(
        default=1.0,
        ge=0,
        description="weight of the masked patches' per-band mean and log std term (0: none)",
    )
    metadata_dropout: float = Field(
        default=0.1, ge=0, le=1, description="share of lon/lat and time dropped"
    )
    num_workers: int = Field(default=2, ge=0, description="DataLoader worker processes per rank")
    log_every: int = Field(default=10, ge=1, description="steps between metrics lines")
    checkpoint_every: int = Field(default=200, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(
        default=2, ge=1, description="step checkpoints kept besides last.pt"
    )
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    cpu_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch threads of the training process (default: torch's choice); a tiny "
        "model on a few cores trains fastest with 1, leaving the others to the data workers",
    )


def load_train_config(path: str | Path | None, **overrides: Any) -> TrainConfig:
    """Read and validate a YAML train config; ``overrides`` (not None) win over the file."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise TrainConfigError(f"cannot read train config {path}: {e}") from e
        if not isinstance(loaded, dict):
            raise TrainConfigError(f"train config {path} must be a mapping of settings")
        data = loaded
    data.update({k: v for k, v in overrides.items() if v is not None})
    return parse_train_config(data, source=str(path or "overrides"))


def parse_train_config(data: dict[str, Any], source: str = "config") -> TrainConfig:
    try:
        return TrainConfig(**data)
    except ValidationError as e:
        raise TrainConfigError(_describe(e, source)) from e


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(TrainConfig.model_fields))
            lines.append(f"unknown key {key!r} in {source} (allowed keys: {allowed})")
        else:
            lines.append(f"{source}: {key}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)
