"""Slow camera drift made from still frames: training clips whose motion is the sub-pixel, smoothly changing global
shift of hand-held footage.

The held-out real footage barely moves: between two frames of a test clip the view shifts by about 0.01-0.1 pixel at
64x64, smoothly (consecutive shifts agree), while the training scenes move by pixels. A model trained only on the
latter learns motion the test footage does not have (docs/results/video.md). A drift clip takes one frame of a
training window and moves a camera over it at a random speed (log-uniform up to ``max_speed`` pixels per clip frame)
and direction, both changing slowly, so that the next frame is predictable from the ones before it.

Shifts are exact sub-pixel translations in the Fourier domain (every frame equally sharp, unlike bilinear resampling,
which blurs a frame by its fractional offset) of the frame mirrored into a periodic image twice its size, so the
borders neither wrap onto the opposite side nor ring; frames are then rounded to 8-bit levels as real footage is.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MIN_SPEED = 0.005  # pixels per clip frame: slower is indistinguishable from a still scene at 8 bits


def trajectory(frames: int, max_speed: float, generator: torch.Generator) -> Tensor:
    """(frames, 2) cumulative (dy, dx) shifts in pixels, starting at 0: a velocity of log-uniform speed in
    [MIN_SPEED, max_speed] and uniform direction that turns and changes speed slowly (by up to 20% over the clip)."""
    if max_speed < MIN_SPEED:
        raise ValueError(f"max_speed must be >= {MIN_SPEED} pixels per frame, got {max_speed}")
    u = torch.rand(4, generator=generator, dtype=torch.float64)
    speed = math.exp(math.log(MIN_SPEED) + float(u[0]) * (math.log(max_speed) - math.log(MIN_SPEED)))
    angle = 2 * math.pi * float(u[1])
    start = torch.tensor([math.sin(angle), math.cos(angle)], dtype=torch.float64) * speed
    change = (u[2:] * 2 - 1) * 0.2 * speed  # the velocity's change over the whole clip
    t = torch.arange(frames - 1, dtype=torch.float64)[:, None] / max(frames - 2, 1)
    velocity = start + t * change
    return torch.cat([torch.zeros(1, 2, dtype=torch.float64), velocity.cumsum(0)])


def shift(image: Tensor, dy: float, dx: float) -> Tensor:
    """(C, H, W) float image moved by (dy, dx) pixels (content moves down/right for positive values), exactly for a
    band-limited periodic image (Fourier shift theorem)."""
    height, width = image.shape[-2:]
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(width, dtype=torch.float64)[None, :]
    phase = torch.exp(-2j * math.pi * (fy * dy + fx * dx))
    return torch.fft.ifft2(torch.fft.fft2(image.double()) * phase).real.to(image.dtype)


def drift_clip(frame: Tensor, frames: int, max_speed: float, generator: torch.Generator) -> Tensor:
    """(C, S, S) uint8 still frame -> (frames, C, S, S) uint8 clip of a camera drifting slowly over it."""
    if frame.dim() != 3 or frame.dtype != torch.uint8:
        raise ValueError(f"drift_clip needs one (C, H, W) uint8 frame, got {tuple(frame.shape)} {frame.dtype}")
    height, width = frame.shape[-2:]
    mirrored = torch.cat([frame, frame.flip(-1)], -1).float()
    mirrored = torch.cat([mirrored, mirrored.flip(-2)], -2)  # periodic and continuous at every border
    path = trajectory(frames, max_speed, generator)
    moved = [shift(mirrored, float(dy), float(dx))[:, :height, :width] for dy, dx in path]
    return torch.stack(moved).round().clamp(0, 255).to(torch.uint8)
