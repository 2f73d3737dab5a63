"""Checkpoints serialized for atomic writes and loaded safely (`weights_only=True`: no pickled code
runs)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch

# Before blocks had named parts (ln_1, attn, ln_2, mlp), a parameter's name depended on the norm and
# residual switches (blocks.0.0.fn.1.qkv.weight); such checkpoints cannot be loaded into today's
# model.
OLD_BLOCK_LAYOUT = re.compile(r"blocks\.\d+\.\d+\.")


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded; the message names the file and the fix."""


def serialize(state: dict[str, Any]) -> bytes:
    """Bytes for the caller to write atomically (the run store owns where and how)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def deserialize(data: bytes) -> dict[str, Any]:
    """The state `serialize` made, on the CPU (`Trainer.restore` copies it onto the model's
    device)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise CheckpointError(
            f"checkpoint {path} is damaged or not a checkpoint ({type(e).__name__}); "
            "rerun with --force to retrain the run from scratch"
        ) from None
    if not isinstance(state, dict) or not {"model", "step"} <= state.keys():
        raise CheckpointError(f"checkpoint {path} lacks model/step entries; delete it and rerun "
                              "with --force")
    old = next((name for name in state["model"] if OLD_BLOCK_LAYOUT.match(name)), None)
    if old:
        raise CheckpointError(f"checkpoint {path} predates named block parts ({old}); retrain the "
                              "run with --force")
    return state
