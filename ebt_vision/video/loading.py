"""Building and loading the video models by name: the EBT and its two trained baselines."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..core.checkpoint import CheckpointError, load_trained
from ..core.errors import UserError
from .config import VideoConfig

MODEL_KINDS = ("ebt", "transformer", "dit")  # what ``ebt-vision train`` can train for the video task


def build_video_model(kind: str, cfg: VideoConfig) -> nn.Module:
    """A fresh objective: "ebt" (``VideoObjective``), "transformer" (``PlainVideoObjective``) or "dit"
    (``VideoDiTObjective``); each trains in ``core.train.train`` on the same clip batches."""
    if kind == "ebt":
        from .objective import VideoObjective

        return VideoObjective(cfg)
    if kind == "transformer":
        from .plain import PlainVideoObjective

        return PlainVideoObjective(cfg)
    if kind == "dit":
        from .dit import VideoDiTObjective  # diffusers is imported only when a DiT is wanted

        return VideoDiTObjective(cfg)
    raise UserError(f"video model must be one of {MODEL_KINDS}, got {kind!r}")


def load_video_model(path: str | Path, kind: str = "ebt", device: str | torch.device = "cpu") -> nn.Module:
    """A trained video model (a ``.safetensors`` file with its config, or a saved model folder) in eval mode."""
    if kind not in MODEL_KINDS:
        raise UserError(f"video model must be one of {MODEL_KINDS}, got {kind!r}")

    def build(cfg) -> nn.Module:
        if not isinstance(cfg, VideoConfig):
            raise CheckpointError(f"{path} holds a {cfg.task} model, not a video model")
        return build_video_model(kind, cfg)

    return load_trained(path, build, f"a video {kind} model", device)[0]
