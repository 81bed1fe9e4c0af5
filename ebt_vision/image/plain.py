"""Baselines trained on the same data: a plain transformer denoiser that predicts the clean image directly."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.hub import HubModel, as_config
from ..core.layers import adaln_blocks, init_residual_predictor, patchify, sincos_position_embedding, unpatchify
from ..core.objective import DirectObjective, StepOutput
from .config import ImageConfig, ModelConfig
from .data import DenoisingBatch
from .tiling import tiled_map


class PlainDenoiser(nn.Module):
    """The image EBT's trunk (same width, depth, blocks) mapping a noisy image to a residual in one forward pass.

    It differs from ``ImageEBT`` only at the ends: the patch embedding sees the noisy image alone and the head
    predicts a patch of pixels instead of one energy, so the parameter counts are within a fraction of a percent.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width, pixels = cfg.width, cfg.channels * cfg.patch_size**2
        self.embed = nn.Linear(pixels, width)
        self.condition = nn.Parameter(torch.randn(width) * 0.02)
        self.blocks = adaln_blocks(cfg, one_pass=True)
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.head = nn.Linear(width, pixels)
        init_residual_predictor(self, self.blocks, self.head)

    def forward(self, noisy: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W) denoised estimate."""
        p = self.cfg.patch_size
        x = self.embed(patchify(noisy, p))
        x = x + sincos_position_embedding(noisy.shape[2] // p, noisy.shape[3] // p, self.cfg.width, x.device, x.dtype)
        cond = self.condition.to(x.dtype).expand(x.shape[0], -1)
        for block in self.blocks:
            x = block(x, cond)
        residual = unpatchify(self.head(self.final_norm(x)), p, noisy.shape[2], noisy.shape[3])
        return noisy + residual


class PlainDenoisingObjective(DirectObjective, HubModel):
    """Direct prediction with the same loss as the EBT objective; trains in the same loop."""

    def __init__(self, cfg: ImageConfig) -> None:
        cfg = as_config(cfg)
        super().__init__(PlainDenoiser(cfg.model), cfg)

    def forward(self, batch: DenoisingBatch) -> StepOutput:
        return self.prediction_step(self.model(batch.noisy), batch.clean)


@torch.no_grad()
def plain_denoise(objective: PlainDenoisingObjective, noisy: Tensor, tile_overlap: int = 2) -> Tensor:
    """(B, C, H, W) noisy in [-1, 1] -> the one-pass estimate, clamped; photos larger than the training crop are
    tiled like the EBT's energy and the DiT's passes (half-overlapping tiles, overlaps averaged)."""
    device = next(objective.parameters()).device
    estimate = tiled_map(objective.model, noisy.to(device), objective.cfg.data.crop_size, overlap=tile_overlap)
    return estimate.clamp(-1, 1)
