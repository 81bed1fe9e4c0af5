"""Noise models. Images live in [-1, 1]; sigmas are quoted on the 0-255 pixel scale, as denoising papers do."""

from __future__ import annotations

import math

import torch
from torch import Tensor

DIFFUSION_STEPS = 1000


def sigma_to_unit(sigma_255: Tensor | float) -> Tensor | float:
    """Pixel sigma on 0-255 -> standard deviation in [-1, 1] units (the range is 2, not 255)."""
    return sigma_255 * 2.0 / 255.0


def add_gaussian_noise(clean: Tensor, sigma_255: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
    """(B, C, H, W) in [-1, 1], sigma (B,) or scalar on 0-255 -> noisy (B, C, H, W), not clipped."""
    sigma = torch.as_tensor(sigma_to_unit(sigma_255), dtype=clean.dtype, device=clean.device)
    if sigma.dim() == 1:
        sigma = sigma.view(-1, 1, 1, 1)
    noise = torch.randn(clean.shape, generator=generator, device="cpu", dtype=clean.dtype).to(clean.device)
    return clean + sigma * noise


def linear_alphas_cumprod(beta_start: float = 1e-4, beta_end: float = 0.02, steps: int = DIFFUSION_STEPS) -> Tensor:
    """The DDPM linear-beta schedule's cumulative products (steps,), as in the original EBT image protocol."""
    betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def level_to_timestep(level: float) -> int:
    """Noise level in (0, 1] -> timestep on the 1000-step schedule (level 0.1 -> t 99, 0.2 -> t 199)."""
    if not 0.0 < level <= 1.0:
        raise ValueError(f"diffusion noise level must be in (0, 1], got {level}")
    return max(0, round(level * DIFFUSION_STEPS) - 1)


def add_diffusion_noise(clean: Tensor, level: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
    """x = sqrt(a_t) x0 + sqrt(1 - a_t) eps with t from ``level``: (B, C, H, W), (B,) or scalar -> (B, C, H, W)."""
    alphas = linear_alphas_cumprod().to(clean.device)
    levels = torch.as_tensor(level, dtype=torch.float64).reshape(-1).expand(clean.shape[0])
    steps = torch.tensor([level_to_timestep(float(v)) if v > 0 else -1 for v in levels])
    a = torch.where(steps >= 0, alphas[steps.clamp(min=0)].cpu(), torch.ones(len(steps), dtype=torch.float64))
    a = a.to(device=clean.device, dtype=clean.dtype).view(-1, 1, 1, 1)
    noise = torch.randn(clean.shape, generator=generator, device="cpu", dtype=clean.dtype).to(clean.device)
    return a.sqrt() * clean + (1 - a).sqrt() * noise


def diffusion_level_as_sigma(level: float) -> float:
    """The 0-255 sigma of Gaussian noise with the same signal-to-noise ratio as diffusion ``level``."""
    a = float(linear_alphas_cumprod()[level_to_timestep(level)])
    return 255.0 / 2.0 * math.sqrt((1 - a) / a)


def noise_sigma(levels: Tensor, noise: str) -> Tensor:
    """Per-sample noise levels of a batch -> their 0-255 sigma: Gaussian sigmas pass through; diffusion levels map to
    the sigma with the same signal-to-noise ratio (what a sigma-conditioned model is told)."""
    if noise == "gaussian":
        return levels
    return torch.tensor([diffusion_level_as_sigma(float(v)) if v > 0 else 0.0 for v in levels.reshape(-1)])
