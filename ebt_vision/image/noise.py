"""Everything the project knows about image noise, in one place.

Images live in [-1, 1]; sigmas are quoted on the 0-255 pixel scale, as denoising papers do (u = 2 sigma / 255 in
image units). Two conventions:

- **Gaussian**: ``x = x0 + u eps``; the level is the sigma.
- **Diffusion**: ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` on the 1000-step linear-beta schedule (1e-4 to 0.02), the
  original EBT image protocol; the level is ``t / 1000`` (level 0.1 = t 99, level 0.2 = t 199).

They are the same thing up to scale: ``sqrt(a) (x0 + u eps)`` is a diffusion state exactly when ``a = 1 / (1 + u^2)``.
So every level has a Gaussian-equivalent sigma (same signal-to-noise ratio) and every sigma a nearest timestep. The
diffusers DiT baseline, the noisy training batches, the evaluation and the blind sigma estimate all use this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

from ..core.errors import InputError
from .config import DataConfig

DIFFUSION_STEPS = 1000
NOISE_KINDS = ("gaussian", "diffusion")


@cache
def diffusion_betas() -> Tensor:
    """The DDPM linear-beta schedule (1000,) float64, as in the original EBT image protocol."""
    return torch.linspace(1e-4, 0.02, DIFFUSION_STEPS, dtype=torch.float64)


@cache
def alphas_cumprod() -> Tensor:
    """Cumulative products of (1 - beta): (1000,) float64."""
    return torch.cumprod(1.0 - diffusion_betas(), dim=0)


def sigma_to_unit(sigma_255: Tensor | float) -> Tensor | float:
    """Pixel sigma on 0-255 -> standard deviation in [-1, 1] units (the range is 2, not 255)."""
    return sigma_255 * 2.0 / 255.0


def level_to_timestep(level: float) -> int:
    """Diffusion level in (0, 1] -> timestep (level 0.1 -> t 99, 0.2 -> t 199)."""
    if not 0.0 < level <= 1.0:
        raise InputError(f"diffusion noise level must be in (0, 1], got {level}")
    return max(0, round(level * DIFFUSION_STEPS) - 1)


def timestep_to_sigma(t: int) -> float:
    """Timestep -> the 0-255 sigma of Gaussian noise with the same signal-to-noise ratio."""
    a = float(alphas_cumprod()[t])
    return 255.0 / 2.0 * math.sqrt((1.0 - a) / a)


def level_to_sigma(level: float) -> float:
    """Diffusion level -> its Gaussian-equivalent 0-255 sigma (0 for level 0)."""
    return timestep_to_sigma(level_to_timestep(level)) if level > 0 else 0.0


def sigma_to_timestep(sigma_255: float) -> int:
    """0-255 sigma -> the timestep nearest in log signal-to-noise ratio (0 for no noise)."""
    if not math.isfinite(sigma_255) or sigma_255 < 0:
        raise InputError(f"sigma must be finite and >= 0, got {sigma_255}")
    if sigma_255 == 0:
        return 0
    a = alphas_cumprod()
    log_snr = torch.log(a / (1 - a))
    target = -2.0 * math.log(sigma_to_unit(sigma_255))  # log SNR of x0 + u eps is -2 log u
    return int(torch.argmin((log_snr - target).abs()))


def _standard_normal(shape, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Noise drawn on the CPU (so a seeded generator gives the same numbers on every device), moved to ``like``."""
    return torch.randn(shape, generator=generator, device="cpu", dtype=like.dtype).to(like.device)


