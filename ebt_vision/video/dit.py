"""The diffusion baseline: diffusers' ``DiTTransformer2DModel`` as a conditional next-frame model.

The last W = ``data.context_frames`` frames are concatenated along channels with the noisy next frame: input
(B, C (W + 1), H, W), output the predicted noise (epsilon prediction) of the next frame. Training noises the real
next frame with ``DDPMScheduler`` on the project's one schedule (``ebt_vision.image.noise.diffusion_betas``: 1000
linear betas) at a uniform timestep; every next frame of a clip that has W real frames before it is a training
sample. Prediction runs deterministic DDIM from pure noise (t = 999, "trailing" spacing) to the clean frame in k
steps, one forward pass each. The width and depth are chosen so the parameter count is within 2% of the video EBT's:
diffusers' adaLN-Zero blocks hold about twice a plain block's parameters (docs/design.md, trap 8).
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DiTTransformer2DModel
from torch import Tensor, nn

from ..core.config import OptimConfig
from ..core.errors import InputError
from ..core.hub import HubModel, as_config
from ..core.layers import count_parameters
from ..core.objective import StepOutput, weight_decay_groups
from ..image.noise import DIFFUSION_STEPS, diffusion_betas
from .config import VideoConfig
from .model import VideoEBT
from .rollout import Rollout, check_context

MAX_SAMPLING_STEPS = DIFFUSION_STEPS


@cache
def training_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=DIFFUSION_STEPS, trained_betas=diffusion_betas().tolist())


def ddim_sampler(steps: int, clip_sample: bool = True) -> DDIMScheduler:
    """DDIM in ``steps`` steps from t = 999 ("trailing" spacing); the last step lands on alpha = 1 (the clean frame)."""
    scheduler = DDIMScheduler(
        num_train_timesteps=DIFFUSION_STEPS,
        trained_betas=diffusion_betas().tolist(),
        clip_sample=clip_sample,
        set_alpha_to_one=True,
        timestep_spacing="trailing",
        prediction_type="epsilon",
    )
    scheduler.set_timesteps(steps)
    return scheduler


def _transformer(cfg: VideoConfig, depth: int, heads: int, head_dim: int) -> DiTTransformer2DModel:
    m = cfg.model
    return DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=m.channels * (cfg.data.context_frames + 1),  # the past frames and the noisy next frame
        out_channels=m.channels,  # epsilon only (no learned variance)
        num_layers=depth,
        sample_size=cfg.data.frame_size,
        patch_size=m.patch_size,
        num_embeds_ada_norm=1,  # unconditional: one class
        norm_type="ada_norm_zero",
    )


@cache
def _block_counts(cfg: VideoConfig, inner: int) -> tuple[int, int]:
    """(parameters outside the blocks, parameters per block) at attention width ``inner``, from two small builds."""
    with torch.device("meta"):
        one, two = (count_parameters(_transformer(cfg, depth, 1, inner)) for depth in (1, 2))
    return one - (two - one), two - one


def _parameters(cfg: VideoConfig, depth: int, inner: int) -> int:
    """Parameters of the DiT of ``depth`` blocks at attention width ``inner`` (heads x head size; the split does not
    change the count)."""
    outside, per_block = _block_counts(cfg, inner)
    return outside + depth * per_block


def _closest_width(cfg: VideoConfig, depth: int, target: int) -> tuple[float, int]:
    """(relative error, attention width) of the multiple of 4 closest in parameters to ``target`` (bisection: the
    count grows with the width)."""
    low, high = 1, cfg.model.width  # in units of 4
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if _parameters(cfg, depth, 4 * mid) < target else (low, mid)
    return min((abs(_parameters(cfg, depth, 4 * u) - target) / target, 4 * u) for u in (max(1, low - 1), low))


@cache
def matched_size(cfg: VideoConfig, target: int) -> tuple[int, int, int]:
    """(depth, heads, head size) of the DiT whose parameter count is within 2% of ``target`` at the depth nearest the
    EBT's (the closest count when none is); heads = the divisor of the width nearest the EBT's head count.

    Widths come in steps of 4, and at small widths one step moves the count by several percent, so the depth is
    free too (a deeper, narrower DiT or a shallower, wider one, whichever is nearer the EBT's depth).
    """
    options = [(*_closest_width(cfg, depth, target), depth) for depth in range(1, 2 * cfg.model.depth + 3)]
    within = [option for option in options if option[0] <= 0.02]
    _, width, depth = min(within, key=lambda o: (abs(o[2] - cfg.model.depth), o[0])) if within else min(options)
    heads = min((h for h in range(1, width + 1) if width % h == 0), key=lambda h: abs(h - cfg.model.heads))
    return depth, heads, width // heads


class VideoDiT(nn.Module):
    """``(x_t (B, C, H, W), past (B, W, C, H, W), t (B,)) -> predicted noise (B, C, H, W)``."""

    def __init__(self, cfg: VideoConfig) -> None:
        super().__init__()
        with torch.device("meta"):
            target = count_parameters(VideoEBT(cfg.model))
        self.depth, self.heads, self.head_dim = matched_size(cfg, target)
        self.window = cfg.data.context_frames
        self.transformer = _transformer(cfg, self.depth, self.heads, self.head_dim)

    def forward(self, x_t: Tensor, past: Tensor, timesteps: Tensor) -> Tensor:
        labels = torch.zeros(x_t.shape[0], dtype=torch.long, device=x_t.device)
        timesteps = torch.as_tensor(timesteps, device=x_t.device).reshape(-1).expand(x_t.shape[0])
        inputs = torch.cat([past.flatten(1, 2), x_t], dim=1)  # (B, C W + C, H, W)
        return self.transformer(inputs, timestep=timesteps, class_labels=labels).sample


def last_window(frames: Tensor, window: int) -> Tensor:
    """(B, t, C, H, W) -> (B, window, C, H, W): the newest ``window`` frames, the first repeated when t < window."""
    missing = window - frames.shape[1]
    if missing > 0:
        frames = torch.cat([frames[:, :1].expand(-1, missing, -1, -1, -1), frames], dim=1)
    return frames[:, -window:]


class VideoDiTObjective(nn.Module, HubModel):
    """DDPM training of the conditional DiT on the same clips as the EBT; epsilon MSE."""

    def __init__(self, cfg: VideoConfig) -> None:
        super().__init__()
        self.cfg = cfg = as_config(cfg)
        self.model = VideoDiT(cfg)

    def forward(self, clips: Tensor) -> StepOutput:
        window = self.model.window
        # every next frame with a full window of real frames before it: (B, L - W, W + 1, C, H, W)
        samples = clips.unfold(1, window + 1, 1).permute(0, 1, 5, 2, 3, 4)
        samples = samples.flatten(0, 1)  # (B (L - W), W + 1, C, H, W)
        past, target = samples[:, :window], samples[:, window]
        t = torch.randint(0, DIFFUSION_STEPS, (target.shape[0],), device=target.device)
        noise = torch.randn_like(target)
        x_t = training_scheduler().add_noise(target, noise, t)
        loss = F.mse_loss(self.model(x_t, past, t).float(), noise)
        return StepOutput(loss, {"loss": loss.detach()})

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        return weight_decay_groups(self, optim)

    def compile_for_training(self) -> None:
        """``train.compile``: compile the network in place (its state-dict keys stay the same)."""
        self.model.compile()

    @torch.no_grad()
    def rollout(self, context: Tensor, horizon: int, num_steps: int | None = None, seed: int = 0) -> Rollout:
        """(B, T, C, H, W) -> ``horizon`` frames, each by DDIM in ``num_steps`` forward passes (default
        ``dit.sampling_steps``) from seeded noise, conditioned on the newest W frames (real or predicted)."""
        check_context(context, horizon, self.cfg.model.channels)
        steps = self.cfg.dit.sampling_steps if num_steps is None else num_steps
        if not 1 <= steps <= MAX_SAMPLING_STEPS:
            raise InputError(f"num_steps must be in [1, {MAX_SAMPLING_STEPS}], got {steps}")
        frames = context.to(next(self.parameters()).device)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(horizon):
            past = last_window(frames, self.model.window)
            scheduler = ddim_sampler(steps, self.cfg.dit.clip_sample)
            x = torch.randn(past[:, 0].shape, generator=generator).to(past)
            for t in scheduler.timesteps:
                x = scheduler.step(self.model(x, past, t), t, x).prev_sample
            frames = torch.cat([frames, x.clamp(-1, 1)[:, None]], dim=1)
        return Rollout(frames[:, context.shape[1] :], steps, 0)
