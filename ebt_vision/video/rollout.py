"""What every next-frame predictor returns when it rolls out a clip, and the copy-last-frame reference.

A rollout takes the real context frames and predicts ``horizon`` frames autoregressively: each predicted frame is
appended to the context the next prediction sees. Costs are counted per predicted frame of one clip, in passes
through the method's network (an EBT descent step is one forward and one backward pass to the candidate).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.defaults import MAX_HORIZON
from ..core.errors import InputError


@dataclass
class Rollout:
    predictions: Tensor  # (B, horizon, C, H, W) in [-1, 1]
    forward_passes: int  # per predicted frame of one clip
    backward_passes: int  # per predicted frame of one clip (an EBT's gradients to the candidate)
    energies: Tensor | None = None  # (B, horizon): an EBT's energy of each predicted frame (lower = more confident)
    energy_maps: Tensor | None = None  # (B, horizon, H/p, W/p): the same per patch
    steps: Tensor | None = None  # (B, horizon, S + 1, C, H, W): an EBT's candidates after each descent step


def check_context(context: Tensor, horizon: int, channels: int | None = None) -> None:
    """Clear errors for rollout inputs: (B, T, C, H, W) finite frames with ``channels`` channels (any when None),
    1 <= horizon <= MAX_HORIZON."""
    if context.dim() != 5:
        raise InputError(f"expected context frames of shape (B, T, C, H, W), got {tuple(context.shape)}")
    if channels is not None and context.shape[2] != channels:
        raise InputError(f"the model takes {channels}-channel frames, got {context.shape[2]} channels")
    if context.shape[1] < 1:
        raise InputError("the context needs at least one frame")
    if not 1 <= horizon <= MAX_HORIZON:
        raise InputError(f"horizon must be in [1, {MAX_HORIZON}], got {horizon}")
    if not torch.isfinite(context).all():
        raise InputError("the context frames contain NaN or infinite values")


def copy_last_frame(context: Tensor, horizon: int) -> Rollout:
    """(B, T, C, H, W) -> every predicted frame is the last context frame (no network, no passes)."""
    check_context(context, horizon)
    return Rollout(context[:, -1:].expand(-1, horizon, -1, -1, -1).clone(), 0, 0)


def extrapolate_frames(context: Tensor, horizon: int, gain: float) -> Rollout:
    """(B, T, C, H, W) -> each next frame continues the last change, ``last + gain * (last - previous)``, clamped to
    [-1, 1] and rolled out on its own predictions (no network). A classical baseline: for the sub-pixel drift of
    hand-held footage, a pixel's change is nearly the same from one frame to the next. One context frame: copy it."""
    check_context(context, horizon)
    if not 0.0 <= gain <= 2.0:
        raise InputError(f"the extrapolation gain must be in [0, 2], got {gain}")
    previous, last = context[:, -2 if context.shape[1] > 1 else -1], context[:, -1]
    frames = []
    for _ in range(horizon):
        previous, last = last, (last + gain * (last - previous)).clamp(-1, 1)
        frames.append(last)
    return Rollout(torch.stack(frames, dim=1), 0, 0)


def reference_frames(frames: Tensor, gain: float) -> Tensor:
    """(B, T, ...) frames (or their patches) -> (B, T, ...) the frame each one's successor is measured from:
    ``f_t + gain * (f_t - f_{t-1})`` (the first frame has no predecessor: itself), clamped to [-1, 1]. Gain 0: the
    frame itself, as copying the last frame predicts."""
    if gain == 0:
        return frames
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    return (frames + gain * (frames - previous)).clamp(-1, 1)
