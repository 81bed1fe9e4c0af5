"""The Diffusion Transformer baseline: diffusers' ``DiTTransformer2DModel``, trained with ``DDPMScheduler`` (epsilon
prediction) and used for denoising by starting DDIM (``DDIMScheduler``) at the timestep that matches the observed noise.

Gaussian noise of pixel sigma s (on 0-255; u = 2s/255 in [-1, 1] units) is a diffusion state after rescaling:
``sqrt(a) * (x + u * eps) = sqrt(a) x + sqrt(1 - a) eps`` exactly when ``a = 1 / (1 + u^2)``. So a noisy photo
becomes ``x_t`` for the timestep whose ``alphas_cumprod`` is nearest (in log SNR) to that ``a``, scaled by
``sqrt(alphas_cumprod[t])``; DDIM then runs from t to 0 in k steps, one forward pass each.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DiTTransformer2DModel
from torch import Tensor, nn

from ..core.config import OptimConfig
from ..core.hub import HubModel, as_config
from ..core.layers import count_parameters
from ..core.objective import StepOutput, weight_decay_groups
from .config import ImageConfig
from .data import DenoisingBatch
from .noise import DIFFUSION_STEPS, alphas_cumprod, diffusion_betas, sigma_to_timestep, training_sigma_max
from .tiling import tiled_map


@cache
def _training_scheduler() -> DDPMScheduler:
    """DDPM on the project's one diffusion schedule (``ebt_vision.image.noise``)."""
    return DDPMScheduler(num_train_timesteps=DIFFUSION_STEPS, trained_betas=diffusion_betas().tolist())


def training_max_timestep(cfg: ImageConfig) -> int:
    """The largest timestep the DiT trains on: matched to the EBT's training noise, or the full schedule."""
    if cfg.dit.timesteps == "full":
        return DIFFUSION_STEPS - 1
    return sigma_to_timestep(training_sigma_max(cfg.data))


def _transformer(cfg: ImageConfig, depth: int, heads: int, head_dim: int) -> DiTTransformer2DModel:
    m = cfg.model
    return DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=m.channels,
        out_channels=m.channels,  # epsilon only (no learned variance)
        num_layers=depth,
        sample_size=cfg.data.crop_size,
        patch_size=m.patch_size,
        num_embeds_ada_norm=1,  # unconditional: one class
        norm_type="ada_norm_zero",
    )


def _dit_parameters(cfg: ImageConfig, depth: int, inner: int) -> int:
    """Parameters of the DiT with attention width ``inner`` (heads x head size; the split does not change the count)."""
    with torch.device("meta"):
        return count_parameters(_transformer(cfg, depth, 1, inner))


def _closest_width(cfg: ImageConfig, depth: int, target: int) -> tuple[float, int]:
    """(relative error, attention width) of the width closest in parameters to ``target`` at ``depth``. Widths are
    multiples of 4 (diffusers' 2-D sin-cos positions need it); the count grows with the width, so bisect."""
    low, high = 1, cfg.model.width  # in units of 4
    while low < high:  # the smallest width with at least ``target`` parameters
        mid = (low + high) // 2
        low, high = (mid + 1, high) if _dit_parameters(cfg, depth, 4 * mid) < target else (low, mid)
    return min((abs(_dit_parameters(cfg, depth, 4 * u) - target) / target, 4 * u) for u in (max(1, low - 1), low))


@cache
def matched_size(cfg: ImageConfig, target: int) -> tuple[int, int, int]:
    """(depth, heads, head size) of the DiT (same patch) whose parameter count is closest to ``target``.

    diffusers' blocks carry their own adaLN embedder, so at the EBT's depth the DiT is narrower. The EBT's depth is
    kept when some width comes within 2% of the target; otherwise one block more or fewer is allowed (at small widths
    one step of 4 in width moves the count by several percent). The heads are the divisor of the width nearest to the
    EBT's head count.
    """
    depth = cfg.model.depth
    error, width = _closest_width(cfg, depth, target)
    if error > 0.02:
        error, width, depth = min((*_closest_width(cfg, d, target), d) for d in (depth - 1, depth, depth + 1) if d >= 1)
    heads = min((h for h in range(1, width + 1) if width % h == 0), key=lambda h: abs(h - cfg.model.heads))
    return depth, heads, width // heads


class DiTDenoiser(nn.Module):
    """``(x_t (B, C, H, W), t (B,)) -> predicted noise (B, C, H, W)``; sized to match ``ImageEBT(cfg.model)``."""

    def __init__(self, cfg: ImageConfig) -> None:
        super().__init__()
        from .model import ImageEBT

        with torch.device("meta"):
            target = count_parameters(ImageEBT(replace(cfg.model, sigma_conditioning=False)))
        self.depth, self.heads, self.head_dim = matched_size(cfg, target)
        self.transformer = _transformer(cfg, self.depth, self.heads, self.head_dim)

    def forward(self, x_t: Tensor, timesteps: Tensor) -> Tensor:
        if x_t.shape[-1] != x_t.shape[-2]:
            raise ValueError(f"diffusers' DiT takes square inputs, got {tuple(x_t.shape)}; tile the image first")
        labels = torch.zeros(x_t.shape[0], dtype=torch.long, device=x_t.device)
        timesteps = torch.as_tensor(timesteps, device=x_t.device).reshape(-1).expand(x_t.shape[0])
        return self.transformer(x_t, timestep=timesteps, class_labels=labels).sample


class DiTObjective(nn.Module, HubModel):
    """DDPM training: clean crops from the same sampler as the EBT, noised at a uniform timestep, epsilon MSE."""

    def __init__(self, cfg: ImageConfig) -> None:
        super().__init__()
        self.cfg = cfg = as_config(cfg)
        self.model = DiTDenoiser(cfg)
        self.max_timestep = training_max_timestep(cfg)

    def forward(self, batch: DenoisingBatch) -> StepOutput:
        clean = batch.clean  # the EBT's noisy copy is ignored: diffusion draws its own noise and timestep
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
        trained_betas=diffusion_betas()[:total].tolist(),
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
    objective: DiTObjective, noisy: Tensor, sigma: Tensor | float, num_steps: int | None = None, tile_overlap: int = 2
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
        x = noisy[index].to(device) * float(alphas_cumprod()[start].sqrt())
        for t in scheduler.timesteps:
            eps = tiled_map(lambda tiles, t=t: objective.model(tiles, t), x, tile, overlap=tile_overlap)
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
