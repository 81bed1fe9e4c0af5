"""The plain causal transformer baseline: the video EBT's trunk predicting the next frame directly, in one pass.

Frame t's tokens (causal over frames, bidirectional within a frame) predict frame t + 1 as a residual on frame t,
so training predicts every next frame of a clip in one pass and a rollout takes one forward pass per frame. Each
patch is embedded together with the same patch of the frame before (the first frame with itself), as the EBT embeds
each candidate patch with the last real frame's: both see "what changed" locally, and the two models end up within
a fraction of a percent in parameters (``tests/test_video.py`` checks 2%).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.hub import HubModel, as_config
from ..core.layers import adaln_blocks, init_residual_predictor, patchify, sincos_position_embedding, unpatchify
from ..core.objective import DirectObjective, StepOutput
from .config import VideoConfig, VideoModelConfig
from .model import check_frames, frame_position_embedding, token_mask
from .rollout import LAST_FRAME, Reference, Rollout, check_context


class PlainVideoTransformer(nn.Module):
    """``(frames (B, T, C, H, W)) -> (B, T, C, H, W)``: the prediction of frame t + 1 from frames 1..t, for every t."""

    def __init__(self, cfg: VideoModelConfig, reference: Reference = LAST_FRAME) -> None:
        super().__init__()
        self.cfg = cfg
        self.reference = reference  # the correction is added to last + a x (last - previous) (a = 0: the last frame)
        width, pixels = cfg.width, cfg.channels * cfg.patch_size**2
        self.embed = nn.Linear(2 * pixels, width)  # (previous frame's patch, this frame's patch)
        self.condition = nn.Parameter(torch.randn(width) * 0.02)
        self.blocks = adaln_blocks(cfg, one_pass=True)
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.head = nn.Linear(width, pixels)
        init_residual_predictor(self, self.blocks, self.head)  # starts as copy-last-frame

    def forward(self, frames: Tensor) -> Tensor:
        check_frames(frames, None, self.cfg.channels, self.cfg.patch_size)
        batch, count, _, height, width = frames.shape
        p, dim = self.cfg.patch_size, self.cfg.width
        patches = patchify(frames.flatten(0, 1), p).reshape(batch, count, -1, frames.shape[2] * p * p)  # (B, T, N, Cpp)
        previous = torch.cat([patches[:, :1], patches[:, :-1]], dim=1)
        x = self.embed(torch.cat([previous, patches], dim=-1))  # (B, T, N, D)
        x = x + sincos_position_embedding(height // p, width // p, dim, x.device, x.dtype)
        x = x + frame_position_embedding(torch.arange(count, device=x.device), dim).to(x.dtype)[:, None]
        tokens = x.shape[2]
        x = x.flatten(1, 2)  # (B, T N, D)
        mask = token_mask(count, 0, tokens, x.device)
        cond = self.condition.to(x.dtype).expand(batch, -1)
        for block in self.blocks:
            x = block(x, cond, mask)
        residual = self.head(self.final_norm(x)).reshape(batch * count, tokens, -1)  # (B T, N, C p p)
        residual = unpatchify(residual, p, height, width).reshape(frames.shape)
        return self.reference(frames) + residual


class PlainVideoObjective(DirectObjective, HubModel):
    """Direct next-frame prediction with the EBT's loss, on the same clips; trains in the same loop."""

    def __init__(self, cfg: VideoConfig) -> None:
        cfg = as_config(cfg)
        super().__init__(PlainVideoTransformer(cfg.model, Reference.of(cfg.prediction)), cfg)

    def forward(self, clips: Tensor) -> StepOutput:
        count = self.cfg.prediction.train_frames or clips.shape[1] - 1  # the frames the EBT is trained to predict
        prediction, target = self.model(clips[:, :-1])[:, -count:], clips[:, -count:]
        copy_last = F.mse_loss(clips[:, -count - 1 : -1].float(), target)  # the reference
        return self.prediction_step(prediction, target, mse_copy_last=copy_last)

    @torch.no_grad()
    def rollout(self, context: Tensor, horizon: int) -> Rollout:
        """(B, T, C, H, W) -> ``horizon`` frames, one forward pass each (the newest frame's prediction)."""
        check_context(context, horizon, self.cfg.model.channels)
        frames = context.to(next(self.parameters()).device)
        for _ in range(horizon):
            frame = self.model(frames)[:, -1:].clamp(-1, 1)
            frames = torch.cat([frames, frame], dim=1)
        return Rollout(frames[:, context.shape[1] :], 1, 0)