def add_gaussian_noise(clean: Tensor, sigma_255: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
    """(B, C, H, W) in [-1, 1], sigma (B,) or scalar on 0-255 -> noisy (B, C, H, W), not clipped."""
    sigma = torch.as_tensor(sigma_to_unit(sigma_255), dtype=clean.dtype, device=clean.device)
    if sigma.dim() == 1:
        sigma = sigma.view(-1, 1, 1, 1)
    return clean + sigma * _standard_normal(clean.shape, generator, clean)


def noisy_copy(clean: Tensor, sigma: float, seed: int, index: int) -> Tensor:
    """(C, H, W) -> (C, H, W) with Gaussian noise seeded by (seed, image index, sigma): the same for every method."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + index * 1009 + int(round(sigma * 10)))
    return add_gaussian_noise(clean[None], float(sigma), generator)[0]


def estimate_noise_sigma(noisy: Tensor) -> Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B,) 0-255 sigma estimated by wavelet MAD (``skimage.restoration.estimate_sigma``):
    what a blind method may know."""
    from skimage.restoration import estimate_sigma

    arrays = noisy.detach().cpu().permute(0, 2, 3, 1).double().numpy() * 127.5
    return torch.tensor([float(estimate_sigma(a, channel_axis=-1, average_sigmas=True)) for a in arrays])


@dataclass(frozen=True)
class NoiseLevel:
    """The noise of each sample of a batch, in one convention: ``kind`` is "gaussian" (``value`` = sigma on 0-255) or
    "diffusion" (``value`` = level in [0, 1], 0 = clean). Consumers ask for what they need (``sigma``,
    ``timesteps``) instead of reading a bare tensor whose meaning depends on the config."""

    kind: str
    value: Tensor  # (B,)

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise InputError(f"noise kind must be one of {NOISE_KINDS}, got {self.kind!r}")

    def to(self, device: torch.device | str, non_blocking: bool = False) -> NoiseLevel:
        return NoiseLevel(self.kind, self.value.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> NoiseLevel:
        return NoiseLevel(self.kind, self.value.pin_memory())

    @property
    def sigma(self) -> Tensor:
        """(B,) Gaussian-equivalent sigma on 0-255 (what a sigma-conditioned model is told)."""
        if self.kind == "gaussian":
            return self.value
        return torch.tensor([level_to_sigma(float(v)) for v in self.value.cpu()], device=self.value.device)

    def add_to(self, clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, C, H, W) clean -> noisy in this convention."""
        if self.kind == "gaussian":
            return add_gaussian_noise(clean, self.value, generator)
        steps = [level_to_timestep(float(v)) if v > 0 else -1 for v in self.value.cpu()]
        a = torch.tensor([float(alphas_cumprod()[t]) if t >= 0 else 1.0 for t in steps])
        a = a.to(device=clean.device, dtype=clean.dtype).view(-1, 1, 1, 1)
        return a.sqrt() * clean + (1 - a).sqrt() * _standard_normal(clean.shape, generator, clean)


def training_sigma_max(data: DataConfig) -> float:
    """The highest Gaussian-equivalent sigma a model trained on ``data`` has seen: the in/out-of-distribution line."""
    return data.sigma_max if data.noise == "gaussian" else level_to_sigma(data.level_max)


def training_noise(data: DataConfig, count: int, generator: torch.Generator | None = None) -> NoiseLevel:
    """(count,) levels drawn uniformly from the configured range."""
    low, high = (data.sigma_min, data.sigma_max) if data.noise == "gaussian" else (data.level_min, data.level_max)
    return NoiseLevel(data.noise, low + (high - low) * torch.rand(count, generator=generator))


def as_model_input(noisy: Tensor, sigma: Tensor | float, kind: str) -> Tensor:
    """Gaussian-noisy images (B, C, H, W) of ``sigma`` -> the input a model trained on ``kind`` noise expects.

    A diffusion-trained model sees ``sqrt(a) (x0 + u eps)`` with ``a = 1 / (1 + u^2)``; a Gaussian-trained one the
    noisy image itself. The clean target is the same either way.
    """
    if kind == "gaussian":
        return noisy
    unit = torch.as_tensor(sigma_to_unit(sigma), dtype=noisy.dtype, device=noisy.device).reshape(-1, 1, 1, 1)
    return noisy / (1 + unit**2).sqrt()


def diffusion_as_gaussian(x_t: Tensor, level: float) -> tuple[Tensor, float]:
    """A diffusion state at ``level`` -> (the Gaussian-noisy image x_t / sqrt(a), its equivalent sigma)."""
    a = float(alphas_cumprod()[level_to_timestep(level)])
    return x_t / a**0.5, level_to_sigma(level)
