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

from functools import cache, partial

import torch
from diffusers import DiTTransformer2DModel
from torch import Tensor, nn

from ..core import sizing
from ..core.errors import InputError
from ..core.hub import HubModel, as_config
from ..core.layers import count_parameters
from ..core.objective import DirectObjective, StepOutput, reconstruction_loss
from ..image.diffusion import ddim_sampler, dit_transformer, training_scheduler
from ..image.noise import DIFFUSION_STEPS
from .config import VideoConfig
from .model import VideoEBT
from .rollout import Reference, Rollout, check_context

MAX_SAMPLING_STEPS = DIFFUSION_STEPS


def _transformer(cfg: VideoConfig, depth: int, head_dim: int, heads: int) -> DiTTransformer2DModel:
    """The past ``context_frames`` frames and the noisy next frame, concatenated along channels -> its noise."""
    m = cfg.model
    in_channels = m.channels * (cfg.data.context_frames + 1)
    return dit_transformer(in_channels, m.channels, cfg.data.frame_size, m.patch_size, depth, head_dim, heads)


@cache
def matched_size(cfg: VideoConfig, target: int) -> tuple[int, int, int]:
    """(depth, heads, head size) of the DiT whose parameter count matches ``target`` (``core.sizing``): any depth from
    1 to twice the EBT's + 2, the nearest the EBT's that comes within 2%; attention widths up to 4x the EBT's."""
    m = cfg.model
    build = partial(_transformer, cfg, heads=1)
    return sizing.matched_size(build, target, m.depth, m.heads, 4 * m.width, range(1, 2 * m.depth + 3))


class VideoDiT(nn.Module):
    """``(x_t (B, C, H, W), past (B, W, C, H, W), t (B,)) -> predicted noise (B, C, H, W)``."""

    def __init__(self, cfg: VideoConfig) -> None:
        super().__init__()
        with torch.device("meta"):
            target = count_parameters(VideoEBT(cfg.model))
        self.depth, self.heads, self.head_dim = matched_size(cfg, target)
        self.window = cfg.data.context_frames
        self.transformer = _transformer(cfg, self.depth, self.head_dim, self.heads)
        if cfg.dit.prediction == "sample":  # predicts the target itself: zero at first (with "change": copy-last)
            nn.init.zeros_(self.transformer.proj_out_2.weight)
            nn.init.zeros_(self.transformer.proj_out_2.bias)

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


class VideoDiTObjective(DirectObjective, HubModel):
    """DDPM training of the conditional DiT on the same clips as the EBT; the MSE (or log MSE) of the predicted noise
    (or, with ``dit.prediction`` "sample", of the predicted target). With ``dit.target`` "change" it generates the
    change from the last frame (halved), so "nothing moved" is the zero it is drawn towards."""

    def __init__(self, cfg: VideoConfig) -> None:
        cfg = as_config(cfg)
        super().__init__(VideoDiT(cfg), cfg)

    def forward(self, clips: Tensor) -> StepOutput:
        window = self.model.window
        # every next frame with a full window of real frames before it: (B, L - W, W + 1, C, H, W)
        samples = clips.unfold(1, window + 1, 1).permute(0, 1, 5, 2, 3, 4)
        samples = samples.flatten(0, 1)  # (B (L - W), W + 1, C, H, W)
        past, target = samples[:, :window], samples[:, window]
        if self.cfg.dit.target == "change":  # from the last frame, or its extrapolation (prediction.extrapolate)
            target = (target - self.reference(past)) / 2
        t = torch.randint(0, DIFFUSION_STEPS, (target.shape[0],), device=target.device)
        noise = torch.randn_like(target)
        x_t = training_scheduler().add_noise(target, noise, t)
        wanted = noise if self.cfg.dit.prediction == "epsilon" else target
        predicted = self.model(x_t, past, t).float()
        # the MSE, or with ``train.loss`` log_mse the per-sample log MSE (weighting samples as the EBT's and the
        # transformer's log_mse do); the other losses only rescale an MSE, so the DiT keeps its standard one
        loss = reconstruction_loss(predicted, wanted, "log_mse" if self.cfg.train.loss == "log_mse" else "mse")
        return StepOutput(loss, {"loss": loss.detach()})

    def reference(self, past: Tensor) -> Tensor:
        """(B, W, C, H, W) -> (B, C, H, W): the frame a generated change is added to (``prediction.extrapolate``)."""
        return Reference.of(self.cfg.prediction)(past)[:, -1]

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
            scheduler = ddim_sampler(steps, self.cfg.dit.clip_sample, self.cfg.dit.prediction)
            x = torch.randn(past[:, 0].shape, generator=generator).to(past)
            for t in scheduler.timesteps:
                x = scheduler.step(self.model(x, past, t), t, x).prev_sample
            frame = self.reference(past) + 2 * x if self.cfg.dit.target == "change" else x
            frames = torch.cat([frames, frame.clamp(-1, 1)[:, None]], dim=1)
        return Rollout(frames[:, context.shape[1] :], steps, 0)
