"""Denoising with a trained image EBT: load a checkpoint, validate input, descend (tiled for big photos)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..core.checkpoint import load_trained
from ..core.descent import Trajectory, expand_to_candidate, lowest_energy, minimize_energy
from ..core.errors import InputError
from ..core.objective import clamp_unit_range
from .noise import training_sigma_max
from .objective import DenoisingObjective
from .tiling import TiledEnergy

MAX_STEPS = 64


def load_denoiser(path: str | Path, device: str | torch.device = "cpu") -> DenoisingObjective:
    """A trained ``DenoisingObjective`` (image EBT + learned step size) in eval mode."""
    return load_trained(path, DenoisingObjective, "an image EBT denoiser", device)[0]


def check_images(images: Tensor, patch_size: int) -> None:
    """Clear errors for inputs a denoiser cannot take: (B, 3, H, W), finite, at least one patch."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"expected RGB images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if min(images.shape[2:]) < patch_size:
        raise InputError(f"image {images.shape[2]}x{images.shape[3]} is smaller than one {patch_size}px patch")
    if not torch.isfinite(images).all():
        raise InputError("the image contains NaN or infinite values")


def crop_to_patches(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, C, H', W') cropped to multiples of the patch size (at most p - 1 pixels lost per side)."""
    height, width = images.shape[2] - images.shape[2] % patch_size, images.shape[3] - images.shape[3] % patch_size
    return images[:, :, :height, :width]


def patch_expander(patch: int):
    """Per-patch values (B, H/p, W/p) -> (B, 1, H, W): how an image EBT's per-patch energies map onto its candidate
    (for stopping patch by patch)."""

    def expand(values: Tensor, candidate: Tensor) -> Tensor:
        return values.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)[:, None]

    return expand


def _check_sigma(sigma: Tensor | float | None, batch: int) -> Tensor | None:
    if sigma is None:  # the model itself refuses sigma when blind and requires it when conditioned
        return None
    sigma = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1)
    if sigma.numel() not in (1, batch) or not torch.isfinite(sigma).all() or (sigma < 0).any():
        raise InputError(f"sigma must be one finite value >= 0 or one per image, got {sigma.tolist()}")
    return sigma


def denoise(
    objective: DenoisingObjective,
    noisy: Tensor,
    num_steps: int | None = None,
    step_scale: float = 1.0,
    stop_when_energy_rises: bool = False,
    langevin_noise: float = 0.0,
    final_energy: bool = True,
    sigma: Tensor | float | None = None,
    init: Tensor | None = None,
    clamp: bool | None = None,
    record_maps: bool = False,
    tile_overlap: int = 2,
    per_patch: bool = False,
    stop_tolerance: float = 0.0,
    clamp_sigma: bool = True,
    momentum: float = 0.0,
    stop_step_below: float = 0.0,
) -> tuple[Trajectory, TiledEnergy]:
    """(B, 3, H, W) noisy in [-1, 1] -> the descent trajectory from the noisy image (tiled at the training crop size).

    ``candidates[k]`` is the estimate after k steps; clamp to [-1, 1] before saving. ``step_scale`` multiplies the
    learned step size. ``stop_when_energy_rises`` undoes a step that raised an image's energy and stops that image.
    ``langevin_noise`` adds noise after each step (off by default at inference, whatever the training config used).
    ``sigma`` (0-255, per image or one for all) is required by sigma-conditioned models and refused by blind ones;
    with ``clamp_sigma`` it is clamped to the highest sigma the model trained on (told an unseen level, a conditioned
    model collapses; told the nearest level it knows, it under-corrects and more descent steps can do the rest).
    ``init`` starts the descent elsewhere than at the noisy image. ``clamp`` projects every step onto [-1, 1]
    (default: as the model was trained, ``descent.clamp_candidate``). Returns the tiled energy too, for per-patch
    energy maps; with ``record_maps`` it holds the map of every candidate the descent evaluated (``energy.maps``).
    ``tile_overlap``: 2 (half-overlapping tiles, every pixel in 4) or 1 (side by side, 4x cheaper; see ``tiling``).
    ``per_patch``: descend the per-patch energies (each patch's energy averaged over the tiles that cover it) so
    stopping works patch by patch: with ``stop_when_energy_rises`` and ``stop_tolerance``, a patch whose energy has
    stopped falling stops while the others continue (``trajectory.steps_taken`` is then a (B, H/p, W/p) map).
    ``momentum``: Nesterov-accelerated descent; ``stop_step_below``: an image stops once its step would move its
    pixels by less than this (root mean square, [-1, 1] units); see ``minimize_energy``.
    """
    cfg = objective.cfg
    check_images(noisy, cfg.model.patch_size)
    if init is not None and init.shape != noisy.shape:
        raise InputError(f"init {tuple(init.shape)} must have the noisy image's shape {tuple(noisy.shape)}")
    steps = cfg.descent.num_steps if num_steps is None else num_steps
    if not 0 <= steps <= MAX_STEPS:
        raise InputError(f"num_steps must be in [0, {MAX_STEPS}], got {steps}")
    if not step_scale > 0:
        raise InputError(f"step_scale must be > 0, got {step_scale}")
    clamp = cfg.descent.clamp_candidate if clamp is None else clamp
    sigma = _check_sigma(sigma, noisy.shape[0])
    if sigma is not None and clamp_sigma:
        sigma = sigma.clamp(max=training_sigma_max(cfg.data))
    energy = TiledEnergy(
        objective.model, cfg.data.crop_size, sigma=sigma, record_maps=record_maps, overlap=tile_overlap
    )
    device = next(objective.parameters()).device
    with torch.no_grad():
        step_size = objective.step_size() * step_scale
    trajectory = minimize_energy(
        energy.patch_energy_map if per_patch else energy,
        noisy.to(device),
        (noisy if init is None else init).to(device),
        step_size,
        steps,
        stop_when_energy_rises=stop_when_energy_rises,
        stop_tolerance=stop_tolerance,
        stop_step_below=stop_step_below,
        momentum=momentum,
        expand_positions=patch_expander(cfg.model.patch_size) if per_patch else expand_to_candidate,
        final_energy=final_energy,
        langevin_noise=langevin_noise,
        project=clamp_unit_range if clamp else None,
    )
    return trajectory, energy


def adaptive_tolerance(reference: Trajectory, fraction: float) -> float:
    """The stop tolerance of adaptive per-patch descent: ``fraction`` times the median first-step energy drop per
    patch of ``reference``, a per-patch descent (``per_patch=True``) of the same image with at least one step."""
    first_drop = float((reference.position_energies[0] - reference.position_energies[1]).median())
    return fraction * abs(first_drop)


@dataclass
class BestOfN:
    """What ``best_of_n`` found: the lowest-energy estimates, every start's final energy, the descent of all starts."""

    best: Tensor  # (B, C, H, W)
    final_energies: Tensor  # (N, B)
    trajectory: Trajectory  # of all N x B descents; pass counts are per run of that batch (per image: N x them)
    energy: TiledEnergy  # the energy the descent used (with its recorded maps, when asked for)


def best_of_n(
    objective: DenoisingObjective,
    noisy: Tensor,
    n: int,
    num_steps: int | None = None,
    start_noise: float = 10.0,
    sigma: Tensor | float | None = None,
    seed: int = 0,
    step_scale: float = 1.0,
    record_maps: bool = False,
    tile_overlap: int = 2,
) -> BestOfN:
    """Best-of-N: N descents per image, the first from the noisy image and N - 1 from it plus Gaussian noise of
    ``start_noise`` (0-255 sigma); keep the one with the lowest final energy."""
    if not 1 <= n <= MAX_STEPS:
        raise InputError(f"best-of-N needs n in [1, {MAX_STEPS}], got {n}")
    batch = noisy.shape[0]
    generator = torch.Generator().manual_seed(seed)
    starts = noisy.repeat(n, 1, 1, 1)
    perturbation = torch.randn(starts.shape, generator=generator) * (start_noise * 2.0 / 255.0)
    perturbation[:batch] = 0
    sigmas = None
    if sigma is not None:
        sigmas = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).expand(batch).repeat(n)
    trajectory, energy = denoise(objective, starts, num_steps, step_scale, final_energy=True, sigma=sigmas,
                                 init=starts + perturbation.to(starts), record_maps=record_maps,
                                 tile_overlap=tile_overlap)  # fmt: skip
    energies = trajectory.energies[-1].reshape(n, batch)
    finals = trajectory.final.reshape(n, batch, *noisy.shape[1:])
    return BestOfN(lowest_energy(finals, energies), energies, trajectory, energy)
