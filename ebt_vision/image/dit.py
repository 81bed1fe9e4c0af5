"""The Diffusion Transformer baseline: diffusers' ``DiTTransformer2DModel``, trained with ``DDPMScheduler`` (epsilon
prediction) and used for denoising by starting DDIM (``DDIMScheduler``) at the timestep that matches the observed noise.

Gaussian noise of pixel sigma s (on 0-255; u = 2s/255 in [-1, 1] units) is a diffusion state after rescaling:
``sqrt(a) * (x + u * eps) = sqrt(a) x + sqrt(1 - a) eps`` exactly when ``a = 1 / (1 + u^2)``. So a noisy photo
becomes ``x_t`` for the timestep whose ``alphas_cumprod`` is nearest (in log SNR) to that ``a``, scaled by
``sqrt(alphas_cumprod[t])``; DDIM then runs from t to 0 in k steps, one forward pass each.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache, partial

import torch
import torch.nn.functional as F
from diffusers import DiTTransformer2DModel
from torch import Tensor, nn

from ..core import sizing
from ..core.hub import HubModel, as_config
from ..core.layers import count_parameters
from ..core.objective import DirectObjective, StepOutput
from .config import ImageConfig
from .data import DenoisingBatch
from .diffusion import ddim_scheduler, dit_transformer, training_scheduler
from .noise import DIFFUSION_STEPS, alphas_cumprod, sigma_to_timestep, training_sigma_max
from .tiling import tiled_map


def training_max_timestep(cfg: ImageConfig) -> int:
    """The largest timestep the DiT trains on: matched to the EBT's training noise, or the full schedule."""
    if cfg.dit.timesteps == "full":
        return DIFFUSION_STEPS - 1
    return sigma_to_timestep(training_sigma_max(cfg.data))


def _transformer(cfg: ImageConfig, depth: int, head_dim: int, heads: int) -> DiTTransformer2DModel:
    m = cfg.model
    return dit_transformer(m.channels, m.channels, cfg.data.crop_size, m.patch_size, depth, head_dim, heads)


@cache
def matched_size(cfg: ImageConfig, target: int) -> tuple[int, int, int]:
    """(depth, heads, head size) of the DiT (same patch) whose parameter count matches ``target`` (``core.sizing``):
    the EBT's depth when some width comes within 2%, else one block more or fewer; attention widths up to 4x the
    EBT's."""
    m = cfg.model
    build = partial(_transformer, cfg, heads=1)
    return sizing.matched_size(build, target, m.depth, m.heads, 4 * m.width, (m.depth - 1, m.depth, m.depth + 1))


class DiTDenoiser(nn.Module):
    """``(x_t (B, C, H, W), t (B,)) -> predicted noise (B, C, H, W)``; sized to match ``ImageEBT(cfg.model)``."""

    def __init__(self, cfg: ImageConfig) -> None:
        super().__init__()
        from .model import ImageEBT

        with torch.device("meta"):
            target = count_parameters(ImageEBT(replace(cfg.model, sigma_conditioning=False)))
        self.depth, self.heads, self.head_dim = matched_size(cfg, target)
        self.transformer = _transformer(cfg, self.depth, self.head_dim, self.heads)

    def forward(self, x_t: Tensor, timesteps: Tensor) -> Tensor:
        if x_t.shape[-1] != x_t.shape[-2]:
            raise ValueError(f"diffusers' DiT takes square inputs, got {tuple(x_t.shape)}; tile the image first")
        labels = torch.zeros(x_t.shape[0], dtype=torch.long, device=x_t.device)
        timesteps = torch.as_tensor(timesteps, device=x_t.device).reshape(-1).expand(x_t.shape[0])
        return self.transformer(x_t, timestep=timesteps, class_labels=labels).sample


class DiTObjective(DirectObjective, HubModel):
    """DDPM training: clean crops from the same sampler as the EBT, noised at a uniform timestep, epsilon MSE."""

    def __init__(self, cfg: ImageConfig) -> None:
        cfg = as_config(cfg)
        super().__init__(DiTDenoiser(cfg), cfg)
        self.max_timestep = training_max_timestep(cfg)

    def forward(self, batch: DenoisingBatch) -> StepOutput:
        clean = batch.clean  # the EBT's noisy copy is ignored: diffusion draws its own noise and timestep
        t = torch.randint(0, self.max_timestep + 1, (clean.shape[0],), device=clean.device)
        noise = torch.randn_like(clean)
        x_t = training_scheduler().add_noise(clean, noise, t)
        loss = F.mse_loss(self.model(x_t, t).float(), noise)
        return StepOutput(loss, {"loss": loss.detach()})


@torch.no_grad()
def dit_denoise(
    objective: DiTObjective,
    noisy: Tensor,
    sigma: Tensor | float,
    num_steps: int | None = None,
    tile_overlap: int = 2,
    views: int = 1,
) -> tuple[Tensor, list[int]]:
    """(B, C, H, W) noisy in [-1, 1], sigma (B,) or scalar on 0-255 -> (estimate, forward passes per image).

    Each image starts DDIM at the timestep matching its sigma and takes ``min(num_steps, t + 1)`` steps
    (``None``: all t + 1). Photos larger than the training crop are tiled like the EBT's energy, and a pass over
    all tiles of a photo counts as one forward pass. One step is the one-step x0 prediction. ``views`` > 1: each
    noise prediction is the average over that many mirror images of the photo (``tiled_map``).
    """
    if num_steps is not None and num_steps < 1:
        raise ValueError(f"num_steps must be >= 1 (or None for all), got {num_steps}")
    sigmas = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(noisy.shape[0])
    device = next(objective.parameters()).device
    tile, clip = objective.cfg.data.crop_size, objective.cfg.dit.clip_sample
    estimate, passes = torch.empty_like(noisy), [0] * noisy.shape[0]
    starts = [sigma_to_timestep(float(s)) for s in sigmas]
    for start in sorted(set(starts)):  # images that start at the same timestep share a batch
        index = [i for i, s in enumerate(starts) if s == start]
        scheduler = ddim_scheduler(start, num_steps, clip)
        x = noisy[index].to(device) * float(alphas_cumprod()[start].sqrt())
        for t in scheduler.timesteps:
            eps = tiled_map(lambda tiles, t=t: objective.model(tiles, t), x, tile, overlap=tile_overlap, views=views)
            out = scheduler.step(eps, t, x)
            x = out.prev_sample
        # The last step's x0 estimate: DDIM's own "previous" state there is x_{t'} at a small t' > 0 unless the
        # spacing happens to reach past 0, so the final jump to alpha = 1 is taken explicitly.
        estimate[index] = out.pred_original_sample.to(estimate.device, estimate.dtype)
        for i in index:
            passes[i] = len(scheduler.timesteps)
    return estimate, passes


def load_dit(path, device: str | torch.device = "cpu") -> DiTObjective:
    """A trained DiT baseline (``ebt-vision train --model dit``) in eval mode."""
    from ..core.checkpoint import load_trained

    return load_trained(path, DiTObjective, "a DiT baseline", device)[0]
