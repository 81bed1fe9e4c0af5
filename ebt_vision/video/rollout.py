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


@dataclass(frozen=True)
class Reference:
    """The frame each next frame is measured from: ``f_t + a_t * (f_t - f_{t-1})``. ``gain`` 0: the frame itself, as
    copying the last frame predicts. ``adaptive``: ``a_t = gain * clamp(<d_t, d_{t-1}> / |d_{t-1}|^2, 0, 1)`` with
    ``d_t = f_t - f_{t-1}``, over the whole frame: the least-squares gain of a frame's change on the change before it,
    so a steady drift continues and an erratic change (a cut, a shaking camera) is not extrapolated; a frame without
    two changes before it is copied."""

    gain: float = 0.0
    adaptive: bool = False

    @classmethod
    def of(cls, prediction) -> Reference:
        """A video config's ``prediction`` section -> its reference (``extrapolate``, ``extrapolate_adaptive``)."""
        return cls(prediction.extrapolate, prediction.extrapolate_adaptive)

    def __call__(self, frames: Tensor) -> Tensor:
        """(B, T, ...) frames (or their patches) -> (B, T, ...): the reference for each one's successor, clamped to
        [-1, 1] (the first frame, which has no predecessor: itself)."""
        if self.gain == 0:
            return frames
        previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        change = frames - previous
        if not self.adaptive:
            return (frames + self.gain * change).clamp(-1, 1)
        flat = change.flatten(2)
        before = torch.cat([torch.zeros_like(flat[:, :1]), flat[:, :-1]], dim=1)  # d_{t-1}; none for t = 0
        fit = (flat * before).sum(-1) / (before * before).sum(-1).clamp_min(1e-12)  # (B, T)
        gains = self.gain * fit.clamp(0, 1)
        return (frames + gains.reshape(*gains.shape, *([1] * (frames.dim() - 2))) * change).clamp(-1, 1)


LAST_FRAME = Reference()  # copy the last frame: the default reference


def extrapolate_frames(context: Tensor, horizon: int, gain: float, adaptive: bool = False) -> Rollout:
    """(B, T, C, H, W) -> each next frame continues the last change, ``last + gain * (last - previous)`` (with
    ``adaptive``, the gain scaled by how well the change before predicted the last one: ``Reference``), clamped to
    [-1, 1] and rolled out on its own predictions (no network). A classical baseline: for the sub-pixel drift of
    hand-held footage, a pixel's change is nearly the same from one frame to the next. One context frame: copy it."""
    check_context(context, horizon)
    if not 0.0 <= gain <= 2.0:
        raise InputError(f"the extrapolation gain must be in [0, 2], got {gain}")
    reference, frames = Reference(gain, adaptive), context[:, -3:]
    for _ in range(horizon):
        frames = torch.cat([frames, reference(frames[:, -3:])[:, -1:]], dim=1)
    return Rollout(frames[:, min(context.shape[1], 3) :].clone(), 0, 0)
