"""The Diffusion Transformer baseline: diffusers' ``DiTTransformer2DModel``, trained with ``DDPMScheduler`` (epsilon
prediction) and used for denoising by starting DDIM (``DDIMScheduler``) at the timestep that matches the observed noise.

Gaussian noise of pixel sigma s (on 0-255; u = 2s/255 in [-1, 1] units) is a diffusion state after rescaling:
``sqrt(a) * (x + u * eps) = sqrt(a) x + sqrt(1 - a) eps`` exactly when ``a = 1 / (1 + u^2)``. So a noisy photo
becomes ``x_t`` for the timestep whose ``alphas_cumprod`` is nearest (in log SNR) to that ``a``, scaled by
``sqrt(alphas_cumprod[t])``; DDIM then runs from t to 0 in k steps, one forward pass each.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import cache

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DiTTransformer2DModel
from torch import Tensor, nn

from .config import ExperimentConfig, OptimConfig
from .layers import count_parameters
from .noise import DIFFUSION_STEPS, level_to_timestep
from .objectives import StepOutput, weight_decay_groups
from .tiling import tiled_map


@cache
def _training_scheduler() -> DDPMScheduler:
    """The 1000-step linear-beta DDPM schedule (1e-4 to 0.02), the same one ``noise.py`` uses."""
    return DDPMScheduler(num_train_timesteps=DIFFUSION_STEPS, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


def alphas_cumprod() -> Tensor:
    return _training_scheduler().alphas_cumprod


def timestep_to_sigma(t: int) -> float:
    """Timestep -> the 0-255 pixel sigma whose Gaussian noise has the same signal-to-noise ratio."""
    a = float(alphas_cumprod()[t])
    return 255.0 / 2.0 * math.sqrt((1.0 - a) / a)


def sigma_to_timestep(sigma_255: float) -> int:
    """0-255 pixel sigma -> the timestep nearest in log signal-to-noise ratio (0 for no noise)."""
    if not math.isfinite(sigma_255) or sigma_255 < 0:
        raise ValueError(f"sigma must be finite and >= 0, got {sigma_255}")
    if sigma_255 == 0:
        return 0
    a = alphas_cumprod().double()
    log_snr = torch.log(a / (1 - a))
    target = -2.0 * math.log(sigma_255 * 2.0 / 255.0)  # log SNR of x + u * eps is -2 log u
    return int(torch.argmin((log_snr - target).abs()))


def training_max_timestep(cfg: ExperimentConfig) -> int:
    """The largest timestep the DiT trains on: matched to the EBT's training noise, or the full schedule."""
    if cfg.dit.timesteps == "full":
        return DIFFUSION_STEPS - 1
    if cfg.data.noise == "gaussian":
        return sigma_to_timestep(cfg.data.sigma_max)
    return level_to_timestep(cfg.data.level_max) if cfg.data.level_max > 0 else 0


def _transformer(cfg: ExperimentConfig, head_dim: int) -> DiTTransformer2DModel:
    m = cfg.model
    return DiTTransformer2DModel(
        num_attention_heads=m.heads,
        attention_head_dim=head_dim,
        in_channels=m.channels,
        out_channels=m.channels,  # epsilon only (no learned variance)
        num_layers=m.depth,
        sample_size=cfg.data.crop_size,
        patch_size=m.patch_size,
        num_embeds_ada_norm=1,  # unconditional: one class
        norm_type="ada_norm_zero",
    )


