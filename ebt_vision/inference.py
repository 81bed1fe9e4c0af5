"""Denoising with a trained image EBT: load a checkpoint, validate input, descend (tiled for big photos)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint import CheckpointError, read_weights
from .descent import Trajectory, minimize_energy
from .objectives import DenoisingObjective
from .tiling import TiledEnergy

MAX_STEPS = 64


def load_denoiser(path: str | Path, device: str | torch.device = "cpu") -> DenoisingObjective:
    """A trained ``DenoisingObjective`` (image EBT + learned step size) in eval mode."""
    tensors, cfg, _ = read_weights(path)
    objective = DenoisingObjective(cfg)
    try:
        objective.load_state_dict(tensors)
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit an image EBT denoiser: {error}") from None
    return objective.to(device).eval()


def check_images(images: Tensor, patch_size: int) -> None:
    """Clear errors for inputs a denoiser cannot take: (B, 3, H, W), finite, H and W multiples of the patch."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if min(images.shape[2:]) < patch_size:
        raise ValueError(f"image {images.shape[2]}x{images.shape[3]} is smaller than one {patch_size}px patch")
    if not torch.isfinite(images).all():
        raise ValueError("the image contains NaN or infinite values")


def crop_to_patches(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, C, H', W') cropped to multiples of the patch size (at most p - 1 pixels lost per side)."""
    height, width = images.shape[2] - images.shape[2] % patch_size, images.shape[3] - images.shape[3] % patch_size
    return images[:, :, :height, :width]


def denoise(
    objective: DenoisingObjective,
    noisy: Tensor,
    num_steps: int | None = None,
    step_scale: float = 1.0,
    stop_when_energy_rises: bool | None = None,
    langevin_noise: float | None = None,
    final_energy: bool = True,
) -> tuple[Trajectory, TiledEnergy]:
    """(B, 3, H, W) noisy in [-1, 1] -> the descent trajectory from the noisy image (tiled at the training crop size).

    ``candidates[k]`` is the estimate after k steps; clamp to [-1, 1] before saving. ``step_scale`` multiplies the
    learned step size. Returns the tiled energy too, for per-patch energy maps.
    """
    cfg = objective.cfg
    check_images(noisy, cfg.model.patch_size)
    steps = cfg.descent.num_steps if num_steps is None else num_steps
    if not 0 <= steps <= MAX_STEPS:
        raise ValueError(f"num_steps must be in [0, {MAX_STEPS}], got {steps}")
    if not step_scale > 0:
        raise ValueError(f"step_scale must be > 0, got {step_scale}")
    descent = cfg.descent
    if stop_when_energy_rises is not None:
        descent = replace(descent, stop_when_energy_rises=stop_when_energy_rises)
    energy = TiledEnergy(objective.model, cfg.data.crop_size)
    device = next(objective.parameters()).device
    with torch.no_grad():
        step_size = objective.step_size() * step_scale
    trajectory = minimize_energy(
        energy,
        noisy.to(device),
        noisy.to(device),
        descent,
        step_size,
        num_steps=steps,
        final_energy=final_energy,
        langevin_noise=langevin_noise,
    )
    return trajectory, energy
