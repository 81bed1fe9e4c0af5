"""Baselines trained on the same data: a plain transformer denoiser that predicts the clean image directly."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.hub import HubModel, as_config
from ..core.layers import adaln_blocks, init_residual_predictor, patchify, sincos_position_embedding, unpatchify
from ..core.objective import DirectObjective, StepOutput
from .config import ImageConfig, ModelConfig
from .data import DenoisingBatch
from .model import NOISE_SCALE_FLOOR, SigmaEmbedding, noise_scale, sigma_condition
from .noise import estimate_noise_sigma, training_sigma_max
from .tiling import tiled_map


class PlainDenoiser(nn.Module):
    """The image EBT's trunk (same width, depth, blocks) mapping a noisy image to a residual in one forward pass.

    It differs from ``ImageEBT`` only at the ends: the patch embedding sees the noisy image alone and the head
    predicts a patch of pixels instead of one energy, so the parameter counts are within a fraction of a percent.
    With ``model.sigma_conditioning`` it is told the noise sigma the way the EBT is (added to the adaLN condition).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width, pixels = cfg.width, cfg.channels * cfg.patch_size**2
        self.embed = nn.Linear(pixels, width)
        self.condition = nn.Parameter(torch.randn(width) * 0.02)
        self.sigma_embed = SigmaEmbedding(width) if cfg.sigma_conditioning else None
        self.blocks = adaln_blocks(cfg, one_pass=True)
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.head = nn.Linear(width, pixels)
        init_residual_predictor(self, self.blocks, self.head)

    def forward(self, noisy: Tensor, sigma: Tensor | float | None = None) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W) denoised estimate; ``sigma`` (0-255, per image or one for all) for a
        conditioned model."""
        p = self.cfg.patch_size
        x = self.embed(patchify(noisy, p))
        x = x + sincos_position_embedding(noisy.shape[2] // p, noisy.shape[3] // p, self.cfg.width, x.device, x.dtype)
        cond = sigma_condition(self.condition, self.sigma_embed, x.shape[0], sigma, x.dtype)
        for block in self.blocks:
            x = block(x, cond)
        residual = unpatchify(self.head(self.final_norm(x)), p, noisy.shape[2], noisy.shape[3])
        if self.cfg.noise_scaled_output:
            residual = residual * noise_scale(sigma, noisy, NOISE_SCALE_FLOOR)
        return noisy + residual


class PlainDenoisingObjective(DirectObjective, HubModel):
    """Direct prediction with the same loss as the EBT objective; trains in the same loop."""

    def __init__(self, cfg: ImageConfig) -> None:
        cfg = as_config(cfg)
        super().__init__(PlainDenoiser(cfg.model), cfg)

    def forward(self, batch: DenoisingBatch) -> StepOutput:
        sigma = batch.noise.sigma if self.cfg.model.sigma_conditioning else None
        prediction = self.model(batch.noisy, sigma)
        if self.cfg.model.noise_scaled_output:  # the error in units of sigma: the DiT's epsilon loss
            scale = noise_scale(sigma, batch.clean, NOISE_SCALE_FLOOR)
            return self.prediction_step(prediction / scale, batch.clean / scale)
        return self.prediction_step(prediction, batch.clean)

    def initial_weights(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``train.init_from`` weights: a blind trunk's start a conditioned one with its noise-level embedding at zero
        (so it starts as the blind trunk); anything else loads as it is (and is checked key by key when loaded)."""
        state = self.state_dict()
        missing = [name for name in state if name.startswith("model.sigma_embed.") and name not in tensors]
        return {**tensors, **{name: torch.zeros_like(state[name]) for name in missing}}


@torch.no_grad()
def plain_denoise(
    objective: PlainDenoisingObjective,
    noisy: Tensor,
    tile_overlap: int = 2,
    sigma: float | None = None,
    views: int = 1,
) -> Tensor:
    """(B, C, H, W) noisy in [-1, 1] -> the one-pass estimate, clamped; photos larger than the training crop are
    tiled like the EBT's energy and the DiT's passes (half-overlapping tiles, overlaps averaged). ``sigma``: one
    noise level (0-255) for every image, clamped to the training range; refused by a blind model. A conditioned model
    not given one is used blind, as ``denoise`` uses the EBT: each image is told the sigma ``estimate_noise_sigma``
    reads off it. ``views`` > 1: averaged over that many mirror images of the photo (``tiled_map``)."""
    device = next(objective.parameters()).device
    if sigma is None and objective.cfg.model.sigma_conditioning:
        return torch.cat([plain_denoise(objective, image[None], tile_overlap, estimate_noise_sigma(image[None])[0],
                                        views) for image in noisy])  # fmt: skip
    if sigma is not None:
        sigma = min(float(sigma), training_sigma_max(objective.cfg.data))

    def model(tiles: Tensor) -> Tensor:
        return objective.model(tiles, sigma)

    estimate = tiled_map(model, noisy.to(device), objective.cfg.data.crop_size, overlap=tile_overlap, views=views)
    return estimate.clamp(-1, 1)
