"""Denoising with a trained image EBT: load a checkpoint, validate input, descend (tiled for big photos).

The descent is ``EnergyObjective.infer`` with the shared ``Thinking`` options; what is the image workload's own is how
a photo is tiled (``Tiling``), the noise sigma a conditioned model is told, and best-of-N starts in pixel-sigma units.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from ..core.checkpoint import load_trained
from ..core.descent import Trajectory, lowest_energy
from ..core.errors import InputError
from ..core.inference import Thinking
from .noise import estimate_noise_sigma, training_sigma_max
from .objective import DenoisingObjective
from .tiling import SymmetricEnergy, TiledEnergy, check_views, photo_energy

START_NOISE = 10.0  # best-of-N: the other starts are the noisy image plus Gaussian noise of this sigma (0-255)


@dataclass(frozen=True)
class Tiling:
    """How a photo is tiled for the energy. ``overlap``: 2 (half-overlapping tiles, every pixel in 4), 1 (side by
    side, 4x cheaper) or 4 (a quarter of a tile apart, every pixel in 16, 4x dearer; see ``tiling``).
    ``per_patch``: descend the per-patch energies (each patch's energy averaged over the tiles that cover it), so
    stopping works patch by patch (``trajectory.steps_taken`` is then a (B, H/p, W/p) map). ``record_maps``: keep
    the energy map of every candidate the descent evaluates (``TiledEnergy.maps``). ``views``: 1, or the energy
    averaged over 2, 4 or 8 mirror images of the photo (``SymmetricEnergy``; a pass costs that many times the FLOPs).
    """

    overlap: int = 2
    per_patch: bool = False
    record_maps: bool = False
    views: int = 1

    def __post_init__(self) -> None:
        check_views(self.views)


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
    thinking: Thinking = Thinking(),
    sigma: Tensor | float | None = None,
    tiling: Tiling = Tiling(),
    init: Tensor | None = None,
) -> tuple[Trajectory, TiledEnergy | SymmetricEnergy]:
    """(B, 3, H, W) noisy in [-1, 1] -> the descent trajectory from the noisy image (tiled at the training crop size).

    ``candidates[k]`` is the estimate after k steps; clamp to [-1, 1] before saving. ``thinking``: steps, step scale,
    stopping, momentum, Langevin noise, clamping, the final energy (best-of-N is ``best_of_n``). ``sigma`` (0-255, per
    image or one for all) is refused by blind models; a sigma-conditioned model not given one is used blind, told
    the sigma ``estimate_noise_sigma`` reads off each noisy image (what the DiT and the step schedule read). It is
    clamped to the highest sigma the model trained on (told an unseen level, a conditioned model collapses; told the
    nearest level it knows, it under-corrects and more descent steps can do the rest). ``init`` starts the descent
    elsewhere than at the noisy image. ``thinking.passes`` > 1 re-anchors: after each pass the estimate becomes the
    noisy image. Returns the tiled energy too, for per-patch energy maps (``tiling.record_maps``).
    """
    cfg = objective.cfg
    check_images(noisy, cfg.model.patch_size)
    if init is not None and init.shape != noisy.shape:
        raise InputError(f"init {tuple(init.shape)} must have the noisy image's shape {tuple(noisy.shape)}")
    thinking.check(cfg.descent.num_steps)
    sigma = _check_sigma(sigma, noisy.shape[0])
    if sigma is None and cfg.model.sigma_conditioning:
        sigma = estimate_noise_sigma(noisy)
    if sigma is not None:
        sigma = sigma.clamp(max=training_sigma_max(cfg.data))
    energy = photo_energy(objective.model, cfg.data.crop_size, tiling.views, sigma=sigma,
                          record_maps=tiling.record_maps, overlap=tiling.overlap)  # fmt: skip
    device = next(objective.parameters()).device
    context, start, runs = noisy.to(device), (noisy if init is None else init).to(device), []
    for index in range(thinking.passes):  # one pass unless re-anchored (``Thinking.passes``)
        last = index == thinking.passes - 1
        runs.append(objective.infer(
            context,
            start,
            replace(thinking, passes=1, final_energy=thinking.final_energy and last),
            energy=energy.patch_energy_map if tiling.per_patch else energy,
            expand_positions=patch_expander(cfg.model.patch_size) if tiling.per_patch else None,
        ))  # fmt: skip
        estimate = runs[-1].final.detach().clamp(-1, 1)  # the estimate (with some of the noise left) is the next
        context = start = estimate + thinking.keep_noise * (context - estimate)  # pass's noisy image
    return join_passes(runs), energy


def join_passes(passes: list[Trajectory]) -> Trajectory:
    """The trajectories of a re-anchored descent's passes as one: each pass's candidates after its start (the
    previous pass's estimate), energies, gradient norms and pass counts one after another, steps taken summed."""
    if len(passes) == 1:
        return passes[0]
    first = passes[0]
    return Trajectory(
        candidates=[*first.candidates, *(c for later in passes[1:] for c in later.candidates[1:])],
        position_energies=torch.cat([t.position_energies for t in passes]),
        graph_from=first.graph_from,
        grad_norms=torch.cat([t.grad_norms for t in passes]),
        steps_taken=sum(t.steps_taken for t in passes),
        forward_passes=sum(t.forward_passes for t in passes),
        backward_passes=sum(t.backward_passes for t in passes),
    )


def adaptive_tolerance(reference: Trajectory, fraction: float) -> float:
    """The stop tolerance of adaptive per-patch descent: ``fraction`` times the median first-step energy drop per
    patch of ``reference``, a per-patch descent (``Tiling(per_patch=True)``) of the same image with at least one
    step."""
    first_drop = float((reference.position_energies[0] - reference.position_energies[1]).median())
    return fraction * abs(first_drop)


@dataclass
class BestOfN:
    """What ``best_of_n`` found: the lowest-energy estimates, every start's final energy, the descent of all starts."""

    best: Tensor  # (B, C, H, W)
    final_energies: Tensor  # (N, B)
    trajectory: Trajectory  # of all N x B descents; pass counts are per run of that batch (per image: N x them)
    energy: TiledEnergy | SymmetricEnergy  # the energy the descent used (with its recorded maps, when asked for)


def best_of_n(
    objective: DenoisingObjective,
    noisy: Tensor,
    thinking: Thinking,
    sigma: Tensor | float | None = None,
    tiling: Tiling = Tiling(),
    seed: int = 0,
) -> BestOfN:
    """Best-of-N: N = ``thinking.n_candidates`` descents per image, the first from the noisy image and N - 1 from it
    plus Gaussian noise of ``thinking.start_noise`` (0-255 sigma, default ``START_NOISE``); keep the one with the
    lowest final energy."""
    thinking.check(objective.cfg.descent.num_steps)
    if thinking.passes != 1 and thinking.n_candidates > 1:
        raise InputError("best-of-N compares final energies under one context: it takes passes=1 (no re-anchoring)")
    n, batch = thinking.n_candidates, noisy.shape[0]
    generator = torch.Generator().manual_seed(seed)
    starts = noisy.repeat(n, 1, 1, 1)
    start_noise = START_NOISE if thinking.start_noise is None else thinking.start_noise
    perturbation = torch.randn(starts.shape, generator=generator) * (start_noise * 2.0 / 255.0)
    perturbation[:batch] = 0
    sigmas = None
    if sigma is not None:
        sigmas = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).expand(batch).repeat(n)
    one_start = replace(thinking, n_candidates=1, final_energy=True)
    trajectory, energy = denoise(objective, starts, one_start, sigmas, tiling, init=starts + perturbation.to(starts))
    energies = trajectory.energies[-1].reshape(n, batch)
    finals = trajectory.final.reshape(n, batch, *noisy.shape[1:])
    return BestOfN(lowest_energy(finals, energies), energies, trajectory, energy)
