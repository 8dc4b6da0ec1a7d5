"""Export a trained encoder (safetensors + JSON of its arguments) and load it back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from terracorpus.training.checkpoint import load_checkpoint
from terracorpus.training.errors import CheckpointError
from terracorpus.training.model import A2MAE, ModelArgs

ENCODER_FORMAT = "terracorpus-a2mae-encoder"
WEIGHTS, META = "encoder.safetensors", "encoder.json"


def export_encoder(checkpoint: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``encoder.safetensors`` and ``encoder.json`` for a checkpoint (or a run directory,
    whose ``checkpoints/last.pt`` is used) into ``out_dir``; returns ``out_dir``."""
    src = Path(checkpoint)
    if src.is_dir():
        src = src / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(src)
    out = Path(out_dir)
    if (out / WEIGHTS).exists() and not overwrite:
        raise CheckpointError(f"{out / WEIGHTS} exists; pass --overwrite or choose another --out")
    model = A2MAE(ModelArgs(**ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in model.encoder_state_dict().items()}
    save_file(tensors, str(out / WEIGHTS))
    meta = {
        "format": ENCODER_FORMAT,
        "version": 1,
        "model_name": ckpt["model_name"],
        "model_args": ckpt["model_args"],
        "step": ckpt["step"],
        "bands": ckpt.get("bands", []),  # what it saw in pre-training (evaluate checks)
        "source_checkpoint": str(src),
    }
    (out / META).write_text(json.dumps(meta, indent=2))
    return out


def load_encoder(path: str | Path) -> A2MAE:
    """Rebuild a model from an export directory with its encoder weights (decoder untrained)."""
    meta = _read_meta(Path(path))
    try:
        model = A2MAE(ModelArgs(**meta["model_args"]))
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"{path}: the export is of another model ({meta.get('model_name')!r}, arguments "
            f"{meta.get('model_args')!r} do not build this version's A²-MAE: {e}); export it "
            "again with this version of terracorpus"
        ) from None
    weights = load_file(str(Path(path) / WEIGHTS))
    expected = set(model.encoder_state_dict())
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise CheckpointError(
            f"{path}: encoder weights do not match its model arguments (missing {missing[:5]}, unexpected {extra[:5]})"
        )
    try:
        model.load_state_dict(weights, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: encoder weights do not fit its model arguments: {e}") from e
    return model.eval()


def trained_bands(path: str | Path) -> list[tuple[float, float]]:
    """(centre wavelength, bandwidth) in µm of the bands the encoder saw in pre-training, as
    its export records them (empty for an export made before they were recorded)."""
    return [(float(w), float(b)) for w, b in _read_meta(Path(path)).get("bands", [])]


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"no exported encoder at {path} ({META} unreadable: {e}); run `terracorpus export`"
        ) from e
    if meta.get("format") != ENCODER_FORMAT:
        raise CheckpointError(f"{path / META} is not a terracorpus encoder export")
    return meta  # type: ignore[no-any-return]