@cache
def matched_head_dim(cfg: ExperimentConfig, target: int) -> int:
    """The attention head size whose DiT (same depth, heads, patch) has the parameter count closest to ``target``."""
    with torch.device("meta"):
        candidates = range(2, 2 * cfg.model.width // cfg.model.heads + 1, 2)
        counts = {d: count_parameters(_transformer(cfg, d)) for d in candidates}
    return min(counts, key=lambda d: abs(counts[d] - target))


class DiTDenoiser(nn.Module):
    """``(x_t (B, C, H, W), t (B,)) -> predicted noise (B, C, H, W)``; sizes matched to ``ImageEBT(cfg.model)``."""

    def __init__(self, cfg: ExperimentConfig, head_dim: int | None = None) -> None:
        super().__init__()
        if head_dim is None:
            from .energy_image import ImageEBT

            with torch.device("meta"):
                target = count_parameters(ImageEBT(replace(cfg.model, sigma_conditioning=False)))
            head_dim = matched_head_dim(cfg, target)
        self.head_dim = head_dim
        self.transformer = _transformer(cfg, head_dim)

    def forward(self, x_t: Tensor, timesteps: Tensor) -> Tensor:
        if x_t.shape[-1] != x_t.shape[-2]:
            raise ValueError(f"diffusers' DiT takes square inputs, got {tuple(x_t.shape)}; tile the image first")
        labels = torch.zeros(x_t.shape[0], dtype=torch.long, device=x_t.device)
        timesteps = torch.as_tensor(timesteps, device=x_t.device).reshape(-1).expand(x_t.shape[0])
        return self.transformer(x_t, timestep=timesteps, class_labels=labels).sample


class DiTObjective(nn.Module):
    """DDPM training: clean crops from the same sampler as the EBT, noised at a uniform timestep, epsilon MSE."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = DiTDenoiser(cfg)
        self.max_timestep = training_max_timestep(cfg)

    def forward(self, batch: tuple[Tensor, Tensor, Tensor]) -> StepOutput:
        _, clean, _ = batch  # the EBT's noisy copy is ignored: diffusion draws its own noise and timestep
        t = torch.randint(0, self.max_timestep + 1, (clean.shape[0],), device=clean.device)
        noise = torch.randn_like(clean)
        x_t = _training_scheduler().add_noise(clean, noise, t)
        loss = F.mse_loss(self.model(x_t, t).float(), noise)
        return StepOutput(loss, {"loss": loss.detach()})

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        return weight_decay_groups(self, optim)

    def compile_for_training(self) -> None:
        """``train.compile``: compile the network in place (its state-dict keys stay the same)."""
        self.model.compile()


def ddim_scheduler(start: int, steps: int | None = None, clip_sample: bool = True) -> DDIMScheduler:
    """A DDIM sampler with ``min(steps, start + 1)`` steps (all when None) from exactly ``start`` down to near 0.

    It is built on the training schedule's first ``start + 1`` betas (so every timestep and alpha is the training
    one) with "leading" spacing shifted by ``steps_offset``: the timesteps are ``start, start - s, ...`` with the
    uniform stride s = (start + 1) // k that ``DDIMScheduler.step`` also uses to find each previous timestep, so every
    step is consistent. ``dit_denoise`` returns the last step's x0 estimate.
    """
    total = start + 1
    count = total if steps is None else min(steps, total)
    stride = total // count
    scheduler = DDIMScheduler(
        num_train_timesteps=total,
        trained_betas=_training_scheduler().betas[:total].tolist(),
        clip_sample=clip_sample,
        set_alpha_to_one=True,
        steps_offset=start - (count - 1) * stride,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )
    scheduler.set_timesteps(count)
    return scheduler


@torch.no_grad()
def dit_denoise(
    objective: DiTObjective, noisy: Tensor, sigma: Tensor | float, num_steps: int | None = None
) -> tuple[Tensor, list[int]]:
    """(B, C, H, W) noisy in [-1, 1], sigma (B,) or scalar on 0-255 -> (estimate, forward passes per image).

    Each image starts DDIM at the timestep matching its sigma and takes ``min(num_steps, t + 1)`` steps
    (``None``: all t + 1). Photos larger than the training crop are tiled like the EBT's energy, and a pass over
    all tiles of a photo counts as one forward pass. One step is the one-step x0 prediction.
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
        x = noisy[index].to(device) * alphas_cumprod()[start].sqrt().to(device)
        for t in scheduler.timesteps:
            eps = tiled_map(lambda tiles, t=t: objective.model(tiles, t), x, tile)
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
    from .checkpoint import load_trained

    return load_trained(path, DiTObjective, "a DiT baseline", device)[0]
