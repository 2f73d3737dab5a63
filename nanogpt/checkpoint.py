"""Checkpoints serialized for atomic writes and loaded safely (`weights_only=True`: no pickled code runs)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded; the message names the file and the fix."""


def serialize(state: dict[str, Any]) -> bytes:
    """Bytes for the caller to write atomically (the run store owns where and how)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def deserialize(data: bytes) -> dict[str, Any]:
    """The state `serialize` made, on the CPU (`Trainer.restore` copies it onto the model's device)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise CheckpointError(
            f"checkpoint {path} is damaged or not a checkpoint ({type(e).__name__}); "
            "delete it to restart the run from scratch (or rerun with --force)"
        ) from None
    if not isinstance(state, dict) or not {"model", "step"} <= state.keys():
        raise CheckpointError(f"checkpoint {path} lacks model/step entries; delete it and rerun with --force")
    return state
