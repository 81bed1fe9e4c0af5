"""Building and loading the video models by name: the EBT and its two trained baselines."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..core import defaults
from ..core.checkpoint import CheckpointError, load_trained
from ..core.errors import UserError
from ..core.paths import PROJECT_ROOT
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


def default_video_checkpoint(root: str | Path = PROJECT_ROOT) -> tuple[Path, str]:
    """The video EBT for a user's real clips: the shipped real-footage model (``defaults.VIDEO_REAL_EBT``) when it is
    in the checkout ``root``, else the Moving MNIST one (``defaults.VIDEO_EBT``) -> (path, a note saying which)."""
    real, digits = Path(root) / defaults.VIDEO_REAL_EBT, Path(root) / defaults.VIDEO_EBT
    if (real / "model.safetensors").is_file():
        return real, f"the real-footage video EBT ({defaults.VIDEO_REAL_EBT})"
    return digits, (
        f"the Moving MNIST video EBT ({defaults.VIDEO_EBT}): no real-footage model is shipped "
        f"({defaults.VIDEO_REAL_EBT}), so real clips meet a model of bouncing digits"
    )


# Beside a video model's weights: the steps per frame chosen on validation clips (an EBT's descent steps, a DiT's DDIM
# steps); ``ebt-vision predict`` and the app's video tab start from them.
STEPS_FILE = "chosen_steps.json"


def write_chosen_steps(folder: str | Path, steps: int, chosen_on: str) -> Path:
    """Record in a video model's folder the steps per frame chosen on validation clips (``chosen_on`` says where):
    ``ebt-vision predict`` uses them when ``--steps`` is not given, the app's sliders start there."""
    if not 1 <= steps <= defaults.MAX_STEPS:
        raise UserError(f"steps must be in [1, {defaults.MAX_STEPS}], got {steps}")
    path = Path(folder) / STEPS_FILE
    path.write_text(json.dumps({"steps": int(steps), "chosen_on": chosen_on}, indent=2) + "\n")
    return path


def chosen_steps(checkpoint: str | Path) -> tuple[int, str] | None:
    """The validation-chosen steps per frame of the video model at ``checkpoint`` (its folder, or a file in it) ->
    (steps, where they were chosen), or None when none were recorded; a damaged record is an error."""
    checkpoint = Path(checkpoint)
    path = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / STEPS_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        steps = record["steps"]
        if not isinstance(steps, int) or not 1 <= steps <= defaults.MAX_STEPS:
            raise ValueError(f"steps {steps!r} is not in [1, {defaults.MAX_STEPS}]")
        return steps, str(record.get("chosen_on", ""))
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path} is damaged ({error}); delete it to use the configured step count") from error
