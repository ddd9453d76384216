"""Checkpoint files: the model weights together with the resolved `FusionConfig` that built them.

A checkpoint is a `torch.save` dict readable with `weights_only=True`:
`{"format": FORMAT, "config": FusionConfig.to_dict(), "model": state_dict, ...}`; training adds
`"optimizer"`, `"scheduler"`, `"epoch"`, `"step"` for resuming.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from avfusion.errors import FileFormatError, InputError
from avfusion.fileio import write_bytes_atomic
from avfusion.fusion.config import FUSION_STRATEGIES, FusionConfig

FORMAT = "avfusion-bevfusion-1"

# The shipped default weights (float16, the CPU preset's network) and their resolved config
# (`default.json` beside them). They were trained on a synthetic log whose seed no evaluation log
# uses; docs/training.md has the exact commands that reproduce them.
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "default.pt"


def save_checkpoint(path: str | os.PathLike[str], config: FusionConfig, state: dict[str, Any]) -> None:
    """Write `state` (at least `"model"`) with the config, atomically."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "config": config.to_dict(), **state}, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str] | None) -> tuple[FusionConfig, dict[str, Any]]:
    """Read a checkpoint (None = the shipped default weights) -> (config, the whole dict)."""
    path = DEFAULT_WEIGHTS if path is None else Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a checkpoint
        raise FileFormatError(path, f"not a readable torch checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "model" not in payload:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise FileFormatError(path, f"expected an avfusion checkpoint of format {FORMAT!r}, found {found!r}")
    check_weights_finite(path, payload["model"])
    return FusionConfig.from_dict(payload["config"], source=path), payload


def check_weights_finite(path: object, state: Any) -> None:
    """`FileFormatError` naming the first tensor of a state dict with NaN or infinite values (such
    weights detect nothing and would score mAP 0 without a word), or a state that is not a dict
    of tensors."""
    if not isinstance(state, dict):
        raise FileFormatError(path, f"'model' must be a state dict, found {type(state).__name__}")
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise FileFormatError(path, f"weight {name!r} is not a tensor ({type(tensor).__name__})")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise FileFormatError(
                path,
                f"weight {name!r} has {bad} NaN or infinite value(s) of {tensor.numel()}: refusing a diverged checkpoint",
            )


def weights_for_strategy(strategy: str, checkpoint: str | os.PathLike[str] | None) -> Path | None:
    """The weights to run for `--fusion strategy`: `checkpoint` when given and trained for that
    strategy, else the shipped weights of that strategy (`weights/<strategy>.pt`, or the default
    weights when they are that strategy's; None means the default weights). `InputError` names
    what was given and what is known when nothing fits."""
    if strategy not in FUSION_STRATEGIES:
        raise InputError(f"--fusion {strategy!r} is not one of {', '.join(FUSION_STRATEGIES)}")
    if checkpoint is not None:
        config, _ = load_checkpoint(checkpoint)
        if config.fuser.strategy != strategy:
            raise InputError(
                f"--fusion {strategy}: {checkpoint} holds weights for {config.fuser.strategy} fusion; "
                f"drop --fusion or give weights trained with --fusion {strategy}"
            )
        return Path(checkpoint)
    shipped = DEFAULT_WEIGHTS.parent / f"{strategy}.pt"
    if shipped.is_file():
        return shipped
    if load_checkpoint(None)[0].fuser.strategy == strategy:
        return None
    known = sorted(p.stem for p in DEFAULT_WEIGHTS.parent.glob("*.pt"))
    raise InputError(f"--fusion {strategy}: no shipped weights for it (shipped: {', '.join(known)})")
